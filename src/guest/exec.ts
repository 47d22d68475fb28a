/** guest/exec — run a host tool and collect its output (build-time helpers only, never on a guest's path). */

export interface RunResult {
  code: number;
  stdout: Uint8Array;
  stderr: string;
}

export async function run(
  cmd: string[],
  opts: { cwd?: string; stdin?: Uint8Array; env?: Record<string, string> } = {},
): Promise<RunResult> {
  let proc;
  try {
    proc = Bun.spawn(cmd, {
      cwd: opts.cwd,
      env: opts.env ? { ...process.env, ...opts.env } : undefined,
      stdin: opts.stdin ?? "ignore",
      stdout: "pipe",
      stderr: "pipe",
    });
  } catch (e) {
    // Most often ENOENT: the tool is not installed. Say which one.
    throw new Error(`cannot run ${cmd[0]}: ${(e as Error).message}`);
  }
  const [out, err, code] = await Promise.all([
    new Response(proc.stdout).arrayBuffer(),
    new Response(proc.stderr).text(),
    proc.exited,
  ]);
  return { code, stdout: new Uint8Array(out), stderr: err };
}

/** Like run(), but throws with the tool's stderr on a non-zero exit. */
export async function runOk(cmd: string[], opts: Parameters<typeof run>[1] = {}): Promise<Uint8Array> {
  const r = await run(cmd, opts);
  if (r.code !== 0) throw new Error(`${cmd.join(" ")} exited ${r.code}: ${r.stderr.trim()}`);
  return r.stdout;
}

export async function runText(cmd: string[], opts: Parameters<typeof run>[1] = {}): Promise<string> {
  return new TextDecoder().decode(await runOk(cmd, opts));
}
