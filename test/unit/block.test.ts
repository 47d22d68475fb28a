import { afterAll, describe, expect, test } from "bun:test";
import { spawn, spawnSync } from "node:child_process";
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, statSync, writeFileSync, writeSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  BlockError, checkSerial, closeBlock, defaultSerial, needsRmw, openBlock, parseSectorSize, type BlockDisk,
} from "../../src/block/backend.ts";
import { hostEngine, hostIov } from "../../src/block/io.ts";
import { GuestMemory, region } from "../../src/mem/guest-memory.ts";
import { host, WZ_NO_FALLOCATE, WZ_MAY_UNMAP } from "../../src/vmm/index.ts";

const dir = mkdtempSync(join(tmpdir(), "tsb-block-"));
const shmDir = (() => { try { return mkdtempSync("/dev/shm/tsb-block-"); } catch { return undefined; } })();
afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
  if (shmDir) rmSync(shmDir, { recursive: true, force: true });
});
let nfile = 0;
function image(bytes: number, fill?: (b: Uint8Array) => void, where = dir): string {
  const p = join(where, `disk${nfile++}.img`);
  const b = new Uint8Array(bytes);
  fill?.(b);
  writeFileSync(p, b);
  return p;
}
const pattern = (seed: number) => (b: Uint8Array) => { for (let i = 0; i < b.length; i++) b[i] = (i * 31 + seed + (i >> 9)) & 0xff; };
const opened: BlockDisk[] = [];
function open(o: Parameters<typeof openBlock>[0]): BlockDisk { const d = openBlock(o); opened.push(d); return d; }
afterAll(() => { for (const d of opened) closeBlock(d); });

/** Real host memory: two adjacent 64 KiB RAM regions in separate mappings (host addresses not contiguous). */
function realMemory(): GuestMemory {
  const a = host.memAlloc(65536, false), b = host.memAlloc(65536, false);
  return new GuestMemory([region(0, host.memView(a, 65536), a), region(65536, host.memView(b, 65536), b)]);
}

describe("options", () => {
  test("sectorsize=logical[/physical]", () => {
    expect(parseSectorSize("512")).toEqual({ logical: 512, physical: 512 });
    expect(parseSectorSize("512/4096")).toEqual({ logical: 512, physical: 4096 });
    expect(parseSectorSize(4096)).toEqual({ logical: 4096, physical: 4096 });
    for (const bad of ["256", "4096/512", "1000", "512/1000", "x", "512/", "", "131072", "-512"]) {
      expect(() => parseSectorSize(bad)).toThrow(BlockError);
    }
  });
  test("serial: ser= at most 20 printable characters; default is a stable hash of the path", () => {
    expect(checkSerial("A".repeat(20))).toBe("A".repeat(20));
    expect(() => checkSerial("A".repeat(21))).toThrow(BlockError);
    expect(() => checkSerial("bad\x01")).toThrow(BlockError);
    const s = defaultSerial("/vm/disk0.img");
    expect(s).toMatch(/^BHYVE-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{4}$/);
    expect(s.length).toBe(20);
    expect(defaultSerial("/vm/disk0.img")).toBe(s);
    expect(defaultSerial("/vm/disk1.img")).not.toBe(s);
  });
});

describe("openBlock", () => {
  test("a regular file: size, sectors, serial, read-write, discard", () => {
    const p = image(1 << 20);
    const d = open({ path: p });
    expect(d).toMatchObject({ kind: "file", readonly: false, direct: false, sync: false, logical: 512, physical: 512, size: 1 << 20, discard: true, serial: defaultSerial(p), memAlign: 1, offAlign: 1 });
    expect(d.warnings).toEqual([]);
    expect(structuredClone(d)).toEqual(d); // plain data for Workers
  });
  test("a size that is not a whole number of sectors is truncated, with a warning", () => {
    const d = open({ path: image(10 * 4096 + 700), sectorsize: "4096" });
    expect(d.size).toBe(10 * 4096);
    expect(d.hostSize).toBe(10 * 4096 + 700);
    expect(d.warnings.join()).toMatch(/last 700 bytes/);
  });
  test("ro, nodelete, sync, sectorsize and ser", () => {
    const d = open({ path: image(8192), ro: true, sync: true, sectorsize: "512/4096", ser: "SER-1" });
    expect(d).toMatchObject({ readonly: true, discard: false, sync: true, logical: 512, physical: 4096, serial: "SER-1" });
    expect(open({ path: image(8192), nodelete: true }).discard).toBe(false);
  });
  test("errors name the path and the reason", () => {
    expect(() => openBlock({ path: join(dir, "missing.img") })).toThrow(/missing\.img: ENOENT/);
    expect(() => openBlock({ path: "/dev/null" })).toThrow(/neither a regular file nor a block device/);
    expect(() => openBlock({ path: image(512), ser: "x".repeat(21) })).toThrow(BlockError);
    expect(() => openBlock({ path: "" })).toThrow(/path is required/);
  });
  test("a read-only open really refuses writes at the host", () => {
    const d = open({ path: image(4096), ro: true });
    expect(host.pwrite(d.fd, new Uint8Array(512), 0)).toBeLessThan(0);
  });
});

describe("I/O on real guest memory (preadv/pwritev into host mappings)", () => {
  test("hostIov splits a segment where one host mapping ends", () => {
    const mem = realMemory();
    const iov = hostIov(mem, [{ gpa: 65536 - 1024, len: 2048 }, { gpa: 0, len: 0 }, { gpa: 4096, len: 512 }]);
    expect(iov.length).toBe(6);
    expect(Number(iov[0])).toBe(mem.hostAddr(65536 - 1024, 1024));
    expect([Number(iov[1]), Number(iov[3]), Number(iov[5])]).toEqual([1024, 1024, 512]);
    expect(Number(iov[2])).toBe(mem.hostAddr(65536, 1024));
  });
  test("write then read round trip across a mapping boundary", () => {
    const p = image(1 << 20);
    const d = open({ path: p });
    const mem = realMemory();
    const src = new Uint8Array(8192);
    pattern(7)(src);
    mem.writeBytes(65536 - 3000, src);
    const segs = [{ gpa: 65536 - 3000, len: 5000 }, { gpa: 65536 + 2000, len: 3192 }];
    expect(hostEngine.write(d, mem, segs, 3 * 512)).toBe(8192);
    expect(readFileSync(p).subarray(1536, 1536 + 8192)).toEqual(Buffer.from(src));
    mem.fill(0, 65536 * 2, 0);
    expect(hostEngine.read(d, mem, segs, 3 * 512)).toBe(8192);
    expect(mem.readBytes(65536 - 3000, 8192)).toEqual(src);
  });
  test("the bounce path's read-modify-write keeps the rest of each host block", () => {
    const p = image(64 * 1024, pattern(4));
    const d = open({ path: p });
    const mem = realMemory();
    const b = new Uint8Array(2560); pattern(40)(b);
    mem.writeBytes(65536 - 1001, b);
    // 4 KiB alignment demanded of a buffered fd: same code path as O_DIRECT on a 4Kn host
    const iov = hostIov(mem, [{ gpa: 65536 - 1001, len: 2560 }]);
    expect(host.blkIo(d.fd, iov, 512 * 7, true, 4096, 4096)).toBe(2560);
    const ref = new Uint8Array(64 * 1024); pattern(4)(ref);
    ref.set(b, 512 * 7);
    expect(readFileSync(p)).toEqual(Buffer.from(ref));
    mem.fill(65536 - 1001, 2560, 0);
    expect(host.blkIo(d.fd, iov, 512 * 7, false, 4096, 4096)).toBe(2560);
    expect(mem.readBytes(65536 - 1001, 2560)).toEqual(b);
    expect(host.blkIo(d.fd, iov, 512 * 7, false, 3000, 4096)).toBeLessThan(0); // not a power of two
  });
  test("a read past the end of the file is short, not an error", () => {
    const d = open({ path: image(1024) });
    expect(hostEngine.read(d, realMemory(), [{ gpa: 0, len: 2048 }], 0)).toBe(1024);
  });
  test("nocache (O_DIRECT): aligned requests and unaligned ones through the bounce buffer", () => {
    const p = image(1 << 20, pattern(3));
    let d: BlockDisk;
    try { d = open({ path: p, nocache: true, sectorsize: "512" }); } catch (e) {
      expect(String(e)).toMatch(/O_DIRECT/); // host file system without O_DIRECT
      return;
    }
    expect(d.direct).toBe(true);
    expect(d.offAlign).toBeGreaterThanOrEqual(512);
    expect(needsRmw(d)).toBe(d.offAlign > 512);
    const mem = realMemory();
    const expectFile = (off: number, data: Uint8Array) => expect(readFileSync(p).subarray(off, off + data.length)).toEqual(Buffer.from(data));
    // aligned: page-aligned buffers, 4 KiB multiples
    const a = new Uint8Array(16384); pattern(11)(a);
    mem.writeBytes(8192, a);
    expect(hostEngine.write(d, mem, [{ gpa: 8192, len: 16384 }], 65536)).toBe(16384);
    expectFile(65536, a);
    // unaligned memory (odd address) and a 512-byte offset: bounced, read-modify-write at the edges
    const b = new Uint8Array(1536); pattern(12)(b);
    mem.writeBytes(40001, b);
    const before = readFileSync(p);
    expect(hostEngine.write(d, mem, [{ gpa: 40001, len: 1000 }, { gpa: 41001, len: 536 }], 512 * 9)).toBe(1536);
    const after = readFileSync(p);
    expect(after.subarray(4608, 4608 + 1536)).toEqual(Buffer.from(b));
    expect(after.subarray(0, 4608)).toEqual(before.subarray(0, 4608));
    expect(after.subarray(4608 + 1536)).toEqual(before.subarray(4608 + 1536));
    mem.fill(50001, 1536, 0xee);
    expect(hostEngine.read(d, mem, [{ gpa: 50001, len: 1536 }], 512 * 9)).toBe(1536);
    expect(mem.readBytes(50001, 1536)).toEqual(b);
    // a request crossing the bounce buffer's 1 MiB window, across a mapping boundary
    const big = new Uint8Array(65536 + 512); pattern(13)(big);
    mem.writeBytes(32768 + 3, big.subarray(0, 65536));
    expect(hostEngine.write(d, mem, [{ gpa: 32768 + 3, len: 65536 }], 1024 * 1024 - 32768 - 512)).toBe(65536);
    expectFile(1024 * 1024 - 32768 - 512, big.subarray(0, 65536));
    // zeros through the aligned fallback writer
    expect(host.writeZeroes(d.fd, 512 * 9, 1536, WZ_NO_FALLOCATE, d.memAlign, d.offAlign)).toBe(1536);
    expectFile(4608, new Uint8Array(1536));
  });
});

describe("flush, discard, write zeroes", () => {
  test("an acknowledged flush leaves nothing dirty and the data survives kill -9", async () => {
    const p = image(1 << 20);
    const child = join(dir, "flush-child.ts");
    const root = join(import.meta.dir, "../..");
    writeFileSync(child, `
      import { openBlock } from ${JSON.stringify(join(root, "src/block/backend.ts"))};
      import { hostEngine } from ${JSON.stringify(join(root, "src/block/io.ts"))};
      import { GuestMemory, region } from ${JSON.stringify(join(root, "src/mem/guest-memory.ts"))};
      import { host } from ${JSON.stringify(join(root, "src/vmm/index.ts"))};
      const d = openBlock({ path: process.argv[2] });
      const a = host.memAlloc(1 << 20, false);
      const mem = new GuestMemory([region(0, host.memView(a, 1 << 20), a)]);
      for (let i = 0; i < 1 << 20; i++) mem.write8(i, (i * 7 + 1) & 0xff);
      if (hostEngine.write(d, mem, [{ gpa: 0, len: 1 << 20 }], 0) !== 1 << 20) throw new Error("write");
      const before = host.cacheStat(d.fd, 0, 1 << 20);
      if (hostEngine.flush(d) !== 0) throw new Error("flush");
      const after = host.cacheStat(d.fd, 0, 1 << 20);
      console.log("ACK " + JSON.stringify({ before, after }));
      setInterval(() => {}, 1000);
    `);
    const proc = spawn(process.execPath, [child, p], { stdio: ["ignore", "pipe", "inherit"] });
    const line = await new Promise<string>((resolve, reject) => {
      let out = "";
      proc.stdout!.on("data", (c) => { out += c; const m = /ACK (.*)\n/.exec(out); if (m) resolve(m[1]!); });
      proc.on("exit", (code) => reject(new Error(`child exited ${code}: ${out}`)));
    });
    proc.kill("SIGKILL");
    await new Promise((r) => proc.on("exit", r));
    const { before, after } = JSON.parse(line);
    if (typeof after === "object") {
      // before the flush the pages were dirty (or already being written back); after it none is either
      expect(after.dirty).toBe(0);
      expect(after.writeback).toBe(0);
      expect(before.dirty + before.writeback + before.cached).toBeGreaterThan(0);
    }
    // a separate process and fd sees every byte
    const got = readFileSync(p);
    let bad = -1;
    for (let i = 0; i < got.length; i++) if (got[i] !== ((i * 7 + 1) & 0xff)) { bad = i; break; }
    expect(bad).toBe(-1);
  });

  test("discard punches holes: the file's allocated blocks shrink and the range reads zeros", () => {
    const p = join(dir, "sparse.img");
    const fd = openSync(p, "w");
    const chunk = new Uint8Array(1 << 20); pattern(5)(chunk);
    for (let i = 0; i < 4; i++) writeSync(fd, chunk, 0, chunk.length, i << 20);
    closeSync(fd);
    const d = open({ path: p });
    expect(hostEngine.flush(d)).toBe(0);
    const blocksBefore = statSync(p).blocks;
    expect(hostEngine.discard(d, 1 << 20, 2 << 20)).toBe(0);
    const blocksAfter = statSync(p).blocks;
    expect(blocksBefore - blocksAfter).toBeGreaterThanOrEqual(((2 << 20) / 512) * 0.9);
    expect(statSync(p).size).toBe(4 << 20);
    const data = readFileSync(p);
    expect(data.subarray(1 << 20, 3 << 20).every((x) => x === 0)).toBe(true);
    expect(data.subarray(0, 1 << 20)).toEqual(Buffer.from(chunk));
    // a partial sector at either end is not discarded
    const before = readFileSync(p);
    expect(hostEngine.discard(d, (3 << 20) + 100, 300)).toBe(0);
    expect(readFileSync(p)).toEqual(before);
    // nodelete: never
    expect(hostEngine.discard(open({ path: p, nodelete: true }), 0, 4096)).toBeLessThan(0);
  });

  const wzCases: [string, () => string | undefined, number][] = [
    ["fallocate (ZERO_RANGE)", () => dir, 0],
    ["fallocate (PUNCH_HOLE, may unmap)", () => dir, WZ_MAY_UNMAP],
    ["fallback: writing zeros", () => dir, WZ_NO_FALLOCATE],
    ["tmpfs: no ZERO_RANGE there, falls back to writing zeros", () => shmDir, 0],
  ];
  for (const [name, where, flags] of wzCases) {
    test(`write zeroes: ${name}`, () => {
      const w = where();
      if (!w) return;
      const p = image(3 << 20, pattern(9), w);
      const d = open({ path: p });
      const off = 512 * 1001, len = (2 << 20) + 512 * 3;
      expect(host.writeZeroes(d.fd, off, len, flags, 1, 1)).toBe(len);
      const data = readFileSync(p);
      expect(data.length).toBe(3 << 20);
      expect(data.subarray(off, off + len).every((x) => x === 0)).toBe(true);
      const ref = new Uint8Array(3 << 20); pattern(9)(ref);
      expect(data.subarray(0, off)).toEqual(Buffer.from(ref.subarray(0, off)));
      expect(data.subarray(off + len)).toEqual(Buffer.from(ref.subarray(off + len)));
      expect(hostEngine.writeZeroes(d, 0, 512, false)).toBe(0);
    });
  }
});

describe("host block devices", () => {
  test("a loop device: size, sector sizes and I/O (needs root and losetup; skipped otherwise)", () => {
    const p = image(4 << 20, pattern(21));
    const att = spawnSync("losetup", ["--find", "--show", "--sector-size", "4096", p], { encoding: "utf8" });
    const dev = att.status === 0 ? att.stdout.trim() : "";
    if (!dev) return;
    try {
      const d = openBlock({ path: dev });
      try {
        expect(d).toMatchObject({ kind: "blockdev", size: 4 << 20, logical: 4096, physical: 4096 });
        const mem = realMemory();
        expect(hostEngine.read(d, mem, [{ gpa: 0, len: 8192 }], 4096)).toBe(8192);
        const ref = new Uint8Array(4 << 20); pattern(21)(ref);
        expect(mem.readBytes(0, 8192)).toEqual(ref.subarray(4096, 4096 + 8192));
      } finally {
        closeBlock(d);
      }
      const dd = openBlock({ path: dev, nocache: true });
      try {
        expect(dd).toMatchObject({ direct: true, logical: 4096, offAlign: 4096 });
        expect(needsRmw(dd)).toBe(false);
      } finally {
        closeBlock(dd);
      }
      // 512-byte guest sectors on a 4 KiB-sector device with O_DIRECT: read-modify-write in the shim
      const ds = openBlock({ path: dev, nocache: true, sectorsize: "512" });
      try {
        expect(needsRmw(ds)).toBe(true);
        expect(ds.warnings.join()).toMatch(/read-modified-written/);
        const mem = realMemory();
        const b = new Uint8Array(1536); pattern(22)(b);
        mem.writeBytes(100, b);
        expect(hostEngine.write(ds, mem, [{ gpa: 100, len: 1536 }], 512 * 9)).toBe(1536);
        mem.fill(0, 4096, 0);
        expect(hostEngine.read(ds, mem, [{ gpa: 1000, len: 1536 }], 512 * 9)).toBe(1536);
        expect(mem.readBytes(1000, 1536)).toEqual(b);
        expect(hostEngine.flush(ds)).toBe(0);
      } finally {
        closeBlock(ds);
      }
      const ref = new Uint8Array(4 << 20); pattern(21)(ref);
      const b = new Uint8Array(1536); pattern(22)(b);
      ref.set(b, 512 * 9);
      expect(readFileSync(p)).toEqual(Buffer.from(ref));
    } finally {
      spawnSync("losetup", ["--detach", dev]);
    }
  });
});
