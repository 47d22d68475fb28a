/**
 * virtio-net configuration and identity data: bhyve's keys (backend, mac, mtu) in TOML and on the command
 * line (`-s 3,virtio-net,tap0,mac=...`), errors with file:line, bhyve's stable MAC (OUI 58:9c:fc, MD5 of
 * "slot-function-name"), the features, config space, header length and the tap offloads derived from
 * negotiated features.
 */
import { describe, expect, test } from "bun:test";
import { createHash } from "node:crypto";
import { parseArgs } from "../../src/cli/args.ts";
import { configFixture } from "./config-fixture.ts";
import { virtioQueueCount } from "../../src/virtio/notify.ts";
import {
  bit, formatMac, generateMac, GSO, HDR_F, NET_CFG, NET_F, netConfig, netFeatures, netHdrLen, parseMac, rxFrameMax, rxHeaderAllowed,
  tapOffloads, txHeaderError,
} from "../../src/virtio/net/index.ts";
import { TAP_OFF } from "../../src/vmm/net.ts";

const { dir, KERNEL, load, errorOf } = configFixture("tsbhyve-vnet-cfg-");

describe("virtio-net config", () => {
  test("TOML keys typed, defaults, two queues", () => {
    const c = load(`[pci."0.3.0"]\ndevice = "virtio-net"\nbackend = "tap0"\nmac = "02:11:22:33:44:55"\nmtu = 9000\n`);
    expect(c.pci["0.3.0"]).toEqual({ device: "virtio-net", backend: "tap0", mac: "02:11:22:33:44:55", mtu: 9000, queue_size: 256 });
    expect(virtioQueueCount(c.pci["0.3.0"]!)).toBe(2);
  });

  test("bhyve command line: the first bare value is the backend; /dev/ prefix accepted", () => {
    const c = parseArgs(["-k", KERNEL, "-s", "3,virtio-net,tap7,mac=58:9c:fc:01:02:03", "-s", "4,virtio-net,backend=/dev/tap8,mtu=1400", "vm"], { cwd: dir }).config!;
    expect(c.pci["0.3.0"]).toMatchObject({ device: "virtio-net", backend: "tap7", mac: "58:9c:fc:01:02:03" });
    expect(c.pci["0.3.0"]!.path).toBeUndefined();
    expect(c.pci["0.4.0"]).toMatchObject({ backend: "/dev/tap8", mtu: 1400 });
  });

  test("errors name the file, line and key", () => {
    const net = (extra: string) => `[pci."0.3.0"]\ndevice = "virtio-net"\n${extra}`;
    expect(errorOf(() => load(net(`backend = "tap0"\nmac = "01:00:5e:00:00:01"\n`)))).toMatch(/guest\.toml:5: pci\.0\.3\.0\.mac: expected a unicast MAC/);
    expect(errorOf(() => load(net(`backend = "tap0"\nmac = "00:00:00:00:00:00"\n`)))).toMatch(/guest\.toml:5: .*other than 00:00:00:00:00:00/);
    expect(errorOf(() => load(net(`backend = "tap0"\nmac = "58:9c:fc:1:2:3"\n`)))).toMatch(/guest\.toml:5: .*expected a MAC address like/);
    expect(errorOf(() => load(net(`backend = "tap0"\nmtu = 67\n`)))).toMatch(/guest\.toml:5: pci\.0\.3\.0\.mtu: expected an integer 68-65535, got 67/);
    expect(errorOf(() => load(net(`backend = "tap0"\nmtu = 65536\n`)))).toMatch(/mtu: expected an integer 68-65535/);
    expect(errorOf(() => load(net(`backend = "tap0"\nqueue_size = 100\n`)))).toMatch(/queue_size: expected a power of two/);
    expect(errorOf(() => load(net(`backend = "a-very-long-interface-name"\n`)))).toMatch(/guest\.toml:4: pci\.0\.3\.0\.backend: expected a tap interface name of 1-15/);
    expect(errorOf(() => load(net(`backend = "tap 0"\n`)))).toMatch(/backend: expected a tap interface name/);
    expect(errorOf(() => load(net(`backend = "slirp"\n`)))).toMatch(/slirp backend is not available/);
    expect(errorOf(() => load(net(`mac = "02:00:00:00:00:01"\n`)))).toMatch(/guest\.toml:3: pci\.0\.3\.0\.backend: missing/);
    expect(errorOf(() => load(net(`backend = "tap0"\nspeed = 10\n`)))).toMatch(/unknown virtio-net option/);
  });
});

describe("virtio-net MAC", () => {
  test("generated like bhyve: 58:9c:fc + MD5(slot-function-name)[0..3], stable, different per slot, function and name", () => {
    const d = createHash("md5").update("3-0-vm1").digest();
    expect(generateMac("vm1", 3, 0)).toEqual([0x58, 0x9c, 0xfc, d[0], d[1], d[2]]);
    expect(generateMac("vm1", 3, 0)).toEqual(generateMac("vm1", 3, 0));
    const all = [generateMac("vm1", 3, 0), generateMac("vm1", 4, 0), generateMac("vm1", 3, 1), generateMac("vm2", 3, 0)].map(formatMac);
    expect(new Set(all).size).toBe(4);
    for (const m of all) expect(m).toMatch(/^58:9c:fc:[0-9a-f]{2}:[0-9a-f]{2}:[0-9a-f]{2}$/);
  });
  test("parseMac: unicast, not zero, colon form", () => {
    expect(parseMac("02:AB:cd:00:00:01")).toEqual([2, 0xab, 0xcd, 0, 0, 1]);
    expect(parseMac("03:00:00:00:00:01")).toMatch(/unicast/);
    expect(parseMac("00:00:00:00:00:00")).toMatch(/other than/);
    expect(parseMac("02-00-00-00-00-01")).toMatch(/expected a MAC/);
  });
});

describe("virtio-net features and config space", () => {
  test("offered bits; MTU only when set", () => {
    const f = netFeatures({ mtu: undefined });
    for (const b of [NET_F.MAC, NET_F.STATUS, NET_F.MRG_RXBUF, NET_F.CSUM, NET_F.GUEST_CSUM, NET_F.HOST_TSO4, NET_F.HOST_TSO6, NET_F.HOST_ECN,
      NET_F.HOST_UFO, NET_F.GUEST_TSO4, NET_F.GUEST_TSO6, NET_F.GUEST_ECN, NET_F.GUEST_UFO]) expect(f & bit(b)).toBe(bit(b));
    expect(f & bit(NET_F.MTU)).toBe(0n);
    expect(f & bit(NET_F.CTRL_VQ)).toBe(0n);
    expect(netFeatures({ mtu: 9000 }) & bit(NET_F.MTU)).toBe(bit(NET_F.MTU));
  });
  test("config: mac, status LINK_UP, one queue pair, mtu", () => {
    const b = netConfig({ mac: [0x58, 0x9c, 0xfc, 1, 2, 3], mtu: 9000 }, true), v = new DataView(b.buffer);
    expect([...b.subarray(0, 6)]).toEqual([0x58, 0x9c, 0xfc, 1, 2, 3]);
    expect(v.getUint16(NET_CFG.status, true)).toBe(1);
    expect(v.getUint16(NET_CFG.max_virtqueue_pairs, true)).toBe(1);
    expect(v.getUint16(NET_CFG.mtu, true)).toBe(9000);
    expect(new DataView(netConfig({ mac: [2, 0, 0, 0, 0, 1] }, false).buffer).getUint16(NET_CFG.status, true)).toBe(0);
  });
  test("header length, tap offloads, largest receive frame", () => {
    expect(netHdrLen(bit(32))).toBe(12);
    expect(netHdrLen(bit(NET_F.MRG_RXBUF))).toBe(12);
    expect(netHdrLen(0n)).toBe(10);
    const g = (...n: number[]) => n.reduce((a, b) => a | bit(b), 0n);
    expect(tapOffloads(g(NET_F.GUEST_TSO4))).toBe(0); // TSO without GUEST_CSUM: nothing
    expect(tapOffloads(g(NET_F.GUEST_CSUM))).toBe(TAP_OFF.CSUM);
    expect(tapOffloads(g(NET_F.GUEST_CSUM, NET_F.GUEST_TSO4, NET_F.GUEST_TSO6, NET_F.GUEST_ECN, NET_F.GUEST_UFO))).toBe(31);
    expect(tapOffloads(g(NET_F.GUEST_CSUM, NET_F.GUEST_ECN))).toBe(TAP_OFF.CSUM); // ECN needs a TSO bit
    expect(rxFrameMax(g(NET_F.GUEST_CSUM, NET_F.GUEST_TSO4), undefined, 12)).toBe(65562);
    expect(rxFrameMax(g(NET_F.GUEST_CSUM), undefined, 12)).toBe(1530);
    expect(rxFrameMax(0n, 9000, 12)).toBe(9030);
  });
  test("header checks both ways", () => {
    const g = (...n: number[]) => n.reduce((a, b) => a | bit(b), 0n);
    expect(txHeaderError(0n, 0, 0, 0)).toBeUndefined();
    expect(txHeaderError(0n, HDR_F.NEEDS_CSUM, 0, 0)).toMatch(/NEEDS_CSUM/);
    expect(txHeaderError(g(NET_F.CSUM), HDR_F.NEEDS_CSUM, GSO.TCPV4, 1448)).toMatch(/HOST_/);
    expect(txHeaderError(g(NET_F.CSUM, NET_F.HOST_TSO4), HDR_F.NEEDS_CSUM, GSO.TCPV4, 1448)).toBeUndefined();
    expect(txHeaderError(g(NET_F.CSUM, NET_F.HOST_TSO4), HDR_F.NEEDS_CSUM, GSO.TCPV4 | GSO.ECN, 1448)).toMatch(/ECN/);
    expect(txHeaderError(g(NET_F.CSUM, NET_F.HOST_TSO4), HDR_F.NEEDS_CSUM, GSO.TCPV4, 0)).toMatch(/gso_size 0/);
    expect(txHeaderError(g(NET_F.CSUM, NET_F.HOST_UFO), 0, GSO.UDP_L4, 100)).toMatch(/not offered/);
    expect(txHeaderError(0n, 0x40, 0, 0)).toMatch(/unknown header flags/);
    expect(rxHeaderAllowed(0n, HDR_F.NEEDS_CSUM, 0)).toBe(false);
    expect(rxHeaderAllowed(g(NET_F.GUEST_CSUM), HDR_F.NEEDS_CSUM, 0)).toBe(true);
    expect(rxHeaderAllowed(g(NET_F.GUEST_CSUM), HDR_F.NEEDS_CSUM, GSO.TCPV4)).toBe(false);
    expect(rxHeaderAllowed(g(NET_F.GUEST_CSUM, NET_F.GUEST_TSO4), HDR_F.NEEDS_CSUM, GSO.TCPV4)).toBe(true);
    expect(rxHeaderAllowed(g(NET_F.GUEST_CSUM, NET_F.GUEST_TSO4), HDR_F.NEEDS_CSUM, GSO.TCPV6)).toBe(false);
  });
});
