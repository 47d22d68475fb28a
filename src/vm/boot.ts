/**
 * vCPU set-up (CPUID with the configured topology, initial MSRs) and guest loading, done on the main
 * thread before the Workers start:
 *   - boot ROM: the BSP starts at the reset vector in real mode; APs wait for INIT/SIPI.
 *   - [boot] kernel: platform tables (MP table, ACPI) in the BIOS area, then the Linux boot protocol
 *     (bzImage, initrd, command line, e820) with the BSP entering the 64-bit kernel directly.
 */
import type { VmConfig } from "../config/types.ts";
import { writeAcpi } from "../acpi/tables.ts";
import { buildE820 } from "../loader/e820.ts";
import { formatLinuxBoot, loadLinux } from "../loader/linux.ts";
import { writeMptable } from "../loader/mptable.ts";
import type { GuestMemory } from "../mem/guest-memory.ts";
import { buildCpuid, type Topology } from "../vcpu/cpuid.ts";
import { initialMsrs } from "../vcpu/msr.ts";
import type { VmHandle } from "../vmm/index.ts";
import { ramLayout } from "../mem/guest-memory.ts";
import { buildSmbios, writeSmbios } from "../smbios/smbios.ts";
import { acpiFor, apicIds } from "./describe.ts";

const topology = (cfg: VmConfig): Topology => ({ sockets: cfg.sockets, cores: cfg.cores, threads: cfg.threads });

export function setupVcpus(vm: VmHandle, cfg: VmConfig): void {
  const supported = vm.supportedCpuid();
  const topo = topology(cfg);
  for (let i = 0; i < cfg.cpus; i++) {
    vm.createVcpu(i);
    const v = vm.vcpu(i);
    v.setCpuid(buildCpuid(supported, i, topo));
    v.setMsrs(initialMsrs(i));
  }
}

/** Platform tables for a guest without firmware: MP table, SMBIOS, ACPI. Returns the RSDP address. */
export function writePlatformTables(cfg: VmConfig, mem: GuestMemory): number | undefined {
  if (cfg.x86.mptable) writeMptable(mem, { cpus: cfg.cpus, apicIds: apicIds(cfg) });
  writeSmbios(mem, buildSmbios(cfg, ramLayout(cfg.memory.size)));
  return cfg.acpiTables ? writeAcpi(mem, acpiFor(cfg)) : undefined;
}

export async function loadGuest(vm: VmHandle, cfg: VmConfig, mem: GuestMemory, log: (m: string) => void): Promise<void> {
  if (cfg.bootrom) return; // reset state: the ROM's reset vector runs first
  if (!cfg.boot) throw new Error("nothing to boot: set lpc.bootrom or [boot] kernel");
  const rsdp = writePlatformTables(cfg, mem);
  const kernel = new Uint8Array(await Bun.file(cfg.boot.kernel).arrayBuffer());
  const initrd = cfg.boot.initrd ? new Uint8Array(await Bun.file(cfg.boot.initrd).arrayBuffer()) : undefined;
  const boot = loadLinux(mem, kernel, initrd, cfg.boot.cmdline, { e820: buildE820(mem.ramSize), ...(rsdp !== undefined ? { rsdp } : {}) });
  const bsp = vm.vcpu(0);
  bsp.setSregs(boot.sregs(bsp.getSregs()));
  bsp.setRegs(boot.regs);
  if (process.env.TSBHYVE_TRACE) log(formatLinuxBoot(boot.summary));
}
