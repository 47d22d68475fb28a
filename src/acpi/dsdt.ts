/**
 * The DSDT, generated from a PlatformDescription (ACPI 6.x; the namespace conventions of chapter 6
 * (device identification and configuration objects) and §6.2.13 _PRT):
 *
 *   \_S0, \_S5          sleep-state packages (SLP_TYP for PM1a/PM1b)
 *   \PICM, \_PIC(1)     interrupt model chosen by the OS (0 = PIC, 1 = APIC), selects the _PRT form
 *   \_SB.LNKA..LNKH     PCI interrupt link devices (PNP0C0F) over the LPC's PIRQ route registers
 *   \_SB.PCI0           root bridge (PNP0A03): _CRS windows, _PRT (PIC: via LNKx, APIC: GSI 16+PIRQ)
 *     ISA               the LPC bridge at 00:S.F: PIRQ registers (PCI_Config region), PIC, PIT, RTC,
 *                       i8042, COM1-4, motherboard I/O (PNP0C02), fw_cfg (QEMU0002)
 *   \_SB.HPET           PNP0103
 *   \_SB.MRES           PNP0C02 reserving the ECAM (Linux requires MMCONFIG to be reserved there)
 *
 * The power button is the fixed-feature one (FADT PWR_BUTTON flag clear, PM1_STS.PWRBTN_STS): Linux's
 * ACPI button driver binds the LNXPWRBN device it creates for it and reports KEY_POWER on its input
 * device, with no GPE, _Lxx method or Notify needed (a PNP0C0C control-method button would need all
 * three, and a GPE block the PM device would have to implement).
 */
import {
  and, cat, device, eisaId, elseOf, field, FieldAccess, findSetRightBit, ifThen, lNot, local, method, name,
  nameString, opRegion, or, pkg, ref, RegionSpace, ret, scope, shiftLeft, store, arg, createWordField, decrement,
} from "./aml.ts";
import { sdt } from "./sdt.ts";
import { pirqOf } from "../platform/map.ts";
import type { PlatformDescription } from "./platform.ts";
import {
  dwordIo, dwordMemory, io, irq, irqNoFlags, memory32Fixed, qwordMemory, resourceTemplate, wordBusNumber,
} from "./resources.ts";

export const LINKS = ["LNKA", "LNKB", "LNKC", "LNKD", "LNKE", "LNKF", "LNKG", "LNKH"] as const;
/** Field names of the PIRQ route registers A..H in \_SB.PCI0.ISA. */
export const PIRQ_FIELDS = ["PIRA", "PIRB", "PIRC", "PIRD", "PIRE", "PIRF", "PIRG", "PIRH"] as const;
export const ISA_PATH = "\\_SB.PCI0.ISA";
/** _STA values: present+enabled+functioning (0x0F); link devices hidden from UI (0x0B / disabled 0x09). */
const STA_ON = 0x0f;

const hid = (id: string) => name("_HID", /^[A-Z]{3}[0-9A-F]{4}$/.test(id) ? eisaId(id) : id);

/** A device with fixed resources. */
function fixedDevice(n: string, id: string, uid: number | undefined, res: Uint8Array[], sta?: number): Uint8Array {
  return device(n, hid(id), ...(uid === undefined ? [] : [name("_UID", uid)]), ...(sta === undefined ? [] : [name("_STA", sta)]),
    name("_CRS", resourceTemplate(res)));
}

/** Interrupt link device for PIRQ `i`: its route register is \_SB.PCI0.ISA.PIRx (bit 7 = disabled). */
export function linkDevice(i: number, isaMask: number): Uint8Array {
  const reg = ref(`${ISA_PATH}.${PIRQ_FIELDS[i]}`);
  const irqs = Array.from({ length: 16 }, (_, n) => n).filter((n) => isaMask & (1 << n));
  const pciIrq = { level: true, activeLow: true, shared: true };
  return device(LINKS[i]!,
    name("_HID", eisaId("PNP0C0F")),
    name("_UID", i + 1),
    name("_PRS", resourceTemplate([irq(pciIrq, irqs)])),
    method("_STA", {}, ifThen(and(reg, 0x80), ret(0x09)), ret(0x0b)),
    method("_DIS", {}, or(reg, 0x80, reg)),
    method("_CRS", { serialized: true },
      name("RTMP", resourceTemplate([irq(pciIrq, [])])),
      createWordField(ref("RTMP"), 1, "IRQM"),
      ifThen(lNot(and(reg, 0x80)), shiftLeft(1, and(reg, 0x0f), ref("IRQM"))),
      ret(ref("RTMP"))),
    method("_SRS", { args: 1, serialized: true },
      createWordField(arg(0), 1, "IRQM"),
      findSetRightBit(ref("IRQM"), local(0)),
      ifThen(local(0), decrement(local(0)), store(local(0), reg)),
      elseOf(or(reg, 0x80, reg))),
  );
}

/** _PRT packages for the populated slots: PIC form (source = link device) and APIC form (GSI). */
export function prtEntries(p: PlatformDescription): { pic: Uint8Array[]; apic: Uint8Array[] } {
  const pic: Uint8Array[] = [], apic: Uint8Array[] = [];
  for (const s of [...p.pci.slots].sort((a, b) => a.slot - b.slot)) {
    if (!Number.isInteger(s.slot) || s.slot < 0 || s.slot > 31) throw new RangeError(`PCI slot ${s.slot} out of range`);
    for (const pin of [...new Set(s.pins)].sort()) {
      if (![1, 2, 3, 4].includes(pin)) throw new RangeError(`slot ${s.slot}: INTx pin ${pin} must be 1-4`);
      const addr = ((s.slot << 16) | 0xffff) >>> 0;
      const pirq = pirqOf(s.slot, pin);
      pic.push(pkg(addr, pin - 1, nameString(`\\_SB.${LINKS[pirq]}`), 0));
      apic.push(pkg(addr, pin - 1, 0, p.pci.ioapicPirqBase + pirq));
    }
  }
  return { pic, apic };
}

function rootBridgeCrs(p: PlatformDescription): Uint8Array {
  const { pci } = p;
  const r: Uint8Array[] = [
    wordBusNumber(pci.busStart, pci.busEnd),
    io(0xcf8, 0xcf8, 1, 8), // the configuration mechanism #1 ports the bridge itself consumes
    ...pci.io.map((w) => dwordIo(w.base, w.limit)),
    dwordMemory(pci.mem32.base, pci.mem32.base + pci.mem32.size - 1),
  ];
  if (pci.mem64) r.push(qwordMemory(pci.mem64.base, BigInt(pci.mem64.base) + BigInt(pci.mem64.size) - 1n));
  return resourceTemplate(r);
}

function isaBridge(p: PlatformDescription): Uint8Array {
  const devs: Uint8Array[] = [
    fixedDevice("PIC", "PNP0000", undefined, [io(0x20, 0x20, 1, 2), io(0xa0, 0xa0, 1, 2), io(0x4d0, 0x4d0, 1, 2), irqNoFlags([2])]),
    fixedDevice("TIMR", "PNP0100", undefined, [io(0x40, 0x40, 1, 4), irqNoFlags([0])]),
    fixedDevice("RTC", "PNP0B00", undefined, [io(p.rtc.port, p.rtc.port, 1, 2), irqNoFlags([p.rtc.irq])]),
  ];
  if (p.keyboard) {
    const k = p.keyboard;
    devs.push(fixedDevice("KBD", "PNP0303", undefined, [io(k.data, k.data, 1, 1), io(k.command, k.command, 1, 1), irqNoFlags([k.irq])], STA_ON));
  }
  p.com.forEach((c, i) => {
    if (c) devs.push(fixedDevice(`COM${i + 1}`, "PNP0501", i + 1, [io(c.port, c.port, 1, 8), irqNoFlags([c.irq])], STA_ON));
  });
  const pmLen = 64;
  devs.push(fixedDevice("SYSR", "PNP0C02", 1, [
    io(p.pm.base, p.pm.base, 1, pmLen),
    ...p.sysIo.map((s) => io(s.port, s.port, 1, s.length)),
  ]));
  if (p.fwCfg) devs.push(fixedDevice("FWCF", "QEMU0002", undefined, [io(p.fwCfg.port, p.fwCfg.port, 1, p.fwCfg.length)], 0x0b));
  const fieldUnits = [
    ...PIRQ_FIELDS.slice(0, 4).map((n) => ({ name: n, bits: 8 })),
    { offset: 8 },
    ...PIRQ_FIELDS.slice(4).map((n) => ({ name: n, bits: 8 })),
  ];
  return device("ISA",
    name("_ADR", ((p.isa.slot << 16) | p.isa.fn) >>> 0),
    opRegion("PIRQ", RegionSpace.PCI_Config, 0x60, 0x0c),
    field("PIRQ", { access: FieldAccess.Byte }, ...fieldUnits),
    ...devs);
}

/** The DSDT's AML body (everything after the 36-byte header). */
export function dsdtBody(p: PlatformDescription): Uint8Array {
  const prt = prtEntries(p);
  const sb: Uint8Array[] = [
    ...LINKS.map((_, i) => linkDevice(i, p.isa.pirqIsaMask)),
    device("PCI0",
      name("_HID", eisaId("PNP0A03")),
      name("_UID", 0),
      name("_BBN", p.pci.busStart),
      name("_CRS", rootBridgeCrs(p)),
      name("PPRT", pkg(...prt.pic)),
      name("APRT", pkg(...prt.apic)),
      method("_PRT", {}, ifThen(ref("\\PICM"), ret(ref("APRT"))), ret(ref("PPRT"))),
      isaBridge(p),
      ...(p.extra?.pci0 ?? [])),
  ];
  if (p.hpet) sb.push(fixedDevice("HPET", "PNP0103", 0, [memory32Fixed(p.hpet.base, 0x400, false)], STA_ON));
  sb.push(fixedDevice("MRES", "PNP0C02", 2, [memory32Fixed(p.pci.ecam.base, p.pci.ecam.size, false)]));
  return cat(
    name("\\_S0", pkg(0, 0, 0, 0)),
    name("\\_S5", pkg(p.slpTypS5, p.slpTypS5, 0, 0)),
    name("\\PICM", 0),
    method("\\_PIC", { args: 1 }, store(arg(0), ref("\\PICM"))),
    scope("\\_SB", ...sb),
    ...(p.extra?.root ?? []),
  );
}

/** The complete DSDT (revision 2: 64-bit integers). */
export function buildDsdt(p: PlatformDescription): Uint8Array {
  return sdt("DSDT", 2, dsdtBody(p));
}


