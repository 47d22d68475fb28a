/**
 * Device-level fuzzing for any virtio device model: the real virtio-pci transport on instrumented fake
 * guest memory, driven like a hostile driver. Each iteration resets the device, negotiates a random
 * subset of its features, sets up every queue, then publishes a burst of random descriptor chains on
 * random queues — mostly plausible requests (the target's own header generator fills the first readable
 * buffer), mixed with loops, wrong directions, zero and huge lengths, addresses in the hole, in ROM, past
 * the end and at 2^64, bad indirect tables, avail indices far ahead — and runs the queues as the I/O
 * Worker would (eventfd ready, then any rescheduled pending work).
 *
 * Findings (each one fails the test):
 * - an exception escapes the device (the I/O Worker would stop the VM with exit 4);
 * - the device touched guest memory outside RAM (any access that fails the bounds check, outside
 *   `valid()`), wrote ROM, wrote a readable buffer, a descriptor table, an available ring or the canary
 *   areas (only writable buffers and used rings may change);
 * - on a queue whose chains the device must return (request queues, not receive/event queues that hold
 *   buffers), a published chain neither came back on the used ring nor was the device marked
 *   DEVICE_NEEDS_RESET; or a used length exceeds the chain's writable bytes.
 *
 * Memory map (fake, 4 MiB RAM + a ROM page): [0, 256K) rings; [256K, 1M) canary; [1M, 1.5M) readable
 * buffers and indirect tables; [1.5M, 2M) writable buffers; [2M, 4M) canary; hole; ROM at 4M + 64K.
 */
import { sharedMapGeneration } from "../../src/devices/bus.ts";
import type { DeviceContext, Platform } from "../../src/devices/device.ts";
import { StateArena } from "../../src/devices/state.ts";
import { GuestMemory, GuestMemoryError, KiB, MiB, region, type MemRegion } from "../../src/mem/guest-memory.ts";
import { powerOnMachine } from "../../src/vm/machine.ts";
import { COMMON, MODERN, VIRTIO_F, VIRTIO_STATUS, type VirtioPciFunction, type VirtioPciInput, type VirtioTransport } from "../../src/virtio/pci.ts";
import { VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE } from "../../src/virtio/queue.ts";
import { FakeDriver, modernLayout } from "./virtio-driver.ts";

export interface Rng {
  u32(): number;
  int(n: number): number;
  chance(p: number): boolean;
  pick<T>(a: readonly T[]): T;
  bytes(n: number): Uint8Array;
}

/** xorshift32, seeded: runs are reproducible. */
export function rng(seed: number): Rng {
  let x = seed >>> 0 || 1;
  const u32 = () => { x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0; return x; };
  return {
    u32,
    int: (n) => u32() % Math.max(1, n),
    chance: (p) => u32() / 2 ** 32 < p,
    pick: (a) => a[u32() % a.length]!,
    bytes: (n) => { const b = new Uint8Array(n); for (let i = 0; i < n; i++) b[i] = u32() & 0xff; return b; },
  };
}

export interface FuzzTarget {
  name: string;
  /** Build the function from the transport input the rig provides (createVirtioPci(inp, model), or a device's create function). */
  build(inp: VirtioPciInput): VirtioPciFunction;
  /** Queues on which every chain must come back promptly (default: all). */
  returns?(q: number): boolean;
  /** A plausible start of a request for queue q (the first readable bytes); default random bytes. */
  header?(r: Rng, q: number): Uint8Array;
  /** Queue size to set up (default: the device's maximum, capped at 64). */
  queueSize?: number;
}

export interface FuzzStats {
  executions: number;
  chains: number;
  returned: number;
  resets: number;
  findings: string[];
}

const RINGS = 0, RING_END = 256 * KiB, RBUF = 1 * MiB, WBUF = 1.5 * MiB, WEND = 2 * MiB, RAM = 4 * MiB;
const ROM = RAM + 64 * KiB, ROM_SIZE = 4 * KiB;
const CANARY = new Uint8Array(RAM - WEND).fill(0xc3);

/** Fake memory that reports every out-of-bounds access (outside `valid()` probes). */
class CheckedMemory extends GuestMemory {
  probing = 0;
  bad: string[] = [];
  override valid(gpa: number, len: number): boolean {
    this.probing++;
    try { return super.valid(gpa, len); } finally { this.probing--; }
  }
  override find(gpa: number, len: number): MemRegion {
    try { return super.find(gpa, len); } catch (e) {
      if (!this.probing && e instanceof GuestMemoryError && this.bad.length < 5) this.bad.push(`access ${gpa}+${len} outside guest memory`);
      throw e;
    }
  }
}

class FuzzPlatform implements Platform {
  irqLine(): void {}
  msi(): void {}
  requestExit(): void {}
  wakeIo(): void {}
  log(): void {}
}

export function fuzzDevice(t: FuzzTarget, iterations: number, seed = 0x51ab5eed): FuzzStats {
  const r = rng(seed);
  const ram = new Uint8Array(RAM), rom = new Uint8Array(ROM_SIZE).fill(0x5a);
  const mem = new CheckedMemory([region(0, ram), region(ROM, rom, 0, "rom")]);
  const ctx: DeviceContext = { mem, arena: new StateArena(new SharedArrayBuffer(1 << 20)), platform: new FuzzPlatform(), role: "io" };
  const nqGuess = 64;
  const fn = t.build({
    ctx, addr: { bus: 0, slot: 5, fn: 0 }, gen: sharedMapGeneration(ctx.arena),
    notifyFds: undefined, attach: undefined, eventfd: { signal: () => {}, drain: () => {} },
  });
  powerOnMachine({ devices: [fn] });
  const tr = fn.transport;
  const nq = tr.queues.length;
  if (nq > nqGuess) throw new Error("too many queues for the rig");
  const rd = (off: number, size: 1 | 2 | 4) => tr.modernRead(MODERN.COMMON + off, size);
  const stats: FuzzStats = { executions: 0, chains: 0, returned: 0, resets: 0, findings: [] };
  const find = (msg: string) => { if (stats.findings.length < 20) stats.findings.push(msg); };
  const returns = t.returns ?? (() => true);

  for (let it = 0; it < iterations; it++) {
    // --- bring-up with a random feature subset (VERSION_1 always, the ring features mostly)
    ram.fill(0, 0, WEND);
    ram.fill(0xc3, RING_END, RBUF);
    ram.set(CANARY, WEND);
    const up = bringUp(tr, mem, (b) => r.chance(b === 28n || b === 29n ? 0.8 : 0.6), { ringBase: RINGS, ringBytes: RING_END, maxQueueSize: t.queueSize ?? 64 });
    if (!up) { find(`iteration ${it}: FEATURES_OK refused for a subset of the offered features`); continue; }
    const { drivers, features: f } = up;
    const indirectOk = (f & VIRTIO_F.INDIRECT_DESC) !== 0n;

    // --- a burst of chains
    let rHeap = RBUF, wHeap = WBUF;
    const allocR = (n: number) => { const a = rHeap; rHeap += Math.ceil(Math.max(n, 1) / 16) * 16; return rHeap <= WBUF ? a : -1; };
    const allocW = (n: number) => { const a = wHeap; wHeap += Math.ceil(Math.max(n, 1) / 16) * 16; return wHeap <= WEND ? a : -1; };
    const hostile = (): bigint => r.pick([
      BigInt(RAM + r.int(64)), BigInt(ROM + r.int(ROM_SIZE)), BigInt(ROM + ROM_SIZE - r.int(32)), BigInt(8 * MiB + r.int(MiB)),
      (BigInt(r.u32()) << 32n) | BigInt(r.u32()), 0xffff_ffff_ffff_fff0n, BigInt(2 ** 53 - r.int(16)),
    ]);
    const sent: { q: number; head: number; writable: number }[] = [];
    const next = new Array<number>(nq).fill(0); // next free descriptor per queue (fresh rings each iteration)
    const bursts = 1 + r.int(8);
    const sane = r.chance(0.6);
    for (let k = 0; k < bursts; k++) {
      const q = r.int(nq), d = drivers[q]!;
      const nbuf = 1 + r.int(sane ? 4 : 8);
      if (next[q]! + nbuf + 1 > d.size) continue;
      const ids = Array.from({ length: nbuf }, (_, i) => next[q]! + i);
      next[q]! += nbuf;
      const split = sane ? 1 + r.int(nbuf) : r.int(nbuf + 1); // readable below, writable from here
      let writable = 0;
      const descs: [bigint, number, number][] = [];
      for (let i = 0; i < nbuf; i++) {
        const isW = sane || r.chance(0.7) ? i >= split : r.chance(0.5);
        let len = r.chance(sane ? 0.97 : 0.6) ? r.pick([1, 8, 16, 17, 64, 512, 4096, 1 + r.int(8192)]) : r.pick([0, 0xffffffff, 0x80000000, r.u32(), 65536 + r.int(1 << 20)]);
        let addr: bigint;
        const ok = r.chance(sane ? 0.997 : 0.7) && len <= 64 * KiB;
        if (ok) {
          const a = isW ? allocW(len) : allocR(len);
          if (a < 0) { len = 0; addr = 0n; } else {
            addr = BigInt(a);
            if (!isW) mem.writeBytes(a, i === 0 && t.header && r.chance(0.9) ? fit(t.header(r, q), len, r) : r.bytes(len));
          }
        } else addr = hostile();
        if (isW && ok) writable += len;
        descs.push([addr, len, isW ? VIRTQ_DESC_F_WRITE : 0]);
      }
      const loop = !sane && r.chance(0.1);
      const useIndirect = indirectOk && r.chance(0.25) && (sane || r.chance(0.8));
      if (useIndirect) {
        const table = allocR(16 * nbuf);
        if (table < 0) continue;
        descs.forEach(([a, l, fl], i) => d.writeDesc(table, i, a, l, fl | (i + 1 < nbuf ? VIRTQ_DESC_F_NEXT : 0), loop && i + 1 === nbuf ? 0 : i + 1));
        if (loop) d.writeDesc(table, nbuf - 1, descs[nbuf - 1]![0], descs[nbuf - 1]![1], descs[nbuf - 1]![2] | VIRTQ_DESC_F_NEXT, 0);
        const bad = !sane && r.chance(0.2);
        d.writeDesc(d.desc, ids[0]!, bad ? hostile() : BigInt(table), bad ? r.pick([0, 15, 16 * nbuf + 1]) : 16 * nbuf, VIRTQ_DESC_F_INDIRECT | (bad && r.chance(0.5) ? VIRTQ_DESC_F_NEXT : 0), ids[1] ?? 0);
      } else {
        descs.forEach(([a, l, fl], i) => {
          const last = i + 1 === nbuf;
          const nx = loop && last ? ids[0]! : !sane && r.chance(0.05) ? r.u32() & 0xffff : ids[i + 1] ?? 0;
          d.writeDesc(d.desc, ids[i]!, a, l, fl | (!last || loop ? VIRTQ_DESC_F_NEXT : 0), nx);
        });
      }
      d.pushHead(!sane && r.chance(0.03) ? r.u32() & 0xffff : ids[0]!);
      sent.push({ q, head: ids[0]!, writable });
    }
    for (const d of drivers) {
      if (!sane && r.chance(0.03)) d.setAvailIdx(r.u32());
      else d.publish();
    }
    stats.chains += sent.length;

    // --- snapshot what the device must not write
    const before = ram.slice(0, WEND);
    const usedAreas = drivers.map((d) => [d.used, 6 + 8 * d.size] as const);

    // --- notify (no eventfds here: the transport's pending-bit path) and run the queues as the I/O Worker does
    try {
      for (let q = 0; q < nq; q++) if (sent.some((s) => s.q === q) || r.chance(0.2)) tr.modernWrite(MODERN.NOTIFY + MODERN.NOTIFY_MULT * q, 2, q);
      for (let n = 0; n < 50 && fn.deadline() === 0; n++) { fn.expire(); stats.executions++; }
    } catch (e) {
      find(`iteration ${it}: exception escaped: ${(e as Error).stack?.split("\n").slice(0, 3).join(" | ")}`);
    }
    for (const b of mem.bad.splice(0)) find(`iteration ${it}: ${b}`);
    if (rom.some((b) => b !== 0x5a)) { find(`iteration ${it}: ROM written`); rom.fill(0x5a); }

    // --- memory outside writable buffers and used rings unchanged
    for (const [a, n] of usedAreas) before.set(ram.subarray(a, a + n), a);
    before.set(ram.subarray(WBUF, WEND), WBUF);
    const diff = firstDiff(before, ram.subarray(0, WEND));
    if (diff >= 0) find(`iteration ${it}: wrote 0x${diff.toString(16)} (${diff < RING_END ? "rings" : diff < RBUF ? "canary" : "readable buffers"})`);
    if (Buffer.compare(ram.subarray(WEND), CANARY) !== 0) find(`iteration ${it}: wrote the canary above the buffers`);

    // --- every chain accounted for
    const broken = (rd(COMMON.STATUS, 1) & VIRTIO_STATUS.NEEDS_RESET) !== 0;
    if (broken) stats.resets++;
    for (let q = 0; q < nq; q++) {
      const used = drivers[q]!.collect();
      stats.returned += used.length;
      if (!returns(q) || broken) continue;
      for (const s of sent.filter((x) => x.q === q)) {
        const u = used.find((e) => e.id === s.head);
        if (!u) { if (sane) find(`iteration ${it}: queue ${q}: chain ${s.head} not returned and the device is not broken`); continue; }
        if (sane && u.len > s.writable) find(`iteration ${it}: queue ${q}: used length ${u.len} > writable ${s.writable}`);
      }
    }
  }
  return stats;
}

/**
 * The driver side of device initialisation (§3.1.1) through the modern common configuration: reset,
 * ACKNOWLEDGE | DRIVER, the offered features that `want(bit)` keeps (VERSION_1 always), FEATURES_OK,
 * every queue laid out by a FakeDriver in [ringBase, ringBase + ringBytes) (sizes capped at
 * maxQueueSize; their buffers come from `heap`, default none: the caller places them), DRIVER_OK. Undefined if the device refused FEATURES_OK.
 */
export function bringUp(tr: VirtioTransport, mem: GuestMemory, want: (bit: bigint) => boolean, o: { ringBase: number; ringBytes: number; maxQueueSize: number; heap?: { base: number; size: number } }):
  { drivers: FakeDriver[]; features: bigint } | undefined {
  const w = (off: number, size: 1 | 2 | 4, v: number) => tr.modernWrite(MODERN.COMMON + off, size, v);
  const rd = (off: number, size: 1 | 2 | 4) => tr.modernRead(MODERN.COMMON + off, size);
  w(COMMON.STATUS, 1, 0);
  w(COMMON.STATUS, 1, VIRTIO_STATUS.ACKNOWLEDGE | VIRTIO_STATUS.DRIVER);
  w(COMMON.DFSELECT, 4, 0); const lo = rd(COMMON.DF, 4);
  w(COMMON.DFSELECT, 4, 1); const hi = rd(COMMON.DF, 4);
  const offered = (BigInt(hi >>> 0) << 32n) | BigInt(lo >>> 0);
  let f = VIRTIO_F.VERSION_1;
  for (let b = 0n; b < 64n; b++) if ((offered >> b) & 1n && want(b)) f |= 1n << b;
  w(COMMON.GFSELECT, 4, 0); w(COMMON.GF, 4, Number(f & 0xffffffffn));
  w(COMMON.GFSELECT, 4, 1); w(COMMON.GF, 4, Number(f >> 32n));
  w(COMMON.STATUS, 1, VIRTIO_STATUS.ACKNOWLEDGE | VIRTIO_STATUS.DRIVER | VIRTIO_STATUS.FEATURES_OK);
  if (!(rd(COMMON.STATUS, 1) & VIRTIO_STATUS.FEATURES_OK)) return undefined;
  const eventIdx = (f & VIRTIO_F.EVENT_IDX) !== 0n;
  const nq = tr.queues.length;
  const drivers: FakeDriver[] = [];
  const perQueue = Math.floor(o.ringBytes / nq / 4096) * 4096;
  for (let q = 0; q < nq; q++) {
    w(COMMON.Q_SELECT, 2, q);
    const size = Math.min(rd(COMMON.Q_SIZE, 2), o.maxQueueSize);
    w(COMMON.Q_SIZE, 2, size);
    const layout = modernLayout(o.ringBase + q * perQueue, size);
    drivers.push(new FakeDriver(mem, layout, o.heap ?? { base: o.ringBase + o.ringBytes, size: 1 }, eventIdx));
    w(COMMON.Q_DESCLO, 4, layout.desc); w(COMMON.Q_DESCHI, 4, 0);
    w(COMMON.Q_AVAILLO, 4, layout.avail); w(COMMON.Q_AVAILHI, 4, 0);
    w(COMMON.Q_USEDLO, 4, layout.used); w(COMMON.Q_USEDHI, 4, 0);
    w(COMMON.Q_ENABLE, 2, 1);
  }
  w(COMMON.STATUS, 1, VIRTIO_STATUS.ACKNOWLEDGE | VIRTIO_STATUS.DRIVER | VIRTIO_STATUS.FEATURES_OK | VIRTIO_STATUS.DRIVER_OK);
  return { drivers, features: f };
}

/** A header, cut or padded to the buffer's length. */
function fit(h: Uint8Array, len: number, r: Rng): Uint8Array {
  if (h.length >= len) return h.subarray(0, len);
  const b = r.bytes(len);
  b.set(h);
  return b;
}

function firstDiff(a: Uint8Array, b: Uint8Array): number {
  if (Buffer.compare(a, b) === 0) return -1;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return i;
  return -1;
}
