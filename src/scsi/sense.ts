/**
 * Sense data (SPC-4 §4.5.3, fixed format, response code 0x70: current error) and the error every
 * command handler throws to end a command with CHECK CONDITION. Handlers never build sense bytes
 * themselves: they throw `ScsiError(SENSE.X, { field })` and the dispatcher (./target.ts) turns it into
 * status + sense. `field` fills the sense-key-specific bytes (SKSV, C/D, bit and byte pointer) for
 * "invalid field in CDB / parameter list", so a guest's log says which byte was wrong.
 */
import { SENSE, type SenseCode } from "./constants.ts";

/** Length of the fixed-format sense data we produce (additional sense length 10). */
export const FIXED_SENSE_BYTES = 18;

export interface FieldPointer {
  /** byte of the CDB (cdb = true) or of the parameter list */
  byte: number;
  /** bit within the byte (0-7), when one bit is at fault */
  bit?: number;
  cdb: boolean;
}

export class ScsiError extends Error {
  constructor(readonly code: SenseCode, readonly field?: FieldPointer, detail?: string) {
    super(detail ? `${code.text}: ${detail}` : code.text);
  }
}

/** Invalid field in the CDB at `byte` (bit). */
export const badCdb = (byte: number, bit?: number, detail?: string) => new ScsiError(SENSE.INVALID_FIELD_IN_CDB, { byte, bit, cdb: true }, detail);
/** Invalid field in the parameter list at `byte` (bit). */
export const badParam = (byte: number, bit?: number, detail?: string) => new ScsiError(SENSE.INVALID_FIELD_IN_PARAM, { byte, bit, cdb: false }, detail);

/** Fixed-format sense data for a condition. */
export function fixedSense(code: SenseCode, field?: FieldPointer): Uint8Array {
  const b = new Uint8Array(FIXED_SENSE_BYTES);
  b[0] = 0x70; // current error, fixed format, INFORMATION not valid
  b[2] = code.key & 0x0f;
  b[7] = FIXED_SENSE_BYTES - 8; // additional sense length
  b[12] = code.asc;
  b[13] = code.ascq;
  if (field && field.byte >= 0 && field.byte <= 0xffff) {
    b[15] = 0x80 | (field.cdb ? 0x40 : 0) | (field.bit !== undefined ? 0x08 | (field.bit & 7) : 0);
    b[16] = field.byte >> 8;
    b[17] = field.byte & 0xff;
  }
  return b;
}

/** Decoded fixed sense (tests, logs). */
export function parseSense(b: Uint8Array): { key: number; asc: number; ascq: number; field?: FieldPointer } {
  const out: { key: number; asc: number; ascq: number; field?: FieldPointer } = { key: b[2]! & 0x0f, asc: b[12] ?? 0, ascq: b[13] ?? 0 };
  if ((b[15] ?? 0) & 0x80) {
    out.field = { byte: (b[16]! << 8) | b[17]!, cdb: (b[15]! & 0x40) !== 0, ...(b[15]! & 0x08 ? { bit: b[15]! & 7 } : {}) };
  }
  return out;
}
