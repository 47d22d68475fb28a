/**
 * Tier-2 helper: run dist/tsbhyve on a config written for the test, with a hard timeout, and collect
 * its exit status, stdout/stderr and the COM1 output file.
 */
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

export const BINARY = join(import.meta.dir, "../../dist/tsbhyve");

export function requireKvm(): void {
  if (!existsSync("/dev/kvm")) throw new Error("/dev/kvm is missing: payload tests need KVM (they do not skip)");
  if (!existsSync(BINARY)) throw new Error(`${BINARY} missing: run npm run build (npm test does)`);
}

export interface TsbRun { code: number | null; stdout: string; stderr: string; com1: string; ms: number; timedOut: boolean }

export async function runTsb(opts: {
  toml: string;            // config body; "${COM1}" is replaced by the COM1 output file path
  args?: string[];
  env?: Record<string, string>;
  timeoutMs?: number;
  stdin?: string;
  /** send `stdin` only once stdout contains this text */
  stdinAfter?: string;
  /** stop early once COM1 contains this (SIGTERM, then SIGKILL) */
  until?: string;
  /** called once COM1 contains this text, with the tsbhyve process id (to inspect it while it runs) */
  onOutput?: { text: string; run: (pid: number) => void | Promise<void> };
}): Promise<TsbRun> {
  const dir = mkdtempSync(join(tmpdir(), "tsb-payload-"));
  const com1 = join(dir, "com1.out");
  const cfg = join(dir, "guest.toml");
  writeFileSync(cfg, opts.toml.replaceAll("${COM1}", com1));
  const t0 = performance.now();
  const p = Bun.spawn([BINARY, ...(opts.args ?? []), cfg], {
    stdout: "pipe", stderr: "pipe", stdin: opts.stdin !== undefined ? "pipe" : "ignore",
    env: { ...process.env, ...opts.env },
  });
  let stdoutText = "";
  const stdoutDone = (async () => {
    const dec = new TextDecoder();
    let sent = opts.stdin === undefined;
    for await (const chunk of p.stdout) {
      stdoutText += dec.decode(chunk);
      if (!sent && (!opts.stdinAfter || stdoutText.includes(opts.stdinAfter))) {
        sent = true;
        p.stdin!.write(opts.stdin!);
        p.stdin!.end();
      }
    }
    if (!sent && p.stdin) { p.stdin.end(); }
  })();
  let timedOut = false;
  const timer = setTimeout(() => { timedOut = true; p.kill("SIGKILL"); }, opts.timeoutMs ?? 20_000);
  let poll: ReturnType<typeof setInterval> | undefined;
  let inspected: Promise<void> = Promise.resolve();
  if (opts.onOutput) {
    const w = setInterval(() => {
      if (existsSync(com1) && readFileSync(com1, "latin1").includes(opts.onOutput!.text)) {
        clearInterval(w);
        inspected = Promise.resolve(opts.onOutput!.run(p.pid));
      }
    }, 20);
    p.exited.then(() => clearInterval(w));
  }
  if (opts.until) {
    poll = setInterval(() => {
      if (existsSync(com1) && readFileSync(com1, "latin1").includes(opts.until!)) { clearInterval(poll); p.kill("SIGKILL"); }
    }, 50);
  }
  const [, stderr] = await Promise.all([stdoutDone, new Response(p.stderr).text()]);
  const stdout = stdoutText;
  const code = await p.exited;
  await inspected;
  clearTimeout(timer);
  if (poll) clearInterval(poll);
  return { code, stdout, stderr, com1: existsSync(com1) ? readFileSync(com1, "latin1") : "", ms: performance.now() - t0, timedOut };
}

/** A config that boots a payload ROM with COM1 to a file. */
export function romConfig(rom: string, extra = "", cpus = 1): string {
  return `name = "payload"\ncpus = ${cpus}\n[memory]\nsize = "128M"\n[lpc]\nbootrom = "${rom}"\npc-testdev = true\n[lpc.com1]\npath = "file=\${COM1}"\n${extra}`;
}
