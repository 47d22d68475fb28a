/**
 * What a command handler gets (`Cmd`) and the helpers every handler uses to move its data: `reply` for
 * data-in built in JS (clipped to the allocation length and counted), `params` for a parameter list from
 * data-out, and the CDB field readers. A handler ends the command with CHECK CONDITION by throwing a
 * `ScsiError` (./sense.ts), or with a transport-level overrun (`Overrun`) when the CDB asks for more
 * data than the initiator's buffers hold; returning normally is GOOD.
 */
import type { BlockEngine } from "../block/io.ts";
import type { GuestMemory } from "../mem/guest-memory.ts";
import type { ScsiLun, ScsiTarget } from "./lun.ts";
import { gather, scatter, segBytes, type Seg } from "../block/segments.ts";

/** The CDB needs more data than the buffers hold (virtio-scsi: VIRTIO_SCSI_S_OVERRUN). */
export class Overrun extends Error {}

export interface Cmd {
  cdb: Uint8Array;
  target: ScsiTarget;
  /** the addressed LUN number, and its unit (undefined: no such LUN; only `anyLun` handlers see that) */
  lunNumber: number;
  lun: ScsiLun | undefined;
  mem: GuestMemory;
  engine: BlockEngine;
  dataOut: readonly Seg[];
  dataIn: readonly Seg[];
  /** bytes moved so far (set by the helpers and the I/O handlers) */
  inBytes: number;
  outBytes: number;
  /** host error text for the log (a MEDIUM ERROR's cause) */
  note?: string;
}

/** Send `data` (a reply of its natural length) to the initiator, at most `alloc` bytes. */
export function reply(c: Cmd, data: Uint8Array, alloc: number): void {
  const n = Math.min(data.length, alloc);
  if (n > segBytes(c.dataIn)) throw new Overrun(`${n} bytes of data-in, buffers hold ${segBytes(c.dataIn)}`);
  c.inBytes = scatter(c.mem, c.dataIn, data.subarray(0, n));
}

/** Take a `len`-byte parameter list from data-out. */
export function params(c: Cmd, len: number): Uint8Array {
  if (len > segBytes(c.dataOut)) throw new Overrun(`parameter list of ${len} bytes, data-out holds ${segBytes(c.dataOut)}`);
  c.outBytes = len;
  return gather(c.mem, c.dataOut, len);
}

/** Big-endian CDB fields. */
export const be16 = (b: Uint8Array, o: number): number => ((b[o] ?? 0) << 8) | (b[o + 1] ?? 0);
export const be24 = (b: Uint8Array, o: number): number => ((b[o] ?? 0) << 16) | be16(b, o + 1);
export const be32 = (b: Uint8Array, o: number): number => ((b[o] ?? 0) * 0x1000000) + be24(b, o + 1);
export const be64 = (b: Uint8Array, o: number): bigint => (BigInt(be32(b, o)) << 32n) | BigInt(be32(b, o + 4));

/** Big-endian writers into a reply buffer. */
export function put16(b: Uint8Array, o: number, v: number): void { b[o] = (v >>> 8) & 0xff; b[o + 1] = v & 0xff; }
export function put32(b: Uint8Array, o: number, v: number): void { put16(b, o, Math.floor(v / 0x10000) & 0xffff); put16(b, o + 2, v & 0xffff); }
export function put64(b: Uint8Array, o: number, v: number | bigint): void {
  const x = BigInt(v);
  put32(b, o, Number((x >> 32n) & 0xffffffffn));
  put32(b, o + 4, Number(x & 0xffffffffn));
}
/** ASCII, space padded to `len` (INQUIRY strings). */
export function putAscii(b: Uint8Array, o: number, s: string, len: number): void {
  for (let i = 0; i < len; i++) b[o + i] = i < s.length ? s.charCodeAt(i) & 0x7f : 0x20;
}
