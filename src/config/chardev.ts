/**
 * Character device specs (lpc.comN.path and friends):
 *   stdio | null | pty | file=PATH | tcp=PORT | tcp=ADDR:PORT | tcp=[V6ADDR]:PORT | unix=PATH | /dev/...
 * Relative file=/unix= paths are resolved against baseDir. A /dev path must be an existing character device.
 */
import { statSync } from "node:fs";
import { isAbsolute, resolve } from "node:path";
import type { ChardevSpec } from "./types.ts";

export const CHARDEV_EXPECTED =
  `a character device: "stdio", "null", "pty", "file=/path", "tcp=port", "tcp=addr:port", "unix=/path" or an existing /dev/... tty`;

export type Parsed<T> = { ok: true; value: T } | { ok: false; error: string };

function parsePort(s: string): number | undefined {
  if (!/^\d{1,5}$/.test(s)) return undefined;
  const n = Number(s);
  return n >= 1 && n <= 65535 ? n : undefined;
}

function parseTcp(rest: string): Parsed<ChardevSpec> {
  let addr = "127.0.0.1";
  let portText = rest;
  const v6 = /^\[([0-9a-fA-F:.%\w]+)\]:(.*)$/.exec(rest);
  if (v6) {
    addr = v6[1]!;
    portText = v6[2]!;
  } else if (rest.includes(":")) {
    const i = rest.lastIndexOf(":");
    addr = rest.slice(0, i);
    portText = rest.slice(i + 1);
    if (addr === "" || /\s/.test(addr)) return { ok: false, error: `tcp=: bad address "${addr}"` };
  }
  const port = parsePort(portText);
  if (port === undefined) return { ok: false, error: `tcp=: expected a port 1-65535, got "${portText}"` };
  return { ok: true, value: { kind: "tcp", addr, port } };
}

/** Parse a chardev spec string. */
export function parseChardev(value: unknown, baseDir: string): Parsed<ChardevSpec> {
  if (typeof value !== "string") return { ok: false, error: `expected ${CHARDEV_EXPECTED}, got ${show(value)}` };
  const s = value.trim();
  if (s === "stdio" || s === "null" || s === "pty") return { ok: true, value: { kind: s } };
  const eq = s.indexOf("=");
  if (eq > 0) {
    const kind = s.slice(0, eq);
    const rest = s.slice(eq + 1);
    if (kind === "tcp") return parseTcp(rest);
    if (kind === "file" || kind === "unix") {
      if (rest === "") return { ok: false, error: `${kind}=: expected a path` };
      return { ok: true, value: { kind, path: resolve(baseDir, rest) } };
    }
  }
  if (isAbsolute(s) && s.startsWith("/dev/")) {
    let isChar = false;
    try {
      isChar = statSync(s).isCharacterDevice();
    } catch {
      return { ok: false, error: `device "${s}" does not exist` };
    }
    if (!isChar) return { ok: false, error: `"${s}" is not a character device` };
    return { ok: true, value: { kind: "device", path: s } };
  }
  return { ok: false, error: `expected ${CHARDEV_EXPECTED}, got ${show(value)}` };
}

/** The spec string for a parsed chardev (inverse of parseChardev). */
export function formatChardev(c: ChardevSpec): string {
  switch (c.kind) {
    case "stdio":
    case "null":
    case "pty":
      return c.kind;
    case "file":
    case "unix":
      return `${c.kind}=${c.path}`;
    case "tcp":
      return `tcp=${c.addr.includes(":") ? `[${c.addr}]` : c.addr}:${c.port}`;
    case "device":
      return c.path;
  }
}

/** Render a value for error messages: strings quoted, others as TOML-ish text. */
export function show(v: unknown): string {
  if (typeof v === "string") return JSON.stringify(v);
  if (Array.isArray(v)) return "an array";
  if (v instanceof Date) return `a date (${v.toISOString()})`;
  if (v !== null && typeof v === "object") return "a table";
  return String(v);
}
