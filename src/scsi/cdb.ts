/**
 * The command table: every operation code (and service action) this target implements, as data —
 * name, CDB length, data direction, whether it needs an existing LUN / a writable one, and the handler.
 * The dispatcher (./target.ts) looks commands up here; REPORT SUPPORTED OPERATION CODES (implemented
 * here, since it reports this very table) lists it. An opcode that is not in the table is INVALID
 * COMMAND OPERATION CODE.
 */
import { OP, SA, SENSE } from "./constants.ts";
import { be32, put16, put32, reply, type Cmd } from "./command.ts";
import { inquiry } from "./inquiry.ts";
import { preventAllow, readCapacity10, readCapacity16, reportLuns, requestSense, startStopUnit, testUnitReady } from "./info.ts";
import { read, synchronizeCache, unmap, verify, write, writeSame } from "./io.ts";
import { modeSelect10, modeSelect6, modeSense10, modeSense6 } from "./mode.ts";
import { badCdb, ScsiError } from "./sense.ts";

export type Direction = "none" | "in" | "out";

export interface CdbDef {
  op: number;
  /** service action (low 5 bits of byte 1) for opcodes that have them */
  sa?: number;
  name: string;
  /** CDB length in bytes */
  len: number;
  dir: Direction;
  handler(c: Cmd): void;
  /** also served for a LUN that does not exist (INQUIRY, REQUEST SENSE, REPORT LUNS) */
  anyLun?: boolean;
}

const d = (op: number, name: string, len: number, dir: Direction, handler: (c: Cmd) => void, extra: Partial<CdbDef> = {}): CdbDef =>
  ({ op, name, len, dir, handler, ...extra });

export const CDB_TABLE: readonly CdbDef[] = [
  d(OP.TEST_UNIT_READY, "TEST UNIT READY", 6, "none", testUnitReady),
  d(OP.REQUEST_SENSE, "REQUEST SENSE", 6, "in", requestSense, { anyLun: true }),
  d(OP.READ_6, "READ(6)", 6, "in", read),
  d(OP.WRITE_6, "WRITE(6)", 6, "out", write),
  d(OP.INQUIRY, "INQUIRY", 6, "in", inquiry, { anyLun: true }),
  d(OP.MODE_SELECT_6, "MODE SELECT(6)", 6, "out", modeSelect6),
  d(OP.MODE_SENSE_6, "MODE SENSE(6)", 6, "in", modeSense6),
  d(OP.START_STOP_UNIT, "START STOP UNIT", 6, "none", startStopUnit),
  d(OP.PREVENT_ALLOW, "PREVENT ALLOW MEDIUM REMOVAL", 6, "none", preventAllow),
  d(OP.READ_CAPACITY_10, "READ CAPACITY(10)", 10, "in", readCapacity10),
  d(OP.READ_10, "READ(10)", 10, "in", read),
  d(OP.WRITE_10, "WRITE(10)", 10, "out", write),
  d(OP.VERIFY_10, "VERIFY(10)", 10, "none", verify),
  d(OP.SYNCHRONIZE_CACHE_10, "SYNCHRONIZE CACHE(10)", 10, "none", synchronizeCache),
  d(OP.WRITE_SAME_10, "WRITE SAME(10)", 10, "out", writeSame),
  d(OP.UNMAP, "UNMAP", 10, "out", unmap),
  d(OP.MODE_SELECT_10, "MODE SELECT(10)", 10, "out", modeSelect10),
  d(OP.MODE_SENSE_10, "MODE SENSE(10)", 10, "in", modeSense10),
  d(OP.READ_16, "READ(16)", 16, "in", read),
  d(OP.WRITE_16, "WRITE(16)", 16, "out", write),
  d(OP.VERIFY_16, "VERIFY(16)", 16, "none", verify),
  d(OP.SYNCHRONIZE_CACHE_16, "SYNCHRONIZE CACHE(16)", 16, "none", synchronizeCache),
  d(OP.WRITE_SAME_16, "WRITE SAME(16)", 16, "out", writeSame),
  d(OP.SERVICE_ACTION_IN_16, "READ CAPACITY(16)", 16, "in", readCapacity16, { sa: SA.READ_CAPACITY_16 }),
  d(OP.REPORT_LUNS, "REPORT LUNS", 12, "in", reportLuns, { anyLun: true }),
  d(OP.MAINTENANCE_IN, "REPORT SUPPORTED OPERATION CODES", 12, "in", reportOpcodes, { sa: SA.REPORT_SUPPORTED_OPCODES }),
  d(OP.READ_12, "READ(12)", 12, "in", read),
  d(OP.WRITE_12, "WRITE(12)", 12, "out", write),
];

const BY_OP = new Map<number, CdbDef[]>();
for (const e of CDB_TABLE) BY_OP.set(e.op, [...(BY_OP.get(e.op) ?? []), e]);

/** Opcodes whose byte 1 carries a service action. */
const HAS_SA = new Set(CDB_TABLE.filter((e) => e.sa !== undefined).map((e) => e.op));

/** The table entry for a CDB; throws INVALID OPCODE / INVALID FIELD (service action). */
export function lookup(cdb: Uint8Array): CdbDef {
  const list = BY_OP.get(cdb[0]!);
  if (!list) throw new ScsiError(SENSE.INVALID_OPCODE, undefined, `opcode 0x${cdb[0]!.toString(16)}`);
  if (!HAS_SA.has(cdb[0]!)) return list[0]!;
  const sa = (cdb[1] ?? 0) & 0x1f;
  const e = list.find((x) => x.sa === sa);
  if (!e) throw badCdb(1, undefined, `service action 0x${sa.toString(16)} of opcode 0x${cdb[0]!.toString(16)}`);
  return e;
}

/** CDB usage data for one command: the opcode, then every bit of the other bytes may be used. */
function usage(e: CdbDef): Uint8Array {
  const u = new Uint8Array(e.len).fill(0xff);
  u[0] = e.op;
  if (e.sa !== undefined) u[1] = 0xe0 | e.sa;
  u[e.len - 1] = 0x03; // control byte: NACA and LINK are not supported
  return u;
}

/** REPORT SUPPORTED OPERATION CODES (SPC-4 §6.35), reporting options 0, 1, 2 (and SPC-5's 3); no timeouts (RCTD). */
function reportOpcodes(c: Cmd): void {
  const cdb = c.cdb, opts = cdb[2]! & 0x07, rop = cdb[3]!, rsa = (cdb[4]! << 8) | cdb[5]!, alloc = be32(cdb, 6);
  if (cdb[2]! & 0x80) throw badCdb(2, 7, "RCTD: command timeouts are not reported");
  if (opts === 0) {
    const b = new Uint8Array(4 + 8 * CDB_TABLE.length);
    put32(b, 0, 8 * CDB_TABLE.length);
    CDB_TABLE.forEach((e, i) => {
      const o = 4 + 8 * i;
      b[o] = e.op;
      put16(b, o + 2, e.sa ?? 0);
      b[o + 5] = e.sa !== undefined ? 0x01 : 0; // SERVACTV
      put16(b, o + 6, e.len);
    });
    reply(c, b, alloc);
    return;
  }
  if (opts < 1 || opts > 3) throw badCdb(2, 0, `reporting options ${opts}`);
  const list = BY_OP.get(rop);
  const hasSa = HAS_SA.has(rop);
  // option 1 on a command with service actions, or 2 on one without: invalid field (SPC-4); option 3
  // (SPC-5) takes either: with no service actions, a requested one other than 0 is "not supported"
  if (list && opts !== 3 && (opts === 1) === hasSa) throw badCdb(2, 0, `reporting options ${opts} for opcode 0x${rop.toString(16)}`);
  const e = list?.find((x) => (hasSa ? x.sa === rsa : opts === 1 || rsa === 0));
  const u = e ? usage(e) : new Uint8Array(0);
  const b = new Uint8Array(4 + u.length);
  b[1] = e ? 0x03 : 0x01; // SUPPORT: supported as the standard says / not supported
  put16(b, 2, u.length);
  b.set(u, 4);
  reply(c, b, alloc);
}
