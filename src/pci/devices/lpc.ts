/**
 * `lpc`: the chipset's ISA side, two functions in the lpc's slot.
 *
 * Function 0 — PIIX3 PCI-to-ISA bridge, 8086:7000, class 06/01 (82371SB datasheet), multi-function.
 *   PIRQ route registers (bhyve's 8-link layout, ICH-style): 0x60-0x63 = PIRQA-D, 0x68-0x6B = PIRQE-H.
 *   bit 7 = routing disabled, bits 3:0 = ISA IRQ. Power-on 0x80 (disabled). A write that enables routing
 *   to an IRQ outside IRQ.pirqIsaMask is ignored (the register keeps its value). A change re-steers the
 *   PIRQ's level at once (src/pci/intx.ts).
 *
 * Function 3 — PIIX4 power management function, 8086:7113, class 06/80 (82371AB datasheet §"PCI
 *   configuration registers — power management function"):
 *     0x40 PMBA       bits 15:6 = base of the 64-byte PM I/O space, bit 0 hardwired 1 (I/O)
 *     0x80 PMREGMISC  bit 0 PMIOSE = PM I/O space enable
 *     0x90 SMBBA      SMBus base (stored; no SMBus controller is emulated), 0xD2 SMBHSTCFG (stored)
 *   PMBA/PMREGMISC drive the shared PM base (src/devices/acpi-pm.ts sharedPmBase), which the ACPI PM1
 *   block and the PM timer follow on every thread's bus. A base of 0 does not decode.
 *
 *   Power-on: without a boot ROM (direct kernel boot, nothing will program the chipset) PMBA = 0x601 and
 *   PMIOSE = 1, so the block is at PORTS.pmBase as the FADT says. With a boot ROM the datasheet's reset
 *   values (PMBA = 0x0001, PMIOSE = 0): firmware programs it — stock OVMF writes 0xB001 / 1 and assumes
 *   0xB000 later (its ResetSystemLib hard-codes PIIX4_PMBA_VALUE), so it must find PMIOSE clear.
 *
 * OVMF looks for these at fixed addresses: the PIRQ registers at 00:01.0 and the PM function at 00:01.3.
 * Put lpc at slot 1 for OVMF; elsewhere (bhyve's habit, slot 31) both functions follow the lpc's slot.
 */
import { sharedPmBase } from "../../devices/acpi-pm.ts";
import { IRQ, PORTS } from "../../platform/map.ts";
import { PciFunction, type PciFunctionSpec } from "../function.ts";
import { PIRQ_ROUTE, pirqRouteAcceptable } from "../intx.ts";
import { pciregOverrides } from "../pcireg.ts";
import type { PciEmulation } from "../registry-types.ts";

export const PIIX3_ISA = { vendor: 0x8086, device: 0x7000, classCode: 0x06_01_00 } as const;
export const PIIX4_PM = {
  vendor: 0x8086, device: 0x7113, revision: 0x03, classCode: 0x06_80_00,
  /** function number of the PM function in the lpc's slot */
  FN: 3,
  PMBA: 0x40, PMBA_IO: 0x1, PMBA_MASK: 0xffc0, SIZE: 64,
  PMREGMISC: 0x80, PMIOSE: 0x1,
  SMBBA: 0x90, SMBHSTCFG: 0xd2,
} as const;

/** Config offset of PIRQ p's route register (p = 0..7 for PIRQA..H). */
export function pirqRouteOffset(p: number): number {
  return p < 4 ? 0x60 + p : 0x68 + (p - 4);
}

export const lpc: PciEmulation = {
  doc: "PIIX3 ISA bridge 8086:7000 (PIRQ routing) + PIIX4 PM function 8086:7113 at function 3 (PMBA moves the ACPI PM block)",
  describe(addr) {
    if (addr.fn === PIIX4_PM.FN) throw new Error(`pci.${addr.bus}.${addr.slot}.${addr.fn}: lpc cannot be at function ${PIIX4_PM.FN} (its PM function lives there)`);
    return [
      { addr, intPin: 0, model: "PIIX3 ISA" },
      { addr: { ...addr, fn: PIIX4_PM.FN }, intPin: 0, model: "PIIX4 PM" },
    ];
  },
  create(inp) {
    const where = `pci.${inp.addr.bus}.${inp.addr.slot}.${inp.addr.fn}`;
    const router = inp.router;
    const routeRegs = Array.from({ length: IRQ.pirqCount }, (_, p) => ({ offset: pirqRouteOffset(p), size: 1 as const, value: PIRQ_ROUTE.POWER_ON, wmask: PIRQ_ROUTE.STORED }));
    const isa: PciFunctionSpec = {
      model: "PIIX3 ISA", ...PIIX3_ISA, regs: routeRegs,
      configWritten(fn, offset, size, old) {
        for (let p = 0; p < IRQ.pirqCount; p++) {
          const o = pirqRouteOffset(p);
          if (o < offset || o >= offset + size) continue;
          const before = (old >>> (8 * (o - offset))) & 0xff;
          const now = fn.c8(o);
          if (!pirqRouteAcceptable(now)) fn.set8(o, before);
          else if (now !== before) router.setRoute(p, now);
        }
      },
      powerOn() { for (let p = 0; p < IRQ.pirqCount; p++) router.powerOnRoute(p, PIRQ_ROUTE.POWER_ON); },
    };

    const pmBase = sharedPmBase(inp.ctx.arena, PORTS.pmBase);
    const firmware = inp.cfg.bootrom !== undefined;
    const follow = (fn: PciFunction): void => {
      const base = fn.c32(PIIX4_PM.PMBA) & PIIX4_PM.PMBA_MASK;
      pmBase.set(fn.c8(PIIX4_PM.PMREGMISC) & PIIX4_PM.PMIOSE && base ? base : undefined);
    };
    const pm: PciFunctionSpec = {
      model: "PIIX4 PM", vendor: PIIX4_PM.vendor, device: PIIX4_PM.device, revision: PIIX4_PM.revision, classCode: PIIX4_PM.classCode,
      regs: [
        { offset: PIIX4_PM.PMBA, size: 4, value: (firmware ? 0 : PORTS.pmBase) | PIIX4_PM.PMBA_IO, wmask: PIIX4_PM.PMBA_MASK },
        { offset: PIIX4_PM.PMREGMISC, size: 1, value: firmware ? 0 : PIIX4_PM.PMIOSE, wmask: PIIX4_PM.PMIOSE },
        { offset: PIIX4_PM.SMBBA, size: 4, value: 1, wmask: 0xfff0 },
        { offset: PIIX4_PM.SMBHSTCFG, size: 1, value: 0, wmask: 0x0f },
      ],
      configWritten(fn, offset, size) {
        const hit = (o: number, n: number) => offset < o + n && o < offset + size;
        if (hit(PIIX4_PM.PMBA, 4) || hit(PIIX4_PM.PMREGMISC, 1)) follow(fn);
      },
      powerOn: follow,
    };
    return [
      new PciFunction(inp.ctx, inp.addr, { ...isa, ...pciregOverrides(where, inp.table) }, inp),
      new PciFunction(inp.ctx, { ...inp.addr, fn: PIIX4_PM.FN }, pm, inp),
    ];
  },
};
