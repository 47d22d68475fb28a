#!/usr/bin/env bun
/**
 * tsbhyve — entry point. Parses the command line, then runs, checks or demos a VM. Exit codes are
 * bhyve's: 0 reboot, 1 power-off, 2 halt, 3 triple fault, 4 error.
 */
import { parseArgs } from "./cli/args.ts";
import { dumpConfig } from "./config/dump.ts";
import type { VmConfig } from "./config/types.ts";
import { runVm } from "./vm/vm.ts";
import { runDemo } from "./cli/demo.ts";
import { installSignals } from "./cli/signals.ts";

const t0 = performance.timeOrigin;

function fail(msg: string, code = 4): never {
  process.stderr.write(`tsbhyve: ${msg.replace(/\n/g, "\ntsbhyve: ")}\n`);
  process.exit(code);
}

async function run(cfg: VmConfig): Promise<number> {
  const trace = !!process.env.TSBHYVE_TRACE;
  const r = await runVm(cfg, { t0, trace, onStart: (ctl) => installSignals(ctl) });
  if (trace) process.stderr.write(`tsbhyve: first guest instruction ${r.firstEntryMs.toFixed(1)} ms after start; exits per vCPU ${r.exits.join(",")}\n`);
  process.stderr.write(`tsbhyve: ${cfg.name}: ${r.reason} (exit ${r.code})\n`);
  return r.code;
}

async function main(): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs(process.argv.slice(2));
  } catch (e) {
    const err = e as Error & { exitCode?: number };
    if (err.exitCode !== undefined) fail(err.message, err.exitCode);
    throw e;
  }
  switch (parsed.command) {
    case "help":
      process.stdout.write(parsed.output ?? "");
      return 0;
    case "check":
      process.stdout.write(`${parsed.config!.source}: ok\n`);
      return 0;
    case "demo":
      return runDemo(parsed.demo!.layers, run);
    case "run":
      if (parsed.dump) {
        process.stdout.write(dumpConfig(parsed.config!));
        return 0;
      }
      return run(parsed.config!);
  }
}

main().then(
  (code) => process.exit(code),
  (e) => fail((e as Error).message ?? String(e)),
);
