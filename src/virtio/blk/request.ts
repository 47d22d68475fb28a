/**
 * The virtio-blk request path (virtio 1.2 §5.2.6): one descriptor chain in, one status byte and a used
 * length out.
 *
 * A request is `le32 type, le32 reserved, le64 sector` (the first 16 device-readable bytes, possibly
 * split over several descriptors), then data (device-readable for OUT / DISCARD / WRITE_ZEROES,
 * device-writable for IN / GET_ID), then one status byte: the last device-writable byte of the chain.
 *
 * Guests are hostile. Every segment is checked against guest memory before any I/O (device-writable
 * ones must be RAM, not ROM); every sector range against the capacity; lengths against 512-byte units and
 * the advertised discard / write-zeroes limits. A chain without a writable byte, or whose last writable
 * buffer is not wholly guest RAM, has nowhere to put a status: it is dropped (`status: null`, `used: 0`) — the
 * transport still returns it on the used ring so the driver does not leak the descriptor, and logs
 * `error` (rate-limited). Any other malformed request (e.g. a header shorter than 16 bytes) completes with
 * VIRTIO_BLK_S_IOERR. Nothing here throws.
 *
 * Worker-pool design (bhyve runs 8 I/O threads per adapter): requests are independent, so the lead runs
 * `executeRequest` on a pool of I/O Workers, each with its own GuestMemory views and the device's plain
 * `BlkDeviceInfo` (fd numbers are process-wide). The function keeps no state between calls and touches
 * no JS object but its arguments. Ordering rules the pool must keep:
 * - completion (used ring, interrupt) happens after `executeRequest` returns, under the queue's lock;
 * - FLUSH needs no barrier: it only has to cover writes *completed* before it was submitted, and fdatasync
 *   covers every write that returned, whichever thread ran it;
 * - overlapping writes in flight together are the driver's problem (the spec promises no order), except
 *   when `needsRmw(disk)` (O_DIRECT with sub-block sectors): then run that disk's requests one at a time.
 */
import { SECTOR } from "../../block/backend.ts";
import { hostEngine, type BlockEngine, type Seg } from "../../block/io.ts";
import { gather, scatter, segBytes, segOk, skipSegs, trimSegs } from "../../block/segments.ts";
import type { GuestMemory } from "../../mem/guest-memory.ts";
import { BLK_DWZ_BYTES, BLK_DWZ_F_UNMAP, BLK_HDR_BYTES, BLK_ID_BYTES, BLK_S, BLK_T, type BlkDeviceInfo } from "./device.ts";

export type { Seg } from "../../block/io.ts";

/** A descriptor chain as the virtqueue hands it over: device-readable then device-writable buffers. */
export interface Chain {
  readable: readonly Seg[];
  writable: readonly Seg[];
}

export interface BlkResult {
  /** Status written (BLK_S.*), or null: the chain had no status byte and was dropped. */
  status: number | null;
  /** Bytes the device wrote into the chain (the used-ring length). */
  used: number;
  /** The request type from the header, or -1 if there was none. */
  type: number;
  /** Why the request failed or was dropped, for the device's (rate-limited) error log. */
  error?: string;
}

/** Execute one request. Never throws; safe on any thread. */
export function executeRequest(dev: BlkDeviceInfo, mem: GuestMemory, chain: Chain, engine: BlockEngine = hostEngine): BlkResult {
  // Where the status byte goes: the last byte of the last non-empty writable segment.
  const w = chain.writable;
  let last = w.length - 1;
  while (last >= 0 && !(Number.isSafeInteger(w[last]!.len) && w[last]!.len > 0)) last--;
  if (last < 0) return { status: null, used: 0, type: -1, error: "no device-writable status byte" };
  const st = w[last]!;
  const statusGpa = st.gpa + st.len - 1;
  if (!segOk(mem, st, true)) {
    return { status: null, used: 0, type: -1, error: `the buffer holding the status byte (0x${Number(st.gpa).toString(16)}+${st.len}) is not guest RAM` };
  }
  let r: { status: number; used: number; type: number; error?: string };
  try {
    r = run(dev, mem, chain, engine, last + 1 === w.length ? w : w.slice(0, last + 1), last + 1);
  } catch (e) {
    r = { status: BLK_S.IOERR, used: 0, type: -1, error: `internal error: ${(e as Error).message}` };
  }
  mem.write8(statusGpa, r.status);
  return r.error ? { status: r.status, used: r.used + 1, type: r.type, error: r.error } : { status: r.status, used: r.used + 1, type: r.type };
}

type Outcome = { status: number; used: number; type: number; error?: string };

function run(dev: BlkDeviceInfo, mem: GuestMemory, chain: Chain, engine: BlockEngine, writable: readonly Seg[], nw: number): Outcome {
  const fail = (type: number, error: string, status: number = BLK_S.IOERR): Outcome => ({ status, used: 0, type, error });
  for (const s of chain.readable) if (!segOk(mem, s, false)) return fail(-1, `readable buffer 0x${s.gpa.toString(16)}+${s.len} is outside guest memory`);
  for (const s of writable) if (!segOk(mem, s, true)) return fail(-1, `writable buffer 0x${s.gpa.toString(16)}+${s.len} is not guest RAM`);
  // after the status byte only empty buffers may follow
  for (let i = nw; i < chain.writable.length; i++) if (chain.writable[i]!.len !== 0) return fail(-1, `bad writable buffer length ${chain.writable[i]!.len}`);

  if (segBytes(chain.readable) < BLK_HDR_BYTES) return fail(-1, "request header shorter than 16 bytes");
  // the header is almost always one 16-byte descriptor: read it in place (no copy, no DataView)
  const h0 = chain.readable[0]!;
  let type: number, sector: bigint;
  if (h0.len >= BLK_HDR_BYTES) {
    type = mem.read32(h0.gpa);
    sector = mem.read64(h0.gpa + 8);
  } else {
    const hdr = new DataView(gather(mem, chain.readable, BLK_HDR_BYTES).buffer);
    type = hdr.getUint32(0, true);
    sector = hdr.getBigUint64(8, true);
  }
  const rdata = skipSegs(chain.readable, BLK_HDR_BYTES);
  const wdata = trimSegs(writable, 1);
  const disk = dev.disk;
  const capSectors = disk.size / SECTOR;
  const capBig = BigInt(capSectors);

  /** Byte offset of [sector, sector + len bytes), or a failure. */
  const range = (sec: bigint, len: number): number | string =>
    sec > capBig || Number(sec) * SECTOR + len > disk.size
      ? `sectors ${sec}+${len / SECTOR} beyond the capacity of ${capSectors}`
      : Number(sec) * SECTOR;

  switch (type) {
    case BLK_T.IN:
    case BLK_T.OUT: {
      const out = type === BLK_T.OUT;
      const segs = out ? rdata : wdata;
      const len = segBytes(segs);
      if (len % SECTOR) return fail(type, `data length ${len} is not a multiple of 512`);
      if (out && disk.readonly) return fail(type, "write to a read-only disk");
      const off = range(sector, len);
      if (typeof off === "string") return fail(type, off);
      if (len === 0) return { status: BLK_S.OK, used: 0, type };
      const n = out ? engine.write(disk, mem, segs, off) : engine.read(disk, mem, segs, off);
      if (n !== len) {
        return { ...fail(type, n < 0 ? `host I/O error ${-n}` : `short ${out ? "write" : "read"} (${n} of ${len} bytes)`), used: out ? 0 : len };
      }
      return { status: BLK_S.OK, used: out ? 0 : len, type };
    }
    case BLK_T.FLUSH:
    case BLK_T.FLUSH_OUT: {
      if (disk.readonly) return { status: BLK_S.OK, used: 0, type };
      const n = engine.flush(disk);
      return n < 0 ? fail(type, `flush failed: host error ${-n}`) : { status: BLK_S.OK, used: 0, type };
    }
    case BLK_T.GET_ID: {
      const id = new Uint8Array(BLK_ID_BYTES);
      for (let i = 0; i < Math.min(disk.serial.length, BLK_ID_BYTES); i++) id[i] = disk.serial.charCodeAt(i) & 0x7f;
      const n = Math.min(segBytes(wdata), BLK_ID_BYTES);
      scatter(mem, wdata, id.subarray(0, n));
      return { status: BLK_S.OK, used: n, type };
    }
    case BLK_T.DISCARD:
    case BLK_T.WRITE_ZEROES: {
      const wz = type === BLK_T.WRITE_ZEROES;
      if (!wz && !disk.discard && !disk.readonly) return fail(type, "discard is not offered (nodelete)", BLK_S.UNSUPP);
      if (disk.readonly) return fail(type, `${wz ? "write zeroes" : "discard"} on a read-only disk`);
      const len = segBytes(rdata);
      const maxSeg = wz ? dev.maxWriteZeroesSeg : dev.maxDiscardSeg;
      const maxSectors = wz ? dev.maxWriteZeroesSectors : dev.maxDiscardSectors;
      if (len === 0 || len % BLK_DWZ_BYTES) return fail(type, `segment data length ${len} is not a positive multiple of 16`);
      if (len / BLK_DWZ_BYTES > maxSeg) return fail(type, `${len / BLK_DWZ_BYTES} segments, more than ${maxSeg}`);
      const d = new DataView(gather(mem, rdata, len).buffer);
      const ops: { off: number; bytes: number; unmap: boolean }[] = [];
      for (let o = 0; o < len; o += BLK_DWZ_BYTES) {
        const sec = d.getBigUint64(o, true), num = d.getUint32(o + 8, true), flags = d.getUint32(o + 12, true);
        if (flags & ~(wz ? BLK_DWZ_F_UNMAP : 0)) return fail(type, `unsupported segment flags 0x${flags.toString(16)}`, BLK_S.UNSUPP);
        if (num > maxSectors) return fail(type, `segment of ${num} sectors, more than ${maxSectors}`);
        const off = range(sec, num * SECTOR);
        if (typeof off === "string") return fail(type, off);
        if (num > 0) ops.push({ off, bytes: num * SECTOR, unmap: (flags & BLK_DWZ_F_UNMAP) !== 0 });
      }
      for (const op of ops) {
        const n = wz ? engine.writeZeroes(disk, op.off, op.bytes, op.unmap) : engine.discard(disk, op.off, op.bytes);
        if (n < 0) return fail(type, `${wz ? "write zeroes" : "discard"} failed: host error ${-n}`);
      }
      return { status: BLK_S.OK, used: 0, type };
    }
    default:
      return fail(type, `unsupported request type ${type}`, BLK_S.UNSUPP);
  }
}
