/**
 * Fuzzing virtio-scsi's request parsers and the SCSI target behind them. Seeded (deterministic);
 * TSBHYVE_FUZZ_ITERS scales the counts.
 *
 * 1. Request chains straight into `executeCommand` / `executeControl`: random segment lists (addresses in
 *    RAM, at region edges, in ROM, in the hole, negative, NaN, beyond 2^53; lengths 0, tiny, huge, NaN),
 *    random sense_size / cdb_size, LUN fields (good, other targets, lun[0] ≠ 1, flat, garbage), and CDBs:
 *    mostly real opcodes from the command table with random fields biased to the disk's boundaries,
 *    sometimes random bytes; data-out with plausible UNMAP / MODE SELECT lists. Three LUNs: read-write
 *    512-byte blocks, read-only, 4096-byte blocks.
 * 2. Descriptor chains through the real split virtqueue and the device model: loops, indices outside the
 *    table, huge lengths, buffers outside RAM, readable after writable, indirect tables (nested, empty).
 *
 * Findings (each counted, the test asserts there are none): an exception escaping; a response code
 * that does not exist; a response byte not where the spec puts it; a used length larger than the
 * writable part; guest memory changed outside the chain's device-writable RAM; the block engine handed
 * a buffer outside guest RAM or outside the chain's data buffers, a disk range outside the disk, or a
 * write for the read-only LUN; CHECK CONDITION without valid fixed sense; an image changing size; the
 * read-only image changing; a queue that neither answers nor marks itself broken.
 * 3. The shared device-level rig (./virtio-fuzz-rig.ts) on the whole device behind the virtio-pci
 *    transport: random feature sets, resets, bursts of hostile chains on every queue (the event queue
 *    holds its buffers; every other chain must come back or the device must need a reset).
 * A deliberately wrong device (one that writes outside its buffers, one that throws, one that lets a
 * read-only write through) is run through the same checker to show it reports findings.
 */
import { afterAll, expect, test } from "bun:test";
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { closeBlock, openBlock, type BlockDisk } from "../../src/block/backend.ts";
import { hostEngine, viewCopyEngine, type BlockEngine, type Seg } from "../../src/block/io.ts";
import type { DeviceContext, Platform } from "../../src/devices/device.ts";
import { StateArena } from "../../src/devices/state.ts";
import { GuestMemory, region } from "../../src/mem/guest-memory.ts";
import { CDB_TABLE, OP, scsiLun, scsiTarget } from "../../src/scsi/index.ts";
import { scsiModel } from "../../src/virtio/devices/scsi.ts";
import { VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE, Virtqueue, virtqueueLayout } from "../../src/virtio/queue.ts";
import type { VirtioTransport } from "../../src/virtio/pci.ts";
import { executeCommand, executeControl, SCSI_S, scsiDeviceInfo, type Chain, type ScsiDeviceInfo, type ScsiReqResult } from "../../src/virtio/scsi/index.ts";
import { host } from "../../src/vmm/index.ts";
import { createVirtioPci } from "../../src/virtio/pci.ts";
import { fuzzDevice, type Rng } from "./virtio-fuzz-rig.ts";

const SCALE = Number(process.env.TSBHYVE_FUZZ_ITERS ?? 1);
const dir = mkdtempSync(join(tmpdir(), "tsb-vscsi-fuzz-"));
const disks: BlockDisk[] = [];
afterAll(() => {
  for (const d of disks) closeBlock(d);
  rmSync(dir, { recursive: true, force: true });
});

/** mulberry32 */
function rng(seed: number) {
  let s = seed | 0;
  const f = () => {
    s = (s + 0x6d2b79f5) | 0;
    let t = Math.imul(s ^ (s >>> 15), 1 | s);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return { f, int: (n: number) => Math.floor(f() * n), pick: <T>(a: readonly T[]): T => a[Math.floor(f() * a.length)]!, chance: (p: number) => f() < p };
}

const K64 = 65536, ROM = 3 * K64, RAM_END = 2 * K64;
const fakeMem = () => new GuestMemory([region(0, new Uint8Array(K64)), region(K64, new Uint8Array(K64)), region(ROM, new Uint8Array(4096), 0, "rom")]);
function realMem(): GuestMemory {
  const a = host.memAlloc(K64, false), b = host.memAlloc(K64, false), r = host.memAlloc(4096, false);
  return new GuestMemory([region(0, host.memView(a, K64), a), region(K64, host.memView(b, K64), b), region(ROM, host.memView(r, 4096), r, "rom")]);
}

let nImg = 0;
function target() {
  const mk = (bytes: number, o: Record<string, unknown> = {}) => {
    const path = join(dir, `f${nImg++}.img`);
    const b = new Uint8Array(bytes);
    for (let i = 0; i < b.length; i++) b[i] = (i * 11 + 3) & 0xff;
    writeFileSync(path, b);
    const d = openBlock({ path, ...o });
    disks.push(d);
    return { path, disk: d, bytes: b };
  };
  const rw = mk(128 * 512), ro = mk(64 * 512, { ro: true }), k4 = mk(32 * 4096, { sectorsize: 4096 });
  const dev = scsiDeviceInfo(scsiTarget([scsiLun(0, rw.disk), scsiLun(1, ro.disk), scsiLun(2, k4.disk)]), { queueSize: 64 });
  return { dev, files: [rw, ro, k4] };
}

type Findings = string[];
const segOk = (mem: GuestMemory, s: Seg, ram: boolean) => {
  if (!Number.isSafeInteger(s.len) || s.len < 0 || !Number.isSafeInteger(s.gpa) || s.gpa < 0) return false;
  for (let o = 0; o < s.len; o += 4096) {
    const a = s.gpa + o;
    if (!mem.valid(a, 1) || (ram && mem.find(a, 1).kind !== "ram")) return false;
  }
  const e = s.gpa + s.len - 1;
  return s.len === 0 || (mem.valid(e, 1) && (!ram || mem.find(e, 1).kind === "ram"));
};
/** Is every byte of `inner` inside one of `outer`'s segments? */
const within = (inner: readonly Seg[], outer: readonly Seg[]) =>
  inner.every((s) => s.len === 0 || outer.some((o) => s.gpa >= o.gpa && s.gpa + s.len <= o.gpa + o.len));

/** An engine that records a finding for anything the target should never hand it. */
function guarded(inner: BlockEngine, mem: GuestMemory, chain: () => Chain, f: Findings): BlockEngine {
  const disk = (d: BlockDisk, off: number, len: number, write: boolean, what: string) => {
    if (!(Number.isSafeInteger(off) && off >= 0 && Number.isSafeInteger(len) && len >= 0 && off + len <= d.size)) f.push(`${what}: range ${off}+${len} outside the ${d.size}-byte disk`);
    if (write && d.readonly) f.push(`${what}: reached the read-only disk`);
  };
  const bufs = (segs: readonly Seg[], write: boolean, what: string) => {
    for (const s of segs) if (!segOk(mem, s, !write)) f.push(`${what}: buffer 0x${s.gpa.toString(16)}+${s.len} outside guest RAM`);
    const c = chain();
    if (!within(segs, write ? c.readable : c.writable)) f.push(`${what}: buffer outside the chain's ${write ? "readable" : "writable"} part`);
  };
  const len = (segs: readonly Seg[]) => segs.reduce((a, s) => a + s.len, 0);
  return {
    read: (d, m, s, off) => { bufs(s, false, "read"); disk(d, off, len(s), false, "read"); return inner.read(d, m, s, off); },
    write: (d, m, s, off) => { bufs(s, true, "write"); disk(d, off, len(s), true, "write"); return inner.write(d, m, s, off); },
    flush: (d) => inner.flush(d),
    discard: (d, off, n) => { disk(d, off, n, true, "discard"); return inner.discard(d, off, n); },
    writeZeroes: (d, off, n, u) => { disk(d, off, n, true, "write zeroes"); return inner.writeZeroes(d, off, n, u); },
  };
}

type Exec = (dev: ScsiDeviceInfo, mem: GuestMemory, chain: Chain, sizes: { sense: number; cdb: number }, engine: BlockEngine) => ScsiReqResult;

const RESPONSES = new Set(Object.values(SCSI_S));
const OPS = CDB_TABLE.map((e) => e.op);
const WRITE_OPS = [OP.WRITE_6, OP.WRITE_10, OP.WRITE_12, OP.WRITE_16, OP.WRITE_SAME_10, OP.WRITE_SAME_16, OP.UNMAP];
const be = (v: number | bigint, n: number) => { const o: number[] = []; let x = BigInt(v); for (let i = 0; i < n; i++) { o.unshift(Number(x & 0xffn)); x >>= 8n; } return o; };

/** One random command request; returns what it checked and found. */
function oneCommand(r: ReturnType<typeof rng>, mem: GuestMemory, dev: ScsiDeviceInfo, exec: Exec, inner: BlockEngine, f: Findings, stats: Record<string, number>) {
  const sizes = { sense: r.chance(0.8) ? 96 : r.int(253), cdb: r.chance(0.8) ? 32 : 6 + r.int(40) };
  const addr = (): number => {
    const k = r.f();
    if (k < 0.7) return r.int(RAM_END - 64);
    if (k < 0.8) return r.pick([K64 - r.int(64), RAM_END - r.int(64), 0]);
    if (k < 0.87) return ROM + r.int(4200);
    if (k < 0.92) return RAM_END + r.int(K64);
    return r.pick([-1, -4096, 2 ** 53, 2 ** 64, NaN, 1.5, Number.MAX_SAFE_INTEGER, 4 * K64]);
  };
  const len = (): number => {
    const k = r.f();
    if (k < 0.5) return r.int(1200);
    if (k < 0.8) return r.pick([0, 1, 11, 12, 18, 51, 108, 512, 1024, 4096, 8192]);
    if (k < 0.95) return r.int(40000);
    return r.pick([-1, 2 ** 40, NaN, 0.5, 2 ** 53, 0xffffffff]);
  };
  const rand = (n: number): Seg[] => Array.from({ length: r.int(n + 1) }, () => ({ gpa: addr(), len: len() }));
  // data length of a well-formed chain, chosen first so transfer lengths can match it
  const dl = r.pick([0, 0, 512, 1024, 4096, 8192, 24, 40, r.int(3000)]);
  // CDB
  const cdb = new Uint8Array(Math.max(sizes.cdb, 16));
  for (let i = 0; i < cdb.length; i++) cdb[i] = r.chance(0.5) ? 0 : r.int(256);
  if (r.chance(0.85)) {
    const op = r.chance(0.25) ? r.pick(WRITE_OPS) : r.pick(OPS);
    cdb[0] = op;
    const e = CDB_TABLE.find((x) => x.op === op && (x.sa === undefined || r.chance(0.8)))!;
    if (e?.sa !== undefined) cdb[1] = e.sa | (r.chance(0.9) ? 0 : r.int(256) & 0xe0);
    else if (r.chance(0.7)) cdb[1] = r.pick([0, 0, 0x08, 0x01, 0x02, 0x10, 0x20]);
    const lba = r.pick([0, 1, r.int(200), 127, 128, 63, 64, 31, 32, 2 ** 32 - 1, 2 ** 53]);
    const cnt = r.chance(0.5) ? Math.floor(dl / 512) : r.pick([0, 1, 2, r.int(300), 256, 8192, 8193, 0xffff]);
    if (r.chance(0.7)) {
      if ([0x28, 0x2a, 0x2f, 0x35, 0x41].includes(op)) { cdb.set(be(Math.min(lba, 2 ** 32 - 1), 4), 2); cdb.set(be(cnt & 0xffff, 2), 7); }
      if ([0x88, 0x8a, 0x8f, 0x91, 0x93].includes(op)) { cdb.set(be(lba, 8), 2); cdb.set(be(cnt, 4), 10); }
      if ([0xa8, 0xaa].includes(op)) { cdb.set(be(Math.min(lba, 2 ** 32 - 1), 4), 2); cdb.set(be(cnt, 4), 6); }
      if ([0x12, 0x1a, 0x5a, 0x03].includes(op) && r.chance(0.5)) { cdb[2] = r.pick([0, 0x80, 0x83, 0xb0, 0xb1, 0xb2, 0x08, 0x0a, 0x3f]); cdb[1] = r.int(2); }
      if (op === OP.UNMAP || op === OP.MODE_SELECT_6 || op === OP.MODE_SELECT_10) { cdb[7] = 0; cdb[8] = r.pick([0, 4, 8, 24, 40, 200]); cdb[4] = cdb[8]!; }
    }
    cdb[(e?.len ?? 6) - 1] = r.chance(0.9) ? 0 : r.int(256);
  }
  const hdrLen = 19 + sizes.cdb;
  const hdr = new Uint8Array(hdrLen);
  hdr.set(r.chance(0.85) ? [1, 0, 0, r.pick([0, 0, 1, 1, 2, 3])] : r.chance(0.5) ? [1, r.int(3), 0x40, r.int(4), 0, 0, 0, r.int(2)] : [r.int(3), r.int(256), r.int(256), r.int(256)], 0);
  hdr.set(cdb.subarray(0, sizes.cdb), 19);
  // chain shape
  let readable: Seg[], writable: Seg[];
  if (r.chance(0.55)) {
    const base = r.int(RAM_END - 12000);
    const split = r.int(dl + 1);
    const data = dl ? [{ gpa: base + 200, len: split }, { gpa: r.pick([K64 - r.int(700), r.int(RAM_END - 9000)]), len: dl - split }] : [];
    const out = r.chance(0.5);
    readable = [{ gpa: base, len: r.chance(0.9) ? hdrLen : r.int(hdrLen + 4) }, ...(out ? data : [])];
    writable = [{ gpa: base + 9000, len: r.chance(0.9) ? 12 + sizes.sense : r.int(120) }, ...(out ? [] : data)];
    if (r.chance(0.1)) writable.push(...rand(2));
  } else {
    readable = rand(4);
    writable = rand(4);
  }
  const h0 = readable[0];
  if (h0 && segOk(mem, h0, false) && h0.len > 0 && mem.find(h0.gpa, 1).kind === "ram") {
    try { mem.writeBytes(h0.gpa, hdr.subarray(0, Math.min(h0.len, hdrLen))); } catch { /* spans into the hole */ }
    // a plausible UNMAP / MODE SELECT parameter list after the header
    const d1 = readable[1];
    if (d1 && segOk(mem, d1, true) && d1.len >= 24 && r.chance(0.5)) {
      const p = new Uint8Array(24);
      p.set(be(22, 2), 0); p.set(be(16, 2), 2); p.set(be(r.pick([0, 5, 120, 127, 200]), 8), 8); p.set(be(r.pick([1, 8, 100]), 4), 16);
      mem.writeBytes(d1.gpa, p);
    }
  }
  const chain: Chain = { readable, writable };
  // overlapping device-writable buffers are the driver's own problem: the last write to a byte wins
  const disjoint = writable.every((s, i) => writable.every((t, j) => i === j || !(s.len > 0 && t.len > 0 && s.gpa < t.gpa + t.len && t.gpa < s.gpa + s.len)));
  const before = mem.regions.map((g) => g.bytes.slice());
  let res: ScsiReqResult | undefined;
  try {
    res = exec(dev, mem, chain, sizes, guarded(inner, mem, () => chain, f));
  } catch (e) {
    f.push(`exception escaped: ${(e as Error).message}`);
  }
  stats.executions = (stats.executions ?? 0) + 1;
  const wOk = writable.every((s) => segOk(mem, s, true));
  const wTotal = wOk ? writable.reduce((a, s) => a + s.len, 0) : 0;
  if (res) {
    const key = res.response === null ? "dropped" : `response ${res.response}${res.status ? ` status ${res.status}` : ""}`;
    stats[key] = (stats[key] ?? 0) + 1;
    if (res.response === null) { if (res.used !== 0) f.push(`dropped chain with used ${res.used}`); }
    else {
      if (!RESPONSES.has(res.response as 0)) f.push(`response code ${res.response}`);
      if (!wOk) f.push("answered into a writable part that is not guest RAM");
      if (res.used > wTotal) f.push(`used ${res.used} > writable ${wTotal}`);
      if (wOk && disjoint && wTotal >= 12) {
        const resp = new Uint8Array(12);
        let o = 0;
        for (const s of writable) for (let i = 0; i < s.len && o < 12; i++) resp[o++] = mem.read8(s.gpa + i);
        if (resp[11] !== res.response) f.push(`response byte ${resp[11]} ≠ ${res.response}`);
        const senseLen = resp[0]! | (resp[1]! << 8);
        if (res.response === SCSI_S.OK && resp[10] === 2) {
          if (senseLen === 0 && sizes.sense >= 18 && wTotal >= 12 + 18) f.push("CHECK CONDITION without sense");
          if (senseLen > sizes.sense) f.push(`sense_len ${senseLen} > sense_size ${sizes.sense}`);
          if (senseLen > 0) {
            let s0 = -1, oo = 0;
            for (const s of writable) for (let i = 0; i < s.len; i++, oo++) if (oo === 12) s0 = mem.read8(s.gpa + i);
            if (s0 !== 0x70) f.push(`sense starts with 0x${s0.toString(16)}`);
          }
        }
      }
    }
  }
  // memory outside the writable RAM is unchanged
  mem.regions.forEach((g, k) => {
    const exp = before[k]!;
    if (wOk && res?.response !== null) {
      for (const s of writable) {
        const lo = Math.max(s.gpa, g.gpa), hi = Math.min(s.gpa + s.len, g.gpa + g.size);
        if (hi > lo) exp.set(g.bytes.subarray(lo - g.gpa, hi - g.gpa), lo - g.gpa);
      }
    }
    if (Buffer.compare(Buffer.from(g.bytes.buffer, g.bytes.byteOffset, g.bytes.length), Buffer.from(exp.buffer, exp.byteOffset, exp.length)) !== 0) {
      let d = 0; while (g.bytes[d] === exp[d]) d++;
      f.push(`guest memory changed outside the writable buffers at 0x${(g.gpa + d).toString(16)}`);
      g.bytes.set(exp); // keep going from a clean state
    }
  });
}

function oneControl(r: ReturnType<typeof rng>, mem: GuestMemory, f: Findings, stats: Record<string, number>) {
  const base = r.int(RAM_END - 200);
  const req = new Uint8Array(24);
  for (let i = 0; i < 24; i++) req[i] = r.chance(0.6) ? 0 : r.int(256);
  req[0] = r.pick([0, 0, 1, 2, 3, 255]);
  req[4] = r.pick([0, 1, 5, 6, 7, 8, 99]);
  if (r.chance(0.7)) { req[8] = 1; req[9] = 0; }
  mem.writeBytes(base, req);
  const chain: Chain = r.chance(0.7)
    ? { readable: [{ gpa: base, len: r.pick([24, 16, 3, 0, 30]) }], writable: [{ gpa: base + 100, len: r.pick([1, 5, 0, 8]) }] }
    : { readable: [{ gpa: r.pick([base, ROM, RAM_END + 10, NaN]), len: r.int(40) }], writable: [{ gpa: r.pick([base + 100, ROM + 1, -5]), len: r.int(9) }] };
  const before = mem.regions.map((g) => g.bytes.slice());
  let res: ScsiReqResult | undefined;
  try { res = executeControl(mem, chain); } catch (e) { f.push(`control: exception escaped: ${(e as Error).message}`); }
  stats.executions = (stats.executions ?? 0) + 1;
  if (res && res.response !== null && !RESPONSES.has(res.response as 0)) f.push(`control: response code ${res.response}`);
  if (res && res.used > chain.writable.reduce((a, s) => a + (segOk(mem, s, true) ? s.len : 0), 0)) f.push(`control: used ${res.used}`);
  mem.regions.forEach((g, k) => {
    const exp = before[k]!;
    const w = chain.writable[0]!;
    if (segOk(mem, w, true)) for (let i = 0; i < w.len; i++) if (w.gpa + i >= g.gpa && w.gpa + i < g.gpa + g.size) exp[w.gpa + i - g.gpa] = g.bytes[w.gpa + i - g.gpa]!;
    if (Buffer.compare(Buffer.from(g.bytes), Buffer.from(exp)) !== 0) { f.push("control: guest memory changed outside the response"); g.bytes.set(exp); }
  });
}

/** Random descriptor tables through the real virtqueue and the device model (request queue 2, control 0). */
function chains(seed: number, iterations: number, f: Findings, stats: Record<string, number>) {
  const r = rng(seed);
  const mem = fakeMem();
  const { dev } = target();
  const platform: Platform = { irqLine() {}, msi() {}, requestExit() {}, wakeIo() {}, log() {} };
  const arena = new StateArena(new SharedArrayBuffer(1 << 16));
  const ctx: DeviceContext = { mem, arena, platform, role: "io" };
  const model = scsiModel(ctx, dev, { engine: guarded(viewCopyEngine, mem, () => ({ readable: [{ gpa: 0, len: RAM_END }], writable: [{ gpa: 0, len: RAM_END }] }), f) });
  model.reset!();
  let broken = 0;
  const vq = new Virtqueue(mem, arena.alloc(virtqueueLayout), 2, 64, { onBroken: () => { broken++; } });
  const t = { mem, queue: () => vq, reschedule() {} } as unknown as VirtioTransport;
  const SIZE = 16, DESC = 0x1000, AVAIL = 0x2000, USED = 0x3000;
  for (let i = 0; i < iterations; i++) {
    vq.configure({ size: SIZE, desc: DESC, avail: AVAIL, used: USED, indirect: true, eventIdx: r.chance(0.5) });
    mem.fill(USED, 6 + 8 * SIZE);
    const wr = (table: number, k: number, addr: number | bigint, len: number, flags: number, next: number) => {
      mem.write64(table + 16 * k, BigInt.asUintN(64, BigInt(addr))); mem.write32(table + 16 * k + 8, len >>> 0);
      mem.write16(table + 16 * k + 12, flags); mem.write16(table + 16 * k + 14, next);
    };
    // a well-formed request by default, then one malformation
    const hdr = new Uint8Array(51); hdr.set([1, 0, 0, 0], 0); hdr.set([OP.READ_10, 0, 0, 0, 0, r.int(130), 0, 0, r.int(3), 0], 19);
    mem.writeBytes(0x8000, hdr);
    const n = 3;
    wr(DESC, 0, 0x8000, 51, VIRTQ_DESC_F_NEXT, 1);
    wr(DESC, 1, 0x9000, 108, VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE, 2);
    wr(DESC, 2, 0xa000, 1024, VIRTQ_DESC_F_WRITE, 0);
    const kind = r.pick(["ok", "loop", "index", "huge", "outside", "direction", "indirect-nested", "indirect-empty", "indirect-outside", "rom-write", "random"]);
    switch (kind) {
      case "loop": wr(DESC, 2, 0xa000, 512, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, r.int(3)); break;
      case "index": wr(DESC, 1, 0x9000, 108, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, SIZE + r.int(1000)); break;
      case "huge": wr(DESC, 2, 0xa000, 0xffffffff - r.int(10), VIRTQ_DESC_F_WRITE, 0); break;
      case "outside": wr(DESC, r.int(n), r.pick([RAM_END + 5, 2 ** 63, 2 ** 40, ROM + 4090]), 4096, r.int(2) ? VIRTQ_DESC_F_WRITE : 0, 0); break;
      case "direction": wr(DESC, 1, 0x9000, 108, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 2); wr(DESC, 2, 0xa000, 512, 0, 0); break;
      case "indirect-nested": wr(DESC, 0, 0xc000, 32, VIRTQ_DESC_F_INDIRECT, 0); wr(0xc000, 0, 0xd000, 16, VIRTQ_DESC_F_INDIRECT, 0); break;
      case "indirect-empty": wr(DESC, 0, 0xc000, r.pick([0, 8, 17]), VIRTQ_DESC_F_INDIRECT, 0); break;
      case "indirect-outside": wr(DESC, 0, r.pick([RAM_END - 8, ROM, -16]), 64, VIRTQ_DESC_F_INDIRECT, 0); break;
      case "rom-write": wr(DESC, 2, ROM, 512, VIRTQ_DESC_F_WRITE, 0); break;
      case "random": for (let k = 0; k < SIZE; k++) wr(DESC, k, r.int(RAM_END * 2), r.int(70000), r.int(8), r.int(SIZE + 4)); break;
    }
    mem.write16(AVAIL + 4, r.chance(0.95) ? 0 : r.int(40));
    mem.write16(AVAIL + 2, r.chance(0.95) ? 1 : r.int(65536));
    const b0 = broken;
    try { model.processQueue(2, t); } catch (e) { f.push(`chain ${kind}: exception escaped: ${(e as Error).message}`); }
    stats.executions = (stats.executions ?? 0) + 1;
    const answered = mem.read16(USED + 2) === 1 && vq.pending() === 0;
    const outcome = broken > b0 ? "broken" : answered ? "answered" : "other";
    stats[`${kind} ${outcome}`] = (stats[`${kind} ${outcome}`] ?? 0) + 1;
    if (outcome === "other" && (mem.read16(AVAIL + 2) - 0) % 65536 !== 0) f.push(`chain ${kind}: neither answered nor broken`);
    if (kind === "ok" && mem.read16(AVAIL + 2) === 1 && mem.read16(AVAIL + 4) === 0 && outcome !== "answered") f.push(`a good chain was not answered (${outcome})`);
    if (["loop", "index", "huge", "outside", "direction", "indirect-nested", "indirect-empty", "indirect-outside", "rom-write"].includes(kind)
      && mem.read16(AVAIL + 2) === 1 && mem.read16(AVAIL + 4) === 0 && outcome !== "broken") f.push(`chain ${kind} was accepted`);
  }
}

function parsers(seed: number, iterations: number, mem: GuestMemory, inner: BlockEngine, exec: Exec = executeCommand) {
  const r = rng(seed);
  const { dev, files } = target();
  const sizes = files.map((x) => statSync(x.path).size);
  const f: Findings = [];
  const stats: Record<string, number> = {};
  for (let i = 0; i < iterations; i++) {
    if (r.chance(0.1)) oneControl(r, mem, f, stats);
    else oneCommand(r, mem, dev, exec, inner, f, stats);
  }
  files.forEach((x, k) => { if (statSync(x.path).size !== sizes[k]) f.push(`image ${k} changed size`); });
  if (Buffer.compare(readFileSync(files[1]!.path), Buffer.from(files[1]!.bytes)) !== 0) f.push("the read-only image changed");
  return { f, stats };
}

const summary = (f: Findings) => [...new Set(f)].slice(0, 10).join("\n");

test("fuzz virtio-scsi: random and malformed requests and descriptor chains", () => {
  const t0 = performance.now();
  const a = parsers(20240611, 20000 * SCALE, fakeMem(), viewCopyEngine);
  const b = parsers(777, 4000 * SCALE, realMem(), hostEngine);
  const cf: Findings = [], cs: Record<string, number> = {};
  chains(4242, 3000 * SCALE, cf, cs);
  const executions = a.stats.executions! + b.stats.executions! + cs.executions!;
  const findings = [...a.f, ...b.f, ...cf];
  console.log(`fuzz virtio-scsi: ${executions} executions, ${findings.length} findings (${Math.round(performance.now() - t0)} ms)`);
  console.log("  outcomes (fake memory):", JSON.stringify(a.stats));
  console.log("  outcomes (host memory):", JSON.stringify(b.stats));
  console.log("  descriptor chains:", JSON.stringify(cs));
  expect(summary(findings)).toBe("");
  expect(findings.length).toBe(0);
  // the fuzzer reaches the interesting outcomes
  for (const s of [a.stats]) {
    expect(s["response 0"]!).toBeGreaterThan(1000); // GOOD
    expect(s["response 0 status 2"]!).toBeGreaterThan(1000); // CHECK CONDITION
    expect(s["response 1"]!).toBeGreaterThan(50); // OVERRUN
    expect(s["response 3"]!).toBeGreaterThan(50); // BAD_TARGET
    expect(s["response 9"]!).toBeGreaterThan(50); // FAILURE
    expect(s.dropped!).toBeGreaterThan(200);
  }
  expect(Object.keys(cs).filter((k) => k.endsWith(" broken")).length).toBeGreaterThanOrEqual(8);
}, 60_000);

test("the checker catches a wrong device: stray writes, exceptions, writes to a read-only LUN", () => {
  // 1. writes one byte past its response buffer
  const stray: Exec = (dev, mem, chain, sizes, engine) => {
    const res = executeCommand(dev, mem, chain, sizes, engine);
    const w = chain.writable.at(-1);
    if (w && res.response !== null && Number.isSafeInteger(w.gpa + w.len) && mem.valid(w.gpa + w.len, 1)) mem.write8(w.gpa + w.len, 0x5a ^ mem.read8(w.gpa + w.len));
    return res;
  };
  const a = parsers(1, 300, fakeMem(), viewCopyEngine, stray);
  expect(a.f.some((x) => x.includes("changed outside the writable buffers"))).toBe(true);
  // 2. throws on some input
  const throwing: Exec = (dev, mem, chain, sizes, engine) => { if (chain.readable.length > 2) throw new Error("boom"); return executeCommand(dev, mem, chain, sizes, engine); };
  expect(parsers(2, 300, fakeMem(), viewCopyEngine, throwing).f.some((x) => x.includes("exception escaped: boom"))).toBe(true);
  // 3. ignores read-only: the guarded engine reports it
  // (the device forgets the read-only flag; the engine sees the real disk)
  const unprotected: Exec = (dev, mem, chain, sizes, engine) => {
    const real = new Map(dev.target.luns.map((l) => [l.disk.fd, l.disk]));
    const back = (d: BlockDisk) => real.get(d.fd) ?? d;
    return executeCommand({ ...dev, target: { luns: dev.target.luns.map((l) => ({ ...l, disk: { ...l.disk, readonly: false } })) } }, mem, chain, sizes, {
      ...engine,
      write: (d, m, s, off) => engine.write(back(d), m, s, off),
      writeZeroes: (d, off, n, u) => engine.writeZeroes(back(d), off, n, u),
    });
  };
  const c = parsers(3, 10000, fakeMem(), viewCopyEngine, unprotected);
  expect(c.f.some((x) => x.includes("read-only"))).toBe(true);
}, 30_000);

/** virtio_scsi_cmd_req (request queues) or a TMF / AN request (control queue) with plausible fields. */
function rigHeader(r: Rng, q: number): Uint8Array {
  if (q === 0) {
    const b = new Uint8Array(24), v = new DataView(b.buffer);
    v.setUint32(0, r.pick([0, 0, 1, 2, r.u32()]), true);
    v.setUint32(4, r.pick([0, 1, 3, 4, 5, 6, 7, r.u32()]), true);
    b.set(r.chance(0.8) ? [1, 0, 0, r.int(3)] : r.bytes(8), 8);
    return b;
  }
  const b = new Uint8Array(51);
  b.set(r.chance(0.85) ? [1, 0, r.pick([0, 0x40]), r.int(4)] : r.bytes(8), 0);
  const e = r.pick(CDB_TABLE);
  b.set(r.bytes(e.len), 19);
  b[19] = r.chance(0.9) ? e.op : r.int(256);
  if (e.sa !== undefined) b[20] = e.sa;
  if (r.chance(0.6)) b.set(be(r.pick([0, 1, 127, 200, 2 ** 32 - 1]), 4), 21);
  if (r.chance(0.6)) { b[25] = 0; b[26] = 0; b[27] = r.pick([0, 1, 2, 8, 255]); }
  b[19 + e.len - 1] = r.chance(0.9) ? 0 : r.int(256);
  return b;
}

test("fuzz virtio-scsi (device-level rig): hostile chains on every queue through the transport", () => {
  const { dev } = target();
  const t0 = performance.now();
  const iters = 1500 * SCALE;
  const s = fuzzDevice({
    name: "virtio-scsi", returns: (q) => q !== 1, header: rigHeader, queueSize: 64,
    build: (inp) => createVirtioPci(inp, scsiModel(inp.ctx, { ...dev, numQueues: 2 }, { engine: viewCopyEngine })),
  }, iters);
  console.log(`fuzz virtio-scsi (rig): ${s.executions} executions, ${s.chains} chains, ${s.returned} returned, ${s.resets} device resets needed, ${s.findings.length} findings (${(performance.now() - t0).toFixed(0)} ms)`);
  expect(s.findings).toEqual([]);
  expect(s.chains).toBeGreaterThan(iters);
  expect(s.returned).toBeGreaterThan(iters / 2);
}, 60_000);
