/**
 * The platform as the tables describe it (ACPI DSDT/FADT/MADT..., fw_cfg's ACPI files), derived from the
 * config in one place so the direct-boot copy in guest memory and the firmware copy agree.
 */
import { buildAcpi, type Acpi } from "../acpi/tables.ts";
import { buildTableLoader, FW_CFG_ACPI_RSDP, FW_CFG_ACPI_TABLES, FW_CFG_TABLE_LOADER } from "../acpi/loader.ts";
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

/** `pmBase`: where the PIIX4 PM block is now (firmware moves it: OVMF to 0xB000, SeaBIOS to 0x600). */
export function describeVm(cfg: VmConfig, pmBase: number = PORTS.pmBase): PlatformDescription {
  const p = describePlatform({
    cpus: cfg.cpus, apicIds: apicIds(cfg), ramSize: cfg.memory.size, com: cfg.com.map(Boolean),
    pmBase, century: RTC_CENTURY_INDEX, hpetCapabilities: HPET_CAPABILITIES,
  });
  // PIIX4 convention (and what stock OVMF writes on shutdown): SLP_TYP 0 is soft-off.
  return { ...p, slpTypS5: PIIX4_SLP_TYP_S5 };
}

export function acpiFor(cfg: VmConfig, pmBase?: number): Acpi {
  return buildAcpi(describeVm(cfg, pmBase));
}

/** The fw_cfg ACPI files (QEMU's table-loader set) for a PM base. */
export function acpiFwCfgFiles(cfg: VmConfig, pmBase?: number): { name: string; data: Uint8Array }[] {
  const l = buildTableLoader(acpiFor(cfg, pmBase).set);
  return [{ name: FW_CFG_ACPI_TABLES, data: l.tables }, { name: FW_CFG_ACPI_RSDP, data: l.rsdp }, { name: FW_CFG_TABLE_LOADER, data: l.loader }];
}

/**
 * fw_cfg onSelect hook: firmware programs the PIIX4 PMBA before it reads the ACPI files (OVMF moves the
 * block to 0xB000, SeaBIOS to 0x600), so the tables are rebuilt for the PM base in force when it selects
 * them. Sizes do not depend on the base, so the shared bytes are rewritten in place.
 */
export function acpiRefresher(cfg: VmConfig, pmBase: () => number): (name: string, data: Uint8Array) => void {
  let cached: { base: number; files: Map<string, Uint8Array> } | undefined;
  return (name, data) => {
    if (name !== FW_CFG_ACPI_TABLES && name !== FW_CFG_ACPI_RSDP && name !== FW_CFG_TABLE_LOADER) return;
    const base = pmBase();
    if (cached?.base !== base) cached = { base, files: new Map(acpiFwCfgFiles(cfg, base).map((f) => [f.name, f.data])) };
    const fresh = cached.files.get(name)!;
    if (fresh.length === data.length) data.set(fresh);
  };
}
