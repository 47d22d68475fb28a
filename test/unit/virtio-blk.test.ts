import { afterAll, describe, expect, test } from "bun:test";
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { closeBlock, openBlock, type BlockDisk, type BlockOptions } from "../../src/block/backend.ts";
import { hostEngine, viewCopyEngine, type BlockEngine, type Seg } from "../../src/block/io.ts";
import { GuestMemory, region } from "../../src/mem/guest-memory.ts";
import {
  BLK_CFG, BLK_CONFIG_BYTES, BLK_F, BLK_S, BLK_T, blkConfig, blkDeviceInfo, blkFeatures, executeRequest,
  type BlkDeviceInfo, type Chain,
} from "../../src/virtio/blk/index.ts";
import { host } from "../../src/vmm/index.ts";

const dir = mkdtempSync(join(tmpdir(), "tsb-vblk-"));
const disks: BlockDisk[] = [];
afterAll(() => {
  for (const d of disks) closeBlock(d);
  rmSync(dir, { recursive: true, force: true });
});
let n = 0;
const pattern = (seed: number) => (b: Uint8Array) => { for (let i = 0; i < b.length; i++) b[i] = (i * 13 + seed + (i >> 9) * 7) & 0xff; };
function device(bytes: number, o: Partial<BlockOptions> = {}, fill = pattern(1)): { dev: BlkDeviceInfo; path: string } {
  const path = join(dir, `d${n++}.img`);
  const b = new Uint8Array(bytes);
  fill(b);
  writeFileSync(path, b);
  const disk = openBlock({ path, ...o });
  disks.push(disk);
  return { dev: blkDeviceInfo(disk), path };
}

const K64 = 65536;
/** Fake guest memory: two adjacent RAM regions, a hole, a ROM page. */
function fakeMem(): GuestMemory {
  return new GuestMemory([region(0, new Uint8Array(K64)), region(K64, new Uint8Array(K64)), region(3 * K64, new Uint8Array(4096), 0, "rom")]);
}
/** The same layout on real host mappings (preadv/pwritev really run). */
function realMem(): GuestMemory {
  const a = host.memAlloc(K64, false), b = host.memAlloc(K64, false), r = host.memAlloc(4096, false);
  return new GuestMemory([region(0, host.memView(a, K64), a), region(K64, host.memView(b, K64), b), region(3 * K64, host.memView(r, 4096), r, "rom")]);
}

function header(type: number, sector: bigint | number): Uint8Array {
  const b = new Uint8Array(16), v = new DataView(b.buffer);
  v.setUint32(0, type, true);
  v.setBigUint64(8, BigInt(sector), true);
  return b;
}
/** Place bytes in guest memory as the given pieces (lengths) at the given addresses. */
function place(mem: GuestMemory, data: Uint8Array, at: number[], lens: number[]): Seg[] {
  let o = 0;
  return at.map((gpa, i) => { const len = lens[i]!; mem.writeBytes(gpa, data.subarray(o, o + len)); o += len; return { gpa, len }; });
}
function dwz(segs: [number, number, number][]): Uint8Array {
  const b = new Uint8Array(16 * segs.length), v = new DataView(b.buffer);
  segs.forEach(([s, num, fl], i) => { v.setBigUint64(i * 16, BigInt(s), true); v.setUint32(i * 16 + 8, num, true); v.setUint32(i * 16 + 12, fl, true); });
  return b;
}
/** A simple request: header at 0x100, optional readable data at 0x1000, writable data at 0x8000, status at 0x7000. */
function simple(mem: GuestMemory, type: number, sector: number | bigint, o: { rdata?: Uint8Array; wlen?: number } = {}): Chain {
  const readable = [place(mem, header(type, sector), [0x100], [16])[0]!];
  if (o.rdata) readable.push(place(mem, o.rdata, [0x1000], [o.rdata.length])[0]!);
  const writable: Seg[] = [];
  if (o.wlen) writable.push({ gpa: 0x8000, len: o.wlen });
  writable.push({ gpa: 0x7000, len: 1 });
  mem.write8(0x7000, 0xaa);
  return { readable, writable };
}

describe("device description", () => {
  test("config space layout (virtio 1.2 struct virtio_blk_config)", () => {
    const { dev } = device(10 << 20, { sectorsize: "512/4096" });
    const c = blkConfig({ ...dev, numQueues: 4 });
    const v = new DataView(c.buffer);
    expect(c.length).toBe(BLK_CONFIG_BYTES);
    expect(v.getBigUint64(BLK_CFG.capacity, true)).toBe(BigInt((10 << 20) / 512));
    expect(v.getUint32(BLK_CFG.seg_max, true)).toBe(254);
    expect(v.getUint32(BLK_CFG.blk_size, true)).toBe(512);
    expect(c[BLK_CFG.physical_block_exp]).toBe(3);
    expect(v.getUint16(BLK_CFG.min_io_size, true)).toBe(8);
    expect(v.getUint16(BLK_CFG.num_queues, true)).toBe(4);
    expect(v.getUint32(BLK_CFG.max_discard_sectors, true)).toBe(dev.maxDiscardSectors);
    expect(v.getUint32(BLK_CFG.max_discard_seg, true)).toBe(32);
    expect(v.getUint32(BLK_CFG.discard_sector_alignment, true)).toBe(8);
    expect(v.getUint32(BLK_CFG.max_write_zeroes_sectors, true)).toBe(dev.maxWriteZeroesSectors);
    expect(v.getUint32(BLK_CFG.max_write_zeroes_seg, true)).toBe(32);
    expect(c[BLK_CFG.write_zeroes_may_unmap]).toBe(1);
    expect([c[33], c[57], c[58], c[59]]).toEqual([0, 0, 0, 0]); // unused0, unused1
    expect(v.getUint16(BLK_CFG.cylinders, true)).toBe(Math.floor((10 << 20) / 512 / (16 * 63)));
  });
  test("offered features follow the options", () => {
    const bits = (f: bigint) => Object.entries(BLK_F).filter(([, b]) => f & (1n << BigInt(b))).map(([k]) => k).sort();
    expect(bits(blkFeatures(device(4096).dev))).toEqual(["BLK_SIZE", "DISCARD", "FLUSH", "MQ", "SEG_MAX", "TOPOLOGY", "WRITE_ZEROES"]);
    expect(bits(blkFeatures(device(4096, { nodelete: true }).dev))).not.toContain("DISCARD");
    const ro = device(4096, { ro: true }).dev;
    expect(bits(blkFeatures(ro))).toContain("RO");
    expect(bits(blkFeatures(ro))).not.toContain("DISCARD");
    expect(blkConfig(ro)[BLK_CFG.write_zeroes_may_unmap]).toBe(0);
  });
});

for (const [memName, mkMem, engine] of [["fake memory", fakeMem, viewCopyEngine], ["real memory", realMem, hostEngine]] as const) {
  describe(`requests on ${memName}`, () => {
    test("OUT then IN: header, data and status split across segments and a region boundary", () => {
      const { dev, path } = device(1 << 20);
      const mem = mkMem();
      const data = new Uint8Array(3 * 512); pattern(77)(data);
      const hdr = place(mem, header(BLK_T.OUT, 5), [0x200, 0x300, 0x400], [5, 7, 4]);
      const dsegs = place(mem, data, [K64 - 700, 0x2000, 0x3001], [1000, 36, 500]);
      const out = executeRequest(dev, mem, { readable: [...hdr, ...dsegs], writable: [{ gpa: 0x5000, len: 1 }] }, engine);
      expect(out).toEqual({ status: BLK_S.OK, used: 1, type: BLK_T.OUT });
      expect(mem.read8(0x5000)).toBe(BLK_S.OK);
      expect(readFileSync(path).subarray(5 * 512, 8 * 512)).toEqual(Buffer.from(data));
      // read back: header and first data bytes in one readable segment; status is the last byte of a data segment
      const hdr2 = place(mem, header(BLK_T.IN, 5), [0x600], [16]);
      mem.write8(0x4000 + 1000, 0xaa);
      const ws = [{ gpa: K64 - 24, len: 536 }, { gpa: 0x4000, len: 1001 }];
      const r = executeRequest(dev, mem, { readable: hdr2, writable: ws }, engine);
      expect(r).toEqual({ status: BLK_S.OK, used: 1537, type: BLK_T.IN });
      expect(new Uint8Array([...mem.readBytes(K64 - 24, 536), ...mem.readBytes(0x4000, 1000)])).toEqual(data);
      expect(mem.read8(0x4000 + 1000)).toBe(BLK_S.OK);
    });
    test("FLUSH, GET_ID (20 bytes, NUL padded), unsupported types", () => {
      const { dev } = device(1 << 20, { ser: "SN123" });
      const mem = mkMem();
      expect(executeRequest(dev, mem, simple(mem, BLK_T.FLUSH, 0), engine)).toEqual({ status: BLK_S.OK, used: 1, type: BLK_T.FLUSH });
      mem.fill(0x8000, 20, 0xff);
      expect(executeRequest(dev, mem, simple(mem, BLK_T.GET_ID, 0, { wlen: 20 }), engine)).toMatchObject({ status: BLK_S.OK, used: 21 });
      expect(new TextDecoder().decode(mem.readBytes(0x8000, 20))).toBe("SN123".padEnd(20, "\0"));
      const def = device(4096).dev;
      executeRequest(def, mem, simple(mem, BLK_T.GET_ID, 0, { wlen: 20 }), engine);
      expect(new TextDecoder().decode(mem.readBytes(0x8000, 20))).toBe(def.disk.serial);
      for (const t of [BLK_T.GET_LIFETIME, BLK_T.SECURE_ERASE, 2, 3, 16, 0x80000000, 0xffffffff]) {
        const r = executeRequest(dev, mem, simple(mem, t, 0, { wlen: 512 }), engine);
        expect(r.status).toBe(BLK_S.UNSUPP);
        expect(mem.read8(0x7000)).toBe(BLK_S.UNSUPP);
      }
    });
    test("bounds: past the capacity, lengths not in 512-byte units", () => {
      const { dev, path } = device(64 * 512 + 100); // capacity: 64 sectors (tail truncated)
      const mem = mkMem();
      const before = readFileSync(path);
      const io = (t: number, s: number | bigint, len: number) =>
        executeRequest(dev, mem, t === BLK_T.IN ? simple(mem, t, s, { wlen: len }) : simple(mem, t, s, { rdata: new Uint8Array(len) }), engine).status;
      expect(io(BLK_T.IN, 63, 512)).toBe(BLK_S.OK);
      expect(io(BLK_T.OUT, 63, 512)).toBe(BLK_S.OK);
      expect(io(BLK_T.IN, 64, 0)).toBe(BLK_S.OK);
      for (const t of [BLK_T.IN, BLK_T.OUT]) {
        expect(io(t, 63, 1024)).toBe(BLK_S.IOERR);
        expect(io(t, 64, 512)).toBe(BLK_S.IOERR);
        expect(io(t, 65, 0)).toBe(BLK_S.IOERR);
        expect(io(t, 2n ** 64n - 1n, 512)).toBe(BLK_S.IOERR);
        expect(io(t, 2n ** 55n, 512)).toBe(BLK_S.IOERR);
        expect(io(t, 0, 511)).toBe(BLK_S.IOERR);
        expect(io(t, 0, 513)).toBe(BLK_S.IOERR);
      }
      const after = readFileSync(path);
      expect(after.length).toBe(before.length);
      expect(after.subarray(0, 63 * 512)).toEqual(before.subarray(0, 63 * 512));
    });
    test("read-only: writes, discards and write zeroes fail with IOERR and write nothing", () => {
      const { dev, path } = device(1 << 20, { ro: true });
      const mem = mkMem();
      const before = readFileSync(path);
      expect(executeRequest(dev, mem, simple(mem, BLK_T.OUT, 0, { rdata: new Uint8Array(512) }), engine).status).toBe(BLK_S.IOERR);
      expect(executeRequest(dev, mem, simple(mem, BLK_T.DISCARD, 0, { rdata: dwz([[0, 8, 0]]) }), engine).status).toBe(BLK_S.IOERR);
      expect(executeRequest(dev, mem, simple(mem, BLK_T.WRITE_ZEROES, 0, { rdata: dwz([[0, 8, 0]]) }), engine).status).toBe(BLK_S.IOERR);
      expect(executeRequest(dev, mem, simple(mem, BLK_T.IN, 0, { wlen: 512 }), engine).status).toBe(BLK_S.OK);
      expect(executeRequest(dev, mem, simple(mem, BLK_T.FLUSH, 0), engine).status).toBe(BLK_S.OK);
      expect(readFileSync(path)).toEqual(before);
    });
    test("DISCARD and WRITE_ZEROES: segments, flags, limits", () => {
      const { dev, path } = device(1 << 20);
      const mem = mkMem();
      const st = (t: number, segs: [number, number, number][]) => executeRequest(dev, mem, simple(mem, t, 0, { rdata: dwz(segs) }), engine).status;
      expect(st(BLK_T.WRITE_ZEROES, [[8, 8, 0], [100, 3, 1]])).toBe(BLK_S.OK);
      let f = readFileSync(path);
      expect(f.subarray(8 * 512, 16 * 512).every((x) => x === 0)).toBe(true);
      expect(f.subarray(100 * 512, 103 * 512).every((x) => x === 0)).toBe(true);
      const ref = new Uint8Array(1 << 20); pattern(1)(ref); // untouched neighbours keep the pattern
      expect(f.subarray(16 * 512, 100 * 512)).toEqual(Buffer.from(ref.subarray(16 * 512, 100 * 512)));
      expect(st(BLK_T.DISCARD, [[200, 16, 0], [400, 8, 0]])).toBe(BLK_S.OK);
      expect(st(BLK_T.DISCARD, [[200, 16, 1]])).toBe(BLK_S.UNSUPP); // unmap is for write zeroes only
      expect(st(BLK_T.DISCARD, [[200, 16, 2]])).toBe(BLK_S.UNSUPP);
      expect(st(BLK_T.WRITE_ZEROES, [[200, 16, 2]])).toBe(BLK_S.UNSUPP);
      expect(st(BLK_T.WRITE_ZEROES, [[2047, 2, 0]])).toBe(BLK_S.IOERR);
      expect(st(BLK_T.DISCARD, [[2048, 1, 0]])).toBe(BLK_S.IOERR);
      expect(st(BLK_T.WRITE_ZEROES, [[0, dev.maxWriteZeroesSectors + 1, 0]])).toBe(BLK_S.IOERR);
      expect(st(BLK_T.DISCARD, Array.from({ length: 33 }, () => [0, 1, 0] as [number, number, number]))).toBe(BLK_S.IOERR);
      expect(st(BLK_T.DISCARD, Array.from({ length: 32 }, (_, i) => [i * 8, 8, 0] as [number, number, number]))).toBe(BLK_S.OK);
      expect(st(BLK_T.DISCARD, [[0, 0, 0]])).toBe(BLK_S.OK);
      // a bad segment after a good one: nothing is executed
      f = readFileSync(path);
      expect(st(BLK_T.WRITE_ZEROES, [[500, 8, 0], [5000, 8, 0]])).toBe(BLK_S.IOERR);
      expect(readFileSync(path)).toEqual(f);
      // data length not a multiple of 16, or none
      expect(executeRequest(dev, mem, simple(mem, BLK_T.DISCARD, 0, { rdata: new Uint8Array(20) }), engine).status).toBe(BLK_S.IOERR);
      expect(executeRequest(dev, mem, simple(mem, BLK_T.DISCARD, 0), engine).status).toBe(BLK_S.IOERR);
      // nodelete: discard not offered → UNSUPP; write zeroes still works
      const nd = device(1 << 20, { nodelete: true });
      expect(executeRequest(nd.dev, mem, simple(mem, BLK_T.DISCARD, 0, { rdata: dwz([[0, 8, 0]]) }), engine).status).toBe(BLK_S.UNSUPP);
      expect(executeRequest(nd.dev, mem, simple(mem, BLK_T.WRITE_ZEROES, 0, { rdata: dwz([[0, 8, 1]]) }), engine).status).toBe(BLK_S.OK);
      expect(readFileSync(nd.path).subarray(0, 4096).every((x) => x === 0)).toBe(true);
    });
    test("malformed chains: dropped without a status byte, IOERR with one", () => {
      const { dev } = device(1 << 20);
      const mem = mkMem();
      const h = place(mem, header(BLK_T.IN, 0), [0x100], [16]);
      expect(executeRequest(dev, mem, { readable: h, writable: [] }, engine)).toMatchObject({ status: null, used: 0 });
      expect(executeRequest(dev, mem, { readable: h, writable: [{ gpa: 0x500, len: 0 }] }, engine)).toMatchObject({ status: null, used: 0 });
      expect(executeRequest(dev, mem, { readable: h, writable: [{ gpa: 3 * K64 + 10, len: 1 }] }, engine)).toMatchObject({ status: null }); // ROM
      expect(executeRequest(dev, mem, { readable: h, writable: [{ gpa: 2 * K64, len: 1 }] }, engine)).toMatchObject({ status: null }); // hole
      // status byte fine, something else wrong
      const sb = { gpa: 0x7000, len: 1 };
      const st = (c: Chain) => executeRequest(dev, mem, c, engine);
      expect(st({ readable: [{ gpa: 0x100, len: 15 }], writable: [sb] })).toMatchObject({ status: BLK_S.IOERR, error: expect.stringMatching(/header/) });
      expect(st({ readable: [], writable: [sb] }).status).toBe(BLK_S.IOERR);
      expect(st({ readable: [{ gpa: 2 * K64 - 8, len: 16 }], writable: [sb] }).status).toBe(BLK_S.IOERR); // runs into the hole
      expect(st({ readable: h, writable: [{ gpa: 3 * K64, len: 512 }, sb] }).status).toBe(BLK_S.IOERR); // reading into ROM
      expect(mem.readBytes(3 * K64, 512).every((x) => x === 0)).toBe(true);
      expect(st({ readable: h, writable: [{ gpa: -4096, len: 512 }, sb] }).status).toBe(BLK_S.IOERR);
      expect(st({ readable: h, writable: [{ gpa: 0.5, len: 512 }, sb] }).status).toBe(BLK_S.IOERR);
      expect(st({ readable: h, writable: [{ gpa: 0x9000, len: NaN }, sb] }).status).toBe(BLK_S.IOERR);
    });
  });
}

/** Seeded PRNG (mulberry32). */
function rng(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** An engine that checks every buffer it is handed lies in guest RAM and every range in the disk. */
function guarded(inner: BlockEngine, mem: GuestMemory, calls: { n: number }): BlockEngine {
  const inRam = (segs: readonly Seg[]) => {
    for (const s of segs) for (let o = 0; o < s.len; o += 512) {
      const k = Math.min(512, s.len - o);
      if (!mem.valid(s.gpa + o, 1) || !mem.valid(s.gpa + o + k - 1, 1) || mem.find(s.gpa + o, 1).kind !== "ram") throw new Error("buffer outside guest RAM reached the engine");
    }
  };
  const inDisk = (d: BlockDisk, off: number, len: number) => { if (off < 0 || off + len > d.size || len % 512) throw new Error(`range ${off}+${len} reached the engine`); };
  return {
    read: (d, m, segs, off) => { calls.n++; inRam(segs); inDisk(d, off, segs.reduce((a, s) => a + s.len, 0)); return inner.read(d, m, segs, off); },
    write: (d, m, segs, off) => { calls.n++; inRam(segs); inDisk(d, off, segs.reduce((a, s) => a + s.len, 0)); return inner.write(d, m, segs, off); },
    flush: (d) => { calls.n++; return inner.flush(d); },
    discard: (d, off, len) => { calls.n++; inDisk(d, off, len); return inner.discard(d, off, len); },
    writeZeroes: (d, off, len, u) => { calls.n++; inDisk(d, off, len); return inner.writeZeroes(d, off, len, u); },
  };
}

function fuzz(mem: GuestMemory, engine: BlockEngine, iterations: number, seed: number) {
  const { dev, path } = device(128 * 512);
  const size = statSync(path).size;
  const r = rng(seed);
  const pick = <T>(a: readonly T[]): T => a[Math.floor(r() * a.length)]!;
  const int = (n: number) => Math.floor(r() * n);
  const calls = { n: 0 };
  const g = guarded(engine, mem, calls);
  const stats = { ok: 0, ioerr: 0, unsupp: 0, dropped: 0, exceptions: 0 };
  const types = [0, 1, 4, 5, 8, 10, 11, 13, 14, 2, 0xffffffff];
  const addr = (): number => {
    const k = r();
    if (k < 0.6) return int(2 * K64);
    if (k < 0.7) return pick([K64 - int(64), 2 * K64 - int(64), 0]);
    if (k < 0.8) return 3 * K64 + int(4200); // ROM and just past it
    if (k < 0.85) return 2 * K64 + int(K64); // hole
    return pick([-1, -4096, 2 ** 53, 2 ** 64, NaN, 1.5, Number.MAX_SAFE_INTEGER, 4 * K64]);
  };
  const len = (): number => {
    const k = r();
    if (k < 0.5) return int(1100);
    if (k < 0.75) return pick([0, 1, 15, 16, 17, 512, 1024, 4096]);
    if (k < 0.9) return int(20000);
    return pick([-1, 2 ** 40, NaN, 0.5, 2 ** 53]);
  };
  const segs = (max: number): Seg[] => Array.from({ length: int(max + 1) }, () => ({ gpa: addr(), len: len() }));
  const ramOk = (s: Seg) => Number.isSafeInteger(s.len) && s.len >= 0 && (s.len === 0 || (Number.isSafeInteger(s.gpa) && s.gpa >= 0 && s.gpa + s.len <= 2 * K64));
  for (let i = 0; i < iterations; i++) {
    let readable = segs(4), writable = segs(4);
    if (r() < 0.4) {
      // well-formed shape: header, sector-sized data, a status byte, all in RAM (often crossing regions)
      const base = int(2 * K64 - 8192);
      const dl = pick([0, 512, 1024, 4096]);
      const split = int(dl + 1);
      readable = [{ gpa: base, len: 16 }];
      const data = dl ? [{ gpa: base + 16, len: split }, { gpa: pick([K64 - int(700), int(2 * K64 - 4096)]), len: dl - split }] : [];
      const t = r() < 0.5;
      if (t) readable.push(...data);
      writable = [...(t ? [] : data), { gpa: base + 8000, len: 1 }];
    }
    // plausible headers (and discard segments) at the first readable segment most of the time
    const h0 = readable[0];
    if (h0 && ramOk(h0) && h0.len >= 16 && r() < 0.85) {
      const hdr = header(pick(types), r() < 0.7 ? int(140) : r() < 0.5 ? 2n ** 64n - BigInt(int(1000)) : BigInt(int(2 ** 32)) * BigInt(int(2 ** 32)));
      mem.writeBytes(h0.gpa, hdr);
      if (h0.len >= 32 && r() < 0.5) mem.writeBytes(h0.gpa + 16, dwz([[int(140), int(20), int(3)]]).subarray(0, Math.min(16, h0.len - 16)));
    }
    if (r() < 0.3) for (const s of writable) if (ramOk(s) && s.len) mem.write8(s.gpa + s.len - 1, 0xaa);
    const before = mem.regions.map((g) => g.bytes.slice());
    let res;
    try {
      res = executeRequest(dev, mem, { readable, writable }, g);
    } catch (e) {
      stats.exceptions++;
      throw e;
    }
    expect(res.status === null || [BLK_S.OK, BLK_S.IOERR, BLK_S.UNSUPP].includes(res.status as 0)).toBe(true);
    if (res.status === null) { stats.dropped++; expect(res.used).toBe(0); }
    else stats[res.status === BLK_S.OK ? "ok" : res.status === BLK_S.IOERR ? "ioerr" : "unsupp"]++;
    // the status byte is where the spec says; nothing outside the chain's writable RAM changed
    const lastW = [...writable].reverse().find((s) => Number.isSafeInteger(s.len) && s.len > 0);
    if (res.status !== null) {
      expect(lastW && ramOk(lastW)).toBe(true);
      expect(mem.read8(lastW!.gpa + lastW!.len - 1)).toBe(res.status);
      expect(res.used).toBeGreaterThanOrEqual(1);
      expect(res.used).toBeLessThanOrEqual(writable.reduce((a, s) => a + (ramOk(s) ? s.len : 0), 0));
    }
    const allOk = writable.every(ramOk);
    mem.regions.forEach((g, k) => {
      const exp = before[k]!;
      if (g.kind === "ram") {
        for (const s of writable) {
          if (!ramOk(s)) continue;
          const lo = Math.max(s.gpa, g.gpa), hi = Math.min(s.gpa + s.len, g.gpa + g.size);
          // a request with a bad writable buffer may only write its status byte
          if (hi > lo && (allOk || s === lastW)) {
            const a = allOk ? lo : Math.max(lo, s.gpa + s.len - 1);
            if (hi > a) exp.set(g.bytes.subarray(a - g.gpa, hi - g.gpa), a - g.gpa);
          }
        }
      }
      if (Buffer.compare(Buffer.from(g.bytes.buffer, g.bytes.byteOffset, g.bytes.length), Buffer.from(exp.buffer, exp.byteOffset, exp.length)) !== 0) {
        let d = 0; while (g.bytes[d] === exp[d]) d++;
        console.log("DIFF", i, g.gpa + d, exp[d], g.bytes[d], JSON.stringify({ readable, writable, res }));
      }
      expect(Buffer.compare(Buffer.from(g.bytes.buffer, g.bytes.byteOffset, g.bytes.length), Buffer.from(exp.buffer, exp.byteOffset, exp.length))).toBe(0);
    });
  }
  expect(statSync(path).size).toBe(size); // nothing written past the capacity
  return { ...stats, engineCalls: calls.n };
}

describe("fuzz: random chains", () => {
  test("20000 chains on fake memory: no exception, valid status, no stray write", () => {
    const s = fuzz(fakeMem(), viewCopyEngine, 20000, 1234);
    console.log("fuzz fake memory:", JSON.stringify(s));
    expect(s.exceptions).toBe(0);
    expect(s.ok).toBeGreaterThan(500);
    expect(s.ioerr).toBeGreaterThan(500);
    expect(s.unsupp).toBeGreaterThan(100);
    expect(s.dropped).toBeGreaterThan(500);
  });
  test("5000 chains on real memory through preadv/pwritev", () => {
    const s = fuzz(realMem(), hostEngine, 5000, 99);
    console.log("fuzz real memory:", JSON.stringify(s));
    expect(s.exceptions).toBe(0);
    expect(s.ok).toBeGreaterThan(100);
  });
});
