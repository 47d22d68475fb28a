/** iasl helpers for the ACPI tests (not a test file itself). */
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const which = spawnSync("sh", ["-c", "command -v iasl"], { encoding: "utf8" });
export const IASL: string | undefined = which.status === 0 ? which.stdout.trim() : undefined;

export const hex = (b: Uint8Array) => [...b].map((x) => x.toString(16).padStart(2, "0")).join(" ");

export const tmp = (tag: string) => mkdtempSync(join(tmpdir(), `tsbhyve-${tag}-`));

/** Compile ASL (name optimisation off); returns the AML bytes after the 36-byte header. */
export function compileAsl(asl: string, dir = tmp("asl")): { body: Uint8Array; out: string } {
  writeFileSync(join(dir, "t.asl"), asl);
  const r = spawnSync(IASL!, ["-on", "-vr", "-p", join(dir, "t"), join(dir, "t.asl")], { encoding: "utf8" });
  const out = r.stdout + r.stderr;
  if (r.status !== 0) throw new Error(`iasl failed:\n${out}`);
  return { body: new Uint8Array(readFileSync(join(dir, "t.aml"))).subarray(36), out };
}

/** Disassemble a table with iasl -d; returns the .dsl text and iasl's output. */
export function disassemble(bytes: Uint8Array, base: string, dir = tmp("dis")): { dsl: string; out: string; path: string } {
  const file = join(dir, `${base}.dat`);
  writeFileSync(file, bytes);
  const r = spawnSync(IASL!, ["-d", file], { encoding: "utf8", cwd: dir });
  const out = r.stdout + r.stderr;
  const path = join(dir, `${base}.dsl`);
  if (r.status !== 0 || !existsSync(path)) throw new Error(`iasl -d ${base} failed:\n${out}`);
  return { dsl: readFileSync(path, "utf8"), out, path };
}

/** Recompile a disassembled .dsl; returns iasl's output and the resulting AML. */
export function recompile(dslPath: string): { out: string; status: number; aml?: Uint8Array } {
  const outBase = dslPath.replace(/\.dsl$/, "-re");
  const r = spawnSync(IASL!, ["-p", outBase, dslPath], { encoding: "utf8" });
  const aml = existsSync(`${outBase}.aml`) ? new Uint8Array(readFileSync(`${outBase}.aml`)) : undefined;
  return { out: r.stdout + r.stderr, status: r.status ?? -1, ...(aml ? { aml } : {}) };
}

/** Matches iasl output/diagnostics that mean something is wrong. */
export const BAD_OUTPUT = /warning|error|does not contain a valid|too long|could not|unknown/i;
/** Matches disassembly comments that flag bad fields. */
export const BAD_DSL = /Incorrect|Invalid|\*\*\*\*|Unknown/;
