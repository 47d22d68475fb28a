/**
 * The contents of the fw_cfg device: numbered items (QEMU docs/specs/fw_cfg.rst) built once on the main
 * thread and handed to every thread as plain data.
 *
 * Why built once and passed (not rebuilt per thread): user files are read from disk and ACPI tables come
 * from another builder; rebuilding in each Worker would read the files again (and could see them change
 * between threads). All item bytes live in ONE SharedArrayBuffer, so posting `FwCfgItems` to a Worker
 * (structured clone) shares the bytes instead of copying them; they are never written after the build.
 *
 * Items: 0x0000 signature "QEMU", 0x0001 ID (bit 0 traditional interface, bit 1 DMA), 0x0005 NB_CPUS
 * (le16), 0x000F MAX_CPUS (le16), 0x0019 file directory (be32 count, then per file: be32 size,
 * be16 select, be16 reserved, char name[56]), files from 0x0020 sorted by name.
 */
import type { VmConfig } from "../config/types.ts";
import { buildE820, encodeE820 } from "../loader/e820.ts";
import { ramLayout } from "../mem/guest-memory.ts";
import { buildSmbios } from "../smbios/smbios.ts";
import { readFileSync, statSync } from "node:fs";
import { buildBootorder } from "./bootorder.ts";

export const FW_CFG = {
  SIGNATURE: 0x0000,
  ID: 0x0001,
  UUID: 0x0002,
  RAM_SIZE: 0x0003,
  NB_CPUS: 0x0005,
  MAX_CPUS: 0x000f,
  FILE_DIR: 0x0019,
  FILE_FIRST: 0x0020,
} as const;
/** FW_CFG_ID bits */
export const FW_CFG_ID_TRADITIONAL = 0x1;
export const FW_CFG_ID_DMA = 0x2;
/** Directory entry name field (the name plus at least one NUL). */
export const FW_CFG_NAME_BYTES = 56;
export const FW_CFG_DIR_ENTRY_BYTES = 64;
/** Selector bit 14: "write mode" (ignored for lookup). */
export const FW_CFG_WRITE_BIT = 0x4000;
/** The highest file key the 14-bit index space allows. */
export const FW_CFG_MAX_FILES = 0x3fff - FW_CFG.FILE_FIRST + 1;

export interface FwCfgFile {
  name: string;
  data: Uint8Array;
}

export interface FwCfgItem {
  key: number;
  /** set for files (items listed in the directory) */
  name?: string;
  data: Uint8Array;
}

/** Read-only item table (structured-clone safe; bytes on one SharedArrayBuffer). */
export interface FwCfgItems {
  readonly items: readonly FwCfgItem[];
}

const enc = new TextEncoder();

/** Build the item table: fixed items, the directory, and `files` (sorted by name, keys from 0x20). */
export function fwcfgItems(opts: { cpus: number; e820?: Uint8Array; files: readonly FwCfgFile[] }): FwCfgItems {
  const files = [...opts.files];
  if (opts.e820) files.push({ name: "etc/e820", data: opts.e820 });
  const names = new Set<string>();
  for (const f of files) {
    const len = enc.encode(f.name).length;
    if (len === 0 || len >= FW_CFG_NAME_BYTES || f.name.includes("\0")) throw new RangeError(`fw_cfg file name "${f.name}": 1-55 bytes, no NUL`);
    if (names.has(f.name)) throw new RangeError(`fw_cfg file "${f.name}" given twice`);
    if (f.data.length > 0xffff_ffff) throw new RangeError(`fw_cfg file "${f.name}" too large`);
    names.add(f.name);
  }
  if (files.length > FW_CFG_MAX_FILES) throw new RangeError(`too many fw_cfg files (${files.length})`);
  // sort by name, byte-wise (what a guest doing strcmp expects)
  files.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));

  const le = (bytes: number, v: number) => {
    const b = new Uint8Array(bytes);
    for (let i = 0; i < bytes; i++) b[i] = (v / 2 ** (8 * i)) & 0xff;
    return b;
  };
  const dir = new Uint8Array(4 + files.length * FW_CFG_DIR_ENTRY_BYTES);
  const dv = new DataView(dir.buffer);
  dv.setUint32(0, files.length, false);
  files.forEach((f, i) => {
    const o = 4 + i * FW_CFG_DIR_ENTRY_BYTES;
    dv.setUint32(o, f.data.length, false);
    dv.setUint16(o + 4, FW_CFG.FILE_FIRST + i, false);
    dir.set(enc.encode(f.name), o + 8);
  });
  const raw: FwCfgItem[] = [
    { key: FW_CFG.SIGNATURE, data: enc.encode("QEMU") },
    { key: FW_CFG.ID, data: le(4, FW_CFG_ID_TRADITIONAL | FW_CFG_ID_DMA) },
    { key: FW_CFG.NB_CPUS, data: le(2, opts.cpus) },
    { key: FW_CFG.MAX_CPUS, data: le(2, opts.cpus) },
    { key: FW_CFG.FILE_DIR, data: dir },
    ...files.map((f, i) => ({ key: FW_CFG.FILE_FIRST + i, name: f.name, data: f.data })),
  ];
  // pack every item into one shared buffer
  const total = raw.reduce((a, r) => a + r.data.length, 0);
  const Buf = typeof SharedArrayBuffer !== "undefined" ? SharedArrayBuffer : ArrayBuffer;
  const buf = new Buf(Math.max(total, 1));
  let off = 0;
  const items = raw.map((r) => {
    const data = new Uint8Array(buf, off, r.data.length);
    data.set(r.data);
    off += r.data.length;
    return r.name === undefined ? { key: r.key, data } : { key: r.key, name: r.name, data };
  });
  return { items };
}

/** The item with this key, if any. */
export function findItem(items: FwCfgItems, key: number): FwCfgItem | undefined {
  return items.items.find((i) => i.key === key);
}

/** Parse a file directory item (for tests and diagnostics). */
export function parseFileDir(dir: Uint8Array): { name: string; select: number; size: number }[] {
  const dv = new DataView(dir.buffer, dir.byteOffset, dir.byteLength);
  const n = dv.getUint32(0, false);
  const out: { name: string; select: number; size: number }[] = [];
  for (let i = 0; i < n; i++) {
    const o = 4 + i * FW_CFG_DIR_ENTRY_BYTES;
    const nameBytes = dir.subarray(o + 8, o + 8 + FW_CFG_NAME_BYTES);
    const end = nameBytes.indexOf(0);
    out.push({ size: dv.getUint32(o, false), select: dv.getUint16(o + 4, false), name: new TextDecoder().decode(nameBytes.subarray(0, end < 0 ? undefined : end)) });
  }
  return out;
}

/** bhyve's opt/bhyve/hw.ncpu: the vCPU count as a 4-byte little-endian integer (OVMF's BhyveX64 reads a UINT32). */
export function hwNcpu(cpus: number): Uint8Array {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, cpus, true);
  return b;
}

export interface FwCfgConfigOptions {
  /** more files, e.g. the ACPI builder's etc/acpi/tables, etc/acpi/rsdp, etc/table-loader */
  extraFiles?: readonly FwCfgFile[];
  /** override the SMBIOS type-0 ROM size (default: the size of lpc.bootrom, else 64 KiB) */
  biosRomSize?: number;
}

/**
 * Everything tsbhyve puts in fw_cfg for a VM (main thread, once): etc/e820, bootorder (when a PCI device
 * has a bootindex), etc/smbios/smbios-tables + smbios-anchor, opt/bhyve/hw.ncpu, the user's [[fw_cfg]]
 * files (read now) and `extraFiles`.
 */
export function fwcfgForConfig(cfg: VmConfig, opts: FwCfgConfigOptions = {}): FwCfgItems {
  const files: FwCfgFile[] = [];
  const bootorder = buildBootorder(cfg.pci);
  if (bootorder.length) files.push({ name: "bootorder", data: bootorder });
  const romSize = opts.biosRomSize ?? (cfg.bootrom ? statSync(cfg.bootrom).size : undefined);
  const smbios = buildSmbios(cfg, ramLayout(cfg.memory.size), romSize !== undefined ? { biosRomSize: romSize } : {});
  files.push({ name: "etc/smbios/smbios-tables", data: smbios.tables });
  files.push({ name: "etc/smbios/smbios-anchor", data: smbios.anchor });
  files.push({ name: "opt/bhyve/hw.ncpu", data: hwNcpu(cfg.cpus) });
  for (const f of cfg.fwcfg) {
    files.push({ name: f.name, data: f.file !== undefined ? new Uint8Array(readFileSync(f.file)) : enc.encode(f.string ?? "") });
  }
  files.push(...(opts.extraFiles ?? []));
  return fwcfgItems({ cpus: cfg.cpus, e820: encodeE820(buildE820(cfg.memory.size)), files });
}
