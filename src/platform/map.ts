/**
 * The platform's fixed addresses, ports and interrupt numbers — one place, used by the devices and by the
 * tables that describe them (ACPI, MP table, e820, fw_cfg). bhyve's memory map (shared/research/
 * bhyve-inventory.md §2.3) with a persona stock OVMF/SeaBIOS accept (i440FX + PIIX3/PIIX4).
 */
export const GiB = 2 ** 30, MiB = 2 ** 20;

export const MEMMAP = {
  /** RAM below this, the rest above 4 GiB */
  lowmemLimit: 3 * GiB,
  /** 32-bit PCI BAR window [base, base+size): fixed because OVMF hard-codes it */
  pciMem32: { base: 0xc000_0000, size: 0x2000_0000 },
  /** PCIe ECAM: 1 MiB per bus, 256 buses */
  ecam: { base: 0xe000_0000, size: 0x1000_0000 },
  ioapic: 0xfec0_0000,
  hpet: 0xfed0_0000,
  lapic: 0xfee0_0000,
  /** boot ROM region: the top 16 MiB below 4 GiB */
  bootrom: { base: 0x1_0000_0000 - 16 * MiB, size: 16 * MiB },
  highmemBase: 4 * GiB,
  /** 64-bit BAR window: 32 GiB starting at roundup(4 GiB + highmem, 32 GiB) */
  pciMem64Size: 32 * GiB,
} as const;

/** Base of the 64-bit PCI window for a guest with `highmem` bytes of RAM above 4 GiB. */
export function pciMem64Base(highmem: number): number {
  const end = MEMMAP.highmemBase + highmem;
  return Math.ceil(end / MEMMAP.pciMem64Size) * MEMMAP.pciMem64Size;
}

export const PORTS = {
  /** PCI configuration mechanism #1 */
  pciConfigAddress: 0xcf8,
  pciConfigData: 0xcfc,
  /** PCI I/O BARs are allocated from [base, limit) */
  pciIo: { base: 0x2000, limit: 0x1_0000 },
  /** reset control register (byte inside the 0xCF8 dword) */
  resetControl: 0xcf9,
  rtc: 0x70,
  i8042Data: 0x60,
  i8042Command: 0x64,
  post: 0x80,
  debugcon: 0x402,
  fwcfg: 0x510,
  fwcfgDma: 0x514,
  /** PIIX4 PM base (PMBA) before firmware programs it; PM1a_EVT = +0, PM1a_CNT = +4, PM_TMR = +8, GPE0 = +0x0c */
  pmBase: 0x600,
} as const;

export const PM = { evt: 0x0, cnt: 0x4, tmr: 0x8, gpe0: 0xc, gpe0Len: 4 } as const;

export const IRQ = {
  /** ISA IRQs */
  pit: 0, keyboard: 1, com2: 3, com4: 3, com1: 4, com3: 4, rtc: 8, sci: 9, mouse: 12,
  /** HPET legacy replacement: timer 0 → IRQ 0 (IOAPIC pin 2), timer 1 → IRQ 8 */
  /** IOAPIC pins 16..23 serve PCI INTx through the 8 PIRQ lines A..H */
  pirqBasePin: 16,
  pirqCount: 8,
  /** ISA IRQs a PIRQ may be steered to (bhyve: 3-7, 9-12, 14, 15) */
  pirqIsaMask: 0xdef8,
} as const;

/**
 * PCI INTx wiring, fixed so firmware, ACPI _PRT and devices agree (bhyve's rule when booting a ROM):
 * INTA..INTD (pin 1..4) of device `slot` on bus 0 uses PIRQ (4 + slot + pin) % 8, which drives IOAPIC pin
 * 16 + PIRQ (APIC mode) and, when the LPC's PIRQ route register steers it, an ISA IRQ on the PIC.
 */
export function pirqOf(slot: number, pin: number): number {
  return (4 + slot + pin) % IRQ.pirqCount;
}
export function ioapicPinOfPirq(pirq: number): number {
  return IRQ.pirqBasePin + pirq;
}
