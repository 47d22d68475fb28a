/**
 * The device table: every device tsbhyve can build, with the rule that decides (from the config)
 * whether and how it exists. Read top to bottom, this is the machine's inventory. The order fixes each
 * device's block in the shared state buffer, so it must be the same in every thread (it is: same table,
 * same config).
 */
import type { VmConfig } from "../config/types.ts";
import type { Device, DeviceContext } from "../devices/device.ts";
import { createAcpiPm, sharedPmBase } from "../devices/acpi-pm.ts";
import { createPciDevices } from "../pci/index.ts";
import { createI8042 } from "../devices/i8042.ts";
import { createPost } from "../devices/post.ts";
import { createReset } from "../devices/reset.ts";
import { createTestdev } from "../devices/testdev.ts";
import { createFwCfg } from "../fwcfg/device.ts";
import { createHpet } from "../devices/hpet.ts";
import { createPmTimer } from "../devices/pmtimer.ts";
import { createRtc } from "../devices/rtc.ts";
import { COM_PORTS, createUart } from "../devices/uart16550.ts";
import { IRQ, PORTS } from "../platform/map.ts";
import type { Prepared } from "./prepare.ts";
import { acpiRefresher, PIIX4_SLP_TYP_S5 } from "./describe.ts";


export interface DeviceEntry {
  readonly name: string;
  readonly doc: string;
  create(ctx: DeviceContext, cfg: VmConfig, prepared: Prepared): Device[];
}

export const DEVICE_TABLE: readonly DeviceEntry[] = [
  {
    name: "uart", doc: "16550A UARTs com1-com4 at 0x3f8/0x2f8/0x3e8/0x2e8, IRQ 4/3/4/3 (lpc.comN.path)",
    create: (ctx, cfg, prep) => COM_PORTS.flatMap((p, i) =>
      cfg.com[i] ? [createUart(ctx, { name: p.name, base: p.base, gsi: p.irq, chardev: prep.com[i] })] : []),
  },
  {
    name: "acpi-pm", doc: "ACPI PM1 event/control blocks: S5 power-off, power button, SCI",
    create: (ctx) => [createAcpiPm(ctx, { base: PORTS.pmBase, sciGsi: IRQ.sci, s5SlpTyp: PIIX4_SLP_TYP_S5, follow: sharedPmBase(ctx.arena, PORTS.pmBase) })],
  },
  {
    name: "timers", doc: "HPET at 0xFED00000 (3 timers, 100 MHz), ACPI PM timer at PM base + 8, RTC/CMOS 0x70-0x73 on IRQ 8",
    create: (ctx, cfg) => {
      const hpet = createHpet(ctx);
      const pb = sharedPmBase(ctx.arena, PORTS.pmBase); // follows PIIX4 PMBA when firmware moves it
      return [
        hpet,
        createPmTimer(ctx, { base: pb.current, mapGeneration: pb.gen }),
        createRtc(ctx, { localtime: cfg.rtcLocaltime, ramSize: cfg.memory.size, cpus: cfg.cpus, irq8Taken: () => hpet.legacyActive() }),
      ];
    },
  },
  { name: "pci", doc: "PCI: config mechanism #1 (0xCF8/0xCFC), ECAM at 0xE0000000, the pci.B.S.F functions", create: (ctx, cfg, prep) => createPciDevices(ctx, cfg, prep) },
  { name: "reset", doc: "reset control 0xCF9 and port 0x92", create: (ctx) => [createReset(ctx)] },
  { name: "i8042", doc: "minimal i8042 keyboard controller (0x60/0x64): reset line, keyboard probe answers", create: (ctx) => [createI8042(ctx)] },
  { name: "post", doc: "POST code port 0x80 and the 0x402 debug console", create: (ctx) => [createPost(ctx)] },
  {
    name: "fwcfg", doc: "QEMU fw_cfg 0x510/0x511 + DMA 0x514: e820, ACPI table-loader, SMBIOS, bootorder, hw.ncpu, user files",
    create: (ctx, cfg, prep) => {
      const pb = sharedPmBase(ctx.arena, PORTS.pmBase);
      return [createFwCfg(ctx, prep.fwcfg, { onSelect: acpiRefresher(cfg, () => pb.current() ?? PORTS.pmBase) })];
    },
  },
  {
    name: "pc-testdev", doc: "test device for payload tests: 0xE0 counter, 0xF4 exit (lpc.pc-testdev)",
    create: (ctx, cfg) => (cfg.pcTestdev ? [createTestdev(ctx)] : []),
  },
];
