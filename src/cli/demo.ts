/**
 * `tsbhyve demo`: boot a built-in default guest — Debian's stock kernel and a busybox initramfs, fetched
 * with apt-get download and cached — to a shell on this terminal, with no config written by the user.
 * Command-line flags override the built-in guest like they override a file (`tsbhyve demo -c 4 -m 1G`).
 *
 * Where it runs: on a host whose /dev/kvm can run a stock kernel (VT-x or SVM, not a paravirtual KVM),
 * directly. Otherwise one level down (src/guest/nested/): QEMU TCG boots an L1 Linux with emulated SVM,
 * L1's kvm_amd gives a real /dev/kvm, and this same tsbhyve binary runs the guest there with L1's console
 * as its terminal, which QEMU connects to ours. The guest's exit status comes back through the shared
 * job directory. TSBHYVE_DEMO_MODE=direct|nested overrides the choice.
 */
import { existsSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { availableParallelism } from "node:os";
import { join } from "node:path";
import { isatty } from "node:tty";
import { dumpConfig } from "../config/dump.ts";
import { layerFromObject, resolveLayers, type Layer } from "../config/load.ts";
import { formatSize } from "../config/size.ts";
import type { VmConfig } from "../config/types.ts";
import { cacheRoot, DEFAULT_GUEST_INIT, prepareGuest, type GuestBundle } from "../guest/index.ts";
import { COMPILED, L1_MEM_MIB, L1_SMP, QEMU, tsbhyveBinary } from "../guest/nested/constants.ts";
import { makeJobDir, prepareL1, requireQemu, runAttached } from "../guest/nested/run.ts";

/** The built-in demo guest, before command-line overrides. */
export function demoGuest(g: Pick<GuestBundle, "bzImage" | "initrd">): Record<string, unknown> {
  return {
    name: "demo",
    cpus: 2,
    memory: { size: "512M" },
    boot: { kernel: g.bzImage, initrd: g.initrd, cmdline: "console=ttyS0 quiet" },
    lpc: { com1: { path: "stdio" } },
  };
}

/** The demo guest with the command-line layers on top; `dump` is -o config.dump=1. */
export function resolveDemo(g: Pick<GuestBundle, "bzImage" | "initrd">, layers: Layer[]): { config: VmConfig; dump: boolean } {
  return resolveLayers([layerFromObject("built-in demo guest", demoGuest(g), cacheRoot()), ...layers], "demo");
}

export type KvmVerdict = { ok: true } | { ok: false; noKvm: boolean; reason: string };

/**
 * Can this host's /dev/kvm run a stock kernel? It needs hardware virtualization (vmx or svm in the CPU
 * flags) and must not be kvm_pvm, a paravirtual KVM that only runs PVM-enabled guest kernels.
 */
export function judgeKvm(host: { cpuinfo: string; kvmPvm: boolean; devKvm: boolean }): KvmVerdict {
  const flags = new Set(
    host.cpuinfo.split("\n").filter((l) => /^flags\s*:/.test(l)).flatMap((l) => l.slice(l.indexOf(":") + 1).trim().split(/\s+/)),
  );
  const hw = flags.has("vmx") || flags.has("svm");
  const why: string[] = [];
  if (!hw) why.push("/proc/cpuinfo lists neither vmx nor svm");
  if (host.kvmPvm) why.push("/dev/kvm is kvm_pvm, a paravirtual KVM (/sys/module/kvm_pvm)");
  if (!host.devKvm) why.push("there is no /dev/kvm");
  if (why.length === 0) return { ok: true };
  return { ok: false, noKvm: !host.devKvm && hw && !host.kvmPvm, reason: why.join("; ") };
}

function probeHost(): KvmVerdict {
  let cpuinfo = "";
  try {
    cpuinfo = readFileSync("/proc/cpuinfo", "utf8");
  } catch { /* not Linux: no flags */ }
  return judgeKvm({ cpuinfo, kvmPvm: existsSync("/sys/module/kvm_pvm"), devKvm: existsSync("/dev/kvm") });
}

const say = (s: string) => process.stderr.write(`tsbhyve demo: ${s}\n`);
const MiB = 1024 * 1024;
/** DEFAULT_GUEST_INIT powers off when its shell exits; plain `poweroff` would only signal the /init script. */
const END_HINT = `"exit" the guest's shell, or "poweroff -f", to power it off`;

export async function runDemo(layers: Layer[], run: (cfg: VmConfig) => Promise<number>): Promise<number> {
  // Resolve once with stand-in boot files (any existing regular file) so a bad flag fails before any download.
  resolveDemo({ bzImage: process.execPath, initrd: process.execPath }, layers);

  say(`fetching Debian's linux-image-amd64 and busybox-static with apt-get download, building the initramfs (cached in ${cacheRoot()})`);
  const g = await prepareGuest({ init: DEFAULT_GUEST_INIT });
  const { config: cfg, dump } = resolveDemo(g, layers);
  if (dump) {
    process.stdout.write(dumpConfig(cfg));
    return 0;
  }

  const forced = process.env.TSBHYVE_DEMO_MODE;
  const verdict: KvmVerdict =
    forced === "direct" ? { ok: true }
    : forced === "nested" ? { ok: false, noKvm: false, reason: "TSBHYVE_DEMO_MODE=nested" }
    : probeHost();
  const what = `Debian ${g.kernel.release} + busybox, ${cfg.cpus} vCPU${cfg.cpus === 1 ? "" : "s"}, ${formatSize(cfg.memory.size)}`;

  if (verdict.ok) {
    say(`booting ${what}; the guest's console is this terminal (${END_HINT})`);
    return run(cfg);
  }
  if (verdict.noKvm) {
    say(`this host has no /dev/kvm (load kvm_intel or kvm_amd for full speed); running the demo one level down inside QEMU with nested SVM (slow: 30-60 s to a shell)`);
  } else {
    say(`this host's /dev/kvm cannot run a stock kernel (no VT-x/SVM: ${verdict.reason}); running the demo one level down inside QEMU with nested SVM (slow: 30-60 s to a shell)`);
  }
  return runNestedDemo(cfg, what);
}

/** Run cfg with tsbhyve inside an L1 booted by QEMU whose serial console is this terminal. */
async function runNestedDemo(cfg: VmConfig, what: string): Promise<number> {
  requireQemu("run the demo on this host");
  const bin = tsbhyveBinary();
  if (!existsSync(bin)) {
    throw new Error(`demo: ${bin} not found: build it first (node_modules/.bin/bun scripts/build.ts); inside L1 the compiled binary runs the guest`);
  }
  const assets = await prepareL1();
  const jobDir = makeJobDir("demo");
  const q = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;
  const statusFile = join(jobDir, "exit-status");
  writeFileSync(join(jobDir, "demo.toml"), dumpConfig(cfg));
  writeFileSync(
    join(jobDir, "job.sh"),
    `#!/bin/sh
# tsbhyve demo, inside L1 (chroot into the host's root); stdin/stdout are L1's console, our terminal.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root TMPDIR=/tmp LANG=C.UTF-8
echo "tsbhyve demo: L1 is up after $(cut -d' ' -f1 /proc/uptime) s; tsbhyve boots the guest under L1's kvm_amd"
${q(bin)} ${q(join(jobDir, "demo.toml"))}
rc=$?
echo "$rc" > ${q(statusFile)}
exit "$rc"
`,
    { mode: 0o755 },
  );

  const guestMiB = Math.ceil(cfg.memory.size / MiB);
  const memMiB = Math.max(L1_MEM_MIB, guestMiB + 1536);
  const smp = Math.max(L1_SMP, Math.min(cfg.cpus, availableParallelism()));
  const tty = isatty(0);
  say(`booting ${what} with ${COMPILED ? "this binary" : bin} inside L1 (${QEMU}, ${smp} vCPUs, ${memMiB} MiB)`);
  say(tty
    ? `the guest's console is this terminal (${END_HINT}); Ctrl-A x quits QEMU at once, Ctrl-A a sends a Ctrl-A`
    : `the guest's console is stdout (stdin is not a terminal)`);

  const saved = tty ? sttySave() : undefined;
  let qemuStatus: number;
  try {
    qemuStatus = await runAttached({ assets, jobDir, memMiB, smp });
  } finally {
    if (saved) sttyRestore(saved);
  }

  let status: number | undefined;
  try {
    const text = readFileSync(statusFile, "utf8").trim();
    if (/^\d+$/.test(text)) status = Number(text);
  } catch { /* no status: tsbhyve did not finish */ }
  rmSync(jobDir, { recursive: true, force: true });
  if (status !== undefined) return status;
  say(qemuStatus === 0
    ? "L1 stopped before tsbhyve finished (QEMU was quit, e.g. with Ctrl-A x, or L1 failed: see its console above)"
    : `QEMU exited with status ${qemuStatus} before tsbhyve finished (see its messages above)`);
  return 4;
}

/** The terminal's settings (stty -g), to put back whatever QEMU or a killed child leaves behind. */
function sttySave(): string | undefined {
  try {
    const r = Bun.spawnSync(["stty", "-g"], { stdin: "inherit", stdout: "pipe", stderr: "ignore" });
    return r.exitCode === 0 ? r.stdout.toString().trim() : undefined;
  } catch {
    return undefined;
  }
}

function sttyRestore(saved: string): void {
  try {
    Bun.spawnSync(["stty", saved], { stdin: "inherit", stdout: "ignore", stderr: "ignore" });
  } catch { /* no stty: QEMU restored it itself on a normal exit */ }
}
