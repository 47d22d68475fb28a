/**
 * The nested (tier 3) harness: boot an L1 Linux under QEMU TCG with emulated SVM/NPT, run a shell job
 * inside it (chrooted into the host's own root, shared over 9p), and collect the results from the serial
 * console. See shared/design/testing.md for why; see src/guest/nested/l1-init.ts for the line protocol and
 * the filesystem the job sees. Booting L1 (assets, QEMU command line, /init) is src/guest/nested/, shared
 * with `tsbhyve demo`; this file adds batch jobs: watchdogs, retries, result parsing.
 *
 *   const r = await runNested({ script: `tsb_check bun-version "$TSB_BUN" --version` });
 *   expect(r.results.get("bun-version")?.status).toBe("pass");
 *
 * A job is a POSIX shell script. It runs with helpers (tsb_result, tsb_check, tsb_now_ms) and these
 * variables: TSB_JOB_DIR (writable, shared with the host, same path on both sides), TSB_OUT
 * (= $TSB_JOB_DIR/out), TSB_REPO, TSB_BUN (the real Bun binary), TSB_TSBHYVE (dist/tsbhyve), plus job.env.
 * job.files are written into TSB_JOB_DIR before boot.
 *
 * Hangs: a host-side watchdog SIGKILLs QEMU when there is no serial output for idleTimeoutMs, when the
 * attempt exceeds timeoutMs, or when L1 has not started the job within TIMEOUTS.bootMs. A hung attempt is
 * retried (HANG_RETRIES, default once) and the retry is reported in NestedResult.retries. Crashes and
 * failing checks are not retried.
 */
import { rmSync, writeFileSync, readFileSync, existsSync, mkdirSync, readdirSync, renameSync } from "node:fs";
import { dirname, join } from "node:path";
import { randomBytes } from "node:crypto";
import { makeJobDir, prepareL1, requireQemu as requireQemuCore, spawnL1, type L1Assets } from "../../src/guest/nested/run.ts";
import { HANG_RETRIES, REPO_ROOT, TIMEOUTS, TSBHYVE_BINARY, realBun } from "./constants.ts";
import { MARK, jobPrelude } from "./l1-init.ts";

export { prepareL1, type L1Assets };

export interface NestedJob {
  /** Shell script run in L1 (chroot into the host root). Print results with tsb_result / tsb_check. */
  script: string;
  /** For logs and the job directory's name. */
  name?: string;
  /** Host-side limit for one attempt (QEMU start → exit). Default TIMEOUTS.attemptMs. */
  timeoutMs?: number;
  /** No serial output for this long = hung. Default TIMEOUTS.idleMs. */
  idleTimeoutMs?: number;
  /** In-L1 `timeout -s KILL` for the job; default timeoutMs − TIMEOUTS.jobSlackMs. */
  jobTimeoutSec?: number;
  memMiB?: number;
  smp?: number;
  /** Hang retries; default HANG_RETRIES (1). */
  retries?: number;
  /** Files written into the job directory before boot (relative path → contents). */
  files?: Record<string, string | Uint8Array>;
  /** Extra environment for the job. */
  env?: Record<string, string>;
  /** Modules to load in L1 in addition to L1_MODULES. */
  extraModules?: string[];
  /** Extra QEMU arguments. */
  qemuArgs?: string[];
  /** Called for every serial line as it arrives. */
  onLine?: (line: string) => void;
  /** Mirror the serial console to stderr (also: env TSB_NESTED_ECHO=1). */
  echo?: boolean;
  /** Keep the job directory even on success (it is always kept on failure). */
  keepJobDir?: boolean;
}

export interface CheckResult {
  status: "pass" | "fail" | "skip";
  detail: string;
  /** From a "ms=<n>" detail prefix (tsb_check). */
  ms?: number;
}

export interface AttemptReport {
  /** Why the attempt was abandoned (hang reason). */
  reason: string;
  log: string;
  ms: number;
  /** its out/ directory, kept as out.try-N */
  outDir?: string;
}

export interface NestedResult {
  /** exitStatus 0, every check pass/skip, no hang, no L1 error. */
  ok: boolean;
  /** The job's exit status (137 = killed by the in-L1 timeout); null if the end marker never came. */
  exitStatus: number | null;
  results: Map<string, CheckResult>;
  /** Serial console of the final attempt. */
  log: string;
  /** QEMU start → TSB-JOB-START, final attempt. */
  l1BootMs: number | null;
  /** TSB-JOB-START → TSB-JOB-EXIT, final attempt. */
  jobMs: number | null;
  /** Wall time over all attempts, including asset preparation. */
  totalMs: number;
  attempts: number;
  /** Abandoned (hung) attempts before the final one. */
  retries: AttemptReport[];
  /** Set if the final attempt hung too. */
  hung?: string;
  /** TSB-L1-ERROR and TSB-MODULE-FAIL lines. */
  l1Errors: string[];
  qemuExitCode: number | null;
  /** Host path of the job directory (kept on failure or with keepJobDir; else already deleted). */
  jobDir: string;
}

// ---------------------------------------------------------------- QEMU

/** Fails loudly (throws) when QEMU is missing: nested tests must never silently skip. */
export function requireQemu(): string {
  return requireQemuCore("run nested tests");
}

interface Attempt {
  log: string;
  hung?: string;
  exitStatus: number | null;
  l1BootMs: number | null;
  jobMs: number | null;
  qemuExitCode: number | null;
  ms: number;
}

/** L1 console lines that mean an L1 CPU is wedged (soft lockup, RCU stall, hung task). */
export const L1_STALL = /watchdog: BUG: soft lockup|rcu: INFO: rcu_\w+ (self-)?detected stall|rcu_\w+ detected stalls|blocked for more than \d+ seconds/;

/** How long a stalled L1 may keep printing (its backtrace) before it is killed. */
const STALL_GRACE_MS = 5_000;

async function attempt(a: L1Assets, job: NestedJob, jobDir: string): Promise<Attempt> {
  const timeoutMs = job.timeoutMs ?? TIMEOUTS.attemptMs;
  const idleMs = job.idleTimeoutMs ?? TIMEOUTS.idleMs;
  const jobTimeoutSec = job.jobTimeoutSec ?? Math.max(10, Math.floor((timeoutMs - TIMEOUTS.jobSlackMs) / 1000));
  const nonce = randomBytes(6).toString("hex");
  const echo = job.echo ?? process.env.TSB_NESTED_ECHO === "1";
  const exitRe = new RegExp(`${MARK.exit}-${nonce} (\\d+)`);

  const t0 = performance.now();
  const proc = spawnL1(
    { assets: a, jobDir, mode: "batch", jobTimeoutSec, nonce, memMiB: job.memMiB, smp: job.smp, serial: "stdio", extraArgs: job.qemuArgs },
    {
      stdin: "pipe", // kept open and unused: the serial port's input
      stdout: "pipe",
      stderr: "pipe",
    },
  );

  let log = "";
  let partial = "";
  let lastOutput = performance.now();
  let started: number | null = null;
  let ended: number | null = null;
  let exitStatus: number | null = null;
  let hung: string | undefined;

  const onLine = (raw: string) => {
    const line = raw.replace(/\r$/, "");
    // The emulated SVM under TCG occasionally wedges an L1 CPU (testing.md: ~1 run in 33). The L1 kernel
    // says so long before any timeout; treat it as a hang and retry at once.
    // The kill waits STALL_GRACE_MS so the log gets the stalled CPU's backtrace.
    if (!hung && L1_STALL.test(line)) {
      hung = `L1 kernel stall: ${line.trim().slice(0, 160)}`;
      setTimeout(() => proc.kill(9), STALL_GRACE_MS);
    }
    if (echo) process.stderr.write(`[L1${job.name ? ` ${job.name}` : ""}] ${line}\n`);
    job.onLine?.(line);
    if (started === null && line.includes(MARK.start)) started = performance.now();
    const m = exitRe.exec(line);
    if (m) {
      exitStatus = Number(m[1]);
      ended = performance.now();
    }
  };

  const watchdog = setInterval(() => {
    const now = performance.now();
    let why: string | undefined;
    if (now - t0 > timeoutMs) why = `overall timeout (${timeoutMs} ms)`;
    else if (started === null && now - t0 > TIMEOUTS.bootMs) why = `L1 did not start the job within ${TIMEOUTS.bootMs} ms`;
    else if (now - lastOutput > idleMs) why = `no serial output for ${idleMs} ms`;
    if (why && !hung) {
      hung = why;
      proc.kill(9);
    }
  }, 500);

  const dec = new TextDecoder();
  const pump = (async () => {
    for await (const chunk of proc.stdout as ReadableStream<Uint8Array>) {
      lastOutput = performance.now();
      const text = dec.decode(chunk, { stream: true });
      log += text;
      partial += text;
      const lines = partial.split("\n");
      partial = lines.pop()!;
      for (const l of lines) onLine(l);
    }
    if (partial) onLine(partial);
  })();
  const errText = new Response(proc.stderr).text();

  const code = await proc.exited;
  clearInterval(watchdog);
  await pump;
  const stderr = (await errText).trim();
  if (stderr) log += `\n[qemu stderr] ${stderr}\n`;
  // A job that printed its end marker finished, whatever the watchdog thought during poweroff.
  if (exitStatus !== null) hung = undefined;
  return {
    log,
    hung,
    exitStatus,
    l1BootMs: started !== null ? started - t0 : null,
    jobMs: started !== null && ended !== null ? ended - started : null,
    qemuExitCode: code,
    ms: performance.now() - t0,
  };
}

// ---------------------------------------------------------------- parsing

const RESULT_RE = new RegExp(`${MARK.result} (\\S+) (pass|fail|skip)(?: (.*))?$`);

export function parseResults(log: string): Map<string, CheckResult> {
  const out = new Map<string, CheckResult>();
  for (const raw of log.split("\n")) {
    const line = raw.replace(/\r$/, "");
    const m = RESULT_RE.exec(line);
    if (!m) continue;
    const detail = (m[3] ?? "").trim();
    const ms = /^ms=(\d+)/.exec(detail);
    out.set(m[1], { status: m[2] as CheckResult["status"], detail, ...(ms ? { ms: Number(ms[1]) } : {}) });
  }
  return out;
}

/** results.txt written by tsb_result in the job dir: a second copy, immune to console interleaving. */
function parseResultsFile(path: string): Map<string, CheckResult> {
  if (!existsSync(path)) return new Map();
  const lines = readFileSync(path, "utf8").split("\n").filter((l) => l.length > 0).map((l) => `${MARK.result} ${l}`);
  return parseResults(lines.join("\n"));
}

// ---------------------------------------------------------------- entry point

/** Boot L1, run the job, power off; retry once on a hang. */
export async function runNested(job: NestedJob): Promise<NestedResult> {
  const tStart = performance.now();
  requireQemu();
  const assets = await prepareL1(job.extraModules ?? []);

  const jobDir = makeJobDir(job.name ?? "job");
  const env: Record<string, string> = {
    TSB_JOB_DIR: jobDir,
    TSB_OUT: join(jobDir, "out"),
    TSB_REPO: REPO_ROOT,
    TSB_BUN: realBun(),
    TSB_TSBHYVE: TSBHYVE_BINARY,
    ...(job.env ?? {}),
  };
  for (const [rel, data] of Object.entries(job.files ?? {})) {
    const p = join(jobDir, rel);
    mkdirSync(dirname(p), { recursive: true });
    writeFileSync(p, data);
  }

  const retries: AttemptReport[] = [];
  const maxRetries = job.retries ?? HANG_RETRIES;
  let last: Attempt;
  for (;;) {
    rmSync(join(jobDir, "results.txt"), { force: true });
    writeFileSync(join(jobDir, "job.sh"), jobPrelude(env) + job.script + "\n", { mode: 0o755 });
    last = await attempt(assets, job, jobDir);
    writeFileSync(join(jobDir, `serial-${retries.length + 1}.log`), last.log);
    if (!last.hung || retries.length >= maxRetries) break;
    // The hung attempt's out/ (its L2 console logs) is kept as out.try-N for the report.
    const outDir = join(jobDir, "out");
    const kept = join(jobDir, `out.try-${retries.length + 1}`);
    if (existsSync(outDir)) renameSync(outDir, kept);
    retries.push({ reason: last.hung, log: last.log, ms: last.ms, outDir: kept });
    if (job.echo ?? process.env.TSB_NESTED_ECHO === "1") process.stderr.write(`[nested] attempt hung (${last.hung}); retrying\n`);
  }

  const results = parseResultsFile(join(jobDir, "results.txt"));
  for (const [k, v] of parseResults(last.log)) if (!results.has(k)) results.set(k, v);
  const l1Errors = last.log
    .split("\n")
    .filter((l) => l.includes(MARK.error) || l.includes(MARK.moduleFail))
    .map((l) => l.replace(/\r$/, ""));
  const ok =
    !last.hung &&
    last.exitStatus === 0 &&
    l1Errors.length === 0 &&
    [...results.values()].every((r) => r.status !== "fail");
  if (ok && !job.keepJobDir) rmSync(jobDir, { recursive: true, force: true });

  return {
    ok,
    exitStatus: last.exitStatus,
    results,
    log: last.log,
    l1BootMs: last.l1BootMs,
    jobMs: last.jobMs,
    totalMs: performance.now() - tStart,
    attempts: retries.length + 1,
    retries,
    hung: last.hung,
    l1Errors,
    qemuExitCode: last.qemuExitCode,
    jobDir,
  };
}

/** A one-paragraph human summary, for test failure messages. */
export function describeResult(r: NestedResult): string {
  const checks = [...r.results].map(([k, v]) => `  ${v.status.padEnd(4)} ${k} ${v.detail}`).join("\n");
  return [
    `nested job: exit=${r.exitStatus} ok=${r.ok} attempts=${r.attempts}${r.hung ? ` hung=${r.hung}` : ""}`,
    `  l1Boot=${r.l1BootMs?.toFixed(0)}ms job=${r.jobMs?.toFixed(0)}ms total=${r.totalMs.toFixed(0)}ms jobDir=${r.jobDir}`,
    ...r.retries.map((x) => `  retried after: ${x.reason}${r.ok ? "" : `\n${outTails(x.outDir)}`}`),
    ...r.l1Errors.map((e) => `  ${e}`),
    checks,
    r.ok ? "" : `--- serial log (tail) ---\n${r.log.split("\n").slice(-60).join("\n")}\n${outTails(join(r.jobDir, "out"))}`,
  ].join("\n");
}

/** The last lines of every *.log in an attempt's out/ directory (L2 consoles), for failure reports. */
function outTails(dir: string | undefined, lines = 25): string {
  if (!dir || !existsSync(dir)) return "";
  return readdirSync(dir)
    .filter((f) => f.endsWith(".log"))
    .sort()
    .map((f) => `--- ${dir}/${f} (tail) ---\n${readFileSync(join(dir, f), "utf8").split("\n").slice(-lines).join("\n")}`)
    .join("\n");
}
