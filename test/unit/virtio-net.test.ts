/**
 * virtio-net as a device against a real Linux tap on this host (root; /dev/net/tun): the model behind the
 * virtio-pci transport on real host memory, the tap opened by the production path (src/net/tap.ts) and
 * moved into a throwaway network namespace whose kernel is the peer. Frames go guest → tap with writev
 * from guest RAM and tap → guest with readv into guest RAM:
 * - identity, features, config (MAC, LINK_UP, MTU); an existing tap attached, a busy one refused;
 * - ARP and ICMP round trips with the host kernel;
 * - a host `ping -s 1400` landing in 256-byte mergeable buffers (num_buffers, used lengths), answered by
 *   the test's guest side so ping succeeds;
 * - without mergeable buffers: one chain per frame; a frame longer than the chain (which a tap would cut
 *   silently) is dropped and counted, the chain reused for the next frame;
 * - no receive buffers: the tap is not read or watched, nothing is dropped, frames arrive once buffers do;
 * - offloads: GUEST_CSUM makes the host hand partial checksums (NEEDS_CSUM); a partial-checksum UDP and a
 *   UFO (GSO UDP) frame from the guest reach a host socket intact; a header with an offload that was not
 *   negotiated is refused and counted;
 * - the host interface deleted: the link goes down with a configuration interrupt.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { closeTap, openTap } from "../../src/net/tap.ts";
import { bit, GSO, HDR_F, NET_CFG, NET_F } from "../../src/virtio/net/index.ts";
import { VIRTIO_F } from "../../src/virtio/pci.ts";
import type { FakeDriver } from "./virtio-driver.ts";
import {
  arpRequest, BROADCAST, cat, ether, hostTap, icmpEcho, ipBytes, ipv4, macBytes, pseudoSum, rig, sh, udp, vnetHdr,
} from "./virtio-net-rig.ts";

const taps: ReturnType<typeof hostTap>[] = [];
afterAll(() => { for (const t of taps) t.destroy(); });
const tap = (o: { mtu?: number; mac?: string } = {}) => { const t = hostTap(o); taps.push(t); return t; };

const ALL = [NET_F.MAC, NET_F.STATUS, NET_F.MRG_RXBUF, NET_F.CSUM, NET_F.GUEST_CSUM, NET_F.HOST_TSO4, NET_F.HOST_TSO6, NET_F.HOST_ECN,
  NET_F.HOST_UFO, NET_F.GUEST_TSO4, NET_F.GUEST_TSO6, NET_F.GUEST_ECN, NET_F.GUEST_UFO, NET_F.MTU].reduce((a, b) => a | bit(b), 0n);
const feat = (...n: number[]) => n.reduce((a, b) => a | bit(b), 0n);

interface Rx { heads: Map<number, number> }
/** Post n writable single-descriptor chains of `size` bytes on the receive queue. */
function postRx(drv: FakeDriver, n: number, size: number, rx: Rx = { heads: new Map() }): Rx {
  for (let i = 0; i < n; i++) { const { head, addrs } = drv.add([{ len: size, write: true }]); rx.heads.set(head, addrs[0]!); }
  drv.publish();
  return rx;
}
interface Frame { hdr: Uint8Array; data: Uint8Array; numBuffers: number; lens: number[] }
/** Reassemble received frames from the used ring (mergeable: num_buffers chains per frame). */
function takeRx(r: ReturnType<typeof rig>, drv: FakeDriver, rx: Rx, hdrLen = 12): Frame[] {
  const used = drv.collect();
  const out: Frame[] = [];
  for (let i = 0; i < used.length;) {
    const first = r.mem.readBytes(rx.heads.get(used[i]!.id)!, used[i]!.len);
    const nb = hdrLen === 12 ? first[10]! | (first[11]! << 8) : 1;
    const parts = used.slice(i, i + Math.max(1, nb));
    const bytes = cat(...parts.map((u) => r.mem.readBytes(rx.heads.get(u.id)!, u.len)));
    out.push({ hdr: bytes.subarray(0, hdrLen), data: bytes.subarray(hdrLen), numBuffers: nb, lens: parts.map((u) => u.len) });
    i += Math.max(1, nb);
  }
  return out;
}
function sendTx(r: ReturnType<typeof rig>, drv: FakeDriver, frame: Uint8Array, hdr = vnetHdr(), split = 0) {
  const bufs = split ? [{ len: hdr.length, data: hdr }, { len: split, data: frame.subarray(0, split) }, { len: frame.length - split, data: frame.subarray(split) }]
    : [{ len: hdr.length + frame.length, data: cat(hdr, frame) }];
  const { head } = drv.add(bufs);
  drv.publish();
  r.kick(1);
  return head;
}
/** Serve the tap until `pred` holds on the frames received so far (or the time runs out). */
async function until(r: ReturnType<typeof rig>, drv: FakeDriver, rx: Rx, pred: (f: Frame[]) => boolean, ms = 3000): Promise<Frame[]> {
  const got: Frame[] = [];
  const end = Date.now() + ms;
  while (Date.now() < end) {
    r.serveTap(0);
    got.push(...takeRx(r, drv, rx));
    if (pred(got)) return got;
    await Bun.sleep(5);
  }
  return got;
}
const etherType = (f: Uint8Array) => (f[12]! << 8) | f[13]!;
const isIcmp = (f: Uint8Array, type: number) => etherType(f) === 0x0800 && f[23] === 1 && f[34] === type;

describe("virtio-net device on a real tap", () => {
  test("identity, features and config space as the driver sees them", () => {
    const t = tap({ mtu: 9000 });
    expect(t.exec(`ip link show ${t.ifname}`)).toContain("mtu 9000"); // a tap tsbhyve creates gets mtu=
    const r = rig(t.dev);
    const f = r.features();
    expect(f & ALL).toBe(ALL);
    expect(f & VIRTIO_F.VERSION_1).toBe(VIRTIO_F.VERSION_1);
    expect(f & bit(NET_F.CTRL_VQ)).toBe(0n);
    expect([0, 1, 2, 3, 4, 5].map((i) => r.cfg(NET_CFG.mac + i, 1))).toEqual(t.dev.mac);
    expect(t.dev.mac.slice(0, 3)).toEqual([0x58, 0x9c, 0xfc]);
    expect(r.cfg(NET_CFG.status, 2)).toBe(1);
    expect(r.cfg(NET_CFG.mtu, 2)).toBe(9000);
    expect(r.cfg(NET_CFG.max_virtqueue_pairs, 2)).toBe(1);
    const r2 = rig({ ...t.dev, mtu: undefined });
    expect(r2.features() & bit(NET_F.MTU)).toBe(0n);
  });

  test("an existing tap is attached (not created) and brought up; a tap in use elsewhere is refused with the reason", () => {
    const name = `tsbva${process.pid % 100000}`;
    sh(`ip tuntap add dev ${name} mode tap`);
    try {
      const a = openTap({ backend: `/dev/${name}`, mtu: 1400 }, { name: "vm", slot: 5, fn: 0 });
      try {
        expect(a.created).toBe(false);
        expect(a.dev.ifname).toBe(name);
        expect(sh(`ip link show ${name}`)).toMatch(/[<,]UP[,>]/);
        expect(a.warnings).toEqual([]); // 1500 on the host ≥ mtu 1400
        expect(() => openTap({ backend: name }, { name: "vm", slot: 6, fn: 0 })).toThrow(/EBUSY \(another process has it open\)/);
      } finally { closeTap(a.dev); }
      expect(sh(`ip link show ${name}`)).toContain(name); // persistent: it stays when we let go
    } finally { sh(`ip tuntap del dev ${name} mode tap`); }
  });

  test("ARP and ping with the host kernel: frames out by writev from guest RAM, answers in by readv", async () => {
    const t = tap({ mac: "02:00:00:00:01:02" });
    expect(t.dev.mac).toEqual([2, 0, 0, 0, 1, 2]);
    const r = rig(t.dev);
    const { rx, tx } = r.bringUp(ALL);
    const bufs = postRx(rx, 40, 2048); // room for a 64 KiB segment: GUEST_TSO was negotiated
    r.kick(0);
    expect(r.tapSource()?.events).toBe(1); // POLLIN: room for a frame
    const mac = t.dev.mac;
    sendTx(r, tx, ether(BROADCAST, mac, 0x0806, arpRequest(mac, t.guestIp, t.hostIp)));
    expect(tx.collect()).toEqual([{ id: 0, len: 0 }]);
    const arp = await until(r, rx, bufs, (fs) => fs.some((f) => etherType(f.data) === 0x0806));
    const reply = arp.find((f) => etherType(f.data) === 0x0806)!;
    expect(reply.numBuffers).toBe(1);
    expect([...reply.data.subarray(0, 6)]).toEqual(mac);
    expect(reply.data[21]).toBe(2); // ARP reply
    expect([...reply.data.subarray(28, 32)]).toEqual(ipBytes(t.hostIp));
    const hostMac = [...reply.data.subarray(6, 12)];
    const payload = Uint8Array.from({ length: 200 }, (_, i) => i & 0xff);
    sendTx(r, tx, ether(hostMac, mac, 0x0800, ipv4(t.guestIp, t.hostIp, 1, icmpEcho(8, 0x1234, 7, payload))), vnetHdr(), 20);
    const pong = await until(r, rx, bufs, (fs) => fs.some((f) => isIcmp(f.data, 0)));
    const echo = pong.find((f) => isIcmp(f.data, 0))!;
    expect([...echo.data.subarray(42)]).toEqual([...payload]);
    const c = r.net.counters();
    expect(c.txFrames).toBe(2);
    expect(c.rxFrames).toBeGreaterThanOrEqual(2);
    expect(c.rxDropped + c.txErrors + c.txDropped + c.rxErrors).toBe(0);
    expect(r.platform.msis.length).toBeGreaterThan(0); // used-buffer interrupts went out
  });

  test("mergeable receive buffers: a host ping -s 1400 spans 256-byte chains (num_buffers, used lengths); the answer makes ping succeed", async () => {
    const t = tap();
    const r = rig(t.dev);
    const { rx, tx } = r.bringUp(feat(NET_F.MAC, NET_F.MRG_RXBUF)); // no GUEST_TSO: room for an MTU frame is enough
    const bufs = postRx(rx, 64, 256);
    r.kick(0);
    const mac = t.dev.mac;
    t.exec(`ip neigh replace ${t.guestIp} lladdr ${mac.map((b) => b.toString(16).padStart(2, "0")).join(":")} dev ${t.ifname}`);
    const ping = t.spawn(`busybox ping -c 1 -W 5 -s 1400 ${t.guestIp}`);
    const got = await until(r, rx, bufs, (fs) => fs.some((f) => isIcmp(f.data, 8)), 5000);
    const req = got.find((f) => isIcmp(f.data, 8))!;
    expect(req.data.length).toBe(14 + 20 + 8 + 1400);
    expect(req.numBuffers).toBe(Math.ceil((12 + req.data.length) / 256));
    expect(req.lens.slice(0, -1).every((l) => l === 256)).toBe(true);
    expect(req.lens.reduce((a, b) => a + b, 0)).toBe(12 + req.data.length);
    // answer from the guest side: swap addresses, type 0, same id/seq/data
    const d = req.data, ip = d.subarray(14);
    const icmp = icmpEcho(0, (ip[24]! << 8) | ip[25]!, (ip[26]! << 8) | ip[27]!, ip.subarray(28));
    sendTx(r, tx, ether([...d.subarray(6, 12)], mac, 0x0800, ipv4(t.guestIp, t.hostIp, 1, icmp, 99)));
    expect(await ping.exited).toBe(0);
    expect(r.net.counters().rxDropped).toBe(0);
  });

  test("without mergeable buffers: one chain per frame, num_buffers 1; a frame larger than the chain is dropped and counted, the chain reused", async () => {
    const t = tap();
    const r = rig(t.dev);
    const { rx } = r.bringUp(feat(NET_F.MAC)); // VERSION_1: 12-byte header, no MRG_RXBUF
    const bufs = postRx(rx, 4, 300); // (stray frames from the namespace may take some)
    r.kick(0);
    t.exec(`ip neigh replace ${t.guestIp} lladdr 02:00:00:00:00:77 dev ${t.ifname}`);
    await t.spawn(`busybox ping -c 1 -W 1 -s 1000 ${t.guestIp}`).exited;
    await until(r, rx, bufs, () => r.net.counters().rxDropped > 0, 3000);
    expect(r.net.counters().rxDropped).toBe(1);
    expect(r.platform.logs.join("\n")).toMatch(/frame larger than the 300 bytes of buffers; dropped/);
    await t.spawn(`busybox ping -c 1 -W 1 -s 100 ${t.guestIp}`).exited;
    const got = await until(r, rx, bufs, (fs) => fs.some((f) => isIcmp(f.data, 8)), 3000);
    const f = got.find((x) => isIcmp(x.data, 8))!;
    expect(f.numBuffers).toBe(1);
    expect(f.data.length).toBe(14 + 20 + 8 + 100);
    expect(r.net.counters().rxDropped).toBe(1);
  });

  test("no receive buffers: the tap is neither read nor watched, nothing is dropped; queued frames arrive once buffers are posted", async () => {
    const t = tap();
    const r = rig(t.dev);
    const { rx } = r.bringUp(ALL);
    r.kick(0);
    expect(r.tapSource()).toBeUndefined(); // back-pressure: frames stay in the kernel's tap queue
    t.exec(`ip neigh replace ${t.guestIp} lladdr 02:00:00:00:00:99 dev ${t.ifname}`);
    const ping = t.spawn(`busybox ping -c 5 -i 0.05 -W 1 ${t.guestIp}`);
    await ping.exited;
    const c0 = r.net.counters();
    expect(c0.rxFrames + c0.rxDropped).toBe(0);
    expect(r.tapSource()).toBeUndefined();
    const bufs = postRx(rx, 40, 2048);
    r.kick(0); // the guest's notification resumes reading: everything queued comes in at once
    const got = takeRx(r, rx, bufs);
    expect(got.filter((f) => isIcmp(f.data, 8)).length).toBe(5);
    expect(r.net.counters().rxDropped).toBe(0);
    expect(r.tapSource()?.events).toBe(1);
  });

  test("offloads: partial checksums from the host with GUEST_CSUM; partial-checksum and UFO frames from the guest reach a host socket; unnegotiated offloads refused", async () => {
    const t = tap();
    const r = rig(t.dev);
    const { rx, tx } = r.bringUp(ALL);
    const bufs = postRx(rx, 40, 2048);
    r.kick(0);
    const mac = t.dev.mac, macStr = mac.map((b) => b.toString(16).padStart(2, "0")).join(":");
    t.exec(`ip neigh replace ${t.guestIp} lladdr ${macStr} dev ${t.ifname}`);
    const bun = process.execPath;
    // host → guest UDP: the local stack leaves the checksum to the "hardware" (us, then the guest)
    t.exec(`${bun} -e 'const s=require("node:dgram").createSocket("udp4");s.send(Buffer.alloc(100,7),9999,"${t.guestIp}",()=>s.close())'`);
    const got = await until(r, rx, bufs, (fs) => fs.some((f) => etherType(f.data) === 0x0800 && f.data[23] === 17));
    const u = got.find((f) => etherType(f.data) === 0x0800 && f.data[23] === 17)!;
    expect(u.hdr[0]! & HDR_F.NEEDS_CSUM).toBe(HDR_F.NEEDS_CSUM);
    expect(new DataView(u.hdr.buffer, u.hdr.byteOffset).getUint16(6, true)).toBe(34); // csum_start: the UDP header
    expect(new DataView(u.hdr.buffer, u.hdr.byteOffset).getUint16(8, true)).toBe(6); // csum_offset: its checksum field
    // guest → host: a UDP receiver in the namespace prints what it gets
    const recv = t.spawn(`${bun} -e 'const s=require("node:dgram").createSocket("udp4");let n=0;s.on("message",(m)=>{console.log(m.length+":"+m[0]+":"+m[m.length-1]);if(++n===2)s.close()});s.bind(7777,"${t.hostIp}",()=>console.log("ready"))'`);
    const reader = recv.stdout.getReader();
    let out = "";
    while (!out.includes("ready")) out += new TextDecoder().decode((await reader.read()).value);
    const hm = macBytes(t.exec(`cat /sys/class/net/${t.ifname}/address`).trim());
    const small = Uint8Array.from({ length: 300 }, (_, i) => (i * 3) & 0xff);
    const frame = (data: Uint8Array, id: number) => ether(hm, mac, 0x0800, ipv4(t.guestIp, t.hostIp, 17, udp(5555, 7777, data, pseudoSum(t.guestIp, t.hostIp, 17, 8 + data.length)), id));
    sendTx(r, tx, frame(small, 11), vnetHdr({ flags: HDR_F.NEEDS_CSUM, csumStart: 34, csumOffset: 6 }));
    const big = Uint8Array.from({ length: 3000 }, (_, i) => (i * 5 + 1) & 0xff);
    sendTx(r, tx, frame(big, 12), vnetHdr({ flags: HDR_F.NEEDS_CSUM, gsoType: GSO.UDP, hdrLen: 42, gsoSize: 1472, csumStart: 34, csumOffset: 6 }));
    const deadline = Date.now() + 5000;
    while (out.split("\n").length < 4 && Date.now() < deadline) {
      const c = await Promise.race([reader.read(), Bun.sleep(200).then(() => undefined)]);
      if (c?.value) out += new TextDecoder().decode(c.value);
    }
    recv.kill();
    expect(out).toContain(`300:${small[0]}:${small[299]}`);
    expect(out).toContain(`3000:${big[0]}:${big[2999]}`);
    expect(r.net.counters().txFrames).toBe(2);
    // a TCP segmentation header from a driver that negotiated CSUM but not HOST_TSO4: refused, length 0, counted
    const r2 = rig(t.dev);
    const q = r2.bringUp(feat(NET_F.MAC, NET_F.CSUM));
    sendTx(r2, q.tx, frame(small, 13), vnetHdr({ flags: HDR_F.NEEDS_CSUM, gsoType: GSO.TCPV4, gsoSize: 1448, csumStart: 34, csumOffset: 16 }));
    expect(q.tx.collect()).toEqual([{ id: 0, len: 0 }]);
    expect(r2.net.counters().txErrors).toBe(1);
    expect(r2.platform.logs.join("\n")).toMatch(/malformed: header: GSO type 1 without its HOST_ feature/);
  });

  test("link status: LINK_UP while the tap works; the host interface deleted → link down, configuration interrupt", async () => {
    const t = tap();
    const r = rig(t.dev);
    const { tx } = r.bringUp(ALL);
    expect(r.cfg(NET_CFG.status, 2)).toBe(1);
    const gen = r.configGeneration(), msis = r.platform.msis.length;
    t.exec(`ip link del ${t.ifname}`);
    sendTx(r, tx, ether(BROADCAST, t.dev.mac, 0x0806, arpRequest(t.dev.mac, t.guestIp, t.hostIp)));
    expect(tx.collect()).toEqual([{ id: 0, len: 0 }]);
    expect(r.cfg(NET_CFG.status, 2)).toBe(0);
    expect(r.configGeneration()).not.toBe(gen);
    expect(r.platform.msis.slice(msis).some(([, data]) => data === 0x40)).toBe(true); // config vector 0
    expect(r.platform.logs.join("\n")).toMatch(/backend failed, link down/);
    sendTx(r, tx, ether(BROADCAST, t.dev.mac, 0x0806, arpRequest(t.dev.mac, t.guestIp, t.hostIp)));
    expect(tx.collect()).toEqual([{ id: 1, len: 0 }]); // later frames come back unsent
    expect(r.net.counters().txDropped).toBe(2);
  });
});

