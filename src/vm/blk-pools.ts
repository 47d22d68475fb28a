/**
 * Main thread: start the block Workers of every pooled virtio-blk disk (src/block/pool.ts,
 * src/virtio/blk/pool-worker.ts) and stop them at the end. They carry no machine, only the disk's
 * plain data, the pool's shared ring and guest-memory region addresses.
 */
import type { VmConfig } from "../config/types.ts";
import { BlockPool } from "../block/pool.ts";
import { BLK_POOL_WORKER } from "../entry-points.ts";
import { blkInfoFor } from "../virtio/devices/blk.ts";
import type { BlkPoolInit } from "../virtio/blk/pool-worker.ts";
import type { Prepared } from "./prepare.ts";
import type { MemRegionInfo, WorkerMsg } from "./shared.ts";

export interface BlkPools {
  /** Workers started */
  readonly count: number;
  /** Ask every pool to stop and wait (at most `ms`) for the Workers to leave; then terminate them. */
  stop(ms?: number): Promise<void>;
}

export function startBlkPools(cfg: VmConfig, prepared: Prepared, regions: MemRegionInfo[], onMsg: (m: WorkerMsg) => void): BlkPools {
  const workers: Worker[] = [];
  const pools: BlockPool[] = [];
  let left = 0;
  let allLeft: () => void = () => {};
  const gone = new Promise<void>((r) => (allLeft = r));
  for (const [key, info] of Object.entries(prepared.blkPools ?? {})) {
    const disk = prepared.disks[key]!;
    const { dev } = blkInfoFor(cfg.pci[key]!, disk);
    pools.push(new BlockPool(info));
    for (let i = 0; i < info.threads; i++) {
      const name = `blk ${key} ${i}`;
      const w = new Worker(BLK_POOL_WORKER, { name } as WorkerOptions);
      left++;
      w.onmessage = (e: MessageEvent<WorkerMsg>) => {
        if (e.data.type === "stopped") { if (--left === 0) allLeft(); return; }
        onMsg(e.data);
      };
      w.onerror = (e) => onMsg({ type: "error", text: `${name}: ${e.message}` });
      w.postMessage({ name, pool: info, dev, regions } satisfies BlkPoolInit);
      workers.push(w);
    }
  }
  if (!left) allLeft();
  return {
    count: workers.length,
    async stop(ms = 5000) {
      for (const p of pools) p.stop();
      await Promise.race([gone, new Promise((r) => setTimeout(r, ms))]);
      for (const w of workers) w.terminate();
    },
  };
}
