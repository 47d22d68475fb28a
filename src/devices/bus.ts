/**
 * Port-I/O and MMIO buses. Accesses to nothing read all-ones and ignore writes (or stop the VM under
 * x86.strictio). Wide accesses are split into 4-byte halves and unaligned/odd widths into bytes, so
 * device models only ever see 1, 2 or 4 bytes inside their range.
 *
 * Two kinds of devices:
 *
 * - fixed devices: `ranges` is read once at `register()`; overlaps between fixed devices are refused
 *   there (a configuration error).
 * - relocatable devices (`RelocatableDevice`: PCI functions, the PIIX4 PM block): `ranges` is a getter
 *   computed from the device's *shared* state, so every thread computes the same answer. Whoever changes
 *   a mapping-relevant register (on any thread) bumps a `MapGeneration`, one Int32 in the shared state
 *   arena. Every Bus (one per thread) compares the generation it last synced with the shared one on each
 *   access — one `Atomics.load` — and rebuilds its port index and MMIO table from all devices' current
 *   ranges when it changed.
 *
 * Guest-made overlaps never throw: a deterministic priority decides. Fixed devices come first, then
 * relocatable ones; within each group, the earlier registered device wins, and within one device the
 * earlier range. A lower-priority range keeps the addresses nobody above it claims (it is clipped, not
 * dropped), and an access that straddles two owners is split into bytes.
 *
 * An `exact` range (`IoRangeEx.exact`) claims only accesses of exactly its size at exactly its base — PCI
 * configuration mechanism #1's CONFIG_ADDRESS is a dword-only register at 0xCF8 while the reset
 * control byte 0xCF9 belongs to another device (PCI Local Bus 3.0 §3.2.2.3.2: a non-dword access to
 * 0xCF8 is a normal I/O access). Exact claims are checked before ordinary ranges at their base, and cost
 * the port fast path nothing: the port index marks their base with bit 15.
 */
import type { AccessSize, Device, IoRange, Space } from "./device.ts";
import { defineLayout, type StateArena } from "./state.ts";

export class BusError extends Error {}

/** An IoRange with bus options a device may add. */
export interface IoRangeEx extends IoRange {
  /** Only aligned accesses of exactly `size` bytes at `base` reach the device; others fall through. */
  readonly exact?: boolean;
}

/** The shared counter of mapping changes (one per state arena, shared by all relocatable devices). */
export class MapGeneration {
  constructor(readonly cell: Int32Array) {}
  get value(): number { return Atomics.load(this.cell, 0); }
  /** Call after changing a register that moves, enables or disables a range (under the device lock). */
  bump(): void { Atomics.add(this.cell, 0, 1); }
}

export const mapGenerationLayout = defineLayout("map-generation", 1, { gen: { type: "i32", count: 1 } });
const generations = new WeakMap<StateArena, MapGeneration>();

/**
 * The arena's MapGeneration, allocated from the arena on the first call in this thread. The device table
 * is the same in every thread, so the first call (and the block's offset) is too.
 */
export function sharedMapGeneration(arena: StateArena): MapGeneration {
  let g = generations.get(arena);
  if (!g) generations.set(arena, (g = new MapGeneration(arena.alloc(mapGenerationLayout).s.gen)));
  return g;
}

/** A device whose ranges follow its shared state; it bumps `mapGeneration` when they change. */
export interface RelocatableDevice extends Device {
  readonly mapGeneration: MapGeneration;
}

export function isRelocatable(d: Device): d is RelocatableDevice {
  return (d as Partial<RelocatableDevice>).mapGeneration instanceof MapGeneration;
}

/** One visible piece of a device range: [lo, hi) of the range [base, base + size). */
interface Mapping { base: number; size: number; lo: number; hi: number; dev: Device }

export interface UnassignedPolicy {
  /** Called for accesses that hit no device. Return true to stop the VM (strictio). */
  (space: Space, addr: number, size: number, write: boolean, value: number): void;
}

interface Registered { dev: Device; dynamic: boolean; fixed: readonly IoRangeEx[] }

const EXACT_FLAG = 0x8000;
const PORTS = 0x10000;

export class Bus {
  /** pio: one entry per port → index+1 into `pio` (0 = nothing); bit 15: an exact claim starts here. */
  private readonly portMap = new Uint16Array(PORTS);
  private pio: Mapping[] = [];
  private exactPio = new Map<number, Mapping>();
  /** mmio: non-overlapping pieces sorted by lo. */
  private mmio: Mapping[] = [];
  private lastMmio: Mapping | undefined;
  private readonly regs: Registered[] = [];
  /** The shared generation (a private cell until a relocatable device brings the arena's). */
  private gen: Int32Array = new Int32Array(1);
  private adopted: MapGeneration | undefined;
  private seen = -1;

  constructor(private readonly unassigned: UnassignedPolicy = () => {}) {}

  register(dev: Device): void {
    const dynamic = isRelocatable(dev);
    if (dynamic) {
      if (this.adopted && this.adopted !== dev.mapGeneration) throw new BusError(`${dev.name}: relocatable devices from two state arenas on one bus`);
      if (!this.adopted) { this.adopted = dev.mapGeneration; this.gen = dev.mapGeneration.cell; }
      this.regs.push({ dev, dynamic, fixed: [] });
    } else {
      const fixed = [...dev.ranges] as IoRangeEx[];
      for (const r of fixed) this.checkFixed(dev, r);
      this.regs.push({ dev, dynamic, fixed });
    }
    this.seen = -1;
  }

  private checkFixed(dev: Device, r: IoRangeEx): void {
    if (!(r.size > 0)) throw new BusError(`${dev.name}: empty ${r.space} range`);
    if (r.space === "pio" && (r.base < 0 || r.base + r.size > PORTS)) {
      throw new BusError(`${dev.name}: port range 0x${r.base.toString(16)}+${r.size} outside 0..0xffff`);
    }
    let clash: { at: number; name: string } | undefined;
    for (const o of this.regs) {
      if (o.dynamic) continue;
      for (const q of o.fixed as IoRangeEx[]) {
        if (q.space !== r.space || !!q.exact !== !!r.exact) continue;
        if (r.exact ? q.base !== r.base : !(r.base < q.base + q.size && q.base < r.base + r.size)) continue;
        const at = Math.max(r.base, q.base);
        if (!clash || at < clash.at) clash = { at, name: o.dev.name };
      }
    }
    if (!clash) return;
    if (r.space === "pio") throw new BusError(`${dev.name}: port 0x${clash.at.toString(16)} already used by ${clash.name}`);
    throw new BusError(`${dev.name}: MMIO 0x${r.base.toString(16)}+0x${r.size.toString(16)} overlaps ${clash.name}`);
  }

  /** Remove every range of a device. */
  unregister(dev: Device): void {
    const i = this.regs.findIndex((r) => r.dev === dev);
    if (i >= 0) this.regs.splice(i, 1);
    this.seen = -1;
  }

  /** Rebuild the port index and the MMIO table from every device's current ranges. */
  private sync(): void {
    // Read the generation first: a change racing with the rebuild bumps it again and we resync later.
    this.seen = Atomics.load(this.gen, 0);
    const ordered: [Device, IoRangeEx][] = [];
    for (const r of this.regs) if (!r.dynamic) for (const x of r.fixed) ordered.push([r.dev, x]);
    for (const r of this.regs) {
      if (!r.dynamic) continue;
      const lock = r.dev.lock;
      let ranges: readonly IoRangeEx[];
      if (lock) { lock.acquire(); try { ranges = [...r.dev.ranges]; } finally { lock.release(); } }
      else ranges = [...r.dev.ranges];
      for (const x of ranges) ordered.push([r.dev, x]);
    }
    const map = this.portMap;
    map.fill(0);
    const pio: Mapping[] = [];
    const exact = new Map<number, Mapping>();
    const mmio: Mapping[] = [];
    for (const [dev, r] of ordered) {
      if (!(r.size > 0) || !Number.isFinite(r.base) || r.base < 0) continue;
      if (r.space === "pio") {
        if (r.exact) {
          if (!exact.has(r.base) && r.base + r.size <= PORTS) exact.set(r.base, { base: r.base, size: r.size, lo: r.base, hi: r.base + r.size, dev });
          continue;
        }
        const end = Math.min(r.base + r.size, PORTS);
        let p = r.base;
        while (p < end) {
          if (map[p]) { p++; continue; }
          let q = p;
          while (q < end && !map[q]) q++;
          if (pio.length >= EXACT_FLAG - 1) break; // index full: a guest cannot create that many pieces in practice
          pio.push({ base: r.base, size: r.size, lo: p, hi: q, dev });
          map.fill(pio.length, p, q);
          p = q;
        }
      } else {
        let pieces: [number, number][] = [[r.base, r.base + r.size]];
        for (const m of mmio) {
          const next: [number, number][] = [];
          for (const [a, b] of pieces) {
            if (b <= m.lo || m.hi <= a) { next.push([a, b]); continue; }
            if (a < m.lo) next.push([a, m.lo]);
            if (m.hi < b) next.push([m.hi, b]);
          }
          pieces = next;
          if (!pieces.length) break;
        }
        for (const [a, b] of pieces) mmio.push({ base: r.base, size: r.size, lo: a, hi: b, dev });
      }
    }
    for (const p of exact.keys()) map[p] = map[p]! | EXACT_FLAG;
    mmio.sort((a, b) => a.lo - b.lo);
    this.pio = pio;
    this.exactPio = exact;
    this.mmio = mmio;
    this.lastMmio = undefined;
  }

  /** The mapping that takes the whole access, or undefined (split into bytes / unassigned). */
  private find(space: Space, addr: number, size: number): Mapping | undefined {
    if (Atomics.load(this.gen, 0) !== this.seen) this.sync();
    let m: Mapping | undefined;
    if (space === "pio") {
      let i = this.portMap[addr & 0xffff]!;
      if (i & EXACT_FLAG) {
        const e = this.exactPio.get(addr);
        if (e && e.size === size) return e;
        i &= ~EXACT_FLAG;
      }
      if (!i) return undefined;
      m = this.pio[i - 1]!;
    } else {
      m = this.lookupMmio(addr);
      if (!m) return undefined;
    }
    return (size === 1 || size === 2 || size === 4) && addr + size <= m.hi && addr % size === 0 ? m : undefined;
  }

  private lookupMmio(addr: number): Mapping | undefined {
    const l = this.lastMmio;
    if (l && addr >= l.lo && addr < l.hi) return l;
    const t = this.mmio;
    let lo = 0, hi = t.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      const m = t[mid]!;
      if (addr < m.lo) hi = mid - 1;
      else if (addr >= m.hi) lo = mid + 1;
      else return (this.lastMmio = m);
    }
    return undefined;
  }

  private byteOwner(space: Space, addr: number): Mapping | undefined {
    if (space === "pio") {
      if (addr < 0 || addr >= PORTS) return undefined;
      const i = this.portMap[addr]! & ~EXACT_FLAG;
      return i ? this.pio[i - 1] : undefined;
    }
    return this.lookupMmio(addr);
  }

  /** Guest read of 1, 2 or 4 bytes (use readWide for 8). */
  read(space: Space, addr: number, size: number): number {
    if (size === 8) throw new BusError("use readWide for 8-byte accesses");
    const m = this.find(space, addr, size);
    if (m) {
      const lock = m.dev.lock;
      if (!lock) return m.dev.read(space, m.base, addr - m.base, size as AccessSize) >>> 0;
      lock.acquire();
      try { return m.dev.read(space, m.base, addr - m.base, size as AccessSize) >>> 0; } finally { lock.release(); }
    }
    // split into bytes: unaligned, straddling, or unassigned
    let v = 0;
    for (let i = 0; i < size; i++) v |= this.readByte(space, addr + i) << (8 * i);
    return v >>> 0;
  }

  private readByte(space: Space, addr: number): number {
    const m = this.byteOwner(space, addr);
    if (!m) { this.unassigned(space, addr, 1, false, 0); return 0xff; }
    return this.call(m, () => m.dev.read(space, m.base, addr - m.base, 1)) & 0xff;
  }

  write(space: Space, addr: number, size: number, value: number): void {
    const m = this.find(space, addr, size);
    if (m) {
      const lock = m.dev.lock;
      if (!lock) return m.dev.write(space, m.base, addr - m.base, size as AccessSize, value >>> 0);
      lock.acquire();
      try { m.dev.write(space, m.base, addr - m.base, size as AccessSize, value >>> 0); } finally { lock.release(); }
      return;
    }
    for (let i = 0; i < size; i++) {
      const a = addr + i;
      const b = (value >>> (8 * i)) & 0xff;
      const mm = this.byteOwner(space, a);
      if (!mm) this.unassigned(space, a, 1, true, b);
      else this.call(mm, () => mm.dev.write(space, mm.base, a - mm.base, 1, b));
    }
  }

  /** 8-byte (or any size up to 8) access as two little-endian halves. */
  readWide(space: Space, addr: number, size: number): [lo: number, hi: number] {
    if (size <= 4) return [this.read(space, addr, size), 0];
    return [this.read(space, addr, 4), this.read(space, addr + 4, size - 4)];
  }
  writeWide(space: Space, addr: number, size: number, lo: number, hi: number): void {
    if (size <= 4) return this.write(space, addr, size, lo);
    this.write(space, addr, 4, lo);
    this.write(space, addr + 4, size - 4, hi);
  }

  private call<T>(m: Mapping, fn: () => T): T {
    const lock = m.dev.lock;
    if (!lock) return fn();
    lock.acquire();
    try { return fn(); } finally { lock.release(); }
  }

  /**
   * Every visible mapping (for diagnostics and tests): ports in priority order, then exact port claims,
   * then MMIO sorted by address. A range clipped by a higher-priority one shows as its visible pieces.
   */
  list(): { space: Space; base: number; size: number; name: string; exact?: true }[] {
    if (Atomics.load(this.gen, 0) !== this.seen) this.sync();
    return [
      ...this.pio.map((m) => ({ space: "pio" as Space, base: m.lo, size: m.hi - m.lo, name: m.dev.name })),
      ...[...this.exactPio.values()].map((m) => ({ space: "pio" as Space, base: m.lo, size: m.hi - m.lo, name: m.dev.name, exact: true as const })),
      ...this.mmio.map((m) => ({ space: "mmio" as Space, base: m.lo, size: m.hi - m.lo, name: m.dev.name })),
    ];
  }
}
