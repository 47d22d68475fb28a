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
  ParentPrefix: 0x5e, Local0: 0x60, Arg0: 0x68, Store: 0x70, Add: 0x72, Subtract: 0x74, Increment: 0x75,
  Decrement: 0x76, ShiftLeft: 0x79, ShiftRight: 0x7a, And: 0x7b, Or: 0x7d, Not: 0x80, FindSetLeftBit: 0x81,
  FindSetRightBit: 0x82, DerefOf: 0x83, Notify: 0x86, SizeOf: 0x87, Index: 0x88, CreateDWordField: 0x8a,
  CreateWordField: 0x8b, CreateByteField: 0x8c, CreateQWordField: 0x8f, LAnd: 0x90, LOr: 0x91, LNot: 0x92,
  LEqual: 0x93, LGreater: 0x94, LLess: 0x95, If: 0xa0, Else: 0xa1, While: 0xa2, Return: 0xa4, Ones: 0xff,
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

// ---------------------------------------------------------------------------------------------------
// Expressions and control flow (ACPI 6.x §20.2.5). A "TermArg" is any encoded term: int(), a name
// reference (ref()), arg()/local(), or the result of another expression helper.

/** A reference to a named object (or a call of a method with no arguments): just its NameString. */
export const ref = (path: string) => nameString(path);

/** Optional Target operand: a SuperName, or NullName (0x00) when the result is only returned. */
function target(t?: Uint8Array): Uint8Array {
  return t ?? Uint8Array.of(0x00);
}

function termArg(x: Uint8Array | number | bigint): Uint8Array {
  return typeof x === "number" || typeof x === "bigint" ? int(x) : x;
}
type TermArg = Uint8Array | number | bigint;

/** Store(source, dest). */
export const store = (src: TermArg, dest: Uint8Array) => cat([Op.Store], termArg(src), dest);

function binary(op: number) {
  return (a: TermArg, b: TermArg, t?: Uint8Array) => cat([op], termArg(a), termArg(b), target(t));
}
/** And(a, b, target?) etc.: integer operators with an optional target (NullName when omitted). */
export const and = binary(Op.And);
export const or = binary(Op.Or);
export const add = binary(Op.Add);
export const subtract = binary(Op.Subtract);
export const shiftLeft = binary(Op.ShiftLeft);
export const shiftRight = binary(Op.ShiftRight);
export const not = (a: TermArg, t?: Uint8Array) => cat([Op.Not], termArg(a), target(t));
export const findSetRightBit = (a: TermArg, t?: Uint8Array) => cat([Op.FindSetRightBit], termArg(a), target(t));
export const findSetLeftBit = (a: TermArg, t?: Uint8Array) => cat([Op.FindSetLeftBit], termArg(a), target(t));
export const increment = (n: Uint8Array) => cat([Op.Increment], n);
export const decrement = (n: Uint8Array) => cat([Op.Decrement], n);
export const sizeOf = (n: Uint8Array) => cat([Op.SizeOf], n);
export const derefOf = (a: TermArg) => cat([Op.DerefOf], termArg(a));
export const index = (src: TermArg, i: TermArg, t?: Uint8Array) => cat([Op.Index], termArg(src), termArg(i), target(t));

/** Logical operators (no target). */
export const lEqual = (a: TermArg, b: TermArg) => cat([Op.LEqual], termArg(a), termArg(b));
export const lGreater = (a: TermArg, b: TermArg) => cat([Op.LGreater], termArg(a), termArg(b));
export const lLess = (a: TermArg, b: TermArg) => cat([Op.LLess], termArg(a), termArg(b));
export const lAnd = (a: TermArg, b: TermArg) => cat([Op.LAnd], termArg(a), termArg(b));
export const lOr = (a: TermArg, b: TermArg) => cat([Op.LOr], termArg(a), termArg(b));
export const lNot = (a: TermArg) => cat([Op.LNot], termArg(a));

/** If(predicate){terms}. Follow with elseOf() for an Else branch. */
export function ifThen(pred: TermArg, ...terms: Uint8Array[]): Uint8Array {
  return cat([Op.If], withPkgLength(termArg(pred), ...terms));
}
/** Else{terms} (must directly follow an If). */
export function elseOf(...terms: Uint8Array[]): Uint8Array {
  return cat([Op.Else], withPkgLength(...terms));
}
/** While(predicate){terms}. */
export function whileLoop(pred: TermArg, ...terms: Uint8Array[]): Uint8Array {
  return cat([Op.While], withPkgLength(termArg(pred), ...terms));
}

/** Notify(object, value). */
export const notify = (obj: Uint8Array, value: TermArg) => cat([Op.Notify], obj, termArg(value));

/** Call a method: its NameString followed by the arguments. */
export const call = (path: string, ...args: TermArg[]) => cat(nameString(path), ...args.map(termArg));

/** CreateByte/Word/DWord/QWordField(buffer, byteIndex, name). */
export const createByteField = (buf: Uint8Array, at: TermArg, n: string) => cat([Op.CreateByteField], buf, termArg(at), nameString(n));
export const createWordField = (buf: Uint8Array, at: TermArg, n: string) => cat([Op.CreateWordField], buf, termArg(at), nameString(n));
export const createDWordField = (buf: Uint8Array, at: TermArg, n: string) => cat([Op.CreateDWordField], buf, termArg(at), nameString(n));
export const createQWordField = (buf: Uint8Array, at: TermArg, n: string) => cat([Op.CreateQWordField], buf, termArg(at), nameString(n));

/**
 * VarPackage(count){elements}: a package whose element count is a TermArg (also used by iasl for
 * packages with more than 255 elements).
 */
export function varPkg(count: TermArg, ...elements: PkgElement[]): Uint8Array {
  return cat([Op.VarPackage], withPkgLength(termArg(count), ...elements.map(element)));
}

// ---------------------------------------------------------------------------------------------------
// Operation regions and fields (§19.6.100 OperationRegion, §19.6.48 Field; encoding §20.2.5.2).

export const RegionSpace = { SystemMemory: 0, SystemIO: 1, PCI_Config: 2, EmbeddedControl: 3, SMBus: 4, SystemCMOS: 5, PciBarTarget: 6 } as const;

/** OperationRegion(name, space, offset, length). */
export function opRegion(n: string, space: number, offset: TermArg, length: TermArg): Uint8Array {
  return cat([Op.ExtOpPrefix, ExtOp.OpRegion], nameString(n), [space & 0xff], termArg(offset), termArg(length));
}

/** FieldFlags: AccessType bits 3:0, LockRule bit 4, UpdateRule bits 6:5. */
export const FieldAccess = { Any: 0, Byte: 1, Word: 2, DWord: 3, QWord: 4, Buffer: 5 } as const;
export const FieldUpdate = { Preserve: 0, WriteAsOnes: 1, WriteAsZeros: 2 } as const;
export interface FieldOptions { access?: number; lock?: boolean; update?: number }

/** One field unit: a named field of `bits` bits, or `{ offset }` (byte offset, as ASL's Offset()). */
export type FieldUnit = { name: string; bits: number } | { offset: number } | { skipBits: number };

/** A raw PkgLength-format number (the bit lengths inside field lists do not count their own bytes). */
function lengthValue(v: number): Uint8Array {
  if (v <= 0x3f) return Uint8Array.of(v);
  const extra = v < 2 ** 12 ? 1 : v < 2 ** 20 ? 2 : 3;
  const out = new Uint8Array(1 + extra);
  out[0] = (extra << 6) | (v & 0x0f);
  for (let i = 0; i < extra; i++) out[1 + i] = Math.floor(v / 2 ** (4 + 8 * i)) & 0xff;
  return out;
}

/** Field(region, access, lock, update){units}. Offsets become ReservedFields (bits to skip). */
export function field(region: string, o: FieldOptions, ...units: FieldUnit[]): Uint8Array {
  const flags = (o.access ?? FieldAccess.Any) | (o.lock ? 0x10 : 0) | ((o.update ?? FieldUpdate.Preserve) << 5);
  let bit = 0;
  const list: Uint8Array[] = [];
  for (const u of units) {
    if ("name" in u) {
      if (!Number.isInteger(u.bits) || u.bits < 1) throw new AmlError(`field ${u.name}: bad width ${u.bits}`);
      list.push(cat(nameSeg(u.name), lengthValue(u.bits)));
      bit += u.bits;
    } else {
      const skip = "offset" in u ? u.offset * 8 - bit : u.skipBits;
      if (skip < 0) throw new AmlError(`field offset moves backwards in ${region}`);
      if (skip > 0) list.push(cat([0x00], lengthValue(skip)));
      bit += skip;
    }
  }
  return cat([Op.ExtOpPrefix, ExtOp.Field], withPkgLength(nameString(region), Uint8Array.of(flags), ...list));
}
