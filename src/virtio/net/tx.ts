/**
 * virtio-net transmit path (virtio 1.2 §5.1.6.2): each transmitq chain is one frame — header then data,
 * all device-readable — written to the backend with one writev straight from guest RAM (the backend
 * takes the same header: a tap with IFF_VNET_HDR and the negotiated header size).
 *
 * A malformed chain (device-writable descriptors, shorter than header + Ethernet header, longer than
 * header + 65550 + VLAN, more than 1024 host iovecs, or a header with an offload that was not negotiated)
 * goes back with used length 0 and is counted (txErrors), as is a frame the backend refuses as invalid.
 * A frame the backend cannot take because its host interface is down is counted as dropped. When the
 * backend has no room (EAGAIN) the chain is given back (`unpop`) and the run stops: the caller waits for
 * the backend to be writable, with guest notifications off. Used lengths are 0 (nothing is written to a
 * transmit buffer).
 */
import type { GuestMemory } from "../../mem/guest-memory.ts";
import { segmentIovecs, type Chain, type Virtqueue } from "../queue.ts";
import { ETH_HLEN, lowFeatures, MAX_GSO_FRAME, MAX_IOV, NET_HDR, netHdrLen, txHeaderErrorLo, VLAN_HLEN } from "./device.ts";
import { EAGAIN, EINVAL, EIO, leadingBytes, logEvery, TRANSIENT, type FrameIo, type NetCounters } from "./frames.ts";

export interface TxInput {
  vq: Virtqueue;
  mem: GuestMemory;
  io: FrameIo;
  negotiated: bigint;
  counters: NetCounters;
  log?: (msg: string) => void;
  /** the backend is gone: return every chain unsent (counted as dropped) */
  discard?: boolean;
}

/** idle: queue empty (notifications on); blocked: backend full (notifications off); budget: more to do. */
export type TxOutcome = { kind: "idle" | "blocked" | "budget"; frames: number } | { kind: "failed"; frames: number; errno: number };

/** Why a transmit chain cannot be sent as it is, or undefined. `f`: lowFeatures(negotiated). */
export function txChainError(mem: GuestMemory, c: Chain, f: number, hdr: number): string | undefined {
  if (c.writable.length) return `${c.writable.length} device-writable descriptor(s)`;
  if (c.readableBytes < hdr + ETH_HLEN) return `${c.readableBytes} bytes: shorter than the header and an Ethernet header`;
  if (c.readableBytes > hdr + MAX_GSO_FRAME + VLAN_HLEN) return `${c.readableBytes} bytes: longer than the largest frame`;
  const h = leadingBytes(mem, c.readable, NET_HDR.csum_start);
  const why = txHeaderErrorLo(f, h[0]!, h[1]!, h[NET_HDR.gso_size]! | (h[NET_HDR.gso_size + 1]! << 8));
  return why ? `header: ${why}` : undefined;
}

export function transmitFrames(inp: TxInput, budget: number): TxOutcome {
  const { vq, mem, io, counters: cnt } = inp;
  const hdr = netHdrLen(inp.negotiated), f = lowFeatures(inp.negotiated);
  let frames = 0;
  vq.disableNotify();
  for (;;) {
    const c = vq.pop();
    if (!c) {
      if (vq.enableNotify()) continue;
      return { kind: "idle", frames };
    }
    if (inp.discard) {
      vq.push(c.head, 0);
      cnt.txDropped++;
    } else {
      let why = txChainError(mem, c, f, hdr);
      const iov = why ? undefined : segmentIovecs(mem, c.readable);
      if (iov && iov.length > 2 * MAX_IOV) why = `${iov.length / 2} host iovecs: more than ${MAX_IOV}`;
      if (why) {
        vq.push(c.head, 0);
        logEvery(++cnt.txErrors, inp.log, () => `transmit chain ${c.head} malformed: ${why}`);
      } else {
        const r = io.writev(iov!);
        if (r === -EAGAIN) { vq.unpop(1); return { kind: "blocked", frames }; }
        vq.push(c.head, 0);
        if (r >= 0) { cnt.txFrames++; cnt.txBytes += Math.max(0, r - hdr); }
        else if (r === -EINVAL) logEvery(++cnt.txErrors, inp.log, () => `transmit: the backend refused a ${c.readableBytes}-byte frame as invalid`);
        else if (r === -EIO || TRANSIENT.has(-r)) logEvery(++cnt.txDropped, inp.log, () => `transmit: frame dropped by the backend (errno ${-r}${r === -EIO ? ": host interface down" : ""})`);
        else { cnt.txDropped++; vq.enableNotify(); return { kind: "failed", frames, errno: -r }; }
      }
    }
    if (++frames >= budget) { vq.enableNotify(); return { kind: "budget", frames }; }
  }
}
