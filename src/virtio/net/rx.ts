/**
 * virtio-net receive path (virtio 1.2 §5.1.6.3-4): frames from the backend into the guest's receiveq,
 * read straight into guest RAM.
 *
 * With VIRTIO_NET_F_MRG_RXBUF, chains are gathered until they hold the largest frame the guest can be
 * sent (`rxFrameMax`: 65550 + header with GUEST_TSO/UFO, else MTU + Ethernet + VLAN + header); one readv
 * then fills them in order; the chains the frame used are returned (their used lengths add up to the
 * frame, num_buffers in the first one's header says how many) and the rest stay gathered for the next
 * frame. Without it, each frame goes to one chain (num_buffers = 1 in a 12-byte header, §5.1.6.4).
 *
 * The gathered chains (the "pool": heads, byte counts, and their guest and host iovecs) are kept in the
 * device's shared state between runs, so a small frame costs one pop and one readv rather than a
 * re-gather of a 64 KiB pool; a device reset empties the pool (the queue forgets those chains too).
 * Holding popped buffers is ordinary device behaviour: the driver sees them as in use.
 *
 * No silent loss: when the guest has not posted room for a largest frame, nothing is read — frames wait
 * in the backend's queue (the kernel's tap queue: back-pressure to the host stack) until the guest posts
 * buffers and notifies (notifications are re-enabled before waiting). The exception is a ring that cannot
 * ever hold a largest frame (every slot gathered, or the 1024-iovec limit reached): then frames are read
 * and one that does not fit is dropped. Every frame read and not delivered is counted (rxDropped): cut
 * short by the buffers (the backend reads with a spare byte behind them and reports EMSGSIZE: a tap cuts
 * frames silently), a header with an offload the guest did not accept, a runt. Chains that cannot hold a frame at all (device-readable
 * descriptors, room for less than a header) go back with length 0 and are counted (rxErrors).
 */
import type { GuestMemory } from "../../mem/guest-memory.ts";
import { segmentIovecs, type Segment, type Virtqueue } from "../queue.ts";
import { bit, ETH_HLEN, MAX_IOV, NET_F, NET_HDR, netHdrLen, rxFrameMax, rxHeaderAllowedOff, tapOffloads } from "./device.ts";
import { EAGAIN, EMSGSIZE, leadingBytes, logEvery, TRANSIENT, writeLe16, type FrameIo, type NetCounters } from "./frames.ts";

/** iovecs one read may use (the backend adds one spare entry to see a frame that did not fit). */
const RX_MAX_IOV = MAX_IOV - 1;

/** Shared-state fields of the receive pool (spread into the device's layout). */
export const RX_POOL_FIELDS = {
  /** chains and iovec entries held */
  rxPoolChains: "u16",
  rxPoolIov: "u16",
  rxPoolHead: { type: "u16", count: MAX_IOV },
  /** per chain: iovec entries, writable bytes */
  rxPoolIovN: { type: "u16", count: MAX_IOV },
  rxPoolBytes: { type: "u32", count: MAX_IOV },
  /** per iovec entry: guest address */
  rxIovGpa: { type: "f64", count: MAX_IOV },
  /** the iovecs as the shim takes them, (host address, length) u64 pairs: raw bytes (8-byte aligned), seen
   *  through integer views, handed to readv as they are */
  rxIov: { type: "f64", count: 2 * MAX_IOV },
} as const;

export interface RxPool {
  rxPoolChains: number; rxPoolIov: number;
  rxPoolHead: Uint16Array; rxPoolIovN: Uint16Array; rxPoolBytes: Uint32Array;
  rxIovGpa: Float64Array; rxIov: Float64Array;
}

/** Integer views of a pool's raw iovec bytes (made once per thread). */
const views = new WeakMap<Float64Array, { u32: Uint32Array; u64: BigUint64Array }>();
function iovViews(p: RxPool): { u32: Uint32Array; u64: BigUint64Array } {
  let v = views.get(p.rxIov);
  if (!v) {
    const a = p.rxIov;
    v = { u32: new Uint32Array(a.buffer, a.byteOffset, a.length * 2), u64: new BigUint64Array(a.buffer, a.byteOffset, a.length) };
    views.set(a, v);
  }
  return v;
}

/** Forget the gathered chains (device reset: the queue forgets them too). */
export function clearRxPool(p: RxPool): void { p.rxPoolChains = p.rxPoolIov = 0; }

export interface RxInput {
  vq: Virtqueue;
  mem: GuestMemory;
  io: FrameIo;
  negotiated: bigint;
  mtu?: number;
  counters: NetCounters;
  pool: RxPool;
  log?: (msg: string) => void;
}

/**
 * drained: the backend has nothing more (buffers remain: watch it); starved: no room for a frame (wait
 * for the guest's notification); budget: stopped after `budget` frames; failed: the backend returned a
 * fatal error (errno).
 */
export type RxOutcome = { kind: "drained" | "starved" | "budget"; frames: number } | { kind: "failed"; frames: number; errno: number };

/** Add a popped chain to the pool; false (nothing added) when its iovecs do not fit. */
function poolAdd(p: RxPool, mem: GuestMemory, head: number, segs: readonly Segment[], bytes: number): boolean {
  const iov = segmentIovecs(mem, segs);
  const n = iov.length / 2;
  if (p.rxPoolIov + n > RX_MAX_IOV || p.rxPoolChains >= RX_MAX_IOV) return false;
  const base = p.rxPoolIov, { u64 } = iovViews(p);
  u64.set(iov, 2 * base);
  let at = base;
  for (const s of segs) {
    // segmentIovecs split s where host mappings meet: walk its pieces with the same cuts
    let gpa = s.gpa, left = s.len;
    while (left > 0) {
      const len = Number(iov[2 * (at - base) + 1]!);
      p.rxIovGpa[at] = gpa;
      gpa += len; left -= len; at++;
    }
  }
  const c = p.rxPoolChains;
  p.rxPoolHead[c] = head;
  p.rxPoolIovN[c] = n;
  p.rxPoolBytes[c] = bytes;
  p.rxPoolChains = c + 1;
  p.rxPoolIov = at;
  return true;
}

/** Drop the first k chains of the pool. */
function poolShift(p: RxPool, k: number): void {
  let m = 0;
  for (let i = 0; i < k; i++) m += p.rxPoolIovN[i]!;
  const nc = p.rxPoolChains, ni = p.rxPoolIov;
  p.rxPoolHead.copyWithin(0, k, nc); p.rxPoolIovN.copyWithin(0, k, nc); p.rxPoolBytes.copyWithin(0, k, nc);
  p.rxIovGpa.copyWithin(0, m, ni);
  iovViews(p).u32.copyWithin(0, 4 * m, 4 * ni);
  p.rxPoolChains = nc - k;
  p.rxPoolIov = ni - m;
}

/** The guest segments of pool chain 0. */
function firstChainSegs(p: RxPool): Segment[] {
  const out: Segment[] = [];
  const { u32 } = iovViews(p);
  for (let i = 0; i < p.rxPoolIovN[0]!; i++) out.push({ gpa: p.rxIovGpa[i]!, len: u32[4 * i + 2]! });
  return out;
}

/** Header length, mergeable buffers, room needed before a read: per negotiated features (cached per thread). */
interface RxParams { hdr: number; mrg: boolean; need: number; guestCsum: boolean; off: number }
const paramCache = new Map<string, RxParams>();
function rxParams(negotiated: bigint, mtu: number | undefined): RxParams {
  const key = `${negotiated}/${mtu}`;
  let v = paramCache.get(key);
  if (!v) {
    const hdr = netHdrLen(negotiated), mrg = (negotiated & bit(NET_F.MRG_RXBUF)) !== 0n;
    v = { hdr, mrg, need: mrg ? rxFrameMax(negotiated, mtu, hdr) : hdr, guestCsum: (negotiated & bit(NET_F.GUEST_CSUM)) !== 0n, off: tapOffloads(negotiated) };
    if (paramCache.size > 64) paramCache.clear();
    paramCache.set(key, v);
  }
  return v;
}

export function receiveFrames(inp: RxInput, budget: number): RxOutcome {
  const { vq, mem, io, pool: p, counters: cnt } = inp;
  const prm = rxParams(inp.negotiated, inp.mtu), { hdr, mrg, need } = prm;
  // a pool the queue no longer backs (queue reset behind our back): forget it
  if (p.rxPoolChains > ((vq.s.lastAvail - vq.s.usedIdx) & 0xffff)) clearRxPool(p);
  let room = 0, frames = 0;
  for (let i = 0; i < p.rxPoolChains; i++) room += p.rxPoolBytes[i]!;

  for (;;) {
    // gather room for the largest frame (one chain without mergeable buffers)
    let full = false;
    while (mrg ? room < need : p.rxPoolChains === 0) {
      const c = vq.pop();
      if (!c) {
        if (vq.broken) { clearRxPool(p); return { kind: "starved", frames }; }
        if (vq.enableNotify()) continue; // buffers arrived meanwhile
        break;
      }
      if (c.readable.length || c.writableBytes < hdr) {
        vq.push(c.head, 0);
        logEvery(++cnt.rxErrors, inp.log, () => `receive chain ${c.head} unusable (${c.readableBytes} device-readable bytes, ${c.writableBytes} writable; a header needs ${hdr})`);
        continue;
      }
      if (!poolAdd(p, mem, c.head, c.writable, c.writableBytes)) { vq.unpop(1); full = true; break; }
      room += c.writableBytes;
    }
    if (p.rxPoolChains === 0) return { kind: "starved", frames };
    if (mrg && room < need && !((full || p.rxPoolChains >= vq.size) && room >= hdr + ETH_HLEN)) return { kind: "starved", frames };

    const r = io.readv(iovViews(p).u64.subarray(0, 2 * p.rxPoolIov));
    if (r === -EAGAIN) return { kind: "drained", frames };
    if (r < 0) {
      if (!TRANSIENT.has(-r)) return { kind: "failed", frames, errno: -r };
      logEvery(++cnt.rxDropped, inp.log, () => r === -EMSGSIZE ? `receive: frame larger than the ${room} bytes of buffers; dropped` : `receive: backend read failed (errno ${-r}); frame lost`);
    } else if (r > room) {
      logEvery(++cnt.rxDropped, inp.log, () => `receive: ${r}-byte frame larger than the ${room} bytes of buffers; dropped`);
    } else if (r < hdr + ETH_HLEN) {
      logEvery(++cnt.rxDropped, inp.log, () => `receive: runt frame of ${r} bytes; dropped`);
    } else {
      const first = firstChainSegs(p);
      const h = leadingBytes(mem, first, 2);
      if (!rxHeaderAllowedOff(prm.guestCsum, prm.off, h[0]!, h[1]!)) {
        logEvery(++cnt.rxDropped, inp.log, () => `receive: frame with header flags ${h[0]} gso_type ${h[1]} the guest did not accept; dropped`);
      } else {
        // the chains the frame filled, in order
        let k = 0, left = r;
        while (left > 0) left -= p.rxPoolBytes[k++]!;
        if (hdr > NET_HDR.num_buffers) writeLe16(mem, first, NET_HDR.num_buffers, k);
        left = r;
        for (let i = 0; i < k; i++) {
          const bytes = p.rxPoolBytes[i]!, n = Math.min(left, bytes);
          vq.push(p.rxPoolHead[i]!, n);
          left -= n;
          room -= bytes;
        }
        poolShift(p, k);
        cnt.rxFrames++;
        cnt.rxBytes += r - hdr;
      }
    }
    if (++frames >= budget) return { kind: "budget", frames };
  }
}
