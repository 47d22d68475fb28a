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

import { Bus, sharedMapGeneration } from "../../src/devices/bus.ts";
import type { Device, DeviceContext, Platform } from "../../src/devices/device.ts";
import { StateArena } from "../../src/devices/state.ts";
import { MEMMAP } from "../../src/platform/map.ts";
import { allocateBars, createConfigMechanism1, createEcam, PciFunctions, PirqRouter, pciWindows } from "../../src/pci/index.ts";
import { CAP_ID, CFG, MSIX } from "../../src/pci/regs.ts";
import { powerOnMachine } from "../../src/vm/machine.ts";
import { POLLIN } from "../../src/vmm/index.ts";
import { createNineP } from "../../src/virtio/devices/9p.ts";
import { CAP_TYPE, COMMON, VIRTIO_F, VIRTIO_STATUS, type VirtioPciFunction } from "../../src/virtio/pci.ts";
import type { NinePLimits } from "../../src/virtio/9p/server.ts";
import { FakeDriver, modernLayout } from "./virtio-driver.ts";

export class FakePlatform implements Platform {
  msis: [number, number][] = [];
  logs: string[] = [];
  irqLine(): void {}
  msi(addr: number, data: number): void { this.msis.push([addr, data]); }
  requestExit(): void {}
  wakeIo(): void {}
  log(msg: string): void { this.logs.push(msg); }
}

const SLOT = 4;
const MEM_BYTES = 64 << 20;
const ecam = (reg: number) => MEMMAP.ecam.base + ((SLOT << 15) | reg);

/** The device on real guest memory: a vCPU-side and an I/O-side instance on one state buffer, as in a VM. */
export function deviceRig(share: { path: string; tag?: string; ro?: boolean; limits?: NinePLimits }) {
  const a = host.memAlloc(MEM_BYTES, false);
  const mem = new GuestMemory([region(0, host.memView(a, MEM_BYTES), a)]);
  const buf = new SharedArrayBuffer(1 << 20);
  const platform = new FakePlatform();
  const signals: number[] = [];
  const build = (role: DeviceContext["role"]) => {
    const ctx: DeviceContext = { mem, arena: new StateArena(buf), platform, role };
    const fns = new PciFunctions();
    const router = new PirqRouter(ctx);
    const d = createNineP({
      ctx, addr: { bus: 0, slot: SLOT, fn: 0 }, gen: sharedMapGeneration(ctx.arena), router, notifyFds: [100],
      attach: { ioeventfd: () => {} }, eventfd: { signal: (fd) => signals.push(fd), drain: () => {} },
    }, { tag: share.tag ?? "hostshare", path: share.path, ro: share.ro ?? false, limits: share.limits, log: (m) => platform.log(m) });
    fns.add(d.fn);
    allocateBars([d.fn], pciWindows(MEM_BYTES));
    const devices: Device[] = [createConfigMechanism1(ctx, fns, router), createEcam(fns), d.fn];
    const bus = new Bus();
    for (const x of devices) bus.register(x);
    return { bus, devices, fn: d.fn, server: d.server };
  };
  const vcpu = build("vcpu");
  powerOnMachine({ devices: vcpu.devices });
  const io = build("io");
  const bus = vcpu.bus;
  const cr = (reg: number, size: 1 | 2 | 4 = 4) => bus.read("mmio", ecam(reg), size);
  const cw = (reg: number, v: number, size: 1 | 2 | 4 = 4) => bus.write("mmio", ecam(reg), size, v);
  const bar = (i: number) => {
    const lo = cr(CFG.BAR0 + 4 * i);
    if (lo & 1) return (lo & ~3) >>> 0;
    return ((lo & ~0xf) >>> 0) + ((lo & 6) === 4 ? cr(CFG.BAR0 + 4 * i + 4) * 2 ** 32 : 0);
  };
  const caps: Record<number, { bar: number; offset: number }> = {};
  let msixCap = 0;
  for (let p = cr(CFG.CAP_PTR, 1), g = 0; p && g < 48; p = cr(p + 1, 1), g++) {
    if (cr(p, 1) === CAP_ID.MSIX) msixCap = p;
    if (cr(p, 1) === CAP_ID.VENDOR) caps[cr(p + 3, 1)] ??= { bar: cr(p + 4, 1), offset: cr(p + 8) };
  }
  const at = (t: number) => bar(caps[t]!.bar) + caps[t]!.offset;
  const common = at(CAP_TYPE.COMMON), device = at(CAP_TYPE.DEVICE), notify = at(CAP_TYPE.NOTIFY);
  const c16 = (off: number) => bus.read("mmio", common + off, 2);
  const c32 = (off: number) => bus.read("mmio", common + off, 4);
  const w8 = (off: number, v: number) => bus.write("mmio", common + off, 1, v);
  const w16 = (off: number, v: number) => bus.write("mmio", common + off, 2, v);
  const w32 = (off: number, v: number) => bus.write("mmio", common + off, 4, v);
  const status = () => bus.read("mmio", common + COMMON.STATUS, 1);
  const features = (): bigint => {
    w32(COMMON.DFSELECT, 0); const lo = c32(COMMON.DF);
    w32(COMMON.DFSELECT, 1); const hi = c32(COMMON.DF);
    return (BigInt(hi) << 32n) | BigInt(lo);
  };
  const cfg = (off: number, size: 1 | 2 | 4) => bus.read("mmio", device + off, size);
  /** §3.1.1 bring-up with MSI-X, EVENT_IDX and INDIRECT_DESC; returns the driver of the request queue. */
  const bringUp = (): FakeDriver => {
    w8(COMMON.STATUS, 0);
    w8(COMMON.STATUS, VIRTIO_STATUS.ACKNOWLEDGE | VIRTIO_STATUS.DRIVER);
    const f = features() & (VIRTIO_F.VERSION_1 | VIRTIO_F.EVENT_IDX | VIRTIO_F.INDIRECT_DESC | 1n);
    w32(COMMON.GFSELECT, 0); w32(COMMON.GF, Number(f & 0xffffffffn));
    w32(COMMON.GFSELECT, 1); w32(COMMON.GF, Number(f >> 32n));
    w8(COMMON.STATUS, VIRTIO_STATUS.ACKNOWLEDGE | VIRTIO_STATUS.DRIVER | VIRTIO_STATUS.FEATURES_OK);
    const table = bar(cr(msixCap + MSIX.TABLE) & 7) + (cr(msixCap + MSIX.TABLE) & ~7);
    cw(msixCap + MSIX.CTRL, MSIX.CTRL_ENABLE, 2);
    for (let v = 0; v <= 1; v++) {
      bus.write("mmio", table + 16 * v, 4, 0xfee00000);
      bus.write("mmio", table + 16 * v + 8, 4, 0x40 + v);
      bus.write("mmio", table + 16 * v + 12, 4, 0);
    }
    w16(COMMON.MSIX, 0);
    w16(COMMON.Q_SELECT, 0);
    const size = c16(COMMON.Q_SIZE);
    w16(COMMON.Q_MSIX, 1);
    const layout = modernLayout(0x200000, size);
    const drv = new FakeDriver(mem, layout, { base: 0x1000000, size: 16 << 20 }, true);
    w32(COMMON.Q_DESCLO, layout.desc); w32(COMMON.Q_DESCHI, 0);
    w32(COMMON.Q_AVAILLO, layout.avail); w32(COMMON.Q_AVAILHI, 0);
    w32(COMMON.Q_USEDLO, layout.used); w32(COMMON.Q_USEDHI, 0);
    w16(COMMON.Q_ENABLE, 1);
    w8(COMMON.STATUS, VIRTIO_STATUS.ACKNOWLEDGE | VIRTIO_STATUS.DRIVER | VIRTIO_STATUS.FEATURES_OK | VIRTIO_STATUS.DRIVER_OK);
    signals.length = 0;
    return drv;
  };
  /** Notify the queue and run what the I/O Worker runs when its eventfd fires. */
  const kick = () => {
    bus.write("mmio", notify, 2, 0);
    signals.splice(0);
    (io.fn as VirtioPciFunction).pollSources()[0]!.ready(POLLIN);
  };
  /** A Client whose requests go through the queue: request readable, reply writable (room bytes). */
  const client = (drv: FakeDriver): Client => new Client((req, room) => {
    const { head, addrs } = drv.add([{ len: req.length, data: req, addr: 0x3000000 }, { len: room, write: true, addr: 0x3200000 }]);
    drv.publish();
    kick();
    const used = drv.collect();
    if (used.length !== 1 || used[0]!.id !== head) throw new Error(`expected one used chain, got ${JSON.stringify(used)}`);
    return mem.readBytes(addrs[1]!, used[0]!.len);
  });
  return { mem, platform, cr, cfg, features, status, bringUp, kick, client, ioServer: io.server, vcpuServer: vcpu.server, w8 };
}
