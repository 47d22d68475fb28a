/**
 * vCPU set-up (CPUID, MSRs, which vCPUs start) and guest loading (direct Linux boot or boot ROM),
 * done on the main thread before the Workers start.
 */
import type { VmConfig } from "../config/types.ts";
import type { GuestMemory } from "../mem/guest-memory.ts";
import type { VmHandle } from "../vmm/index.ts";

export function setupVcpus(vm: VmHandle, cfg: VmConfig): void {
  const supported = vm.supportedCpuid();
  for (let i = 0; i < cfg.cpus; i++) {
    vm.createVcpu(i);
    vm.vcpu(i).setCpuid(supported);
  }
}

export async function loadGuest(vm: VmHandle, cfg: VmConfig, mem: GuestMemory, log: (m: string) => void): Promise<void> {
  void vm; void mem; void log;
  if (cfg.bootrom) return; // the BSP starts at the reset vector; APs wait for INIT/SIPI
  throw new Error("no kernel loader yet");
}
