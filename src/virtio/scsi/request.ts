/**
 * The virtio-scsi request paths (virtio 1.2 §5.6.6): command requests on the request queues, task
 * management and asynchronous-notification requests on the control queue.
 *
 * Command request: the device-readable part is virtio_scsi_cmd_req (19 bytes + cdb_size) followed by
 * data-out; the device-writable part is virtio_scsi_cmd_resp (12 bytes + sense_size) followed by
 * data-in. The header is parsed here; the CDB goes to the transport-independent SCSI target
 * (src/scsi/), which moves data with preadv/pwritev straight between the disk and the guest's buffers.
 * Outcomes map onto the response:
 * - lun[0] ≠ 1 or a target other than 0 → BAD_TARGET (no command is run);
 * - a LUN that is not configured → the target's answer for a missing LUN (INQUIRY peripheral qualifier 3,
 *   otherwise CHECK CONDITION, LOGICAL UNIT NOT SUPPORTED);
 * - the CDB wants more data than the chain holds → OVERRUN (§5.6.6.1);
 * - a header shorter than 19 + cdb_size → FAILURE;
 * - otherwise OK with the SAM status, sense (sense_len bytes, at most sense_size), and residual = the
 *   data buffer bytes not transferred.
 *
 * Guests are hostile: every segment is checked against guest memory before use (the virtqueue already
 * does; these functions are safe on their own). A chain whose writable part cannot hold the 12 fixed
 * response bytes (or is not guest RAM) has nowhere to put a response: it is returned with used length 0
 * and `response: null`, and the device logs it. Nothing here throws.
 *
 * Control queue: TMFs complete at once — requests run synchronously, so by the time a TMF is seen no
 * task is in flight: aborts, clears and resets answer FUNCTION_COMPLETE; QUERY TASK / QUERY TASK SET
 * answer FUNCTION_COMPLETE (no such task); unknown subtypes FUNCTION_REJECTED. AN_QUERY / AN_SUBSCRIBE
 * answer OK with event_actual 0 (no asynchronous events are supported).
 */
import { hostEngine, type BlockEngine } from "../../block/io.ts";
import type { GuestMemory } from "../../mem/guest-memory.ts";
import { executeCdb } from "../../scsi/target.ts";
import { gather, scatter, segBytes, segsOk, skipSegs, takeSegs, type Seg } from "../../block/segments.ts";
import {
  AN_REQ_BYTES, AN_RESP_BYTES, CMD_REQ, CMD_RESP, CMD_RESP_HDR, CTRL_T, decodeLun, SCSI_S, TMF, TMF_REQ_BYTES, type ScsiDeviceInfo,
} from "./device.ts";

export interface Chain {
  readable: readonly Seg[];
  writable: readonly Seg[];
}

export interface ScsiReqResult {
  /** response code written, or null: nowhere to write it (chain returned with used 0) */
  response: number | null;
  /** SAM status (command requests that ran) */
  status?: number;
  /** bytes written into the chain (used-ring length) */
  used: number;
  /** what ran (command name, TMF), for logs */
  what: string;
  error?: string;
}

const drop = (what: string, error: string): ScsiReqResult => ({ response: null, used: 0, what, error });

/** Execute one command request. Never throws. */
export function executeCommand(dev: ScsiDeviceInfo, mem: GuestMemory, chain: Chain, sizes: { sense: number; cdb: number },
  engine: BlockEngine = hostEngine): ScsiReqResult {
  if (!segsOk(mem, chain.writable, true)) return drop("command", "a device-writable buffer is not guest RAM");
  const wbytes = segBytes(chain.writable);
  if (wbytes < CMD_RESP_HDR) return drop("command", `device-writable part of ${wbytes} bytes cannot hold a response`);
  const respLen = Math.min(CMD_RESP_HDR + sizes.sense, wbytes);
  const resp = new Uint8Array(respLen), rv = new DataView(resp.buffer);
  const respSegs = takeSegs(chain.writable, respLen);
  const dataIn = skipSegs(chain.writable, CMD_RESP_HDR + sizes.sense);
  const finish = (r: ScsiReqResult): ScsiReqResult => {
    try {
      resp[CMD_RESP.response] = r.response!;
      scatter(mem, respSegs, resp);
      return r;
    } catch (e) {
      return drop(r.what, `writing the response: ${(e as Error).message}`);
    }
  };
  const fail = (what: string, response: number, error?: string) => finish({ response, used: respLen, what, ...(error ? { error } : {}) });
  try {
    if (!segsOk(mem, chain.readable, false)) return fail("command", SCSI_S.FAILURE, "a device-readable buffer is outside guest memory");
    const hdrLen = CMD_REQ.cdb + sizes.cdb;
    const rbytes = segBytes(chain.readable);
    if (rbytes < hdrLen) return fail("command", SCSI_S.FAILURE, `request header of ${rbytes} bytes, expected ${hdrLen} (cdb_size ${sizes.cdb})`);
    const hdr = gather(mem, chain.readable, hdrLen);
    const { target, lun } = decodeLun(hdr.subarray(CMD_REQ.lun, CMD_REQ.lun + 8));
    if (target !== 0) return fail("command", SCSI_S.BAD_TARGET, target === undefined ? `lun[0] = ${hdr[0]}, expected 1` : `target ${target}`);
    const dataOut = skipSegs(chain.readable, hdrLen);
    const r = executeCdb(dev.target, mem, { lun: lun ?? -1, cdb: hdr.subarray(CMD_REQ.cdb, hdrLen), dataOut, dataIn }, engine);
    if (r.overrun) return fail(r.name, SCSI_S.OVERRUN, r.error);
    const senseLen = Math.min(r.sense?.length ?? 0, sizes.sense, respLen - CMD_RESP_HDR);
    const inBuf = segBytes(dataIn), outBuf = segBytes(dataOut);
    const resid = inBuf ? inBuf - r.inBytes : outBuf - r.outBytes;
    rv.setUint32(CMD_RESP.sense_len, senseLen, true);
    rv.setUint32(CMD_RESP.resid, Math.max(0, resid) >>> 0, true);
    resp[CMD_RESP.status] = r.status;
    if (senseLen) resp.set(r.sense!.subarray(0, senseLen), CMD_RESP.sense);
    return finish({ response: SCSI_S.OK, status: r.status, used: respLen + r.inBytes, what: r.name, ...(r.error ? { error: r.error } : {}) });
  } catch (e) {
    return fail("command", SCSI_S.FAILURE, `internal error: ${(e as Error)?.message ?? String(e)}`);
  }
}

const TMF_NAMES = Object.fromEntries(Object.entries(TMF).map(([k, v]) => [v, k])) as Record<number, string>;

/** Execute one control-queue request. Never throws. */
export function executeControl(mem: GuestMemory, chain: Chain): ScsiReqResult {
  try {
    if (!segsOk(mem, chain.writable, true)) return drop("control", "a device-writable buffer is not guest RAM");
    const wbytes = segBytes(chain.writable);
    if (wbytes < 1) return drop("control", "no device-writable byte for the response");
    const answer = (what: string, bytes: Uint8Array, error?: string): ScsiReqResult => {
      scatter(mem, chain.writable, bytes);
      return { response: bytes[bytes.length - 1]!, used: Math.min(bytes.length, wbytes), what, ...(error ? { error } : {}) };
    };
    if (!segsOk(mem, chain.readable, false)) return answer("control", Uint8Array.of(SCSI_S.FAILURE), "a device-readable buffer is outside guest memory");
    const rbytes = segBytes(chain.readable);
    if (rbytes < 4) return answer("control", Uint8Array.of(SCSI_S.FAILURE), `control request of ${rbytes} bytes`);
    const req = gather(mem, chain.readable, Math.min(rbytes, TMF_REQ_BYTES));
    const dv = new DataView(req.buffer);
    const type = dv.getUint32(0, true);
    if (type === CTRL_T.TMF) {
      if (rbytes < TMF_REQ_BYTES) return answer("TMF", Uint8Array.of(SCSI_S.FAILURE), `TMF request of ${rbytes} bytes`);
      const sub = dv.getUint32(4, true);
      const what = `TMF ${TMF_NAMES[sub] ?? sub}`;
      if (decodeLun(req.subarray(8, 16)).target !== 0) return answer(what, Uint8Array.of(SCSI_S.BAD_TARGET));
      return answer(what, Uint8Array.of(TMF_NAMES[sub] !== undefined ? SCSI_S.FUNCTION_COMPLETE : SCSI_S.FUNCTION_REJECTED),
        TMF_NAMES[sub] !== undefined ? undefined : `unknown TMF subtype ${sub}`);
    }
    if (type === CTRL_T.AN_QUERY || type === CTRL_T.AN_SUBSCRIBE) {
      const what = type === CTRL_T.AN_QUERY ? "AN_QUERY" : "AN_SUBSCRIBE";
      if (wbytes < AN_RESP_BYTES) return answer(what, Uint8Array.of(SCSI_S.FAILURE), `AN response buffer of ${wbytes} bytes`);
      const out = new Uint8Array(AN_RESP_BYTES); // event_actual 0: no events supported
      if (rbytes < AN_REQ_BYTES) { out[4] = SCSI_S.FAILURE; return answer(what, out, `AN request of ${rbytes} bytes`); }
      out[4] = decodeLun(req.subarray(4, 12)).target === 0 ? SCSI_S.OK : SCSI_S.BAD_TARGET;
      return answer(what, out);
    }
    return answer(`control type ${type}`, Uint8Array.of(SCSI_S.FAILURE), `unknown control request type ${type}`);
  } catch (e) {
    return drop("control", `internal error: ${(e as Error)?.message ?? String(e)}`);
  }
}
