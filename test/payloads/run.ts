// Runs a payload image on QEMU (TCG) the same way tsbhyve runs it: as the
// 64 KiB firmware ending at 4 GiB, COM1 captured.  Used by qemu-check.test.ts
// to prove the payloads themselves behave as documented.
//
// Machine: -machine pc -accel tcg -nodefaults -no-reboot, COM1 on stdio, and
// isa-debug-exit at port 0xF4 (a write of v exits QEMU with (v << 1) | 1).
// Resets and triple faults therefore end QEMU with exit code 0.

import { existsSync } from "node:fs";

export interface QemuRunOptions {
  /** vCPUs (-smp). Default 1. */
  smp?: number;
  /** Kill QEMU (SIGKILL) after this long; result.timedOut = true. Default 15000. */
  timeoutMs?: number;
  /** Appended to the QEMU command line. */
  extraArgs?: string[];
  /** Bytes to send to COM1 (QEMU stdin). */
  input?: string;
  /** Send `input` only once the serial output matches this (default: right away). */
  inputAfter?: string | RegExp;
  /** Stop QEMU as soon as the serial output matches this (for payloads that halt forever). */
  until?: string | RegExp;
  /** Guest RAM in MiB. Default 64. */
  memMiB?: number;
}

export interface QemuRunResult {
  /** Process exit code; null when we killed it (timeout / until). */
  code: number | null;
  /** Everything the guest wrote to COM1. */
  serial: string;
  /** QEMU's own stderr (warnings, errors). */
  stderr: string;
  timedOut: boolean;
  /** True when `until` matched and we stopped QEMU. */
  stoppedByUntil: boolean;
  durationMs: number;
  /** The command line that was run. */
  cmd: string[];
}

/** Path of qemu-system-x86_64; throws with an install hint if it is missing. */
export function qemuPath(): string {
  const p = Bun.which("qemu-system-x86_64");
  if (!p) {
    throw new Error(
      "qemu-system-x86_64 not found on PATH: the payload self-check runs every payload on QEMU. " +
        "Install it (Debian/Ubuntu: apt-get install qemu-system-x86).",
    );
  }
  return p;
}

function matches(text: string, pattern: string | RegExp): boolean {
  return typeof pattern === "string" ? text.includes(pattern) : pattern.test(text);
}

export async function runPayloadOnQemu(bin: string, opts: QemuRunOptions = {}): Promise<QemuRunResult> {
  if (!existsSync(bin)) throw new Error(`payload image not found: ${bin}`);
  const timeoutMs = opts.timeoutMs ?? 15_000;
  const cmd = [
    qemuPath(),
    "-machine", "pc",
    "-accel", "tcg",
    "-nodefaults",
    "-no-reboot",
    "-display", "none",
    "-m", String(opts.memMiB ?? 64),
    "-smp", String(opts.smp ?? 1),
    "-bios", bin,
    "-serial", "stdio",
    "-device", "isa-debug-exit,iobase=0xf4,iosize=0x01",
    ...(opts.extraArgs ?? []),
  ];
  const started = performance.now();
  const proc = Bun.spawn({ cmd, stdin: "pipe", stdout: "pipe", stderr: "pipe" });

  let serial = "";
  let timedOut = false;
  let stoppedByUntil = false;
  let inputSent = opts.input === undefined;

  const sendInput = () => {
    if (inputSent) return;
    inputSent = true;
    proc.stdin.write(opts.input!);
    proc.stdin.flush();
  };
  if (opts.inputAfter === undefined) sendInput();

  const timer = setTimeout(() => {
    timedOut = true;
    proc.kill("SIGKILL");
  }, timeoutMs);

  const stderrText = new Response(proc.stderr).text();
  try {
    for await (const chunk of proc.stdout) {
      serial += Buffer.from(chunk).toString("latin1");
      if (!inputSent && opts.inputAfter !== undefined && matches(serial, opts.inputAfter)) sendInput();
      if (opts.until !== undefined && !stoppedByUntil && matches(serial, opts.until)) {
        stoppedByUntil = true;
        proc.kill("SIGKILL");
      }
    }
  } finally {
    clearTimeout(timer);
  }
  const exitCode = await proc.exited;
  try {
    proc.stdin.end();
  } catch {}
  const killed = timedOut || stoppedByUntil;
  return {
    code: killed ? null : exitCode,
    serial,
    stderr: await stderrText,
    timedOut,
    stoppedByUntil,
    durationMs: Math.round(performance.now() - started),
    cmd,
  };
}
