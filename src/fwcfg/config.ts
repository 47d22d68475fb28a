/**
 * User fw_cfg files in the configuration.
 *
 * TOML (an array of tables, so names may contain dots):
 *     [[fw_cfg]]
 *     name = "opt/com.example/greeting"
 *     string = "hello"
 *     [[fw_cfg]]
 *     name = "opt/blob"
 *     file = "blob.bin"          # relative to the config file's directory
 * Command line (bhyve's syntax): `-f name,string=TEXT` / `-f name,file=PATH` (repeatable), or the same
 * text as `-o fw_cfg=name,file=PATH`. A `fw_cfg` value may be one such string or an array of tables
 * and/or such strings.
 *
 * Rules: name 1-55 bytes (the directory entry holds 56 with the NUL), no NUL, not one of tsbhyve's own
 * files; exactly one of file/string; a file must be a readable regular file of at most 256 MiB. Entries
 * accumulate over the layers (file, -o, -f); a later layer's entry with the same name replaces the
 * earlier one, the same name twice in one layer is an error.
 */
import { accessSync, constants, statSync } from "node:fs";
import { resolve } from "node:path";
import type { Layer, Origin } from "../config/errors.ts";
import { FWCFG_BUILTIN_NAMES, FWCFG_FILE_MAX, FWCFG_NAME_MAX } from "../config/schema.ts";
import type { FwCfgUserFile } from "../config/types.ts";

type Report = (origin: Origin | undefined, key: string, message: string) => void;

const SHAPE = `expected [[fw_cfg]] entries with name and file or string (or "name,file=PATH" / "name,string=TEXT")`;

const show = (v: unknown): string => (typeof v === "string" ? JSON.stringify(v) : Array.isArray(v) ? "an array" : typeof v === "object" && v ? "a table" : String(v));

/** bhyve -f syntax: NAME,string=TEXT | NAME,file=PATH (the first comma ends the name; TEXT may contain commas). */
export function parseFwCfgArg(spec: string): { name: string; file?: string; string?: string } | undefined {
  const comma = spec.indexOf(",");
  if (comma <= 0) return undefined;
  const name = spec.slice(0, comma), rest = spec.slice(comma + 1);
  if (rest.startsWith("string=")) return { name, string: rest.slice(7) };
  if (rest.startsWith("file=") && rest.length > 5) return { name, file: rest.slice(5) };
  return undefined;
}

function checkEntry(raw: unknown, origin: Origin, report: Report): FwCfgUserFile | undefined {
  let e: Record<string, unknown>;
  if (typeof raw === "string") {
    const p = parseFwCfgArg(raw);
    if (!p) { report(origin, "fw_cfg", `${SHAPE}, got ${show(raw)}`); return undefined; }
    e = p;
  } else if (raw !== null && typeof raw === "object" && !Array.isArray(raw)) {
    e = raw as Record<string, unknown>;
  } else {
    report(origin, "fw_cfg", `${SHAPE}, got ${show(raw)}`);
    return undefined;
  }
  const extra = Object.keys(e).filter((k) => !["name", "file", "string"].includes(k));
  const name = e.name;
  if (typeof name !== "string" || name === "") {
    report(origin, "fw_cfg", `expected a name (the fw_cfg file name, e.g. "opt/example"), got ${show(name)}`);
    return undefined;
  }
  const key = `fw_cfg "${name}"`;
  if (extra.length) { report(origin, key, `unknown key ${extra.join(", ")} (expected name and file or string)`); return undefined; }
  const bytes = new TextEncoder().encode(name).length;
  if (bytes > FWCFG_NAME_MAX || name.includes("\0")) {
    report(origin, key, `expected a name of at most ${FWCFG_NAME_MAX} bytes without NUL, got ${bytes} bytes`);
    return undefined;
  }
  if (FWCFG_BUILTIN_NAMES.includes(name)) { report(origin, key, "is a file tsbhyve provides itself; choose another name (e.g. opt/...)"); return undefined; }
  const hasFile = e.file !== undefined, hasString = e.string !== undefined;
  if (hasFile === hasString) { report(origin, key, "expected exactly one of file = PATH or string = TEXT"); return undefined; }
  if (hasString) {
    if (typeof e.string !== "string") { report(origin, key, `expected string to be text, got ${show(e.string)}`); return undefined; }
    if (new TextEncoder().encode(e.string).length > FWCFG_FILE_MAX) { report(origin, key, "string too long"); return undefined; }
    return { name, string: e.string };
  }
  if (typeof e.file !== "string" || e.file === "") { report(origin, key, `expected file to be a path, got ${show(e.file)}`); return undefined; }
  const abs = resolve(origin.baseDir, e.file);
  let size: number;
  try {
    const st = statSync(abs);
    if (!st.isFile()) { report(origin, key, `expected a regular file, got ${abs}`); return undefined; }
    size = st.size;
    accessSync(abs, constants.R_OK);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    report(origin, key, code === "ENOENT" ? `file not found: ${abs}` : `cannot read ${abs} (${code ?? (err as Error).message})`);
    return undefined;
  }
  if (size > FWCFG_FILE_MAX) { report(origin, key, `file too large: ${abs} has ${size} bytes (at most 256M)`); return undefined; }
  return { name, file: abs };
}

/** Is this setting key part of the fw_cfg list (handled here, not by the schema)? */
export function isFwCfgKey(key: string): boolean {
  return key === "fw_cfg" || key.startsWith("fw_cfg.");
}

/** Collect the user files of every layer, in order. */
export function resolveFwCfg(layers: readonly Layer[], report: Report): FwCfgUserFile[] {
  const out: FwCfgUserFile[] = [];
  for (const layer of layers) {
    const seen = new Set<string>();
    for (const s of layer.settings) {
      if (!isFwCfgKey(s.key)) continue;
      if (s.key !== "fw_cfg") {
        report(s.origin, s.key, `${SHAPE} (a [fw_cfg] table is not one: write [[fw_cfg]])`);
        continue;
      }
      const values = Array.isArray(s.value) ? s.value : [s.value];
      for (const v of values) {
        const e = checkEntry(v, s.origin, report);
        if (!e) continue;
        if (seen.has(e.name)) { report(s.origin, `fw_cfg "${e.name}"`, "given twice"); continue; }
        seen.add(e.name);
        const i = out.findIndex((x) => x.name === e.name);
        if (i >= 0) out[i] = e;
        else out.push(e);
      }
    }
  }
  return out;
}
