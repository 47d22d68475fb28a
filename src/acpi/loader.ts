/**
 * QEMU fw_cfg ACPI export ("linker/loader" interface, as QEMU's fw_cfg documentation and OVMF's
 * QemuLoader.h describe it). Firmware reads three fw_cfg files:
 *
 *   etc/acpi/tables   every table except the RSDP, pointer fields holding offsets into this blob
 *   etc/acpi/rsdp     the RSDP, its pointers holding offsets into etc/acpi/tables
 *   etc/table-loader  a list of 128-byte commands: little-endian u32 type, then the body, zero padded
 *
 *   1 ALLOCATE      file[56], u32 alignment, u8 zone (1 = HIGH: anywhere below 4 GiB, 2 = FSEG)
 *   2 ADD_POINTER   dest file[56], src file[56], u32 offset, u8 size: the `size`-byte little-endian
 *                   value at `offset` in dest gets the address where src was allocated added to it
 *   3 ADD_CHECKSUM  file[56], u32 result offset, u32 start, u32 length: the byte at result offset is
 *                   set so that bytes [start, start+length) sum to zero
 *
 * The commands here allocate both files, patch every pointer, then fix every checksum (a checksum is
 * computed when its command runs, so it must follow the pointer patches in its range).
 */
import { RSDP, SDT_CHECKSUM } from "./sdt.ts";
import { layoutTables, linkTables, type AcpiTableSet } from "./tables.ts";

export const FW_CFG_ACPI_TABLES = "etc/acpi/tables";
export const FW_CFG_ACPI_RSDP = "etc/acpi/rsdp";
export const FW_CFG_TABLE_LOADER = "etc/table-loader";

export const LOADER_ENTRY_BYTES = 128;
export const LOADER_FNAME_BYTES = 56;
export const LoaderCmd = { ALLOCATE: 1, ADD_POINTER: 2, ADD_CHECKSUM: 3, WRITE_POINTER: 4 } as const;
export const LoaderZone = { HIGH: 1, FSEG: 2 } as const;

export type LoaderCommand =
  | { type: "allocate"; file: string; align: number; zone: number }
  | { type: "add-pointer"; dest: string; src: string; offset: number; size: number }
  | { type: "add-checksum"; file: string; resultOffset: number; start: number; length: number };

export interface TableLoader {
  /** etc/acpi/tables */
  tables: Uint8Array;
  /** etc/acpi/rsdp */
  rsdp: Uint8Array;
  /** etc/table-loader */
  loader: Uint8Array;
  commands: LoaderCommand[];
}

/** Alignment of the tables blob (the FACS needs 64). */
const TABLES_ALIGN = 64;

/** Export a table set (AcpiTableSet from buildAcpiTables() or buildAcpi().set) for fw_cfg. */
export function buildTableLoader(set: AcpiTableSet): TableLoader {
  const { offsets, end } = layoutTables(set, 0);
  const linked = linkTables(set, (i) => offsets[i]!);
  const tables = new Uint8Array(end);
  linked.tables.forEach((t, i) => tables.set(t, offsets[i]!));
  const T = FW_CFG_ACPI_TABLES, R = FW_CFG_ACPI_RSDP;
  const commands: LoaderCommand[] = [
    { type: "allocate", file: R, align: 16, zone: LoaderZone.FSEG },
    { type: "allocate", file: T, align: TABLES_ALIGN, zone: LoaderZone.HIGH },
    ...set.pointers.map((p): LoaderCommand => ({
      type: "add-pointer", dest: p.from < 0 ? R : T, src: T, offset: (p.from < 0 ? 0 : offsets[p.from]!) + p.offset, size: p.size,
    })),
    ...set.tables.flatMap((t, i): LoaderCommand[] => t.signature === "FACS" ? [] : [
      { type: "add-checksum", file: T, resultOffset: offsets[i]! + SDT_CHECKSUM, start: offsets[i]!, length: t.bytes.length },
    ]),
    { type: "add-checksum", file: R, resultOffset: RSDP.CHECKSUM, start: 0, length: 20 },
    { type: "add-checksum", file: R, resultOffset: RSDP.EXT_CHECKSUM, start: 0, length: linked.rsdp.length },
  ];
  return { tables, rsdp: linked.rsdp, loader: encodeLoader(commands), commands };
}

function putName(out: Uint8Array, off: number, name: string): void {
  if (name.length >= LOADER_FNAME_BYTES || !/^[\x21-\x7e]+$/.test(name)) throw new RangeError(`bad fw_cfg file name "${name}"`);
  for (let i = 0; i < name.length; i++) out[off + i] = name.charCodeAt(i);
}

/** The etc/table-loader bytes for a command list. */
export function encodeLoader(commands: readonly LoaderCommand[]): Uint8Array {
  const out = new Uint8Array(LOADER_ENTRY_BYTES * commands.length);
  const dv = new DataView(out.buffer);
  const F = LOADER_FNAME_BYTES;
  commands.forEach((c, i) => {
    const o = i * LOADER_ENTRY_BYTES;
    if (c.type === "allocate") {
      dv.setUint32(o, LoaderCmd.ALLOCATE, true);
      putName(out, o + 4, c.file);
      dv.setUint32(o + 4 + F, c.align, true);
      out[o + 8 + F] = c.zone;
    } else if (c.type === "add-pointer") {
      if (![1, 2, 4, 8].includes(c.size)) throw new RangeError(`ADD_POINTER size ${c.size}`);
      dv.setUint32(o, LoaderCmd.ADD_POINTER, true);
      putName(out, o + 4, c.dest);
      putName(out, o + 4 + F, c.src);
      dv.setUint32(o + 4 + 2 * F, c.offset, true);
      out[o + 8 + 2 * F] = c.size;
    } else {
      dv.setUint32(o, LoaderCmd.ADD_CHECKSUM, true);
      putName(out, o + 4, c.file);
      dv.setUint32(o + 4 + F, c.resultOffset, true);
      dv.setUint32(o + 8 + F, c.start, true);
      dv.setUint32(o + 12 + F, c.length, true);
    }
  });
  return out;
}

function getName(b: Uint8Array, off: number): string {
  let s = "";
  for (let i = 0; i < LOADER_FNAME_BYTES && b[off + i] !== 0; i++) s += String.fromCharCode(b[off + i]!);
  return s;
}

/** Decode etc/table-loader (for tests and debugging); unknown entries (type 0 = padding) are skipped. */
export function decodeLoader(b: Uint8Array): LoaderCommand[] {
  if (b.length % LOADER_ENTRY_BYTES) throw new RangeError("table-loader length is not a multiple of 128");
  const dv = new DataView(b.buffer, b.byteOffset, b.length);
  const F = LOADER_FNAME_BYTES;
  const out: LoaderCommand[] = [];
  for (let o = 0; o < b.length; o += LOADER_ENTRY_BYTES) {
    const type = dv.getUint32(o, true);
    if (type === LoaderCmd.ALLOCATE) out.push({ type: "allocate", file: getName(b, o + 4), align: dv.getUint32(o + 4 + F, true), zone: b[o + 8 + F]! });
    else if (type === LoaderCmd.ADD_POINTER) out.push({ type: "add-pointer", dest: getName(b, o + 4), src: getName(b, o + 4 + F), offset: dv.getUint32(o + 4 + 2 * F, true), size: b[o + 8 + 2 * F]! });
    else if (type === LoaderCmd.ADD_CHECKSUM) out.push({ type: "add-checksum", file: getName(b, o + 4), resultOffset: dv.getUint32(o + 4 + F, true), start: dv.getUint32(o + 8 + F, true), length: dv.getUint32(o + 12 + F, true) });
  }
  return out;
}
