/**
 * SMBIOS 3.x tables (DMTF DSP0134) describing the VM: what `dmidecode`, Linux's /sys/class/dmi and
 * Windows show as the machine's vendor, model, serial number and UUID.
 *
 * Structures (handles are type << 8 | index, so they are unique and readable in dumps):
 *   0   BIOS information: bios.vendor/version/release_date, characteristics (PCI, shadowing, CD boot,
 *       selectable boot, EDD; extension bytes: ACPI; BIOS boot spec, "describes a virtual machine"),
 *       ROM size (the boot ROM's, 64 KiB without one; >= 16 MiB through the 3.1 extended size field)
 *   1   system: system.* keys and the UUID (config `uuid`, SMBIOS byte order), wake-up type "power switch"
 *   2   baseboard: board.* keys, a motherboard in chassis 0x0300
 *   3   chassis: chassis.* keys, type "other", states "safe", no contained elements
 *   4   one per socket: "CPU n", central processor, family "other", core/thread counts from the topology,
 *       64-bit capable (+ multi-core / hardware-thread flags), no caches described
 *   16  physical memory array: system memory, no ECC, max capacity = guest RAM
 *   17  one memory device per 16 GiB of RAM ("DIMM n"), speed unknown
 *   19  one mapped address range per RAM range (below 4 GiB and above 4 GiB)
 *   32  system boot information: no errors
 *   127 end of table
 * Strings are UTF-8 (allowed since SMBIOS 3.0); an empty value is string number 0 ("not specified").
 *
 * Consumers: firmware takes `etc/smbios/smbios-tables` + `etc/smbios/smbios-anchor` from fw_cfg (OVMF's
 * SmbiosPlatformDxe: the anchor's table address is 0 and its maximum size must equal the tables' size);
 * a directly booted Linux kernel scans 0xF0000-0xFFFFF for the anchor (writeSmbios places it).
 */
import type { SmbiosStrings } from "../config/types.ts";
import { checksum8 } from "../loader/blob.ts";
import type { GuestMemory } from "../mem/guest-memory.ts";
import { uuidSmbiosBytes } from "./uuid.ts";

export const SMBIOS_MAJOR = 3;
export const SMBIOS_MINOR = 1;
export const SMBIOS_DOCREV = 0;
export const EP3_BYTES = 0x18;
export const EP21_BYTES = 0x1f;

/** What buildSmbios needs from the VM config. */
export interface SmbiosInput {
  smbios: SmbiosStrings;
  uuid: string;
  sockets: number;
  cores: number;
  threads: number;
}

export interface SmbiosOptions {
  /** size of the boot ROM image in bytes (type 0 ROM size); default 64 KiB */
  biosRomSize?: number;
  /** table address written into the 3.0 anchor (0 for fw_cfg consumers) */
  tableAddress?: number;
}

export interface Smbios {
  /** SMBIOS 3.0 (64-bit) entry point, 24 bytes */
  anchor: Uint8Array;
  /** the structure table, ending with type 127 */
  tables: Uint8Array;
  /** number of structures (including type 127) */
  count: number;
  /** largest structure (formatted area + strings), for the 2.1 entry point */
  maxStructure: number;
}

const enc = new TextEncoder();
const KiB = 1024, MiB = 1024 * KiB, GiB = 1024 * MiB;

/** One structure under construction: formatted area + string set. */
class Structure {
  readonly area: Uint8Array;
  readonly dv: DataView;
  private readonly strings: Uint8Array[] = [];
  private readonly index = new Map<string, number>();
  constructor(type: number, length: number, readonly handle: number) {
    this.area = new Uint8Array(length);
    this.dv = new DataView(this.area.buffer);
    this.area[0] = type;
    this.area[1] = length;
    this.dv.setUint16(2, handle, true);
  }
  u8(off: number, v: number): this { this.area[off] = v; return this; }
  u16(off: number, v: number): this { this.dv.setUint16(off, v, true); return this; }
  u32(off: number, v: number): this { this.dv.setUint32(off, v >>> 0, true); return this; }
  u64(off: number, v: number | bigint): this { this.dv.setBigUint64(off, BigInt(v), true); return this; }
  bytes(off: number, b: Uint8Array): this { this.area.set(b, off); return this; }
  /** Store a string reference at `off` (0 for an empty string). */
  str(off: number, s: string): this {
    if (s === "") { this.area[off] = 0; return this; }
    let n = this.index.get(s);
    if (n === undefined) {
      this.strings.push(enc.encode(s));
      n = this.strings.length;
      if (n > 255) throw new RangeError("SMBIOS structure with more than 255 strings");
      this.index.set(s, n);
    }
    this.area[off] = n;
    return this;
  }
  /** Formatted area, then each string NUL-terminated, then the final NUL (two NULs if no strings). */
  encode(): Uint8Array {
    const strBytes = this.strings.reduce((a, s) => a + s.length + 1, 0);
    const out = new Uint8Array(this.area.length + Math.max(2, strBytes + 1));
    out.set(this.area);
    let o = this.area.length;
    for (const s of this.strings) { out.set(s, o); o += s.length + 1; }
    return out;
  }
}

/** Merge ramLayout()'s chunks into contiguous ranges. */
function mergeRanges(ram: readonly { gpa: number; size: number }[]): { gpa: number; size: number }[] {
  const out: { gpa: number; size: number }[] = [];
  for (const r of [...ram].sort((a, b) => a.gpa - b.gpa)) {
    const last = out.at(-1);
    if (last && last.gpa + last.size === r.gpa) last.size += r.size;
    else if (r.size > 0) out.push({ ...r });
  }
  return out;
}

/** "X.Y..." → [X, Y] when both fit a byte, else the "not supported" pair 0xFF/0xFF. */
function releaseNumbers(version: string): [number, number] {
  const m = /^(\d+)\.(\d+)/.exec(version);
  if (!m) return [0xff, 0xff];
  const a = Number(m[1]), b = Number(m[2]);
  return a < 0xff && b < 0xff ? [a, b] : [0xff, 0xff];
}

/** Bytes per type-17 memory device. */
export const DIMM_BYTES = 16 * GiB;

/** Build the structure table and the 3.0 entry point. */
export function buildSmbios(cfg: SmbiosInput, ram: readonly { gpa: number; size: number }[], opts: SmbiosOptions = {}): Smbios {
  const s = cfg.smbios;
  const list: Structure[] = [];
  const add = (type: number, length: number, index = 0) => {
    const st = new Structure(type, length, (type << 8) | index);
    list.push(st);
    return st;
  };

  // Type 0: BIOS information (3.1 layout, 0x1A bytes)
  const romSize = opts.biosRomSize ?? 64 * KiB;
  const rom64k = Math.ceil(romSize / (64 * KiB));
  const [major, minor] = releaseNumbers(s.bios.version);
  const t0 = add(0, 0x1a)
    .str(0x04, s.bios.vendor)
    .str(0x05, s.bios.version)
    .u16(0x06, 0xf000) // starting segment of the legacy BIOS area
    .str(0x08, s.bios.releaseDate)
    // characteristics: PCI (7), shadowing (12), boot from CD (15), selectable boot (16), EDD (19)
    .u64(0x0a, (1n << 7n) | (1n << 12n) | (1n << 15n) | (1n << 16n) | (1n << 19n))
    .u8(0x12, 0x01) // extension byte 1: ACPI
    .u8(0x13, 0x01 | 0x10) // extension byte 2: BIOS boot specification, virtual machine
    .u8(0x14, major).u8(0x15, minor)
    .u8(0x16, 0xff).u8(0x17, 0xff); // no embedded controller
  if (rom64k <= 0xff) {
    t0.u8(0x09, rom64k - 1).u16(0x18, 0);
  } else {
    // 64K*(n+1) cannot say it: 0xFF and the extended size (bits 15:14 = 0 → MiB, 1 → GiB)
    const mib = Math.ceil(romSize / MiB);
    t0.u8(0x09, 0xff).u16(0x18, mib <= 0x3fff ? mib : (1 << 14) | Math.ceil(romSize / GiB));
  }

  // Type 1: system information (0x1B bytes)
  add(1, 0x1b)
    .str(0x04, s.system.manufacturer)
    .str(0x05, s.system.productName)
    .str(0x06, s.system.version)
    .str(0x07, s.system.serialNumber)
    .bytes(0x08, uuidSmbiosBytes(cfg.uuid))
    .u8(0x18, 0x06) // wake-up type: power switch
    .str(0x19, s.system.sku)
    .str(0x1a, s.system.familyName);

  // Type 2: baseboard (0x0F bytes, no contained objects)
  add(2, 0x0f)
    .str(0x04, s.board.manufacturer)
    .str(0x05, s.board.productName)
    .str(0x06, s.board.version)
    .str(0x07, s.board.serialNumber)
    .str(0x08, s.board.assetTag)
    .u8(0x09, 0x01) // feature flags: hosting board
    .str(0x0a, s.board.location)
    .u16(0x0b, 0x0300) // chassis handle
    .u8(0x0d, 0x0a) // board type: motherboard
    .u8(0x0e, 0);

  // Type 3: system enclosure (0x16 bytes: n = 0 contained elements, m = 3, SKU at 0x15)
  add(3, 0x16)
    .str(0x04, s.chassis.manufacturer)
    .u8(0x05, 0x01) // type: other
    .str(0x06, s.chassis.version)
    .str(0x07, s.chassis.serialNumber)
    .str(0x08, s.chassis.assetTag)
    .u8(0x09, 0x03).u8(0x0a, 0x03).u8(0x0b, 0x03) // boot-up, power supply, thermal: safe
    .u8(0x0c, 0x02) // security: unknown
    .u32(0x0d, 0)
    .u8(0x11, 0).u8(0x12, 0) // height, power cords: unspecified
    .u8(0x13, 0).u8(0x14, 3)
    .str(0x15, s.chassis.sku);

  // Type 4: one per socket (3.0 layout, 0x30 bytes)
  const threadsPerSocket = cfg.cores * cfg.threads;
  let chars = 0x0004; // 64-bit capable
  if (cfg.cores > 1) chars |= 0x0008; // multi-core
  if (cfg.threads > 1) chars |= 0x0010; // hardware thread
  for (let i = 0; i < cfg.sockets; i++) {
    add(4, 0x30, i)
      .str(0x04, `CPU ${i}`)
      .u8(0x05, 0x03) // central processor
      .u8(0x06, 0x01) // family: other
      .str(0x07, s.system.manufacturer)
      .u64(0x08, 0) // processor ID (CPUID) not given
      .str(0x10, "")
      .u8(0x11, 0) // voltage: unknown
      .u16(0x12, 0).u16(0x14, 0).u16(0x16, 0) // clocks: unknown
      .u8(0x18, 0x41) // socket populated, CPU enabled
      .u8(0x19, 0x01) // upgrade: other
      .u16(0x1a, 0xffff).u16(0x1c, 0xffff).u16(0x1e, 0xffff) // no cache structures
      .str(0x20, "").str(0x21, "").str(0x22, "")
      .u8(0x23, Math.min(cfg.cores, 0xff))
      .u8(0x24, Math.min(cfg.cores, 0xff))
      .u8(0x25, Math.min(threadsPerSocket, 0xff))
      .u16(0x26, chars)
      .u16(0x28, 0x0001) // family 2: other
      .u16(0x2a, cfg.cores).u16(0x2c, cfg.cores).u16(0x2e, threadsPerSocket);
  }

  // Type 16: physical memory array (0x17 bytes)
  const ranges = mergeRanges(ram);
  const total = ranges.reduce((a, r) => a + r.size, 0);
  const dimms = Math.max(1, Math.ceil(total / DIMM_BYTES));
  const totalKiB = Math.ceil(total / KiB);
  add(16, 0x17)
    .u8(0x04, 0x03) // location: system board
    .u8(0x05, 0x03) // use: system memory
    .u8(0x06, 0x03) // error correction: none
    .u32(0x07, totalKiB < 0x8000_0000 ? totalKiB : 0x8000_0000)
    .u16(0x0b, 0xfffe) // no error information
    .u16(0x0d, dimms)
    .u64(0x0f, totalKiB < 0x8000_0000 ? 0 : total);

  // Type 17: memory devices (2.8 layout, 0x28 bytes)
  for (let i = 0; i < dimms; i++) {
    const bytes = Math.min(DIMM_BYTES, total - i * DIMM_BYTES);
    const mib = Math.ceil(bytes / MiB);
    add(17, 0x28, i)
      .u16(0x04, 0x1000) // physical memory array
      .u16(0x06, 0xfffe)
      .u16(0x08, 0xffff).u16(0x0a, 0xffff) // widths unknown
      .u16(0x0c, mib < 0x7fff ? mib : 0x7fff)
      .u8(0x0e, 0x09) // form factor: DIMM
      .u8(0x0f, 0)
      .str(0x10, `DIMM ${i}`)
      .str(0x11, "")
      .u8(0x12, 0x07) // type: RAM
      .u16(0x13, 0x0002) // type detail: other
      .u16(0x15, 0) // speed unknown
      .str(0x17, s.system.manufacturer)
      .str(0x18, "").str(0x19, "").str(0x1a, "")
      .u8(0x1b, 0)
      .u32(0x1c, mib < 0x7fff ? 0 : mib)
      .u16(0x20, 0).u16(0x22, 0).u16(0x24, 0).u16(0x26, 0);
  }

  // Type 19: mapped address ranges (0x1F bytes)
  ranges.forEach((r, i) => {
    const startK = r.gpa / KiB, endK = (r.gpa + r.size) / KiB - 1;
    const t = add(19, 0x1f, i).u16(0x0c, 0x1000).u8(0x0e, 1); // partition width 1
    if (endK < 0xffff_ffff) t.u32(0x04, startK).u32(0x08, endK).u64(0x0f, 0).u64(0x17, 0);
    else t.u32(0x04, 0xffff_ffff).u32(0x08, 0xffff_ffff).u64(0x0f, r.gpa).u64(0x17, r.gpa + r.size - 1);
  });

  // Type 32: system boot information, no errors (0x0B bytes); type 127: end
  add(32, 0x0b).u8(0x0a, 0);
  add(127, 0x04);

  const encoded = list.map((st) => st.encode());
  const size = encoded.reduce((a, b) => a + b.length, 0);
  const tables = new Uint8Array(size);
  let o = 0;
  for (const e of encoded) { tables.set(e, o); o += e.length; }
  const anchor = encodeAnchor3(size, opts.tableAddress ?? 0);
  return { anchor, tables, count: list.length, maxStructure: Math.max(...encoded.map((e) => e.length)) };
}

/** SMBIOS 3.0 64-bit entry point ("_SM3_"). */
export function encodeAnchor3(tableSize: number, tableAddress: number): Uint8Array {
  const a = new Uint8Array(EP3_BYTES);
  const dv = new DataView(a.buffer);
  a.set(enc.encode("_SM3_"), 0);
  a[0x06] = EP3_BYTES;
  a[0x07] = SMBIOS_MAJOR;
  a[0x08] = SMBIOS_MINOR;
  a[0x09] = SMBIOS_DOCREV;
  a[0x0a] = 0x01; // entry point revision: 3.0
  a[0x0b] = 0;
  dv.setUint32(0x0c, tableSize, true); // structure table maximum size
  dv.setBigUint64(0x10, BigInt(tableAddress), true);
  a[0x05] = checksum8(a);
  return a;
}

/** SMBIOS 2.1 32-bit entry point ("_SM_" + "_DMI_") for a table below 4 GiB. */
export function encodeAnchor21(sm: Smbios, tableAddress: number): Uint8Array {
  if (sm.tables.length > 0xffff) throw new RangeError("SMBIOS table too large for a 2.1 entry point");
  const a = new Uint8Array(EP21_BYTES);
  const dv = new DataView(a.buffer);
  a.set(enc.encode("_SM_"), 0);
  a[0x05] = EP21_BYTES;
  a[0x06] = SMBIOS_MAJOR;
  a[0x07] = SMBIOS_MINOR;
  dv.setUint16(0x08, sm.maxStructure, true);
  a[0x0a] = 0; // entry point revision
  a.set(enc.encode("_DMI_"), 0x10);
  dv.setUint16(0x16, sm.tables.length, true);
  dv.setUint32(0x18, tableAddress, true);
  dv.setUint16(0x1c, sm.count, true);
  a[0x1e] = (SMBIOS_MAJOR << 4) | SMBIOS_MINOR; // BCD revision
  a[0x15] = checksum8(a.subarray(0x10, EP21_BYTES)); // intermediate checksum
  a[0x04] = checksum8(a);
  return a;
}

/** Where writeSmbios puts things for a directly booted guest (bhyve: 0xF1000..0xF2400). */
export const SMBIOS_BASE = 0xf1000;
export const SMBIOS_LIMIT = 0xf2400;
/** Used for the table when it does not fit below SMBIOS_LIMIT (many sockets): reserved in the e820 map, unused otherwise. */
export const SMBIOS_OVERFLOW_BASE = 0xe0000;
export const SMBIOS_OVERFLOW_LIMIT = 0xf0000;

export interface PlacedSmbios {
  /** address of the 3.0 entry point (the 2.1 one is 0x20 above) */
  anchor3: number;
  anchor21: number;
  table: number;
  blobs: { addr: number; bytes: Uint8Array }[];
}

/**
 * Placement for a guest without firmware: the 3.0 entry point at `base` (16-byte aligned, where Linux's
 * scan of 0xF0000-0xFFFFF finds it), a 2.1 entry point at base+0x20 for older scanners, the table at
 * base+0x40 — or, if it would reach SMBIOS_LIMIT (the ACPI tables at 0xF2400), at 0xE0000.
 */
export function placeSmbios(sm: Smbios, base = SMBIOS_BASE, limit = SMBIOS_LIMIT): PlacedSmbios {
  if (base % 16 !== 0) throw new RangeError("SMBIOS entry point must be 16-byte aligned");
  let table = base + 0x40;
  if (table + sm.tables.length > limit) {
    table = SMBIOS_OVERFLOW_BASE;
    if (table + sm.tables.length > SMBIOS_OVERFLOW_LIMIT) throw new RangeError(`SMBIOS table of ${sm.tables.length} bytes does not fit`);
  }
  const anchor3 = encodeAnchor3(sm.tables.length, table);
  const anchor21 = encodeAnchor21(sm, table);
  return {
    anchor3: base, anchor21: base + 0x20, table,
    blobs: [{ addr: base, bytes: anchor3 }, { addr: base + 0x20, bytes: anchor21 }, { addr: table, bytes: sm.tables }],
  };
}

/** Write the entry points and table into guest memory (direct kernel boot). Returns the placement. */
export function writeSmbios(mem: GuestMemory, sm: Smbios, base = SMBIOS_BASE, limit = SMBIOS_LIMIT): PlacedSmbios {
  const placed = placeSmbios(sm, base, limit);
  for (const b of placed.blobs) {
    if (!mem.valid(b.addr, b.bytes.length)) throw new Error(`SMBIOS at 0x${b.addr.toString(16)} is outside guest RAM`);
  }
  for (const b of placed.blobs) mem.writeBytes(b.addr, b.bytes);
  return placed;
}

/** A parsed structure (for tests and diagnostics). */
export interface ParsedStructure {
  type: number;
  length: number;
  handle: number;
  /** formatted area */
  area: Uint8Array;
  strings: string[];
  /** string number `n` (1-based) of the structure, "" for 0 */
  str(n: number): string;
}

/** Walk a structure table; throws on malformed input. */
export function parseSmbiosTable(t: Uint8Array): ParsedStructure[] {
  const out: ParsedStructure[] = [];
  const dec = new TextDecoder("utf-8", { fatal: true });
  let o = 0;
  while (o < t.length) {
    if (o + 4 > t.length) throw new Error(`truncated header at ${o}`);
    const type = t[o]!, length = t[o + 1]!, handle = t[o + 2]! | (t[o + 3]! << 8);
    if (length < 4 || o + length > t.length) throw new Error(`bad length ${length} at ${o}`);
    const area = t.subarray(o, o + length);
    let p = o + length;
    const strings: string[] = [];
    if (t[p] === 0 && t[p + 1] === 0) p += 2;
    else {
      for (;;) {
        const end = t.indexOf(0, p);
        if (end < 0) throw new Error(`unterminated string at ${p}`);
        if (end === p) { p++; break; }
        strings.push(dec.decode(t.subarray(p, end)));
        p = end + 1;
      }
    }
    out.push({ type, length, handle, area, strings, str: (n) => (n === 0 ? "" : strings[n - 1] ?? "<bad index>") });
    o = p;
    if (type === 127) break;
  }
  if (o !== t.length) throw new Error(`${t.length - o} bytes after the end-of-table structure`);
  return out;
}
