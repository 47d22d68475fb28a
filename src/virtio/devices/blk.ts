/**
 * virtio-blk: the block device (virtio 1.2 §5.2), device type 2, transitional PCI ID 1AF4:1001, class
 * mass storage. The storage side (feature bits, struct virtio_blk_config, the request executor) is in
 * src/virtio/blk/; the disk is opened on the main thread (src/vm/prepare.ts, `Prepared.disks`) and
 * reaches every thread as plain data with its fd number.
 *
 * Queues: `queues` request queues (VIRTIO_BLK_F_MQ, num_queues in the config space), each of
 * `queue_size` descriptors. A notification runs the queue on the I/O Worker under the device lock:
 * pop each chain, `executeRequest` (synchronous preadv/pwritev/fdatasync/fallocate on the disk's fd,
 * straight into guest RAM), push it with the bytes written — also when the request was dropped
 * (`status: null`), so the driver gets its descriptors back. The transport then decides on the
 * interrupt (EVENT_IDX's used_event, or VIRTQ_AVAIL_F_NO_INTERRUPT) once per run.
 *
 * Threads: every request runs on the one I/O Worker for now, so a slow disk holds up the serial ports
 * and timers serviced there. Next step (bhyve runs 8 blockif threads per disk): a pool of block
 * Workers, each with its own GuestMemory views and this device's plain BlkDeviceInfo, taking popped
 * chains and completing them under the queue's lock (the ordering rules are in src/virtio/blk/request.ts).
 *
 * The device configuration is read-only: CONFIG_WCE is not offered, so writes to it are ignored.
 */
import type { PciEmulation } from "../../pci/registry-types.ts";
import { pciregOverrides } from "../../pci/pcireg.ts";
import { hostEngine, type BlockEngine } from "../../block/io.ts";
import { attachService, notifyFdsFor, notifyKey } from "../notify.ts";
import { createVirtioPci, type VirtioDeviceModel } from "../pci.ts";
import { blkConfig, blkDeviceInfo, blkFeatures, BLK_CONFIG_BYTES, executeRequest, VIRTIO_ID_BLOCK, type BlkDeviceInfo } from "../blk/index.ts";

export const BLK_DEFAULT_QUEUE_SIZE = 256;
/** Chains one run handles before it reschedules itself (so one busy queue cannot starve the I/O Worker). */
const BUDGET = 128;
/** Request errors logged in full; after that, one line per LOG_EVERY. */
const LOG_FIRST = 10, LOG_EVERY = 1000;

export interface BlkModelOptions {
  queueSize?: number;
  /** I/O engine (tests on fake guest memory pass viewCopyEngine) */
  engine?: BlockEngine;
  /** where rate-limited request errors go */
  log?: (msg: string) => void;
}

export function blkModel(dev: BlkDeviceInfo, o: BlkModelOptions = {}): VirtioDeviceModel {
  const queueSize = o.queueSize ?? BLK_DEFAULT_QUEUE_SIZE;
  const engine = o.engine ?? hostEngine;
  const config = blkConfig(dev);
  const cfg = new DataView(config.buffer);
  let errors = 0;
  const logError = (msg: string) => {
    errors++;
    if (errors <= LOG_FIRST || errors % LOG_EVERY === 0) o.log?.(`${msg}${errors >= LOG_FIRST ? ` (${errors} errors so far; logging every ${LOG_EVERY}th)` : ""}`);
  };
  return {
    type: VIRTIO_ID_BLOCK,
    model: "virtio-blk",
    classCode: 0x01_00_00,
    queueSizes: Array.from({ length: dev.numQueues }, () => queueSize),
    features: blkFeatures(dev),
    configSize: BLK_CONFIG_BYTES,
    configRead(offset, size) {
      if (offset + size > BLK_CONFIG_BYTES) return 0;
      return size === 1 ? cfg.getUint8(offset) : size === 2 ? cfg.getUint16(offset, true) : cfg.getUint32(offset, true);
    },
    configWrite() {},
    processQueue(q, t) {
      const vq = t.queue(q);
      vq.disableNotify();
      for (let done = 0; ;) {
        const c = vq.pop();
        if (!c) {
          if (vq.enableNotify()) continue; // more arrived while notifications were off
          return;
        }
        const res = executeRequest(dev, t.mem, c, engine);
        if (res.error) logError(`virtio-blk ${dev.disk.path}: queue ${q}: request type ${res.type}: ${res.error}`);
        vq.push(c.head, res.used);
        if (++done >= BUDGET) { vq.enableNotify(); t.reschedule(q); return; }
      }
    },
  };
}

export const virtioBlk: PciEmulation = {
  doc: "virtio block device: transitional 1af4:1001 (modern + legacy), bhyve's block options (path, ro, nocache, direct, sync, sectorsize, nodelete, ser), queues, queue_size; pcireg.* overrides",
  describe: (addr) => [{ addr, intPin: 1, model: "virtio-blk" }],
  create(inp) {
    const where = `pci.${inp.addr.bus}.${inp.addr.slot}.${inp.addr.fn}`;
    const disk = inp.prepared.disks?.[notifyKey(inp.addr)];
    if (!disk) throw new Error(`${where}: virtio-blk disk was not opened`);
    const t = inp.table;
    const queueSize = typeof t.queue_size === "number" ? t.queue_size : BLK_DEFAULT_QUEUE_SIZE;
    const dev = blkDeviceInfo(disk, { numQueues: typeof t.queues === "number" ? t.queues : 1, queueSize });
    return [createVirtioPci({
      ctx: inp.ctx, addr: inp.addr, gen: inp.gen, router: inp.router,
      notifyFds: notifyFdsFor(inp.prepared, inp.addr),
      attach: attachService(inp.ctx),
      overrides: pciregOverrides(where, t),
    }, blkModel(dev, { queueSize, log: (m) => inp.ctx.platform.log(`${where}: ${m}`) }))];
  },
};
