/**
 * What the receive and transmit paths share: the host side of frames (`FrameIo`: one readv / writev per
 * frame on host iovecs that point into guest RAM), the counters they keep (in the device's shared state),
 * and small helpers on guest segments (header bytes, num_buffers, rate-limited logs).
 */
import type { GuestMemory } from "../../mem/guest-memory.ts";
import { segmentViews, type Segment } from "../queue.ts";

/** The backend's frame I/O (a tap: src/net/tap.ts). Bytes or a negative errno; never throws. */
export interface FrameIo {
  /** One frame into the iovecs (at most MAX_IOV - 1): its length, or -EMSGSIZE (or a length larger than the
   *  iovecs) when it did not fit and was lost. */
  readv(iov: BigUint64Array): number;
  writev(iov: BigUint64Array): number;
}

/** Counters kept in shared state (f64 fields of the device's block). */
export interface NetCounters {
  rxFrames: number; rxBytes: number; rxDropped: number; rxErrors: number;
  txFrames: number; txBytes: number; txDropped: number; txErrors: number;
}

export const EAGAIN = 11, EIO = 5, EFAULT = 14, EINVAL = 22, ENOMEM = 12, EMSGSIZE = 90, ENOBUFS = 105;
/** errnos that lose one frame but leave the backend usable */
export const TRANSIENT = new Set([EFAULT, EINVAL, ENOMEM, EMSGSIZE, ENOBUFS]);

/** The first n bytes of segments (a copy; fewer if the segments are shorter). */
export function leadingBytes(mem: GuestMemory, segs: readonly Segment[], n: number): Uint8Array {
  const out = new Uint8Array(n);
  let o = 0;
  for (const v of segmentViews(mem, segs, n)) { out.set(v, o); o += v.length; }
  return o === n ? out : out.subarray(0, o);
}

/** Write a little-endian u16 at byte `offset` of the concatenated segments (bytes may straddle two). */
export function writeLe16(mem: GuestMemory, segs: readonly Segment[], offset: number, value: number): void {
  const bytes = [value & 0xff, (value >> 8) & 0xff];
  let at = 0, k = 0;
  for (const sg of segs) {
    while (k < 2 && offset + k < at + sg.len) {
      if (offset + k >= at) mem.write8(sg.gpa + (offset + k - at), bytes[k]!);
      else break;
      k++;
    }
    if (k === 2) return;
    at += sg.len;
  }
}

/** Rate-limited logging keyed on a counter's new value: the first 10, then every 1000th. */
export function logEvery(count: number, log: ((m: string) => void) | undefined, msg: () => string): void {
  if (log && (count <= 10 || count % 1000 === 0)) log(`${msg()}${count >= 10 ? ` (${count} so far; logging every 1000th)` : ""}`);
}
