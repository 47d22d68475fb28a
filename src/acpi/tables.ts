/**
 * A minimal ACPI table set (ACPI 6.2 layouts): RSDP -> XSDT/RSDT -> FADT (-> FACS, DSDT), MADT.
 * Enough for Linux to find SMP from the MADT and to power off through \_S5 (SLP_TYP 5 written to
 * PM1a_CNT with SLP_EN), and to reboot through the FADT reset register (0xCF9 <- 6).
 *
 * Everything is built as plain bytes with final addresses (PlacedBlob) starting at `base`; the
 * caller writes them into guest memory (writeAcpi) and passes `rsdp` to the Linux loader.
 */
import { checksum8, putAscii, writeBlobs, type PlacedBlob } from "../loader/blob.ts";
import { IOAPIC_BASE, LAPIC_BASE } from "../loader/e820.ts";
import type { GuestMemory } from "../mem/guest-memory.ts";
import { cat, name, pkg } from "./aml.ts";

export const ACPI_BASE = 0xf2400;
/** Tables must stay in the reserved BIOS area below 1 MiB. */
export const ACPI_LIMIT = 0x100000;
export const ACPI_OEM_ID = "TSBHYV";
export const ACPI_OEM_TABLE_ID = "TSBHYVE";
export const ACPI_CREATOR_ID = "TSBH";
/** SLP_TYP value for S5 (bhyve's PM1 control register treats 5 as soft-off). */
export const SLP_TYP_S5 = 5;

export const SDT_HEADER_BYTES = 36;
export const RSDP_BYTES = 36;
export const FADT_BYTES = 276;
export const FACS_BYTES = 64;

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

export const AddressSpace = { SYSTEM_MEMORY: 0, SYSTEM_IO: 1, PCI_CONFIG: 2 } as const;
/** Access size field of a Generic Address Structure. */
export const AccessSize = { UNDEFINED: 0, BYTE: 1, WORD: 2, DWORD: 3, QWORD: 4 } as const;

export interface Gas { space: number; bitWidth: number; bitOffset?: number; accessSize: number; address: number | bigint }

/** 12-byte Generic Address Structure. */
export function gas(g: Gas): Uint8Array {
  const out = new Uint8Array(12);
  const dv = new DataView(out.buffer);
  out[0] = g.space; out[1] = g.bitWidth; out[2] = g.bitOffset ?? 0; out[3] = g.accessSize;
  dv.setBigUint64(4, BigInt(g.address), true);
  return out;
}

export interface SdtOptions { oemId?: string; oemTableId?: string; oemRevision?: number }

/** A complete System Description Table: 36-byte header + body, checksum filled in. */
export function sdt(signature: string, revision: number, body: Uint8Array, o: SdtOptions = {}): Uint8Array {
  if (!/^[A-Z0-9_]{4}$/.test(signature)) throw new Error(`bad ACPI signature "${signature}"`);
  const t = new Uint8Array(SDT_HEADER_BYTES + body.length);
  const dv = new DataView(t.buffer);
  putAscii(t, 0, signature, 4);
  dv.setUint32(4, t.length, true);
  t[8] = revision;
  putAscii(t, 10, o.oemId ?? ACPI_OEM_ID, 6);
  putAscii(t, 16, o.oemTableId ?? ACPI_OEM_TABLE_ID, 8);
  dv.setUint32(24, o.oemRevision ?? 1, true);
  putAscii(t, 28, ACPI_CREATOR_ID, 4);
  dv.setUint32(32, 1, true); // creator revision
  t.set(body, SDT_HEADER_BYTES);
  t[9] = checksum8(t);
  return t;
}

/** Root System Description Pointer, revision 2 (ACPI 2.0+), 36 bytes. */
export function rsdp(rsdtAddr: number, xsdtAddr: number, oemId = ACPI_OEM_ID): Uint8Array {
  const t = new Uint8Array(RSDP_BYTES);
  const dv = new DataView(t.buffer);
  putAscii(t, 0, "RSD PTR ", 8);
  putAscii(t, 9, oemId, 6);
  t[15] = 2;
  dv.setUint32(16, rsdtAddr, true);
  dv.setUint32(20, RSDP_BYTES, true);
  dv.setBigUint64(24, BigInt(xsdtAddr), true);
  t[8] = checksum8(t.subarray(0, 20));
  t[32] = checksum8(t);
  return t;
}

/** Firmware ACPI Control Structure (no checksum; 64 bytes; must be 64-byte aligned). */
export function facs(): Uint8Array {
  const t = new Uint8Array(FACS_BYTES);
  const dv = new DataView(t.buffer);
  putAscii(t, 0, "FACS", 4);
  dv.setUint32(4, FACS_BYTES, true);
  dv.setUint32(8, 0, true); // hardware signature
  t[32] = 2; // version
  return t;
}

export interface FadtOptions {
  facs: number;
  dsdt: number;
  sciIrq: number;
  pm1aEvt: number;
  pm1aCnt: number;
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
  const putGas = (off: number, g: Uint8Array) => b.set(g, at(off));

  u32(FADT.FIRMWARE_CTRL, o.facs);
  u32(FADT.DSDT, o.dsdt);
  u8(FADT.PREFERRED_PM_PROFILE, 0); // unspecified
  u16(FADT.SCI_INT, o.sciIrq);
  u32(FADT.SMI_CMD, 0); // no SMI command port: the hardware is always in ACPI mode
  u32(FADT.PM1A_EVT_BLK, o.pm1aEvt);
  u32(FADT.PM1A_CNT_BLK, o.pm1aCnt);
  u32(FADT.PM_TMR_BLK, 0); // no PM timer (yet)
  u8(FADT.PM1_EVT_LEN, 4);
  u8(FADT.PM1_CNT_LEN, 2);
  u8(FADT.PM_TMR_LEN, 0);
  u16(FADT.P_LVL2_LAT, 101); // > 100: C2 not supported
  u16(FADT.P_LVL3_LAT, 1001); // > 1000: C3 not supported
  u8(FADT.CENTURY, o.century);
  u16(FADT.IAPC_BOOT_ARCH, o.bootArch);
  u32(FADT.FLAGS, o.flags);
  putGas(FADT.RESET_REG, gas({ space: AddressSpace.SYSTEM_IO, bitWidth: 8, accessSize: AccessSize.BYTE, address: o.reset.port }));
  u8(FADT.RESET_VALUE, o.reset.value);
  u8(FADT.MINOR_VERSION, 2);
  u64(FADT.X_FIRMWARE_CTRL, o.facs);
  u64(FADT.X_DSDT, o.dsdt);
  putGas(FADT.X_PM1A_EVT_BLK, gas({ space: AddressSpace.SYSTEM_IO, bitWidth: 32, accessSize: AccessSize.WORD, address: o.pm1aEvt }));
  putGas(FADT.X_PM1A_CNT_BLK, gas({ space: AddressSpace.SYSTEM_IO, bitWidth: 16, accessSize: AccessSize.WORD, address: o.pm1aCnt }));
  return sdt("FACP", 6, b);
}

export interface MadtOptions { cpus: number; ioapicId: number; sciIrq: number; apicIds?: readonly number[] }

/** Multiple APIC Description Table, revision 4 (ACPI 6.0-6.2). */
export function madt(o: MadtOptions): Uint8Array {
  const parts: Uint8Array[] = [];
  const head = new Uint8Array(8);
  const hv = new DataView(head.buffer);
  hv.setUint32(0, LAPIC_BASE, true);
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
  iv.setUint32(4, IOAPIC_BASE, true);
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

/** The DSDT body: sleep-state packages (S0 working, S5 soft-off) plus any extra AML terms. */
export function dsdtAml(extra: readonly Uint8Array[] = []): Uint8Array {
  return cat(
    name("\\_S0", pkg(0, 0, 0, 0)),
    name("\\_S5", pkg(SLP_TYP_S5, SLP_TYP_S5, 0, 0)),
    ...extra,
  );
}

export interface AcpiOptions {
  cpus: number;
  /** APIC id of each vCPU (default: the vCPU index); see src/vcpu/cpuid.ts apicId(). */
  apicIds?: readonly number[];
  /** 16-byte aligned start of the table area (default 0xF2400, like bhyve). */
  base?: number;
  /** First byte the tables must not reach (default 1 MiB). */
  limit?: number;
  sciIrq?: number;
  pm1aEvt?: number;
  pm1aCnt?: number;
  reset?: { port: number; value: number };
  /** CMOS century register index (default 0x32; 0 = none). */
  century?: number;
  /** Extra AML terms appended to the DSDT. */
  dsdt?: readonly Uint8Array[];
  /** Extra complete tables (e.g. built with sdt()) to link from the XSDT/RSDT. */
  tables?: readonly Uint8Array[];
}

export interface AcpiTableInfo { signature: string; addr: number; length: number }

export interface Acpi {
  blobs: PlacedBlob[];
  /** Address of the RSDP (pass to the Linux loader as acpi_rsdp_addr). */
  rsdp: number;
  tables: AcpiTableInfo[];
  /** First byte after the last table. */
  end: number;
}

export const ACPI_MAX_CPUS = 254;

export function buildAcpi(opts: AcpiOptions): Acpi {
  const { cpus } = opts;
  const base = opts.base ?? ACPI_BASE;
  const limit = opts.limit ?? ACPI_LIMIT;
  const sciIrq = opts.sciIrq ?? 9;
  if (!Number.isInteger(cpus) || cpus < 1 || cpus > ACPI_MAX_CPUS) throw new RangeError(`ACPI: cpus must be 1..${ACPI_MAX_CPUS}, got ${cpus}`);
  if (!Number.isSafeInteger(base) || base < 0 || base % 16 !== 0) throw new RangeError(`ACPI: base 0x${base.toString(16)} must be 16-byte aligned`);
  if (!Number.isInteger(sciIrq) || sciIrq < 0 || sciIrq > 15) throw new RangeError(`ACPI: SCI IRQ ${sciIrq} must be an ISA IRQ`);

  // Fixed layout: addresses of everything are known before the bytes are built.
  let cur = base;
  const take = (len: number, align = 16) => { cur = Math.ceil(cur / align) * align; const a = cur; cur += len; return a; };
  const extra = opts.tables ?? [];
  const nTables = 2 + extra.length; // FADT, MADT, extras
  const rsdpAddr = take(RSDP_BYTES);
  const xsdtAddr = take(SDT_HEADER_BYTES + 8 * nTables);
  const rsdtAddr = take(SDT_HEADER_BYTES + 4 * nTables);
  const fadtAddr = take(FADT_BYTES);
  const facsAddr = take(FACS_BYTES, 64);
  const ioapicId = opts.apicIds?.length ? Math.max(...opts.apicIds) + 1 : cpus;
  if (ioapicId > 0xfe) throw new RangeError(`ACPI: APIC ids up to ${ioapicId - 1} leave no xAPIC id for the IOAPIC`);
  const madtBytes = madt({ cpus, ioapicId, sciIrq, apicIds: opts.apicIds });
  const madtAddr = take(madtBytes.length);
  const extraAddrs = extra.map((t) => take(t.length));
  const dsdtBytes = sdt("DSDT", 2, dsdtAml(opts.dsdt));
  const dsdtAddr = take(dsdtBytes.length);
  if (cur > limit) throw new RangeError(`ACPI tables (0x${base.toString(16)}-0x${cur.toString(16)}) run past 0x${limit.toString(16)}`);

  const fadtBytes = fadt({
    facs: facsAddr, dsdt: dsdtAddr, sciIrq, pm1aEvt: opts.pm1aEvt ?? 0x400, pm1aCnt: opts.pm1aCnt ?? 0x404,
    century: opts.century ?? 0x32,
    flags: FadtFlag.WBINVD | FadtFlag.PROC_C1 | FadtFlag.SLP_BUTTON | FadtFlag.FIX_RTC | FadtFlag.RESET_REG_SUP |
      FadtFlag.FORCE_APIC_PHYSICAL_DESTINATION_MODE,
    bootArch: BootArch.LEGACY_DEVICES | BootArch.I8042,
    reset: opts.reset ?? { port: 0xcf9, value: 0x06 },
  });
  const pointed = [fadtAddr, madtAddr, ...extraAddrs];
  const xb = new Uint8Array(8 * pointed.length), rb = new Uint8Array(4 * pointed.length);
  pointed.forEach((a, i) => {
    new DataView(xb.buffer).setBigUint64(8 * i, BigInt(a), true);
    new DataView(rb.buffer).setUint32(4 * i, a, true);
  });
  const sig = (t: Uint8Array) => String.fromCharCode(...t.subarray(0, 4));
  const blobs: PlacedBlob[] = [
    { addr: rsdpAddr, bytes: rsdp(rsdtAddr, xsdtAddr) },
    { addr: xsdtAddr, bytes: sdt("XSDT", 1, xb) },
    { addr: rsdtAddr, bytes: sdt("RSDT", 1, rb) },
    { addr: fadtAddr, bytes: fadtBytes },
    { addr: facsAddr, bytes: facs() },
    { addr: madtAddr, bytes: madtBytes },
    ...extra.map((t, i) => ({ addr: extraAddrs[i]!, bytes: t })),
    { addr: dsdtAddr, bytes: dsdtBytes },
  ];
  const tables = blobs.map((b) => ({ signature: b.addr === rsdpAddr ? "RSD PTR " : sig(b.bytes), addr: b.addr, length: b.bytes.length }));
  return { blobs, rsdp: rsdpAddr, tables, end: cur };
}

/** Write the tables into guest memory (bounds-checked); returns the RSDP address. */
export function writeAcpi(mem: GuestMemory, acpi: Acpi): number {
  writeBlobs(mem, acpi.blobs);
  return acpi.rsdp;
}
