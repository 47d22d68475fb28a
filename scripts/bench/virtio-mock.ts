/**
 * Userspace cost per virtio request with the kernel calls mocked: the real transport, virtqueue and
 * device model on fake guest memory, the host I/O replaced by an engine that returns at once. A fake
 * driver keeps BATCH requests in flight: publish, notify, run the queue as the I/O Worker does, reap.
 * Reported: ns per request (pop + parse + "I/O" + push + interrupt decision, plus the fake driver's
 * small share).
 *
 *   bun scripts/bench/virtio-mock.ts      (also part of `npm run bench`)
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { closeBlock, openBlock } from "../../src/block/backend.ts";
import type { BlockEngine } from "../../src/block/io.ts";
import { sharedMapGeneration } from "../../src/devices/bus.ts";
import type { DeviceContext } from "../../src/devices/device.ts";
import { StateArena } from "../../src/devices/state.ts";
import { GuestMemory, MiB } from "../../src/mem/guest-memory.ts";
import { powerOnMachine } from "../../src/vm/machine.ts";
import { blkDeviceInfo, BLK_T } from "../../src/virtio/blk/index.ts";
import { blkModel } from "../../src/virtio/devices/blk.ts";
import { createVirtioPci, MODERN, type VirtioDeviceModel } from "../../src/virtio/pci.ts";
import { bringUp } from "../../test/unit/virtio-fuzz-rig.ts";

const BATCH = 32;

const mockEngine: BlockEngine = {
  read: (_d, _m, segs) => segs.reduce((a, s) => a + s.len, 0),
  write: (_d, _m, segs) => segs.reduce((a, s) => a + s.len, 0),
  flush: () => 0, discard: () => 0, writeZeroes: () => 0,
};

/** ns per request for `model`, requests built by `make(driver, i)` (each a fixed chain, re-posted every round). */
function perRequestNs(model: VirtioDeviceModel, make: (add: (bufs: { len: number; write?: boolean; data?: Uint8Array }[]) => number, i: number) => number, rounds: number): number {
  const mem = GuestMemory.fake(32 * MiB);
  const platform = { irqLine() {}, msi() {}, requestExit() {}, wakeIo() {}, log() {} };
  const ctx: DeviceContext = { mem, arena: new StateArena(new SharedArrayBuffer(1 << 20)), platform, role: "io" };
  const fn = createVirtioPci({ ctx, addr: { bus: 0, slot: 4, fn: 0 }, gen: sharedMapGeneration(ctx.arena), eventfd: { signal() {}, drain() {} } }, model);
  powerOnMachine({ devices: [fn] });
  const up = bringUp(fn.transport, mem, () => true, { ringBase: 0, ringBytes: 1 * MiB, maxQueueSize: 256, heap: { base: 2 * MiB, size: 8 * MiB } })!;
  const d = up.drivers[0]!;
  const heads: number[] = [];
  const add = (bufs: { len: number; write?: boolean; data?: Uint8Array }[]) => d.add(bufs).head;
  for (let i = 0; i < BATCH; i++) heads.push(make(add, i));
  d.publish(); fn.transport.modernWrite(MODERN.NOTIFY, 2, 0); fn.expire(); d.collect();
  const round = () => {
    for (const h of heads) d.pushHead(h);
    d.publish();
    fn.transport.modernWrite(MODERN.NOTIFY, 2, 0);
    fn.expire();
    if (d.collect().length !== BATCH) throw new Error("requests lost");
  };
  for (let i = 0; i < rounds / 4; i++) round(); // warm-up
  const t = Bun.nanoseconds();
  for (let i = 0; i < rounds; i++) round();
  return (Bun.nanoseconds() - t) / (rounds * BATCH);
}

export function mockedVirtioCosts(): { name: string; ns: number }[] {
  const dir = mkdtempSync(join(tmpdir(), "tsb-mock-"));
  const path = join(dir, "d.img");
  writeFileSync(path, new Uint8Array(1 << 20));
  const disk = openBlock({ path });
  try {
    const hdr = (type: number, sector: number) => { const b = new Uint8Array(16), v = new DataView(b.buffer); v.setUint32(0, type, true); v.setBigUint64(8, BigInt(sector), true); return b; };
    const blk = (type: number) => perRequestNs(blkModel(blkDeviceInfo(disk), { engine: mockEngine }), (add, i) => add([
      { len: 16, data: hdr(type, 8 * i) }, type === BLK_T.IN ? { len: 4096, write: true } : { len: 4096 }, { len: 1, write: true },
    ]), 3000);
    const median = (f: () => number) => [f(), f(), f()].sort((a, b) => a - b)[1]!;
    return [
      { name: "virtio-blk 4 KiB read", ns: median(() => blk(BLK_T.IN)) },
      { name: "virtio-blk 4 KiB write", ns: median(() => blk(BLK_T.OUT)) },
    ];
  } finally {
    closeBlock(disk);
    rmSync(dir, { recursive: true, force: true });
  }
}

if (import.meta.main) {
  for (const c of mockedVirtioCosts()) console.log(`userspace per request (kernel calls mocked), ${c.name}: ${c.ns.toFixed(0)} ns`);
}
