/**
 * Layers of settings -> VmConfig. Collects every problem and throws one ConfigError listing them all.
 *
 * Rules (documented in --help):
 * - topology: cpus = sockets*cores*threads; only cpus given -> sockets=cpus, cores=threads=1;
 *   only topology given -> cpus = product; nothing given -> 1.
 * - boot: exactly one of lpc.bootrom and boot.kernel (unless requireBoot is false).
 * - pci: hostbridge at 0.0.0 and lpc at 0.1.0 are added unless present (see DEFAULT_PCI).
 */
import { ConfigError, type ConfigIssue, type Layer, type Origin, type Setting } from "./errors.ts";
import { isFwCfgKey, resolveFwCfg } from "../fwcfg/config.ts";
import { defaultVmUuid } from "../smbios/uuid.ts";
import { resolvePci } from "./pci.ts";
import { BOOTROM_MAX, coerce, KEY_MAP, KEYS } from "./schema.ts";
import { formatSize, parseInteger } from "./size.ts";
import { statSync } from "node:fs";
import { cpus as hostCpuList } from "node:os";
import { resolveCpusets } from "./cpuset.ts";
import type { ChardevSpec, SmbiosStrings, VmConfig } from "./types.ts";

export interface Resolved {
  config: VmConfig;
  /** config.dump was set: print the config and exit 0 */
  dump: boolean;
}

export interface ResolveOptions {
  /** require lpc.bootrom or boot.kernel (default true) */
  requireBoot?: boolean;
  /** host CPUs vcpu.N.cpuset may name (default: this host's) */
  hostCpus?: number;
}

export type Report = (origin: Origin | undefined, key: string, message: string) => void;

/** Stack layers: each layer first drops its `clears` prefixes from what is below, then sets its keys. */
export function mergeLayers(layers: Layer[]): Map<string, Setting> {
  const merged = new Map<string, Setting>();
  for (const layer of layers) {
    for (const p of layer.clears ?? []) {
      for (const k of [...merged.keys()]) if (k === p || k.startsWith(p + ".")) merged.delete(k);
    }
    for (const s of layer.settings) merged.set(s.key, s);
  }
  return merged;
}

function distance(a: string, b: string): number {
  const d = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    let prev = d[0]!;
    d[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const cur = d[j]!;
      d[j] = Math.min(d[j]! + 1, d[j - 1]! + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1));
      prev = cur;
    }
  }
  return d[b.length]!;
}

function unknownKey(key: string, table: boolean | undefined): string | undefined {
  const children = KEYS.filter((d) => d.key.startsWith(key + ".")).map((d) => d.key);
  if (children.length) return table ? undefined : `expected a table with keys ${children.join(", ")}`;
  const all = KEYS.map((d) => d.key);
  let near = all.filter((k) => distance(k, key) <= 2);
  const sameLeaf = all.filter((k) => k.split(".").at(-1) === key.split(".").at(-1));
  if (near.length === 0 && sameLeaf.length === 1) near = sameLeaf;
  return `unknown key${near.length ? ` (did you mean ${near.join(" or ")}?)` : ""}`;
}

interface Typed { value: unknown; origin?: Origin }

export function resolveLayers(layers: Layer[], source: string, opts: ResolveOptions = {}): Resolved {
  const issues: (ConfigIssue & { rank: number; line: number })[] = [];
  const ranks = new Map<Origin, number>();
  layers.forEach((l, r) => l.settings.forEach((s) => ranks.set(s.origin, r)));
  const report: Report = (origin, key, message) => {
    issues.push({ where: origin?.where ?? source, key, message, rank: origin ? ranks.get(origin) ?? 0 : layers.length, line: origin?.line ?? 0 });
  };

  const merged = mergeLayers(layers);
  const typed = new Map<string, Typed>();
  const pciSettings: Setting[] = [];
  const vcpuSettings: Setting[] = [];
  for (const s of merged.values()) {
    if (s.key === "pci" || s.key.startsWith("pci.")) { pciSettings.push(s); continue; }
    if (s.key.startsWith("vcpu.")) { vcpuSettings.push(s); continue; }
    if (isFwCfgKey(s.key)) continue; // collected over all layers below
    const def = KEY_MAP.get(s.key);
    if (!def) {
      const why = unknownKey(s.key, s.table);
      if (why) report(s.origin, s.key, why);
      continue;
    }
    const r = coerce(def, s.value, s.origin.baseDir);
    if (r.ok) typed.set(s.key, { value: r.value, origin: s.origin });
    else report(s.origin, s.key, r.error);
  }
  for (const def of KEYS) {
    if (typed.has(def.key) || merged.has(def.key) || def.default === undefined) continue;
    const r = coerce(def, def.default, "/");
    if (r.ok) typed.set(def.key, { value: r.value });
  }
  const get = <T>(k: string) => typed.get(k)?.value as T;
  const explicit = (k: string) => typed.get(k)?.origin;

  // CPU topology
  const cpus = get<number | undefined>("cpus");
  let [sockets, cores, threads] = ["sockets", "cores", "threads"].map((k) => get<number | undefined>(k));
  if (sockets === undefined && cores === undefined && threads === undefined) {
    sockets = cpus ?? 1; cores = 1; threads = 1;
  } else {
    sockets ??= 1; cores ??= 1; threads ??= 1;
  }
  const product = sockets * cores * threads;
  if (cpus !== undefined && cpus !== product) {
    report(explicit("cpus"), "cpus", `expected cpus to equal sockets*cores*threads = ${sockets}*${cores}*${threads} = ${product}, got ${cpus}`);
  } else if (product > 255) {
    report(explicit("sockets") ?? explicit("cores") ?? explicit("threads"), "sockets", `expected sockets*cores*threads <= 255, got ${product}`);
  }

  const cpusets = resolveCpusets(vcpuSettings, product, opts.hostCpus ?? Math.max(1, hostCpuList().length), report);

  // Boot: ROM xor kernel
  const bootrom = get<string | undefined>("lpc.bootrom");
  const bootvars = get<string | undefined>("lpc.bootvars");
  const kernel = get<string | undefined>("boot.kernel");
  const initrd = get<string | undefined>("boot.initrd");
  const req = (k: string) => explicit(k) ?? (merged.has(k) ? merged.get(k)!.origin : undefined);
  if (merged.has("lpc.bootrom") && merged.has("boot.kernel")) {
    report(req("boot.kernel"), "boot.kernel", `cannot be used together with lpc.bootrom (set at ${req("lpc.bootrom")!.where}); choose firmware or direct kernel boot`);
  } else if (opts.requireBoot !== false && !merged.has("lpc.bootrom") && !merged.has("boot.kernel")) {
    report(undefined, "lpc.bootrom", `expected lpc.bootrom (firmware) or boot.kernel (direct kernel boot); neither is set`);
  }
  for (const k of ["boot.initrd", "boot.cmdline"]) {
    if (merged.has(k) && !merged.has("boot.kernel")) report(req(k), k, "needs boot.kernel");
  }
  if (merged.has("lpc.bootvars") && !merged.has("lpc.bootrom")) report(req("lpc.bootvars"), "lpc.bootvars", "needs lpc.bootrom");
  if (bootrom && bootvars) {
    const total = statSync(bootrom).size + statSync(bootvars).size;
    if (total > BOOTROM_MAX) report(req("lpc.bootvars"), "lpc.bootvars", `expected boot ROM + vars <= 16M, got ${formatSize(total)}`);
  }

  const com: (ChardevSpec | undefined)[] = [1, 2, 3, 4].map((n) => get<ChardevSpec | undefined>(`lpc.com${n}.path`));
  const pci = resolvePci(pciSettings, report);
  checkBootindex(pci, pciSettings, report);
  const fwcfg = resolveFwCfg(layers, report);
  const hasLpc = Object.values(pci).some((d) => d.device === "lpc");
  if (!hasLpc) {
    for (const k of ["lpc.com1.path", "lpc.com2.path", "lpc.com3.path", "lpc.com4.path"]) {
      if (merged.has(k)) report(req(k), k, `needs an lpc PCI device (e.g. [pci.0.1.0] device = "lpc")`);
    }
  }

  if (issues.length) {
    issues.sort((a, b) => a.rank - b.rank || a.line - b.line);
    throw new ConfigError(issues.map(({ where, key, message }) => ({ where, key, message })));
  }

  const config: VmConfig = {
    name: get("name"),
    cpus: product,
    sockets, cores, threads,
    cpusets,
    memory: { size: get("memory.size"), wired: get("memory.wired") },
    com,
    pci,
    acpiTables: get("acpi_tables"),
    destroyOnPoweroff: get("destroy_on_poweroff"),
    virtioMsix: get("virtio_msix"),
    pcTestdev: get("lpc.pc-testdev"),
    rtcLocaltime: get("rtc.use_localtime"),
    uuid: (get<string | undefined>("uuid") ?? defaultVmUuid(get("name"))).toLowerCase(),
    smbios: smbiosStrings(get),
    fwcfg,
    x86: {
      strictio: get("x86.strictio"),
      strictmsr: get("x86.strictmsr"),
      mptable: get("x86.mptable"),
      vmexitOnHlt: get("x86.vmexit_on_hlt"),
      verbosemsr: get("x86.verbosemsr"),
    },
    source,
  };
  if (bootrom) config.bootrom = bootrom;
  if (bootvars) config.bootvars = bootvars;
  if (kernel) config.boot = { kernel, cmdline: get("boot.cmdline"), ...(initrd ? { initrd } : {}) };
  return { config, dump: get("config.dump") };
}

function smbiosStrings(get: <T>(k: string) => T): SmbiosStrings {
  return {
    bios: { vendor: get("bios.vendor"), version: get("bios.version"), releaseDate: get("bios.release_date") },
    system: {
      manufacturer: get("system.manufacturer"), productName: get("system.product_name"), version: get("system.version"),
      serialNumber: get("system.serial_number"), sku: get("system.sku"), familyName: get("system.family_name"),
    },
    board: {
      manufacturer: get("board.manufacturer"), productName: get("board.product_name"), version: get("board.version"),
      serialNumber: get("board.serial_number"), assetTag: get("board.asset_tag"), location: get("board.location"),
    },
    chassis: {
      manufacturer: get("chassis.manufacturer"), version: get("chassis.version"), serialNumber: get("chassis.serial_number"),
      assetTag: get("chassis.asset_tag"), sku: get("chassis.sku"),
    },
  };
}

/**
 * pci.B.S.F.bootindex (bhyve): an integer >= 0, unique; the devices with one form the fw_cfg "bootorder"
 * file in increasing order (src/fwcfg/bootorder.ts). The value is normalised to a number.
 */
function checkBootindex(pci: VmConfig["pci"], settings: readonly Setting[], report: Report): void {
  const used = new Map<number, string>();
  for (const [id, table] of Object.entries(pci)) {
    if (table.bootindex === undefined) continue;
    const key = `pci.${id}.bootindex`;
    const origin = settings.find((s) => s.key === key)?.origin;
    const n = parseInteger(table.bootindex);
    if (n === undefined || n < 0 || n > 0xffff) {
      report(origin, key, `expected an integer 0-65535, got ${JSON.stringify(table.bootindex)}`);
      continue;
    }
    const other = used.get(n);
    if (other) report(origin, key, `bootindex ${n} is already used by pci.${other}`);
    used.set(n, id);
    table.bootindex = n;
  }
}
