/**
 * A pool of block Workers per disk (bhyve runs 8 blockif threads per adapter): requests that the I/O
 * Worker popped from the virtqueues run on the pool in parallel, so one slow disk or a deep queue does
 * not serialise behind a single thread and does not stall the serial ports and timers on the I/O Worker.
 *
 * Everything is shared memory (one SharedArrayBuffer per disk, made on the main thread in prepare and
 * handed to every thread inside `Prepared`) plus one eventfd for completions:
 *
 *   ctrl   Int32[CTRL_SLOTS]   SUB_HEAD (next to take), SUB_TAIL (next to fill; the futex the pool
 *                              waits on), STOP, IN_FLIGHT (slots not free), EPOCH (bumped by a device
 *                              reset: requests submitted before it complete into nothing), WAITERS
 *                              (Workers asleep on SUB_TAIL: no futex wake when 0), SIGNALLED (the
 *                              completion eventfd was written and not yet reaped: one write per batch)
 *   sub    Int32[slots]        submission ring of slot numbers (single producer, many consumers)
 *   meta   Int32[slots * META] per slot: STATE (FREE/SUBMITTED/TAKEN/DONE), QUEUE, HEAD, NREAD, NWRITE,
 *                              USED, TYPE, STATUS, ERROR (1: the executor reported an error), EPOCH
 *   segs   Float64[slots * maxSegs * 2]  the chain's readable then writable segments (gpa, len)
 *
 * Producer (the I/O Worker, under the device lock): `acquire()` a FREE slot, fill it, `submit()`:
 * publish its number at SUB_TAIL and Atomics.notify one waiter. Consumers (the pool Workers): take a slot
 * by compare-and-swap on SUB_HEAD, run it, write USED/STATUS, set STATE = DONE, signal the eventfd.
 * The I/O Worker wakes on the eventfd and `reap()`s every DONE slot (completion order does not matter in
 * virtio-blk), returning it to FREE. A chain with more segments than a slot holds runs inline on the
 * I/O Worker instead (Linux never sends one: seg_max = queue size − 2 fits).
 *
 * The slot count bounds the requests in flight per disk (like bhyve's BLOCKIF_MAXREQ); chains beyond it
 * stay on the available ring until a slot frees up.
 */

export const SLOT = { FREE: 0, SUBMITTED: 1, TAKEN: 2, DONE: 3 } as const;
const C = { SUB_HEAD: 0, SUB_TAIL: 1, STOP: 2, IN_FLIGHT: 3, EPOCH: 4, WAITERS: 5, SIGNALLED: 6 } as const;
const CTRL_SLOTS = 7;
/** Int32 fields of one slot's meta record. */
export const META = { STATE: 0, QUEUE: 1, HEAD: 2, NREAD: 3, NWRITE: 4, USED: 5, TYPE: 6, STATUS: 7, ERROR: 8, EPOCH: 9, SIZE: 10 } as const;

/** What prepare() makes per pooled disk: plain data plus a shared buffer (structured-clone safe). */
export interface BlockPoolInfo {
  /** pool Workers to start */
  threads: number;
  slots: number;
  maxSegs: number;
  /** completion eventfd (process-wide number) */
  fd: number;
  buf: SharedArrayBuffer;
}

export const DEFAULT_POOL_SLOTS = 64;
export const DEFAULT_POOL_SEGS = 260;

export function poolBytes(slots: number, maxSegs: number): number {
  return 4 * (CTRL_SLOTS + slots + slots * META.SIZE) + 8 * slots * maxSegs * 2 + 8; // +8: Float64 alignment
}

export function makePoolInfo(threads: number, fd: number, slots = DEFAULT_POOL_SLOTS, maxSegs = DEFAULT_POOL_SEGS): BlockPoolInfo {
  if (!(threads >= 1 && slots >= 1 && maxSegs >= 2)) throw new Error(`block pool: bad shape ${threads}/${slots}/${maxSegs}`);
  return { threads, slots, maxSegs, fd, buf: new SharedArrayBuffer(poolBytes(slots, maxSegs)) };
}

export interface PoolSeg { gpa: number; len: number }

/** A request as the pool sees it. */
export interface PoolRequest {
  queue: number;
  head: number;
  readable: PoolSeg[];
  writable: PoolSeg[];
}

/** Views over one pool's shared buffer (one per thread). */
export class BlockPool {
  readonly slots: number;
  readonly maxSegs: number;
  readonly fd: number;
  private readonly ctrl: Int32Array;
  private readonly sub: Int32Array;
  private readonly meta: Int32Array;
  private readonly segs: Float64Array;
  /** producer side: a free-slot hint */
  private nextFree = 0;

  constructor(info: BlockPoolInfo) {
    this.slots = info.slots;
    this.maxSegs = info.maxSegs;
    this.fd = info.fd;
    let o = 0;
    this.ctrl = new Int32Array(info.buf, o, CTRL_SLOTS); o += 4 * CTRL_SLOTS;
    this.sub = new Int32Array(info.buf, o, info.slots); o += 4 * info.slots;
    this.meta = new Int32Array(info.buf, o, info.slots * META.SIZE); o += 4 * info.slots * META.SIZE;
    o = Math.ceil(o / 8) * 8;
    this.segs = new Float64Array(info.buf, o, info.slots * info.maxSegs * 2);
  }

  // --- producer (I/O Worker, device lock held) -------------------------------------------------

  /** Requests submitted and not yet reaped. */
  inFlight(): number { return Atomics.load(this.ctrl, C.IN_FLIGHT); }
  full(): boolean { return this.inFlight() >= this.slots; }
  fits(r: { readable: readonly unknown[]; writable: readonly unknown[] }): boolean {
    return r.readable.length + r.writable.length <= this.maxSegs;
  }

  /** Queue a request on a free slot; false if none is free or the chain does not fit. */
  submit(r: PoolRequest): boolean {
    if (this.full() || !this.fits(r)) return false;
    let slot = -1;
    for (let i = 0; i < this.slots; i++) {
      const s = (this.nextFree + i) % this.slots;
      if (Atomics.load(this.meta, s * META.SIZE + META.STATE) === SLOT.FREE) { slot = s; break; }
    }
    if (slot < 0) return false;
    this.nextFree = (slot + 1) % this.slots;
    const m = slot * META.SIZE, g = slot * this.maxSegs * 2;
    this.meta[m + META.QUEUE] = r.queue;
    this.meta[m + META.HEAD] = r.head;
    this.meta[m + META.NREAD] = r.readable.length;
    this.meta[m + META.NWRITE] = r.writable.length;
    this.meta[m + META.USED] = 0;
    this.meta[m + META.ERROR] = 0;
    this.meta[m + META.EPOCH] = Atomics.load(this.ctrl, C.EPOCH);
    let k = g;
    for (const s of r.readable) { this.segs[k++] = s.gpa; this.segs[k++] = s.len; }
    for (const s of r.writable) { this.segs[k++] = s.gpa; this.segs[k++] = s.len; }
    Atomics.store(this.meta, m + META.STATE, SLOT.SUBMITTED);
    Atomics.add(this.ctrl, C.IN_FLIGHT, 1);
    const tail = Atomics.load(this.ctrl, C.SUB_TAIL);
    Atomics.store(this.sub, tail % this.slots, slot);
    Atomics.store(this.ctrl, C.SUB_TAIL, tail + 1);
    if (Atomics.load(this.ctrl, C.WAITERS) > 0) Atomics.notify(this.ctrl, C.SUB_TAIL, 1);
    return true;
  }

  /**
   * Every finished request (slot freed), in slot order; requests submitted before the last `newEpoch()`
   * are freed without a callback (the queues they came from were reset).
   */
  reap(done: (queue: number, head: number, used: number) => void): number {
    let n = 0;
    Atomics.store(this.ctrl, C.SIGNALLED, 0); // completions from now on signal again
    const epoch = Atomics.load(this.ctrl, C.EPOCH);
    for (let s = 0; s < this.slots; s++) {
      const m = s * META.SIZE;
      if (Atomics.load(this.meta, m + META.STATE) !== SLOT.DONE) continue;
      const q = this.meta[m + META.QUEUE]!, head = this.meta[m + META.HEAD]!, used = this.meta[m + META.USED]!;
      const stale = this.meta[m + META.EPOCH] !== epoch;
      Atomics.store(this.meta, m + META.STATE, SLOT.FREE);
      Atomics.sub(this.ctrl, C.IN_FLIGHT, 1);
      if (stale) continue;
      n++;
      done(q, head, used);
    }
    return n;
  }

  /** Device reset (any thread, device lock held): completions of earlier requests are dropped. */
  newEpoch(): void { Atomics.add(this.ctrl, C.EPOCH, 1); }

  /** Ask every pool Worker to leave (they finish the request in hand first). */
  stop(): void {
    Atomics.store(this.ctrl, C.STOP, 1);
    Atomics.notify(this.ctrl, C.SUB_TAIL);
  }

  // --- consumers (pool Workers) ------------------------------------------------------------------

  stopping(): boolean { return Atomics.load(this.ctrl, C.STOP) !== 0; }

  /**
   * The next submitted slot, waiting up to `waitMs` for one; -1 if none (or stopping). Many Workers
   * call this at once: the slot goes to whoever wins the compare-and-swap on SUB_HEAD.
   */
  take(waitMs = 1000): number {
    for (;;) {
      if (this.stopping()) return -1;
      const head = Atomics.load(this.ctrl, C.SUB_HEAD);
      const tail = Atomics.load(this.ctrl, C.SUB_TAIL);
      if (head === tail) {
        Atomics.add(this.ctrl, C.WAITERS, 1);
        const r = Atomics.wait(this.ctrl, C.SUB_TAIL, tail, waitMs);
        Atomics.sub(this.ctrl, C.WAITERS, 1);
        if (r === "timed-out") return -1;
        continue;
      }
      const slot = Atomics.load(this.sub, head % this.slots);
      if (Atomics.compareExchange(this.ctrl, C.SUB_HEAD, head, head + 1) !== head) continue;
      Atomics.store(this.meta, slot * META.SIZE + META.STATE, SLOT.TAKEN);
      return slot;
    }
  }

  /** The request in a taken slot. */
  request(slot: number): PoolRequest {
    const m = slot * META.SIZE, g = slot * this.maxSegs * 2;
    const nr = this.meta[m + META.NREAD]!, nw = this.meta[m + META.NWRITE]!;
    const seg = (i: number): PoolSeg => ({ gpa: this.segs[g + 2 * i]!, len: this.segs[g + 2 * i + 1]! });
    return {
      queue: this.meta[m + META.QUEUE]!, head: this.meta[m + META.HEAD]!,
      readable: Array.from({ length: nr }, (_, i) => seg(i)),
      writable: Array.from({ length: nw }, (_, i) => seg(nr + i)),
    };
  }

  /**
   * Finish a taken slot. True when the caller must signal the completion eventfd (the first completion
   * since the I/O Worker last reaped; later ones ride on the same wake-up).
   */
  complete(slot: number, used: number, type: number, status: number, error: boolean): boolean {
    const m = slot * META.SIZE;
    this.meta[m + META.USED] = used;
    this.meta[m + META.TYPE] = type;
    this.meta[m + META.STATUS] = status;
    this.meta[m + META.ERROR] = error ? 1 : 0;
    Atomics.store(this.meta, m + META.STATE, SLOT.DONE);
    return Atomics.exchange(this.ctrl, C.SIGNALLED, 1) === 0;
  }
}
