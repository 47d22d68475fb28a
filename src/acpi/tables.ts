/**
 * The ACPI table set (ACPI 6.2 layouts): RSDP -> XSDT/RSDT -> FADT (-> FACS, DSDT), MADT, HPET, MCFG,
 * SPCR, built from a PlatformDescription (platform.ts). Linux finds SMP in the MADT, powers off through
 * \_S5 (SLP_TYP written to PM1a_CNT with SLP_EN) and reboots through the FADT reset register.
 *
 * buildAcpiTables() produces the tables with their pointer fields listed (AcpiTableSet); placeAcpi()
 * lays them out at fixed guest addresses (direct kernel boot: PlacedBlobs in the BIOS area), and
 * loader.ts buildTableLoader() exports the same set as QEMU fw_cfg files for firmware (OVMF).
 */
import { writeBlobs, type PlacedBlob } from "../loader/blob.ts";
import type { GuestMemory } from "../mem/guest-memory.ts";
import { cat } from "./aml.ts";
import { buildDsdt } from "./dsdt.ts";
import { hpetTable, mcfgTable, spcrTable } from "./hw-tables.ts";
import { describePlatform, pmBlocks, type PlatformDescription } from "./platform.ts";
import { AccessSize, AddressSpace, RSDP, RSDP_BYTES, SDT_HEADER_BYTES, facs, fixChecksum, gas, rsdp, sdt } from "./sdt.ts";

export {
  ACPI_CREATOR_ID, ACPI_OEM_ID, ACPI_OEM_TABLE_ID, AccessSize, AddressSpace, FACS_BYTES, RSDP_BYTES, SDT_HEADER_BYTES,
  facs, gas, rsdp, sdt, type Gas, type SdtOptions,
} from "./sdt.ts";

export const ACPI_BASE = 0xf2400;
/** Tables must stay in the reserved BIOS area below 1 MiB. */
export const ACPI_LIMIT = 0x100000;
/** SLP_TYP value for S5 (bhyve's PM1 control register treats 5 as soft-off). */
export const SLP_TYP_S5 = 5;
export const FADT_BYTES = 276;

/** FADT fixed-feature flags (ACPI 6.2 table 5-35). */
export const FadtFlag = {
  WBINVD: 1 << 0, WBINVD_FLUSH: 1 << 1, PROC_C1: 1 << 2, P_LVL2_UP: 1 << 3, PWR_BUTTON: 1 << 4,
  SLP_BUTTON: 1 << 5, FIX_RTC: 1 << 6, RTC_S4: 1 << 7, TMR_VAL_EXT: 1 << 8, DCK_CAP: 1 << 9,
  RESET_REG_SUP: 1 << 10, SEALED_CASE: 1 << 11, HEADLESS: 1 << 12, CPU_SW_SLP: 1 << 13,
  PCI_EXP_WAK: 1 << 14, USE_PLATFORM_CLOCK: 1 << 15, S4_RTC_STS_VALID: 1 << 16,
  REMOTE_POWER_ON_CAPABLE: 1 << 17, FORCE_APIC_CLUSTER_MODEL: 1 << 18,
  FORCE_APIC_PHYSICAL_DESTINATION_MODE: 1 << 19, HW_REDUCED_ACPI: 1 << 20, LOW_POWER_S0_IDLE_CAPABLE: 1 << 21,
} as const;

/** IA-PC boot architecture flags (FADT offset 109). */
export const BootArch = { LEGACY_DEVICES: 1 << 0, I8042: 1 << 1, VGA_NOT_PRESENT: 1 << 2, MSI_NOT_SUPPORTED: 1 << 3, PCIE_ASPM_CONTROLS: 1 << 4, CMOS_RTC_NOT_PRESENT: 1 << 5 } as const;

/** Byte offsets of the FADT fields the rest of tsbhyve (and the tests) care about. */
export const FADT = {
  FIRMWARE_CTRL: 36, DSDT: 40, PREFERRED_PM_PROFILE: 45, SCI_INT: 46, SMI_CMD: 48, ACPI_ENABLE: 52,
  ACPI_DISABLE: 53, PM1A_EVT_BLK: 56, PM1B_EVT_BLK: 60, PM1A_CNT_BLK: 64, PM1B_CNT_BLK: 68,
  PM2_CNT_BLK: 72, PM_TMR_BLK: 76, GPE0_BLK: 80, GPE1_BLK: 84, PM1_EVT_LEN: 88, PM1_CNT_LEN: 89,
  PM2_CNT_LEN: 90, PM_TMR_LEN: 91, GPE0_BLK_LEN: 92, GPE1_BLK_LEN: 93, P_LVL2_LAT: 96, P_LVL3_LAT: 98,
  CENTURY: 108, IAPC_BOOT_ARCH: 109, FLAGS: 112, RESET_REG: 116, RESET_VALUE: 128, ARM_BOOT_ARCH: 129,
  MINOR_VERSION: 131, X_FIRMWARE_CTRL: 132, X_DSDT: 140, X_PM1A_EVT_BLK: 148, X_PM1B_EVT_BLK: 160,
  X_PM1A_CNT_BLK: 172, X_PM1B_CNT_BLK: 184, X_PM2_CNT_BLK: 196, X_PM_TMR_BLK: 208, X_GPE0_BLK: 220,
  X_GPE1_BLK: 232, SLEEP_CONTROL_REG: 244, SLEEP_STATUS_REG: 256, HYPERVISOR_VENDOR_ID: 268,
} as const;

/** MADT interrupt-controller structure types. */
export const MadtType = { LOCAL_APIC: 0, IO_APIC: 1, INTERRUPT_OVERRIDE: 2, NMI_SOURCE: 3, LOCAL_APIC_NMI: 4 } as const;
/** MPS INTI flags: polarity bits 1:0, trigger mode bits 3:2. */
export const Inti = { CONFORMS: 0, ACTIVE_HIGH: 0x1, ACTIVE_LOW: 0x3, EDGE: 0x4, LEVEL: 0xc } as const;

export interface FadtOptions {
  facs: number;
  dsdt: number;
  sciIrq: number;
  pm1aEvt: number;
  pm1aCnt: number;
  /** PM timer port (32-bit, TMR_VAL_EXT), 0 = none. */
  pmTmr: number;
  /** GPE0 block port and length in bytes (0 = none). */
  gpe0: number;
  gpe0Len: number;
  /** CMOS index of the RTC century register, 0 = none. */
  century: number;
  flags: number;
  bootArch: number;
  reset: { port: number; value: number };
}

/** Fixed ACPI Description Table, revision 6 (minor 2), 276 bytes. */
export function fadt(o: FadtOptions): Uint8Array {
  const b = new Uint8Array(FADT_BYTES - SDT_HEADER_BYTES);
  const dv = new DataView(b.buffer);
  const at = (off: number) => off - SDT_HEADER_BYTES;
  const u8 = (off: number, v: number) => { b[at(off)] = v; };
  const u16 = (off: number, v: number) => dv.setUint16(at(off), v, true);
  const u32 = (off: number, v: number) => dv.setUint32(at(off), v >>> 0, true);
  const u64 = (off: number, v: number) => dv.setBigUint64(at(off), BigInt(v), true);
  const io = (off: number, bits: number, access: number, addr: number) =>
    b.set(gas({ space: AddressSpace.SYSTEM_IO, bitWidth: addr ? bits : 0, accessSize: addr ? access : 0, address: addr }), at(off));

  u32(FADT.FIRMWARE_CTRL, o.facs);
  u32(FADT.DSDT, o.dsdt);
  u8(FADT.PREFERRED_PM_PROFILE, 0); // unspecified
  u16(FADT.SCI_INT, o.sciIrq);
  u32(FADT.SMI_CMD, 0); // no SMI command port: the hardware is always in ACPI mode
  u32(FADT.PM1A_EVT_BLK, o.pm1aEvt);
  u32(FADT.PM1A_CNT_BLK, o.pm1aCnt);
  u32(FADT.PM_TMR_BLK, o.pmTmr);
  u32(FADT.GPE0_BLK, o.gpe0);
  u8(FADT.PM1_EVT_LEN, 4);
  u8(FADT.PM1_CNT_LEN, 2);
  u8(FADT.PM_TMR_LEN, o.pmTmr ? 4 : 0);
  u8(FADT.GPE0_BLK_LEN, o.gpe0 ? o.gpe0Len : 0);
  u16(FADT.P_LVL2_LAT, 101); // > 100: C2 not supported
  u16(FADT.P_LVL3_LAT, 1001); // > 1000: C3 not supported
  u8(FADT.CENTURY, o.century);
  u16(FADT.IAPC_BOOT_ARCH, o.bootArch);
  u32(FADT.FLAGS, o.flags | (o.pmTmr ? FadtFlag.TMR_VAL_EXT : 0));
  io(FADT.RESET_REG, 8, AccessSize.BYTE, o.reset.port);
  u8(FADT.RESET_VALUE, o.reset.value);
  u8(FADT.MINOR_VERSION, 2);
  u64(FADT.X_FIRMWARE_CTRL, o.facs);
  u64(FADT.X_DSDT, o.dsdt);
  io(FADT.X_PM1A_EVT_BLK, 32, AccessSize.WORD, o.pm1aEvt);
  io(FADT.X_PM1A_CNT_BLK, 16, AccessSize.WORD, o.pm1aCnt);
  io(FADT.X_PM_TMR_BLK, 32, AccessSize.DWORD, o.pmTmr);
  io(FADT.X_GPE0_BLK, 8 * o.gpe0Len, AccessSize.BYTE, o.gpe0);
  return sdt("FACP", 6, b);
}

export interface MadtOptions {
  cpus: number; ioapicId: number; sciIrq: number; apicIds?: readonly number[];
  lapicBase?: number; ioapicBase?: number;
}

/** Multiple APIC Description Table, revision 4 (ACPI 6.0-6.2). */
export function madt(o: MadtOptions): Uint8Array {
  const parts: Uint8Array[] = [];
  const head = new Uint8Array(8);
  const hv = new DataView(head.buffer);
  hv.setUint32(0, o.lapicBase ?? 0xfee0_0000, true);
  hv.setUint32(4, 1, true); // PCAT_COMPAT: dual 8259s present
  parts.push(head);
  for (let i = 0; i < o.cpus; i++) {
    const e = new Uint8Array(8);
    e[0] = MadtType.LOCAL_APIC; e[1] = 8; e[2] = i /* processor UID */; e[3] = o.apicIds?.[i] ?? i /* APIC id */;
    new DataView(e.buffer).setUint32(4, 1, true); // enabled
    parts.push(e);
  }
  const io = new Uint8Array(12);
  const iv = new DataView(io.buffer);
  io[0] = MadtType.IO_APIC; io[1] = 12; io[2] = o.ioapicId;
  iv.setUint32(4, o.ioapicBase ?? 0xfec0_0000, true);
  iv.setUint32(8, 0, true); // GSI base
  parts.push(io);
  const iso = (irq: number, gsi: number, flags: number) => {
    const e = new Uint8Array(10);
    const dv = new DataView(e.buffer);
    e[0] = MadtType.INTERRUPT_OVERRIDE; e[1] = 10; e[2] = 0 /* ISA */; e[3] = irq;
    dv.setUint32(4, gsi, true);
    dv.setUint16(8, flags, true);
    return e;
  };
  parts.push(iso(0, 2, Inti.EDGE | Inti.ACTIVE_HIGH)); // PIT IRQ0 is wired to IOAPIC pin 2
  parts.push(iso(o.sciIrq, o.sciIrq, Inti.LEVEL | Inti.ACTIVE_HIGH)); // SCI: level, active high
  const nmi = new Uint8Array(6);
  nmi[0] = MadtType.LOCAL_APIC_NMI; nmi[1] = 6; nmi[2] = 0xff /* all processors */;
  new DataView(nmi.buffer).setUint16(3, Inti.CONFORMS, true);
  nmi[5] = 1; // LINT1
  parts.push(nmi);
  return sdt("APIC", 4, cat(...parts));
}


/** A pointer field inside the table set: `size` bytes at `offset` of table `from` (-1 = the RSDP)
 * hold the address of table `to`. */
export interface TablePointer { from: number; offset: number; size: 4 | 8; to: number }

/**
 * The tables of a platform before placement: pointer fields hold 0 and are listed in `pointers`.
 * `tables` is in layout order (XSDT, RSDT, FADT, FACS, MADT, [HPET], MCFG, [SPCR], extras..., DSDT).
 */
export interface AcpiTableSet {
  rsdp: Uint8Array;
  tables: { signature: string; bytes: Uint8Array; align: number }[];
  pointers: TablePointer[];
}

export const ACPI_MAX_CPUS = 254;

const sigOf = (t: Uint8Array) => String.fromCharCode(...t.subarray(0, 4));

export function buildAcpiTables(p: PlatformDescription): AcpiTableSet {
  const { cpus } = p;
  if (!Number.isInteger(cpus) || cpus < 1 || cpus > ACPI_MAX_CPUS) throw new RangeError(`ACPI: cpus must be 1..${ACPI_MAX_CPUS}, got ${cpus}`);
  if (!Number.isInteger(p.sciIrq) || p.sciIrq < 0 || p.sciIrq > 15) throw new RangeError(`ACPI: SCI IRQ ${p.sciIrq} must be an ISA IRQ`);
  const ioapicId = p.ioapic.id ?? (p.apicIds?.length ? Math.max(...p.apicIds) + 1 : cpus);
  if (ioapicId > 0xfe) throw new RangeError(`ACPI: APIC ids up to ${ioapicId - 1} leave no xAPIC id for the IOAPIC`);
  const pm = pmBlocks(p);
  const fadtBytes = fadt({
    facs: 0, dsdt: 0, sciIrq: p.sciIrq, pm1aEvt: pm.evt, pm1aCnt: pm.cnt, pmTmr: pm.tmr, gpe0: pm.gpe0, gpe0Len: pm.gpe0Len,
    century: p.century,
    flags: FadtFlag.WBINVD | FadtFlag.PROC_C1 | FadtFlag.SLP_BUTTON | FadtFlag.FIX_RTC | FadtFlag.RESET_REG_SUP |
      FadtFlag.FORCE_APIC_PHYSICAL_DESTINATION_MODE,
    bootArch: BootArch.LEGACY_DEVICES | (p.keyboard ? BootArch.I8042 : 0),
    reset: p.reset,
  });
  const pointed: Uint8Array[] = [
    fadtBytes,
    madt({ cpus, ioapicId, sciIrq: p.sciIrq, ...(p.apicIds ? { apicIds: p.apicIds } : {}), lapicBase: p.lapicBase, ioapicBase: p.ioapic.base }),
  ];
  if (p.hpet) pointed.push(hpetTable({ capabilities: p.hpet.capabilities, base: p.hpet.base, minTick: p.hpet.minTick }));
  pointed.push(mcfgTable([{ base: p.pci.ecam.base, busStart: p.pci.busStart, busEnd: Math.min(p.pci.busEnd, p.pci.busStart + p.pci.ecam.size / 2 ** 20 - 1) }]));
  const com1 = p.com[0];
  if (com1) pointed.push(spcrTable({ port: com1.port, irq: com1.irq }));
  pointed.push(...(p.tables ?? []));

  const n = pointed.length;
  const tables = [
    sdt("XSDT", 1, new Uint8Array(8 * n)),
    sdt("RSDT", 1, new Uint8Array(4 * n)),
    fadtBytes,
    facs(),
    ...pointed.slice(1),
    buildDsdt(p),
  ].map((bytes) => ({ signature: sigOf(bytes), bytes, align: sigOf(bytes) === "FACS" ? 64 : 16 }));
  const X = 0, R = 1, F = 2, FACS_I = 3, DSDT_I = tables.length - 1;
  const indexOfPointed = (i: number) => (i === 0 ? F : 3 + i);
  const pointers: TablePointer[] = [
    { from: -1, offset: RSDP.RSDT, size: 4, to: R },
    { from: -1, offset: RSDP.XSDT, size: 8, to: X },
    ...pointed.flatMap((_, i): TablePointer[] => [
      { from: X, offset: SDT_HEADER_BYTES + 8 * i, size: 8, to: indexOfPointed(i) },
      { from: R, offset: SDT_HEADER_BYTES + 4 * i, size: 4, to: indexOfPointed(i) },
    ]),
    { from: F, offset: FADT.FIRMWARE_CTRL, size: 4, to: FACS_I },
    { from: F, offset: FADT.X_FIRMWARE_CTRL, size: 8, to: FACS_I },
    { from: F, offset: FADT.DSDT, size: 4, to: DSDT_I },
    { from: F, offset: FADT.X_DSDT, size: 8, to: DSDT_I },
  ];
  return { rsdp: rsdp(0, 0), tables, pointers };
}

/**
 * Copies of the set's tables with every pointer field set to addrOf(target) and checksums redone.
 * (addrOf gives guest addresses for placement, blob offsets for the fw_cfg loader.)
 */
export function linkTables(set: AcpiTableSet, addrOf: (table: number) => number): { rsdp: Uint8Array; tables: Uint8Array[] } {
  const rsdpBytes = set.rsdp.slice();
  const tables = set.tables.map((t) => t.bytes.slice());
  for (const ptr of set.pointers) {
    const t = ptr.from < 0 ? rsdpBytes : tables[ptr.from]!;
    const dv = new DataView(t.buffer, t.byteOffset);
    const a = addrOf(ptr.to);
    if (ptr.size === 4) {
      if (a > 0xffff_ffff) throw new RangeError(`ACPI: table at 0x${a.toString(16)} needs a 64-bit pointer`);
      dv.setUint32(ptr.offset, a, true);
    } else dv.setBigUint64(ptr.offset, BigInt(a), true);
  }
  fixChecksum(rsdpBytes);
  tables.forEach(fixChecksum);
  return { rsdp: rsdpBytes, tables };
}

/** Byte offsets of the set's tables laid out from `start` (RSDP excluded), and the end. */
export function layoutTables(set: AcpiTableSet, start: number): { offsets: number[]; end: number } {
  let cur = start;
  const offsets = set.tables.map((t) => {
    cur = Math.ceil(cur / t.align) * t.align;
    const at = cur;
    cur += t.bytes.length;
    return at;
  });
  return { offsets, end: cur };
}

export interface AcpiTableInfo { signature: string; addr: number; length: number }

export interface Acpi {
  blobs: PlacedBlob[];
  /** Address of the RSDP (pass to the Linux loader as acpi_rsdp_addr). */
  rsdp: number;
  tables: AcpiTableInfo[];
  /** First byte after the last table. */
  end: number;
  /** The unplaced set (for buildTableLoader()). */
  set: AcpiTableSet;
}

export interface Placement {
  /** 16-byte aligned start of the table area (default 0xF2400, like bhyve). */
  base?: number;
  /** First byte the tables must not reach (default 1 MiB). */
  limit?: number;
}

/** Lay the set out from `base`: RSDP first, then the tables in order. */
export function placeAcpi(set: AcpiTableSet, place: Placement = {}): Acpi {
  const base = place.base ?? ACPI_BASE;
  const limit = place.limit ?? ACPI_LIMIT;
  if (!Number.isSafeInteger(base) || base < 0 || base % 16 !== 0) throw new RangeError(`ACPI: base 0x${base.toString(16)} must be 16-byte aligned`);
  const { offsets, end } = layoutTables(set, base + RSDP_BYTES);
  if (end > limit) throw new RangeError(`ACPI tables (0x${base.toString(16)}-0x${end.toString(16)}) run past 0x${limit.toString(16)}`);
  const linked = linkTables(set, (i) => offsets[i]!);
  const blobs: PlacedBlob[] = [{ addr: base, bytes: linked.rsdp }, ...linked.tables.map((bytes, i) => ({ addr: offsets[i]!, bytes }))];
  const tables = blobs.map((b, i) => ({ signature: i === 0 ? "RSD PTR " : sigOf(b.bytes), addr: b.addr, length: b.bytes.length }));
  return { blobs, rsdp: base, tables, end, set };
}

/** The options buildAcpi() took before PlatformDescription (kept so existing callers still work). */
export interface LegacyAcpiOptions extends Placement {
  cpus: number;
  apicIds?: readonly number[];
  sciIrq?: number;
  pm1aEvt?: number;
  pm1aCnt?: number;
  reset?: { port: number; value: number };
  century?: number;
  /** Extra AML terms appended to the DSDT root. */
  dsdt?: readonly Uint8Array[];
  tables?: readonly Uint8Array[];
}

function fromLegacy(o: LegacyAcpiOptions): PlatformDescription {
  const p = describePlatform({ cpus: o.cpus, ...(o.apicIds ? { apicIds: o.apicIds } : {}), ...(o.pm1aEvt !== undefined ? { pmBase: o.pm1aEvt } : {}), ...(o.century !== undefined ? { century: o.century } : {}) });
  if (o.pm1aCnt !== undefined && o.pm1aCnt !== p.pm.base + 4) throw new RangeError("ACPI: PM1a_CNT must be the PM base + 4");
  return { ...p, sciIrq: o.sciIrq ?? p.sciIrq, reset: o.reset ?? p.reset, extra: { root: o.dsdt ?? [] }, tables: o.tables ?? [] };
}

/** Build and place the tables of a platform (direct kernel boot); `acpi.set` feeds buildTableLoader(). */
export function buildAcpi(p: PlatformDescription | LegacyAcpiOptions, place: Placement = {}): Acpi {
  if (!("pci" in p)) return placeAcpi(buildAcpiTables(fromLegacy(p)), { base: p.base ?? place.base, limit: p.limit ?? place.limit });
  return placeAcpi(buildAcpiTables(p), place);
}

/** Write the tables into guest memory (bounds-checked); returns the RSDP address. */
export function writeAcpi(mem: GuestMemory, acpi: Acpi): number {
  writeBlobs(mem, acpi.blobs);
  return acpi.rsdp;
}
