/**
 * The 9P2000.L message codec, driven by the tables in protocol.ts. Decoding reads a message's bytes (a
 * bounded copy out of the chain) field by field; any field running past the message's size, a string
 * longer than allowed, or an array over its limit is a ProtocolError carrying the errno for the
 * guest's Rlerror — never an exception out of the device. Encoding builds an R-message from named
 * values; strings and byte payloads are Uint8Arrays (9P names are bytes, not necessarily UTF-8).
 */
import { constants } from "node:os";
import { HEADER_BYTES, MAXWELEM, QID_BYTES, R, type FieldSpec, type RName } from "./protocol.ts";

const { EPROTO, EINVAL, ENAMETOOLONG } = constants.errno;

export class ProtocolError extends Error {
  constructor(readonly errno: number, message: string) { super(message); }
}

export interface Qid { type: number; version: number; path: bigint }
export type FieldValue = number | bigint | Uint8Array | Uint8Array[] | Qid | Qid[];
export type Fields = Record<string, FieldValue>;

/** Longest string the codec accepts in a T-message (a symlink target: PATH_MAX). */
export const MAX_STRING = 4096;

/** The 7-byte header: size, type, tag. */
export function decodeHeader(b: Uint8Array): { size: number; type: number; tag: number } {
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
  return { size: v.getUint32(0, true), type: v.getUint8(4), tag: v.getUint16(5, true) };
}

/** Decode the fields of `spec` from a whole message `b` (header included). */
export function decodeFields(b: Uint8Array, spec: FieldSpec): Fields {
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
  let o = HEADER_BYTES;
  const need = (n: number, what: string) => {
    if (o + n > b.length) throw new ProtocolError(EPROTO, `${what} runs past the end of the ${b.length}-byte message`);
  };
  const str = (what: string): Uint8Array => {
    need(2, what);
    const n = v.getUint16(o, true);
    o += 2;
    if (n > MAX_STRING) throw new ProtocolError(ENAMETOOLONG, `${what}: ${n}-byte string`);
    need(n, what);
    const s = b.slice(o, o + n);
    o += n;
    return s;
  };
  const out: Fields = {};
  for (const [name, kind] of spec) {
    switch (kind) {
      case "u8": need(1, name); out[name] = v.getUint8(o); o += 1; break;
      case "u16": need(2, name); out[name] = v.getUint16(o, true); o += 2; break;
      case "u32": need(4, name); out[name] = v.getUint32(o, true); o += 4; break;
      case "u64": need(8, name); out[name] = v.getBigUint64(o, true); o += 8; break;
      case "str": out[name] = str(name); break;
      case "qid": {
        need(QID_BYTES, name);
        out[name] = { type: v.getUint8(o), version: v.getUint32(o + 1, true), path: v.getBigUint64(o + 5, true) };
        o += QID_BYTES;
        break;
      }
      case "strs": {
        need(2, name);
        const n = v.getUint16(o, true);
        o += 2;
        if (n > MAXWELEM) throw new ProtocolError(EINVAL, `${name}: ${n} elements (at most ${MAXWELEM})`);
        const a: Uint8Array[] = [];
        for (let i = 0; i < n; i++) a.push(str(`${name}[${i}]`));
        out[name] = a;
        break;
      }
      case "qids": {
        need(2, name);
        const n = v.getUint16(o, true);
        o += 2;
        if (n > MAXWELEM) throw new ProtocolError(EINVAL, `${name}: ${n} elements (at most ${MAXWELEM})`);
        const a: Qid[] = [];
        for (let i = 0; i < n; i++) {
          need(QID_BYTES, name);
          a.push({ type: v.getUint8(o), version: v.getUint32(o + 1, true), path: v.getBigUint64(o + 5, true) });
          o += QID_BYTES;
        }
        out[name] = a;
        break;
      }
    }
  }
  return out;
}

function fieldBytes(kind: string, val: FieldValue): number {
  switch (kind) {
    case "u8": return 1;
    case "u16": return 2;
    case "u32": return 4;
    case "u64": return 8;
    case "str": return 2 + (val as Uint8Array).length;
    case "qid": return QID_BYTES;
    case "strs": return 2 + (val as Uint8Array[]).reduce((a, s) => a + 2 + s.length, 0);
    case "qids": return 2 + QID_BYTES * (val as Qid[]).length;
  }
  return 0;
}

/** Write a qid at o. */
export function putQid(v: DataView, o: number, q: Qid): void {
  v.setUint8(o, q.type);
  v.setUint32(o + 1, q.version >>> 0, true);
  v.setBigUint64(o + 5, BigInt.asUintN(64, q.path), true);
}

/** Encode a whole R-message; `extra` bytes of room after the fields are left for the caller (size counts them). */
export function encode(name: RName, tag: number, vals: Fields, extra = 0): Uint8Array {
  const { type, fields } = R[name];
  const spec = fields as FieldSpec;
  let size = HEADER_BYTES;
  for (const [f, kind] of spec) size += fieldBytes(kind, vals[f]!);
  const b = new Uint8Array(size);
  const v = new DataView(b.buffer);
  v.setUint32(0, size + extra, true);
  v.setUint8(4, type);
  v.setUint16(5, tag, true);
  let o = HEADER_BYTES;
  for (const [f, kind] of spec) {
    const x = vals[f]!;
    switch (kind) {
      case "u8": v.setUint8(o, x as number); o += 1; break;
      case "u16": v.setUint16(o, x as number, true); o += 2; break;
      case "u32": v.setUint32(o, Number(x) >>> 0, true); o += 4; break;
      case "u64": v.setBigUint64(o, BigInt.asUintN(64, BigInt(x as number | bigint)), true); o += 8; break;
      case "str": { const s = x as Uint8Array; v.setUint16(o, s.length, true); b.set(s, o + 2); o += 2 + s.length; break; }
      case "qid": putQid(v, o, x as Qid); o += QID_BYTES; break;
      case "strs": {
        const a = x as Uint8Array[];
        v.setUint16(o, a.length, true); o += 2;
        for (const s of a) { v.setUint16(o, s.length, true); b.set(s, o + 2); o += 2 + s.length; }
        break;
      }
      case "qids": {
        const a = x as Qid[];
        v.setUint16(o, a.length, true); o += 2;
        for (const q of a) { putQid(v, o, q); o += QID_BYTES; }
        break;
      }
    }
  }
  return b;
}

/** Rlerror for a tag. */
export function lerror(tag: number, errno: number): Uint8Array {
  return encode("Rlerror", tag, { ecode: errno });
}
