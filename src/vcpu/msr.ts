/**
 * MSR values a vCPU starts with, as data (Intel SDM vol. 4 "Model-Specific Registers", vol. 3A
 * §11.11 "Memory Type Range Registers"). What firmware would normally program at power-on, so a
 * directly booted kernel finds a sane machine; firmware that reprograms them (OVMF does) just
 * overwrites these. IA32_APIC_BASE is not here: the backend's in-kernel APIC sets it (BSP flag
 * included). Every vCPU gets the same values; the index parameter is for future per-CPU entries.
 */

export const MSR = {
  IA32_TSC: 0x10,
  IA32_MISC_ENABLE: 0x1a0,
  IA32_MTRR_DEF_TYPE: 0x2ff,
  IA32_MTRR_FIX64K_00000: 0x250,
  IA32_MTRR_FIX16K_80000: 0x258,
  IA32_MTRR_FIX16K_A0000: 0x259,
  IA32_MTRR_FIX4K_C0000: 0x268, // 0x268..0x26F: 4 KiB ranges from 0xC0000 to 0xFFFFF
} as const;

export const MISC_ENABLE = {
  /** bit 0: fast-strings enable (REP MOVS/STOS fast path). */
  FAST_STRINGS: 1n << 0n,
  /** bit 11: branch trace storage unavailable (read-only on hardware). */
  BTS_UNAVAILABLE: 1n << 11n,
  /** bit 12: processor event-based sampling unavailable. */
  PEBS_UNAVAILABLE: 1n << 12n,
} as const;

/** Memory types (SDM Table 11-8). */
export const MEM_TYPE = { UC: 0n, WC: 1n, WT: 4n, WP: 5n, WB: 6n } as const;

export const MTRR_DEF_TYPE = {
  /** bit 11: MTRRs enabled. */
  E: 1n << 11n,
  /** bit 10: fixed-range MTRRs enabled. */
  FE: 1n << 10n,
} as const;

/** A fixed-range MTRR: 8 ranges, one memory-type byte each. */
function fixed(type: bigint): bigint {
  let v = 0n;
  for (let i = 0n; i < 8n; i++) v |= type << (8n * i);
  return v;
}

/**
 * Initial MSRs: [index, value] pairs in the order they should be written.
 *  - IA32_TSC: 0 on every vCPU (synchronized TSCs).
 *  - IA32_MISC_ENABLE: fast strings on; BTS/PEBS reported unavailable (not virtualized).
 *  - MTRRs: default type write-back with MTRRs and fixed ranges enabled (0xC06), so all RAM is
 *    cacheable (Linux trims RAM an MTRR leaves uncached). Fixed ranges: 0–0x9FFFF WB (RAM),
 *    0xA0000–0xBFFFF UC (legacy VGA window), 0xC0000–0xFFFFF WB (option ROM / BIOS area, RAM here).
 *    No variable ranges; MMIO above RAM gets its uncached type from the guest's page attributes.
 */
export function initialMsrs(_vcpu: number): [number, bigint][] {
  const msrs: [number, bigint][] = [
    // Every vCPU's TSC starts at 0 together: the kernel treats near-simultaneous writes as one clock
    // and keeps the vCPUs' TSCs synchronized (otherwise guests mark the TSC unstable and kvm-clock's
    // cross-CPU monotonicity clamp can stall guest time).
    [MSR.IA32_TSC, 0n],
    [MSR.IA32_MISC_ENABLE, MISC_ENABLE.FAST_STRINGS | MISC_ENABLE.BTS_UNAVAILABLE | MISC_ENABLE.PEBS_UNAVAILABLE],
    [MSR.IA32_MTRR_FIX64K_00000, fixed(MEM_TYPE.WB)],
    [MSR.IA32_MTRR_FIX16K_80000, fixed(MEM_TYPE.WB)],
    [MSR.IA32_MTRR_FIX16K_A0000, fixed(MEM_TYPE.UC)],
  ];
  for (let i = 0; i < 8; i++) msrs.push([MSR.IA32_MTRR_FIX4K_C0000 + i, fixed(MEM_TYPE.WB)]);
  msrs.push([MSR.IA32_MTRR_DEF_TYPE, MTRR_DEF_TYPE.E | MTRR_DEF_TYPE.FE | MEM_TYPE.WB]);
  return msrs;
}
