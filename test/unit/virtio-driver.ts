/**
 * A fake virtio driver for unit tests: lays out a split virtqueue in (fake) guest memory exactly as a
 * guest driver would (descriptor table, available ring with used_event, used ring with avail_event),
 * hands out descriptor chains (direct or through an indirect table), publishes them, reads the used ring
 * back, and follows the event-index rules from the driver side. Also raw pokes for building broken
 * queues.
 */
import type { GuestMemory } from "../../src/mem/guest-memory.ts";
import { VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE } from "../../src/virtio/queue.ts";

export interface Buf {
  len: number;
  write?: boolean;
  /** contents for a readable buffer */
  data?: Uint8Array;
  /** explicit guest address (default: allocated from the driver's buffer area) */
  addr?: number;
}

export interface DriverLayout {
  size: number;
  desc: number;
  avail: number;
  used: number;
}

/** Layout a modern driver might pick: desc, avail right after, used 4-aligned after that. */
export function modernLayout(base: number, size: number): DriverLayout {
  const desc = base;
  const avail = desc + 16 * size;
  const used = Math.ceil((avail + 6 + 2 * size) / 4) * 4;
  return { size, desc, avail, used };
}

/** The legacy layout for a queue PFN (4096-byte alignment of the used ring). */
export function legacyLayout(pfn: number, size: number): DriverLayout {
  const desc = pfn * 4096;
  const avail = desc + 16 * size;
  const used = Math.ceil((avail + 6 + 2 * size) / 4096) * 4096;
  return { size, desc, avail, used };
}

export class FakeDriver {
  readonly size: number;
  readonly desc: number;
  readonly avail: number;
  readonly used: number;
  private free: number[] = [];
  private chains = new Map<number, number[]>();
  /** driver's avail idx (free-running), published or not */
  private availNext = 0;
  private lastUsed = 0;
  private heap: number;
  private readonly heapEnd: number;

  constructor(readonly mem: GuestMemory, layout: DriverLayout, heap: { base: number; size: number }, readonly eventIdx = false) {
    this.size = layout.size; this.desc = layout.desc; this.avail = layout.avail; this.used = layout.used;
    this.heap = heap.base;
    this.heapEnd = heap.base + heap.size;
    mem.fill(this.desc, 16 * this.size);
    mem.fill(this.avail, 6 + 2 * this.size);
    mem.fill(this.used, 6 + 8 * this.size);
    for (let i = 0; i < this.size; i++) this.free.push(i);
  }

  /** Allocate guest bytes from the buffer area. */
  alloc(len: number, align = 16): number {
    const a = Math.ceil(this.heap / align) * align;
    if (a + len > this.heapEnd) throw new Error("fake driver: buffer area exhausted");
    this.heap = a + len;
    return a;
  }

  writeDesc(table: number, i: number, addr: number | bigint, len: number, flags: number, next: number): void {
    const d = table + 16 * i;
    this.mem.write64(d, BigInt(addr));
    this.mem.write32(d + 8, len >>> 0);
    this.mem.write16(d + 12, flags);
    this.mem.write16(d + 14, next);
  }

  private place(b: Buf): number {
    const a = b.addr ?? this.alloc(Math.max(1, b.len));
    if (b.data) this.mem.writeBytes(a, b.data);
    return a;
  }

  /**
   * Build a chain and put its head in the available ring (not yet visible: call publish()). With
   * `indirect`, one main-table descriptor points at an indirect table holding the buffers.
   * Returns the head index and the buffers' addresses.
   */
  add(bufs: Buf[], opts: { indirect?: boolean } = {}): { head: number; addrs: number[] } {
    const addrs = bufs.map((b) => this.place(b));
    let head: number;
    if (opts.indirect) {
      const i = this.free.shift();
      if (i === undefined) throw new Error("fake driver: no free descriptors");
      const table = this.alloc(16 * bufs.length, 16);
      bufs.forEach((b, k) => this.writeDesc(table, k, addrs[k]!, b.len, (b.write ? VIRTQ_DESC_F_WRITE : 0) | (k + 1 < bufs.length ? VIRTQ_DESC_F_NEXT : 0), k + 1 < bufs.length ? k + 1 : 0));
      this.writeDesc(this.desc, i, table, 16 * bufs.length, VIRTQ_DESC_F_INDIRECT, 0);
      this.chains.set(i, [i]);
      head = i;
    } else {
      if (this.free.length < bufs.length) throw new Error("fake driver: no free descriptors");
      const ids = this.free.splice(0, bufs.length);
      bufs.forEach((b, k) => this.writeDesc(this.desc, ids[k]!, addrs[k]!, b.len, (b.write ? VIRTQ_DESC_F_WRITE : 0) | (k + 1 < bufs.length ? VIRTQ_DESC_F_NEXT : 0), ids[k + 1] ?? 0));
      this.chains.set(ids[0]!, ids);
      head = ids[0]!;
    }
    this.pushHead(head);
    return { head, addrs };
  }

  /** Put a raw head index in the next avail slot (for hand-made broken chains). */
  pushHead(head: number): void {
    this.mem.write16(this.avail + 4 + 2 * (this.availNext % this.size), head);
    this.availNext = (this.availNext + 1) & 0xffff;
  }

  /**
   * Make everything added visible (avail->idx). Returns whether the device asked to be notified
   * (VIRTQ_USED_F_NO_NOTIFY, or avail_event with event idx, per §2.7.10).
   */
  publish(): boolean {
    const old = this.mem.read16(this.avail + 2);
    this.mem.write16(this.avail + 2, this.availNext);
    const now = this.availNext;
    if (!this.eventIdx) return (this.mem.read16(this.used) & 1) === 0;
    const ev = this.availEvent();
    return ((now - ev - 1) & 0xffff) < ((now - old) & 0xffff);
  }

  /** Force avail->idx (broken drivers). */
  setAvailIdx(v: number): void { this.mem.write16(this.avail + 2, v & 0xffff); this.availNext = v & 0xffff; }
  /** Start the free-running indices somewhere else (wrap-around tests): call before anything is used. */
  startAt(idx: number): void {
    this.availNext = idx & 0xffff;
    this.lastUsed = idx & 0xffff;
    this.mem.write16(this.avail + 2, idx & 0xffff);
  }
  setAvailFlags(v: number): void { this.mem.write16(this.avail, v); }
  setUsedEvent(v: number): void { this.mem.write16(this.avail + 4 + 2 * this.size, v & 0xffff); }

  usedIdx(): number { return this.mem.read16(this.used + 2); }
  usedFlags(): number { return this.mem.read16(this.used); }
  availEvent(): number { return this.mem.read16(this.used + 4 + 8 * this.size); }
  usedElem(i: number): { id: number; len: number } {
    const e = this.used + 4 + 8 * (i % this.size);
    return { id: this.mem.read32(e), len: this.mem.read32(e + 4) };
  }

  /** Used entries since the last call; their descriptors go back on the free list. */
  collect(): { id: number; len: number }[] {
    const out: { id: number; len: number }[] = [];
    const end = this.usedIdx();
    while (this.lastUsed !== end) {
      const e = this.usedElem(this.lastUsed);
      out.push(e);
      const ids = this.chains.get(e.id);
      if (ids) { this.free.push(...ids); this.chains.delete(e.id); }
      this.lastUsed = (this.lastUsed + 1) & 0xffff;
    }
    return out;
  }
}
