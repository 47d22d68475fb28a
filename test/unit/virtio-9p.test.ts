/**
 * virtio-9p: the 9P2000.L server on a real host folder (preadv/pwritev into real guest memory), driven
 * by the independent test client (virtio-9p-client.ts) directly and through the whole device (virtio-pci
 * transport + fake driver). Round trips of every operation a Linux v9fs mount uses; `ro`; escape
 * attempts (.., '/', absolute names, symlinks to / and ../.., a symlink swapped in for a walked
 * directory, links/renames with bogus fids, creating through a symlinked directory, renaming the root)
 * that must fail and leave the outside untouched; malformed messages answered with Rlerror; config.
 */
import { afterAll, beforeEach, describe, expect, test } from "bun:test";
import { existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, statSync, symlinkSync, truncateSync, writeFileSync } from "node:fs";
import { constants, tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "../../src/cli/args.ts";
import { ConfigError, loadConfigText } from "../../src/config/load.ts";
import { NINEP_LIMITS, NinePServer } from "../../src/virtio/9p/server.ts";
import { virtioQueueCount } from "../../src/virtio/notify.ts";
import { fsHost } from "../../src/vmm/fs.ts";
import { CFG } from "../../src/pci/regs.ts";
import { VIRTIO_STATUS } from "../../src/virtio/pci.ts";
import { Client, deviceRig, directSubmit, isErr, must, Reader, realMem, tmsg, T, type Err } from "./virtio-9p-client.ts";

const E = constants.errno;
const base = mkdtempSync(join(tmpdir(), "tsb-9p-"));
afterAll(() => rmSync(base, { recursive: true, force: true }));
const SECRET = "TSB-HOST-SECRET-7f3a";
const outside = join(base, "outside");
mkdirSync(outside);
writeFileSync(join(outside, "secret.txt"), SECRET);
const outsideSnapshot = () => JSON.stringify(readdirSync(outside).sort()) + readFileSync(join(outside, "secret.txt"), "utf8");
const OUTSIDE0 = outsideSnapshot();

let share = "";
let n = 0;
/** A fresh share: hello.txt, sub/inner.txt, symlinks pointing out. */
function makeShare(): string {
  const d = join(base, `share${n++}`);
  mkdirSync(join(d, "sub"), { recursive: true });
  writeFileSync(join(d, "hello.txt"), "hello world\n");
  writeFileSync(join(d, "sub", "inner.txt"), "inner");
  symlinkSync("/", join(d, "link_root"));
  symlinkSync("../..", join(d, "link_up"));
  symlinkSync(outside, join(d, "link_outside"));
  symlinkSync(join(outside, "secret.txt"), join(d, "link_secret"));
  return d;
}

const servers: NinePServer[] = [];
function session(o: { ro?: boolean; path?: string; limits?: typeof NINEP_LIMITS } = {}) {
  const server = new NinePServer({ path: o.path ?? share, ro: o.ro ?? false }, o.limits ?? NINEP_LIMITS);
  servers.push(server);
  const mem = realMem();
  const c = new Client(directSubmit(server, mem));
  must(c.version());
  must(c.attach(1));
  return { c, server, mem };
}
afterAll(() => { for (const s of servers) s.close(); });
beforeEach(() => { share = makeShare(); });

const O = { RDONLY: 0, WRONLY: 1, RDWR: 2, CREAT: 0o100, EXCL: 0o200, TRUNC: 0o1000, APPEND: 0o2000, DIRECTORY: 0o200000 };
const te = new TextEncoder(), td = new TextDecoder();
const errOf = (x: unknown) => (isErr(x) ? (x as Err).err : "no error");
/** A walk that must not reach its end: the Rlerror errno, or "partial N" for an Rwalk of N < names qids that left newfid unused. */
function walkStops(c: Client, fid: number, newfid: number, names: (string | Uint8Array)[]): number | string {
  const r = c.walk(fid, newfid, names);
  if (isErr(r)) return r.err;
  expect(r.length).toBeLessThan(names.length);
  expect(errOf(c.getattr(newfid))).toBe(E.EBADF);
  return `partial ${r.length}`;
}
/** A folder's entries, recursively, without following symlinks. */
function listing(d: string, pre = ""): string[] {
  return readdirSync(d, { withFileTypes: true }).flatMap((e) => [pre + e.name, ...(e.isDirectory() ? listing(join(d, e.name), `${pre}${e.name}/`) : [])]).sort();
}

describe("9P2000.L operations", () => {
  test("version: msize capped, only 9P2000.L, a new version clunks every fid", () => {
    const { c, server } = session();
    expect(must(c.version(8 << 20))).toEqual({ msize: NINEP_LIMITS.maxMsize, version: "9P2000.L" });
    expect(must(c.version(65536, "9P2000.u"))).toEqual({ msize: 65536, version: "unknown" });
    expect(errOf(c.version(100))).toBe(E.EINVAL);
    must(c.version(65536));
    expect(server.fids.size).toBe(0);
    expect(errOf(c.getattr(1))).toBe(E.EBADF);
    must(c.attach(1));
    expect(errOf(c.attach(1))).toBe(E.EBADF); // fid in use
    expect(errOf(c.attach(2, "/etc"))).toBe(E.ENOENT);
    expect(errOf(c.rpc(T.auth, [["u32", 5], ["s", "u"], ["s", ""], ["u32", 0]]))).toBe(E.EOPNOTSUPP);
  });

  test("attach, walk, getattr, lopen, read (into two writable segments, at offsets, past the end)", () => {
    const { c } = session();
    const root = must(c.getattr(1));
    expect(root.qid.type).toBe(0x80);
    expect(root.mode & 0o170000).toBe(0o040000);
    const q = must(c.walk(1, 2, ["sub", "inner.txt"]));
    expect(q.map((x) => x.type)).toEqual([0x80, 0]);
    expect(q[1]!.path).toBe(BigInt(statSync(join(share, "sub", "inner.txt")).ino));
    const a = must(c.getattr(2));
    expect(a.size).toBe(5n);
    expect(a.mode & 0o170000).toBe(0o100000);
    must(c.lopen(2, O.RDONLY));
    expect(td.decode(must(c.read(2, 0, 100)))).toBe("inner");
    expect(td.decode(must(c.read(2, 2, 2)))).toBe("ne");
    expect(must(c.read(2, 100, 10)).length).toBe(0);
    // a bigger file read in one go, spanning both writable segments of the chain
    const big = new Uint8Array(200_000).map((_, i) => (i * 31 + (i >> 8)) & 0xff);
    writeFileSync(join(share, "big.bin"), big);
    must(c.walk(1, 3, ["big.bin"]));
    must(c.lopen(3, O.RDONLY));
    const got = must(c.read(3, 1000, 150_000, 200_000));
    expect(got).toEqual(big.subarray(1000, 151_000));
    // a read is clipped to the reply room
    expect(must(c.read(3, 0, 0xffffffff, 4096)).length).toBe(4096 - 11);
    expect(errOf(c.lopen(3, O.RDONLY))).toBe(E.EBADF); // already open
    must(c.clunk(3));
    expect(errOf(c.clunk(3))).toBe(E.EBADF);
    // a clone walk (no names) and walking to "." stays put
    const cl = must(c.walk(1, 4, []));
    expect(cl).toEqual([]);
    expect(must(c.walk(4, 4, ["."]))[0]!.path).toBe(root.qid.path);
    // a partial walk returns the qids so far and leaves newfid unused
    const part = must(c.walk(1, 5, ["sub", "nope", "x"]));
    expect(part.length).toBe(1);
    expect(errOf(c.getattr(5))).toBe(E.EBADF);
    expect(errOf(c.walk(1, 5, ["nope"]))).toBe(E.ENOENT);
  });

  test("lcreate, write, read back, fsync; the host sees the file", () => {
    const { c } = session();
    must(c.walk(1, 2, []));
    const r = must(c.lcreate(2, "new.txt", O.RDWR | O.CREAT | O.EXCL, 0o640));
    expect(r.qid.type).toBe(0);
    expect(must(c.write(2, 0, te.encode("first line\n")))).toBe(11);
    expect(must(c.write(2, 11, te.encode("second\n")))).toBe(7);
    must(c.fsync(2));
    expect(td.decode(must(c.read(2, 0, 64)))).toBe("first line\nsecond\n");
    expect(readFileSync(join(share, "new.txt"), "utf8")).toBe("first line\nsecond\n");
    expect(statSync(join(share, "new.txt")).mode & 0o777).toBe(0o640);
    must(c.walk(1, 3, []));
    expect(errOf(c.lcreate(3, "new.txt", O.RDWR | O.CREAT | O.EXCL))).toBe(E.EEXIST);
    // the guest's mode exactly (not filtered by the host process's umask); an existing file keeps its mode
    const um = process.umask(0o077);
    try {
      must(c.lcreate(3, "open.txt", O.RDWR | O.CREAT, 0o666));
      expect(statSync(join(share, "open.txt")).mode & 0o777).toBe(0o666);
      must(c.mkdir(1, "wide", 0o777));
      expect(statSync(join(share, "wide")).mode & 0o777).toBe(0o777);
      must(c.walk(1, 6, []));
      must(c.lcreate(6, "new.txt", O.RDWR | O.CREAT, 0o600)); // no O_EXCL: opens the existing file
      expect(statSync(join(share, "new.txt")).mode & 0o777).toBe(0o640);
    } finally { process.umask(um); }
    // a fid opened read-only cannot write
    must(c.walk(1, 4, ["hello.txt"]));
    must(c.lopen(4, O.RDONLY));
    expect(errOf(c.write(4, 0, te.encode("x")))).toBe(E.EBADF);
    // O_TRUNC through lopen
    must(c.walk(1, 5, ["new.txt"]));
    must(c.lopen(5, O.WRONLY | O.TRUNC));
    expect(statSync(join(share, "new.txt")).size).toBe(0);
  });

  test("mkdir, readdir (complete, offsets stable across small calls), rename, renameat, unlinkat, remove", () => {
    const { c } = session();
    const q = must(c.mkdir(1, "d1", 0o750));
    expect(q.type).toBe(0x80);
    expect(statSync(join(share, "d1")).isDirectory()).toBe(true);
    for (let i = 0; i < 40; i++) writeFileSync(join(share, "d1", `file-${i}-${"x".repeat(i)}`), String(i));
    must(c.walk(1, 2, ["d1"]));
    must(c.lopen(2, O.RDONLY | O.DIRECTORY));
    const all = must(c.readdirAll(2, 8192));
    const names = all.map((e) => e.name).sort();
    expect(names).toEqual([".", "..", ...readdirSync(join(share, "d1"))].sort());
    const small = must(c.readdirAll(2, 100)); // a few entries per call, resumed from the returned offsets
    expect(small.map((e) => e.name)).toEqual(all.map((e) => e.name));
    expect(errOf(c.readdir(2, 0, 10))).toBe(E.EINVAL); // not even one entry fits
    // root listing: types, ".." shows the root itself
    must(c.walk(1, 3, []));
    must(c.lopen(3, O.RDONLY));
    const rootList = must(c.readdirAll(3));
    const rootQid = must(c.getattr(1)).qid;
    expect(rootList.find((e) => e.name === "..")!.qid.path).toBe(rootQid.path);
    expect(rootList.find((e) => e.name === "sub")!.qid.type).toBe(0x80);
    expect(rootList.find((e) => e.name === "link_root")!.qid.type).toBe(0x02);
    expect(errOf(c.readdir(1, 0, 4096))).toBe(E.EBADF); // not opened
    // Trename moves the fid's file; the fid follows it
    must(c.walk(1, 4, ["hello.txt"]));
    must(c.walk(1, 5, ["sub"]));
    must(c.rename(4, 5, "moved.txt"));
    expect(existsSync(join(share, "hello.txt"))).toBe(false);
    expect(readFileSync(join(share, "sub", "moved.txt"), "utf8")).toBe("hello world\n");
    must(c.lopen(4, O.RDONLY)); // re-opened beneath its new parent
    expect(td.decode(must(c.read(4, 0, 5)))).toBe("hello");
    // Trenameat by names; a fid that walked there earlier follows
    must(c.walk(1, 6, ["sub", "inner.txt"]));
    must(c.renameat(5, "inner.txt", 1, "top.txt"));
    expect(readFileSync(join(share, "top.txt"), "utf8")).toBe("inner");
    must(c.lopen(6, O.RDONLY));
    expect(td.decode(must(c.read(6, 0, 10)))).toBe("inner");
    // unlinkat: a file, a directory needs AT_REMOVEDIR
    must(c.unlinkat(1, "top.txt"));
    expect(existsSync(join(share, "top.txt"))).toBe(false);
    must(c.mkdir(1, "d2"));
    expect(errOf(c.unlinkat(1, "d2"))).toBe(E.EISDIR);
    must(c.unlinkat(1, "d2", 0x200));
    expect(errOf(c.unlinkat(1, "x", 0x1234))).toBe(E.EINVAL);
    // Tremove clunks the fid even when it fails
    must(c.walk(1, 7, ["sub", "moved.txt"]));
    must(c.remove(7));
    expect(existsSync(join(share, "sub", "moved.txt"))).toBe(false);
    expect(errOf(c.getattr(7))).toBe(E.EBADF);
    must(c.walk(1, 8, ["d1"]));
    expect(errOf(c.remove(8))).toBe(E.ENOTEMPTY);
    expect(errOf(c.getattr(8))).toBe(E.EBADF);
  });

  test("setattr: mode, size, times (given and now), owner; statfs", () => {
    const { c } = session();
    must(c.walk(1, 2, ["hello.txt"]));
    must(c.setattr(2, { valid: 0x1, mode: 0o600 }));
    expect(statSync(join(share, "hello.txt")).mode & 0o7777).toBe(0o600);
    must(c.setattr(2, { valid: 0x8, size: 5 }));
    expect(readFileSync(join(share, "hello.txt"), "utf8")).toBe("hello");
    must(c.setattr(2, { valid: 0x8, size: 10000 }));
    expect(statSync(join(share, "hello.txt")).size).toBe(10000);
    must(c.setattr(2, { valid: 0x10 | 0x20 | 0x80 | 0x100, atime: [1_000_000, 5], mtime: [1_234_567_890, 123_456_789] }));
    const a = must(c.getattr(2));
    expect([a.mtime, a.mtimeNs, a.atime]).toEqual([1_234_567_890n, 123_456_789n, 1_000_000n]);
    const before = Date.now() / 1000 - 5;
    must(c.setattr(2, { valid: 0x20 })); // mtime = now
    expect(Number(must(c.getattr(2)).mtime)).toBeGreaterThan(before);
    expect(errOf(c.setattr(2, { valid: 0x20 | 0x100, mtime: [1, 2_000_000_000] }))).toBe(E.EINVAL);
    const st = statSync(join(share, "hello.txt"));
    must(c.setattr(2, { valid: 0x2 | 0x4, uid: st.uid, gid: st.gid })); // owner (as it is: the test may not run as root)
    // a directory's mode
    must(c.walk(1, 3, ["sub"]));
    must(c.setattr(3, { valid: 0x1, mode: 0o711 }));
    expect(statSync(join(share, "sub")).mode & 0o777).toBe(0o711);
    // a symlink has no mode of its own; its times can be set without touching the target
    must(c.walk(1, 4, ["link_secret"]));
    expect(errOf(c.setattr(4, { valid: 0x1, mode: 0o777 }))).toBe(E.EOPNOTSUPP);
    must(c.setattr(4, { valid: 0x20 | 0x100, mtime: [1000, 0] }));
    expect(lstatSync(join(share, "link_secret")).mtimeMs).toBe(1_000_000);
    expect(statSync(join(outside, "secret.txt")).mtimeMs).not.toBe(1_000_000);
    const fs = must(c.statfs(1));
    expect(fs.bsize).toBeGreaterThan(0);
    expect(fs.namelen).toBe(255);
    expect(fs.blocks).toBeGreaterThan(0n);
  });

  test("symlink, readlink, link, mknod, xattr, lock, flush", () => {
    const { c } = session();
    const q = must(c.symlink(1, "lnk", "sub/inner.txt"));
    expect(q.type).toBe(0x02);
    expect(readFileSync(join(share, "lnk"), "utf8")).toBe("inner"); // a real symlink on the host
    must(c.walk(1, 2, ["lnk"]));
    expect(must(c.readlink(2))).toBe("sub/inner.txt");
    expect(errOf(c.readlink(1))).toBe(E.EINVAL);
    // hard link
    must(c.walk(1, 3, ["hello.txt"]));
    must(c.link(1, 3, "hard.txt"));
    expect(statSync(join(share, "hard.txt")).ino).toBe(statSync(join(share, "hello.txt")).ino);
    expect(must(c.getattr(3)).nlink).toBe(2n);
    must(c.walk(1, 4, ["sub"]));
    expect(errOf(c.link(1, 4, "dirlink"))).toBe(E.EPERM); // directories cannot be hard-linked
    // mknod: a regular file and a fifo; device nodes refused
    expect(must(c.mknod(1, "plain", 0o100644)).type).toBe(0);
    expect(statSync(join(share, "plain")).isFile()).toBe(true);
    must(c.mknod(1, "fifo", 0o010644));
    expect(statSync(join(share, "fifo")).isFIFO()).toBe(true);
    expect(errOf(c.mknod(1, "null", 0o020666, 1, 3))).toBe(E.EPERM);
    expect(existsSync(join(share, "null"))).toBe(false);
    // opening a fifo is refused (it could block the I/O thread)
    must(c.walk(1, 5, ["fifo"]));
    expect(errOf(c.lopen(5, O.RDONLY))).toBe(E.EPERM);
    // xattrs: empty list, no attribute, no setting
    const xw = c.rpc(T.xattrwalk, [["u32", 1], ["u32", 6], ["s", ""]]) as Reader;
    expect(xw.u64()).toBe(0n);
    expect(must(c.read(6, 0, 100)).length).toBe(0);
    expect(errOf(c.rpc(T.xattrwalk, [["u32", 1], ["u32", 7], ["s", "user.x"]]))).toBe(E.ENODATA);
    expect(errOf(c.rpc(T.xattrcreate, [["u32", 1], ["s", "user.x"], ["u64", 1], ["u32", 0]]))).toBe(E.EOPNOTSUPP);
    // locks: granted; getlock says unlocked and echoes the range
    expect((c.rpc(T.lock, [["u32", 3], ["u8", 1], ["u32", 0], ["u64", 0], ["u64", 10], ["u32", 42], ["s", "guest"]]) as Reader).u8()).toBe(0);
    const gl = c.rpc(T.getlock, [["u32", 3], ["u8", 1], ["u64", 5], ["u64", 10], ["u32", 42], ["s", "guest"]]) as Reader;
    expect([gl.u8(), gl.u64(), gl.u64(), gl.u32(), gl.s()]).toEqual([2, 5n, 10n, 42, "guest"]);
    expect(c.rpc(T.flush, [["u16", 3]])).toBeInstanceOf(Reader);
    expect(errOf(c.rpc(T.lock, [["u32", 99], ["u8", 1], ["u32", 0], ["u64", 0], ["u64", 10], ["u32", 42], ["s", "g"]]))).toBe(E.EBADF);
  });
});

describe("read-only share", () => {
  test("every change is EROFS, reads work, the folder is unchanged", () => {
    const before = JSON.stringify(listing(share));
    const { c } = session({ ro: true });
    must(c.walk(1, 2, ["hello.txt"]));
    for (const fl of [O.WRONLY, O.RDWR, O.RDONLY | O.TRUNC, O.RDONLY | O.APPEND]) expect(errOf(c.lopen(2, fl))).toBe(E.EROFS);
    must(c.lopen(2, O.RDONLY));
    expect(td.decode(must(c.read(2, 0, 5)))).toBe("hello");
    expect(errOf(c.write(2, 0, te.encode("x")))).toBe(E.EROFS);
    must(c.walk(1, 3, []));
    expect(errOf(c.lcreate(3, "n", O.RDWR | O.CREAT))).toBe(E.EROFS);
    expect(errOf(c.mkdir(1, "d"))).toBe(E.EROFS);
    expect(errOf(c.symlink(1, "s", "x"))).toBe(E.EROFS);
    expect(errOf(c.mknod(1, "m", 0o100644))).toBe(E.EROFS);
    must(c.walk(1, 4, ["hello.txt"]));
    expect(errOf(c.link(1, 4, "h2"))).toBe(E.EROFS);
    expect(errOf(c.rename(4, 1, "x"))).toBe(E.EROFS);
    expect(errOf(c.renameat(1, "hello.txt", 1, "y"))).toBe(E.EROFS);
    expect(errOf(c.unlinkat(1, "hello.txt"))).toBe(E.EROFS);
    expect(errOf(c.setattr(4, { valid: 0x1, mode: 0o777 }))).toBe(E.EROFS);
    expect(errOf(c.setattr(4, { valid: 0x8, size: 0 }))).toBe(E.EROFS);
    expect(errOf(c.rpc(T.xattrcreate, [["u32", 1], ["s", "user.x"], ["u64", 1], ["u32", 0]]))).toBe(E.EROFS);
    expect(errOf(c.remove(4))).toBe(E.EROFS);
    must(c.walk(1, 5, ["sub"]));
    must(c.lopen(5, O.RDONLY));
    expect(must(c.readdirAll(5)).length).toBe(3);
    expect(JSON.stringify(listing(share))).toBe(before);
    expect(readFileSync(join(share, "hello.txt"), "utf8")).toBe("hello world\n");
  });
});

describe("confinement: escape attempts fail and touch nothing outside", () => {
  test("'..' never leaves the root; names with '/', NUL, empty, absolute-looking", () => {
    const { c } = session();
    const root = must(c.getattr(1)).qid.path;
    for (const path of [[".."], ["..", ".."], ["sub", ".."], ["sub", "..", "..", ".."], [".", "..", "."]]) {
      const q = must(c.walk(1, 2, path));
      expect(q.at(-1)!.path).toBe(root);
      must(c.lopen(2, O.RDONLY));
      const names = must(c.readdirAll(2)).map((e) => e.name);
      expect(names).toContain("hello.txt");
      expect(names).not.toContain("outside");
      must(c.clunk(2));
    }
    expect(errOf(c.walk(1, 2, ["sub/inner.txt"]))).toBe(E.EINVAL);
    expect(errOf(c.walk(1, 2, ["/etc"]))).toBe(E.EINVAL);
    expect(errOf(c.walk(1, 2, ["/"]))).toBe(E.EINVAL);
    expect(errOf(c.walk(1, 2, ["../outside"]))).toBe(E.EINVAL);
    expect(errOf(c.walk(1, 2, [""]))).toBe(E.ENOENT);
    expect(errOf(c.walk(1, 2, [Uint8Array.of(0x68, 0, 0x69)]))).toBe(E.EINVAL);
    expect(errOf(c.walk(1, 2, ["x".repeat(256)]))).toBe(E.ENAMETOOLONG);
    expect(walkStops(c, 1, 2, ["hello.txt", ".."])).toBe("partial 1"); // ".." of a file: ENOTDIR after the first name
    // names for new entries: no '/', '.', '..'
    for (const bad of ["a/b", "..", ".", "", "/tmp/x"]) {
      expect(errOf(c.mkdir(1, bad))).toBe(E.EINVAL);
      expect(errOf(c.symlink(1, bad, "x"))).toBe(E.EINVAL);
      expect(errOf(c.renameat(1, "hello.txt", 1, bad))).toBe(E.EINVAL);
      expect(errOf(c.renameat(1, bad, 1, "zz"))).toBe(E.EINVAL);
      expect(errOf(c.unlinkat(1, bad))).toBe(E.EINVAL);
      must(c.walk(1, 3, []));
      expect(errOf(c.lcreate(3, bad, O.RDWR | O.CREAT))).toBe(E.EINVAL);
      must(c.clunk(3));
    }
    expect(readdirSync(base).filter((f) => f.startsWith("a") || f === "zz" || f === "x")).toEqual([]);
    expect(outsideSnapshot()).toBe(OUTSIDE0);
  });

  test("symlinks are never followed on the host: walking through them, opening them, creating through them", () => {
    const { c } = session();
    // walking through a symlink to "/", "../..", the outside folder
    // (each stops after the link: a partial Rwalk, newfid not created)
    expect(walkStops(c, 1, 2, ["link_root", "etc"])).toBe("partial 1");
    expect(walkStops(c, 1, 2, ["link_up", "outside"])).toBe("partial 1");
    expect(walkStops(c, 1, 2, ["link_outside", "secret.txt"])).toBe("partial 1");
    expect(walkStops(c, 1, 2, ["link_outside", ".."])).toBe("partial 1");
    expect(walkStops(c, 1, 2, ["sub", "..", "link_root", "etc", "passwd"])).toBe("partial 3");
    // from a fid on the link itself, the first name already fails
    expect(must(c.walk(1, 2, ["link_outside"])).map((q) => q.type)).toEqual([0x02]);
    expect(errOf(c.walk(2, 9, ["secret.txt"]))).toBe(E.ENOTDIR);
    expect(errOf(c.walk(2, 9, [".."]))).toBe(E.ENOTDIR);
    // the link itself: getattr is the link's, opening it fails, readlink gives the text for the guest
    const a = must(c.getattr(2));
    expect(a.mode & 0o170000).toBe(0o120000);
    for (const fl of [O.RDONLY, O.RDWR, O.RDONLY | O.DIRECTORY]) expect(errOf(c.lopen(2, fl))).toBe(E.ELOOP);
    expect(must(c.readlink(2))).toBe(outside);
    must(c.walk(1, 3, ["link_secret"]));
    expect(errOf(c.lopen(3, O.RDONLY))).toBe(E.ELOOP);
    expect(errOf(c.lopen(3, O.WRONLY | O.TRUNC))).toBe(E.ELOOP);
    // creating, mkdir, symlink, mknod, rename, link *inside* a symlinked directory
    expect(errOf(c.lcreate(2, "planted.txt", O.RDWR | O.CREAT))).toBe(E.ENOTDIR);
    expect(errOf(c.mkdir(2, "planted"))).toBe(E.ENOTDIR);
    expect(errOf(c.symlink(2, "planted", "x"))).toBe(E.ENOTDIR);
    expect(errOf(c.mknod(2, "planted", 0o100644))).toBe(E.ENOTDIR);
    expect(errOf(c.renameat(1, "hello.txt", 2, "planted"))).toBe(E.ENOTDIR);
    expect(errOf(c.renameat(2, "secret.txt", 1, "stolen.txt"))).toBe(E.ENOTDIR);
    expect(errOf(c.unlinkat(2, "secret.txt"))).toBe(E.ENOTDIR);
    must(c.walk(1, 4, ["hello.txt"]));
    expect(errOf(c.link(2, 4, "planted"))).toBe(E.ENOTDIR);
    expect(errOf(c.rename(4, 2, "planted"))).toBe(E.ENOTDIR);
    // lcreate onto an existing symlink name (O_CREAT without O_EXCL would follow it on a naive server)
    must(c.walk(1, 5, []));
    expect(errOf(c.lcreate(5, "link_secret", O.RDWR | O.CREAT | O.TRUNC))).toBe(E.ELOOP);
    // setattr on the link: size refused (not a file), the target untouched
    expect(errOf(c.setattr(3, { valid: 0x8, size: 0 }))).toBe(E.ELOOP);
    // hard link of the symlink is a link to the link, not to the secret
    must(c.link(1, 3, "hard_to_link"));
    expect(lstatSync(join(share, "hard_to_link")).isSymbolicLink()).toBe(true);
    expect(outsideSnapshot()).toBe(OUTSIDE0);
    expect(readFileSync(join(outside, "secret.txt"), "utf8")).toBe(SECRET);
  });

  test("a symlink swapped in for a walked directory: fd-based fids stay on the original", () => {
    const { c } = session();
    mkdirSync(join(share, "d"));
    writeFileSync(join(share, "d", "f.txt"), "inside");
    writeFileSync(join(outside, "f.txt"), SECRET);
    try {
      must(c.walk(1, 2, ["d"]));
      // the host (or another guest path) swaps the directory for a symlink to the outside
      renameSync(join(share, "d"), join(share, "d.orig"));
      symlinkSync(outside, join(share, "d"));
      // the old fid still means the original directory
      must(c.walk(2, 3, ["f.txt"]));
      must(c.lopen(3, O.RDONLY));
      expect(td.decode(must(c.read(3, 0, 100)))).toBe("inside");
      must(c.walk(2, 4, []));
      must(c.lopen(4, O.RDONLY));
      expect(must(c.readdirAll(4)).map((e) => e.name)).not.toContain("secret.txt");
      must(c.walk(2, 5, []));
      must(c.lcreate(5, "new.txt", O.RDWR | O.CREAT));
      expect(existsSync(join(share, "d.orig", "new.txt"))).toBe(true);
      expect(existsSync(join(outside, "new.txt"))).toBe(false);
      // a new walk by name meets the symlink and stops there
      expect(walkStops(c, 1, 6, ["d", "f.txt"])).toBe("partial 1");
      // ".." from the moved directory goes to its fid parent (the root), never above
      const up = must(c.walk(2, 7, ["..", ".."]));
      expect(up.at(-1)!.path).toBe(must(c.getattr(1)).qid.path);
      // a file fid whose name now points elsewhere is stale, not redirected
      writeFileSync(join(share, "victim.txt"), "mine");
      must(c.walk(1, 8, ["victim.txt"]));
      rmSync(join(share, "victim.txt"));
      symlinkSync(join(outside, "secret.txt"), join(share, "victim.txt"));
      expect(errOf(c.lopen(8, O.RDONLY))).toBe(E.ELOOP); // the name is a symlink now: never followed
      expect(errOf(c.setattr(8, { valid: 0x8, size: 0 }))).toBe(E.ELOOP);
      expect(errOf(c.remove(8))).toBe(E.ESTALE);
    } finally {
      rmSync(join(outside, "f.txt"));
    }
    expect(outsideSnapshot()).toBe(OUTSIDE0);
  });

  test("bogus fids in link/rename; the share root cannot be renamed or removed", () => {
    const { c } = session();
    must(c.walk(1, 2, ["hello.txt"]));
    expect(errOf(c.link(1, 999, "x"))).toBe(E.EBADF);
    expect(errOf(c.link(999, 2, "x"))).toBe(E.EBADF);
    expect(errOf(c.link(0xffffffff, 2, "x"))).toBe(E.EBADF);
    expect(errOf(c.renameat(999, "hello.txt", 1, "x"))).toBe(E.EBADF);
    expect(errOf(c.renameat(1, "hello.txt", 999, "x"))).toBe(E.EBADF);
    expect(errOf(c.rename(2, 999, "x"))).toBe(E.EBADF);
    expect(errOf(c.rename(1, 1, "newroot"))).toBe(E.EBUSY);
    must(c.walk(1, 3, []));
    expect(errOf(c.remove(3))).toBe(E.EBUSY);
    must(c.walk(1, 4, ["sub"]));
    expect(errOf(c.renameat(1, "sub", 4, "inside"))).toBe(E.EINVAL); // a directory into itself (the host refuses)
    expect(existsSync(join(share, "hello.txt"))).toBe(true);
    expect(statSync(share).isDirectory()).toBe(true);
    expect(outsideSnapshot()).toBe(OUTSIDE0);
  });
});

describe("malformed messages get Rlerror; the server survives", () => {
  test("short, size mismatch, truncated fields, huge counts, unknown types, no room for a reply", () => {
    const { c, server, mem } = session();
    const submit = directSubmit(server, mem);
    const lerr = (b: Uint8Array) => { const r = new Reader(b); expect(r.type).toBe(7); return r.u32(); };
    expect(lerr(submit(Uint8Array.of(1, 2, 3), 100))).toBe(E.EPROTO); // shorter than a header
    expect(new Reader(submit(Uint8Array.of(1, 2, 3), 100)).tag).toBe(0xffff);
    const good = tmsg(T.getattr, 9, [["u32", 1], ["u64", 0x7ff]]);
    const bad = (mut: (v: DataView) => void, b = good.slice()) => { mut(new DataView(b.buffer)); return lerr(submit(b, 4096)); };
    expect(bad((v) => v.setUint32(0, 1000, true))).toBe(E.EPROTO); // size beyond the chain
    expect(bad((v) => v.setUint32(0, 3, true))).toBe(E.EPROTO); // size below the header
    expect(bad((v) => v.setUint32(0, 12, true))).toBe(E.EPROTO); // fields cut short
    expect(bad((v) => v.setUint32(0, 0xffffffff, true))).toBe(E.EPROTO);
    expect(lerr(submit(tmsg(200, 1, [["u32", 1]]), 100))).toBe(E.EOPNOTSUPP);
    expect(lerr(submit(tmsg(112, 1, [["u32", 1], ["u8", 0]]), 100))).toBe(E.EOPNOTSUPP); // 9P2000 Topen
    expect(lerr(submit(tmsg(T.walk, 1, [["u32", 1], ["u32", 2], ["u16", 3], ["s", "sub"]]), 100))).toBe(E.EPROTO); // 3 names announced, 1 sent
    expect(lerr(submit(tmsg(T.walk, 1, [["u32", 1], ["u32", 2], ["u16", 17], ...Array.from({ length: 17 }, () => ["s", "."] as ["s", string])]), 300))).toBe(E.EINVAL);
    expect(lerr(submit(tmsg(T.walk, 1, [["u32", 1], ["u32", 2], ["u16", 1], ["u16", 0xffff]]), 100))).toBe(E.ENAMETOOLONG);
    expect(lerr(submit(tmsg(T.walk, 1, [["u32", 1], ["u32", 2], ["u16", 1], ["u16", 4000], ["raw", te.encode("abc")]]), 100))).toBe(E.EPROTO);
    expect(lerr(submit(tmsg(T.getattr, 1, [["u32", 77], ["u64", 0]]), 100))).toBe(E.EBADF);
    // Twrite whose count disagrees with its size
    must(c.walk(1, 2, []));
    must(c.lcreate(2, "w.txt", O.RDWR | O.CREAT));
    expect(lerr(submit(tmsg(T.write, 1, [["u32", 2], ["u64", 0], ["u32", 100], ["raw", te.encode("abc")]]), 100))).toBe(E.EPROTO);
    expect(lerr(submit(tmsg(T.write, 1, [["u32", 2], ["u64", 0], ["u32", 0xffffffff]]), 100))).toBe(E.EPROTO);
    expect(lerr(submit(tmsg(T.write, 1, [["u32", 2], ["u64", 2n ** 63n], ["u32", 1], ["raw", te.encode("a")]]), 100))).toBe(E.EFBIG);
    expect(lerr(submit(tmsg(T.read, 1, [["u32", 2], ["u64", 2n ** 64n - 1n], ["u32", 10]]), 100))).toBe(E.EINVAL);
    // a reply that does not fit: Rlerror (EMSGSIZE) if that fits, else nothing written
    expect(lerr(submit(tmsg(T.getattr, 1, [["u32", 1], ["u64", 0x7ff]]), 40))).toBe(E.EMSGSIZE);
    expect(submit(tmsg(T.getattr, 1, [["u32", 1], ["u64", 0x7ff]]), 10).length).toBe(0);
    expect(submit(tmsg(T.read, 1, [["u32", 2], ["u64", 0], ["u32", 10]]), 5).length).toBe(0);
    // a message bigger than the negotiated msize
    must(c.version(4096));
    must(c.attach(1));
    expect(lerr(submit(tmsg(T.symlink, 1, [["u32", 1], ["s", "l"], ["s", "x".repeat(4100)], ["u32", 0]]), 100))).toBe(E.EPROTO);
    // still serving
    expect(must(c.getattr(1)).qid.type).toBe(0x80);
    expect(server.internalErrors).toBe(0);
  });

  test("fid and host-fd limits: EMFILE, then usable again after clunks", () => {
    const { c, server } = session({ limits: { ...NINEP_LIMITS, maxFids: 8, maxHostFds: 6 } });
    for (let f = 2; f <= 8; f++) must(c.walk(1, f, [])); // clones hold no host fd of their own
    expect(errOf(c.walk(1, 9, []))).toBe(E.EMFILE);
    expect(server.fids.hostFds).toBe(0);
    for (let f = 2; f <= 8; f++) must(c.clunk(f));
    for (let f = 2; f < 8; f++) must(c.walk(1, f, ["sub"]));
    expect(errOf(c.walk(1, 8, ["sub"]))).toBe(E.EMFILE);
    expect(server.fids.hostFds).toBe(6);
    for (let f = 2; f < 8; f++) must(c.clunk(f));
    expect(server.fids.hostFds).toBe(0);
    must(c.walk(1, 2, ["sub", "inner.txt"]));
    expect(server.fids.hostFds).toBe(2); // the file and the directory it was walked through
    // the default budget: at most half of the process's open-file limit
    const def = new NinePServer({ path: share, ro: false });
    expect(def.fids.maxHostFds).toBe(Math.min(NINEP_LIMITS.maxHostFds, Math.floor(fsHost.fdLimit() / 2)));
    expect(def.fids.maxHostFds).toBeGreaterThan(0);
  });
});

describe("the device behind virtio-pci", () => {
  test("identity, MOUNT_TAG, config = tag_len + tag; requests through the queue; a reset drops every fid", () => {
    const r = deviceRig({ path: share, tag: "hostshare" });
    expect(r.cr(CFG.VENDOR, 2)).toBe(0x1af4);
    expect(r.cr(CFG.DEVICE, 2)).toBe(0x1009);
    expect(r.cr(CFG.SUBDEVICE, 2)).toBe(9);
    expect(r.features() & 1n).toBe(1n);
    expect(r.cfg(0, 2)).toBe(9);
    expect(td.decode(Uint8Array.from({ length: 9 }, (_, i) => r.cfg(2 + i, 1)))).toBe("hostshare");
    const drv = r.bringUp();
    const c = r.client(drv);
    expect(must(c.version(128 * 1024))).toEqual({ msize: 128 * 1024, version: "9P2000.L" });
    must(c.attach(1));
    must(c.walk(1, 2, ["hello.txt"]));
    must(c.lopen(2, O.RDONLY));
    expect(td.decode(must(c.read(2, 0, 100)))).toBe("hello world\n");
    expect(r.ioServer.fids.size).toBe(2);
    expect(r.platform.msis.length).toBeGreaterThan(0);
    // reset from the "vCPU" side: the I/O side drops its fids on its next run
    const drv2 = r.bringUp();
    const c2 = r.client(drv2);
    expect(errOf(c2.getattr(2))).toBe(E.EBADF);
    expect(r.ioServer.fids.size).toBe(0);
    must(c2.version());
    must(c2.attach(1));
    expect(must(c2.getattr(1)).qid.type).toBe(0x80);
    expect(r.ioServer.internalErrors).toBe(0);
    expect(r.status() & VIRTIO_STATUS.NEEDS_RESET).toBe(0);
  });
});

describe("config", () => {
  const KERNEL = join(base, "bzImage");
  writeFileSync(KERNEL, "");
  truncateSync(KERNEL, 4096);
  const load = (text: string) => loadConfigText(`boot.kernel = "bzImage"\n` + text, join(base, "guest.toml"));
  const errorOf = (fn: () => unknown): string => {
    try { fn(); } catch (e) { expect(e).toBeInstanceOf(ConfigError); return (e as Error).message.replaceAll(base + "/", ""); }
    throw new Error("expected a ConfigError");
  };
  test("-s NAME=/path[,ro] (bhyve's pair form) and the config tree", () => {
    const c = parseArgs(["-k", KERNEL, "-s", `4,virtio-9p,hostshare=${share},ro`, "-s", "5,virtio-9p,sharename=sub", "vm"], { cwd: share }).config!;
    expect(c.pci["0.4.0"]).toEqual({ device: "virtio-9p", sharename: "hostshare", path: share, ro: true });
    expect(c.pci["0.5.0"]).toEqual({ device: "virtio-9p", sharename: "sharename", path: join(share, "sub"), ro: false });
    const t = load(`[pci."0.4.0"]\ndevice = "virtio-9p"\nsharename = "tag1"\npath = "${share}"\n[pci.0.6.0]\ndevice = "virtio-9p"\nmyshare = "${share}"\n`);
    expect(t.pci["0.4.0"]).toEqual({ device: "virtio-9p", sharename: "tag1", path: share, ro: false });
    expect(t.pci["0.6.0"]).toEqual({ device: "virtio-9p", sharename: "myshare", path: share, ro: false });
    expect(virtioQueueCount(t.pci["0.4.0"]!)).toBe(1);
  });
  test("errors with file:line", () => {
    expect(errorOf(() => load(`[pci.0.4.0]\ndevice = "virtio-9p"\nsharename = "t"\npath = "nope"\n`))).toMatch(/guest\.toml:5.*pci\.0\.4\.0\.path.*folder not found/);
    expect(errorOf(() => load(`[pci.0.4.0]\ndevice = "virtio-9p"\nsharename = "t"\npath = "bzImage"\n`))).toMatch(/expected a directory/);
    expect(errorOf(() => load(`[pci.0.4.0]\ndevice = "virtio-9p"\nsharename = "${"t".repeat(256)}"\npath = "${share}"\n`))).toMatch(/pci\.0\.4\.0\.sharename.*mount tag of 1-255/);
    expect(errorOf(() => load(`[pci.0.4.0]\ndevice = "virtio-9p"\nsharename = "a b"\npath = "${share}"\n`))).toMatch(/sharename/);
    expect(errorOf(() => load(`[pci.0.4.0]\ndevice = "virtio-9p"\na = "${share}"\nb = "${share}"\n`))).toMatch(/one share per device/);
    expect(errorOf(() => load(`[pci.0.4.0]\ndevice = "virtio-9p"\n`))).toMatch(/missing: expected NAME=\/path/);
    expect(errorOf(() => load(`[pci.0.4.0]\ndevice = "virtio-9p"\npath = "${share}"\n`))).toMatch(/pci\.0\.4\.0\.sharename.*missing/);
    expect(errorOf(() => load(`[pci.0.4.0]\ndevice = "virtio-9p"\nsharename = "t"\npath = "${share}"\nro = "maybe"\n`))).toMatch(/pci\.0\.4\.0\.ro/);
  });
});
