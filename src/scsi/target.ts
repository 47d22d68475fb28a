/**
 * The SCSI target: one call per command. `executeCdb(target, mem, request, engine)` looks the CDB up in
 * the command table (./cdb.ts), checks the CDB length and control byte and that the LUN exists (except
 * for INQUIRY, REQUEST SENSE and REPORT LUNS), runs the handler and turns its outcome into SAM status,
 * sense data and transfer counts. Transport-independent: the caller (virtio-scsi here) supplies the
 * data-out and data-in buffers as guest segments already checked against guest memory, and maps
 * `overrun` and the counts onto its own response (residuals, VIRTIO_SCSI_S_OVERRUN).
 *
 * Never throws: a handler's ScsiError is CHECK CONDITION with its sense; anything unexpected (a bug, a
 * guest-memory error) is CHECK CONDITION / HARDWARE ERROR "internal target failure", with the message in
 * `error` for the caller's log. Stateless between calls (no pending sense, no unit attention), so any
 * thread holding the target's plain data can run commands.
 */
import { hostEngine, type BlockEngine } from "../block/io.ts";
import type { GuestMemory } from "../mem/guest-memory.ts";
import { lookup } from "./cdb.ts";
import { Overrun, type Cmd } from "./command.ts";
import { SENSE, STATUS } from "./constants.ts";
import { findLun, type ScsiTarget } from "./lun.ts";
import type { Seg } from "../block/segments.ts";
import { badCdb, fixedSense, ScsiError } from "./sense.ts";

export interface ScsiRequest {
  lun: number;
  cdb: Uint8Array;
  /** initiator → target buffers (write data, parameter lists) */
  dataOut: readonly Seg[];
  /** target → initiator buffers (read data, replies) */
  dataIn: readonly Seg[];
}

export interface ScsiResult {
  /** SAM status (GOOD, CHECK CONDITION) */
  status: number;
  /** fixed-format sense data with CHECK CONDITION */
  sense?: Uint8Array;
  /** bytes written into dataIn / taken from dataOut */
  inBytes: number;
  outBytes: number;
  /** the CDB wanted more data than the buffers hold; nothing else is meaningful */
  overrun: boolean;
  /** command name (or the opcode), for logs */
  name: string;
  /** why it failed, for the caller's (rate-limited) log */
  error?: string;
}

export function executeCdb(target: ScsiTarget, mem: GuestMemory, req: ScsiRequest, engine: BlockEngine = hostEngine): ScsiResult {
  const cdb = req.cdb;
  const c: Cmd = {
    cdb, target, lunNumber: req.lun, lun: findLun(target, req.lun), mem, engine,
    dataOut: req.dataOut, dataIn: req.dataIn, inBytes: 0, outBytes: 0,
  };
  let name = cdb.length ? `opcode 0x${cdb[0]!.toString(16).padStart(2, "0")}` : "empty CDB";
  try {
    if (!cdb.length) throw badCdb(0, undefined, "empty CDB");
    const e = lookup(cdb);
    name = e.name;
    if (cdb.length < e.len) throw badCdb(cdb.length, undefined, `${cdb.length}-byte CDB for a ${e.len}-byte command`);
    if (cdb[e.len - 1]! & 0x04) throw badCdb(e.len - 1, 2, "NACA is not supported");
    if (!c.lun && !e.anyLun) throw new ScsiError(SENSE.LUN_NOT_SUPPORTED, undefined, `LUN ${req.lun}`);
    e.handler(c);
    return { status: STATUS.GOOD, inBytes: c.inBytes, outBytes: c.outBytes, overrun: false, name };
  } catch (err) {
    if (err instanceof Overrun) return { status: STATUS.GOOD, inBytes: 0, outBytes: 0, overrun: true, name, error: `overrun: ${err.message}` };
    const se = err instanceof ScsiError ? err : new ScsiError(SENSE.INTERNAL_FAILURE, undefined, `internal error: ${(err as Error)?.message ?? String(err)}`);
    const error = c.note ? `${se.message} (${c.note})` : se.message;
    return { status: STATUS.CHECK_CONDITION, sense: fixedSense(se.code, se.field), inBytes: 0, outBytes: 0, overrun: false, name, error };
  }
}
