/**
 * virtio-net as data (virtio 1.2 §5.1): device id, feature bits, the device configuration space
 * (struct virtio_net_config), the per-frame header (struct virtio_net_hdr), the frame limits, bhyve's MAC
 * rule, and how negotiated features map to the tap's offloads.
 *
 * Feature dependencies (§5.1.3.1) are honoured when the offloads are derived: a GUEST_TSO/UFO bit
 * without GUEST_CSUM (which a conforming driver never accepts) turns no segmentation offload on, so
 * the host never hands the guest a frame it cannot take.
 */
import { createHash } from "node:crypto";
import { TAP_OFF } from "../../vmm/net.ts";

export const VIRTIO_ID_NET = 1;

/** Feature bit numbers (§5.1.3). */
export const NET_F = {
  CSUM: 0, GUEST_CSUM: 1, CTRL_GUEST_OFFLOADS: 2, MTU: 3, MAC: 5, GUEST_TSO4: 7, GUEST_TSO6: 8, GUEST_ECN: 9,
  GUEST_UFO: 10, HOST_TSO4: 11, HOST_TSO6: 12, HOST_ECN: 13, HOST_UFO: 14, MRG_RXBUF: 15, STATUS: 16,
  CTRL_VQ: 17, CTRL_RX: 18, CTRL_VLAN: 19, GUEST_ANNOUNCE: 21, MQ: 22, CTRL_MAC_ADDR: 23,
} as const;
export const bit = (n: number): bigint => 1n << BigInt(n);

/** struct virtio_net_config offsets; we expose mac, status, max_virtqueue_pairs, mtu. */
export const NET_CFG = { mac: 0, status: 6, max_virtqueue_pairs: 8, mtu: 10 } as const;
export const NET_CONFIG_BYTES = 12;
/** config status bits */
export const NET_S = { LINK_UP: 1, ANNOUNCE: 2 } as const;

/** struct virtio_net_hdr (little-endian): flags, gso_type, hdr_len, gso_size, csum_start, csum_offset, num_buffers. */
export const NET_HDR = { flags: 0, gso_type: 1, hdr_len: 2, gso_size: 4, csum_start: 6, csum_offset: 8, num_buffers: 10 } as const;
/** The header with num_buffers (VERSION_1 or MRG_RXBUF), and the legacy one without. */
export const NET_HDR_BYTES = 12, NET_HDR_LEGACY_BYTES = 10;
export const HDR_F = { NEEDS_CSUM: 1, DATA_VALID: 2, RSC_INFO: 4 } as const;
export const GSO = { NONE: 0, TCPV4: 1, UDP: 3, TCPV6: 4, UDP_L4: 5, ECN: 0x80 } as const;

export const ETH_HLEN = 14, VLAN_HLEN = 4;
/** Largest frame with segmentation offloads: a 64 KiB IP packet plus Ethernet and VLAN headers, rounded as
 *  other virtio-net devices do (65550 bytes, header not included). */
export const MAX_GSO_FRAME = 65550;
export const DEFAULT_MTU = 1500;
export const NET_DEFAULT_QUEUE_SIZE = 256;
export const MIN_MTU = 68, MAX_MTU = 65535;
/** Linux's limit on iovecs per readv/writev (UIO_MAXIOV). */
export const MAX_IOV = 1024;

/** Everything a thread needs about one virtio-net function, as plain data (post it to Workers). */
export interface NetDeviceInfo {
  /** the tap's fd (opened on the main thread) */
  fd: number;
  /** the tap's interface name */
  ifname: string;
  /** the guest's MAC, 6 bytes */
  mac: number[];
  /** mtu= from the configuration (offered as VIRTIO_NET_F_MTU), or undefined */
  mtu?: number;
  queueSize: number;
}

/** The device-specific feature bits offered (the transport adds VERSION_1, EVENT_IDX, INDIRECT_DESC). */
export function netFeatures(dev: Pick<NetDeviceInfo, "mtu">): bigint {
  const bits: number[] = [
    NET_F.MAC, NET_F.STATUS, NET_F.MRG_RXBUF,
    NET_F.CSUM, NET_F.HOST_TSO4, NET_F.HOST_TSO6, NET_F.HOST_ECN, NET_F.HOST_UFO,
    NET_F.GUEST_CSUM, NET_F.GUEST_TSO4, NET_F.GUEST_TSO6, NET_F.GUEST_ECN, NET_F.GUEST_UFO,
  ];
  if (dev.mtu !== undefined) bits.push(NET_F.MTU);
  return bits.reduce((a, b) => a | bit(b), 0n);
}

/** struct virtio_net_config, little-endian, NET_CONFIG_BYTES long. */
export function netConfig(dev: Pick<NetDeviceInfo, "mac" | "mtu">, linkUp: boolean): Uint8Array {
  const b = new Uint8Array(NET_CONFIG_BYTES), v = new DataView(b.buffer);
  b.set(dev.mac, NET_CFG.mac);
  v.setUint16(NET_CFG.status, linkUp ? NET_S.LINK_UP : 0, true);
  v.setUint16(NET_CFG.max_virtqueue_pairs, 1, true);
  v.setUint16(NET_CFG.mtu, dev.mtu ?? DEFAULT_MTU, true);
  return b;
}

/** Header length for the negotiated features: 12 with VERSION_1 or MRG_RXBUF (§5.1.6), else 10. */
export function netHdrLen(negotiated: bigint): number {
  return negotiated & (bit(32) | bit(NET_F.MRG_RXBUF)) ? NET_HDR_BYTES : NET_HDR_LEGACY_BYTES;
}

const has = (f: bigint, n: number) => (f & bit(n)) !== 0n;

/** The tap offloads (TAP_OFF bits) the guest can receive, from the negotiated GUEST_* bits. */
export function tapOffloads(negotiated: bigint): number {
  if (!has(negotiated, NET_F.GUEST_CSUM)) return 0;
  let o = TAP_OFF.CSUM;
  if (has(negotiated, NET_F.GUEST_TSO4)) o |= TAP_OFF.TSO4;
  if (has(negotiated, NET_F.GUEST_TSO6)) o |= TAP_OFF.TSO6;
  if (has(negotiated, NET_F.GUEST_ECN) && o & (TAP_OFF.TSO4 | TAP_OFF.TSO6)) o |= TAP_OFF.TSO_ECN;
  if (has(negotiated, NET_F.GUEST_UFO)) o |= TAP_OFF.UFO;
  return o;
}

/**
 * Largest frame (header included) the receive path must have room for before it reads the tap: a
 * 64 KiB segment when the guest takes segmentation offloads, else an MTU-sized frame (with a VLAN tag).
 */
export function rxFrameMax(negotiated: bigint, mtu: number | undefined, hdrLen: number): number {
  const gso = tapOffloads(negotiated) & (TAP_OFF.TSO4 | TAP_OFF.TSO6 | TAP_OFF.UFO);
  return hdrLen + (gso ? MAX_GSO_FRAME : (mtu ?? DEFAULT_MTU) + ETH_HLEN + VLAN_HLEN);
}

/**
 * Whether a header the guest sent (TX) is one it may send under the negotiated features: NEEDS_CSUM
 * only with CSUM; a GSO type only with its HOST_* bit (ECN with HOST_ECN), and then with a gso_size.
 * Returns a reason when not.
 */
export function txHeaderError(negotiated: bigint, flags: number, gsoType: number, gsoSize: number): string | undefined {
  return txHeaderErrorLo(lowFeatures(negotiated), flags, gsoType, gsoSize);
}

/** The device-specific feature bits (all below 32) as a number, for the per-frame checks. */
export const lowFeatures = (negotiated: bigint): number => Number(negotiated & 0xffffffffn);
const hasLo = (f: number, n: number) => ((f >>> n) & 1) === 1;

/** txHeaderError on lowFeatures(negotiated). */
export function txHeaderErrorLo(f: number, flags: number, gsoType: number, gsoSize: number): string | undefined {
  if (flags & ~(HDR_F.NEEDS_CSUM | HDR_F.DATA_VALID | HDR_F.RSC_INFO)) return `unknown header flags 0x${flags.toString(16)}`;
  if (flags & HDR_F.NEEDS_CSUM && !hasLo(f, NET_F.CSUM)) return "NEEDS_CSUM without VIRTIO_NET_F_CSUM";
  const type = gsoType & ~GSO.ECN;
  if (type === GSO.NONE) return gsoType & GSO.ECN ? "GSO ECN bit without a GSO type" : undefined;
  const need = type === GSO.TCPV4 ? NET_F.HOST_TSO4 : type === GSO.TCPV6 ? NET_F.HOST_TSO6 : type === GSO.UDP ? NET_F.HOST_UFO : -1;
  if (need < 0) return `GSO type ${type} not offered`;
  if (!hasLo(f, need)) return `GSO type ${type} without its HOST_ feature`;
  if (gsoType & GSO.ECN && !hasLo(f, NET_F.HOST_ECN)) return "GSO ECN without VIRTIO_NET_F_HOST_ECN";
  if (gsoSize === 0) return "GSO frame with gso_size 0";
  return undefined;
}

/** Whether a header the host handed us (RX) is one the guest accepted: partial checksums, GSO types. */
export function rxHeaderAllowed(negotiated: bigint, flags: number, gsoType: number): boolean {
  return rxHeaderAllowedOff(has(negotiated, NET_F.GUEST_CSUM), tapOffloads(negotiated), flags, gsoType);
}

/** rxHeaderAllowed on (GUEST_CSUM negotiated, tapOffloads(negotiated)). */
export function rxHeaderAllowedOff(guestCsum: boolean, off: number, flags: number, gsoType: number): boolean {
  if (flags & HDR_F.NEEDS_CSUM && !guestCsum) return false;
  const type = gsoType & ~GSO.ECN;
  if (type === GSO.NONE) return true;
  if (gsoType & GSO.ECN && !(off & TAP_OFF.TSO_ECN)) return false;
  return type === GSO.TCPV4 ? (off & TAP_OFF.TSO4) !== 0 : type === GSO.TCPV6 ? (off & TAP_OFF.TSO6) !== 0 : type === GSO.UDP ? (off & TAP_OFF.UFO) !== 0 : false;
}

// -------------------------------------------------------------------------------------------------
// MAC addresses

/** bhyve's OUI for generated addresses. */
export const BHYVE_OUI = [0x58, 0x9c, 0xfc] as const;

/**
 * bhyve's stable MAC: the OUI, then the first three bytes of the MD5 of "<slot>-<function>-<vm name>", so
 * a VM keeps its address across runs and two NICs (or two VMs) differ.
 */
export function generateMac(vmName: string, slot: number, fn: number): number[] {
  const d = createHash("md5").update(`${slot}-${fn}-${vmName}`).digest();
  return [...BHYVE_OUI, d[0]!, d[1]!, d[2]!];
}

/** "xx:xx:xx:xx:xx:xx" → bytes, or an error message (multicast and all-zero addresses refused). */
export function parseMac(s: string): number[] | string {
  if (!/^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$/.test(s)) return `expected a MAC address like 58:9c:fc:00:00:01, got "${s}"`;
  const b = s.split(":").map((x) => parseInt(x, 16));
  if (b[0]! & 1) return `expected a unicast MAC address (the first byte's low bit clear), got ${s}`;
  if (b.every((x) => x === 0)) return "expected a MAC address other than 00:00:00:00:00:00";
  return b;
}

export const formatMac = (b: readonly number[]): string => b.map((x) => x.toString(16).padStart(2, "0")).join(":");
