/**
 * Byte layouts of the structs in ffi/tsb.h, mirrored for TypeScript. Change both together.
 */

/** struct tsb_exit (one page per vCPU, read in place). */
export const EXIT = {
  reason: 0, size: 4, dir: 8, count: 12, addr: 16, detail: 24, rip: 32, dataLen: 40, exits: 48, data: 64,
  bytes: 64 + 4096,
} as const;

/** enum tsb_exit_reason */
export const ExitReason = {
  NONE: 0, IO: 1, MMIO: 2, HLT: 3, SHUTDOWN: 4, RESET: 5, POWEROFF: 6, INTR: 7, INTERNAL: 8,
  FAIL_ENTRY: 9, DEBUG: 10, UNKNOWN: 11, ERROR: 12,
} as const;
export const EXIT_REASON_NAMES = Object.fromEntries(Object.entries(ExitReason).map(([k, v]) => [v, k])) as Record<number, string>;

export const DIR_READ = 0;
export const DIR_WRITE = 1;

/** struct tsb_regs: 18 u64 in this order. */
export const GPR_NAMES = [
  "rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rsp", "rbp",
  "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15", "rip", "rflags",
] as const;
export type GprName = (typeof GPR_NAMES)[number];
export type Regs = Record<GprName, bigint>;

/** struct tsb_seg (24 bytes) */
export interface Segment {
  base: bigint; limit: number; selector: number; type: number; present: number; dpl: number;
  db: number; s: number; l: number; g: number; avl: number; unusable: number;
}
export interface DTable { base: bigint; limit: number }
export const SEG_NAMES = ["cs", "ds", "es", "fs", "gs", "ss", "tr", "ldt"] as const;
export type SegName = (typeof SEG_NAMES)[number];
export type Sregs = Record<SegName, Segment> & {
  gdt: DTable; idt: DTable;
  cr0: bigint; cr2: bigint; cr3: bigint; cr4: bigint; cr8: bigint; efer: bigint; apicBase: bigint;
};
export const SREGS_BYTES = 280;
const SEG_BYTES = 24;
const CR_NAMES = ["cr0", "cr2", "cr3", "cr4", "cr8", "efer", "apicBase"] as const;

export function decodeSregs(b: Uint8Array): Sregs {
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const out: Record<string, unknown> = {};
  SEG_NAMES.forEach((n, i) => {
    const o = i * SEG_BYTES;
    out[n] = {
      base: v.getBigUint64(o, true), limit: v.getUint32(o + 8, true), selector: v.getUint16(o + 12, true),
      type: v.getUint8(o + 14), present: v.getUint8(o + 15), dpl: v.getUint8(o + 16), db: v.getUint8(o + 17),
      s: v.getUint8(o + 18), l: v.getUint8(o + 19), g: v.getUint8(o + 20), avl: v.getUint8(o + 21),
      unusable: v.getUint8(o + 22),
    } satisfies Segment;
  });
  out.gdt = { base: v.getBigUint64(192, true), limit: v.getUint16(200, true) };
  out.idt = { base: v.getBigUint64(208, true), limit: v.getUint16(216, true) };
  CR_NAMES.forEach((n, i) => (out[n] = v.getBigUint64(224 + 8 * i, true)));
  return out as Sregs;
}

export function encodeSregs(s: Sregs): Uint8Array {
  const b = new Uint8Array(SREGS_BYTES);
  const v = new DataView(b.buffer);
  SEG_NAMES.forEach((n, i) => {
    const o = i * SEG_BYTES;
    const g = s[n];
    v.setBigUint64(o, g.base, true); v.setUint32(o + 8, g.limit >>> 0, true); v.setUint16(o + 12, g.selector, true);
    v.setUint8(o + 14, g.type); v.setUint8(o + 15, g.present); v.setUint8(o + 16, g.dpl); v.setUint8(o + 17, g.db);
    v.setUint8(o + 18, g.s); v.setUint8(o + 19, g.l); v.setUint8(o + 20, g.g); v.setUint8(o + 21, g.avl);
    v.setUint8(o + 22, g.unusable);
  });
  v.setBigUint64(192, s.gdt.base, true); v.setUint16(200, s.gdt.limit, true);
  v.setBigUint64(208, s.idt.base, true); v.setUint16(216, s.idt.limit, true);
  CR_NAMES.forEach((n, i) => v.setBigUint64(224 + 8 * i, s[n], true));
  return b;
}

/** struct tsb_cpuid_entry (28 bytes) */
export interface CpuidEntry { function: number; index: number; flags: number; eax: number; ebx: number; ecx: number; edx: number }
export const CPUID_ENTRY_BYTES = 28;
export const CPUID_FLAG_INDEXED = 1;

/** TSB_CAP_* */
export const Cap = {
  IRQCHIP: 1 << 0, PIT: 1 << 1, IOEVENTFD: 1 << 2, IRQFD: 1 << 3, MSI: 1 << 4, HPET: 1 << 5, RTC: 1 << 6,
  PMTMR: 1 << 7, READONLY_MEM: 1 << 8, IMMEDIATE_EXIT: 1 << 9,
} as const;

export const MEM_READONLY = 1;
export const MEM_WIRED = 2;
