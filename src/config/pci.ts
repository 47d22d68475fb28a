/**
 * pci.B.S.F tables: validate the slot address and the emulation name, keep the table's other keys as
 * given (dotted keys become nested tables), resolve per-device path keys against the setting's origin.
 */
import { resolve } from "node:path";
import type { Origin, Setting } from "./errors.ts";
import { coerce, PCI_DEVICES, type PciDeviceDef } from "./schema.ts";
import { show } from "./chardev.ts";

type Report = (origin: Origin | undefined, key: string, message: string) => void;
export type PciTable = { device: string; [key: string]: unknown };

const LIMITS = [["bus", 255], ["slot", 31], ["function", 7]] as const;
const ADDRESS = "expected pci.B.S.F (bus 0-255, slot 0-31, function 0-7)";

/**
 * Added when the configuration has no device of that kind and the slot is free, so a guest needs no
 * pci tables at all: [address, device, kinds that count as present].
 */
export const DEFAULT_PCI: readonly [string, string, readonly string[]][] = [
  ["0.0.0", "hostbridge", ["hostbridge", "amd_hostbridge"]],
  // 00:01.0 as on an i440FX/PIIX board: stock OVMF looks for the PIIX4 PM function at 00:01.3
  ["0.1.0", "lpc", ["lpc"]],
];

function setNested(obj: Record<string, unknown>, path: string[], value: unknown): void {
  let o = obj;
  for (const seg of path.slice(0, -1)) {
    const next = o[seg];
    o = o[seg] = next !== null && typeof next === "object" && !Array.isArray(next) ? next as Record<string, unknown> : {};
  }
  o[path.at(-1)!] = value;
}

function cmpAddr(a: string, b: string): number {
  const x = a.split(".").map(Number);
  const y = b.split(".").map(Number);
  return x[0]! - y[0]! || x[1]! - y[1]! || x[2]! - y[2]!;
}

/** Keys every table may have besides the device's own options. */
const COMMON_KEYS = new Set(["device", "bootindex", "pcireg"]);

/**
 * Check a table against its device's declared options: unknown keys, required keys, typed values
 * (written back into the table), defaults. Returns false when something was reported.
 */
function checkOptions(id: string, device: string, def: PciDeviceDef, table: Record<string, unknown>, origin: Origin,
  origins: Map<string, Origin>, report: Report): boolean {
  const opts = new Map(def.options!.map((o) => [o.key, o]));
  let ok = true;
  for (const [k, raw] of Object.entries(table)) {
    if (COMMON_KEYS.has(k) || k.startsWith("pcireg.")) continue;
    const o = opts.get(k);
    const at = origins.get(k) ?? [...origins].find(([p]) => p.startsWith(`${k}.`))?.[1] ?? origin;
    if (!o) {
      report(at, `pci.${id}.${k}`, `unknown ${device} option (expected one of ${[...opts.keys()].join(", ")})`);
      ok = false;
      continue;
    }
    const v = o.type === "string" && typeof raw === "number" ? String(raw) : raw;
    const r = coerce(o, v, at.baseDir);
    if (!r.ok) { report(at, `pci.${id}.${k}`, r.error); ok = false; continue; }
    table[k] = r.value;
  }
  for (const k of def.required ?? []) {
    if (table[k] === undefined) { report(origins.get("device") ?? origin, `pci.${id}.${k}`, `missing: ${device} needs ${k} = ${opts.get(k)?.doc ?? k}`); ok = false; }
  }
  for (const o of def.options!) {
    if (table[o.key] === undefined && o.default !== undefined) {
      const r = coerce(o, o.default, origin.baseDir);
      if (r.ok) table[o.key] = r.value;
    }
  }
  return ok;
}

export function resolvePci(settings: Setting[], report: Report): Record<string, PciTable> {
  const slots = new Map<string, { table: Record<string, unknown>; origin: Origin; origins: Map<string, Origin> }>();
  for (const s of settings) {
    const segs = s.key.split(".");
    const addr = segs.slice(1, 4);
    if (addr.length < 3 || !addr.every((a) => /^\d+$/.test(a))) {
      report(s.origin, s.key, `${ADDRESS}, got "${s.key}"`);
      continue;
    }
    const nums = addr.map(Number);
    const bad = nums.findIndex((n, i) => n > LIMITS[i]![1]);
    if (bad >= 0) {
      report(s.origin, s.key, `expected ${LIMITS[bad]![0]} 0-${LIMITS[bad]![1]}, got ${nums[bad]}`);
      continue;
    }
    const id = nums.join(".");
    let slot = slots.get(id);
    if (!slot) slots.set(id, (slot = { table: {}, origin: s.origin, origins: new Map() }));
    const rest = segs.slice(4);
    if (rest.length === 0) {
      if (!s.table) report(s.origin, s.key, `expected a table with a "device" key, got ${show(s.value)}`);
      continue;
    }
    if (s.table) continue;
    slot.origins.set(rest.join("."), s.origin);
    setNested(slot.table, rest, s.value);
  }

  const out: Record<string, PciTable> = {};
  const names = Object.keys(PCI_DEVICES);
  const implemented = names.filter((n) => PCI_DEVICES[n]!.implemented);
  let lpcAt: string | undefined;
  for (const [id, { table, origin, origins }] of slots) {
    const deviceOrigin = origins.get("device");
    const key = `pci.${id}.device`;
    const device = table.device;
    if (device === undefined) {
      report(origin, key, `missing: expected one of ${names.join(", ")}`);
      continue;
    }
    const def = typeof device === "string" ? PCI_DEVICES[device] : undefined;
    if (!def) {
      report(deviceOrigin, key, `expected a PCI emulation (${names.join(", ")}), got ${show(device)}`);
      continue;
    }
    if (!def.implemented) {
      report(deviceOrigin, key, `"${device}" is not implemented yet (available: ${implemented.join(", ")})`);
      continue;
    }
    if (def.singleOnBus0) {
      if (!id.startsWith("0.")) report(deviceOrigin, key, `"${device}" must be on bus 0`);
      else if (lpcAt) report(deviceOrigin, key, `only one "${device}" device is allowed (already at pci.${lpcAt})`);
      lpcAt ??= id;
    }
    if (def.normalize && !def.normalize(id, table, origins, origin, report)) continue;
    for (const pk of def.pathKeys ?? []) {
      const v = table[pk];
      if (typeof v === "string" && v !== "") table[pk] = resolve((origins.get(pk) ?? origin).baseDir, v);
    }
    if (def.options && !checkOptions(id, device as string, def, table, origin, origins, report)) continue;
    out[id] = table as PciTable;
  }
  const present = new Set([...slots.values()].map((s) => s.table.device));
  for (const [id, device, kinds] of DEFAULT_PCI) {
    if (!slots.has(id) && !kinds.some((k) => present.has(k))) out[id] = { device };
  }
  return Object.fromEntries(Object.entries(out).sort(([a], [b]) => cmpAddr(a, b)));
}
