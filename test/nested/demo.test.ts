/**
 * Tier 3: `tsbhyve demo`, the README's first command, run as a user would — the BUILT binary, no config
 * file — in its non-interactive form: `tsb.cmd=poweroff` makes the default guest's /init print its marker
 * and power off, so the demo must exit with bhyve's power-off status 1. On this machine (/dev/kvm is a
 * paravirtual KVM) that goes through the demo's nested path: QEMU TCG, L1 with emulated SVM, the same
 * binary inside L1. It fails (never skips) when QEMU is missing.
 */
import { expect, test } from "bun:test";
import { existsSync, readdirSync, statSync } from "node:fs";
import { join } from "node:path";
import { BINARY, buildBinary } from "../../scripts/build.ts";
import { GUEST_UP_MARKER } from "../../src/guest/index.ts";
import { L1_STALL, requireQemu } from "../harness/nested.ts";
import { judgeKvm } from "../../src/cli/demo.ts";

const ROOT = join(import.meta.dir, "..", "..");

/** Build dist/tsbhyve unless it is newer than every source file (npm test builds it first anyway). */
async function ensureBinary(): Promise<void> {
  const newest = (dir: string) =>
    (readdirSync(join(ROOT, dir), { recursive: true }) as string[])
      .filter((f) => /\.(ts|c|h)$/.test(f))
      .reduce((t, f) => Math.max(t, statSync(join(ROOT, dir, f)).mtimeMs), 0);
  if (!existsSync(BINARY) || statSync(BINARY).mtimeMs < Math.max(newest("src"), newest("ffi"))) await buildBinary();
}

test("demo decides from the CPU flags and kvm_pvm", () => {
  const flags = (f: string) => `processor\t: 0\nflags\t\t: fpu sse2 ${f} lm\n`;
  expect(judgeKvm({ cpuinfo: flags("vmx"), kvmPvm: false, devKvm: true })).toEqual({ ok: true });
  expect(judgeKvm({ cpuinfo: flags("svm"), kvmPvm: false, devKvm: true })).toEqual({ ok: true });
  const pvm = judgeKvm({ cpuinfo: flags("hypervisor"), kvmPvm: true, devKvm: true });
  expect(pvm.ok).toBe(false);
  if (!pvm.ok) expect(pvm.reason).toContain("neither vmx nor svm");
  expect(judgeKvm({ cpuinfo: flags("vmx"), kvmPvm: true, devKvm: true }).ok).toBe(false);
  expect(judgeKvm({ cpuinfo: flags("vmx"), kvmPvm: false, devKvm: false })).toMatchObject({ ok: false, noKvm: true });
});

test(
  "tsbhyve demo (non-interactive): the default guest boots to its marker and powers off → exit 1",
  async () => {
    requireQemu(); // throws when qemu-system-x86_64 is missing: never a silent skip
    await ensureBinary();
    // One attempt; an L1 stall (emulated SVM under TCG wedges now and then, testing.md) is retried once.
    const once = async () => {
      const t0 = performance.now();
      const proc = Bun.spawn([BINARY, "demo", "-o", "boot.cmdline=console=ttyS0 quiet tsb.cmd=poweroff"], {
        cwd: ROOT, stdin: "ignore", stdout: "pipe", stderr: "pipe",
        env: { ...process.env, TSBHYVE_DEMO_MODE: "" },
      });
      // SIGTERM (not SIGKILL): the demo forwards it to QEMU, which then exits and restores stdio.
      const killer = setTimeout(() => proc.kill("SIGTERM"), 200_000);
      let out = "", stalled = false;
      let markerMs = null as number | null;
      const dec = new TextDecoder();
      const pump = (async () => {
        for await (const chunk of proc.stdout) {
          out += dec.decode(chunk, { stream: true });
          if (markerMs === null && out.includes(GUEST_UP_MARKER)) markerMs = performance.now() - t0;
          if (!stalled && L1_STALL.test(out)) { stalled = true; proc.kill("SIGTERM"); }
        }
      })();
      const errText = new Response(proc.stderr).text();
      const code = await proc.exited;
      clearTimeout(killer);
      await pump;
      const err = await errText;
      return { code, out, err, markerMs, stalled, totalMs: performance.now() - t0 };
    };
    let r = await once();
    let retried = "";
    // Also retry one guest death before the marker (rc 3; seen twice in ~40 nested boots, see the note on
    // tsb_vcpu_stopped in ffi/kvm.c), and say so in the result.
    if (r.stalled || (r.markerMs === null && (r.totalMs > 190_000 || r.code === 3))) {
      retried = ` (retried once: first attempt ${r.stalled ? "hit an L1 stall" : r.code === 3 ? "ended in a triple fault" : "timed out"})`;
      r = await once();
    }
    const { code, out, err, markerMs, totalMs } = r;
    const why = `exit=${code} marker after ${markerMs?.toFixed(0)} ms, total ${totalMs.toFixed(0)} ms${retried}\n--- stderr ---\n${err}\n--- stdout ---\n${out}`;
    console.log(`demo: ${GUEST_UP_MARKER} after ${markerMs?.toFixed(0)} ms, exit ${code} after ${totalMs.toFixed(0)} ms${retried}`);
    expect(err, why).toContain("tsbhyve demo:");
    expect(out, why).toContain(GUEST_UP_MARKER);
    expect(code, why).toBe(1);
  },
  450_000,
);
