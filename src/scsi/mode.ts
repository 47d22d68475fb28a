/**
 * MODE SENSE(6/10) and MODE SELECT(6/10) (SPC-4 §6.11-6.14, SBC-3 §6.5). Pages as data (`MODE_PAGES`):
 * 0x08 caching (WCE set unless the disk is opened O_SYNC: the host page cache is a volatile write
 * cache that SYNCHRONIZE CACHE flushes) and 0x0A control (fixed sense format, unrestricted reordering);
 * 0x3F asks for all of them. Page control: current (0) and default (3 → refused: no saved values; 2 =
 * default = current); changeable values (1) are all zero — nothing can be changed. The header's
 * device-specific parameter carries WP for a read-only disk and DPOFUA. One block descriptor (8 bytes,
 * or 16 with LLBAA in MODE SENSE(10)) unless DBD.
 *
 * MODE SELECT accepts a parameter list that changes nothing (a block descriptor with the current block
 * length, pages equal to the current values) and rejects anything else with INVALID FIELD IN PARAMETER
 * LIST; SP (save pages) is refused.
 */
import { SENSE } from "./constants.ts";
import { be16, params, put16, put32, put64, reply, type Cmd } from "./command.ts";
import type { ScsiLun } from "./lun.ts";
import { badCdb, badParam, ScsiError } from "./sense.ts";

interface ModePage { code: number; build(l: ScsiLun, changeable: boolean): Uint8Array }

export const MODE_PAGES: readonly ModePage[] = [
  {
    code: 0x08, build(l, ch) {
      const b = new Uint8Array(20);
      b[0] = 0x08;
      b[1] = 18;
      if (!ch) {
        b[2] = l.disk.sync ? 0 : 0x04; // WCE
        put16(b, 4, 0xffff); // disable pre-fetch transfer length
        put16(b, 8, 0xffff); // maximum pre-fetch
        put16(b, 10, 0xffff); // maximum pre-fetch ceiling
      }
      return b;
    },
  },
  {
    code: 0x0a, build(_l, ch) {
      const b = new Uint8Array(12);
      b[0] = 0x0a;
      b[1] = 10;
      if (!ch) {
        b[3] = 0x10; // queue algorithm modifier 1: unrestricted reordering allowed
        put16(b, 8, 0xffff); // busy timeout period: unlimited
      }
      return b;
    },
  },
];

const ALL_PAGES = 0x3f;

function blockDescriptor(l: ScsiLun, long: boolean): Uint8Array {
  if (long) {
    const b = new Uint8Array(16);
    put64(b, 0, l.blocks);
    put32(b, 12, l.blockSize);
    return b;
  }
  const b = new Uint8Array(8);
  put32(b, 0, Math.min(l.blocks, 0xffffffff));
  put32(b, 4, l.blockSize & 0xffffff); // byte 4 density code 0, bytes 5-7 block length
  return b;
}

function modeSense(c: Cmd, ten: boolean): void {
  const l = c.lun!, cdb = c.cdb;
  const dbd = (cdb[1]! & 0x08) !== 0, llbaa = ten && (cdb[1]! & 0x10) !== 0;
  const pc = cdb[2]! >> 6, code = cdb[2]! & 0x3f, sub = cdb[3]!;
  const alloc = ten ? be16(cdb, 7) : cdb[4]!;
  if (pc === 3) throw new ScsiError(SENSE.SAVING_NOT_SUPPORTED, undefined, "saved values");
  const chosen = code === ALL_PAGES ? MODE_PAGES : MODE_PAGES.filter((p) => p.code === code);
  if (!chosen.length) throw badCdb(2, undefined, `mode page 0x${code.toString(16)}`);
  if (sub !== 0 && !(code === ALL_PAGES && sub === 0xff)) throw badCdb(3, undefined, `subpage 0x${sub.toString(16)}`);
  const pages = chosen.map((p) => p.build(l, pc === 1));
  const bd = dbd ? new Uint8Array(0) : blockDescriptor(l, llbaa);
  const hdrLen = ten ? 8 : 4;
  const total = hdrLen + bd.length + pages.reduce((a, p) => a + p.length, 0);
  const b = new Uint8Array(total);
  const dsp = (l.disk.readonly ? 0x80 : 0) | 0x10; // WP, DPOFUA
  if (ten) {
    put16(b, 0, total - 2);
    b[3] = dsp;
    b[4] = llbaa && bd.length ? 0x01 : 0; // LONGLBA
    put16(b, 6, bd.length);
  } else {
    b[0] = total - 1;
    b[2] = dsp;
    b[3] = bd.length;
  }
  b.set(bd, hdrLen);
  let o = hdrLen + bd.length;
  for (const p of pages) { b.set(p, o); o += p.length; }
  reply(c, b, alloc);
}

function modeSelect(c: Cmd, ten: boolean): void {
  const l = c.lun!, cdb = c.cdb;
  if (cdb[1]! & 0x01) throw badCdb(1, 0, "SP: saving pages is not supported");
  const len = ten ? be16(cdb, 7) : cdb[4]!;
  if (len === 0) return;
  const hdrLen = ten ? 8 : 4;
  if (len < hdrLen) throw new ScsiError(SENSE.PARAM_LIST_LENGTH, undefined, `${len} bytes`);
  const p = params(c, len);
  const bdLen = ten ? be16(p, 6) : p[3]!;
  const long = ten && (p[4]! & 0x01) !== 0;
  const bdSize = long ? 16 : 8;
  if (bdLen % bdSize || hdrLen + bdLen > len) throw badParam(ten ? 6 : 3, undefined, `block descriptor length ${bdLen}`);
  for (let o = hdrLen; o < hdrLen + bdLen; o += bdSize) {
    const blen = long ? (p[o + 12]! << 24 | p[o + 13]! << 16 | p[o + 14]! << 8 | p[o + 15]!) >>> 0 : (p[o + 5]! << 16 | p[o + 6]! << 8 | p[o + 7]!);
    if (blen !== l.blockSize) throw badParam(long ? o + 12 : o + 5, undefined, `block length ${blen}`);
  }
  for (let o = hdrLen + bdLen; o < len;) {
    if (o + 2 > len) throw badParam(o, undefined, "truncated page header");
    const code = p[o]! & 0x3f, spf = (p[o]! & 0x40) !== 0, plen = p[o + 1]! + 2;
    const page = MODE_PAGES.find((m) => m.code === code);
    if (spf || !page) throw badParam(o, undefined, `mode page 0x${code.toString(16)}`);
    const cur = page.build(l, false);
    if (plen !== cur.length || o + plen > len) throw badParam(o + 1, undefined, `page length ${plen - 2}`);
    // everything after the header must equal the current values (nothing is changeable);
    // PS (bit 7 of byte 0) is reserved in MODE SELECT and ignored
    for (let i = 2; i < plen; i++) if (p[o + i] !== cur[i]) throw badParam(o + i, undefined, `page 0x${code.toString(16)} byte ${i} cannot be changed`);
    o += plen;
  }
}

export const modeSense6 = (c: Cmd) => modeSense(c, false);
export const modeSense10 = (c: Cmd) => modeSense(c, true);
export const modeSelect6 = (c: Cmd) => modeSelect(c, false);
export const modeSelect10 = (c: Cmd) => modeSelect(c, true);
