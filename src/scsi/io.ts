/**
 * The commands that touch the medium (SBC-3): READ/WRITE 6/10/12/16, VERIFY 10/16, SYNCHRONIZE CACHE
 * 10/16, WRITE SAME 10/16, UNMAP. Data goes between the disk and guest memory through the block
 * engine (src/block/io.ts: preadv/pwritev on host iovecs of the guest's buffers), never through a JS
 * buffer. Every LBA range is checked against the capacity before any I/O; a host error becomes MEDIUM
 * ERROR (unrecovered read error / write error); a read-only disk refuses writes with DATA PROTECT.
 *
 * Field layouts are data (`RW_LAYOUT`: where LBA and transfer length are in each CDB). FUA on a write
 * flushes after it unless the disk is O_SYNC anyway. WRITE SAME: with a zero block (or NDOB) it is a
 * write-zeroes (hole punching allowed when UNMAP is set and the disk has discard); with any other
 * pattern, the guest's one block is written again and again (an iovec that repeats the same guest
 * buffer, so still no copy).
 */
import { OP, SENSE } from "./constants.ts";
import { be16, be32, be64, Overrun, params, type Cmd } from "./command.ts";
import type { ScsiLun } from "./lun.ts";
import { segBytes, takeSegs, type Seg } from "../block/segments.ts";
import { badCdb, badParam, ScsiError } from "./sense.ts";

/** Where the LBA and length fields are: [lba offset, lba bytes, length offset, length bytes]. */
export const RW_LAYOUT: Readonly<Record<number, readonly [number, number, number, number]>> = {
  [OP.READ_6]: [1, 3, 4, 1], [OP.WRITE_6]: [1, 3, 4, 1],
  [OP.READ_10]: [2, 4, 7, 2], [OP.WRITE_10]: [2, 4, 7, 2], [OP.VERIFY_10]: [2, 4, 7, 2],
  [OP.SYNCHRONIZE_CACHE_10]: [2, 4, 7, 2], [OP.WRITE_SAME_10]: [2, 4, 7, 2],
  [OP.READ_12]: [2, 4, 6, 4], [OP.WRITE_12]: [2, 4, 6, 4],
  [OP.READ_16]: [2, 8, 10, 4], [OP.WRITE_16]: [2, 8, 10, 4], [OP.VERIFY_16]: [2, 8, 10, 4],
  [OP.SYNCHRONIZE_CACHE_16]: [2, 8, 10, 4], [OP.WRITE_SAME_16]: [2, 8, 10, 4],
};

function field(cdb: Uint8Array, o: number, n: number): bigint {
  switch (n) {
    case 1: return BigInt(cdb[o]!);
    case 2: return BigInt(be16(cdb, o));
    case 3: return BigInt(((cdb[o]! & 0x1f) << 16) | be16(cdb, o + 1)); // READ/WRITE(6): 21-bit LBA
    case 4: return BigInt(be32(cdb, o));
    default: return be64(cdb, o);
  }
}

/** LBA and block count of a CDB (READ/WRITE(6): 0 blocks means 256). */
export function lbaAndCount(cdb: Uint8Array): { lba: bigint; count: number } {
  const op = cdb[0]!, [lo, ln, co, cn] = RW_LAYOUT[op]!;
  let count = Number(field(cdb, co, cn));
  if ((op === OP.READ_6 || op === OP.WRITE_6) && count === 0) count = 256;
  return { lba: field(cdb, lo, ln), count };
}

/** LBA range check; returns the byte offset. */
function rangeCheck(l: ScsiLun, lba: bigint, count: number): number {
  if (lba + BigInt(count) > BigInt(l.blocks) || (count === 0 && lba > BigInt(l.blocks))) {
    throw new ScsiError(SENSE.LBA_OUT_OF_RANGE, undefined, `LBA ${lba} + ${count} blocks, capacity ${l.blocks}`);
  }
  return Number(lba) * l.blockSize;
}

function writable(l: ScsiLun): void {
  if (l.disk.readonly) throw new ScsiError(SENSE.WRITE_PROTECTED);
}

/** RDPROTECT/WRPROTECT/VRPROTECT (byte 1 bits 7-5) must be 0: no protection information. */
function noProtect(cdb: Uint8Array): void {
  if (cdb[0] !== OP.READ_6 && cdb[0] !== OP.WRITE_6 && cdb[1]! & 0xe0) throw badCdb(1, 5, "protection information is not supported");
}

const hostErr = (c: Cmd, what: string, n: number, want: number) => {
  c.note = n < 0 ? `${what}: host error ${-n}` : `${what}: short transfer (${n} of ${want} bytes)`;
};

function transfer(c: Cmd, write: boolean): void {
  const l = c.lun!, cdb = c.cdb;
  noProtect(cdb);
  const { lba, count } = lbaAndCount(cdb);
  if (write) writable(l);
  const off = rangeCheck(l, lba, count);
  if (count > l.maxTransferBlocks) throw badCdb(RW_LAYOUT[cdb[0]!]![2], undefined, `${count} blocks, at most ${l.maxTransferBlocks}`);
  if (count === 0) return;
  const bytes = count * l.blockSize;
  const segs = write ? c.dataOut : c.dataIn;
  if (segBytes(segs) < bytes) throw new Overrun(`${bytes} bytes to ${write ? "write" : "read"}, buffers hold ${segBytes(segs)}`);
  const io = takeSegs(segs, bytes);
  const n = write ? c.engine.write(l.disk, c.mem, io, off) : c.engine.read(l.disk, c.mem, io, off);
  if (n !== bytes) {
    hostErr(c, write ? "write" : "read", n, bytes);
    // a failed read may have filled part of the buffer; report nothing transferred
    throw new ScsiError(write ? SENSE.WRITE_ERROR : SENSE.UNRECOVERED_READ);
  }
  if (write) c.outBytes = bytes; else c.inBytes = bytes;
  const fua = cdb[0] !== OP.WRITE_6 && (cdb[1]! & 0x08) !== 0;
  if (write && fua && !l.disk.sync) flush(c);
}

function flush(c: Cmd): void {
  const l = c.lun!;
  if (l.disk.readonly) return;
  const r = c.engine.flush(l.disk);
  if (r < 0) { c.note = `fdatasync: host error ${-r}`; throw new ScsiError(SENSE.WRITE_ERROR); }
}

export const read = (c: Cmd) => transfer(c, false);
export const write = (c: Cmd) => transfer(c, true);

export function verify(c: Cmd): void {
  noProtect(c.cdb);
  if (c.cdb[1]! & 0x06) throw badCdb(1, 1, "BYTCHK: only a medium verification (BYTCHK=0) is supported");
  const { lba, count } = lbaAndCount(c.cdb);
  rangeCheck(c.lun!, lba, count);
}

export function synchronizeCache(c: Cmd): void {
  const { lba, count } = lbaAndCount(c.cdb);
  rangeCheck(c.lun!, lba, count);
  flush(c);
}

/** Most pattern copies per host call (an iovec repeating the guest's block). */
const PATTERN_BATCH = 256;

export function writeSame(c: Cmd): void {
  const l = c.lun!, cdb = c.cdb, sixteen = cdb[0] === OP.WRITE_SAME_16;
  noProtect(cdb);
  if (cdb[1]! & 0x10) throw badCdb(1, 4, "ANCHOR is not supported");
  const unmap = (cdb[1]! & 0x08) !== 0, ndob = sixteen && (cdb[1]! & 0x01) !== 0;
  const { lba, count } = lbaAndCount(cdb);
  if (count === 0) throw badCdb(RW_LAYOUT[cdb[0]!]![2], undefined, "0 blocks (WSNZ)");
  if (count > l.maxWriteSameBlocks) throw badCdb(RW_LAYOUT[cdb[0]!]![2], undefined, `${count} blocks, at most ${l.maxWriteSameBlocks}`);
  writable(l);
  const off = rangeCheck(l, lba, count);
  const bytes = count * l.blockSize;
  let zero = true;
  let block: Seg[] = [];
  if (!ndob) {
    const data = params(c, l.blockSize);
    zero = data.every((x) => x === 0);
    block = takeSegs(c.dataOut, l.blockSize);
  }
  if (zero) {
    const r = c.engine.writeZeroes(l.disk, off, bytes, unmap);
    if (r < 0) { c.note = `write same (zeroes): host error ${-r}`; throw new ScsiError(SENSE.WRITE_ERROR); }
    return;
  }
  for (let done = 0; done < count;) {
    const k = Math.min(PATTERN_BATCH, count - done);
    const segs: Seg[] = [];
    for (let i = 0; i < k; i++) segs.push(...block);
    const want = k * l.blockSize;
    const n = c.engine.write(l.disk, c.mem, segs, off + done * l.blockSize);
    if (n !== want) { hostErr(c, "write same", n, want); throw new ScsiError(SENSE.WRITE_ERROR); }
    done += k;
  }
}

/** UNMAP parameter list: 8-byte header, then 16-byte descriptors (LBA 8, blocks 4, reserved 4). */
export function unmap(c: Cmd): void {
  const l = c.lun!, cdb = c.cdb;
  if (cdb[1]! & 0x01) throw badCdb(1, 0, "ANCHOR is not supported");
  writable(l);
  if (!l.disk.discard) throw new ScsiError(SENSE.INVALID_OPCODE, undefined, "UNMAP: discard is not offered (nodelete)");
  const len = be16(cdb, 7);
  if (len === 0) return;
  if (len < 8) throw new ScsiError(SENSE.PARAM_LIST_LENGTH, undefined, `${len} bytes`);
  const p = params(c, len);
  const bdl = be16(p, 2);
  if (bdl > len - 8) throw badParam(2, undefined, `block descriptor data length ${bdl} beyond the ${len}-byte list`);
  if (be16(p, 0) < bdl + 6) throw badParam(0, undefined, `unmap data length ${be16(p, 0)}`);
  const n = Math.floor(bdl / 16); // an incomplete last descriptor is ignored (SBC-3)
  if (n > l.maxUnmapDescriptors) throw badParam(2, undefined, `${n} descriptors, at most ${l.maxUnmapDescriptors}`);
  const ops: [number, number][] = [];
  for (let i = 0; i < n; i++) {
    const o = 8 + 16 * i;
    const lba = be64(p, o), count = be32(p, o + 8);
    if (count > l.maxUnmapBlocks) throw badParam(o + 8, undefined, `${count} blocks, at most ${l.maxUnmapBlocks}`);
    const off = rangeCheck(l, lba, count);
    if (count) ops.push([off, count * l.blockSize]);
  }
  for (const [off, bytes] of ops) {
    const r = c.engine.discard(l.disk, off, bytes);
    if (r < 0) { c.note = `unmap: host error ${-r}`; throw new ScsiError(SENSE.WRITE_ERROR); }
  }
}
