/**
 * A small ACPI Machine Language encoder (ACPI 6.x, chapter 20 "ACPI Machine Language
 * Specification"). Every helper returns the encoded bytes of one term; compose them by passing
 * terms into the container helpers (scope, device, method, pkg ...). Add opcodes here as the DSDT
 * grows: each helper is a few lines and each is checked against spec byte encodings in the tests.
 */

export type Term = Uint8Array;

export const Op = {
  Zero: 0x00, One: 0x01, Alias: 0x06, Name: 0x08, BytePrefix: 0x0a, WordPrefix: 0x0b, DWordPrefix: 0x0c,
  StringPrefix: 0x0d, QWordPrefix: 0x0e, Scope: 0x10, Buffer: 0x11, Package: 0x12, VarPackage: 0x13,
  Method: 0x14, DualNamePrefix: 0x2e, MultiNamePrefix: 0x2f, ExtOpPrefix: 0x5b, RootChar: 0x5c,
  ParentPrefix: 0x5e, Local0: 0x60, Arg0: 0x68, Store: 0x70, Return: 0xa4, Ones: 0xff,
} as const;
export const ExtOp = { Mutex: 0x01, OpRegion: 0x80, Field: 0x81, Device: 0x82, Processor: 0x83 } as const;

export class AmlError extends Error {}

/** Concatenate byte arrays. */
export function cat(...parts: readonly (Uint8Array | readonly number[])[]): Uint8Array {
  const n = parts.reduce((a, p) => a + p.length, 0);
  const out = new Uint8Array(n);
  let o = 0;
  for (const p of parts) { out.set(p, o); o += p.length; }
  return out;
}

/**
 * PkgLength for a body of `bodyLen` bytes. The encoded value counts the PkgLength bytes themselves
 * plus the body. One byte holds 0..63; otherwise byte 0 bits 7:6 give the count of following bytes
 * (1..3), bits 3:0 the low nibble, and each following byte the next 8 bits (max 2^28 - 1).
 */
export function pkgLength(bodyLen: number): Uint8Array {
  if (!Number.isSafeInteger(bodyLen) || bodyLen < 0) throw new AmlError(`bad PkgLength body ${bodyLen}`);
  if (bodyLen + 1 <= 0x3f) return Uint8Array.of(bodyLen + 1);
  for (let extra = 1; extra <= 3; extra++) {
    const total = bodyLen + 1 + extra;
    if (total < 2 ** (4 + 8 * extra)) {
      const out = new Uint8Array(1 + extra);
      out[0] = (extra << 6) | (total & 0x0f);
      for (let i = 0; i < extra; i++) out[1 + i] = Math.floor(total / 2 ** (4 + 8 * i)) & 0xff;
      return out;
    }
  }
  throw new AmlError(`PkgLength ${bodyLen} exceeds 2^28`);
}

/** Decode a PkgLength at `off`: returns [value, bytes used]. (For tests and table walkers.) */
export function decodePkgLength(b: Uint8Array, off: number): [number, number] {
  const lead = b[off];
  if (lead === undefined) throw new AmlError("PkgLength past end");
  const extra = lead >> 6;
  if (extra === 0) return [lead & 0x3f, 1];
  let v = lead & 0x0f;
  for (let i = 0; i < extra; i++) {
    const x = b[off + 1 + i];
    if (x === undefined) throw new AmlError("PkgLength past end");
    v += x * 2 ** (4 + 8 * i);
  }
  return [v, 1 + extra];
}

/** Body wrapped with its PkgLength. */
function withPkgLength(...body: Uint8Array[]): Uint8Array {
  const b = cat(...body);
  return cat(pkgLength(b.length), b);
}

const LEAD = /^[A-Z_]$/;
const TAIL = /^[A-Z0-9_]$/;

/** One NameSeg: 1-4 characters, padded with '_' to four bytes. */
export function nameSeg(seg: string): Uint8Array {
  if (seg.length < 1 || seg.length > 4) throw new AmlError(`NameSeg "${seg}" must be 1-4 characters`);
  const s = seg.padEnd(4, "_");
  if (!LEAD.test(s[0]!) || ![...s.slice(1)].every((c) => TAIL.test(c))) throw new AmlError(`bad NameSeg "${seg}"`);
  return Uint8Array.from(s, (c) => c.charCodeAt(0));
}

/**
 * A NameString: optional root ('\') or parent ('^'...) prefix, then dot-separated segments.
 * "" / "\" alone encode a NullName after the prefix.
 */
export function nameString(path: string): Uint8Array {
  let i = 0;
  const prefix: number[] = [];
  if (path.startsWith("\\")) { prefix.push(Op.RootChar); i = 1; }
  else while (path[i] === "^") { prefix.push(Op.ParentPrefix); i++; }
  const rest = path.slice(i);
  const segs = rest === "" ? [] : rest.split(".");
  const enc = segs.map(nameSeg);
  if (enc.length === 0) return cat(prefix, [0x00]);
  if (enc.length === 1) return cat(prefix, enc[0]!);
  if (enc.length === 2) return cat(prefix, [Op.DualNamePrefix], ...enc);
  if (enc.length > 255) throw new AmlError(`NameString "${path}" has too many segments`);
  return cat(prefix, [Op.MultiNamePrefix, enc.length], ...enc);
}

/** Integer constant, in the smallest encoding (ZeroOp, OneOp, Byte/Word/DWord/QWordPrefix). */
export function int(v: number | bigint): Uint8Array {
  const n = BigInt(v);
  if (n < 0n || n > 0xffff_ffff_ffff_ffffn) throw new AmlError(`integer ${v} out of range`);
  if (n === 0n) return Uint8Array.of(Op.Zero);
  if (n === 1n) return Uint8Array.of(Op.One);
  const le = (bytes: number) => {
    const out = new Uint8Array(bytes);
    for (let i = 0; i < bytes; i++) out[i] = Number((n >> BigInt(8 * i)) & 0xffn);
    return out;
  };
  if (n <= 0xffn) return cat([Op.BytePrefix], le(1));
  if (n <= 0xffffn) return cat([Op.WordPrefix], le(2));
  if (n <= 0xffff_ffffn) return cat([Op.DWordPrefix], le(4));
  return cat([Op.QWordPrefix], le(8));
}

/** Fixed-width integer encodings (when a specific width is wanted, e.g. for patching). */
export const byteConst = (v: number) => cat([Op.BytePrefix], [v & 0xff]);
export const wordConst = (v: number) => cat([Op.WordPrefix], [v & 0xff, (v >> 8) & 0xff]);
export const dwordConst = (v: number) => cat([Op.DWordPrefix], [v & 0xff, (v >>> 8) & 0xff, (v >>> 16) & 0xff, (v >>> 24) & 0xff]);
export const ones = () => Uint8Array.of(Op.Ones);

/** String constant: StringPrefix, ASCII bytes 0x01-0x7F, NUL. */
export function str(s: string): Uint8Array {
  const bytes = Uint8Array.from(s, (c) => c.charCodeAt(0));
  if (bytes.some((b, i) => b === 0 || b > 0x7f || s.charCodeAt(i) > 0x7f)) throw new AmlError(`AML string must be ASCII without NUL: ${JSON.stringify(s)}`);
  return cat([Op.StringPrefix], bytes, [0]);
}

/** Compressed EISA id ("PNP0A03") as the 32-bit integer ASL's EISAID() produces. */
export function eisaId(id: string): Uint8Array {
  if (!/^[A-Z]{3}[0-9A-F]{4}$/.test(id)) throw new AmlError(`bad EISA id "${id}"`);
  const c = (i: number) => id.charCodeAt(i) - 0x40;
  const hex = parseInt(id.slice(3), 16);
  const v = ((c(0) << 26) | (c(1) << 21) | (c(2) << 16) | hex) >>> 0;
  // stored big-endian-ish: the 32-bit value is byte-swapped
  const swapped = (((v & 0xff) << 24) | (((v >> 8) & 0xff) << 16) | (((v >> 16) & 0xff) << 8) | ((v >>> 24) & 0xff)) >>> 0;
  return int(swapped);
}

export type PkgElement = number | bigint | string | Uint8Array;

function element(e: PkgElement): Uint8Array {
  if (typeof e === "number" || typeof e === "bigint") return int(e);
  if (typeof e === "string") return str(e);
  return e;
}

/** Package(){...} with up to 255 elements (numbers, strings or pre-encoded terms). */
export function pkg(...elements: PkgElement[]): Uint8Array {
  if (elements.length > 255) throw new AmlError("Package with more than 255 elements needs VarPackage");
  return cat([Op.Package], withPkgLength(Uint8Array.of(elements.length), ...elements.map(element)));
}

/** Buffer(){bytes}. */
export function buffer(bytes: Uint8Array): Uint8Array {
  return cat([Op.Buffer], withPkgLength(int(bytes.length), bytes));
}

/** Name(path, value). */
export function name(path: string, value: PkgElement): Uint8Array {
  return cat([Op.Name], nameString(path), element(value));
}

/** Scope(path){terms}. */
export function scope(path: string, ...terms: Uint8Array[]): Uint8Array {
  return cat([Op.Scope], withPkgLength(nameString(path), ...terms));
}

/** Device(path){terms}. */
export function device(path: string, ...terms: Uint8Array[]): Uint8Array {
  return cat([Op.ExtOpPrefix, ExtOp.Device], withPkgLength(nameString(path), ...terms));
}

export interface MethodOptions { args?: number; serialized?: boolean; syncLevel?: number }

/** Method(path, args, Serialized|NotSerialized, syncLevel){terms}. */
export function method(path: string, opts: MethodOptions, ...terms: Uint8Array[]): Uint8Array {
  const args = opts.args ?? 0, sync = opts.syncLevel ?? 0;
  if (!Number.isInteger(args) || args < 0 || args > 7) throw new AmlError(`method ${path}: 0-7 arguments, got ${args}`);
  if (!Number.isInteger(sync) || sync < 0 || sync > 15) throw new AmlError(`method ${path}: sync level 0-15, got ${sync}`);
  const flags = args | (opts.serialized ? 0x08 : 0) | (sync << 4);
  return cat([Op.Method], withPkgLength(nameString(path), Uint8Array.of(flags), ...terms));
}

/** Return(value). */
export function ret(value: PkgElement): Uint8Array {
  return cat([Op.Return], element(value));
}

/** ArgN / LocalN references. */
export const arg = (n: number) => { if (n < 0 || n > 6) throw new AmlError(`Arg${n}`); return Uint8Array.of(Op.Arg0 + n); };
export const local = (n: number) => { if (n < 0 || n > 7) throw new AmlError(`Local${n}`); return Uint8Array.of(Op.Local0 + n); };
