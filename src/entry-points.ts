/**
 * URLs of the Worker entry points. This file sits at the root of src/ on purpose: run from source,
 * import.meta.url is this file; in the compiled binary it is /$bunfs/root/<binary>, and `bun build
 * --compile` places each extra entry point at its path relative to src/ (see scripts/build.ts).
 */
export const VCPU_WORKER = new URL("./vcpu/worker.ts", import.meta.url).href;
export const IO_WORKER = new URL("./vm/io-worker.ts", import.meta.url).href;
export const BLK_POOL_WORKER = new URL("./virtio/blk/pool-worker.ts", import.meta.url).href;
