/**
 * virtio-blk as data (virtio 1.2 §5.2): device id, feature bits, request types and statuses, the limits
 * this implementation advertises, and the device configuration space (struct virtio_blk_config,
 * little-endian).
 */
import { SECTOR, type BlockDisk } from "../../block/backend.ts";

export const VIRTIO_ID_BLOCK = 2;

/** Feature bit numbers. */
export const BLK_F = {
  SIZE_MAX: 1, SEG_MAX: 2, GEOMETRY: 4, RO: 5, BLK_SIZE: 6, FLUSH: 9, TOPOLOGY: 10, CONFIG_WCE: 11,
  MQ: 12, DISCARD: 13, WRITE_ZEROES: 14, LIFETIME: 15, SECURE_ERASE: 16, ZONED: 17,
} as const;

/** Request types (virtio_blk_req.type). FLUSH_OUT is the legacy synonym of FLUSH. */
export const BLK_T = {
  IN: 0, OUT: 1, FLUSH: 4, FLUSH_OUT: 5, GET_ID: 8, GET_LIFETIME: 10, DISCARD: 11, WRITE_ZEROES: 13, SECURE_ERASE: 14,
} as const;

/** Status byte values. */
export const BLK_S = { OK: 0, IOERR: 1, UNSUPP: 2 } as const;

/** virtio_blk_req header: le32 type, le32 reserved, le64 sector. */
export const BLK_HDR_BYTES = 16;
/** struct virtio_blk_discard_write_zeroes: le64 sector, le32 num_sectors, le32 flags. */
export const BLK_DWZ_BYTES = 16;
export const BLK_DWZ_F_UNMAP = 1;
/** GET_ID answers a NUL-padded string of up to 20 bytes. */
export const BLK_ID_BYTES = 20;
/** Bytes of virtio_blk_config we expose: up to and including unused1[3] (no secure erase, no zones). */
export const BLK_CONFIG_BYTES = 60;

/** Config space offsets. */
export const BLK_CFG = {
  capacity: 0, size_max: 8, seg_max: 12, cylinders: 16, heads: 18, sectors: 19, blk_size: 20,
  physical_block_exp: 24, alignment_offset: 25, min_io_size: 26, opt_io_size: 28, writeback: 32,
  num_queues: 34, max_discard_sectors: 36, max_discard_seg: 40, discard_sector_alignment: 44,
  max_write_zeroes_sectors: 48, max_write_zeroes_seg: 52, write_zeroes_may_unmap: 56,
} as const;

/** Everything a request executor and the transport need, as plain data (post it to Workers). */
export interface BlkDeviceInfo {
  disk: BlockDisk;
  numQueues: number;
  /** Most data segments per request (queue size − header − status). */
  segMax: number;
  maxDiscardSectors: number;
  maxDiscardSeg: number;
  /** In 512-byte sectors. */
  discardAlignment: number;
  maxWriteZeroesSectors: number;
  maxWriteZeroesSeg: number;
}

export interface BlkDeviceOptions {
  /** Request queues (VIRTIO_BLK_F_MQ); default 1. */
  numQueues?: number;
  /** Size of each virtqueue; seg_max is derived from it. Default 256. */
  queueSize?: number;
}

/** Per-segment limit of discard / write zeroes: 4 GiB − 512 bytes would fit le32; keep it to 1 GiB so one
 *  segment is one bounded host call. */
export const BLK_MAX_DWZ_SECTORS = (1 << 30) / SECTOR;
export const BLK_MAX_DWZ_SEG = 32;

export function blkDeviceInfo(disk: BlockDisk, o: BlkDeviceOptions = {}): BlkDeviceInfo {
  const numQueues = o.numQueues ?? 1, queueSize = o.queueSize ?? 256;
  if (!Number.isInteger(numQueues) || numQueues < 1 || numQueues > 0xffff) throw new Error(`virtio-blk: bad number of queues ${numQueues}`);
  if (!Number.isInteger(queueSize) || queueSize < 4) throw new Error(`virtio-blk: bad queue size ${queueSize}`);
  return {
    disk, numQueues, segMax: queueSize - 2,
    maxDiscardSectors: BLK_MAX_DWZ_SECTORS, maxDiscardSeg: BLK_MAX_DWZ_SEG,
    discardAlignment: Math.max(disk.logical, disk.physical) / SECTOR,
    maxWriteZeroesSectors: BLK_MAX_DWZ_SECTORS, maxWriteZeroesSeg: BLK_MAX_DWZ_SEG,
  };
}

/** The device-specific feature bits offered (the transport adds VIRTIO_F_VERSION_1 etc.). */
export function blkFeatures(dev: BlkDeviceInfo): bigint {
  const bits: number[] = [BLK_F.SEG_MAX, BLK_F.BLK_SIZE, BLK_F.FLUSH, BLK_F.TOPOLOGY, BLK_F.MQ, BLK_F.WRITE_ZEROES];
  if (dev.disk.discard) bits.push(BLK_F.DISCARD);
  if (dev.disk.readonly) bits.push(BLK_F.RO);
  return bits.reduce((a, b) => a | (1n << BigInt(b)), 0n);
}

/** A CHS geometry for the (unoffered) geometry field: 16 heads, 63 sectors per track. */
function geometry(sectors: number): { c: number; h: number; s: number } {
  return { c: Math.min(0xffff, Math.floor(sectors / (16 * 63))), h: 16, s: 63 };
}

/** struct virtio_blk_config, little-endian, BLK_CONFIG_BYTES long. Read-only for the driver. */
export function blkConfig(dev: BlkDeviceInfo): Uint8Array {
  const b = new Uint8Array(BLK_CONFIG_BYTES);
  const v = new DataView(b.buffer);
  const d = dev.disk;
  const capacity = d.size / SECTOR;
  v.setBigUint64(BLK_CFG.capacity, BigInt(capacity), true);
  v.setUint32(BLK_CFG.size_max, 0, true);
  v.setUint32(BLK_CFG.seg_max, dev.segMax, true);
  const g = geometry(capacity);
  v.setUint16(BLK_CFG.cylinders, g.c, true);
  b[BLK_CFG.heads] = g.h;
  b[BLK_CFG.sectors] = g.s;
  v.setUint32(BLK_CFG.blk_size, d.logical, true);
  b[BLK_CFG.physical_block_exp] = Math.log2(d.physical / d.logical);
  b[BLK_CFG.alignment_offset] = 0;
  v.setUint16(BLK_CFG.min_io_size, d.physical / d.logical, true); // in logical blocks: one physical block
  v.setUint32(BLK_CFG.opt_io_size, 0, true);
  // CONFIG_WCE is not offered; the field only says what a flush is for (page cache unless O_SYNC).
  b[BLK_CFG.writeback] = d.sync ? 0 : 1;
  v.setUint16(BLK_CFG.num_queues, dev.numQueues, true);
  v.setUint32(BLK_CFG.max_discard_sectors, dev.maxDiscardSectors, true);
  v.setUint32(BLK_CFG.max_discard_seg, dev.maxDiscardSeg, true);
  v.setUint32(BLK_CFG.discard_sector_alignment, dev.discardAlignment, true);
  v.setUint32(BLK_CFG.max_write_zeroes_sectors, dev.maxWriteZeroesSectors, true);
  v.setUint32(BLK_CFG.max_write_zeroes_seg, dev.maxWriteZeroesSeg, true);
  b[BLK_CFG.write_zeroes_may_unmap] = d.discard ? 1 : 0;
  return b;
}
