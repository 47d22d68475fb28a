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
 * Threads: with a pool (src/block/pool.ts) the disk has block Workers (src/virtio/blk/pool-worker.ts)
 * that run `executeRequest` in parallel; their completion eventfd is one of this model's poll sources:
 * the I/O Worker reaps finished slots, pushes them on their queues, pops more while slots are free, and
 * lets the transport decide on the interrupt. When every slot is busy the remaining chains stay on the
 * available ring (notifications stay off) until a completion frees one. A device reset bumps the pool's
 * epoch, so requests still running complete into nothing.
 *
 * Which disks get a pool (`iothreads`; src/vm/prepare.ts): by default those whose requests wait on a
 * device — O_DIRECT or O_SYNC files and block devices — get bhyve's 8 Workers, where parallel requests
 * pay off and a slow disk must not hold up the I/O Worker; a file served from the page cache runs its
 * requests inline on the I/O Worker, because handing a request to another thread costs two wake-ups,
 * more than a page-cache hit (measured in the nested benchmark: 4 KiB random reads at queue depth 8 ran
 * at 0.35–0.45 of the inline rate through the pool). `iothreads = N` sets it either way. O_DIRECT disks
 * with sub-block sectors (read-modify-write must not overlap) always run inline.
 *
 * The device configuration is read-only: CONFIG_WCE is not offered, so writes to it are ignored.
 */
import type { PciEmulation } from "../../pci/registry-types.ts";
import { hostEngine, type BlockEngine } from "../../block/io.ts";
import type { BlockDisk } from "../../block/backend.ts";
import { notifyKey } from "../notify.ts";
import { createVirtioPci, type VirtioDeviceModel } from "../pci.ts";
import { pciWhere, virtioPciInput } from "../emulation.ts";
import { blkConfig, blkDeviceInfo, blkFeatures, BLK_CONFIG_BYTES, executeRequest, VIRTIO_ID_BLOCK, type BlkDeviceInfo } from "../blk/index.ts";
import { BlockPool, type BlockPoolInfo } from "../../block/pool.ts";
import type { PollSource } from "../../devices/device.ts";
import { host, POLLIN } from "../../vmm/index.ts";
import type { VirtioTransport } from "../pci.ts";
import { configRead, configWrite } from "../config-space.ts";

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
  /** the disk's block Worker pool (undefined: run requests inline) */
  pool?: BlockPool;
  /** eventfd drain (default: the shim's) */
  drain?: (fd: number) => void;
}

export function blkModel(dev: BlkDeviceInfo, o: BlkModelOptions = {}): VirtioDeviceModel {
  const queueSize = o.queueSize ?? BLK_DEFAULT_QUEUE_SIZE;
  const engine = o.engine ?? hostEngine;
  const config = blkConfig(dev);
  const cfg = new DataView(config.buffer);
  let errors = 0;
  const pool = o.pool;
  const drain = o.drain ?? ((fd: number) => { host.drain(fd); });
  /** the transport, known from the first processQueue (always on the I/O Worker, before any completion) */
  let tr: VirtioTransport | undefined;
  const logError = (msg: string) => {
    errors++;
    if (errors <= LOG_FIRST || errors % LOG_EVERY === 0) o.log?.(`${msg}${errors >= LOG_FIRST ? ` (${errors} errors so far; logging every ${LOG_EVERY}th)` : ""}`);
  };
  const model: VirtioDeviceModel = {
    type: VIRTIO_ID_BLOCK,
    model: "virtio-blk",
    classCode: 0x01_00_00,
    queueSizes: Array.from({ length: dev.numQueues }, () => queueSize),
    features: blkFeatures(dev),
    configSize: BLK_CONFIG_BYTES,
    configRead: (offset, size) => configRead(cfg, offset, size),
    configWrite() {},
    processQueue(q, t) {
      tr = t;
      const vq = t.queue(q);
      vq.disableNotify();
      for (let done = 0; ;) {
        if (pool?.full()) return; // notifications stay off: the next completion comes back here
        const c = vq.pop();
        if (!c) {
          if (vq.enableNotify()) continue; // more arrived while notifications were off
          return;
        }
        if (pool?.submit({ queue: q, head: c.head, readable: c.readable, writable: c.writable })) continue;
        const res = executeRequest(dev, t.mem, c, engine); // no pool, or a chain too long for a slot
        if (res.error) logError(`virtio-blk ${dev.disk.path}: queue ${q}: request type ${res.type}: ${res.error}`);
        vq.push(c.head, res.used);
        if (++done >= BUDGET) { vq.enableNotify(); t.reschedule(q); return; }
      }
    },
    reset() { pool?.newEpoch(); },
    pollSources(): PollSource[] {
      if (!pool) return [];
      return [{ fd: pool.fd, events: POLLIN, ready: () => { drain(pool.fd); complete(); } }];
    },
  };
  return model;

  /** I/O Worker: put finished requests on their used rings, then refill the pool (device lock taken here). */
  function complete(): void {
    const t = tr;
    if (!t || !pool) return;
    const lock = t.fn.lock;
    lock.acquire();
    try {
      let touched = 0;
      pool.reap((q, head, used) => {
        const vq = t.queues[q];
        if (!vq?.ready) return;
        vq.push(head, used);
        touched |= 1 << q;
      });
      for (let q = 0; q < t.queues.length; q++) {
        // pop more now that slots are free; process() also raises the interrupt the pushes need
        if (((touched >>> q) & 1) || t.queues[q]!.pending() > 0) t.process(q);
      }
    } finally { lock.release(); }
  }
}

/** The device shape a pci table asks for (the same on every thread and in the block Workers). */
export function blkInfoFor(t: Record<string, unknown>, disk: BlockDisk): { dev: BlkDeviceInfo; queueSize: number } {
  const queueSize = typeof t.queue_size === "number" ? t.queue_size : BLK_DEFAULT_QUEUE_SIZE;
  return { dev: blkDeviceInfo(disk, { numQueues: typeof t.queues === "number" ? t.queues : 1, queueSize }), queueSize };
}

export const virtioBlk: PciEmulation = {
  doc: "virtio block device: transitional 1af4:1001 (modern + legacy), bhyve's block options (path, ro, nocache, direct, sync, sectorsize, nodelete, ser), queues, queue_size; pcireg.* overrides",
  describe: (addr) => [{ addr, intPin: 1, model: "virtio-blk" }],
  create(inp) {
    const where = pciWhere(inp);
    const disk = inp.prepared.disks?.[notifyKey(inp.addr)];
    if (!disk) throw new Error(`${where}: virtio-blk disk was not opened`);
    const t = inp.table;
    const { dev, queueSize } = blkInfoFor(t, disk);
    const poolInfo = (inp.prepared as { blkPools?: Record<string, BlockPoolInfo> } | undefined)?.blkPools?.[notifyKey(inp.addr)];
    return [createVirtioPci(virtioPciInput(inp), blkModel(dev, { queueSize, log: (m) => inp.ctx.platform.log(`${where}: ${m}`), pool: poolInfo ? new BlockPool(poolInfo) : undefined }))];
  },
};
