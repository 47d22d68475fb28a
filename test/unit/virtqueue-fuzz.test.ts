/**
 * Fuzzing the split virtqueue: random queue sizes, ring placements, descriptor tables (flags, next
 * links, addresses biased towards RAM edges, lengths biased towards overflow), indirect tables and
 * avail indices, then pops, pushes and notification calls. Checked on every iteration:
 *  - nothing throws;
 *  - the first pop agrees with an independent reference walker written from the spec (same chain, or
 *    both refuse it);
 *  - every segment handed out is RAM, readable ones before writable ones, totals < 2^32;
 *  - a broken queue reported exactly once, and hands out nothing afterwards;
 *  - guest memory changed only in the used ring (device-owned area).
 * Seeded (deterministic); TSBHYVE_FUZZ_ITERS overrides the iteration count.
 */
import { expect, test } from "bun:test";
import { StateArena } from "../../src/devices/state.ts";
import { GuestMemory, KiB, region } from "../../src/mem/guest-memory.ts";
import { ramRange, Virtqueue, virtqueueLayout, type Chain } from "../../src/virtio/queue.ts";
import { rng } from "./virtio-fuzz-rig.ts";

const ITERS = Number(process.env.TSBHYVE_FUZZ_ITERS ?? 60_000);


// RAM: [0, 64K) and [64K, 128K) contiguous (a region boundary inside RAM), a hole, [192K, 224K)
const A = 64 * KiB, HOLE = 192 * KiB, END = 224 * KiB;
const ramBytes = [new Uint8Array(A), new Uint8Array(A), new Uint8Array(32 * KiB)];
const mem = new GuestMemory([region(0, ramBytes[0]!), region(A, ramBytes[1]!), region(HOLE, ramBytes[2]!)]);
const snapshot = ramBytes.map((b) => new Uint8Array(b.length));

type Ref = { ok: false } | { ok: true; readable: [number, number][]; writable: [number, number][] };

/** The spec's rules, written again independently of src/virtio/queue.ts, for one chain. */
function reference(size: number, desc: number, head: number, indirectOk: boolean): Ref {
  const readable: [number, number][] = [], writable: [number, number][] = [];
  const inRam = (a: bigint, l: number) => a + BigInt(l) <= BigInt(Number.MAX_SAFE_INTEGER) && ramRange(mem, Number(a), l);
  let table = BigInt(desc), n = size, seen = 0, inIndirect = false, i = head, total = 0, wrote = false;
  const rd = (t: bigint, k: number) => {
    const b = new DataView(mem.readBytes(Number(t) + 16 * k, 16).buffer);
    return { addr: b.getBigUint64(0, true), len: b.getUint32(8, true), flags: b.getUint16(12, true), next: b.getUint16(14, true) };
  };
  for (;;) {
    if (i >= n) return { ok: false };
    if (++seen > n) return { ok: false };
    const d = rd(table, i);
    if (d.flags & 4) {
      if (inIndirect || !indirectOk || d.flags & 1 || d.len === 0 || d.len % 16 || !inRam(d.addr, d.len)) return { ok: false };
      table = d.addr; n = d.len / 16; seen = 0; i = 0; inIndirect = true;
      continue;
    }
    const w = (d.flags & 2) !== 0;
    if (!w && wrote) return { ok: false };
    wrote ||= w;
    total += d.len;
    if (total > 0xffffffff) return { ok: false };
    if (d.len) {
      if (!inRam(d.addr, d.len)) return { ok: false };
      (w ? writable : readable).push([Number(d.addr), d.len]);
    }
    if (!(d.flags & 1)) return { ok: true, readable, writable };
    i = d.next;
  }
}

test(`virtqueue fuzz: ${ITERS} random queues`, () => {
  const r = rng(0x5eed1234);
  const arena = new StateArena(new SharedArrayBuffer(4096));
  const block = arena.alloc(virtqueueLayout);
  let breaks = 0;
  const q = new Virtqueue(mem, block, 0, 64, { onBroken: () => { breaks++; } });
  const stats = { iterations: 0, pops: 0, chains: 0, broken: 0, refAgree: 0, segments: 0, pushes: 0, interrupts: 0, findings: [] as string[] };
  const ramAddr = (len: number): bigint => {
    switch (r.int(8)) {
      case 0: return BigInt(A - r.int(64)); // across the region boundary
      case 1: return BigInt(HOLE - r.int(64)); // into the hole
      case 2: return BigInt(END - r.int(64)); // off the end
      case 3: return BigInt(r.u32()) * 2n ** 32n + BigInt(r.u32()); // anywhere in 64 bits
      default: return BigInt(r.int(Math.max(1, END - len)));
    }
  };
  const randLen = (): number => r.pick([0, 1, 16, 64, 100, 4096, r.int(256), r.int(70000), 0xffffffff, 0x80000000, r.u32()]);
  const randFlags = (): number => r.chance(0.15) ? r.u32() & 0xffff : r.pick([0, 1, 2, 3, 4, 5, 6, 7, 1, 3, 1, 3]);

  for (let it = 0; it < ITERS; it++) {
    stats.iterations++;
    for (const b of ramBytes) b.fill(0);
    const size = 1 << r.int(7); // 1..64
    // half the iterations come from a driver that mostly follows the rules (p = chance of each field
    // being sane), the rest are hostile throughout
    const sane = r.chance(0.5);
    const p = sane ? 0.97 : 0.5;
    // rings: in sane runs apart and aligned, otherwise anywhere (overlapping, misaligned, outside RAM)
    const place = (lo: number, align: number, bytes: number): number => sane && r.chance(0.99)
      ? lo + Math.floor(r.int(4096 - (bytes % 4096)) / align) * align
      : r.chance(0.05) ? r.int(END + 4096) : Math.floor(r.int(END - bytes - 8) / align) * align;
    const desc = place(0, 16, 16 * size), avail = place(8 * KiB, 2, 6 + 2 * size), used = place(12 * KiB, 4, 6 + 8 * size);
    const bufAddr = (len: number): bigint => r.chance(p) ? BigInt(16 * KiB + r.int(2 * A - 16 * KiB - len)) : ramAddr(len);
    const split = r.int(size + 1); // sane chains: readable below, writable from here
    for (let k = 0; k < size; k++) {
      const a = desc + 16 * k;
      if (!mem.valid(a, 16)) continue;
      const len = r.chance(p) ? r.int(600) : randLen();
      let flags = r.chance(p) ? (k >= split ? 2 : 0) | (k + 1 < size && r.chance(0.6) ? 1 : 0) | (r.chance(0.05) ? 4 : 0) : randFlags();
      let addr = bufAddr(Math.min(len, 4096));
      if (flags & 4 && r.chance(0.8)) { // a plausible indirect table
        const m = 1 + r.int(8);
        const t = 16 * KiB + Math.floor(r.int(2 * A - 16 * KiB - 16 * m) / 16) * 16 + (r.chance(p) ? 0 : r.int(16));
        if (mem.valid(t, 16 * m)) {
          const isplit = r.int(m + 1);
          for (let j = 0; j < m; j++) {
            const jl = r.chance(p) ? r.int(600) : randLen();
            mem.write64(t + 16 * j, bufAddr(Math.min(jl, 4096)));
            mem.write32(t + 16 * j + 8, jl);
            mem.write16(t + 16 * j + 12, r.chance(p) ? (j >= isplit ? 2 : 0) | (j + 1 < m ? 1 : 0) : randFlags());
            mem.write16(t + 16 * j + 14, r.chance(p) ? j + 1 : r.int(0x10000));
          }
          addr = BigInt(t);
          if (r.chance(p)) flags = 4;
          mem.write32(a + 8, 16 * m);
        } else mem.write32(a + 8, len);
      } else mem.write32(a + 8, len);
      mem.write64(a, addr);
      mem.write16(a + 12, flags);
      mem.write16(a + 14, r.chance(p) ? k + 1 : r.chance(0.9) ? r.int(size) : r.u32() & 0xffff);
    }
    const availOk = mem.valid(avail, 6 + 2 * size);
    const start = r.chance(0.3) ? r.u32() & 0xffff : 0;
    const count = r.chance(sane ? 0.99 : 0.9) ? r.int(size + 1) : r.u32() & 0xffff;
    if (availOk) {
      for (let k = 0; k < size; k++) mem.write16(avail + 4 + 2 * k, r.chance(sane ? 0.99 : 0.95) ? r.int(size) : r.u32() & 0xffff);
      mem.write16(avail, r.int(2));
      mem.write16(avail + 2, (start + count) & 0xffff);
      mem.write16(avail + 4 + 2 * size, r.u32() & 0xffff);
    }
    const eventIdx = r.chance(0.5), indirect = r.chance(0.8);
    q.reset();
    breaks = 0;
    q.configure({ size, desc, avail, used, eventIdx, indirect });
    q.s.lastAvail = start; q.s.usedIdx = start; q.s.signalled = start;
    for (let k = 0; k < 3; k++) snapshot[k]!.set(ramBytes[k]!);
    const usedBefore = ramRange(mem, used, 6 + 8 * size) ? mem.readBytes(used, 6 + 8 * size) : undefined;

    // what the reference expects of the first pop
    let ref: Ref | "none" | "skip" = "skip";
    const ringsOk = desc % 16 === 0 && avail % 2 === 0 && used % 4 === 0 && ramRange(mem, desc, 16 * size) && availOk && ramRange(mem, used, 6 + 8 * size);
    if (ringsOk) {
      if (count === 0) ref = "none";
      else if (count > size) ref = { ok: false };
      else {
        const head = mem.read16(avail + 4 + 2 * (start % size));
        ref = reference(size, desc, head, indirect);
      }
    }

    const popped: Chain[] = [];
    try {
      for (let k = 0; k < size + 2; k++) {
        if (r.chance(0.1)) q.disableNotify();
        if (r.chance(0.1)) q.enableNotify();
        const c = q.pop();
        stats.pops++;
        if (k === 0 && ref !== "skip") {
          const got = c ? { ok: true, readable: c.readable.map((s) => [s.gpa, s.len]), writable: c.writable.map((s) => [s.gpa, s.len]) } : q.broken ? { ok: false } : "none";
          if (JSON.stringify(got) !== JSON.stringify(ref)) stats.findings.push(`iteration ${it}: queue ${JSON.stringify(got)} vs reference ${JSON.stringify(ref)}`);
          else stats.refAgree++;
        }
        if (!c) break;
        popped.push(c);
        for (const s of [...c.readable, ...c.writable]) {
          stats.segments++;
          if (!ramRange(mem, s.gpa, s.len) || s.len === 0) stats.findings.push(`iteration ${it}: segment ${s.gpa}+${s.len} not RAM`);
        }
        if (c.readableBytes + c.writableBytes > 0xffffffff) stats.findings.push(`iteration ${it}: chain over 2^32`);
        if (r.chance(0.8)) { q.push(c.head, r.int(1 << 20)); stats.pushes++; }
        if (r.chance(0.5) && q.needsInterrupt()) stats.interrupts++;
      }
    } catch (e) {
      stats.findings.push(`iteration ${it}: threw ${(e as Error).message}`);
    }
    stats.chains += popped.length;
    if (q.broken) {
      stats.broken++;
      if (breaks !== 1) stats.findings.push(`iteration ${it}: onBroken called ${breaks} times`);
      if (q.pop()) stats.findings.push(`iteration ${it}: pop after broken`);
    } else if (breaks) stats.findings.push(`iteration ${it}: onBroken without broken state`);
    // memory: only the used ring (incl. avail_event) may have changed: put it back, then compare all
    if (usedBefore) mem.writeBytes(used, usedBefore);
    for (let k = 0; k < 3; k++) {
      if (Buffer.compare(ramBytes[k]!, snapshot[k]!) === 0) continue;
      const o = ramBytes[k]!.findIndex((b, i) => b !== snapshot[k]![i]);
      stats.findings.push(`iteration ${it}: wrote 0x${([0, A, HOLE][k]! + o).toString(16)} outside the used ring`);
    }
    if (stats.findings.length > 20) break;
    if (popped.some((c) => c.readable.length + c.writable.length > 0 && c.head >= size)) stats.findings.push(`iteration ${it}: head outside`);
  }
  console.log(`virtqueue fuzz: ${JSON.stringify({ ...stats, findings: stats.findings.length })}`);
  if (stats.findings.length) console.log(stats.findings.slice(0, 20).join("\n"));
  expect(stats.findings).toEqual([]);
  expect(stats.iterations).toBe(ITERS);
  expect(stats.chains).toBeGreaterThan(ITERS / 10); // the generator makes valid chains too
  expect(stats.broken).toBeGreaterThan(ITERS / 10); // ... and plenty of broken ones
}, 120_000);
