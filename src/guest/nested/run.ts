/**
 * The reusable core of running something one level down: L1's kernel and initramfs, QEMU's command line,
 * job directories, and an attached run (QEMU's serial on this terminal). The batch test harness
 * (test/harness/nested.ts) adds watchdogs, retries and result parsing on top; `tsbhyve demo` uses
 * runAttached. L1 is Debian's stock kernel booted PVH under QEMU TCG with `-cpu max` (emulated SVM + NPT),
 * so its kvm_amd gives a /dev/kvm that runs stock guests; see l1-init.ts for what the job sees.
 */
import { mkdtempSync } from "node:fs";
import { join } from "node:path";
import type { Subprocess } from "bun";
import { fetchDebianKernel } from "../debian.ts";
import { extractVmlinux } from "../vmlinux.ts";
import { buildInitramfsFile } from "../initramfs.ts";
import { JOB_ROOT, L1_CMDLINE, L1_MEM_MIB, L1_MODULES, L1_SMP, QEMU, QEMU_PACKAGE } from "./constants.ts";
import { CMDLINE_KEYS, L1_INIT, type L1Mode } from "./l1-init.ts";

export interface L1Assets {
  vmlinux: string;
  initrd: string;
  kernelRelease: string;
}

const assetMemo = new Map<string, Promise<L1Assets>>();

/** Kernel (uncompressed vmlinux, for PVH) and initramfs for L1; cached on disk and per process. */
export function prepareL1(extraModules: string[] = []): Promise<L1Assets> {
  const mods = [...L1_MODULES, ...extraModules];
  const key = mods.join(",");
  let p = assetMemo.get(key);
  if (!p) {
    p = (async () => {
      const kernel = await fetchDebianKernel();
      const [vmlinux, initrd] = await Promise.all([
        extractVmlinux(kernel.vmlinuz),
        // Uncompressed: nothing for the emulated CPU to inflate.
        buildInitramfsFile({ init: L1_INIT, modules: mods, compress: "none", kernel }),
      ]);
      return { vmlinux, initrd, kernelRelease: kernel.release };
    })();
    p.catch(() => assetMemo.delete(key));
    assetMemo.set(key, p);
  }
  return p;
}

/** QEMU's path; throws (naming the Debian package) when it is missing. Nested runs never silently skip. */
export function requireQemu(purpose = "run nested guests"): string {
  const path = Bun.which(QEMU);
  if (!path) {
    throw new Error(`${QEMU} not found: install ${QEMU_PACKAGE} (apt-get install ${QEMU_PACKAGE}) to ${purpose}`);
  }
  return path;
}

/** A fresh job directory under JOB_ROOT (shared writable into L1 at the same path). */
export function makeJobDir(name: string): string {
  return mkdtempSync(join(JOB_ROOT, `tsb-nested-${name.replace(/[^\w.-]/g, "_")}-`));
}

export interface L1Machine {
  assets: L1Assets;
  /** Host directory with job.sh; shared writable into L1 at the same path. */
  jobDir: string;
  mode?: L1Mode;
  /** In-L1 `timeout -s KILL` for a batch job, seconds. */
  jobTimeoutSec?: number;
  nonce?: string;
  memMiB?: number;
  smp?: number;
  /**
   * Where L1's serial console goes: "stdio" = QEMU's stdin/stdout as a plain byte stream (a harness pipes
   * them); "terminal" = a stdio chardev with the mux escape (Ctrl-A x quits, Ctrl-A h helps) and ^C passed
   * to the guest instead of killing QEMU — for a human at a terminal.
   */
  serial?: "stdio" | "terminal";
  extraArgs?: string[];
}

/** QEMU's argument list (without the program) for one L1 boot. */
export function l1QemuArgs(m: L1Machine): string[] {
  const append = [
    L1_CMDLINE,
    `${CMDLINE_KEYS.jobDir}=${m.jobDir}`,
    ...(m.mode && m.mode !== "batch" ? [`${CMDLINE_KEYS.mode}=${m.mode}`] : []),
    ...(m.jobTimeoutSec !== undefined ? [`${CMDLINE_KEYS.timeout}=${m.jobTimeoutSec}`] : []),
    ...(m.nonce !== undefined ? [`${CMDLINE_KEYS.nonce}=${m.nonce}`] : []),
  ].join(" ");
  const serial = m.serial === "terminal"
    ? ["-chardev", "stdio,id=s0,signal=off,mux=on", "-serial", "chardev:s0"]
    : ["-serial", "stdio"];
  return [
    "-accel", "tcg,thread=multi",
    "-cpu", "max",
    "-smp", String(m.smp ?? L1_SMP),
    "-m", `${m.memMiB ?? L1_MEM_MIB}M`,
    "-M", "pc",
    "-kernel", m.assets.vmlinux,
    "-initrd", m.assets.initrd,
    "-append", append,
    "-virtfs", "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap",
    "-virtfs", `local,path=${m.jobDir},mount_tag=tsbjob,security_model=none,multidevs=remap`,
    "-display", "none",
    ...serial,
    "-monitor", "none",
    "-nodefaults",
    "-no-user-config",
    "-no-reboot",
    ...(m.extraArgs ?? []),
  ];
}

// ---------------------------------------------------------------- QEMU lifetime

const live = new Set<Subprocess>();
process.on("exit", () => {
  for (const p of live) p.kill(9);
});

/** Spawn QEMU for L1; it is SIGKILLed if this process exits first. */
export function spawnL1<
  const IO extends { stdin: "pipe" | "inherit" | "ignore"; stdout: "pipe" | "inherit"; stderr: "pipe" | "inherit" },
>(m: L1Machine, io: IO) {
  const proc = Bun.spawn([QEMU, ...l1QemuArgs(m)], io);
  live.add(proc);
  proc.exited.then(() => live.delete(proc));
  return proc;
}

/**
 * Boot L1 with its console on this process's stdin/stdout (QEMU owns the terminal: it switches it to raw
 * mode and back) and wait for QEMU to exit. SIGINT/SIGTERM/SIGHUP to this process ask QEMU to quit
 * (SIGTERM), so it restores the terminal itself. Returns QEMU's exit status.
 */
export async function runAttached(m: L1Machine): Promise<number> {
  const proc = spawnL1({ mode: "interactive", serial: "terminal", ...m }, { stdin: "inherit", stdout: "inherit", stderr: "inherit" });
  const forward = () => proc.kill("SIGTERM");
  const sigs = ["SIGINT", "SIGTERM", "SIGHUP"] as const;
  for (const s of sigs) process.on(s, forward);
  try {
    return await proc.exited;
  } finally {
    for (const s of sigs) process.off(s, forward);
  }
}
