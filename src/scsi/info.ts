/**
 * Commands that describe the unit or the target without touching the medium: TEST UNIT READY,
 * REQUEST SENSE, READ CAPACITY(10) and (16), REPORT LUNS, START STOP UNIT, PREVENT ALLOW MEDIUM REMOVAL.
 *
 * REQUEST SENSE: sense is returned with CHECK CONDITION itself (autosense, as every transport of ours
 * does), so no sense is ever pending: the answer is NO SENSE, or LOGICAL UNIT NOT SUPPORTED for a LUN
 * that is not there (with GOOD status, SPC-4 §6.39).
 */
import { SENSE } from "./constants.ts";
import { be32, put32, put64, reply, type Cmd } from "./command.ts";
import { badCdb, fixedSense } from "./sense.ts";

export function testUnitReady(_c: Cmd): void {}

export function requestSense(c: Cmd): void {
  if (c.cdb[1]! & 0x01) throw badCdb(1, 0, "DESC: descriptor-format sense is not supported");
  reply(c, fixedSense(c.lun ? SENSE.NO_SENSE : SENSE.LUN_NOT_SUPPORTED), c.cdb[4]!);
}

export function readCapacity10(c: Cmd): void {
  const l = c.lun!;
  if (c.cdb[8]! & 0x01) throw badCdb(8, 0, "PMI is obsolete");
  if (be32(c.cdb, 2)) throw badCdb(2, undefined, "LBA must be 0");
  const b = new Uint8Array(8);
  const last = Math.max(0, l.blocks - 1);
  put32(b, 0, last > 0xffffffff ? 0xffffffff : last);
  put32(b, 4, l.blockSize);
  reply(c, b, 8);
}

export function readCapacity16(c: Cmd): void {
  const l = c.lun!;
  const b = new Uint8Array(32);
  put64(b, 0, Math.max(0, l.blocks - 1));
  put32(b, 8, l.blockSize);
  b[13] = l.physExp & 0x0f; // logical blocks per physical block exponent
  b[14] = l.disk.discard ? 0x80 : 0; // LBPME
  reply(c, b, be32(c.cdb, 10));
}

/** REPORT LUNS (SPC-4 §6.33): single-level LUNs in peripheral device addressing. */
export function reportLuns(c: Cmd): void {
  const select = c.cdb[2]!, alloc = be32(c.cdb, 6);
  if (alloc < 16) throw badCdb(6, undefined, `allocation length ${alloc} is less than 16`);
  if (![0x00, 0x01, 0x02].includes(select)) throw badCdb(2, undefined, `select report 0x${select.toString(16)}`);
  const luns = select === 0x01 ? [] : c.target.luns.map((l) => l.lun); // 0x01: well-known LUNs only (none)
  const b = new Uint8Array(8 + 8 * luns.length);
  put32(b, 0, 8 * luns.length);
  luns.forEach((n, i) => { b[8 + 8 * i] = n >> 8; b[9 + 8 * i] = n & 0xff; });
  reply(c, b, alloc);
}

/** Nothing to spin up or eject; the power condition and LOEJ are accepted and ignored. */
export function startStopUnit(_c: Cmd): void {}
/** The medium is not removable: prevent/allow has nothing to lock. */
export function preventAllow(_c: Cmd): void {}
