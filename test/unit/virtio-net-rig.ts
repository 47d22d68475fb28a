/**
 * Test rig for virtio-net: the device model behind the real virtio-pci transport on real host memory
 * (host.memAlloc, so readv/writev really move frames), driven through a Bus by the fake driver, with a
 * real Linux tap created by the test and moved into a throwaway network namespace (10.98.N.1/24 on the
 * host end, IPv6 off so no stray frames). Also Ethernet / ARP / IPv4 / ICMP / UDP frame builders.
 */
import { expect } from "bun:test";
import { GuestMemory, MiB, region } from "../../src/mem/guest-memory.ts";
import { openTap } from "../../src/net/tap.ts";
import { host } from "../../src/vmm/index.ts";
import { createNet, type NetBackendOps, type NetDevice } from "../../src/virtio/devices/net.ts";
import type { NetDeviceInfo } from "../../src/virtio/net/index.ts";
import { virtioPciRig } from "./virtio-pci-rig.ts";

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

let rigN = 0;

/** The device on a transport (test/unit/virtio-pci-rig.ts), brought up by a fake driver with `features` (masked by what is offered). */
export function rig(dev: NetDeviceInfo, o: { ops?: NetBackendOps; mem?: GuestMemory } = {}) {
  const mem = o.mem ?? realMem();
  const base = 0x200000 + (rigN++ % 8) * 0x400000; // rings and buffers of successive rigs do not overlap
  const r = virtioPciRig<{ net: NetDevice }>({
    mem, queues: 2, slot: 3, ramBytes: MEM,
    build: (inp, _ctx, platform) => createNet({ ...inp, dev, ops: o.ops, log: (m) => platform.log(m) }),
  });
  const bringUp = (want: bigint, o2: { eventIdx?: boolean } = {}) => {
    const { drivers, features } = r.bringUp(want, { eventIdx: o2.eventIdx, base, ringStride: 0x100000, heapBase: base + 0x200000, heapSize: 0x100000 });
    return { rx: drivers[0]!, tx: drivers[1]!, negotiated: features };
  };
  /** The tap's poll source as the I/O Worker would collect it now (undefined: not watched). */
  const tapSource = () => r.sources()[2];
  /** One I/O Worker turn on the tap: poll it (with timeout) and run its handler. Returns whether it was ready. */
  const serveTap = (timeoutMs = 0): boolean => {
    const s = tapSource();
    if (!s) return false;
    const fds = Int32Array.of(s.fd), ev = Int16Array.of(s.events), rev = new Int16Array(1);
    if (host.poll(fds, ev, rev, timeoutMs) <= 0) return false;
    s.ready(rev[0]!);
    return true;
  };
  return {
    mem, platform: r.platform, cfg: r.cfg, features: r.features, bringUp, kick: r.kick, tapSource, serveTap, status: r.status,
    configGeneration: r.configGeneration, net: (r.io as { net: NetDevice }).net, vnet: (r.vcpu as { net: NetDevice }).net,
  };
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
