/**
 * virtio-scsi: the SCSI host adapter (virtio 1.2 §5.6), device type 8, transitional PCI ID 1AF4:1004,
 * class mass storage / SCSI. One target (0) whose LUNs are disk images or host block devices, served by
 * the SCSI target in src/scsi/ (INQUIRY with VPD pages, READ CAPACITY, READ/WRITE 6-16, WRITE SAME,
 * UNMAP, SYNCHRONIZE CACHE, MODE SENSE/SELECT, REPORT LUNS, ...). bhyve's virtio-scsi forwards to
 * FreeBSD's CTL through /dev/cam/ctl; tsbhyve serves images itself: `path` is LUN 0, `lun.N.path` more
 * LUNs, each with the block options (ro, nocache, direct, sync, sectorsize, nodelete, ser). The disks are
 * opened on the main thread (src/vm/prepare.ts, `Prepared.scsiLuns`) and reach every thread as plain data.
 *
 * Queues: 0 control (TMF, AN: answered at once), 1 event (buffers are held: no hotplug or change events
 * are offered, so none is ever returned), 2.. the `queues` request queues, each of `queue_size`
 * descriptors. A notification runs the queue on the I/O Worker under the device lock, as virtio-blk
 * does: pop, execute synchronously (preadv/pwritev into guest RAM), push with the bytes written — also
 * for a chain that could not be answered (used 0), so the driver gets its descriptors back.
 *
 * Configuration: sense_size and cdb_size are the driver-writable fields; they live in shared state (a
 * vCPU writes them, the I/O Worker reads them) and are reset to 96 / 32 with the device.
 */
import type { AccessSize, DeviceContext } from "../../devices/device.ts";
import { defineLayout, type StateBlock } from "../../devices/state.ts";
import { hostEngine, type BlockEngine } from "../../block/io.ts";
import type { BlockDisk } from "../../block/backend.ts";
import type { PciEmulation } from "../../pci/registry-types.ts";
import { scsiLun, scsiTarget } from "../../scsi/lun.ts";
import { notifyKey } from "../notify.ts";
import { createVirtioPci, type VirtioDeviceModel } from "../pci.ts";
import { pciWhere, virtioPciInput } from "../emulation.ts";
import {
  CDB_DEFAULT, CDB_MAX, CDB_MIN, executeCommand, executeControl, SCSI_CFG, SCSI_CONFIG_BYTES, SCSI_Q, scsiConfig, scsiDeviceInfo,
  SENSE_DEFAULT, SENSE_MAX, SENSE_MIN, VIRTIO_ID_SCSI, type ScsiDeviceInfo,
} from "../scsi/index.ts";
import { configRead, configWrite } from "../config-space.ts";

export const SCSI_DEFAULT_QUEUE_SIZE = 256;
const CONTROL_QUEUE_SIZE = 64, EVENT_QUEUE_SIZE = 64;
/** Chains one run handles before it reschedules itself. */
const BUDGET = 128;
const LOG_FIRST = 10, LOG_EVERY = 1000;

const stateLayout = defineLayout("virtio-scsi", 1, {
  senseSize: "u32",
  cdbSize: "u32",
});

export interface ScsiModelOptions {
  engine?: BlockEngine;
  log?: (msg: string) => void;
}

/** The device model; allocates its state block from ctx.arena (call in the same order on every thread). */
export function scsiModel(ctx: DeviceContext, dev: ScsiDeviceInfo, o: ScsiModelOptions = {}): VirtioDeviceModel & { state: StateBlock<typeof stateLayout.spec>["s"] } {
  const s = ctx.arena.alloc(stateLayout).s;
  const engine = o.engine ?? hostEngine;
  let errors = 0;
  const logError = (msg: string) => {
    errors++;
    if (errors <= LOG_FIRST || errors % LOG_EVERY === 0) o.log?.(`${msg}${errors >= LOG_FIRST ? ` (${errors} errors so far; logging every ${LOG_EVERY}th)` : ""}`);
  };
  const config = () => new DataView(scsiConfig(dev, s.senseSize, s.cdbSize).buffer);
  return {
    state: s,
    type: VIRTIO_ID_SCSI,
    model: "virtio-scsi",
    classCode: 0x01_00_00,
    queueSizes: [CONTROL_QUEUE_SIZE, EVENT_QUEUE_SIZE, ...Array.from({ length: dev.numQueues }, () => dev.queueSize)],
    features: 0n,
    configSize: SCSI_CONFIG_BYTES,
    configRead: (offset, size) => configRead(config(), offset, size),
    configWrite(offset: number, size: AccessSize, value: number) {
      const c = config();
      if (offset + size > SCSI_CONFIG_BYTES) return;
      configWrite(c, offset, size, value);
      const touches = (at: number) => offset < at + 4 && at < offset + size;
      if (touches(SCSI_CFG.sense_size)) {
        const v = c.getUint32(SCSI_CFG.sense_size, true);
        if (v >= SENSE_MIN && v <= SENSE_MAX) s.senseSize = v;
        else o.log?.(`virtio-scsi: driver wrote sense_size ${v}, outside ${SENSE_MIN}-${SENSE_MAX}: ignored`);
      }
      if (touches(SCSI_CFG.cdb_size)) {
        const v = c.getUint32(SCSI_CFG.cdb_size, true);
        if (v >= CDB_MIN && v <= CDB_MAX) s.cdbSize = v;
        else o.log?.(`virtio-scsi: driver wrote cdb_size ${v}, outside ${CDB_MIN}-${CDB_MAX}: ignored`);
      }
    },
    reset() {
      s.senseSize = SENSE_DEFAULT;
      s.cdbSize = CDB_DEFAULT;
    },
    processQueue(q, t) {
      if (q === SCSI_Q.EVENT) return; // held: nothing to report
      const vq = t.queue(q);
      vq.disableNotify();
      for (let done = 0; ;) {
        const c = vq.pop();
        if (!c) {
          if (vq.enableNotify()) continue;
          return;
        }
        const r = q === SCSI_Q.CONTROL
          ? executeControl(t.mem, c)
          : executeCommand(dev, t.mem, c, { sense: s.senseSize, cdb: s.cdbSize }, engine);
        if (r.error) logError(`virtio-scsi: queue ${q}: ${r.what}: ${r.error}`);
        vq.push(c.head, r.used);
        if (++done >= BUDGET) { vq.enableNotify(); t.reschedule(q); return; }
      }
    },
  };
}

/** The LUNs of a virtio-scsi table: LUN 0 from `path`, more from lun.N (canonical form, see the schema). */
export interface ScsiLunDisk { lun: number; disk: BlockDisk }

export const virtioScsi: PciEmulation = {
  doc: "virtio SCSI adapter: transitional 1af4:1004, target 0 with disk-image LUNs (path = LUN 0, lun.N.path; block options ro, nocache, direct, sync, sectorsize, nodelete, ser), queues, queue_size; pcireg.* overrides",
  describe: (addr) => [{ addr, intPin: 1, model: "virtio-scsi" }],
  create(inp) {
    const where = pciWhere(inp);
    const luns: ScsiLunDisk[] | undefined = inp.prepared.scsiLuns?.[notifyKey(inp.addr)];
    if (!luns?.length) throw new Error(`${where}: virtio-scsi disks were not opened`);
    const t = inp.table;
    const dev = scsiDeviceInfo(scsiTarget(luns.map((l) => scsiLun(l.lun, l.disk))), {
      numQueues: typeof t.queues === "number" ? t.queues : 1,
      queueSize: typeof t.queue_size === "number" ? t.queue_size : SCSI_DEFAULT_QUEUE_SIZE,
    });
    const log = (m: string) => inp.ctx.platform.log(`${where}: ${m}`);
    const model = scsiModel(inp.ctx, dev, { log });
    return [createVirtioPci(virtioPciInput(inp), model)];
  },
};
