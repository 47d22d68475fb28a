/**
 * Every tunable of the nested (tier 3) harness in one place: paths, machine shape, timeouts, modules.
 * See shared/design/testing.md for where the numbers come from. Environment overrides are read here only.
 */
import { existsSync, realpathSync, readdirSync } from "node:fs";
import { join } from "node:path";

const env = (k: string) => process.env[k];
const envInt = (k: string, d: number) => {
  const v = env(k);
  return v !== undefined && /^\d+$/.test(v) ? Number(v) : d;
};

export const REPO_ROOT = join(import.meta.dir, "..", "..");

/** The QEMU that runs L1 (TCG, -cpu max exposes emulated SVM + NPT). */
export const QEMU = env("TSB_QEMU") ?? "qemu-system-x86_64";

/** L1 machine shape. */
export const L1_MEM_MIB = envInt("TSB_L1_MEM_MIB", 2048);
export const L1_SMP = envInt("TSB_L1_SMP", 2);

/** Timeouts, in ms unless named otherwise. */
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

/** L1 kernel command line (job parameters are appended by the harness). */
export const L1_CMDLINE = env("TSB_L1_CMDLINE") ?? "console=ttyS0 quiet loglevel=3 panic=-1 mitigations=off";

/** Where job directories are created on the host (they appear at the same path inside L1). */
export const JOB_ROOT = env("TSB_NESTED_JOB_ROOT") ?? "/tmp";

/**
 * The real Bun binary (not the npm wrapper/symlink): node_modules/.bin/bun points at it, or it lives in
 * node_modules/@oven/bun-linux-x64*\/bin/bun.
 */
export function realBun(): string {
  const candidates: string[] = [];
  const oven = join(REPO_ROOT, "node_modules", "@oven");
  if (existsSync(oven)) {
    for (const d of readdirSync(oven).filter((d) => d.startsWith("bun-linux-x64")).sort()) {
      candidates.push(join(oven, d, "bin", "bun"));
    }
  }
  const wrapper = join(REPO_ROOT, "node_modules", ".bin", "bun");
  if (existsSync(wrapper)) candidates.unshift(realpathSync(wrapper));
  candidates.push(process.execPath);
  for (const c of candidates) if (existsSync(c) && !c.endsWith(".js")) return c;
  throw new Error(`no Bun binary found (looked at ${candidates.join(", ")})`);
}

/** The compiled tsbhyve binary (built by `bun run build`). */
export const TSBHYVE_BINARY = join(REPO_ROOT, "dist", "tsbhyve");
