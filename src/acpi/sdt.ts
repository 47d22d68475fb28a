/**
 * Common ACPI table pieces (ACPI 6.x §5.2): the System Description Table header, the Generic Address
 * Structure, the RSDP and the FACS.
 */
import { checksum8, putAscii } from "../loader/blob.ts";

export const ACPI_OEM_ID = "TSBHYV";
export const ACPI_OEM_TABLE_ID = "TSBHYVE";
export const ACPI_CREATOR_ID = "TSBH";

export const SDT_HEADER_BYTES = 36;
export const RSDP_BYTES = 36;
export const FACS_BYTES = 64;
/** Offset of the checksum byte in an SDT header. */
export const SDT_CHECKSUM = 9;
/** RSDP field offsets. */
export const RSDP = { CHECKSUM: 8, RSDT: 16, LENGTH: 20, XSDT: 24, EXT_CHECKSUM: 32 } as const;

export const AddressSpace = { SYSTEM_MEMORY: 0, SYSTEM_IO: 1, PCI_CONFIG: 2 } as const;
/** Access size field of a Generic Address Structure. */
export const AccessSize = { UNDEFINED: 0, BYTE: 1, WORD: 2, DWORD: 3, QWORD: 4 } as const;

export interface Gas { space: number; bitWidth: number; bitOffset?: number; accessSize: number; address: number | bigint }

/** 12-byte Generic Address Structure. */
export function gas(g: Gas): Uint8Array {
  const out = new Uint8Array(12);
  const dv = new DataView(out.buffer);
  out[0] = g.space; out[1] = g.bitWidth; out[2] = g.bitOffset ?? 0; out[3] = g.accessSize;
  dv.setBigUint64(4, BigInt(g.address), true);
  return out;
}

export interface SdtOptions { oemId?: string; oemTableId?: string; oemRevision?: number }

/** A complete System Description Table: 36-byte header + body, checksum filled in. */
export function sdt(signature: string, revision: number, body: Uint8Array, o: SdtOptions = {}): Uint8Array {
  if (!/^[A-Z0-9_]{4}$/.test(signature)) throw new Error(`bad ACPI signature "${signature}"`);
  const t = new Uint8Array(SDT_HEADER_BYTES + body.length);
  const dv = new DataView(t.buffer);
  putAscii(t, 0, signature, 4);
  dv.setUint32(4, t.length, true);
  t[8] = revision;
  putAscii(t, 10, o.oemId ?? ACPI_OEM_ID, 6);
  putAscii(t, 16, o.oemTableId ?? ACPI_OEM_TABLE_ID, 8);
  dv.setUint32(24, o.oemRevision ?? 1, true);
  putAscii(t, 28, ACPI_CREATOR_ID, 4);
  dv.setUint32(32, 1, true); // creator revision
  t.set(body, SDT_HEADER_BYTES);
  t[SDT_CHECKSUM] = checksum8(t);
  return t;
}

/** Recompute the checksum(s) of a table in place (SDT, or RSDP with both of its checksums; FACS has none). */
export function fixChecksum(t: Uint8Array): void {
  const sig = String.fromCharCode(...t.subarray(0, 4));
  if (sig === "FACS") return;
  if (sig === "RSD ") {
    t[RSDP.CHECKSUM] = 0; t[RSDP.CHECKSUM] = checksum8(t.subarray(0, 20));
    t[RSDP.EXT_CHECKSUM] = 0; t[RSDP.EXT_CHECKSUM] = checksum8(t);
    return;
  }
  t[SDT_CHECKSUM] = 0;
  t[SDT_CHECKSUM] = checksum8(t);
}

/** Root System Description Pointer, revision 2 (ACPI 2.0+), 36 bytes. */
export function rsdp(rsdtAddr: number, xsdtAddr: number, oemId = ACPI_OEM_ID): Uint8Array {
  const t = new Uint8Array(RSDP_BYTES);
  const dv = new DataView(t.buffer);
  putAscii(t, 0, "RSD PTR ", 8);
  putAscii(t, 9, oemId, 6);
  t[15] = 2;
  dv.setUint32(RSDP.RSDT, rsdtAddr, true);
  dv.setUint32(RSDP.LENGTH, RSDP_BYTES, true);
  dv.setBigUint64(RSDP.XSDT, BigInt(xsdtAddr), true);
  fixChecksum(t);
  return t;
}

/** Firmware ACPI Control Structure (no checksum; 64 bytes; must be 64-byte aligned). */
export function facs(): Uint8Array {
  const t = new Uint8Array(FACS_BYTES);
  const dv = new DataView(t.buffer);
  putAscii(t, 0, "FACS", 4);
  dv.setUint32(4, FACS_BYTES, true);
  dv.setUint32(8, 0, true); // hardware signature
  t[32] = 2; // version
  return t;
}
