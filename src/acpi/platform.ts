/**
 * PlatformDescription: the plain data the ACPI tables (DSDT, FADT, MADT, HPET, MCFG, SPCR) are built
 * from. Nothing here reads the VM config: the VM layer fills it (describePlatform() gives the
 * defaults from src/platform/map.ts) and passes it to buildAcpi() / buildDsdt().
 */
import { IRQ, MEMMAP, PM, PORTS, pciMem64Base } from "../platform/map.ts";

export interface Window { base: number; size: number }
export interface Window64 { base: number | bigint; size: number | bigint }
export interface IoWindow { base: number; /** inclusive */ limit: number }

export interface PciSlotDescription {
  /** Device number on bus 0 (0-31). */
  slot: number;
  /** INTx pins the slot's functions use: 1 = INTA .. 4 = INTD. */
  pins: readonly number[];
}

export interface ComPort { port: number; irq: number }

export interface PlatformDescription {
  cpus: number;
  /** APIC id of each vCPU (default: the vCPU index). */
  apicIds?: readonly number[];
  lapicBase: number;
  ioapic: { base: number; /** default: highest APIC id + 1 */ id?: number };
  /** ISA IRQ of the SCI (also its GSI). */
  sciIrq: number;
  pm: {
    /** PM I/O block base: PM1a_EVT at +0, PM1a_CNT at +4, PM_TMR at +8, GPE0 at +0xC. */
    base: number;
    /** Describe the 32-bit PM timer at base+8 (default true). */
    timer?: boolean;
  };
  /** SLP_TYP values of \_S5 (PM1a, PM1b). */
  slpTypS5: number;
  /** CMOS index of the RTC century register (0 = none). */
  century: number;
  reset: { port: number; value: number };
  pci: {
    /** Bus range decoded by the root bridge, inclusive. */
    busStart: number;
    busEnd: number;
    /** I/O windows passed down to bus 0 (including the ISA range the LPC decodes). */
    io: readonly IoWindow[];
    mem32: Window;
    mem64?: Window64;
    /** PCIe ECAM (MMCONFIG); MCFG entry and a PNP0C02 reservation. */
    ecam: Window;
    /** Populated slots and their INTx pins, for the _PRT. */
    slots: readonly PciSlotDescription[];
    /** GSI of PIRQ 0 in APIC mode (PIRQ n -> GSI base + n; the pin -> PIRQ rule is map.ts pirqOf). */
    ioapicPirqBase: number;
  };
  /** The LPC/ISA bridge (00:slot.fn) with its PIRQ route registers at config 0x60-0x63 / 0x68-0x6B. */
  isa: {
    slot: number;
    fn: number;
    /** ISA IRQs a PIRQ may be routed to (link _PRS). */
    pirqIsaMask: number;
  };
  /** COM1..COM4 in order; undefined = absent. */
  com: readonly (ComPort | undefined)[];
  rtc: { port: number; irq: number };
  keyboard: { data: number; command: number; irq: number } | undefined;
  hpet?: {
    base: number;
    /** General Capabilities and ID register bits 31:0 (the HPET table's Event Timer Block ID). */
    capabilities: number;
    /** Main counter minimum clock tick in periodic mode. */
    minTick: number;
  };
  /** QEMU fw_cfg I/O ports (QEMU0002 device); base and length. */
  fwCfg?: { port: number; length: number };
  /** Further motherboard I/O ports (PNP0C02), e.g. the debug console, POST, port 0x92. */
  sysIo: readonly { port: number; length: number }[];
  /** Extra AML terms: `pci0` go inside \_SB.PCI0, `root` at the DSDT root. */
  extra?: { pci0?: readonly Uint8Array[]; root?: readonly Uint8Array[] };
  /** Extra complete tables (sdt()) linked from the XSDT/RSDT. */
  tables?: readonly Uint8Array[];
}

export interface DescribeOptions {
  cpus: number;
  apicIds?: readonly number[];
  /** Guest RAM in bytes (decides the 64-bit window; omit for no 64-bit window). */
  ramSize?: number;
  /** Which of COM1..COM4 exist. */
  com?: readonly boolean[];
  slots?: readonly PciSlotDescription[];
  /** LPC bridge location (default 00:1.0). */
  isaSlot?: number;
  pmBase?: number;
  century?: number;
  /** HPET GCAP_ID bits 31:0; omit for no HPET. */
  hpetCapabilities?: number;
  /** fw_cfg present (default true). */
  fwCfg?: boolean;
}

/** Standard PC COM ports. */
export const COM_DEFAULTS: readonly ComPort[] = [
  { port: 0x3f8, irq: IRQ.com1 }, { port: 0x2f8, irq: IRQ.com2 }, { port: 0x3e8, irq: IRQ.com3 }, { port: 0x2e8, irq: IRQ.com4 },
];

/** The PlatformDescription of tsbhyve's machine (src/platform/map.ts) with the given variable parts. */
export function describePlatform(o: DescribeOptions): PlatformDescription {
  const highmem = o.ramSize === undefined ? undefined : Math.max(0, o.ramSize - MEMMAP.lowmemLimit);
  return {
    cpus: o.cpus,
    ...(o.apicIds ? { apicIds: o.apicIds } : {}),
    lapicBase: MEMMAP.lapic,
    ioapic: { base: MEMMAP.ioapic },
    sciIrq: IRQ.sci,
    pm: { base: o.pmBase ?? PORTS.pmBase },
    slpTypS5: 5,
    century: o.century ?? 0x32,
    reset: { port: PORTS.resetControl, value: 0x06 },
    pci: {
      busStart: 0,
      busEnd: 0xff,
      io: [{ base: 0, limit: PORTS.pciConfigAddress - 1 }, { base: PORTS.pciConfigAddress + 8, limit: 0xffff }],
      mem32: MEMMAP.pciMem32,
      ...(highmem === undefined ? {} : { mem64: { base: pciMem64Base(highmem), size: MEMMAP.pciMem64Size } }),
      ecam: MEMMAP.ecam,
      slots: o.slots ?? [],
      ioapicPirqBase: IRQ.pirqBasePin,
    },
    isa: { slot: o.isaSlot ?? 1, fn: 0, pirqIsaMask: IRQ.pirqIsaMask },
    com: COM_DEFAULTS.map((c, i) => (o.com?.[i] ?? i === 0 ? c : undefined)),
    rtc: { port: PORTS.rtc, irq: IRQ.rtc },
    keyboard: { data: PORTS.i8042Data, command: PORTS.i8042Command, irq: IRQ.keyboard },
    ...(o.hpetCapabilities === undefined ? {} : { hpet: { base: MEMMAP.hpet, capabilities: o.hpetCapabilities, minTick: 0x80 } }),
    ...((o.fwCfg ?? true) ? { fwCfg: { port: PORTS.fwcfg, length: 12 } } : {}),
    sysIo: [{ port: PORTS.debugcon, length: 1 }],
  };
}

/** PM register addresses of a description (PM offsets from src/platform/map.ts). */
export function pmBlocks(p: PlatformDescription) {
  const b = p.pm.base;
  return { evt: b + PM.evt, cnt: b + PM.cnt, tmr: p.pm.timer === false ? 0 : b + PM.tmr, gpe0: b + PM.gpe0, gpe0Len: PM.gpe0Len, blockLength: 64 };
}
