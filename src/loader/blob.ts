/**
 * A block of bytes destined for a fixed guest-physical address (MP table, ACPI tables, ...). Builders
 * return these as plain data so they can be tested without guest memory and written in one go.
 */
import type { GuestMemory } from "../mem/guest-memory.ts";

export interface PlacedBlob {
  addr: number;
  bytes: Uint8Array;
}

/** Write every blob through GuestMemory; all ranges are checked before any byte is written. */
export function writeBlobs(mem: GuestMemory, blobs: readonly PlacedBlob[]): void {
  for (const b of blobs) {
    if (!mem.valid(b.addr, b.bytes.length)) {
      throw new Error(`table at 0x${b.addr.toString(16)} (+${b.bytes.length}) is outside guest RAM`);
    }
  }
  for (const b of blobs) mem.writeBytes(b.addr, b.bytes);
}

/** 8-bit two's-complement checksum byte that makes `bytes` sum to zero (mod 256). */
export function checksum8(bytes: Uint8Array): number {
  let s = 0;
  for (const b of bytes) s = (s + b) & 0xff;
  return (0x100 - s) & 0xff;
}

/** Sum of bytes mod 256 (0 for a correctly checksummed table). */
export function sum8(bytes: Uint8Array): number {
  let s = 0;
  for (const b of bytes) s = (s + b) & 0xff;
  return s;
}

/** Write an ASCII string into `out` at `off`, padded with `pad` to `len` bytes (truncated if longer). */
export function putAscii(out: Uint8Array, off: number, s: string, len: number, pad = 0x20): void {
  for (let i = 0; i < len; i++) {
    const c = i < s.length ? s.charCodeAt(i) : pad;
    out[off + i] = c < 0x80 ? c : 0x3f;
  }
}
