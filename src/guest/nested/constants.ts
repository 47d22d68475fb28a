/**
 * Every tunable of the nested runner in one place: the QEMU that runs L1, L1's shape, timeouts, modules,
 * 9p options, the L1 kernel command line, where job directories go. Environment overrides are read here only.
 * Used by `tsbhyve demo` on hosts whose /dev/kvm cannot run a stock kernel, and by the tier 3 test harness
 * (test/harness/). See shared/design/testing.md for where the numbers come from.
 */
import { join } from "node:path";

const env = (k: string) => process.env[k];
const envInt = (k: string, d: number) => {
  const v = env(k);
  return v !== undefined && /^\d+$/.test(v) ? Number(v) : d;
};

/** The QEMU that runs L1 (TCG, -cpu max exposes emulated SVM + NPT). */
export const QEMU = env("TSB_QEMU") ?? "qemu-system-x86_64";
/** The Debian package that provides QEMU (named in errors). */
export const QEMU_PACKAGE = "qemu-system-x86";

/** L1 machine shape. */
export const L1_MEM_MIB = envInt("TSB_L1_MEM_MIB", 2048);
export const L1_SMP = envInt("TSB_L1_SMP", 2);

/** Timeouts, in ms unless named otherwise (the batch harness; an interactive demo has none). */
export const TIMEOUTS = {
  /** Whole attempt (QEMU start → QEMU exit), host side, SIGKILL after. */
  attemptMs: envInt("TSB_NESTED_TIMEOUT_MS", 240_000),
  /** No serial output for this long = hung (L2 boots with `quiet` are silent for ≈ 25 s; be generous). */
  idleMs: envInt("TSB_NESTED_IDLE_MS", 120_000),
  /** L1 boot budget (QEMU start → TSB-JOB-START); measured ≈ 7 s. */
  bootMs: envInt("TSB_NESTED_BOOT_MS", 90_000),
  /** Slack kept between the in-L1 job timeout and the host attempt timeout, for boot and poweroff. */
  jobSlackMs: 45_000,
  /** After QEMU is killed, how long to wait for it to go away. */
  killGraceMs: 5_000,
} as const;

/** Retries after a hang (idle / overall timeout / boot timeout). testing.md: retry once, report it. */
export const HANG_RETRIES = envInt("TSB_NESTED_RETRIES", 1);

/** Kernel modules L1 loads before the job (dependencies resolved from .modinfo). */
export const L1_MODULES = [
  "virtio_pci",
  "9pnet_virtio",
  "9p",
  "overlay",
  "kvm_amd",
  "tun",
  "veth",
  "bridge",
] as const;

/** 9p mount options for the read-only host root. */
export const HOSTROOT_9P_OPTS = "trans=virtio,version=9p2000.L,msize=512000,ro,cache=loose";
/** 9p mount options for the writable job directory (no caching: files must reach the host before poweroff). */
export const JOBDIR_9P_OPTS = "trans=virtio,version=9p2000.L,msize=512000";

/** L1 kernel command line (job parameters are appended by the runner). */
export const L1_CMDLINE = env("TSB_L1_CMDLINE") ?? "console=ttyS0 quiet loglevel=3 panic=-1 mitigations=off";

/** Where job directories are created on the host (they appear at the same path inside L1). */
export const JOB_ROOT = env("TSB_NESTED_JOB_ROOT") ?? "/tmp";

/** True inside the compiled dist/tsbhyve (scripts/build.ts defines this at build time). */
export const COMPILED = process.env.TSBHYVE_COMPILED === "1";

/**
 * The tsbhyve executable to run inside L1: this very binary when compiled; dist/tsbhyve of the checkout
 * when running from source (L1 has no Bun of its own for the demo; the compiled binary is self-contained).
 * The host root is shared into L1 at the same paths, so a host path works unchanged there.
 */
export function tsbhyveBinary(): string {
  if (COMPILED) return process.execPath;
  return join(import.meta.dir, "..", "..", "..", "dist", "tsbhyve");
}
