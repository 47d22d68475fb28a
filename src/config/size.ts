/**
 * Size and integer parsing in bhyve's spirit.
 *
 * Sizes: a number with an optional K/M/G/T suffix (case-insensitive, an optional trailing "B"/"iB" is
 * accepted: "512M", "2g", "1.5G", "4096K", "2GiB"). Units are binary (K = 1024). A plain number, given
 * as a TOML integer or a string without suffix, is in MiB, exactly like bhyve's `-m`.
 *
 * Integers: TOML integers, or strings in strtol(3) base-0 syntax: optional sign, "0x" hex, leading-0
 * octal, else decimal; the whole string must be consumed.
 */

export const KiB = 1024;
export const MiB = 1024 * KiB;
export const GiB = 1024 * MiB;
export const TiB = 1024 * GiB;

const UNITS: Record<string, number> = { "": MiB, k: KiB, m: MiB, g: GiB, t: TiB };

/** Parse a size; returns bytes, or undefined if the value is not a size. Fractions must give whole bytes. */
export function parseSize(value: unknown): number | undefined {
  if (typeof value === "number") {
    return Number.isSafeInteger(value) && value >= 0 ? value * MiB : undefined;
  }
  if (typeof value === "bigint") return undefined;
  if (typeof value !== "string") return undefined;
  const m = /^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*$/i.exec(value);
  if (!m) return undefined;
  const unit = UNITS[m[2]!.toLowerCase()]!;
  const bytes = Number(m[1]) * unit;
  if (!Number.isSafeInteger(bytes)) return undefined;
  return bytes;
}

/** Format bytes with the largest unit that divides it exactly ("512M", "2G", "4K", "100"). */
export function formatSize(bytes: number): string {
  for (const [suffix, unit] of [["T", TiB], ["G", GiB], ["M", MiB], ["K", KiB]] as const) {
    if (bytes >= unit && bytes % unit === 0) return `${bytes / unit}${suffix}`;
  }
  return `${bytes}B`;
}

/** Parse an integer like strtol(s, &end, 0) with a full-consumption check; undefined if invalid. */
export function parseInteger(value: unknown): number | undefined {
  if (typeof value === "number") return Number.isSafeInteger(value) ? value : undefined;
  if (typeof value === "bigint") {
    return value >= BigInt(Number.MIN_SAFE_INTEGER) && value <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(value) : undefined;
  }
  if (typeof value !== "string") return undefined;
  const m = /^\s*([+-]?)(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)$/.exec(value);
  if (!m) return undefined;
  const body = m[2]!;
  let n: number;
  if (/^0[xX]/.test(body)) n = parseInt(body.slice(2), 16);
  else if (body.length > 1 && body[0] === "0") n = parseInt(body.slice(1), 8);
  else n = parseInt(body, 10);
  if (!Number.isSafeInteger(n)) return undefined;
  return m[1] === "-" ? -n : n;
}

const TRUE_WORDS = new Set(["true", "on", "yes", "1"]);
const FALSE_WORDS = new Set(["false", "off", "no", "0"]);

/** Parse a boolean: TOML booleans, integers 0/1, or bhyve's words (case-insensitive). */
export function parseBool(value: unknown): boolean | undefined {
  if (typeof value === "boolean") return value;
  if (value === 0 || value === 1) return value === 1;
  if (typeof value !== "string") return undefined;
  const w = value.trim().toLowerCase();
  if (TRUE_WORDS.has(w)) return true;
  if (FALSE_WORDS.has(w)) return false;
  return undefined;
}
