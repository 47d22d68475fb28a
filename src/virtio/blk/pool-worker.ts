/**
 * A block Worker of a virtio-blk disk's pool (src/block/pool.ts): takes submitted requests, runs them
 * with the same stateless executor the I/O Worker uses inline (executeRequest: preadv/pwritev straight
 * into guest RAM through its own GuestMemory views), writes the result into the slot and signals the
 * pool's completion eventfd. It never touches the virtqueue: the I/O Worker pops and pushes.
 *
 * It loads only the block path (no device table, no machine), so a pool of 8 starts in a few ms each.
 * Thread name "blk <B.S.F> <n>" (as bhyve names its blockif threads).
 */
import { BlockPool, type BlockPoolInfo } from "../../block/pool.ts";
import { viewMemory } from "../../vm/memory.ts";
import type { MemRegionInfo } from "../../vm/shared.ts";
import { host } from "../../vmm/index.ts";
import type { BlkDeviceInfo } from "./device.ts";
import { executeRequest } from "./request.ts";

export interface BlkPoolInit {
  name: string;
  pool: BlockPoolInfo;
  dev: BlkDeviceInfo;
  regions: MemRegionInfo[];
}

/** Error lines posted in full per Worker; after that one per LOG_EVERY. */
const LOG_FIRST = 5, LOG_EVERY = 1000;

declare const self: Worker;

self.onmessage = (ev: MessageEvent<BlkPoolInit>) => {
  const init = ev.data;
  let errors = 0;
  try {
    host.setThreadName(init.name.slice(0, 15));
    const pool = new BlockPool(init.pool);
    const mem = viewMemory(init.regions);
    while (!pool.stopping()) {
      const slot = pool.take();
      if (slot < 0) continue;
      const r = pool.request(slot);
      const res = executeRequest(init.dev, mem, r);
      if (res.error && (++errors <= LOG_FIRST || errors % LOG_EVERY === 0)) {
        self.postMessage({ type: "log", text: `${init.name}: virtio-blk ${init.dev.disk.path}: queue ${r.queue}: request type ${res.type}: ${res.error}` });
      }
      if (pool.complete(slot, res.used, res.type, res.status ?? -1, !!res.error)) host.signal(init.pool.fd);
    }
  } catch (err) {
    self.postMessage({ type: "error", text: `${init.name}: ${(err as Error).stack ?? err}` });
  }
  self.postMessage({ type: "stopped", vcpu: -2, exits: 0 });
};
