/**
 * Boot ROM (lpc.bootrom) and its variable store (lpc.bootvars, e.g. an OVMF/EDK2 VARS file).
 *
 * The ROM is mapped read-only so that it ends exactly at 4 GiB (the reset vector at 0xFFFFFFF0 is
 * the ROM's last 16 bytes); the vars file, if any, is mapped writable directly below it. Together
 * they must fit in the 16 MiB below 4 GiB (above the LAPIC page at 0xFEE00000).
 */
import { open } from "node:fs/promises";

export const BOOTROM_MAX = 16 * 1024 * 1024;
export const BOOTROM_ALIGN = 4096;
const FOUR_GIB = 4 * 1024 * 1024 * 1024;

export class BootromError extends Error {
  override name = "BootromError";
}

export interface BootromPlan {
  rom: { gpa: number; size: number };
  vars?: { gpa: number; size: number };
}

function checkSize(size: number, what: string): void {
  if (!Number.isSafeInteger(size) || size <= 0) throw new BootromError(`${what} is empty`);
  if (size % BOOTROM_ALIGN !== 0) throw new BootromError(`${what} size ${size} is not a multiple of 4 KiB`);
  if (size > BOOTROM_MAX) throw new BootromError(`${what} is ${size} bytes; at most 16 MiB fits below 4 GiB`);
}

/** Where the ROM (and the vars file below it) go. */
export function planBootrom(romSize: number, varsSize?: number): BootromPlan {
  checkSize(romSize, "boot ROM");
  const rom = { gpa: FOUR_GIB - romSize, size: romSize };
  if (varsSize === undefined) return { rom };
  checkSize(varsSize, "boot variables file");
  if (romSize + varsSize > BOOTROM_MAX) {
    throw new BootromError(`boot ROM (${romSize} bytes) plus variables (${varsSize} bytes) exceed the 16 MiB below 4 GiB`);
  }
  return { rom, vars: { gpa: rom.gpa - varsSize, size: varsSize } };
}

async function readChecked(path: string, what: string): Promise<Uint8Array> {
  let fh;
  try {
    fh = await open(path, "r");
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new BootromError(`${what} ${path}: ${code === "ENOENT" ? "no such file" : code === "EACCES" ? "permission denied" : (e as Error).message}`);
  }
  try {
    const st = await fh.stat();
    if (!st.isFile()) throw new BootromError(`${what} ${path}: not a regular file`);
    checkSize(st.size, `${what} ${path}`);
    const buf = new Uint8Array(st.size);
    let off = 0;
    while (off < buf.length) {
      const { bytesRead } = await fh.read(buf, off, buf.length - off, off);
      if (bytesRead === 0) throw new BootromError(`${what} ${path}: file shrank while reading`);
      off += bytesRead;
    }
    return buf;
  } finally {
    await fh.close();
  }
}

/** Read and validate a boot ROM image (non-zero multiple of 4 KiB, at most 16 MiB). */
export function readBootrom(path: string): Promise<Uint8Array> {
  return readChecked(path, "boot ROM");
}

/** Read and validate a boot variables file (same size rules as the ROM). */
export function readBootvars(path: string): Promise<Uint8Array> {
  return readChecked(path, "boot variables file");
}
