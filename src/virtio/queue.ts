/**
 * The split virtqueue (virtio 1.2 §2.7), one implementation for every virtio device. The device side:
 * take descriptor chains the driver made available (`pop`), hand them back through the used ring
 * (`push`), decide whether the driver wants an interrupt (`needsInterrupt`) and whether it should notify
 * us (`enableNotify` / `disableNotify`).
 *
 * Guests are hostile. Every guest address goes through GuestMemory; a queue never throws on guest data:
 * anything the spec forbids (a chain longer than the queue or looping, an index outside the table,
 * an indirect table inside an indirect table, a device-readable buffer after a device-writable one, a
 * buffer outside RAM, a chain over 2^32 - 1 bytes, the avail index running more than a queue ahead, a
 * misplaced or misaligned ring) puts the queue in the *broken* state and calls `onBroken`: the transport
 * then sets DEVICE_NEEDS_RESET. A broken queue pops and pushes nothing until the device is reset.
 *
 * State: the queue's configuration (size, ring addresses, ready) and the device's ring cursors live in a
 * shared state block (`virtqueueLayout`), so any thread may run the queue; the caller holds the device
 * lock around every call.
 *
 * Layout (§2.7.2): descriptor table 16·n bytes (16-byte aligned), available ring 6 + 2·n bytes (flags,
 * idx, ring[n], used_event; 2-byte aligned), used ring 6 + 8·n bytes (flags, idx, ring[n] of {id, len},
 * avail_event; 4-byte aligned).
 *
 * Memory ordering: guest RAM is not a SharedArrayBuffer, so Atomics cannot touch it; `fence()` runs a
 * locked read-modify-write on a private shared cell, which on x86 is a full barrier and which the JIT
 * does not move memory accesses across. We fence after reading avail->idx (before reading the ring and
 * descriptors), between writing a used element and publishing used->idx, and between publishing
 * used->idx (or avail_event) and reading the driver's suppression fields (the store→load case x86 does
 * reorder).
 */
import { defineLayout, type StateBlock } from "../devices/state.ts";
import { GuestMemoryError, type GuestMemory } from "../mem/guest-memory.ts";

export const VIRTQ_DESC_F_NEXT = 1;
export const VIRTQ_DESC_F_WRITE = 2;
export const VIRTQ_DESC_F_INDIRECT = 4;
export const VIRTQ_AVAIL_F_NO_INTERRUPT = 1;
export const VIRTQ_USED_F_NO_NOTIFY = 1;
/** largest split queue (the 16-bit ring index must tell full from empty) */
export const VIRTQ_MAX_SIZE = 32768;
/** the used ring's len is 32 bits: no chain may describe 2^32 bytes or more */
export const VIRTQ_MAX_CHAIN_BYTES = 0xffff_ffff;

export const virtqueueLayout = defineLayout("virtqueue", 1, {
  /** ring addresses, low and high halves as the driver wrote them */
  desc: { type: "u32", count: 2 },
  avail: { type: "u32", count: 2 },
  used: { type: "u32", count: 2 },
  size: "u16",
  /** MSI-X vector (the transport's; VIRTIO_MSI_NO_VECTOR when unmapped) */
  vector: "u16",
  /** next avail ring slot the device reads (free-running) */
  lastAvail: "u16",
  /** the device's copy of used->idx (free-running) */
  usedIdx: "u16",
  /** used->idx at the last interrupt decision */
  signalled: "u16",
  ready: "u8",
  broken: "u8",
  /** rings checked (placement, alignment) since enable */
  checked: "u8",
  signalledValid: "u8",
  /** negotiated: VIRTIO_F_EVENT_IDX, VIRTIO_F_INDIRECT_DESC */
  eventIdx: "u8",
  indirect: "u8",
  /** device wants available-buffer notifications (default on) */
  notifyOff: "u8",
});
export type VirtqueueState = StateBlock<typeof virtqueueLayout.spec>["s"];

/** A guest-physical buffer (the same shape as src/block/io.ts's Seg). */
export interface Segment { gpa: number; len: number }

/** A descriptor chain: device-readable then device-writable buffers, in order. */
export interface Chain {
  /** head descriptor index (what goes back in the used ring) */
  head: number;
  readable: Segment[];
  writable: Segment[];
  readableBytes: number;
  writableBytes: number;
}

export interface VirtqueueOptions {
  /** Called once when the queue breaks (device lock held). */
  onBroken?(queue: number, reason: string): void;
  /** Cap on a chain's total bytes (default and maximum 2^32 - 1). */
  maxChainBytes?: number;
  /** Cap on the descriptors of one chain, indirect ones included (default: queue size for direct,
   * table length for indirect; at most this). */
  maxChainDescriptors?: number;
}

export interface QueueConfig {
  size: number;
  desc: number;
  avail: number;
  used: number;
  eventIdx?: boolean;
  indirect?: boolean;
}

const fenceCell = new Int32Array(new SharedArrayBuffer(4));
/** Full memory barrier (see the module comment). */
export function fence(): void { Atomics.add(fenceCell, 0, 0); }

class Broken extends Error {}

const isPow2 = (n: number) => n > 0 && (n & (n - 1)) === 0;

/**
 * Check that [gpa, gpa+len) is RAM, possibly spanning regions that are contiguous. Returns false
 * instead of throwing.
 */
export function ramRange(mem: GuestMemory, gpa: number, len: number): boolean {
  if (!(Number.isSafeInteger(gpa) && Number.isSafeInteger(len) && gpa >= 0 && len >= 0)) return false;
  if (len === 0) return true;
  let done = 0;
  while (done < len) {
    const r = mem.lookup(gpa + done, 1);
    if (!r || r.kind !== "ram") return false;
    done += Math.min(len - done, r.size - (gpa + done - r.gpa));
  }
  return true;
}

export class Virtqueue {
  readonly s: VirtqueueState;
  constructor(
    readonly mem: GuestMemory,
    block: StateBlock<typeof virtqueueLayout.spec>,
    readonly index: number,
    /** largest size the device supports (power of two ≤ 32768) */
    readonly maxSize: number,
    private readonly opts: VirtqueueOptions = {},
  ) {
    if (!isPow2(maxSize) || maxSize > VIRTQ_MAX_SIZE) throw new Error(`virtqueue ${index}: size ${maxSize} is not a power of two ≤ ${VIRTQ_MAX_SIZE}`);
    this.s = block.s;
  }

  // ---------------------------------------------------------------------------------------------
  // configuration (transport side)

  /** Back to the reset state: not ready, size = max, addresses 0, cursors 0. */
  reset(vector = 0xffff): void {
    const s = this.s;
    s.desc[0] = s.desc[1] = s.avail[0] = s.avail[1] = s.used[0] = s.used[1] = 0;
    s.size = this.maxSize;
    s.vector = vector;
    s.lastAvail = s.usedIdx = s.signalled = 0;
    s.ready = s.broken = s.checked = s.signalledValid = s.eventIdx = s.indirect = s.notifyOff = 0;
  }

  /** Set everything at once (tests, legacy transport) and enable. */
  configure(c: QueueConfig): void {
    const s = this.s;
    this.reset(s.vector);
    s.size = c.size;
    setAddr(s.desc, c.desc); setAddr(s.avail, c.avail); setAddr(s.used, c.used);
    this.enable({ eventIdx: !!c.eventIdx, indirect: !!c.indirect });
  }

  /** Start using the rings as configured (queue_enable = 1). Cursors start at 0. */
  enable(f: { eventIdx: boolean; indirect: boolean }): void {
    const s = this.s;
    s.eventIdx = f.eventIdx ? 1 : 0;
    s.indirect = f.indirect ? 1 : 0;
    s.lastAvail = s.usedIdx = s.signalled = 0;
    s.checked = s.broken = s.notifyOff = 0;
    s.signalledValid = 1; // used idx starts at 0: the decisions are exact from the first one
    s.ready = 1;
  }

  get ready(): boolean { return this.s.ready === 1; }
  get broken(): boolean { return this.s.broken === 1; }
  get size(): number { return this.s.size; }
  get descAddr(): number { return getAddr(this.s.desc); }
  get availAddr(): number { return getAddr(this.s.avail); }
  get usedAddr(): number { return getAddr(this.s.used); }

  private fail(reason: string): never {
    throw new Broken(reason);
  }

  private markBroken(reason: string): void {
    if (this.s.broken) return;
    this.s.broken = 1;
    this.opts.onBroken?.(this.index, reason);
  }

  /** Run fn; guest errors (our Broken, GuestMemoryError) break the queue instead of escaping. */
  private guarded<T>(fn: () => T, dflt: T): T {
    try { return fn(); } catch (e) {
      if (e instanceof Broken) { this.markBroken(e.message); return dflt; }
      if (e instanceof GuestMemoryError) { this.markBroken(e.message); return dflt; }
      throw e;
    }
  }

  /** Rings placed in RAM, aligned, size sane. Once per enable. */
  private check(): void {
    const s = this.s, n = s.size;
    if (!isPow2(n) || n > this.maxSize) this.fail(`queue size ${n} invalid`);
    const d = this.descAddr, a = this.availAddr, u = this.usedAddr;
    if (d % 16 || a % 2 || u % 4) this.fail("ring misaligned");
    if (!ramRange(this.mem, d, 16 * n)) this.fail(`descriptor table 0x${d.toString(16)} outside RAM`);
    if (!ramRange(this.mem, a, 6 + 2 * n)) this.fail(`available ring 0x${a.toString(16)} outside RAM`);
    if (!ramRange(this.mem, u, 6 + 8 * n)) this.fail(`used ring 0x${u.toString(16)} outside RAM`);
    s.checked = 1;
  }

  private usable(): boolean {
    const s = this.s;
    if (!s.ready || s.broken) return false;
    if (!s.checked) return this.guarded(() => { this.check(); return true; }, false);
    return true;
  }

  // ---------------------------------------------------------------------------------------------
  // device side

  /** Number of chains the driver has made available and we have not popped (0 when broken). */
  pending(): number {
    if (!this.usable()) return 0;
    return this.guarded(() => {
      const n = (this.mem.read16(this.availAddr + 2) - this.s.lastAvail) & 0xffff;
      if (n > this.s.size) this.fail(`avail idx ${this.s.lastAvail + n} is ${n} ahead of the device (queue size ${this.s.size})`);
      return n;
    }, 0);
  }

  /** Take the next available chain, or undefined (none, not ready, or broken just now). */
  pop(): Chain | undefined {
    if (!this.usable()) return undefined;
    return this.guarded(() => {
      const s = this.s, mem = this.mem, n = s.size;
      const avail = this.availAddr;
      const idx = mem.read16(avail + 2);
      fence();
      const ahead = (idx - s.lastAvail) & 0xffff;
      if (ahead === 0) return undefined;
      if (ahead > n) this.fail(`avail idx ${idx} is ${ahead} ahead of the device (queue size ${n})`);
      const head = mem.read16(avail + 4 + 2 * (s.lastAvail % n));
      const chain = this.walk(head);
      s.lastAvail = (s.lastAvail + 1) & 0xffff;
      if (s.eventIdx && !s.notifyOff) mem.write16(this.usedAddr + 4 + 8 * n, s.lastAvail);
      return chain;
    }, undefined);
  }

  /**
   * Give back the last `n` chains popped and not pushed: the next pops take them again (re-read from
   * the ring and re-checked), e.g. receive buffers gathered for a frame that did not come. The driver's
   * notification point (avail_event) stays where the pops left it, so a driver adding buffers after
   * those still notifies us. Throws (a device bug, not guest data) when fewer than n are outstanding.
   */
  unpop(n: number): void {
    if (n === 0 || !this.usable()) return;
    const s = this.s;
    const outstanding = (s.lastAvail - s.usedIdx) & 0xffff;
    if (!(Number.isInteger(n) && n > 0 && n <= outstanding)) throw new Error(`virtqueue ${this.index}: unpop(${n}) with ${outstanding} chains outstanding`);
    s.lastAvail = (s.lastAvail - n) & 0xffff;
  }

  private walk(head: number): Chain {
    const s = this.s, mem = this.mem;
    const maxBytes = Math.min(this.opts.maxChainBytes ?? VIRTQ_MAX_CHAIN_BYTES, VIRTQ_MAX_CHAIN_BYTES);
    const maxDesc = this.opts.maxChainDescriptors ?? Infinity;
    const chain: Chain = { head, readable: [], writable: [], readableBytes: 0, writableBytes: 0 };
    let table = this.descAddr, tableLen = s.size, limit = Math.min(s.size, maxDesc);
    let indirect = false, sawWritable = false, count = 0, total = 0, idx = head;
    for (;;) {
      if (idx >= tableLen) this.fail(`descriptor index ${idx} outside the ${indirect ? "indirect " : ""}table (${tableLen} entries)`);
      if (++count > limit) this.fail(`descriptor chain from head ${head} longer than ${limit} (a loop?)`);
      // the descriptor, in place when it lies in one region (else a copy: an indirect table need not be
      // aligned, so a descriptor may straddle two contiguous regions)
      const da = table + 16 * idx;
      let r = mem.lookup(da, 16), dv: DataView, o: number;
      if (r) { dv = r.dv; o = da - r.gpa; } else { dv = new DataView(mem.readBytes(da, 16).buffer); o = 0; }
      const lo = dv.getUint32(o, true), hi = dv.getUint32(o + 4, true);
      const len = dv.getUint32(o + 8, true);
      const flags = dv.getUint16(o + 12, true);
      const next = dv.getUint16(o + 14, true);
      // the address as a Number when it is a safe integer (hi < 2^21), else undefined
      const a = hi < 0x200000 ? hi * 0x1_0000_0000 + lo : undefined;
      const hex = () => (BigInt(hi) << 32n | BigInt(lo)).toString(16);
      if (flags & VIRTQ_DESC_F_INDIRECT) {
        if (indirect) this.fail("indirect descriptor inside an indirect table");
        if (!s.indirect) this.fail("indirect descriptor without VIRTIO_F_INDIRECT_DESC");
        if (flags & VIRTQ_DESC_F_NEXT) this.fail("indirect descriptor with NEXT set");
        if (len === 0 || len % 16) this.fail(`indirect table length ${len} is not a non-zero multiple of 16`);
        if (a === undefined || !ramRange(mem, a, len)) this.fail(`indirect table 0x${hex()}+${len} outside RAM`);
        table = a; tableLen = len / 16; limit = Math.min(tableLen, maxDesc);
        indirect = true; count = 0; idx = 0;
        continue;
      }
      const writable = (flags & VIRTQ_DESC_F_WRITE) !== 0;
      if (!writable && sawWritable) this.fail("device-readable descriptor after a device-writable one");
      sawWritable ||= writable;
      total += len;
      if (total > maxBytes) this.fail(`descriptor chain from head ${head} longer than ${maxBytes} bytes`);
      if (len > 0) {
        // fast path: within the region that holds the descriptor's neighbours (usually all of RAM below 3 GiB)
        if (a === undefined || !((r = mem.lookup(a, len)) ? r.kind === "ram" : ramRange(mem, a, len))) this.fail(`buffer 0x${hex()}+${len} outside RAM`);
        if (writable) { chain.writable.push({ gpa: a, len }); chain.writableBytes += len; }
        else { chain.readable.push({ gpa: a, len }); chain.readableBytes += len; }
      }
      if (!(flags & VIRTQ_DESC_F_NEXT)) return chain;
      idx = next;
    }
  }

  /** Return a chain: `written` bytes were written to its writable buffers. */
  push(head: number, written: number): void {
    if (!this.usable()) return;
    this.guarded(() => {
      const s = this.s, mem = this.mem, n = s.size;
      if (!(head >= 0 && head < n)) throw new Error(`virtqueue ${this.index}: push of head ${head} outside the queue`);
      const used = this.usedAddr;
      const e = used + 4 + 8 * (s.usedIdx % n);
      mem.write32(e, head);
      mem.write32(e + 4, written >>> 0);
      fence();
      s.usedIdx = (s.usedIdx + 1) & 0xffff;
      mem.write16(used + 2, s.usedIdx);
    }, undefined);
  }

  /**
   * After pushes: does the driver want a used-buffer notification? (§2.7.7: flags bit 0 without
   * EVENT_IDX; used_event with it.) Records the decision point, so call once per batch.
   */
  needsInterrupt(): boolean {
    if (!this.usable()) return false;
    return this.guarded(() => {
      const s = this.s;
      fence();
      const now = s.usedIdx, old = s.signalled, valid = s.signalledValid;
      s.signalled = now;
      s.signalledValid = 1;
      if (valid && now === old) return false;
      if (!s.eventIdx) return (this.mem.read16(this.availAddr) & VIRTQ_AVAIL_F_NO_INTERRUPT) === 0;
      if (!valid) return true;
      const ev = this.mem.read16(this.availAddr + 4 + 2 * s.size);
      // did used->idx step past used_event in (old, now]?
      return ((now - ev - 1) & 0xffff) < ((now - old) & 0xffff);
    }, false);
  }

  /** Ask the driver not to notify us (while we are processing anyway). */
  disableNotify(): void {
    if (!this.usable()) return;
    this.guarded(() => {
      this.s.notifyOff = 1;
      if (!this.s.eventIdx) this.mem.write16(this.usedAddr, VIRTQ_USED_F_NO_NOTIFY);
    }, undefined);
  }

  /**
   * Ask for notifications again. Returns true if buffers arrived meanwhile (the caller must process
   * them: the driver may have skipped the notification).
   */
  enableNotify(): boolean {
    if (!this.usable()) return false;
    return this.guarded(() => {
      const s = this.s;
      s.notifyOff = 0;
      if (s.eventIdx) this.mem.write16(this.usedAddr + 4 + 8 * s.size, s.lastAvail);
      else this.mem.write16(this.usedAddr, 0);
      fence();
      return ((this.mem.read16(this.availAddr + 2) - s.lastAvail) & 0xffff) !== 0;
    }, false);
  }
}

function setAddr(cell: Uint32Array, a: number): void {
  cell[0] = a % 2 ** 32;
  cell[1] = Math.floor(a / 2 ** 32);
}
function getAddr(cell: Uint32Array): number { return cell[1]! * 2 ** 32 + cell[0]!; }

// -------------------------------------------------------------------------------------------------
// moving data in and out of chains

/** Live views of the guest bytes of `segs` (split where regions meet), at most `max` bytes in all. */
export function segmentViews(mem: GuestMemory, segs: readonly Segment[], max = Infinity): Uint8Array[] {
  const out: Uint8Array[] = [];
  let left = max;
  for (const sg of segs) {
    let done = 0;
    while (done < sg.len && left > 0) {
      const r = mem.find(sg.gpa + done, 1);
      const o = sg.gpa + done - r.gpa;
      const n = Math.min(sg.len - done, r.size - o, left);
      out.push(r.bytes.subarray(o, o + n));
      done += n;
      left -= n;
    }
    if (left <= 0) break;
  }
  return out;
}

/** Copy of the chain's readable bytes (at most `max`). */
export function readChain(mem: GuestMemory, chain: Chain, max = Infinity): Uint8Array {
  const views = segmentViews(mem, chain.readable, max);
  const out = new Uint8Array(views.reduce((a, v) => a + v.length, 0));
  let o = 0;
  for (const v of views) { out.set(v, o); o += v.length; }
  return out;
}

/** Copy `data` into the chain's writable buffers from byte `offset` on; returns bytes written. */
export function writeChain(mem: GuestMemory, chain: Chain, data: Uint8Array, offset = 0): number {
  let skip = offset, src = 0;
  for (const v of segmentViews(mem, chain.writable)) {
    if (src >= data.length) break;
    if (skip >= v.length) { skip -= v.length; continue; }
    const n = Math.min(v.length - skip, data.length - src);
    v.set(data.subarray(src, src + n), skip);
    src += n;
    skip = 0;
  }
  return src;
}

/**
 * Host iovecs (address, length pairs) for `segs`, for preadv/pwritev through the shim: split where
 * regions meet, at most `max` bytes. Needs real guest memory (fake memory has no host addresses).
 */
export function segmentIovecs(mem: GuestMemory, segs: readonly Segment[], max = Infinity): BigUint64Array {
  const pairs: number[] = [];
  let left = max;
  for (const sg of segs) {
    let done = 0;
    while (done < sg.len && left > 0) {
      const r = mem.find(sg.gpa + done, 1);
      const o = sg.gpa + done - r.gpa;
      const n = Math.min(sg.len - done, r.size - o, left);
      pairs.push(mem.hostAddr(sg.gpa + done, n), n);
      done += n;
      left -= n;
    }
    if (left <= 0) break;
  }
  return new BigUint64Array(pairs.map(BigInt));
}
