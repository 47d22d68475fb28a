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
import { createVirtioPci, MODERN, type VirtioDeviceModel, type VirtioPciFunction, type VirtioPciInput } from "../../src/virtio/pci.ts";
import { createNet, type NetBackendOps } from "../../src/virtio/devices/net.ts";
import { GuestMemory as GM, region } from "../../src/mem/guest-memory.ts";
import { host } from "../../src/vmm/index.ts";
import { bringUp } from "../../test/unit/virtio-fuzz-rig.ts";

const BATCH = 32;

const mockEngine: BlockEngine = {
  read: (_d, _m, segs) => segs.reduce((a, s) => a + s.len, 0),
  write: (_d, _m, segs) => segs.reduce((a, s) => a + s.len, 0),
  flush: () => 0, discard: () => 0, writeZeroes: () => 0,
};

/** A virtio function on fake memory (or `mem`), brought up by a fake driver with every offered feature. */
function rigFor(build: (inp: VirtioPciInput) => VirtioPciFunction, mem: GuestMemory = GuestMemory.fake(32 * MiB)) {
  const platform = { irqLine() {}, msi() {}, requestExit() {}, wakeIo() {}, log() {} };
  const ctx: DeviceContext = { mem, arena: new StateArena(new SharedArrayBuffer(1 << 20)), platform, role: "io" };
  const fn = build({ ctx, addr: { bus: 0, slot: 4, fn: 0 }, gen: sharedMapGeneration(ctx.arena), eventfd: { signal() {}, drain() {} } });
  powerOnMachine({ devices: [fn] });
  const up = bringUp(fn.transport, mem, () => true, { ringBase: 0, ringBytes: 1 * MiB, maxQueueSize: 256, heap: { base: 2 * MiB, size: 8 * MiB } })!;
  return { fn, drivers: up.drivers };
}

/** ns per request for `model`, requests built by `make(driver, i)` (each a fixed chain, re-posted every round). */
function perRequestNs(model: VirtioDeviceModel, make: (add: (bufs: { len: number; write?: boolean; data?: Uint8Array }[]) => number, i: number) => number, rounds: number): number {
  const { fn, drivers } = rigFor((inp) => createVirtioPci(inp, model));
  const d = drivers[0]!;
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

/** Guest memory on a host mapping (the net path builds iovecs of host addresses; nothing is read through them here). */
function hostMem(): GuestMemory {
  const size = 32 * MiB, p = host.memAlloc(size, false);
  return new GM([region(0, host.memView(p, size), p)]);
}

/** ns per frame through virtio-net, tap mocked: guest → tap (transmitq) or tap → guest (receiveq, mergeable buffers). */
function netFrameNs(dir: "tx" | "rx", rounds: number): number {
  const FRAME = 1514;
  let rxLeft = 0;
  const ops: NetBackendOps = {
    io: {
      writev: (iov) => { let n = 0; for (let i = 1; i < iov.length; i += 2) n += Number(iov[i]); return n; },
      readv: () => (rxLeft-- > 0 ? FRAME + 12 : -11),
    },
    setHdr: () => 0, setOffload: () => 0,
  };
  const { fn, drivers } = rigFor((inp) => createNet({ ...inp, dev: { fd: 1000, ifname: "mock0", mac: [0x58, 0x9c, 0xfc, 0, 0, 1], queueSize: 256 }, ops }).fn, hostMem());
  const q = dir === "tx" ? 1 : 0, d = drivers[q]!;
  const heads: number[] = [];
  // receive: 4 KiB buffers, the device keeps room for a 64 KiB frame gathered, so some stay with it between rounds
  for (let i = 0; i < BATCH; i++) heads.push(d.add(dir === "tx" ? [{ len: 12 }, { len: FRAME }] : [{ len: 4096, write: true }]).head);
  let frames = 0;
  const round = (post = true) => {
    if (post) for (const h of d.collect().map((e) => e.id)) d.pushHead(h); // repost what came back
    rxLeft = dir === "rx" ? 1 << 30 : 0; // the tap always has frames waiting
    d.publish();
    fn.transport.modernWrite(MODERN.NOTIFY + MODERN.NOTIFY_MULT * q, 2, q);
    fn.expire();
  };
  const count = () => { const n = d.usedIdx(); const k = (n - frames) & 0xffff; frames = n; return k; };
  round(false); // the chains add() already made available
  for (let i = 0; i < rounds / 4; i++) round();
  count();
  let total = 0;
  const t = Bun.nanoseconds();
  for (let i = 0; i < rounds; i++) { round(); total += count(); }
  const ns = Bun.nanoseconds() - t;
  if (total < rounds) throw new Error(`${dir}: only ${total} frames in ${rounds} rounds`);
  return ns / total;
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
      { name: "virtio-net 1514-byte frame, guest → tap", ns: median(() => netFrameNs("tx", 2000)) },
      { name: "virtio-net 1514-byte frame, tap → guest", ns: median(() => netFrameNs("rx", 2000)) },
    ];
  } finally {
    closeBlock(disk);
    rmSync(dir, { recursive: true, force: true });
  }
}

if (import.meta.main) {
  for (const c of mockedVirtioCosts()) console.log(`userspace per request (kernel calls mocked), ${c.name}: ${c.ns.toFixed(0)} ns`);
}
