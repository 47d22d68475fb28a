/**
 * A logical unit as plain data (structured-clone-safe: post it to Workers): the open disk and the
 * limits this target advertises for it (Block Limits VPD page, READ CAPACITY). One `ScsiTarget` is a
 * set of LUNs; LUN 0 always exists (SAM requires it; REPORT LUNS is addressed to it).
 *
 * Limits: one READ/WRITE moves at most `maxTransferBlocks` (4 MiB: bounded host calls, and what the
 * transport's max_sectors says); one UNMAP carries at most 64 descriptors of at most 1 GiB each; WRITE
 * SAME covers at most 1 GiB. Granularity of UNMAP is the physical block.
 */
import type { BlockDisk } from "../block/backend.ts";

export const SCSI_VENDOR = "TSBHYVE";
export const SCSI_PRODUCT = "VIRTUAL DISK";
export const SCSI_REVISION = "1.0";
/** Bytes per READ/WRITE at most. */
export const MAX_TRANSFER_BYTES = 4 << 20;
/** Bytes per UNMAP descriptor / WRITE SAME at most. */
export const MAX_UNMAP_BYTES = 1 << 30;
export const MAX_UNMAP_DESCRIPTORS = 64;
/** Highest LUN number served (single-level, peripheral addressing). */
export const MAX_LUN = 255;

export interface ScsiLun {
  lun: number;
  disk: BlockDisk;
  /** capacity in logical blocks */
  blocks: number;
  /** logical block size in bytes */
  blockSize: number;
  /** log2(physical / logical) */
  physExp: number;
  maxTransferBlocks: number;
  maxUnmapBlocks: number;
  maxUnmapDescriptors: number;
  maxWriteSameBlocks: number;
  vendor: string;
  product: string;
  revision: string;
}

export interface ScsiTarget {
  /** sorted by LUN number; luns[0].lun === 0 */
  luns: ScsiLun[];
}

export function scsiLun(lun: number, disk: BlockDisk, o: { product?: string } = {}): ScsiLun {
  if (!Number.isInteger(lun) || lun < 0 || lun > MAX_LUN) throw new Error(`SCSI LUN ${lun}: expected 0-${MAX_LUN}`);
  const bs = disk.logical;
  return {
    lun, disk,
    blocks: Math.floor(disk.size / bs),
    blockSize: bs,
    physExp: Math.round(Math.log2(disk.physical / bs)),
    maxTransferBlocks: Math.max(1, MAX_TRANSFER_BYTES / bs),
    maxUnmapBlocks: disk.discard ? MAX_UNMAP_BYTES / bs : 0,
    maxUnmapDescriptors: disk.discard ? MAX_UNMAP_DESCRIPTORS : 0,
    maxWriteSameBlocks: MAX_UNMAP_BYTES / bs,
    vendor: SCSI_VENDOR,
    product: o.product ?? SCSI_PRODUCT,
    revision: SCSI_REVISION,
  };
}

export function scsiTarget(luns: ScsiLun[]): ScsiTarget {
  const sorted = [...luns].sort((a, b) => a.lun - b.lun);
  if (sorted[0]?.lun !== 0) throw new Error("SCSI target: LUN 0 is required");
  for (let i = 1; i < sorted.length; i++) if (sorted[i]!.lun === sorted[i - 1]!.lun) throw new Error(`SCSI target: LUN ${sorted[i]!.lun} twice`);
  return { luns: sorted };
}

export const findLun = (t: ScsiTarget, lun: number): ScsiLun | undefined => t.luns.find((l) => l.lun === lun);
