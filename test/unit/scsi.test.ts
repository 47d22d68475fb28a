/**
 * The SCSI target (src/scsi/) on its own, without a transport: every command's data, every error's sense
 * (key / ASC / ASCQ and the field pointer), boundary LBAs, read-only units, discard punching holes in a
 * sparse file on this host's file system (st_blocks drops, the range reads back zeros), host I/O errors
 * as MEDIUM ERROR, residual counts and overruns. Fake guest memory with the view-copy engine for most;
 * host-backed guest memory with the production engine (preadv/pwritev into guest RAM) for the I/O path.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { mkdtempSync, readFileSync, rmSync, statSync, truncateSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { closeBlock, openBlock, type BlockDisk, type BlockOptions } from "../../src/block/backend.ts";
import { hostEngine, viewCopyEngine, type BlockEngine } from "../../src/block/io.ts";
import { GuestMemory, MiB, region } from "../../src/mem/guest-memory.ts";
import {
  CDB_TABLE, executeCdb, OP, parseSense, SENSE, SENSE_KEY, scsiLun, scsiTarget, STATUS, type ScsiResult, type ScsiTarget, type SenseCode,
} from "../../src/scsi/index.ts";
import { host } from "../../src/vmm/index.ts";

const dir = mkdtempSync(join(tmpdir(), "tsb-scsi-"));
const disks: BlockDisk[] = [];
afterAll(() => {
  for (const d of disks) closeBlock(d);
  rmSync(dir, { recursive: true, force: true });
});
let n = 0;
const fillPattern = (b: Uint8Array) => { for (let i = 0; i < b.length; i++) b[i] = (i * 13 + 1 + (i >> 9) * 7) & 0xff; };

function image(bytes: number, fill = fillPattern): { path: string; img: Uint8Array<ArrayBuffer> } {
  const path = join(dir, `d${n++}.img`);
  const img = new Uint8Array(bytes);
  fill(img);
  writeFileSync(path, img);
  return { path, img };
}
function open(path: string, o: Partial<BlockOptions> = {}): BlockDisk {
  const d = openBlock({ path, ...o });
  disks.push(d);
  return d;
}
/** A target with LUN 0 (and more LUNs from `extra`). */
function unit(bytes = 1 * MiB, o: Partial<BlockOptions> = {}, extra: [number, BlockDisk][] = []) {
  const { path, img } = image(bytes);
  const disk = open(path, o);
  const t = scsiTarget([scsiLun(0, disk), ...extra.map(([l, d]) => scsiLun(l, d))]);
  return { t, path, img, disk };
}

const mem = GuestMemory.fake(32 * MiB);
const OUT = 0x100000, IN = 0x800000;

interface Run { r: ScsiResult; data: Uint8Array }
/** Run one CDB: data-out `out` at OUT, a data-in buffer of `inLen` bytes at IN (filled with 0xEE first). */
function run(t: ScsiTarget, cdb: number[] | Uint8Array, o: { lun?: number; out?: Uint8Array; inLen?: number; engine?: BlockEngine; m?: GuestMemory; outAt?: number; inAt?: number } = {}): Run {
  const m = o.m ?? mem, outAt = o.outAt ?? OUT, inAt = o.inAt ?? IN;
  const dataOut = o.out ? [{ gpa: outAt, len: o.out.length }] : [];
  if (o.out) m.writeBytes(outAt, o.out);
  const inLen = o.inLen ?? 0;
  if (inLen) m.fill(inAt, inLen, 0xee);
  const r = executeCdb(t, m, { lun: o.lun ?? 0, cdb: Uint8Array.from(cdb), dataOut, dataIn: inLen ? [{ gpa: inAt, len: inLen }] : [] }, o.engine ?? viewCopyEngine);
  return { r, data: inLen ? m.readBytes(inAt, r.inBytes) : new Uint8Array(0) };
}
function good(x: Run): Uint8Array {
  expect(x.r.error ?? "").toBe("");
  expect(x.r.overrun).toBe(false);
  expect(x.r.status).toBe(STATUS.GOOD);
  return x.data;
}
function check(x: Run, code: SenseCode, field?: { byte: number; cdb: boolean; bit?: number }) {
  expect(x.r.overrun).toBe(false);
  expect(x.r.status).toBe(STATUS.CHECK_CONDITION);
  expect(x.r.sense!.length).toBe(18);
  expect(x.r.sense![0]).toBe(0x70);
  const s = parseSense(x.r.sense!);
  expect([s.key, s.asc, s.ascq]).toEqual([code.key, code.asc, code.ascq]);
  if (field) expect(s.field).toEqual(field);
  expect(x.r.inBytes).toBe(0);
}

const be = (v: number | bigint, bytes: number): number[] => {
  const out: number[] = [];
  let x = BigInt(v);
  for (let i = 0; i < bytes; i++) { out.unshift(Number(x & 0xffn)); x >>= 8n; }
  return out;
};
const dv = (b: Uint8Array) => new DataView(b.buffer, b.byteOffset, b.byteLength);
const ascii = (b: Uint8Array) => new TextDecoder().decode(b);

const inquiry = (evpd: number, page: number, alloc: number) => [OP.INQUIRY, evpd, page, ...be(alloc, 2), 0];
const read10 = (lba: number, count: number, flags = 0) => [OP.READ_10, flags, ...be(lba, 4), 0, ...be(count, 2), 0];
const write10 = (lba: number, count: number, flags = 0) => [OP.WRITE_10, flags, ...be(lba, 4), 0, ...be(count, 2), 0];
const read16 = (lba: number | bigint, count: number) => [OP.READ_16, 0, ...be(lba, 8), ...be(count, 4), 0, 0];
const write16 = (lba: number | bigint, count: number, flags = 0) => [OP.WRITE_16, flags, ...be(lba, 8), ...be(count, 4), 0, 0];
const rc16 = (alloc: number) => [OP.SERVICE_ACTION_IN_16, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, ...be(alloc, 4), 0, 0];

describe("INQUIRY", () => {
  test("standard data: direct-access, SPC-4, vendor/product/revision, version descriptors; allocation length clips", () => {
    const { t } = unit();
    const d = good(run(t, inquiry(0, 0, 255), { inLen: 255 }));
    expect(d.length).toBe(74);
    expect([d[0], d[1], d[2], d[3] & 0x0f, d[4], d[7]]).toEqual([0, 0, 6, 2, 69, 0x02]);
    expect(ascii(d.subarray(8, 16))).toBe("TSBHYVE ");
    expect(ascii(d.subarray(16, 32))).toBe("VIRTUAL DISK    ");
    expect(ascii(d.subarray(32, 36))).toBe("1.0 ");
    expect([dv(d).getUint16(58), dv(d).getUint16(60), dv(d).getUint16(62)]).toEqual([0x00a0, 0x0460, 0x04c0]);
    const short = run(t, inquiry(0, 0, 5), { inLen: 36 });
    expect(good(short).length).toBe(5);
    expect(short.r.inBytes).toBe(5);
  });

  test("a LUN that is not there: peripheral qualifier 3 / type 0x1F; VPD there → LUN NOT SUPPORTED", () => {
    const { t } = unit();
    expect(good(run(t, inquiry(0, 0, 36), { lun: 7, inLen: 36 }))[0]).toBe(0x7f);
    check(run(t, inquiry(1, 0x80, 255), { lun: 7, inLen: 255 }), SENSE.LUN_NOT_SUPPORTED);
  });

  test("bad fields: page code without EVPD, CMDDT, an unknown VPD page → INVALID FIELD IN CDB with the byte", () => {
    const { t } = unit();
    check(run(t, inquiry(0, 0x80, 255), { inLen: 255 }), SENSE.INVALID_FIELD_IN_CDB, { byte: 2, cdb: true });
    check(run(t, inquiry(2, 0, 255), { inLen: 255 }), SENSE.INVALID_FIELD_IN_CDB, { byte: 1, bit: 1, cdb: true });
    check(run(t, inquiry(1, 0x99, 255), { inLen: 255 }), SENSE.INVALID_FIELD_IN_CDB, { byte: 2, cdb: true });
  });

  test("VPD pages 0x00, 0x80, 0x83, 0xB0, 0xB1, 0xB2", () => {
    const { t } = unit(8 * MiB, { ser: "TSB-SCSI-0", sectorsize: "512/4096" });
    const p0 = good(run(t, inquiry(1, 0, 255), { inLen: 255 }));
    expect([...p0]).toEqual([0, 0, 0, 6, 0x00, 0x80, 0x83, 0xb0, 0xb1, 0xb2]);
    const p80 = good(run(t, inquiry(1, 0x80, 255), { inLen: 255 }));
    expect([p80[1], dv(p80).getUint16(2)]).toEqual([0x80, 10]);
    expect(ascii(p80.subarray(4))).toBe("TSB-SCSI-0");
    const p83 = good(run(t, inquiry(1, 0x83, 255), { inLen: 255 }));
    expect([p83[1], p83[4] & 0x0f, p83[5] & 0x0f, p83[7]]).toEqual([0x83, 2, 1, 18]);
    expect(ascii(p83.subarray(8, 26))).toBe("TSBHYVE TSB-SCSI-0");
    const b0 = dv(good(run(t, inquiry(1, 0xb0, 255), { inLen: 255 })));
    expect(b0.getUint16(2)).toBe(0x3c);
    expect(b0.getUint8(4) & 1).toBe(1); // WSNZ
    expect(b0.getUint16(6)).toBe(8); // optimal granularity: one physical block
    expect(b0.getUint32(8)).toBe((4 * MiB) / 512); // maximum transfer length
    expect(b0.getUint32(20)).toBe((1 << 30) / 512); // maximum unmap LBA count
    expect(b0.getUint32(24)).toBe(64); // maximum unmap descriptors
    expect(b0.getUint32(28)).toBe(8); // optimal unmap granularity
    expect(b0.getUint32(32) >>> 31).toBe(1); // UGAVALID
    expect(b0.getBigUint64(36)).toBe(BigInt((1 << 30) / 512)); // maximum write same length
    const b1 = good(run(t, inquiry(1, 0xb1, 255), { inLen: 255 }));
    expect(dv(b1).getUint16(4)).toBe(1); // non-rotating
    const b2 = good(run(t, inquiry(1, 0xb2, 255), { inLen: 255 }));
    expect([b2[5]! & 0xe0, b2[6]! & 7]).toEqual([0xe0, 2]); // LBPU LBPWS LBPWS10, thin
    // nodelete: no unmap limits, no provisioning bits
    const nd = unit(1 * MiB, { nodelete: true }).t;
    expect(dv(good(run(nd, inquiry(1, 0xb0, 255), { inLen: 255 }))).getUint32(20)).toBe(0);
    expect(good(run(nd, inquiry(1, 0xb2, 255), { inLen: 255 }))[5]).toBe(0);
  });
});

describe("status commands", () => {
  test("TEST UNIT READY, START STOP UNIT, PREVENT ALLOW; missing LUN and unknown opcode", () => {
    const { t } = unit();
    good(run(t, [OP.TEST_UNIT_READY, 0, 0, 0, 0, 0]));
    good(run(t, [OP.START_STOP_UNIT, 0, 0, 0, 1, 0]));
    good(run(t, [OP.PREVENT_ALLOW, 0, 0, 0, 0, 0]));
    check(run(t, [OP.TEST_UNIT_READY, 0, 0, 0, 0, 0], { lun: 3 }), SENSE.LUN_NOT_SUPPORTED);
    check(run(t, [0xff, 0, 0, 0, 0, 0]), SENSE.INVALID_OPCODE);
    check(run(t, [0x04, 0, 0, 0, 0, 0]), SENSE.INVALID_OPCODE); // FORMAT UNIT: not supported
    check(run(t, []), SENSE.INVALID_FIELD_IN_CDB);
  });

  test("CDB shorter than the command, NACA in the control byte, unknown service action", () => {
    const { t } = unit();
    check(run(t, read10(0, 1).slice(0, 6), { inLen: 512 }), SENSE.INVALID_FIELD_IN_CDB, { byte: 6, cdb: true });
    check(run(t, [OP.TEST_UNIT_READY, 0, 0, 0, 0, 0x04]), SENSE.INVALID_FIELD_IN_CDB, { byte: 5, bit: 2, cdb: true });
    check(run(t, [OP.SERVICE_ACTION_IN_16, 0x11, ...Array(14).fill(0)], { inLen: 32 }), SENSE.INVALID_FIELD_IN_CDB, { byte: 1, cdb: true });
  });

  test("REQUEST SENSE: NO SENSE; for a missing LUN GOOD with LOGICAL UNIT NOT SUPPORTED; DESC refused", () => {
    const { t } = unit();
    const s = good(run(t, [OP.REQUEST_SENSE, 0, 0, 0, 252, 0], { inLen: 252 }));
    expect(s.length).toBe(18);
    expect(parseSense(s)).toEqual({ key: SENSE_KEY.NO_SENSE, asc: 0, ascq: 0 });
    const m = good(run(t, [OP.REQUEST_SENSE, 0, 0, 0, 252, 0], { lun: 9, inLen: 252 }));
    expect([parseSense(m).key, parseSense(m).asc]).toEqual([SENSE_KEY.ILLEGAL_REQUEST, 0x25]);
    check(run(t, [OP.REQUEST_SENSE, 1, 0, 0, 252, 0], { inLen: 252 }), SENSE.INVALID_FIELD_IN_CDB, { byte: 1, bit: 0, cdb: true });
  });

  test("REPORT LUNS lists every LUN (peripheral addressing), also from a missing LUN; allocation < 16 refused", () => {
    const a = open(image(64 * 1024).path), b = open(image(64 * 1024).path);
    const { t } = unit(1 * MiB, {}, [[5, a], [1, b]]);
    const cdb = (alloc: number, sel = 0) => [OP.REPORT_LUNS, 0, sel, 0, 0, 0, ...be(alloc, 4), 0, 0];
    for (const lun of [0, 42]) {
      const d = good(run(t, cdb(4096), { lun, inLen: 4096 }));
      expect(d.length).toBe(32);
      expect(dv(d).getUint32(0)).toBe(24);
      expect([d[9], d[17], d[25]]).toEqual([0, 1, 5]);
    }
    expect(good(run(t, cdb(16, 1), { inLen: 16 })).length).toBe(8); // well-known LUNs only: none
    check(run(t, cdb(8), { inLen: 16 }), SENSE.INVALID_FIELD_IN_CDB, { byte: 6, cdb: true });
    check(run(t, cdb(64, 7), { inLen: 64 }), SENSE.INVALID_FIELD_IN_CDB, { byte: 2, cdb: true });
  });

  test("REPORT SUPPORTED OPERATION CODES: all, one, one with a service action, unsupported", () => {
    const { t } = unit();
    const cdb = (opts: number, op: number, sa: number, alloc: number) => [OP.MAINTENANCE_IN, 0x0c, opts, op, ...be(sa, 2), ...be(alloc, 4), 0, 0];
    const all = good(run(t, cdb(0, 0, 0, 4096), { inLen: 4096 }));
    expect(dv(all).getUint32(0)).toBe(8 * CDB_TABLE.length);
    const ops = Array.from({ length: CDB_TABLE.length }, (_, i) => all[4 + 8 * i]);
    expect(ops).toContain(OP.UNMAP);
    const one = good(run(t, cdb(1, OP.WRITE_SAME_16, 0, 64), { inLen: 64 }));
    expect([one[1]! & 7, dv(one).getUint16(2), one[4]]).toEqual([3, 16, OP.WRITE_SAME_16]);
    const sa = good(run(t, cdb(2, OP.SERVICE_ACTION_IN_16, 0x10, 64), { inLen: 64 }));
    expect([sa[1]! & 7, sa[4], sa[5]! & 0x1f]).toEqual([3, 0x9e, 0x10]);
    expect(good(run(t, cdb(1, 0x04, 0, 64), { inLen: 64 }))[1]! & 7).toBe(1);
    check(run(t, cdb(1, OP.SERVICE_ACTION_IN_16, 0, 64), { inLen: 64 }), SENSE.INVALID_FIELD_IN_CDB);
    // option 3: with or without a service action
    expect(good(run(t, cdb(3, OP.SERVICE_ACTION_IN_16, 0x10, 64), { inLen: 64 }))[1]! & 7).toBe(3);
    expect(good(run(t, cdb(3, OP.READ_10, 0, 64), { inLen: 64 }))[1]! & 7).toBe(3);
    expect(good(run(t, cdb(3, OP.READ_10, 5, 64), { inLen: 64 }))[1]! & 7).toBe(1);
    check(run(t, cdb(4, OP.READ_10, 0, 64), { inLen: 64 }), SENSE.INVALID_FIELD_IN_CDB, { byte: 2, bit: 0, cdb: true });
  });
});

describe("READ CAPACITY", () => {
  test("(10) and (16): last LBA, block length, physical exponent, LBPME; allocation length clips", () => {
    const { t } = unit(3 * MiB, { sectorsize: "512/4096" });
    const d = dv(good(run(t, [OP.READ_CAPACITY_10, 0, 0, 0, 0, 0, 0, 0, 0, 0], { inLen: 8 })));
    expect([d.getUint32(0), d.getUint32(4)]).toEqual([(3 * MiB) / 512 - 1, 512]);
    const c = good(run(t, rc16(32), { inLen: 32 }));
    expect([dv(c).getBigUint64(0), dv(c).getUint32(8), c[13]! & 0x0f, c[14]! & 0x80]).toEqual([BigInt((3 * MiB) / 512 - 1), 512, 3, 0x80]);
    expect(good(run(t, rc16(12), { inLen: 32 })).length).toBe(12);
    check(run(t, [OP.READ_CAPACITY_10, 0, 0, 0, 0, 1, 0, 0, 0, 0], { inLen: 8 }), SENSE.INVALID_FIELD_IN_CDB, { byte: 2, cdb: true });
    // nodelete: no LBPME
    expect(good(run(unit(1 * MiB, { nodelete: true }).t, rc16(32), { inLen: 32 }))[14]! & 0x80).toBe(0);
    // 4096-byte logical blocks
    const k4 = unit(1 * MiB, { sectorsize: 4096 }).t;
    expect([...good(run(k4, rc16(32), { inLen: 32 })).subarray(4, 12)]).toEqual([0, 0, 0, 255, 0, 0, 16, 0]);
  });

  test("(10) says 0xFFFFFFFF for a disk of more than 2^32 blocks; (16) has the real last LBA", () => {
    const path = join(dir, "huge.img");
    writeFileSync(path, "");
    truncateSync(path, 2 ** 41 + 4096); // sparse: 2^32 + 8 blocks of 512 bytes
    const t = scsiTarget([scsiLun(0, open(path))]);
    expect(dv(good(run(t, [OP.READ_CAPACITY_10, 0, 0, 0, 0, 0, 0, 0, 0, 0], { inLen: 8 }))).getUint32(0)).toBe(0xffffffff);
    expect(dv(good(run(t, rc16(32), { inLen: 32 }))).getBigUint64(0)).toBe(2n ** 32n + 7n);
    // the last block beyond 2^32 is readable through READ(16) (the file is sparse: zeros)
    expect([...good(run(t, read16(2n ** 32n + 7n, 1), { inLen: 512 }))]).toEqual(Array(512).fill(0));
    check(run(t, read16(2n ** 32n + 8n, 1), { inLen: 512 }), SENSE.LBA_OUT_OF_RANGE);
  });
});

describe("READ / WRITE", () => {
  test("WRITE(10) then READ(16), READ(12), READ(6), WRITE(6), WRITE(12): data reaches the file and comes back", () => {
    const { t, path, img } = unit(1 * MiB);
    const data = Uint8Array.from({ length: 1024 }, (_, i) => (i * 31 + 7) & 0xff);
    const w = run(t, write10(10, 2), { out: data });
    good(w);
    expect(w.r.outBytes).toBe(1024);
    expect(new Uint8Array(readFileSync(path)).subarray(5120, 6144)).toEqual(data);
    expect(good(run(t, read16(10, 2), { inLen: 1024 }))).toEqual(data);
    expect(good(run(t, [OP.READ_12, 0, ...be(10, 4), ...be(2, 4), 0, 0], { inLen: 1024 }))).toEqual(data);
    expect(good(run(t, [OP.READ_6, 0, 0, 3, 1, 0], { inLen: 512 }))).toEqual(img.subarray(1536, 2048));
    // READ(6) with 0 blocks means 256
    expect(good(run(t, [OP.READ_6, 0, 0, 0, 0, 0], { inLen: 256 * 512 })).length).toBe(256 * 512);
    const d6 = new Uint8Array(512).fill(0x66);
    good(run(t, [OP.WRITE_6, 0, 0, 20, 1, 0], { out: d6 }));
    const d12 = new Uint8Array(512).fill(0x12);
    good(run(t, [OP.WRITE_12, 0, ...be(21, 4), ...be(1, 4), 0, 0], { out: d12 }));
    const f = new Uint8Array(readFileSync(path));
    expect(f.subarray(20 * 512, 21 * 512)).toEqual(d6);
    expect(f.subarray(21 * 512, 22 * 512)).toEqual(d12);
  });

  test("boundary LBAs: the last block works, one past it and 2^63 are LBA OUT OF RANGE; 0 blocks is a no-op", () => {
    const { t, img } = unit(1 * MiB);
    const last = (1 * MiB) / 512 - 1;
    expect(good(run(t, read10(last, 1), { inLen: 512 }))).toEqual(img.subarray(last * 512));
    check(run(t, read10(last, 2), { inLen: 1024 }), SENSE.LBA_OUT_OF_RANGE);
    check(run(t, read10(last + 1, 1), { inLen: 512 }), SENSE.LBA_OUT_OF_RANGE);
    check(run(t, read16(2n ** 63n, 1), { inLen: 512 }), SENSE.LBA_OUT_OF_RANGE);
    check(run(t, read16(0xffffffffffffffffn, 1), { inLen: 512 }), SENSE.LBA_OUT_OF_RANGE);
    check(run(t, write16(last, 2), { out: new Uint8Array(1024) }), SENSE.LBA_OUT_OF_RANGE);
    const z = run(t, read10(last + 1, 0), { inLen: 512 });
    good(z);
    expect(z.r.inBytes).toBe(0);
    check(run(t, read10(last + 2, 0)), SENSE.LBA_OUT_OF_RANGE);
  });

  test("buffers: larger than the transfer → exact count (residual for the transport); smaller → overrun", () => {
    const { t, path, img } = unit(1 * MiB);
    const big = run(t, read10(0, 1), { inLen: 4096 });
    expect(good(big).length).toBe(512);
    expect(big.r.inBytes).toBe(512);
    const small = run(t, read10(0, 4), { inLen: 1024 });
    expect([small.r.overrun, small.r.inBytes]).toEqual([true, 0]);
    const ws = run(t, write10(0, 4), { out: new Uint8Array(1024).fill(1) });
    expect(ws.r.overrun).toBe(true);
    expect(new Uint8Array(readFileSync(path))).toEqual(img); // nothing written
    // wrong direction: a READ with only data-out buffers
    expect(run(t, read10(0, 1), { out: new Uint8Array(512) }).r.overrun).toBe(true);
  });

  test("too long a transfer, protection information → INVALID FIELD IN CDB", () => {
    const { t } = unit(16 * MiB);
    check(run(t, read10(0, 8193), { inLen: 512 }), SENSE.INVALID_FIELD_IN_CDB, { byte: 7, cdb: true });
    check(run(t, read10(0, 1, 0x20), { inLen: 512 }), SENSE.INVALID_FIELD_IN_CDB, { byte: 1, bit: 5, cdb: true });
    check(run(t, write10(0, 1, 0x40), { out: new Uint8Array(512) }), SENSE.INVALID_FIELD_IN_CDB, { byte: 1, bit: 5, cdb: true });
  });

  test("read-only: writes are DATA PROTECT / WRITE PROTECTED and the file is unchanged; reads work", () => {
    const { t, path, img } = unit(1 * MiB, { ro: true });
    check(run(t, write10(0, 1), { out: new Uint8Array(512).fill(9) }), SENSE.WRITE_PROTECTED);
    check(run(t, [OP.WRITE_SAME_16, 0x08, ...be(0, 8), ...be(8, 4), 0, 0], { out: new Uint8Array(512) }), SENSE.WRITE_PROTECTED);
    check(run(t, [OP.UNMAP, 0, 0, 0, 0, 0, 0, 0, 24, 0], { out: new Uint8Array(24) }), SENSE.WRITE_PROTECTED);
    expect(new Uint8Array(readFileSync(path))).toEqual(img);
    expect(good(run(t, read10(1, 1), { inLen: 512 }))).toEqual(img.subarray(512, 1024));
    good(run(t, [OP.SYNCHRONIZE_CACHE_10, 0, 0, 0, 0, 0, 0, 0, 0, 0]));
  });

  test("host errors: EIO on read → MEDIUM ERROR 11/00, on write / flush → MEDIUM ERROR 0C/00", () => {
    const { t } = unit(1 * MiB);
    const eio: BlockEngine = { ...viewCopyEngine, read: () => -5, write: () => -5, flush: () => -5, discard: () => -5, writeZeroes: () => -5 };
    const r = run(t, read10(0, 1), { inLen: 512, engine: eio });
    check(r, SENSE.UNRECOVERED_READ);
    expect(r.r.error).toContain("host error 5");
    check(run(t, write10(0, 1), { out: new Uint8Array(512), engine: eio }), SENSE.WRITE_ERROR);
    check(run(t, [OP.SYNCHRONIZE_CACHE_16, ...Array(15).fill(0)], { engine: eio }), SENSE.WRITE_ERROR);
    check(run(t, [OP.WRITE_SAME_16, 0x08, ...be(0, 8), ...be(8, 4), 0, 0], { out: new Uint8Array(512), engine: eio }), SENSE.WRITE_ERROR);
    const short: BlockEngine = { ...viewCopyEngine, read: () => 100 };
    check(run(t, read10(0, 1), { inLen: 512, engine: short }), SENSE.UNRECOVERED_READ);
  });

  test("FUA flushes after the write (unless O_SYNC); SYNCHRONIZE CACHE flushes and checks its range", () => {
    const { t } = unit(1 * MiB);
    let flushes = 0;
    const counting: BlockEngine = { ...viewCopyEngine, flush: (d) => { flushes++; return viewCopyEngine.flush(d); } };
    good(run(t, write10(0, 1), { out: new Uint8Array(512), engine: counting }));
    expect(flushes).toBe(0);
    good(run(t, write10(0, 1, 0x08), { out: new Uint8Array(512), engine: counting }));
    expect(flushes).toBe(1);
    good(run(t, [OP.SYNCHRONIZE_CACHE_10, 0, 0, 0, 0, 0, 0, 0, 0, 0], { engine: counting }));
    good(run(t, [OP.SYNCHRONIZE_CACHE_16, 0, ...be(100, 8), ...be(10, 4), 0, 0], { engine: counting }));
    expect(flushes).toBe(3);
    check(run(t, [OP.SYNCHRONIZE_CACHE_10, 0, ...be(2048, 4), 0, 0, 1, 0], { engine: counting }), SENSE.LBA_OUT_OF_RANGE);
    const s = unit(1 * MiB, { sync: true }).t;
    good(run(s, write10(0, 1, 0x08), { out: new Uint8Array(512), engine: counting }));
    expect(flushes).toBe(3);
  });

  test("VERIFY(10/16): BYTCHK=0 checks the range only; BYTCHK≠0 refused", () => {
    const { t } = unit(1 * MiB);
    good(run(t, [OP.VERIFY_10, 0, ...be(0, 4), 0, ...be(16, 2), 0]));
    good(run(t, [OP.VERIFY_16, 0, ...be(2047, 8), ...be(1, 4), 0, 0]));
    check(run(t, [OP.VERIFY_16, 0, ...be(2047, 8), ...be(2, 4), 0, 0]), SENSE.LBA_OUT_OF_RANGE);
    check(run(t, [OP.VERIFY_10, 0x02, ...be(0, 4), 0, ...be(1, 2), 0]), SENSE.INVALID_FIELD_IN_CDB, { byte: 1, bit: 1, cdb: true });
  });

  test("host-backed guest memory and the production engine: preadv/pwritev straight into guest RAM, across regions", () => {
    const K64 = 65536;
    const a = host.memAlloc(K64, false), b = host.memAlloc(K64, false);
    const real = new GuestMemory([region(0, host.memView(a, K64), a), region(K64, host.memView(b, K64), b)]);
    const { t, path } = unit(1 * MiB);
    const data = Uint8Array.from({ length: 2048 }, (_, i) => (i * 7 + 3) & 0xff);
    // data-out straddles the two host mappings
    good(run(t, write10(100, 4), { out: data, m: real, outAt: K64 - 1000, engine: hostEngine }));
    expect(new Uint8Array(readFileSync(path)).subarray(100 * 512, 104 * 512)).toEqual(data);
    expect(good(run(t, read10(100, 4), { inLen: 2048, m: real, inAt: K64 - 300, engine: hostEngine }))).toEqual(data);
  });
});

describe("WRITE SAME / UNMAP (discard)", () => {
  /** A sparse-friendly image: 4 MiB of data, fully allocated. */
  function allocated() {
    const u = unit(4 * MiB);
    return { ...u, blocks0: statSync(u.path).blocks };
  }
  const unmapList = (descs: [number | bigint, number][], o: { bdl?: number; udl?: number } = {}) => {
    const b = new Uint8Array(8 + 16 * descs.length), v = dv(b);
    const bdl = o.bdl ?? 16 * descs.length;
    v.setUint16(0, o.udl ?? 6 + bdl);
    v.setUint16(2, bdl);
    descs.forEach(([lba, cnt], i) => { v.setBigUint64(8 + 16 * i, BigInt(lba)); v.setUint32(16 + 16 * i, cnt); });
    return b;
  };
  const unmapCdb = (len: number) => [OP.UNMAP, 0, 0, 0, 0, 0, 0, ...be(len, 2), 0];

  test("UNMAP punches holes in the sparse file: st_blocks drops and the range reads zeros", () => {
    const { t, path, img, blocks0 } = allocated();
    const list = unmapList([[0, 2048], [4096, 2048]]); // 1 MiB at 0 and 1 MiB at 2 MiB
    const r = run(t, unmapCdb(list.length), { out: list });
    good(r);
    expect(r.r.outBytes).toBe(list.length);
    const after = statSync(path).blocks;
    expect(blocks0 - after).toBeGreaterThanOrEqual(2 * 2048 - 64); // ~2 MiB in 512-byte st_blocks
    const f = new Uint8Array(readFileSync(path));
    expect(f.subarray(0, MiB).every((x) => x === 0)).toBe(true);
    expect(f.subarray(MiB, 2 * MiB)).toEqual(img.subarray(MiB, 2 * MiB));
    expect(f.subarray(2 * MiB, 3 * MiB).every((x) => x === 0)).toBe(true);
  });

  test("UNMAP parameter list checks: length 0 ok, 1-7 → PARAMETER LIST LENGTH, bad lengths / counts → INVALID FIELD IN PARAMETER LIST, range → LBA OUT OF RANGE", () => {
    const { t, path, img } = allocated();
    good(run(t, unmapCdb(0)));
    check(run(t, unmapCdb(4), { out: new Uint8Array(4) }), SENSE.PARAM_LIST_LENGTH);
    const beyond = unmapList([[0, 8]], { bdl: 64 });
    check(run(t, unmapCdb(beyond.length), { out: beyond }), SENSE.INVALID_FIELD_IN_PARAM, { byte: 2, cdb: false });
    const udl = unmapList([[0, 8]], { udl: 2 });
    check(run(t, unmapCdb(udl.length), { out: udl }), SENSE.INVALID_FIELD_IN_PARAM, { byte: 0, cdb: false });
    const many = unmapList(Array.from({ length: 65 }, (_, i) => [i * 8, 8] as [number, number]));
    check(run(t, unmapCdb(many.length), { out: many }), SENSE.INVALID_FIELD_IN_PARAM, { byte: 2, cdb: false });
    const out = unmapList([[0, 8], [8191, 2]]);
    check(run(t, unmapCdb(out.length), { out }), SENSE.LBA_OUT_OF_RANGE);
    const huge = unmapList([[0, 0xffffffff]]);
    check(run(t, unmapCdb(huge.length), { out: huge }), SENSE.INVALID_FIELD_IN_PARAM, { byte: 16, cdb: false });
    expect(new Uint8Array(readFileSync(path))).toEqual(img); // nothing was discarded by a refused list
    // an incomplete last descriptor is ignored
    const partial = unmapList([[0, 8]], { bdl: 16 + 8 });
    const p2 = new Uint8Array(partial.length + 8); p2.set(partial);
    good(run(t, unmapCdb(p2.length), { out: p2 }));
    // the parameter list longer than data-out → overrun
    expect(run(t, unmapCdb(64), { out: unmapList([[0, 8]]) }).r.overrun).toBe(true);
    // nodelete: UNMAP is not a command of this unit
    const nd = unit(1 * MiB, { nodelete: true }).t;
    check(run(nd, unmapCdb(24), { out: unmapList([[0, 8]]) }), SENSE.INVALID_OPCODE);
  });

  test("WRITE SAME(16) with UNMAP and a zero block punches holes; WRITE SAME(10) with a pattern writes it", () => {
    const { t, path, img, blocks0 } = allocated();
    good(run(t, [OP.WRITE_SAME_16, 0x08, ...be(2048, 8), ...be(2048, 4), 0, 0], { out: new Uint8Array(512) }));
    expect(blocks0 - statSync(path).blocks).toBeGreaterThanOrEqual(2048 - 64);
    let f = new Uint8Array(readFileSync(path));
    expect(f.subarray(MiB, 2 * MiB).every((x) => x === 0)).toBe(true);
    const pat = Uint8Array.from({ length: 512 }, (_, i) => (i ^ 0x5a) & 0xff);
    good(run(t, [OP.WRITE_SAME_10, 0, ...be(10, 4), 0, ...be(300, 2), 0], { out: pat }));
    f = new Uint8Array(readFileSync(path));
    for (let b = 10; b < 310; b++) expect(f.subarray(b * 512, b * 512 + 512)).toEqual(pat);
    expect(f.subarray(310 * 512, 311 * 512)).toEqual(img.subarray(310 * 512, 311 * 512));
    // NDOB: no data-out, zeros
    good(run(t, [OP.WRITE_SAME_16, 0x01, ...be(400, 8), ...be(4, 4), 0, 0]));
    expect(new Uint8Array(readFileSync(path)).subarray(400 * 512, 404 * 512).every((x) => x === 0)).toBe(true);
  });

  test("WRITE SAME refusals: 0 blocks (WSNZ), ANCHOR, too many blocks, out of range, no data block", () => {
    const { t } = allocated();
    const ws16 = (flags: number, lba: number, cnt: number) => [OP.WRITE_SAME_16, flags, ...be(lba, 8), ...be(cnt, 4), 0, 0];
    check(run(t, ws16(0, 0, 0), { out: new Uint8Array(512) }), SENSE.INVALID_FIELD_IN_CDB, { byte: 10, cdb: true });
    check(run(t, ws16(0x10, 0, 1), { out: new Uint8Array(512) }), SENSE.INVALID_FIELD_IN_CDB, { byte: 1, bit: 4, cdb: true });
    check(run(t, ws16(0, 0, (1 << 30) / 512 + 1), { out: new Uint8Array(512) }), SENSE.INVALID_FIELD_IN_CDB, { byte: 10, cdb: true });
    check(run(t, ws16(0, 8191, 2), { out: new Uint8Array(512) }), SENSE.LBA_OUT_OF_RANGE);
    expect(run(t, ws16(0, 0, 1), { out: new Uint8Array(100) }).r.overrun).toBe(true);
  });
});

describe("MODE SENSE / MODE SELECT", () => {
  const ms6 = (page: number, alloc: number, flags = 0, sub = 0) => [OP.MODE_SENSE_6, flags, page, sub, alloc, 0];
  const ms10 = (page: number, alloc: number, flags = 0) => [OP.MODE_SENSE_10, flags, page, 0, 0, 0, 0, ...be(alloc, 2), 0];

  test("MODE SENSE(6): header, block descriptor, caching page with WCE, control page, all pages, DBD", () => {
    const { t } = unit(2 * MiB);
    const d = good(run(t, ms6(0x08, 255), { inLen: 255 }));
    expect(d.length).toBe(4 + 8 + 20);
    expect([d[0], d[2], d[3]]).toEqual([31, 0x10, 8]); // length, DPOFUA without WP, 8-byte descriptor
    expect([dv(d).getUint32(4), dv(d).getUint32(8) & 0xffffff]).toEqual([(2 * MiB) / 512, 512]);
    expect([d[12], d[13], d[14]! & 0x04]).toEqual([0x08, 18, 0x04]); // WCE
    const all = good(run(t, ms6(0x3f, 255), { inLen: 255 }));
    expect(all.length).toBe(4 + 8 + 20 + 12);
    expect([all[32], all[33]]).toEqual([0x0a, 10]);
    expect(good(run(t, ms6(0x3f, 255, 0, 0xff), { inLen: 255 })).length).toBe(44);
    const dbd = good(run(t, ms6(0x0a, 255, 0x08), { inLen: 255 }));
    expect([dbd.length, dbd[3], dbd[4]]).toEqual([16, 0, 0x0a]);
    const clipped = good(run(t, ms6(0x3f, 4), { inLen: 255 }));
    expect([clipped.length, clipped[0]]).toEqual([4, 43]);
    // changeable values: nothing
    const ch = good(run(t, ms6(0x08, 255, 0x08).map((x, i) => (i === 2 ? 0x48 : x)), { inLen: 255 }));
    expect([...ch.subarray(6)].every((x) => x === 0)).toBe(true);
  });

  test("WP for a read-only unit; WCE 0 with O_SYNC; MODE SENSE(10) with LLBAA gives a 16-byte descriptor", () => {
    const ro = unit(1 * MiB, { ro: true }).t;
    expect(good(run(ro, ms6(0x08, 255), { inLen: 255 }))[2]! & 0x80).toBe(0x80);
    const sy = unit(1 * MiB, { sync: true }).t;
    expect(good(run(sy, ms6(0x08, 255, 0x08), { inLen: 255 }))[6]! & 0x04).toBe(0);
    const { t } = unit(1 * MiB);
    const d = good(run(t, ms10(0x08, 512, 0x10), { inLen: 512 }));
    expect([dv(d).getUint16(0), d[4]! & 1, dv(d).getUint16(6)]).toEqual([8 + 16 + 20 - 2, 1, 16]);
    expect([dv(d).getBigUint64(8), dv(d).getUint32(20)]).toEqual([2048n, 512]);
    const d8 = good(run(t, ms10(0x3f, 512), { inLen: 512 }));
    expect(dv(d8).getUint16(6)).toBe(8);
  });

  test("MODE SENSE refusals: saved values, unknown page, unknown subpage", () => {
    const { t } = unit();
    check(run(t, ms6(0xc8, 255), { inLen: 255 }), SENSE.SAVING_NOT_SUPPORTED);
    check(run(t, ms6(0x1c, 255), { inLen: 255 }), SENSE.INVALID_FIELD_IN_CDB, { byte: 2, cdb: true });
    check(run(t, ms6(0x08, 255, 0, 1), { inLen: 255 }), SENSE.INVALID_FIELD_IN_CDB, { byte: 3, cdb: true });
  });

  test("MODE SELECT accepts the current values and refuses changes, SP and a different block length", () => {
    const { t } = unit();
    // what MODE SENSE(6) says is what MODE SELECT(6) accepts back (mode data length is reserved there)
    const cur = good(run(t, ms6(0x08, 255), { inLen: 255 }));
    const list = cur.slice(); list[0] = 0;
    good(run(t, [OP.MODE_SELECT_6, 0x10, 0, 0, list.length, 0], { out: list }));
    const cur10 = good(run(t, ms10(0x3f, 512), { inLen: 512 }));
    const list10 = cur10.slice(); list10[0] = list10[1] = 0;
    good(run(t, [OP.MODE_SELECT_10, 0x10, 0, 0, 0, 0, 0, ...be(list10.length, 2), 0], { out: list10 }));
    const noWce = list.slice(); noWce[14] = 0;
    check(run(t, [OP.MODE_SELECT_6, 0x10, 0, 0, noWce.length, 0], { out: noWce }), SENSE.INVALID_FIELD_IN_PARAM, { byte: 14, cdb: false });
    const bl = list.slice(); bl[10] = 0x10; // block length 4096
    check(run(t, [OP.MODE_SELECT_6, 0x10, 0, 0, bl.length, 0], { out: bl }), SENSE.INVALID_FIELD_IN_PARAM, { byte: 9, cdb: false });
    check(run(t, [OP.MODE_SELECT_6, 0x11, 0, 0, list.length, 0], { out: list }), SENSE.INVALID_FIELD_IN_CDB, { byte: 1, bit: 0, cdb: true });
    const unknown = Uint8Array.of(0, 0, 0, 0, 0x1c, 2, 0, 0);
    check(run(t, [OP.MODE_SELECT_6, 0x10, 0, 0, unknown.length, 0], { out: unknown }), SENSE.INVALID_FIELD_IN_PARAM, { byte: 4, cdb: false });
    check(run(t, [OP.MODE_SELECT_6, 0x10, 0, 0, 2, 0], { out: new Uint8Array(2) }), SENSE.PARAM_LIST_LENGTH);
    good(run(t, [OP.MODE_SELECT_6, 0x10, 0, 0, 0, 0]));
  });
});

test("sense data: fixed format 0x70, additional length 10, sense-key specific field pointer", () => {
  const { t } = unit();
  const r = run(t, inquiry(2, 0, 36), { inLen: 36 });
  const s = r.r.sense!;
  expect([s[0], s[2], s[7], s[12], s[13], s[15], s[16], s[17]]).toEqual([0x70, 0x05, 10, 0x24, 0x00, 0x80 | 0x40 | 0x08 | 1, 0, 1]);
  expect(r.r.error).toContain("invalid field in CDB");
});
