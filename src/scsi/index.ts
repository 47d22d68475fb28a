/** The SCSI target (SPC-4 / SBC-3 direct-access block device on disk images), transport-independent. */
export * from "./constants.ts";
export * from "./sense.ts";
export * from "./lun.ts";
export * from "../block/segments.ts";
export { CDB_TABLE, lookup, type CdbDef, type Direction } from "./cdb.ts";
export { VPD_PAGES } from "./inquiry.ts";
export { MODE_PAGES } from "./mode.ts";
export { executeCdb, type ScsiRequest, type ScsiResult } from "./target.ts";
