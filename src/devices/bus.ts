/**
 * Port-I/O and MMIO buses. Registration refuses overlaps; accesses to nothing read all-ones and
 * ignore writes (or stop the VM under x86.strictio). Wide accesses are split into 4-byte halves and
 * unaligned/odd widths into bytes, so device models only ever see 1, 2 or 4 bytes inside their range.
 */
import type { AccessSize, Device, Space } from "./device.ts";

export class BusError extends Error {}

interface Mapping { base: number; size: number; dev: Device }

export interface UnassignedPolicy {
  /** Called for accesses that hit no device. Return true to stop the VM (strictio). */
  (space: Space, addr: number, size: number, write: boolean, value: number): void;
}

export class Bus {
  /** pio: one entry per port → index+1 into `maps` (0 = nothing). */
  private readonly portMap = new Uint16Array(0x10000);
  private readonly maps: Mapping[] = [];
  /** mmio: sorted by base. */
  private mmio: Mapping[] = [];
  private lastMmio: Mapping | undefined;

  constructor(private readonly unassigned: UnassignedPolicy = () => {}) {}

  register(dev: Device): void {
    for (const r of dev.ranges) {
      if (r.size <= 0) throw new BusError(`${dev.name}: empty ${r.space} range`);
      if (r.space === "pio") {
        if (r.base < 0 || r.base + r.size > 0x10000) throw new BusError(`${dev.name}: port range 0x${r.base.toString(16)}+${r.size} outside 0..0xffff`);
        for (let p = r.base; p < r.base + r.size; p++) {
          const other = this.portMap[p]!;
          if (other) throw new BusError(`${dev.name}: port 0x${p.toString(16)} already used by ${this.maps[other - 1]!.dev.name}`);
        }
        this.maps.push({ base: r.base, size: r.size, dev });
        this.portMap.fill(this.maps.length, r.base, r.base + r.size);
      } else {
        const clash = this.mmio.find((m) => r.base < m.base + m.size && m.base < r.base + r.size);
        if (clash) throw new BusError(`${dev.name}: MMIO 0x${r.base.toString(16)}+0x${r.size.toString(16)} overlaps ${clash.dev.name}`);
        this.mmio.push({ base: r.base, size: r.size, dev });
        this.mmio.sort((a, b) => a.base - b.base);
      }
    }
  }

  /** Remove every range of a device (e.g. when a PCI BAR moves). */
  unregister(dev: Device): void {
    for (let i = 0; i < this.maps.length; i++) {
      const m = this.maps[i]!;
      if (m.dev === dev) { this.portMap.fill(0, m.base, m.base + m.size); m.size = 0; }
    }
    this.mmio = this.mmio.filter((m) => m.dev !== dev);
    this.lastMmio = undefined;
  }

  private lookup(space: Space, addr: number): Mapping | undefined {
    if (space === "pio") {
      const i = this.portMap[addr & 0xffff]!;
      return i ? this.maps[i - 1] : undefined;
    }
    const l = this.lastMmio;
    if (l && addr >= l.base && addr < l.base + l.size) return l;
    let lo = 0, hi = this.mmio.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      const m = this.mmio[mid]!;
      if (addr < m.base) hi = mid - 1;
      else if (addr >= m.base + m.size) lo = mid + 1;
      else return (this.lastMmio = m);
    }
    return undefined;
  }

  /** Guest read of 1..8 bytes; returns the value as a number (size ≤ 4) or bigint-safe pair via readWide. */
  read(space: Space, addr: number, size: number): number {
    if (size === 8) throw new BusError("use readWide for 8-byte accesses");
    const m = this.lookup(space, addr);
    if (m && (size === 1 || size === 2 || size === 4) && addr + size <= m.base + m.size && addr % size === 0) {
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
    const m = this.lookup(space, addr);
    if (!m) { this.unassigned(space, addr, 1, false, 0); return 0xff; }
    return this.call(m, () => m.dev.read(space, m.base, addr - m.base, 1)) & 0xff;
  }

  write(space: Space, addr: number, size: number, value: number): void {
    const m = this.lookup(space, addr);
    if (m && (size === 1 || size === 2 || size === 4) && addr + size <= m.base + m.size && addr % size === 0) {
      const lock = m.dev.lock;
      if (!lock) return m.dev.write(space, m.base, addr - m.base, size as AccessSize, value >>> 0);
      lock.acquire();
      try { m.dev.write(space, m.base, addr - m.base, size as AccessSize, value >>> 0); } finally { lock.release(); }
      return;
    }
    for (let i = 0; i < size; i++) {
      const a = addr + i;
      const b = (value >>> (8 * i)) & 0xff;
      const mm = this.lookup(space, a);
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

  /** Every registered mapping (for diagnostics and tests). */
  list(): { space: Space; base: number; size: number; name: string }[] {
    return [
      ...this.maps.filter((m) => m.size > 0).map((m) => ({ space: "pio" as Space, base: m.base, size: m.size, name: m.dev.name })),
      ...this.mmio.map((m) => ({ space: "mmio" as Space, base: m.base, size: m.size, name: m.dev.name })),
    ];
  }
}
