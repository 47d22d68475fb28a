/**
 * SCSI numbers as data (SAM-5 status, SPC-4 sense keys and additional sense codes, operation codes,
 * peripheral device types). Shared by every front end that speaks SCSI (virtio-scsi now; AHCI-ATAPI or
 * a USB mass-storage device later): nothing here knows about a transport.
 */

/** SAM-5 status codes. */
export const STATUS = {
  GOOD: 0x00, CHECK_CONDITION: 0x02, CONDITION_MET: 0x04, BUSY: 0x08, RESERVATION_CONFLICT: 0x18,
  TASK_SET_FULL: 0x28, ACA_ACTIVE: 0x30, TASK_ABORTED: 0x40,
} as const;

/** SPC-4 sense keys. */
export const SENSE_KEY = {
  NO_SENSE: 0x0, RECOVERED_ERROR: 0x1, NOT_READY: 0x2, MEDIUM_ERROR: 0x3, HARDWARE_ERROR: 0x4,
  ILLEGAL_REQUEST: 0x5, UNIT_ATTENTION: 0x6, DATA_PROTECT: 0x7, BLANK_CHECK: 0x8, ABORTED_COMMAND: 0xb,
  MISCOMPARE: 0xe,
} as const;

/** An additional sense code and qualifier with the sense key it goes with. */
export interface SenseCode { key: number; asc: number; ascq: number; text: string }
const sc = (key: number, asc: number, ascq: number, text: string): SenseCode => ({ key, asc, ascq, text });

/** The conditions this target reports (SPC-4 annex D numbers). */
export const SENSE = {
  NO_SENSE: sc(SENSE_KEY.NO_SENSE, 0x00, 0x00, "no additional sense information"),
  INVALID_OPCODE: sc(SENSE_KEY.ILLEGAL_REQUEST, 0x20, 0x00, "invalid command operation code"),
  LBA_OUT_OF_RANGE: sc(SENSE_KEY.ILLEGAL_REQUEST, 0x21, 0x00, "logical block address out of range"),
  INVALID_FIELD_IN_CDB: sc(SENSE_KEY.ILLEGAL_REQUEST, 0x24, 0x00, "invalid field in CDB"),
  LUN_NOT_SUPPORTED: sc(SENSE_KEY.ILLEGAL_REQUEST, 0x25, 0x00, "logical unit not supported"),
  INVALID_FIELD_IN_PARAM: sc(SENSE_KEY.ILLEGAL_REQUEST, 0x26, 0x00, "invalid field in parameter list"),
  PARAM_LIST_LENGTH: sc(SENSE_KEY.ILLEGAL_REQUEST, 0x1a, 0x00, "parameter list length error"),
  SAVING_NOT_SUPPORTED: sc(SENSE_KEY.ILLEGAL_REQUEST, 0x39, 0x00, "saving parameters not supported"),
  WRITE_PROTECTED: sc(SENSE_KEY.DATA_PROTECT, 0x27, 0x00, "write protected"),
  UNRECOVERED_READ: sc(SENSE_KEY.MEDIUM_ERROR, 0x11, 0x00, "unrecovered read error"),
  WRITE_ERROR: sc(SENSE_KEY.MEDIUM_ERROR, 0x0c, 0x00, "write error"),
  INTERNAL_FAILURE: sc(SENSE_KEY.HARDWARE_ERROR, 0x44, 0x00, "internal target failure"),
  POWER_ON_RESET: sc(SENSE_KEY.UNIT_ATTENTION, 0x29, 0x00, "power on, reset, or bus device reset occurred"),
} as const;

/** Operation codes this target knows (SPC-4, SBC-3). */
export const OP = {
  TEST_UNIT_READY: 0x00, REQUEST_SENSE: 0x03, READ_6: 0x08, WRITE_6: 0x0a, INQUIRY: 0x12,
  MODE_SELECT_6: 0x15, MODE_SENSE_6: 0x1a, START_STOP_UNIT: 0x1b, PREVENT_ALLOW: 0x1e,
  READ_CAPACITY_10: 0x25, READ_10: 0x28, WRITE_10: 0x2a, VERIFY_10: 0x2f, SYNCHRONIZE_CACHE_10: 0x35,
  WRITE_SAME_10: 0x41, UNMAP: 0x42, MODE_SELECT_10: 0x55, MODE_SENSE_10: 0x5a,
  READ_16: 0x88, WRITE_16: 0x8a, VERIFY_16: 0x8f, SYNCHRONIZE_CACHE_16: 0x91, WRITE_SAME_16: 0x93,
  SERVICE_ACTION_IN_16: 0x9e, REPORT_LUNS: 0xa0, MAINTENANCE_IN: 0xa3, READ_12: 0xa8, WRITE_12: 0xaa,
} as const;

/** Service actions. */
export const SA = { READ_CAPACITY_16: 0x10, REPORT_SUPPORTED_OPCODES: 0x0c } as const;

/** Peripheral qualifier/device type byte: 0x00 direct-access block device; 0x7f no logical unit here. */
export const PERIPHERAL = { DISK: 0x00, NO_LUN: 0x7f } as const;
