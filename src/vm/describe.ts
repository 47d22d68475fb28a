/**
 * The platform as the tables describe it (ACPI DSDT/FADT/MADT..., fw_cfg's ACPI files), derived from the
 * config in one place so the direct-boot copy in guest memory and the firmware copy agree.
 */
import { buildAcpi, type Acpi } from "../acpi/tables.ts";
import { describePlatform, type PlatformDescription } from "../acpi/platform.ts";
import type { VmConfig } from "../config/types.ts";
import { apicId } from "../vcpu/cpuid.ts";
import { PORTS } from "../platform/map.ts";
import { HPET_CAPABILITIES } from "../devices/hpet.ts";
import { RTC_CENTURY_INDEX } from "../devices/rtc.ts";

/** SLP_TYP of S5 on a PIIX4 (datasheet: SUS_TYP 000 = soft off); OVMF's ResetShutdown writes it too. */
export const PIIX4_SLP_TYP_S5 = 0;

export function apicIds(cfg: VmConfig): number[] {
  const topo = { sockets: cfg.sockets, cores: cfg.cores, threads: cfg.threads };
  return Array.from({ length: cfg.cpus }, (_, i) => apicId(i, topo));
}

export function describeVm(cfg: VmConfig): PlatformDescription {
  const p = describePlatform({
    cpus: cfg.cpus, apicIds: apicIds(cfg), ramSize: cfg.memory.size, com: cfg.com.map(Boolean),
    pmBase: PORTS.pmBase, century: RTC_CENTURY_INDEX, hpetCapabilities: HPET_CAPABILITIES,
  });
  // PIIX4 convention (and what stock OVMF writes on shutdown): SLP_TYP 0 is soft-off.
  return { ...p, slpTypS5: PIIX4_SLP_TYP_S5 };
}

export function acpiFor(cfg: VmConfig): Acpi {
  return buildAcpi(describeVm(cfg));
}
