/**
 * INQUIRY (SPC-4 §6.6): standard data and the vital product data pages a Linux/FreeBSD/Windows disk
 * driver reads — 0x00 supported pages, 0x80 unit serial number (the disk's serial), 0x83 device
 * identification (a T10 vendor ID designator: "TSBHYVE " + serial), 0xB0 block limits, 0xB1 block
 * device characteristics (non-rotating), 0xB2 logical block provisioning (thin, UNMAP and WRITE SAME
 * when the disk offers discard). Each page is a small builder in `VPD_PAGES` (page code → bytes).
 *
 * For a LUN that is not there (SPC-4 §4.6.4 / SAM-5), standard INQUIRY answers peripheral qualifier 3,
 * type 0x1F ("no logical unit"), so an initiator scanning LUNs skips it.
 */
import { PERIPHERAL, SENSE } from "./constants.ts";
import { put16, put32, put64, putAscii, reply, be16, type Cmd } from "./command.ts";
import type { ScsiLun } from "./lun.ts";
import { badCdb, ScsiError } from "./sense.ts";

/** SPC-4 in the VERSION field. */
const VERSION_SPC4 = 0x06;
/** Version descriptors: SAM-5, SPC-4, SBC-3. */
const VERSION_DESCRIPTORS = [0x00a0, 0x0460, 0x04c0];
const STANDARD_BYTES = 74;

function standard(l: ScsiLun | undefined): Uint8Array {
  const b = new Uint8Array(STANDARD_BYTES);
  b[0] = l ? PERIPHERAL.DISK : PERIPHERAL.NO_LUN;
  b[2] = VERSION_SPC4;
  b[3] = 0x12; // HISUP, response data format 2
  b[4] = STANDARD_BYTES - 5;
  b[7] = 0x02; // CMDQUE
  putAscii(b, 8, l?.vendor ?? "TSBHYVE", 8);
  putAscii(b, 16, l?.product ?? "", 16);
  putAscii(b, 32, l?.revision ?? "", 4);
  VERSION_DESCRIPTORS.forEach((d, i) => put16(b, 58 + 2 * i, d));
  return b;
}

/** A VPD page: header (type, page code, length) around `body`. */
function page(code: number, body: Uint8Array): Uint8Array {
  const b = new Uint8Array(4 + body.length);
  b[0] = PERIPHERAL.DISK;
  b[1] = code;
  put16(b, 2, body.length);
  b.set(body, 4);
  return b;
}

const ascii = (s: string) => Uint8Array.from(s, (ch) => ch.charCodeAt(0) & 0x7f);

/** Page code → body builder. Order is the order of page 0x00's list. */
export const VPD_PAGES: ReadonlyMap<number, (l: ScsiLun) => Uint8Array> = new Map<number, (l: ScsiLun) => Uint8Array>([
  [0x00, () => Uint8Array.from(VPD_PAGES.keys())],
  [0x80, (l) => ascii(l.disk.serial)],
  [0x83, (l) => {
    // T10 vendor ID designator: code set ASCII, association LU, type 1; vendor (8 bytes) + serial
    const id = new Uint8Array(8 + l.disk.serial.length);
    putAscii(id, 0, l.vendor, 8);
    id.set(ascii(l.disk.serial), 8);
    const d = new Uint8Array(4 + id.length);
    d[0] = 0x02; // protocol 0, code set 2 (ASCII)
    d[1] = 0x01; // PIV 0, association 0 (logical unit), designator type 1 (T10 vendor ID)
    d[3] = id.length;
    d.set(id, 4);
    return d;
  }],
  [0xb0, (l) => {
    const b = new Uint8Array(0x3c);
    // offsets below are page offsets minus the 4-byte header
    b[0] = 0x01; // WSNZ: WRITE SAME with 0 blocks is refused
    put16(b, 2, 1 << l.physExp); // optimal transfer length granularity
    put32(b, 4, l.maxTransferBlocks); // maximum transfer length
    put32(b, 8, l.maxTransferBlocks); // optimal transfer length
    put32(b, 16, l.maxUnmapBlocks); // maximum unmap LBA count
    put32(b, 20, l.maxUnmapDescriptors); // maximum unmap block descriptor count
    put32(b, 24, l.disk.discard ? 1 << l.physExp : 0); // optimal unmap granularity
    put32(b, 28, l.disk.discard ? 0x80000000 : 0); // UGAVALID, alignment 0
    put64(b, 32, l.maxWriteSameBlocks); // maximum write same length
    return b;
  }],
  [0xb1, () => {
    const b = new Uint8Array(0x3c);
    put16(b, 0, 1); // medium rotation rate: non-rotating medium
    return b;
  }],
  [0xb2, (l) => {
    const b = new Uint8Array(4);
    // LBPU (UNMAP), LBPWS (WRITE SAME 16 with UNMAP), LBPWS10; provisioning type 2 (thin) with discard
    if (l.disk.discard) { b[1] = 0x80 | 0x40 | 0x20; b[2] = 0x02; }
    return b;
  }],
]);

export function inquiry(c: Cmd): void {
  const cdb = c.cdb, evpd = cdb[1]! & 0x01, code = cdb[2]!, alloc = be16(cdb, 3);
  if (cdb[1]! & 0xfe) throw badCdb(1, cdb[1]! & 0x02 ? 1 : undefined, "CMDDT/reserved bits");
  if (!evpd) {
    if (code) throw badCdb(2, undefined, `page code ${code} without EVPD`);
    reply(c, standard(c.lun), alloc);
    return;
  }
  const build = VPD_PAGES.get(code);
  if (!c.lun) throw new ScsiError(SENSE.LUN_NOT_SUPPORTED);
  if (!build) throw badCdb(2, undefined, `VPD page 0x${code.toString(16)}`);
  reply(c, page(code, build(c.lun)), alloc);
}
