/**
 * The PCI hierarchy as plain data for the tables that describe it: the root bridge's windows (_CRS),
 * every populated bus-0 slot with its INTx routing (_PRT, MP table), the LPC/PM locations, and ECAM (MCFG).
 * Computed from the configuration alone — the same answer the devices are built from.
 */
import type { VmConfig } from "../config/types.ts";
import { IRQ, MEMMAP, ioapicPinOfPirq, pirqOf } from "../platform/map.ts";
import { describePci, pciWindows, type PciWindows } from "./host.ts";

export interface PciPinRoute {
  /** 1 = INTA .. 4 = INTD */
  pin: number;
  /** 0 = PIRQA .. 7 = PIRQH */
  pirq: number;
  /** IOAPIC input (GSI) in APIC mode */
  ioapicPin: number;
}

export interface PciSlotTopology {
  slot: number;
  /** functions present: number, emulation name and model */
  functions: { fn: number; device: string; model: string; intPin: number }[];
  /** INTx pins the slot's functions use (sorted, 1-4) */
  pins: number[];
  /** routing of all four pins of the slot (a _PRT usually lists all four) */
  routes: PciPinRoute[];
}

export interface PciTopology {
  windows: PciWindows;
  ecam: { base: number; size: number; busStart: number; busEnd: number };
  /** bus 0 slots in ascending order */
  slots: PciSlotTopology[];
  /** the ISA bridge (PIRQ route registers) and the PIIX4 PM function, when an lpc exists */
  isa?: { slot: number; fn: number };
  pm?: { slot: number; fn: number };
  /** ISA IRQs a PIRQ may be routed to (link _PRS) and the IOAPIC pin of PIRQA */
  pirqIsaMask: number;
  ioapicPirqBase: number;
}

export function pciTopology(cfg: Pick<VmConfig, "pci">, ramSize: number): PciTopology {
  const infos = describePci(cfg);
  const bySlot = new Map<number, PciSlotTopology>();
  let isa: PciTopology["isa"], pm: PciTopology["pm"];
  for (const i of infos) {
    if (i.model === "PIIX3 ISA") isa = { slot: i.addr.slot, fn: i.addr.fn };
    if (i.model === "PIIX4 PM") pm = { slot: i.addr.slot, fn: i.addr.fn };
    if (i.addr.bus !== 0) continue;
    let s = bySlot.get(i.addr.slot);
    if (!s) {
      const slot = i.addr.slot;
      bySlot.set(slot, (s = { slot, functions: [], pins: [], routes: [1, 2, 3, 4].map((pin) => ({ pin, pirq: pirqOf(slot, pin), ioapicPin: ioapicPinOfPirq(pirqOf(slot, pin)) })) }));
    }
    s.functions.push({ fn: i.addr.fn, device: i.device, model: i.model, intPin: i.intPin });
    if (i.intPin && !s.pins.includes(i.intPin)) s.pins.push(i.intPin);
  }
  const slots = [...bySlot.values()].sort((a, b) => a.slot - b.slot);
  for (const s of slots) { s.pins.sort(); s.functions.sort((a, b) => a.fn - b.fn); }
  return {
    windows: pciWindows(ramSize),
    ecam: { base: MEMMAP.ecam.base, size: MEMMAP.ecam.size, busStart: 0, busEnd: MEMMAP.ecam.size / 2 ** 20 - 1 },
    slots,
    ...(isa ? { isa } : {}),
    ...(pm ? { pm } : {}),
    pirqIsaMask: IRQ.pirqIsaMask,
    ioapicPirqBase: IRQ.pirqBasePin,
  };
}
