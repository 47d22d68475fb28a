/**
 * `pcireg` overrides of a pci.B.S.F table (bhyve_config(5): pcireg.vendor, .device, .revid, .subvendor,
 * .subdevice; tsbhyve adds .class): the identity registers a function reports. Values are integers or
 * strings in strtol syntax ("0x1234", "4660", "011064"); bhyve's "host" (copy the host's IDs) is not
 * supported.
 */
import type { PciFunctionSpec } from "./function.ts";

export type PciTable = { device: string; [key: string]: unknown };

const FIELDS = {
  vendor: ["vendor", 0xffff],
  device: ["device", 0xffff],
  revid: ["revision", 0xff],
  subvendor: ["subVendor", 0xffff],
  subdevice: ["subDevice", 0xffff],
  class: ["classCode", 0xffffff],
} as const satisfies Record<string, readonly [keyof PciFunctionSpec, number]>;

/** strtol-like integer parse (0x hex, leading-0 octal, decimal); undefined if not an integer. */
export function parseRegValue(v: unknown): number | undefined {
  if (typeof v === "bigint") return v >= 0n && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : undefined;
  if (typeof v === "number") return Number.isSafeInteger(v) ? v : undefined;
  if (typeof v !== "string") return undefined;
  const s = v.trim().toLowerCase();
  if (/^0x[0-9a-f]+$/.test(s)) return parseInt(s.slice(2), 16);
  if (/^0[0-7]+$/.test(s)) return parseInt(s.slice(1), 8);
  if (/^[0-9]+$/.test(s)) return parseInt(s, 10);
  return undefined;
}

/** The overrides a table asks for, checked; throws an Error naming the key on a bad value. */
export function pciregOverrides(where: string, table: PciTable): Partial<PciFunctionSpec> {
  const out: Record<string, number> = {};
  const nested = table.pcireg;
  const given: [string, unknown][] = [];
  if (nested !== undefined) {
    if (nested === null || typeof nested !== "object" || Array.isArray(nested)) throw new Error(`${where}.pcireg: expected a table of registers`);
    given.push(...Object.entries(nested as Record<string, unknown>));
  }
  for (const [k, v] of Object.entries(table)) if (k.startsWith("pcireg.")) given.push([k.slice(7), v]);
  for (const [k, v] of given) {
    const f = (FIELDS as Record<string, readonly [string, number]>)[k];
    if (!f) throw new Error(`${where}.pcireg.${k}: unknown register (expected one of ${Object.keys(FIELDS).join(", ")})`);
    const n = parseRegValue(v);
    if (n === undefined || n < 0 || n > f[1]) {
      throw new Error(`${where}.pcireg.${k}: expected an integer 0-0x${f[1].toString(16)}, got ${JSON.stringify(typeof v === "bigint" ? String(v) : v)}`);
    }
    out[f[0]] = n;
  }
  return out as Partial<PciFunctionSpec>;
}
