/**
 * A tiny 9P2000.L client for the virtio-9p tests, written independently of src/virtio/9p's codec: it
 * builds T-messages byte by byte, hands each to a `submit` function (the server directly, on a
 * hand-made chain, or the whole device through the fake driver) and parses the R-message. Every call
 * returns the parsed reply or `{ err: errno }` for Rlerror, so tests can assert on both.
 */
import { GuestMemory, region } from "../../src/mem/guest-memory.ts";
import type { Chain } from "../../src/virtio/queue.ts";
import type { NinePServer } from "../../src/virtio/9p/server.ts";
import { host } from "../../src/vmm/index.ts";

export type Part = ["u8" | "u16" | "u32", number] | ["u64", bigint | number] | ["s", string | Uint8Array] | ["raw", Uint8Array];
const te = new TextEncoder(), td = new TextDecoder();

/** A T-message: size[4] type[1] tag[2] parts… */
export function tmsg(type: number, tag: number, parts: Part[]): Uint8Array {
  const chunks: Uint8Array[] = [];
  for (const [k, v] of parts) {
    if (k === "raw") { chunks.push(v); continue; }
    if (k === "s") {
      const b = typeof v === "string" ? te.encode(v) : v;
      const c = new Uint8Array(2 + b.length);
      new DataView(c.buffer).setUint16(0, b.length, true);
      c.set(b, 2);
      chunks.push(c);
      continue;
    }
    const n = k === "u8" ? 1 : k === "u16" ? 2 : k === "u32" ? 4 : 8;
    const c = new Uint8Array(n), dv = new DataView(c.buffer);
    if (k === "u8") dv.setUint8(0, v as number);
    else if (k === "u16") dv.setUint16(0, v as number, true);
    else if (k === "u32") dv.setUint32(0, (v as number) >>> 0, true);
    else dv.setBigUint64(0, BigInt.asUintN(64, BigInt(v)), true);
    chunks.push(c);
  }
  const size = 7 + chunks.reduce((a, c) => a + c.length, 0);
  const out = new Uint8Array(size), dv = new DataView(out.buffer);
  dv.setUint32(0, size, true); dv.setUint8(4, type); dv.setUint16(5, tag, true);
  let o = 7;
  for (const c of chunks) { out.set(c, o); o += c.length; }
  return out;
}

export class Reader {
  o = 7;
  readonly dv: DataView;
  constructor(readonly b: Uint8Array) { this.dv = new DataView(b.buffer, b.byteOffset, b.byteLength); }
  get size() { return this.dv.getUint32(0, true); }
  get type() { return this.dv.getUint8(4); }
  get tag() { return this.dv.getUint16(5, true); }
  u8() { return this.dv.getUint8(this.o++); }
  u16() { const v = this.dv.getUint16(this.o, true); this.o += 2; return v; }
  u32() { const v = this.dv.getUint32(this.o, true); this.o += 4; return v; }
  u64() { const v = this.dv.getBigUint64(this.o, true); this.o += 8; return v; }
  bytes(n: number) { const v = this.b.slice(this.o, this.o + n); this.o += n; return v; }
  s() { return td.decode(this.bytes(this.u16())); }
  qid() { return { type: this.u8(), version: this.u32(), path: this.u64() }; }
}

export type Qid = ReturnType<Reader["qid"]>;
export interface Err { err: number }
export const isErr = (x: unknown): x is Err => typeof x === "object" && x !== null && "err" in x;

/** Real guest memory (host mappings, so preadv/pwritev run for real): one RAM region at 0. */
export function realMem(size = 4 << 20): GuestMemory {
  const a = host.memAlloc(size, false);
  return new GuestMemory([region(0, host.memView(a, size), a)]);
}

/** Areas in realMem the direct submitter uses. */
export const REQ_AT = 0x10000, REPLY_AT = 0x200000;

/** Submit straight to a server: the request in one readable segment, `room` writable bytes (split in two). */
export function directSubmit(server: NinePServer, mem: GuestMemory) {
  return (req: Uint8Array, room: number): Uint8Array => {
    mem.writeBytes(REQ_AT, req);
    const half = Math.floor(room / 2);
    const writable = room > 64 ? [{ gpa: REPLY_AT, len: half }, { gpa: REPLY_AT + half + 4096, len: room - half }] : [{ gpa: REPLY_AT, len: room }];
    const chain: Chain = { head: 0, readable: [{ gpa: REQ_AT, len: req.length }], writable, readableBytes: req.length, writableBytes: room };
    const n = server.handle(mem, chain);
    const out = new Uint8Array(n);
    let o = 0;
    for (const w of writable) { const k = Math.min(w.len, n - o); if (k <= 0) break; out.set(mem.readBytes(w.gpa, k), o); o += k; }
    return out;
  };
}

export const T = {
  statfs: 8, lopen: 12, lcreate: 14, symlink: 16, mknod: 18, rename: 20, readlink: 22, getattr: 24, setattr: 26,
  xattrwalk: 30, xattrcreate: 32, readdir: 40, fsync: 50, lock: 52, getlock: 54, link: 70, mkdir: 72, renameat: 74,
  unlinkat: 76, version: 100, auth: 102, attach: 104, flush: 108, walk: 110, read: 116, write: 118, clunk: 120, remove: 122,
} as const;

export interface DirEntry { qid: Qid; offset: bigint; type: number; name: string }
export interface Attr { qid: Qid; mode: number; uid: number; gid: number; nlink: bigint; size: bigint; atime: bigint; mtime: bigint; mtimeNs: bigint }

export class Client {
  tag = 1;
  room = 64 * 1024;
  constructor(readonly submit: (req: Uint8Array, room: number) => Uint8Array) {}

  /** Send; Rlerror → {err}; else a Reader positioned after the header (type checked). */
  rpc(type: number, parts: Part[], room = this.room): Reader | Err {
    const tag = this.tag++ & 0x7fff;
    const b = this.submit(tmsg(type, tag, parts), room);
    if (b.length < 7) throw new Error(`reply of ${b.length} bytes`);
    const r = new Reader(b);
    if (r.size !== b.length) throw new Error(`reply size field ${r.size} but ${b.length} bytes used`);
    if (r.tag !== tag) throw new Error(`reply tag ${r.tag}, sent ${tag}`);
    if (r.type === 7) return { err: r.u32() };
    if (r.type !== type + 1) throw new Error(`reply type ${r.type} to ${type}`);
    return r;
  }
  raw(b: Uint8Array, room = this.room): Uint8Array { return this.submit(b, room); }

  version(msize = 256 * 1024, v = "9P2000.L") { return map(this.rpc(T.version, [["u32", msize], ["s", v]]), (r) => ({ msize: r.u32(), version: r.s() })); }
  attach(fid: number, aname = "") { return map(this.rpc(T.attach, [["u32", fid], ["u32", 0xffffffff], ["s", "root"], ["s", aname], ["u32", 0]]), (r) => r.qid()); }
  walk(fid: number, newfid: number, names: (string | Uint8Array)[]) {
    return map(this.rpc(T.walk, [["u32", fid], ["u32", newfid], ["u16", names.length], ...names.map((n) => ["s", n] as Part)]), (r) => {
      const n = r.u16(); return Array.from({ length: n }, () => r.qid());
    });
  }
  lopen(fid: number, flags: number) { return map(this.rpc(T.lopen, [["u32", fid], ["u32", flags]]), (r) => ({ qid: r.qid(), iounit: r.u32() })); }
  lcreate(fid: number, name: string | Uint8Array, flags: number, mode = 0o644) { return map(this.rpc(T.lcreate, [["u32", fid], ["s", name], ["u32", flags], ["u32", mode], ["u32", 0]]), (r) => ({ qid: r.qid(), iounit: r.u32() })); }
  read(fid: number, offset: number | bigint, count: number, room?: number) { return map(this.rpc(T.read, [["u32", fid], ["u64", offset], ["u32", count]], room), (r) => r.bytes(r.u32())); }
  write(fid: number, offset: number | bigint, data: Uint8Array) { return map(this.rpc(T.write, [["u32", fid], ["u64", offset], ["u32", data.length], ["raw", data]]), (r) => r.u32()); }
  clunk(fid: number) { return map(this.rpc(T.clunk, [["u32", fid]]), () => true); }
  remove(fid: number) { return map(this.rpc(T.remove, [["u32", fid]]), () => true); }
  mkdir(dfid: number, name: string | Uint8Array, mode = 0o755) { return map(this.rpc(T.mkdir, [["u32", dfid], ["s", name], ["u32", mode], ["u32", 0]]), (r) => r.qid()); }
  symlink(dfid: number, name: string, target: string | Uint8Array) { return map(this.rpc(T.symlink, [["u32", dfid], ["s", name], ["s", target], ["u32", 0]]), (r) => r.qid()); }
  mknod(dfid: number, name: string, mode: number, major = 0, minor = 0) { return map(this.rpc(T.mknod, [["u32", dfid], ["s", name], ["u32", mode], ["u32", major], ["u32", minor], ["u32", 0]]), (r) => r.qid()); }
  readlink(fid: number) { return map(this.rpc(T.readlink, [["u32", fid]]), (r) => r.s()); }
  rename(fid: number, dfid: number, name: string | Uint8Array) { return map(this.rpc(T.rename, [["u32", fid], ["u32", dfid], ["s", name]]), () => true); }
  renameat(od: number, on: string | Uint8Array, nd: number, nn: string | Uint8Array) { return map(this.rpc(T.renameat, [["u32", od], ["s", on], ["u32", nd], ["s", nn]]), () => true); }
  unlinkat(dfid: number, name: string | Uint8Array, flags = 0) { return map(this.rpc(T.unlinkat, [["u32", dfid], ["s", name], ["u32", flags]]), () => true); }
  link(dfid: number, fid: number, name: string | Uint8Array) { return map(this.rpc(T.link, [["u32", dfid], ["u32", fid], ["s", name]]), () => true); }
  fsync(fid: number) { return map(this.rpc(T.fsync, [["u32", fid], ["u32", 0]]), () => true); }
  statfs(fid: number) {
    return map(this.rpc(T.statfs, [["u32", fid]]), (r) => ({ type: r.u32(), bsize: r.u32(), blocks: r.u64(), bfree: r.u64(), bavail: r.u64(), files: r.u64(), ffree: r.u64(), fsid: r.u64(), namelen: r.u32() }));
  }
  getattr(fid: number) {
    return map(this.rpc(T.getattr, [["u32", fid], ["u64", 0x3fff]]), (r): Attr => {
      r.u64();
      const qid = r.qid(), mode = r.u32(), uid = r.u32(), gid = r.u32(), nlink = r.u64();
      r.u64(); const size = r.u64(); r.u64(); r.u64();
      const atime = r.u64(); r.u64(); const mtime = r.u64(); const mtimeNs = r.u64();
      return { qid, mode, uid, gid, nlink, size, atime, mtime, mtimeNs };
    });
  }
  setattr(fid: number, a: { valid: number; mode?: number; uid?: number; gid?: number; size?: number | bigint; atime?: [number, number]; mtime?: [number, number] }) {
    return map(this.rpc(T.setattr, [["u32", fid], ["u32", a.valid], ["u32", a.mode ?? 0], ["u32", a.uid ?? 0], ["u32", a.gid ?? 0], ["u64", a.size ?? 0],
      ["u64", a.atime?.[0] ?? 0], ["u64", a.atime?.[1] ?? 0], ["u64", a.mtime?.[0] ?? 0], ["u64", a.mtime?.[1] ?? 0]]), () => true);
  }
  readdir(fid: number, offset: bigint | number, count: number) {
    return map(this.rpc(T.readdir, [["u32", fid], ["u64", offset], ["u32", count]]), (r) => {
      const n = r.u32(), end = r.o + n, out: DirEntry[] = [];
      while (r.o < end) out.push({ qid: r.qid(), offset: r.u64(), type: r.u8(), name: r.s() });
      return out;
    });
  }
  /** The whole directory through repeated Treaddir calls of `count` bytes. */
  readdirAll(fid: number, count = 8192): DirEntry[] | Err {
    const all: DirEntry[] = [];
    let off = 0n;
    for (let i = 0; i < 10000; i++) {
      const r = this.readdir(fid, off, count);
      if (isErr(r)) return r;
      if (!r.length) return all;
      all.push(...r);
      off = r.at(-1)!.offset;
    }
    throw new Error("readdir does not end");
  }
}

function map<T>(r: Reader | Err, f: (r: Reader) => T): T | Err { return isErr(r) ? r : f(r); }

/** Unwrap a reply the test expects to succeed. */
export function must<T>(x: T | Err, what = "9P call"): T {
  if (isErr(x)) throw new Error(`${what}: Rlerror ${x.err}`);
  return x;
}

// -------------------------------------------------------------------------------------------------
// the whole device: virtio-9p behind the real virtio-pci transport, driven by the fake driver

import { createNineP } from "../../src/virtio/devices/9p.ts";
import type { NinePLimits } from "../../src/virtio/9p/server.ts";
import type { FakeDriver } from "./virtio-driver.ts";
import { virtioPciRig } from "./virtio-pci-rig.ts";

const MEM_BYTES = 64 << 20;

/** The device on real guest memory: a vCPU-side and an I/O-side instance on one state buffer, as in a VM (test/unit/virtio-pci-rig.ts). */
export function deviceRig(share: { path: string; tag?: string; ro?: boolean; limits?: NinePLimits }) {
  const a = host.memAlloc(MEM_BYTES, false);
  const mem = new GuestMemory([region(0, host.memView(a, MEM_BYTES), a)]);
  const r = virtioPciRig<{ server: NinePServer }>({
    mem, queues: 1, slot: 4, ramBytes: MEM_BYTES,
    build: (inp, _ctx, platform) => createNineP(inp, { tag: share.tag ?? "hostshare", path: share.path, ro: share.ro ?? false, limits: share.limits, log: (m) => platform.log(m) }),
  });
  const { platform, cr, cfg, features, status, w8 } = r;
  /** §3.1.1 bring-up with MSI-X, EVENT_IDX, INDIRECT_DESC and the mount tag; returns the driver of the request queue. */
  const bringUp = (): FakeDriver => r.bringUp(1n, { heapBase: 0x1000000, heapSize: 16 << 20 }).drivers[0]!;
  /** Notify the queue and run what the I/O Worker runs when its eventfd fires. */
  const kick = () => r.kick(0);
  /** A Client whose requests go through the queue: request readable, reply writable (room bytes). */
  const client = (drv: FakeDriver): Client => new Client((req, room) => {
    const { head, addrs } = drv.add([{ len: req.length, data: req, addr: 0x3000000 }, { len: room, write: true, addr: 0x3200000 }]);
    drv.publish();
    kick();
    const used = drv.collect();
    if (used.length !== 1 || used[0]!.id !== head) throw new Error(`expected one used chain, got ${JSON.stringify(used)}`);
    return mem.readBytes(addrs[1]!, used[0]!.len);
  });
  return { mem, platform, cr, cfg, features, status, bringUp, kick, client, ioServer: (r.io as { server: NinePServer }).server, vcpuServer: (r.vcpu as { server: NinePServer }).server, w8 };
}
