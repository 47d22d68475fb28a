/**
 * Intel MultiProcessor Specification 1.4 tables: the MP Floating Pointer Structure and an MP
 * Configuration Table, placed in the BIOS area where guests scan for "_MP_" (0xF0000-0xFFFFF).
 *
 * Contents: one processor entry per vCPU (local APIC id = index, BSP = 0), an ISA bus, one IOAPIC
 * (id = ncpus, at 0xFEC00000), I/O interrupt entries for ISA IRQs 0-15 (IRQ0 on INTIN2, the rest
 * identity, IRQ2 skipped: it is the cascade), and the local interrupt entries ExtINT->LINT0 and
 * NMI->LINT1 on every local APIC. Whether a guest gets the table at all is x86.mptable (caller).
 */
import { IOAPIC_BASE, LAPIC_BASE } from "./e820.ts";
import { checksum8, putAscii, writeBlobs, type PlacedBlob } from "./blob.ts";
import type { GuestMemory } from "../mem/guest-memory.ts";

export const MPTABLE_BASE = 0xf0000;
/** Default end of the area the MP table may use (bhyve puts ACPI tables at 0xF2400). */
export const MPTABLE_LIMIT = 0xf2400;

const FLOATING_BYTES = 16;
const HEADER_BYTES = 44;
const PROC_BYTES = 20;
const SMALL_ENTRY_BYTES = 8;

const ENTRY_PROCESSOR = 0, ENTRY_BUS = 1, ENTRY_IOAPIC = 2, ENTRY_IOINT = 3, ENTRY_LOCALINT = 4;
const INT_INT = 0, INT_NMI = 1, INT_EXTINT = 3;
const CPU_EN = 1, CPU_BP = 2;
const LAPIC_VERSION = 0x14;
const IOAPIC_VERSION = 0x11;
const ISA_BUS_ID = 0;
/** Destination "all local APICs" in a local interrupt entry. */
const ALL_LAPICS = 0xff;

export interface MptableOptions {
  cpus: number;
  /** APIC id of each vCPU (default: the vCPU index); see src/vcpu/cpuid.ts apicId(). */
  apicIds?: readonly number[];
  /** 16-byte aligned address of the floating pointer; the configuration table follows it. */
  base?: number;
  /** First byte the tables must not reach (default 0xF2400). */
  limit?: number;
  oemId?: string;
  productId?: string;
}

export interface Mptable {
  blobs: PlacedBlob[];
  /** Address of the "_MP_" floating pointer. */
  floating: number;
  /** Address of the "PCMP" configuration table. */
  config: number;
  entries: number;
}

/** Largest vCPU count an xAPIC MP table can describe (APIC ids 0..n-1 plus the IOAPIC id n < 0xFF). */
export const MPTABLE_MAX_CPUS = 254;

export function buildMptable(opts: MptableOptions): Mptable {
  const { cpus } = opts;
  const base = opts.base ?? MPTABLE_BASE;
  const limit = opts.limit ?? MPTABLE_LIMIT;
  if (!Number.isInteger(cpus) || cpus < 1 || cpus > MPTABLE_MAX_CPUS) {
    throw new RangeError(`MP table: cpus must be 1..${MPTABLE_MAX_CPUS}, got ${cpus}`);
  }
  if (!Number.isInteger(base) || base % 16 !== 0 || base < 0 || base >= 0x100000) {
    throw new RangeError(`MP table: base 0x${base.toString(16)} must be 16-byte aligned and below 1 MiB`);
  }
  const apicIds = opts.apicIds ?? Array.from({ length: cpus }, (_, i) => i);
  const ioapicId = Math.max(...apicIds) + 1;
  if (ioapicId > 0xfe) throw new RangeError(`MP table: APIC ids up to ${ioapicId - 1} leave no xAPIC id for the IOAPIC`);

  // Entries, in the order the spec requires (processors, buses, IOAPICs, I/O ints, local ints).
  const entries: Uint8Array[] = [];
  for (let i = 0; i < cpus; i++) {
    const e = new Uint8Array(PROC_BYTES);
    const dv = new DataView(e.buffer);
    e[0] = ENTRY_PROCESSOR;
    e[1] = apicIds[i]!; // local APIC id
    e[2] = LAPIC_VERSION;
    e[3] = CPU_EN | (i === 0 ? CPU_BP : 0);
    dv.setUint32(4, 0x600, true); // CPU signature: family 6
    dv.setUint32(8, 0x201, true); // feature flags: FPU | APIC
    entries.push(e);
  }
  const bus = new Uint8Array(SMALL_ENTRY_BYTES);
  bus[0] = ENTRY_BUS;
  bus[1] = ISA_BUS_ID;
  putAscii(bus, 2, "ISA", 6);
  entries.push(bus);

  const ioapic = new Uint8Array(SMALL_ENTRY_BYTES);
  ioapic[0] = ENTRY_IOAPIC;
  ioapic[1] = ioapicId;
  ioapic[2] = IOAPIC_VERSION;
  ioapic[3] = 1; // enabled
  new DataView(ioapic.buffer).setUint32(4, IOAPIC_BASE, true);
  entries.push(ioapic);

  for (let irq = 0; irq < 16; irq++) {
    if (irq === 2) continue;
    entries.push(intEntry(ENTRY_IOINT, INT_INT, ISA_BUS_ID, irq, ioapicId, irq === 0 ? 2 : irq));
  }
  entries.push(intEntry(ENTRY_LOCALINT, INT_EXTINT, ISA_BUS_ID, 0, ALL_LAPICS, 0));
  entries.push(intEntry(ENTRY_LOCALINT, INT_NMI, ISA_BUS_ID, 0, ALL_LAPICS, 1));

  const config = base + FLOATING_BYTES;
  const tableLen = HEADER_BYTES + entries.reduce((a, e) => a + e.length, 0);
  if (config + tableLen > limit) {
    throw new RangeError(`MP table for ${cpus} CPUs (${tableLen} bytes at 0x${config.toString(16)}) runs past 0x${limit.toString(16)}`);
  }

  const table = new Uint8Array(tableLen);
  const dv = new DataView(table.buffer);
  putAscii(table, 0, "PCMP", 4);
  dv.setUint16(4, tableLen, true);
  table[6] = 4; // spec revision 1.4
  putAscii(table, 8, opts.oemId ?? "TSBHYVE", 8);
  putAscii(table, 16, opts.productId ?? "tsbhyve", 12);
  dv.setUint32(28, 0, true); // OEM table pointer
  dv.setUint16(32, 0, true); // OEM table size
  dv.setUint16(34, entries.length, true);
  dv.setUint32(36, LAPIC_BASE, true);
  dv.setUint16(40, 0, true); // extended table length
  table[42] = 0; // extended table checksum (no extended entries)
  let off = HEADER_BYTES;
  for (const e of entries) { table.set(e, off); off += e.length; }
  table[7] = checksum8(table);

  const fp = new Uint8Array(FLOATING_BYTES);
  putAscii(fp, 0, "_MP_", 4);
  new DataView(fp.buffer).setUint32(4, config, true);
  fp[8] = 1; // length in 16-byte paragraphs
  fp[9] = 4; // spec revision 1.4
  fp[11] = 0; // feature 1: 0 = configuration table present (no default configuration)
  fp[12] = 0; // feature 2: IMCRP clear = virtual wire mode (no IMCR)
  fp[10] = checksum8(fp);

  return { blobs: [{ addr: base, bytes: fp }, { addr: config, bytes: table }], floating: base, config, entries: entries.length };
}

function intEntry(type: number, intType: number, srcBus: number, srcIrq: number, dstId: number, dstPin: number): Uint8Array {
  const e = new Uint8Array(SMALL_ENTRY_BYTES);
  e[0] = type;
  e[1] = intType;
  // bytes 2-3: flags; 0 = polarity and trigger conform to the bus (ISA: edge, active high)
  e[4] = srcBus;
  e[5] = srcIrq;
  e[6] = dstId;
  e[7] = dstPin;
  return e;
}

/** Build and write the MP table into guest memory (bounds-checked); returns the floating pointer address. */
export function writeMptable(mem: GuestMemory, opts: MptableOptions): number {
  const mp = buildMptable(opts);
  writeBlobs(mem, mp.blobs);
  return mp.floating;
}
