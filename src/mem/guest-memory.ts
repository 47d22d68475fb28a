/**
 * Guest memory: the one module that owns every view of guest RAM and ROM. Every guest-supplied
 * address and length goes through `find()` (directly or via the accessors), which refuses anything
 * that is not wholly inside one mapped region — guests are hostile.
 *
 * Layout (bhyve's): RAM [0, min(size, 3 GiB)), the PCI hole up to 4 GiB, the rest of RAM from 4 GiB.
 * Each region is one host mapping; regions over 2 GiB are split so every view fits a typed array.
 */

export const KiB = 1024, MiB = 1024 * KiB, GiB = 1024 * MiB;
export const LOWMEM_LIMIT = 3 * GiB;
export const HIGHMEM_BASE = 4 * GiB;
/** Largest single view; JSC typed arrays stop at 4 GiB, so keep well below. */
export const CHUNK = 2 * GiB;

export class GuestMemoryError extends Error {
  constructor(readonly gpa: number, readonly len: number) {
    super(`guest address 0x${gpa.toString(16)}+${len} is outside guest memory`);
  }
}

export interface MemRegion {
  readonly gpa: number;
  readonly size: number;
  /** Host virtual address of byte 0 (0 for fake memory in tests). */
  readonly host: number;
  readonly bytes: Uint8Array;
  readonly dv: DataView;
  readonly kind: "ram" | "rom";
}

export function region(gpa: number, bytes: Uint8Array, host = 0, kind: "ram" | "rom" = "ram"): MemRegion {
  return { gpa, size: bytes.length, host, bytes, dv: new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength), kind };
}

/** The RAM ranges for a given guest RAM size (bhyve's map). */
export function ramLayout(size: number): { gpa: number; size: number }[] {
  const out: { gpa: number; size: number }[] = [];
  const low = Math.min(size, LOWMEM_LIMIT);
  for (let off = 0; off < low; off += CHUNK) out.push({ gpa: off, size: Math.min(CHUNK, low - off) });
  for (let off = 0; off < size - low; off += CHUNK) out.push({ gpa: HIGHMEM_BASE + off, size: Math.min(CHUNK, size - low - off) });
  return out;
}

export class GuestMemory {
  readonly regions: MemRegion[];
  private last: MemRegion;

  constructor(regions: MemRegion[]) {
    if (regions.length === 0) throw new Error("guest memory needs at least one region");
    this.regions = [...regions].sort((a, b) => a.gpa - b.gpa);
    for (let i = 1; i < this.regions.length; i++) {
      const p = this.regions[i - 1]!, r = this.regions[i]!;
      if (p.gpa + p.size > r.gpa) throw new Error(`guest memory regions overlap at 0x${r.gpa.toString(16)}`);
    }
    this.last = this.regions[0]!;
  }

  /** Fake RAM for tests: `size` bytes laid out as a real VM's would be (ArrayBuffer-backed). */
  static fake(size: number): GuestMemory {
    return new GuestMemory(ramLayout(size).map((r) => region(r.gpa, new Uint8Array(r.size))));
  }

  /** Total RAM (not ROM) in bytes. */
  get ramSize(): number {
    return this.regions.filter((r) => r.kind === "ram").reduce((a, r) => a + r.size, 0);
  }

  /** The region wholly containing [gpa, gpa+len), or undefined (also for non-integer or negative input). */
  lookup(gpa: number, len: number): MemRegion | undefined {
    const l = this.last;
    // fast path: the last region hit (integers in range pass these comparisons; NaN fails them)
    if (gpa >= l.gpa && len >= 0 && gpa + len <= l.gpa + l.size && Number.isSafeInteger(gpa) && Number.isSafeInteger(len)) return l;
    if (!(Number.isSafeInteger(gpa) && Number.isSafeInteger(len) && gpa >= 0 && len >= 0)) return undefined;
    for (const r of this.regions) {
      if (gpa >= r.gpa && gpa + len <= r.gpa + r.size) return (this.last = r);
    }
    return undefined;
  }

  /** The region wholly containing [gpa, gpa+len), or throws GuestMemoryError. */
  find(gpa: number, len: number): MemRegion {
    const r = this.lookup(gpa, len);
    if (!r) throw new GuestMemoryError(gpa, len);
    return r;
  }

  /** True if [gpa, gpa+len) is inside one region. */
  valid(gpa: number, len: number): boolean {
    return this.lookup(gpa, len) !== undefined;
  }

  /** A live view of guest bytes. Do not keep it across device calls. */
  view(gpa: number, len: number): Uint8Array {
    const r = this.find(gpa, len);
    const o = gpa - r.gpa;
    return r.bytes.subarray(o, o + len);
  }

  /** Host address of guest bytes, for iovec I/O through the shim. */
  hostAddr(gpa: number, len: number): number {
    const r = this.find(gpa, len);
    if (!r.host) throw new Error("fake guest memory has no host address");
    return r.host + (gpa - r.gpa);
  }

  read8(gpa: number): number { const r = this.find(gpa, 1); return r.bytes[gpa - r.gpa]!; }
  read16(gpa: number): number { const r = this.find(gpa, 2); return r.dv.getUint16(gpa - r.gpa, true); }
  read32(gpa: number): number { const r = this.find(gpa, 4); return r.dv.getUint32(gpa - r.gpa, true); }
  read64(gpa: number): bigint { const r = this.find(gpa, 8); return r.dv.getBigUint64(gpa - r.gpa, true); }
  write8(gpa: number, v: number): void { const r = this.find(gpa, 1); r.bytes[gpa - r.gpa] = v; }
  write16(gpa: number, v: number): void { const r = this.find(gpa, 2); r.dv.setUint16(gpa - r.gpa, v, true); }
  write32(gpa: number, v: number): void { const r = this.find(gpa, 4); r.dv.setUint32(gpa - r.gpa, v >>> 0, true); }
  write64(gpa: number, v: bigint): void { const r = this.find(gpa, 8); r.dv.setBigUint64(gpa - r.gpa, v, true); }

  /** Copy out of the guest (may span regions that are contiguous). */
  readBytes(gpa: number, len: number): Uint8Array {
    const out = new Uint8Array(len);
    let done = 0;
    while (done < len) {
      const r = this.find(gpa + done, 1);
      const o = gpa + done - r.gpa;
      const n = Math.min(len - done, r.size - o);
      out.set(r.bytes.subarray(o, o + n), done);
      done += n;
    }
    return out;
  }

  /** Copy into the guest (may span contiguous regions); checks the whole range first. */
  writeBytes(gpa: number, data: Uint8Array): void {
    let done = 0;
    const spans: [MemRegion, number, number][] = [];
    while (done < data.length) {
      const r = this.find(gpa + done, 1);
      const o = gpa + done - r.gpa;
      const n = Math.min(data.length - done, r.size - o);
      spans.push([r, o, n]);
      done += n;
    }
    done = 0;
    for (const [r, o, n] of spans) {
      r.bytes.set(data.subarray(done, done + n), o);
      done += n;
    }
  }

  fill(gpa: number, len: number, value = 0): void {
    let done = 0;
    while (done < len) {
      const r = this.find(gpa + done, 1);
      const o = gpa + done - r.gpa;
      const n = Math.min(len - done, r.size - o);
      r.bytes.fill(value, o, o + n);
      done += n;
    }
  }
}
