/**
 * L2 guests of the nested tests: the /init every one starts with, and the shape of its checks.
 *
 *   const init = l2Init(`
 *     [ -b /dev/vda ] && r blk-present pass "" || r blk-present fail "no /dev/vda"
 *   `);
 *   // the L1 job: tsb_l2_boot blk 240 1 "$TSB_TSBHYVE" "$TSB_JOB_DIR/blk.toml"
 *
 * The prelude mounts /proc, /sys and /dev, loads the initramfs's modules, prints TSB-GUEST-UP with the
 * uptime, and defines `r NAME pass|fail DETAIL…` (one "TSB-L2" result line) and `up` (uptime in seconds).
 * After the checks: TSB-L2-DONE with the uptime, then `poweroff -f` (tsbhyve exits 1). The job side is
 * the L1 prelude's `tsb_l2_boot` (src/guest/nested/l1-init.ts).
 *
 * Several devices' checks can share one boot: each is an `L2Part` (test/nested/parts/), and runL2Parts
 * builds the guest, the VM config and the L1 job from all of them.
 */
import { expect } from "bun:test";
import { join } from "node:path";
import { rmSync } from "node:fs";
import { prepareGuest, type ExtraFile } from "../../src/guest/index.ts";
import { describeResult, runNested, type NestedResult } from "./nested.ts";

/**
 * vCPUs of the device tests' guests. One: in this nested environment (QEMU TCG's emulated SVM under L1's
 * kvm_amd) L2 guests triple-fault now and then, far more often with 2 vCPUs — measured on the
 * net/scsi/9p boot: 3 of 4 runs with 2 vCPUs; with one, 2 faults in 17 device boots (blk, console+input,
 * net+scsi+9p). L1's KVM trace shows the fault as an instruction-fetch #PF (not present) on kernel text
 * the vCPU had just executed; pinning the vCPU threads to L1 CPUs does not help. tsb_l2_boot retries a
 * triple-faulted boot (up to 3 boots). SMP is covered by the linux-guest and platform boots.
 * TSB_L2_CPUS overrides (to reproduce).
 */
export const L2_DEVICE_CPUS = Number(process.env.TSB_L2_CPUS ?? 1);

export const L2_PRELUDE = `#!/bin/sh
export PATH=/sbin:/bin:/usr/sbin:/usr/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
/sbin/tsb-load-modules
echo "TSB-GUEST-UP $(cut -d' ' -f1 /proc/uptime)"
r() { n=$1; s=$2; shift 2; echo "TSB-L2 $n $s $*"; }
up() { cut -d' ' -f1 /proc/uptime; }
`;

/** A whole L2 /init: the prelude, `checks` (shell), then TSB-L2-DONE and power-off. */
export function l2Init(checks: string): string {
  return `${L2_PRELUDE}${checks.replace(/^\n/, "")}\necho "TSB-L2-DONE $(up)"\npoweroff -f\n`;
}

// ---------------------------------------------------------------------------------------------------
// One boot, many devices: each device's test is a part (its guest modules, pci tables, guest checks, L1
// steps before and after the boot, host-side checks), and runL2Parts boots them all together once.


export interface L2Part {
  /** guest kernel modules (dependencies resolve themselves) */
  modules: string[];
  extraFiles?: ExtraFile[];
  /** the part's [pci."B.S.F"] tables */
  toml: string;
  /** more tsbhyve arguments, as shell words (e.g. bhyve's -s form) */
  args?: string;
  /** files for the job directory */
  files?: Record<string, string | Uint8Array>;
  /** guest shell run by the L2 /init (r NAME pass|fail DETAIL reports) */
  checks: string;
  /** L1 shell before the boot (may start background helpers) and after it (tsb_result reports) */
  before?: string;
  after?: string;
  /** results that must pass */
  expect: string[];
  /** host-side checks on the job's out/ directory after the run */
  verify?(outDir: string): void;
}

export interface L2PartsRun {
  /** VM name, result prefix ("<name>.exit"), log name */
  name: string;
  parts: L2Part[];
  memory?: string;
  /** shell words in front of tsbhyve (e.g. ip netns exec NS) */
  prefix?: string;
  /** seconds for the boot (tsb_l2_boot's timeout) */
  bootSecs?: number;
}

/** Boot every part's devices in one guest, run every check, assert every expected result. */
export async function runL2Parts(o: L2PartsRun): Promise<NestedResult> {
  const g = await prepareGuest({
    init: l2Init(o.parts.map((p) => p.checks.replace(/^\n/, "")).join("\n")),
    modules: [...new Set(o.parts.flatMap((p) => p.modules))],
    extraFiles: o.parts.flatMap((p) => p.extraFiles ?? []),
  });
  const toml = `name = "${o.name}"\ncpus = ${L2_DEVICE_CPUS}\n[memory]\nsize = "${o.memory ?? "256M"}"\n[boot]\nkernel = "${g.bzImage}"\ninitrd = "${g.initrd}"\n` +
    `cmdline = "console=ttyS0 quiet"\n[lpc.com1]\npath = "stdio"\n${o.parts.map((p) => p.toml).join("")}`;
  const args = o.parts.map((p) => p.args ?? "").filter(Boolean).join(" ");
  const job = [
    ...o.parts.map((p) => p.before ?? ""),
    `tsb_l2_boot ${o.name} ${o.bootSecs ?? 300} 1 ${o.prefix ?? ""} "$TSB_TSBHYVE" ${args} "$TSB_JOB_DIR/${o.name}.toml"`,
    ...o.parts.map((p) => p.after ?? ""),
    "exit 0",
  ].join("\n");
  const files: Record<string, string | Uint8Array> = { [`${o.name}.toml`]: toml };
  for (const p of o.parts) Object.assign(files, p.files ?? {});
  const r = await runNested({ name: o.name, script: job, timeoutMs: 900_000, idleTimeoutMs: 300_000, keepJobDir: true, files });
  const why = describeResult(r);
  console.log(why);
  for (const c of [...o.parts.flatMap((p) => p.expect), `${o.name}.exit`]) expect(r.results.get(c)?.status, `${c}\n${why}`).toBe("pass");
  for (const p of o.parts) p.verify?.(join(r.jobDir, "out"));
  if (r.ok) rmSync(r.jobDir, { recursive: true, force: true });
  return r;
}
