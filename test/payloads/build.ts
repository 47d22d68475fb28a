// Builds the boot-ROM payloads in this directory (test/payloads/*.asm) with
// nasm into a content-addressed cache directory, at test time.
//
//   import { buildPayload } from "./build.ts";
//   const bin = await buildPayload("hello");                       // path to a 64 KiB .bin
//   const fast = await buildPayload("smp", { defines: { SMP_ITERS: 1000 } });
//
// The cache key covers every *.asm / *.inc file in this directory plus the
// payload name and defines, so editing any source rebuilds.  Cache dir:
// $TSBHYVE_PAYLOAD_CACHE, else <os tmpdir>/tsbhyve-payloads.  Builds write to a
// unique temp file and rename(), so parallel test files can build at once.

import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, statSync, unlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

/** Directory holding the payload sources. */
export const PAYLOAD_DIR: string = import.meta.dir;

/** Every payload image is exactly this big and is mapped to end at 4 GiB. */
export const PAYLOAD_SIZE = 0x10000;

/** Guest-physical address the image is mapped at (4 GiB - 64 KiB). */
export const PAYLOAD_LOAD_ADDRESS = 0x1_0000_0000 - PAYLOAD_SIZE;

/** Default SMP_ITERS in smp.asm (increments of the test-device counter per vCPU). */
export const SMP_ITERS_DEFAULT = 20000;

export type PayloadDefines = Record<string, string | number | boolean>;

export interface BuildOptions {
  /** Extra nasm -D defines, e.g. { SMP_ITERS: 1000 }. `true` defines the bare symbol. */
  defines?: PayloadDefines;
}

const NAME_RE = /^[a-z0-9][a-z0-9_-]*$/;

/** Names (without .asm) of every payload in this directory, sorted. */
export function listPayloads(): string[] {
  return readdirSync(PAYLOAD_DIR)
    .filter((f) => f.endsWith(".asm"))
    .map((f) => f.slice(0, -4))
    .sort();
}

/** Path of the nasm executable; throws with an install hint if it is missing. */
export function nasmPath(): string {
  const p = Bun.which("nasm");
  if (!p) {
    throw new Error(
      "nasm not found on PATH: the test payloads (test/payloads/*.asm) are assembled at test time. " +
        "Install it (Debian/Ubuntu: apt-get install nasm).",
    );
  }
  return p;
}

function cacheDir(): string {
  const dir = process.env.TSBHYVE_PAYLOAD_CACHE || join(tmpdir(), "tsbhyve-payloads");
  mkdirSync(dir, { recursive: true });
  return dir;
}

function defineArgs(defines: PayloadDefines | undefined): string[] {
  const args: string[] = [];
  for (const [key, value] of Object.entries(defines ?? {}).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(key)) throw new Error(`invalid nasm define name: ${key}`);
    if (value === false) continue;
    args.push(value === true ? `-D${key}` : `-D${key}=${value}`);
  }
  return args;
}

function sourceHash(name: string, dargs: string[]): string {
  const h = createHash("sha256");
  h.update(`payload:${name}\0`);
  for (const d of dargs) h.update(`define:${d}\0`);
  const files = readdirSync(PAYLOAD_DIR)
    .filter((f) => f.endsWith(".asm") || f.endsWith(".inc"))
    .sort();
  for (const f of files) {
    h.update(`file:${f}\0`);
    h.update(readFileSync(join(PAYLOAD_DIR, f)));
    h.update("\0");
  }
  return h.digest("hex").slice(0, 16);
}

/** Throws unless `image` looks like one of our ROMs: 64 KiB, `cli; jmp near` at 0xFFF0. */
export function checkPayloadImage(image: Uint8Array, what: string): void {
  if (image.length !== PAYLOAD_SIZE) {
    throw new Error(`${what}: image is ${image.length} bytes, expected ${PAYLOAD_SIZE} (sections overlapping 0xFFF0?)`);
  }
  if (image[0xfff0] !== 0xfa || image[0xfff1] !== 0xe9) {
    throw new Error(`${what}: no reset vector (cli; jmp near) at offset 0xFFF0`);
  }
}

/**
 * Assemble test/payloads/<name>.asm (cached) and return the path of the
 * 64 KiB flat image.  Fails loudly if nasm is missing or assembly fails.
 */
export async function buildPayload(name: string, opts: BuildOptions = {}): Promise<string> {
  if (!NAME_RE.test(name)) throw new Error(`invalid payload name: ${JSON.stringify(name)}`);
  const src = join(PAYLOAD_DIR, `${name}.asm`);
  if (!existsSync(src)) {
    throw new Error(`unknown payload ${name}: ${src} does not exist (have: ${listPayloads().join(", ")})`);
  }
  const nasm = nasmPath();
  const dargs = defineArgs(opts.defines);
  const out = join(cacheDir(), `${name}-${sourceHash(name, dargs)}.bin`);
  if (existsSync(out) && statSync(out).size === PAYLOAD_SIZE) return out;

  const tmp = `${out}.${process.pid}.${Math.random().toString(36).slice(2)}.tmp`;
  const proc = Bun.spawn({
    cmd: [nasm, "-f", "bin", "-w+all", "-I", `${PAYLOAD_DIR}/`, ...dargs, "-o", tmp, src],
    cwd: PAYLOAD_DIR,
    stdout: "pipe",
    stderr: "pipe",
  });
  const [stdout, stderr, code] = await Promise.all([
    new Response(proc.stdout).text(),
    new Response(proc.stderr).text(),
    proc.exited,
  ]);
  if (code !== 0) {
    try {
      unlinkSync(tmp);
    } catch {}
    throw new Error(`nasm failed for ${name}.asm (exit ${code}):\n${stderr}${stdout}`);
  }
  try {
    checkPayloadImage(new Uint8Array(readFileSync(tmp)), `${name}.asm`);
  } catch (e) {
    unlinkSync(tmp);
    throw e;
  }
  renameSync(tmp, out);
  return out;
}

/** Build every payload; returns name -> path. */
export async function buildAllPayloads(): Promise<Record<string, string>> {
  const result: Record<string, string> = {};
  for (const name of listPayloads()) result[name] = await buildPayload(name);
  return result;
}

/**
 * The MEMSUM value memory.asm must print: xorshift32 (13, 17, 5) from seed
 * 0x12345678 over 16384 dwords, sum = rol(sum, 5) + value.  Lowercase hex, 8 digits.
 */
export function expectedMemsum(): string {
  let x = 0x12345678;
  let sum = 0;
  for (let i = 0; i < 16384; i++) {
    x = (x ^ (x << 13)) >>> 0;
    x = (x ^ (x >>> 17)) >>> 0;
    x = (x ^ (x << 5)) >>> 0;
    sum = (((sum << 5) | (sum >>> 27)) + x) >>> 0;
  }
  return sum.toString(16).padStart(8, "0");
}

/** Split serial output into lines (CRLF or LF), dropping a trailing empty line. */
export function serialLines(serial: string): string[] {
  const lines = serial.split(/\r?\n/);
  if (lines.length > 0 && lines[lines.length - 1] === "") lines.pop();
  return lines;
}
