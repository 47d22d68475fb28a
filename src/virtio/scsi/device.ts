/**
 * virtio-scsi as data (virtio 1.2 §5.6): device id, feature bits, queue numbering, request and response
 * layouts, response codes, task management functions, and the device configuration space (struct
 * virtio_scsi_config, little-endian).
 *
 * Config: num_queues, seg_max (queue size − 2), max_sectors (the target's 4 MiB transfer limit),
 * cmd_per_lun (the queue size), event_info_size 16, sense_size 96 and cdb_size 32 (the two fields the
 * driver may write; writes are honoured within [SENSE_MIN, SENSE_MAX] / [CDB_MIN, CDB_MAX] and ignored
 * otherwise, and reset restores the defaults), max_channel 0, max_target 0 (one target), max_lun (the
 * highest configured LUN).
 */
import { SECTOR } from "../../block/backend.ts";
import { MAX_TRANSFER_BYTES, type ScsiTarget } from "../../scsi/lun.ts";

export const VIRTIO_ID_SCSI = 8;

/** Feature bits: none offered (no bidirectional commands, hotplug, change events or T10 PI). */
export const SCSI_F = { INOUT: 0, HOTPLUG: 1, CHANGE: 2, T10_PI: 3 } as const;

/** Queue numbers: control, event, then the request queues. */
export const SCSI_Q = { CONTROL: 0, EVENT: 1, REQUEST: 2 } as const;

/** virtio_scsi_cmd_req: lun[8], le64 id, u8 task_attr, u8 prio, u8 crn, then cdb[cdb_size]. */
export const CMD_REQ = { lun: 0, id: 8, task_attr: 16, prio: 17, crn: 18, cdb: 19 } as const;
/** virtio_scsi_cmd_resp: le32 sense_len, le32 resid, le16 status_qualifier, u8 status, u8 response, sense[sense_size]. */
export const CMD_RESP = { sense_len: 0, resid: 4, status_qualifier: 8, status: 10, response: 11, sense: 12 } as const;
export const CMD_RESP_HDR = 12;

/** Control queue requests. */
export const CTRL_T = { TMF: 0, AN_QUERY: 1, AN_SUBSCRIBE: 2 } as const;
/** virtio_scsi_ctrl_tmf: le32 type, le32 subtype, lun[8], le64 id (readable); u8 response (writable). */
export const TMF_REQ_BYTES = 24;
/** virtio_scsi_ctrl_an: le32 type, lun[8], le32 event_requested (readable); le32 event_actual, u8 response. */
export const AN_REQ_BYTES = 16;
export const AN_RESP_BYTES = 5;
export const TMF = {
  ABORT_TASK: 0, ABORT_TASK_SET: 1, CLEAR_ACA: 2, CLEAR_TASK_SET: 3, I_T_NEXUS_RESET: 4,
  LOGICAL_UNIT_RESET: 5, QUERY_TASK: 6, QUERY_TASK_SET: 7,
} as const;

/** Response codes (virtio_scsi_cmd_resp.response, TMF/AN response). */
export const SCSI_S = {
  OK: 0, FUNCTION_COMPLETE: 0, OVERRUN: 1, ABORTED: 2, BAD_TARGET: 3, RESET: 4, BUSY: 5,
  TRANSPORT_FAILURE: 6, TARGET_FAILURE: 7, NEXUS_FAILURE: 8, FAILURE: 9, FUNCTION_SUCCEEDED: 10,
  FUNCTION_REJECTED: 11, INCORRECT_LUN: 12,
} as const;

export const SCSI_EVENT_INFO_SIZE = 16;
export const SENSE_DEFAULT = 96, SENSE_MIN = 0, SENSE_MAX = 252;
export const CDB_DEFAULT = 32, CDB_MIN = 6, CDB_MAX = 255;

export const SCSI_CONFIG_BYTES = 36;
export const SCSI_CFG = {
  num_queues: 0, seg_max: 4, max_sectors: 8, cmd_per_lun: 12, event_info_size: 16, sense_size: 20,
  cdb_size: 24, max_channel: 28, max_target: 30, max_lun: 32,
} as const;

/** Everything the request path and the transport need, as plain data (post it to Workers). */
export interface ScsiDeviceInfo {
  target: ScsiTarget;
  /** request queues */
  numQueues: number;
  queueSize: number;
  segMax: number;
}

export function scsiDeviceInfo(target: ScsiTarget, o: { numQueues?: number; queueSize?: number } = {}): ScsiDeviceInfo {
  const numQueues = o.numQueues ?? 1, queueSize = o.queueSize ?? 256;
  if (!Number.isInteger(numQueues) || numQueues < 1 || numQueues > 30) throw new Error(`virtio-scsi: bad number of request queues ${numQueues} (1-30)`);
  if (!Number.isInteger(queueSize) || queueSize < 4) throw new Error(`virtio-scsi: bad queue size ${queueSize}`);
  return { target, numQueues, queueSize, segMax: queueSize - 2 };
}

/** The fixed part of struct virtio_scsi_config (sense_size / cdb_size are filled in from live state). */
export function scsiConfig(dev: ScsiDeviceInfo, senseSize = SENSE_DEFAULT, cdbSize = CDB_DEFAULT): Uint8Array {
  const b = new Uint8Array(SCSI_CONFIG_BYTES), v = new DataView(b.buffer);
  v.setUint32(SCSI_CFG.num_queues, dev.numQueues, true);
  v.setUint32(SCSI_CFG.seg_max, dev.segMax, true);
  v.setUint32(SCSI_CFG.max_sectors, MAX_TRANSFER_BYTES / SECTOR, true);
  v.setUint32(SCSI_CFG.cmd_per_lun, dev.queueSize, true);
  v.setUint32(SCSI_CFG.event_info_size, SCSI_EVENT_INFO_SIZE, true);
  v.setUint32(SCSI_CFG.sense_size, senseSize, true);
  v.setUint32(SCSI_CFG.cdb_size, cdbSize, true);
  v.setUint16(SCSI_CFG.max_channel, 0, true);
  v.setUint16(SCSI_CFG.max_target, 0, true);
  v.setUint32(SCSI_CFG.max_lun, Math.max(...dev.target.luns.map((l) => l.lun)), true);
  return b;
}

/**
 * Decode lun[8] (§5.6.6.1): byte 0 = 1, byte 1 = target, bytes 2-3 = the LUN in single-level
 * peripheral (00b, bus 0) or flat (01b) addressing, bytes 4-7 zero. `target` undefined: lun[0] is not 1.
 * `lun` undefined: the LUN field is not one this device can address (treated as a LUN that is not there).
 */
export function decodeLun(b: Uint8Array): { target?: number; lun?: number } {
  if (b[0] !== 1) return {};
  const target = b[1]!;
  if (b[4] || b[5] || b[6] || b[7]) return { target };
  const method = b[2]! >> 6;
  if (method === 0) return (b[2]! & 0x3f) === 0 ? { target, lun: b[3]! } : { target };
  if (method === 1) return { target, lun: ((b[2]! & 0x3f) << 8) | b[3]! };
  return { target };
}
