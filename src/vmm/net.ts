/**
 * vmm/net — host network devices for virtio-net and e1000 backends (ffi/net.c). Every call returns a
 * negative errno on failure and never throws: the callers (src/net/, the device models on the I/O Worker)
 * decide what an error means.
 */
import { shim, cstr } from "./ffi.ts";

/** tsb_tap_open flags (ffi/net.h TSB_TAP_*). */
export const TAP_VNET_HDR = 1, TAP_NO_CREATE = 2;
/** Offload bits (TSB_TAP_OFF_*): what the tap may hand us. */
export const TAP_OFF = { CSUM: 1, TSO4: 2, TSO6: 4, TSO_ECN: 8, UFO: 16 } as const;

export interface TapOpened {
  fd: number;
  /** the interface's name (the kernel's choice for a "tap%d" pattern) */
  name: string;
  /** the interface did not exist: opening created it (it goes away with the last fd) */
  created: boolean;
  ifindex: number;
  /** the host interface's MTU when opened (negative errno if unknown) */
  mtu: number;
}

export const netHost = {
  /** Open (create or attach) a tap interface, non-blocking. -> the tap, or -errno. */
  tapOpen(name: string, flags: number): TapOpened | number {
    const actual = new Uint8Array(16), info = new Int32Array(4);
    const fd = shim().tsb_tap_open(cstr(name), flags, actual, actual.length, info);
    if (fd < 0) return fd;
    const n = actual.indexOf(0);
    return { fd, name: new TextDecoder().decode(actual.subarray(0, n < 0 ? actual.length : n)), created: info[0] === 1, ifindex: info[1]!, mtu: info[2]! };
  },
  /** Bytes of virtio-net header in front of each frame (10 or 12). 0 or -errno. */
  tapSetVnetHdrSize(fd: number, size: number): number { return shim().tsb_tap_set_vnet_hdr_sz(fd, size); },
  /** TAP_OFF bits the reader takes. 0 or -errno. */
  tapSetOffload(fd: number, offloads: number): number { return shim().tsb_tap_set_offload(fd, offloads); },
  /** Interface up (and its MTU when mtu > 0), in the caller's network namespace. 0 or -errno. */
  ifUp(name: string, mtu = 0): number { return shim().tsb_net_if_up(cstr(name), mtu); },
  /** Plain readv: iov = (host pointer, length) pairs. -> bytes or -errno. (A tap cuts long frames silently.) */
  readv(fd: number, iov: BigUint64Array): number { return shim().tsb_readv(fd, iov, iov.length / 2) as number; },
  /** One frame in, at most 1023 pairs. -> its length, or -EMSGSIZE when it was longer than the buffers (lost), or -errno. */
  readFrame(fd: number, iov: BigUint64Array): number { return shim().tsb_readv_frame(fd, iov, iov.length / 2) as number; },
  /** One frame out. -> bytes or -errno (-EAGAIN: no room now). */
  writev(fd: number, iov: BigUint64Array): number { return shim().tsb_writev(fd, iov, iov.length / 2) as number; },
};
