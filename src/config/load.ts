/**
 * TOML loading: turns a config file into a Layer of dotted-key settings (each remembering file:line),
 * stacks layers (file < -o < specific flags) and resolves them into a VmConfig.
 */
import { readFileSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { parse, TomlDate, TomlError } from "smol-toml";
import { lineOf, locateKeys } from "./locate.ts";
import { resolveLayers } from "./resolve.ts";
import type { VmConfig } from "./types.ts";
import { ConfigError, type Layer, type Origin, type Setting } from "./errors.ts";

export { CONFIG_EXIT_CODE, ConfigError, type ConfigIssue, type Layer, type Origin, type Setting } from "./errors.ts";

function isTable(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === "object" && !Array.isArray(v) && !(v instanceof TomlDate);
}

/** Flatten a parsed TOML (or plain) object into dotted-key settings; keys containing dots are split. */
export function flatten(obj: Record<string, unknown>, originOf: (key: string) => Origin, prefix: string[] = []): Setting[] {
  const out: Setting[] = [];
  for (const [k, v] of Object.entries(obj)) {
    const path = [...prefix, ...k.split(".")];
    const key = path.join(".");
    if (isTable(v)) {
      const inner = flatten(v, originOf, path);
      out.push(...(inner.length ? inner : [{ key, value: {}, origin: originOf(key), table: true }]));
    } else {
      out.push({ key, value: v, origin: originOf(key) });
    }
  }
  return out;
}

/** A layer from a plain object, e.g. the built-in demo guest (every setting gets the same origin). */
export function layerFromObject(name: string, obj: Record<string, unknown>, baseDir: string): Layer {
  return { name, settings: flatten(obj, () => ({ where: name, baseDir })) };
}

/** Parse TOML text into a layer. `file` is the name used in messages; paths resolve against its directory. */
export function parseTomlLayer(text: string, file: string): Layer {
  let doc: Record<string, unknown>;
  try {
    doc = parse(text);
  } catch (e) {
    if (e instanceof TomlError) {
      const reason = e.message.replace(/^Invalid TOML document: /, "").split("\n")[0];
      throw new ConfigError([{ where: `${file}:${e.line}`, key: "", message: `TOML syntax error: ${reason} (column ${e.column})` }]);
    }
    throw e;
  }
  const lines = locateKeys(text);
  const baseDir = dirname(resolve(file));
  const originOf = (key: string): Origin => {
    const line = lineOf(lines, key);
    return { where: line === undefined ? file : `${file}:${line}`, baseDir, line };
  };
  return { name: file, settings: flatten(doc, originOf) };
}

/** Resolve TOML text plus override layers (applied in order, later wins). */
export function loadConfigText(text: string, file: string, overrides: Layer[] = []): VmConfig {
  return resolveLayers([parseTomlLayer(text, file), ...overrides], file).config;
}

/** Read a guest TOML file; a missing/unreadable file is a ConfigError too. */
export function readConfigLayer(file: string): Layer {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (e) {
    const why = (e as NodeJS.ErrnoException).code === "ENOENT" ? "file not found" : (e as Error).message;
    throw new ConfigError([{ where: file, key: "", message: `cannot read config file: ${why}` }]);
  }
  return parseTomlLayer(text, file);
}

/** Load and resolve a guest TOML file with optional override layers. */
export function loadConfigFile(file: string, overrides: Layer[] = []): VmConfig {
  return resolveLayers([readConfigLayer(file), ...overrides], file).config;
}

export { resolveLayers };
