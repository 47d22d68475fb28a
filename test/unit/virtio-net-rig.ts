/**
 * Test rig for virtio-net: the device model behind the real virtio-pci transport on real host memory
 * (host.memAlloc, so readv/writev really move frames), driven through a Bus by the fake driver, with a
 * real Linux tap created by the test and moved into a throwaway network namespace (10.98.N.1/24 on the
 * host end, IPv6 off so no stray frames). Also Ethernet / ARP / IPv4 / ICMP / UDP frame builders.
 */
import { expect } from "bun:test";
import { Bus, sharedMapGeneration } from "../../src/devices/bus.ts";
import type { Device, DeviceContext, Platform } from "../../src/devices/device.ts";
import { StateArena } from "../../src/devices/state.ts";
import { GuestMemory, MiB, region } from "../../src/mem/guest-memory.ts";
import { openTap } from "../../src/net/tap.ts";
import { MEMMAP } from "../../src/platform/map.ts";
import { allocateBars, createConfigMechanism1, createEcam, PciFunctions, PirqRouter, pciWindows } from "../../src/pci/index.ts";
import { CAP_ID, CFG, MSIX } from "../../src/pci/regs.ts";
import { powerOnMachine } from "../../src/vm/machine.ts";
import { host, POLLIN } from "../../src/vmm/index.ts";
import { createNet, type NetBackendOps, type NetDevice } from "../../src/virtio/devices/net.ts";
import type { NetDeviceInfo } from "../../src/virtio/net/index.ts";
import { CAP_TYPE, COMMON, VIRTIO_F, VIRTIO_STATUS, type VirtioPciFunction } from "../../src/virtio/pci.ts";
import { FakeDriver, modernLayout } from "./virtio-driver.ts";

export class FakePlatform implements Platform {
  msis: [number, number][] = [];
  logs: string[] = [];
  wakes = 0;
  irqLine(): void {}
  msi(addr: number, data: number): void { this.msis.push([addr, data]); }
  requestExit(): void {}
  wakeIo(): void { this.wakes++; }
  log(msg: string): void { this.logs.push(msg); }
}

const MEM = 64 * MiB;
let sharedMem: GuestMemory | undefined;
/** One 64 MiB region of real host memory (allocated once per process). */
export function realMem(): GuestMemory {
  if (!sharedMem) {
    const p = host.memAlloc(MEM, false);
    sharedMem = new GuestMemory([region(0, host.memView(p, MEM), p)]);
  }
  return sharedMem;
}

export function sh(cmd: string): string {
  const r = Bun.spawnSync(["sh", "-c", cmd], { stderr: "pipe" });
  if (r.exitCode !== 0) throw new Error(`${cmd}: ${r.stderr.toString()}`);
  return r.stdout.toString();
}

let nTap = 0;
/** A tap created through openTap (the production path) and moved into its own namespace. */
export function hostTap(o: { mtu?: number; mac?: string } = {}) {
  const n = nTap++;
  const ns = `tsbvn${process.pid}x${n}`, ifname = `tsbvn${process.pid % 10000}x${n}`;
  const net = `10.98.${n}`;
  sh(`ip netns add ${ns} && ip netns exec ${ns} sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1`);
  const r = openTap({ backend: ifname, mtu: o.mtu, mac: o.mac }, { name: "unit", slot: 3, fn: 0 });
  expect(r.created).toBe(true);
  sh(`ip link set ${ifname} netns ${ns} && ip -n ${ns} link set ${ifname} up && ip -n ${ns} addr add ${net}.1/24 dev ${ifname} && ip -n ${ns} link set lo up`);
  return {
    dev: r.dev, ns, ifname, hostIp: `${net}.1`, guestIp: `${net}.2`,
    exec: (cmd: string) => sh(`ip netns exec ${ns} ${cmd}`),
    spawn: (cmd: string) => Bun.spawn(["ip", "netns", "exec", ns, "sh", "-c", cmd], { stdout: "pipe", stderr: "pipe" }),
    destroy: () => { host.close(r.dev.fd); Bun.spawnSync(["ip", "netns", "del", ns]); },
  };
}

const SLOT = 3;
const ecam = (reg: number) => MEMMAP.ecam.base + ((SLOT << 15) | reg);
let rigN = 0;

/** The device on a transport, brought up by a fake driver with `features` (masked by what is offered). */
export function rig(dev: NetDeviceInfo, o: { ops?: NetBackendOps; mem?: GuestMemory } = {}) {
  const mem = o.mem ?? realMem();
  const buf = new SharedArrayBuffer(1 << 20);
  const platform = new FakePlatform();
  const signals: number[] = [];
  const base = 0x200000 + (rigN++ % 8) * 0x400000; // rings and buffers of successive rigs do not overlap
  const build = (role: DeviceContext["role"]) => {
    const ctx: DeviceContext = { mem, arena: new StateArena(buf), platform, role };
    const fns = new PciFunctions();
    const router = new PirqRouter(ctx);
    const { fn, net } = createNet({
      ctx, addr: { bus: 0, slot: SLOT, fn: 0 }, gen: sharedMapGeneration(ctx.arena), router, notifyFds: [100, 101],
      attach: { ioeventfd: () => {} }, eventfd: { signal: (fd) => signals.push(fd), drain: () => {} }, dev, ops: o.ops,
      log: (m) => platform.log(m),
    });
    fns.add(fn);
    allocateBars([fn], pciWindows(MEM));
    const devices: Device[] = [createConfigMechanism1(ctx, fns, router), createEcam(fns), fn];
    const bus = new Bus();
    for (const d of devices) bus.register(d);
    return { bus, devices, fn, net };
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
  const virtio: Record<number, { bar: number; offset: number }> = {};
  let msixCap = 0;
  for (let p = cr(CFG.CAP_PTR, 1), g = 0; p && g < 48; p = cr(p + 1, 1), g++) {
    if (cr(p, 1) === CAP_ID.MSIX) msixCap = p;
    if (cr(p, 1) === CAP_ID.VENDOR) virtio[cr(p + 3, 1)] ??= { bar: cr(p + 4, 1), offset: cr(p + 8) };
  }
  const at = (t: number) => bar(virtio[t]!.bar) + virtio[t]!.offset;
  const common = at(CAP_TYPE.COMMON), device = at(CAP_TYPE.DEVICE), notify = at(CAP_TYPE.NOTIFY);
  const c16 = (off: number) => bus.read("mmio", common + off, 2);
  const c32 = (off: number) => bus.read("mmio", common + off, 4);
  const w8 = (off: number, v: number) => bus.write("mmio", common + off, 1, v);
  const w16 = (off: number, v: number) => bus.write("mmio", common + off, 2, v);
  const w32 = (off: number, v: number) => bus.write("mmio", common + off, 4, v);
  const features = (): bigint => {
    w32(COMMON.DFSELECT, 0); const lo = c32(COMMON.DF);
    w32(COMMON.DFSELECT, 1); const hi = c32(COMMON.DF);
    return (BigInt(hi) << 32n) | BigInt(lo);
  };
  const cfg = (off: number, size: 1 | 2 | 4) => bus.read("mmio", device + off, size);
  const status = () => bus.read("mmio", common + COMMON.STATUS, 1);
  const configGeneration = () => bus.read("mmio", common + COMMON.CFGGEN, 1);

  /** Bring-up with MSI-X (config vector 0, queue q → q + 1); `want` masked by what is offered. */
  const bringUp = (want: bigint, o2: { eventIdx?: boolean } = {}) => {
    w8(COMMON.STATUS, 0);
    w8(COMMON.STATUS, VIRTIO_STATUS.ACKNOWLEDGE | VIRTIO_STATUS.DRIVER);
    const eventIdx = o2.eventIdx ?? true;
    const f = features() & (want | VIRTIO_F.VERSION_1 | VIRTIO_F.INDIRECT_DESC | (eventIdx ? VIRTIO_F.EVENT_IDX : 0n));
    w32(COMMON.GFSELECT, 0); w32(COMMON.GF, Number(f & 0xffffffffn));
    w32(COMMON.GFSELECT, 1); w32(COMMON.GF, Number(f >> 32n));
    w8(COMMON.STATUS, VIRTIO_STATUS.ACKNOWLEDGE | VIRTIO_STATUS.DRIVER | VIRTIO_STATUS.FEATURES_OK);
    const table = bar(cr(msixCap + MSIX.TABLE) & 7) + (cr(msixCap + MSIX.TABLE) & ~7);
    cw(msixCap + MSIX.CTRL, MSIX.CTRL_ENABLE, 2);
    for (let v = 0; v <= 2; v++) {
      bus.write("mmio", table + 16 * v, 4, 0xfee00000);
      bus.write("mmio", table + 16 * v + 8, 4, 0x40 + v);
      bus.write("mmio", table + 16 * v + 12, 4, 0);
    }
    w16(COMMON.MSIX, 0);
    const drivers: FakeDriver[] = [];
    for (let q = 0; q < 2; q++) {
      w16(COMMON.Q_SELECT, q);
      const size = c16(COMMON.Q_SIZE);
      w16(COMMON.Q_MSIX, q + 1);
      const layout = modernLayout(base + q * 0x100000, size);
      drivers.push(new FakeDriver(mem, layout, { base: base + 0x200000 + q * 0x100000, size: 0x100000 }, eventIdx));
      w32(COMMON.Q_DESCLO, layout.desc); w32(COMMON.Q_DESCHI, 0);
      w32(COMMON.Q_AVAILLO, layout.avail); w32(COMMON.Q_AVAILHI, 0);
      w32(COMMON.Q_USEDLO, layout.used); w32(COMMON.Q_USEDHI, 0);
      w16(COMMON.Q_ENABLE, 1);
    }
    w8(COMMON.STATUS, VIRTIO_STATUS.ACKNOWLEDGE | VIRTIO_STATUS.DRIVER | VIRTIO_STATUS.FEATURES_OK | VIRTIO_STATUS.DRIVER_OK);
    expect(status() & VIRTIO_STATUS.FEATURES_OK).toBe(VIRTIO_STATUS.FEATURES_OK);
    // DRIVER_OK kicks every ready queue: serve those kicks as the I/O Worker would
    for (const fd of signals.splice(0)) srcs()[fd - 100]!.ready(POLLIN);
    return { rx: drivers[0]!, tx: drivers[1]!, negotiated: f };
  };
  const srcs = () => (io.fn as VirtioPciFunction).pollSources();
  /** Notify queue q and run what the I/O Worker runs when its eventfd fires. */
  const kick = (q: number) => {
    w16(COMMON.Q_SELECT, q);
    bus.write("mmio", notify + 4 * c16(COMMON.Q_NOFF), 2, q);
    for (const fd of signals.splice(0)) srcs()[fd - 100]!.ready(POLLIN);
  };
  /** The tap's poll source as the I/O Worker would collect it now (undefined: not watched). */
  const tapSource = () => srcs()[2];
  /** One I/O Worker turn on the tap: poll it (with timeout) and run its handler. Returns whether it was ready. */
  const serveTap = (timeoutMs = 0): boolean => {
    const s = tapSource();
    if (!s) return false;
    const fds = Int32Array.of(s.fd), ev = Int16Array.of(s.events), rev = new Int16Array(1);
    if (host.poll(fds, ev, rev, timeoutMs) <= 0) return false;
    s.ready(rev[0]!);
    return true;
  };
  return { mem, platform, cfg, features, bringUp, kick, tapSource, serveTap, status, configGeneration, net: io.net as NetDevice, vnet: vcpu.net as NetDevice };
}

// -------------------------------------------------------------------------------------------------
// frames

export const macBytes = (m: string) => m.split(":").map((x) => parseInt(x, 16));
export const ipBytes = (ip: string) => ip.split(".").map(Number);
export const BROADCAST = [255, 255, 255, 255, 255, 255];

export function checksum(b: Uint8Array, init = 0): number {
  let s = init;
  for (let i = 0; i + 1 < b.length; i += 2) s += (b[i]! << 8) | b[i + 1]!;
  if (b.length & 1) s += b[b.length - 1]! << 8;
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
  return ~s & 0xffff;
}
const be16 = (v: number) => [(v >> 8) & 0xff, v & 0xff];

export function ether(dst: number[], src: number[], type: number, payload: Uint8Array): Uint8Array {
  return Uint8Array.from([...dst, ...src, ...be16(type), ...payload]);
}
export function arpRequest(sha: number[], spa: string, tpa: string): Uint8Array {
  return Uint8Array.from([0, 1, 8, 0, 6, 4, 0, 1, ...sha, ...ipBytes(spa), 0, 0, 0, 0, 0, 0, ...ipBytes(tpa)]);
}
export function ipv4(src: string, dst: string, proto: number, payload: Uint8Array, id = 1): Uint8Array {
  const h = Uint8Array.from([0x45, 0, ...be16(20 + payload.length), ...be16(id), 0x40, 0, 64, proto, 0, 0, ...ipBytes(src), ...ipBytes(dst)]);
  const c = checksum(h);
  h[10] = c >> 8; h[11] = c & 0xff;
  return Uint8Array.from([...h, ...payload]);
}
export function icmpEcho(type: 0 | 8, id: number, seq: number, data: Uint8Array): Uint8Array {
  const b = Uint8Array.from([type, 0, 0, 0, ...be16(id), ...be16(seq), ...data]);
  const c = checksum(b);
  b[2] = c >> 8; b[3] = c & 0xff;
  return b;
}
/** UDP with its checksum field preset to `csum` (the pseudo-header sum for a partial checksum). */
export function udp(sport: number, dport: number, data: Uint8Array, csum = 0): Uint8Array {
  return Uint8Array.from([...be16(sport), ...be16(dport), ...be16(8 + data.length), ...be16(csum), ...data]);
}
/** One's-complement sum (not inverted) of the IPv4 pseudo-header, for NEEDS_CSUM frames. */
export function pseudoSum(src: string, dst: string, proto: number, len: number): number {
  const b = Uint8Array.from([...ipBytes(src), ...ipBytes(dst), 0, proto, ...be16(len)]);
  return ~checksum(b) & 0xffff;
}
export function vnetHdr(o: { flags?: number; gsoType?: number; hdrLen?: number; gsoSize?: number; csumStart?: number; csumOffset?: number } = {}): Uint8Array {
  const b = new Uint8Array(12), v = new DataView(b.buffer);
  b[0] = o.flags ?? 0; b[1] = o.gsoType ?? 0;
  v.setUint16(2, o.hdrLen ?? 0, true); v.setUint16(4, o.gsoSize ?? 0, true);
  v.setUint16(6, o.csumStart ?? 0, true); v.setUint16(8, o.csumOffset ?? 0, true);
  return b;
}
export const cat = (...parts: Uint8Array[]) => { const o = new Uint8Array(parts.reduce((a, p) => a + p.length, 0)); let k = 0; for (const p of parts) { o.set(p, k); k += p.length; } return o; };
