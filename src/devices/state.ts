/**
 * Device state as shared data. Each device declares its state as a layout (field name → type); the
 * VM allocates one SharedArrayBuffer for every device's state at start and hands it to every Worker,
 * so whichever thread traps runs the device on the same bytes. A per-device lock word guards it.
 * The same buffer is the device half of a snapshot (layouts carry a version).
 */

export type Scalar = "u8" | "u16" | "u32" | "i32" | "f64";
export type FieldSpec = Scalar | { type: Scalar; count: number };
export interface LayoutSpec { [field: string]: FieldSpec }

const SIZE: Record<Scalar, number> = { u8: 1, u16: 2, u32: 4, i32: 4, f64: 8 };

type ArrayOf<T extends Scalar> = T extends "u8" ? Uint8Array : T extends "u16" ? Uint16Array
  : T extends "u32" ? Uint32Array : T extends "i32" ? Int32Array : Float64Array;
export type StateOf<S extends LayoutSpec> = {
  -readonly [K in keyof S]: S[K] extends Scalar ? number : S[K] extends { type: infer T extends Scalar } ? ArrayOf<T> : never;
};

export interface Layout<S extends LayoutSpec> {
  readonly name: string;
  readonly version: number;
  readonly spec: S;
  /** bytes including the 8-byte header (lock word, version) */
  readonly bytes: number;
  readonly offsets: Record<keyof S, number>;
}

/** Declare a device's state layout. Offsets are naturally aligned; the header holds the lock. */
export function defineLayout<S extends LayoutSpec>(name: string, version: number, spec: S): Layout<S> {
  let off = 8;
  const offsets = {} as Record<keyof S, number>;
  for (const [k, f] of Object.entries(spec)) {
    const t = typeof f === "string" ? f : f.type;
    const n = typeof f === "string" ? 1 : f.count;
    const sz = SIZE[t];
    off = Math.ceil(off / sz) * sz;
    (offsets as Record<string, number>)[k] = off;
    off += sz * n;
  }
  return { name, version, spec, bytes: Math.ceil(off / 8) * 8, offsets };
}

/** A device's slice of the state buffer: typed accessors plus its lock. */
export interface StateBlock<S extends LayoutSpec> {
  readonly s: StateOf<S>;
  readonly lock: DeviceLock;
  readonly offset: number;
  readonly layout: Layout<S>;
}

export function bindState<S extends LayoutSpec>(buf: SharedArrayBuffer | ArrayBuffer, offset: number, layout: Layout<S>): StateBlock<S> {
  if (offset % 8 !== 0 || offset + layout.bytes > buf.byteLength) throw new Error(`state block for ${layout.name} out of range`);
  const dv = new DataView(buf, offset, layout.bytes);
  const obj = {} as Record<string, unknown>;
  for (const [k, f] of Object.entries(layout.spec)) {
    const o = (layout.offsets as Record<string, number>)[k]!;
    if (typeof f !== "string") {
      const Ctor = { u8: Uint8Array, u16: Uint16Array, u32: Uint32Array, i32: Int32Array, f64: Float64Array }[f.type];
      obj[k] = new Ctor(buf as ArrayBuffer, offset + o, f.count);
      continue;
    }
    const accessors: Record<Scalar, [() => number, (v: number) => void]> = {
      u8: [() => dv.getUint8(o), (v: number) => dv.setUint8(o, v)],
      u16: [() => dv.getUint16(o, true), (v: number) => dv.setUint16(o, v, true)],
      u32: [() => dv.getUint32(o, true), (v: number) => dv.setUint32(o, v >>> 0, true)],
      i32: [() => dv.getInt32(o, true), (v: number) => dv.setInt32(o, v | 0, true)],
      f64: [() => dv.getFloat64(o, true), (v: number) => dv.setFloat64(o, v, true)],
    };
    const [get, set] = accessors[f];
    Object.defineProperty(obj, k, { get, set, enumerable: true });
  }
  new DataView(buf, offset + 4, 4).setUint32(0, layout.version, true);
  return { s: obj as StateOf<S>, lock: new DeviceLock(buf, offset), offset, layout };
}

/**
 * A mutex on one Int32 in shared memory: 0 free, 1 held, 2 held with waiters (Drepper's futex mutex).
 * Atomics.wait needs a real SharedArrayBuffer; on a plain ArrayBuffer (single-threaded tests) the lock
 * degenerates to a flag.
 */
export class DeviceLock {
  private readonly w: Int32Array;
  private readonly shared: boolean;
  constructor(buf: SharedArrayBuffer | ArrayBuffer, offset: number) {
    this.w = new Int32Array(buf, offset, 1);
    this.shared = typeof SharedArrayBuffer !== "undefined" && buf instanceof SharedArrayBuffer;
  }
  acquire(): void {
    const w = this.w;
    let c = Atomics.compareExchange(w, 0, 0, 1);
    if (c === 0) return;
    for (let spin = 0; spin < 100 && c !== 0; spin++) {
      c = Atomics.compareExchange(w, 0, 0, 1);
      if (c === 0) return;
    }
    if (c !== 2) c = Atomics.exchange(w, 0, 2);
    while (c !== 0) {
      if (this.shared) Atomics.wait(w, 0, 2, 100);
      else throw new Error("device lock already held (re-entrant device call?)");
      c = Atomics.exchange(w, 0, 2);
    }
  }
  release(): void {
    if (Atomics.sub(this.w, 0, 1) !== 1) {
      Atomics.store(this.w, 0, 0);
      if (this.shared) Atomics.notify(this.w, 0, 1);
    }
  }
  /** Run fn under the lock. */
  with<T>(fn: () => T): T {
    this.acquire();
    try { return fn(); } finally { this.release(); }
  }
}

/** Hands out state blocks from one buffer in a fixed order, identically in every thread. */
export class StateArena {
  private next = 0;
  private readonly blocks: { name: string; offset: number; bytes: number; version: number }[] = [];
  constructor(readonly buf: SharedArrayBuffer | ArrayBuffer) {}

  /** Size a buffer needs for these layouts (call on the main thread before creating it). */
  static sizeFor(layouts: Layout<LayoutSpec>[]): number {
    return layouts.reduce((a, l) => a + l.bytes, 0);
  }

  alloc<S extends LayoutSpec>(layout: Layout<S>): StateBlock<S> {
    const off = this.next;
    this.next += layout.bytes;
    if (this.next > this.buf.byteLength) throw new Error(`device state buffer too small for ${layout.name}`);
    this.blocks.push({ name: layout.name, offset: off, bytes: layout.bytes, version: layout.version });
    return bindState(this.buf, off, layout);
  }
  get used(): number { return this.next; }
  get directory(): readonly { name: string; offset: number; bytes: number; version: number }[] { return this.blocks; }
}
