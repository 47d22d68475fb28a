/**
 * The configuration schema, declared as data. Every key is a bhyve_config(5) dotted path; in TOML a
 * dotted path maps onto tables ("memory.size" = [memory] size). This table is the single source of
 * truth for validation, defaults and the `tsbhyve --help` key listing.
 */
import { statSync, type Stats } from "node:fs";
import { isAbsolute, resolve } from "node:path";
import { CHARDEV_EXPECTED, formatChardev, parseChardev, show, type Parsed } from "./chardev.ts";
import type { Origin } from "./errors.ts";
import type { ChardevSpec } from "./types.ts";
import { formatSize, KiB, MiB, parseBool, parseInteger, parseSize, TiB } from "./size.ts";

export type KeyType = "string" | "int" | "bool" | "size" | "enum" | "path" | "chardev";

export interface KeyDef {
  key: string;
  type: KeyType;
  /** Default as a user would write it (goes through the same coercion); absent = unset. */
  default?: string | number | boolean;
  doc: string;
  /** int: inclusive range; size: inclusive range in bytes */
  min?: number;
  max?: number;
  /** size: round up to a multiple of this many bytes */
  roundTo?: number;
  /** enum: allowed values */
  values?: readonly string[];
  /** string: required shape, and how to describe it */
  pattern?: RegExp;
  patternDoc?: string;
  /** path: extra check on the existing regular file */
  checkFile?: (st: Stats) => string | undefined;
  /** path: a host block device is accepted too (disk images) */
  blockdev?: boolean;
  /** extra check on the coerced value: an error message, or undefined when good */
  check?: (value: unknown) => string | undefined;
}

const MAX_CPUS = 255;
/** Longest fw_cfg file name (the directory entry holds 56 bytes including the NUL). */
export const FWCFG_NAME_MAX = 55;
/** Largest user fw_cfg file. */
export const FWCFG_FILE_MAX = 256 * MiB;
/** fw_cfg file names tsbhyve itself provides (a user file may not take them). */
export const FWCFG_BUILTIN_NAMES: readonly string[] = [
  "bootorder", "etc/e820", "etc/smbios/smbios-tables", "etc/smbios/smbios-anchor", "opt/bhyve/hw.ncpu",
  "etc/acpi/tables", "etc/acpi/rsdp", "etc/table-loader",
];
/** Boot ROM region: [4 GiB - 16 MiB, 4 GiB). */
export const BOOTROM_MAX = 16 * MiB;

function checkBootrom(st: Stats): string | undefined {
  if (st.size === 0 || st.size % (4 * KiB) !== 0 || st.size > BOOTROM_MAX) {
    return `expected a ROM image whose size is a non-zero multiple of 4K and at most 16M, got ${st.size} bytes`;
  }
  return undefined;
}

const topo = (key: string, doc: string): KeyDef => ({ key, type: "int", min: 1, max: MAX_CPUS, doc });

/** SMBIOS string keys: printable text (UTF-8), at most 64 characters; "" = not specified. */
const SMBIOS_TEXT = /^[^\u0000-\u001f\u007f]{0,64}$/u;
const smbios = (key: string, dflt: string, doc: string): KeyDef => ({
  key, type: "string", default: dflt, pattern: SMBIOS_TEXT, patternDoc: "text of at most 64 characters without control characters",
  doc: `SMBIOS ${doc}`,
});

const com = (n: number): KeyDef => ({
  key: `lpc.com${n}.path`, type: "chardev",
  doc: `COM${n} 16550 UART backend: stdio | null | pty | file=PATH | tcp=[ADDR:]PORT | unix=PATH | /dev/TTY`,
});

export const KEYS: readonly KeyDef[] = [
  { key: "name", type: "string", default: "vm", doc: "VM name", pattern: /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/,
    patternDoc: "a name of 1-64 letters, digits, '.', '_' or '-' (starting with a letter or digit)" },
  topo("cpus", `vCPUs, 1-${MAX_CPUS}; must equal sockets*cores*threads (default: that product, or 1)`),
  topo("sockets", "CPU sockets (only cpus given: sockets=cpus, cores=threads=1)"),
  topo("cores", "cores per socket"),
  topo("threads", "threads per core"),
  { key: "memory.size", type: "size", default: "256M", min: 64 * MiB, max: TiB, roundTo: 2 * MiB,
    doc: "guest RAM: K/M/G/T suffix, plain number = MiB; 64M-1T, must be a multiple of 4K, rounded up to 2M" },
  { key: "memory.wired", type: "bool", default: false, doc: "wire (mlock) guest memory" },
  { key: "lpc.bootrom", type: "path", checkFile: checkBootrom,
    doc: "firmware image (e.g. OVMF/BHYVE_UEFI.fd) mapped to end at 4G; size a multiple of 4K, <= 16M" },
  { key: "lpc.bootvars", type: "path", doc: "writable UEFI variable store placed below the boot ROM (needs lpc.bootrom)" },
  com(1), com(2), com(3), com(4),
  { key: "lpc.pc-testdev", type: "bool", default: false,
    doc: "test device (ports 0xE0 counter, 0xF4 exit) for tsbhyve's own payload tests" },
  { key: "boot.kernel", type: "path", doc: "Linux bzImage for direct kernel boot (exclusive with lpc.bootrom)" },
  { key: "boot.initrd", type: "path", doc: "initramfs for direct kernel boot" },
  { key: "boot.cmdline", type: "string", default: "", doc: "kernel command line for direct kernel boot" },
  { key: "acpi_tables", type: "bool", default: true, doc: "generate ACPI tables" },
  { key: "destroy_on_poweroff", type: "bool", default: false, doc: "destroy the VM when the guest powers off" },
  { key: "virtio_msix", type: "bool", default: true, doc: "virtio devices interrupt through MSI-X (false: one MSI vector, else INTx, as bhyve's virtio_msix=false)" },
  { key: "rtc.use_localtime", type: "bool", default: true, doc: "RTC keeps local time (false: UTC)" },
  { key: "uuid", type: "string", pattern: /^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$/,
    patternDoc: "a UUID like 01234567-89ab-cdef-0123-456789abcdef",
    doc: "SMBIOS system UUID (default: a version-5 UUID of the VM name, the same on every run)" },
  smbios("bios.vendor", "tsbhyve", "BIOS vendor (type 0)"),
  smbios("bios.version", "1.0", "BIOS version (type 0; a leading X.Y also sets the release numbers)"),
  { key: "bios.release_date", type: "string", default: "01/01/2025", pattern: /^(0[1-9]|1[0-2])\/(0[1-9]|[12][0-9]|3[01])\/(\d{2}|\d{4})$/,
    patternDoc: "a date mm/dd/yyyy (or mm/dd/yy)", doc: "SMBIOS BIOS release date, mm/dd/yyyy (type 0)" },
  smbios("system.manufacturer", "tsbhyve", "system manufacturer (type 1)"),
  smbios("system.product_name", "tsbhyve VM", "system product name (type 1)"),
  smbios("system.version", "1.0", "system version (type 1)"),
  smbios("system.serial_number", "None", "system serial number (type 1)"),
  smbios("system.sku", "None", "system SKU number (type 1)"),
  smbios("system.family_name", "Virtual Machine", "system family (type 1)"),
  smbios("board.manufacturer", "tsbhyve", "baseboard manufacturer (type 2)"),
  smbios("board.product_name", "tsbhyve VM", "baseboard product (type 2)"),
  smbios("board.version", "1.0", "baseboard version (type 2)"),
  smbios("board.serial_number", "None", "baseboard serial number (type 2)"),
  smbios("board.asset_tag", "None", "baseboard asset tag (type 2)"),
  smbios("board.location", "None", "baseboard location in chassis (type 2)"),
  smbios("chassis.manufacturer", "tsbhyve", "chassis manufacturer (type 3)"),
  smbios("chassis.version", "1.0", "chassis version (type 3)"),
  smbios("chassis.serial_number", "None", "chassis serial number (type 3)"),
  smbios("chassis.asset_tag", "None", "chassis asset tag (type 3)"),
  smbios("chassis.sku", "None", "chassis SKU number (type 3)"),
  { key: "x86.strictio", type: "bool", default: false, doc: "exit on accesses to unemulated I/O ports" },
  { key: "x86.strictmsr", type: "bool", default: true, doc: "inject #GP on accesses to unimplemented MSRs" },
  { key: "x86.mptable", type: "bool", default: true, doc: "generate an MP table" },
  { key: "x86.vmexit_on_hlt", type: "bool", default: false, doc: "exit to the host when a vCPU executes HLT" },
  { key: "x86.verbosemsr", type: "bool", default: false, doc: "log accesses to unimplemented MSRs" },
  { key: "config.dump", type: "bool", default: false, doc: "print the resolved configuration as TOML and exit" },
];

export const KEY_MAP: ReadonlyMap<string, KeyDef> = new Map(KEYS.map((d) => [d.key, d]));

/** bhyve's PCI emulation names. `implemented` flips as device issues land. */
export interface PciDeviceDef {
  implemented: boolean;
  /** keys in the pci.B.S.F table holding host file paths (resolved against the config file's directory) */
  pathKeys?: readonly string[];
  /**
   * The table's own keys (relative to pci.B.S.F), checked and converted to typed values; when given,
   * any other key (besides device, bootindex and pcireg.*) is an error. Absent: keys are kept as written.
   */
  options?: readonly KeyDef[];
  /** keys listed by --help for a device whose `normalize` checks its own keys (no `options`) */
  helpOptions?: readonly KeyDef[];
  /** options that must be present */
  required?: readonly string[];
  /** only one instance, on bus 0 */
  singleOnBus0?: boolean;
  /**
   * Device-specific check and rewrite of the whole table into its canonical form (e.g. virtio-console's
   * port.N sub-tables), before pathKeys/options. `origins` maps each dotted key below pci.B.S.F to where
   * it was set. Returns false when something was reported.
   */
  normalize?(id: string, table: Record<string, unknown>, origins: ReadonlyMap<string, Origin>, origin: Origin,
    report: (origin: Origin | undefined, key: string, message: string) => void): boolean;
}

const isPow2 = (n: number) => Number.isSafeInteger(n) && n > 0 && (n & (n - 1)) === 0;

/** bhyve's sectorsize=logical[/physical]: powers of two 512-65536, physical >= logical. */
export function checkSectorSize(v: unknown): string | undefined {
  const m = /^(\d+)(?:\/(\d+))?$/.exec(String(v).trim());
  if (!m) return `expected logical[/physical] sector sizes like 512 or 512/4096, got ${show(v)}`;
  const logical = Number(m[1]), physical = m[2] === undefined ? logical : Number(m[2]);
  for (const x of [logical, physical]) {
    if (!isPow2(x) || x < 512 || x > 65536) return `expected sector sizes that are powers of two from 512 to 65536, got ${show(v)}`;
  }
  return physical < logical ? `the physical sector size must not be smaller than the logical one, got ${show(v)}` : undefined;
}

/** virtio-blk's keys (bhyve's block options plus tsbhyve's queue shape). */
export const VIRTIO_BLK_OPTIONS: readonly KeyDef[] = [
  { key: "path", type: "path", blockdev: true, doc: "disk image (regular file) or host block device" },
  { key: "ro", type: "bool", doc: "read-only: the guest sees VIRTIO_BLK_F_RO, writes fail" },
  { key: "nocache", type: "bool", doc: "open with O_DIRECT (bypass the host page cache)" },
  { key: "direct", type: "bool", doc: "open with O_SYNC (bhyve: same as sync)" },
  { key: "sync", type: "bool", doc: "open with O_SYNC" },
  { key: "sectorsize", type: "string", check: checkSectorSize, doc: "logical[/physical] sector sizes, e.g. 512/4096" },
  { key: "nodelete", type: "bool", doc: "do not offer discard (TRIM)" },
  { key: "ser", type: "string", pattern: /^[\x20-\x7e]{0,20}$/, patternDoc: "a serial of at most 20 printable ASCII characters",
    doc: "serial number (GET_ID; default BHYVE-XXXX-XXXX-XXXX from the path's MD5)" },
  { key: "queues", type: "int", default: 1, min: 1, max: 16, doc: "request queues (VIRTIO_BLK_F_MQ), 1-16" },
  { key: "iothreads", type: "int", min: 0, max: 64,
    doc: "block Workers running this disk's requests in parallel (bhyve: 8); 0 = on the I/O Worker; default 8 for nocache/direct/sync files and block devices, 0 for page-cache files" },
  { key: "queue_size", type: "int", default: 256, min: 4, max: 32768, check: (v) => isPow2(v as number) ? undefined : `expected a power of two 4-32768, got ${show(v)}`,
    doc: "descriptors per queue, a power of two 4-32768" },
];

/**
 * virtio-console ports (as bhyve: at most 16, node port.N with name and path). Port N uses queues 2N+2
 * and 2N+3: 34 queues for 16 ports (the transport serves up to 64).
 */
export const CONSOLE_MAX_PORTS = 16;
/** A port name (PORT_NAME; udev makes /dev/virtio-ports/NAME of it): printable ASCII, no '/', 1-127 bytes. */
const CONSOLE_NAME = /^[\x21-\x2e\x30-\x7e]{1,127}$/;

/**
 * Where a console port's host end is: a plain path is a Unix socket tsbhyve creates and listens on (one
 * client), as in bhyve; an existing /dev character device is that tty; any chardev spec (pty, tcp=...,
 * unix=..., file=..., null) is that chardev. Relative paths resolve against baseDir.
 */
export function consolePortSpec(raw: unknown, baseDir: string): Parsed<ChardevSpec> {
  if (typeof raw !== "string" || raw.trim() === "") return fail(`expected a Unix socket path or ${CHARDEV_EXPECTED}, got ${show(raw)}`);
  const s = raw.trim();
  if (["stdio", "null", "pty"].includes(s) || /^(tcp|unix|file)=/.test(s)) return parseChardev(s, baseDir);
  if (isAbsolute(s) && s.startsWith("/dev/")) {
    let chr = false;
    try { chr = statSync(s).isCharacterDevice(); } catch { /* not there: a socket path */ }
    if (chr) return parseChardev(s, baseDir);
  }
  return { ok: true, value: { kind: "unix", path: resolve(baseDir, s) } };
}

/** The canonical string of a port's host end (a socket as its absolute path, like bhyve's). */
export function formatConsolePort(c: ChardevSpec): string {
  return c.kind === "unix" ? c.path : formatChardev(c);
}

/**
 * virtio-console's table: bhyve's command-line pairs NAME=PATH (`-s 5,virtio-console,port1=/tmp/c1.sock`:
 * a port named "port1", numbered in order from the lowest free number, as bhyve numbers them from 0),
 * the same pairs as keys of the TOML table, or bhyve's config tree `port.N.name` / `port.N.path`. The result is
 * `port = { "N": { name?, path } }` with canonical paths.
 */
function normalizeConsole(id: string, table: Record<string, unknown>, origins: ReadonlyMap<string, Origin>, origin: Origin,
  report: (origin: Origin | undefined, key: string, message: string) => void): boolean {
  let ok = true;
  const bad = (at: Origin | undefined, key: string, msg: string) => { report(at ?? origin, `pci.${id}.${key}`, msg); ok = false; };
  const ports = new Map<number, { name?: unknown; path?: unknown; at: Origin; legacyKey?: string }>();
  const legacy: [string, unknown, Origin][] = [];
  const valueAt = (path: string): unknown => path.split(".").reduce<unknown>((o, k) => (o !== null && typeof o === "object" ? (o as Record<string, unknown>)[k] : undefined), table);
  for (const [key, at] of origins) {
    const segs = key.split(".");
    if (segs[0] === "device" || segs[0] === "bootindex" || segs[0] === "pcireg") continue;
    if (segs[0] === "port" && segs.length > 1) {
      if (segs.length !== 3 || !/^\d+$/.test(segs[1]!) || !(segs[2] === "name" || segs[2] === "path")) {
        bad(at, key, `expected port.N.name or port.N.path (N = 0-${CONSOLE_MAX_PORTS - 1})`);
        continue;
      }
      const n = Number(segs[1]);
      if (n >= CONSOLE_MAX_PORTS) {
        bad(at, key, `expected a port number 0-${CONSOLE_MAX_PORTS - 1} (bhyve's 16 ports), got ${n}`);
        continue;
      }
      const p = ports.get(n) ?? { at };
      ports.set(n, p);
      p[segs[2] as "name" | "path"] = valueAt(key);
      if (segs[2] === "path") p.at = at;
      continue;
    }
    if (key === "path") {
      bad(at, key, `expected NAME=PATH port pairs (e.g. -s 5,virtio-console,port1=/tmp/c1.sock) or port.N.path, got a bare path`);
      continue;
    }
    legacy.push([key, valueAt(key), at]);
  }
  for (const [name, path, at] of legacy) {
    let n = 0;
    while (ports.has(n)) n++;
    if (n >= CONSOLE_MAX_PORTS) { bad(at, name, `too many ports: at most ${CONSOLE_MAX_PORTS}`); continue; }
    ports.set(n, { name, path, at, legacyKey: name });
  }
  const out: Record<string, { name?: string; path: string }> = {};
  const paths = new Map<string, number>();
  for (const n of [...ports.keys()].sort((a, b) => a - b)) {
    const p = ports.get(n)!;
    const key = (sub: string) => p.legacyKey ?? `port.${n}.${sub}`;
    if (p.name !== undefined && (typeof p.name !== "string" || !CONSOLE_NAME.test(p.name))) {
      bad(p.at, key("name"), `expected a port name of 1-127 printable ASCII characters without spaces or '/', got ${show(p.name)}`);
      continue;
    }
    if (p.path === undefined) { bad(p.at, key("path"), "missing: a port needs path = a Unix socket path (or a chardev like \"pty\")"); continue; }
    const r = consolePortSpec(p.path, p.at.baseDir);
    if (!r.ok) { bad(p.at, key("path"), r.error); continue; }
    const canon = formatConsolePort(r.value);
    if (r.value.kind !== "null" && r.value.kind !== "pty" && paths.has(canon)) {
      bad(p.at, key("path"), `${canon} is already used by port ${paths.get(canon)}`);
      continue;
    }
    paths.set(canon, n);
    out[String(n)] = p.name === undefined ? { path: canon } : { name: p.name as string, path: canon };
  }
  for (const k of Object.keys(table)) if (!(k === "device" || k === "bootindex" || k === "pcireg" || k.startsWith("pcireg."))) delete table[k];
  table.port = out;
  return ok;
}

/**
 * virtio-input's keys: bhyve's `path` (a host evdev device, mirrored) or tsbhyve's built-in `model`,
 * exactly one of them (checked by normalizeInput).
 */
export const VIRTIO_INPUT_OPTIONS: readonly KeyDef[] = [
  { key: "path", type: "string", check: checkEvdevPath, doc: "host evdev device (/dev/input/eventN) whose identity and events the guest gets" },
  { key: "model", type: "enum", values: ["keyboard", "tablet"], doc: "built-in device without a host device: keyboard | tablet (events injected by tsbhyve)" },
  { key: "name", type: "string", pattern: /^[\x20-\x7e]{1,128}$/, patternDoc: "a name of 1-128 printable ASCII characters",
    doc: "device name the guest sees (default: the host device's, or \"tsbhyve virtio keyboard/tablet\")" },
  { key: "serial", type: "string", pattern: /^[\x20-\x7e]{0,128}$/, patternDoc: "a serial of at most 128 printable ASCII characters", doc: "serial (ID_SERIAL)" },
  { key: "hello", type: "bool", doc: "test aid: answer each LED change from the guest with a KEY_H press and release" },
];

/** A virtio-input path: an existing character device. */
function checkEvdevPath(v: unknown): string | undefined {
  const p = String(v);
  let st: Stats;
  try { st = statSync(p); } catch { return `file not found: ${p}`; }
  return st.isCharacterDevice() ? undefined : `expected a character device like /dev/input/event0, got ${p}`;
}

function normalizeInput(id: string, table: Record<string, unknown>, _origins: ReadonlyMap<string, Origin>, origin: Origin,
  report: (origin: Origin | undefined, key: string, message: string) => void): boolean {
  const hasPath = table.path !== undefined, hasModel = table.model !== undefined;
  if (hasPath === hasModel) {
    report(_origins.get(hasPath ? "model" : "device") ?? origin, `pci.${id}.${hasPath ? "model" : "path"}`, hasPath
      ? "expected either path (a host evdev device) or model (keyboard | tablet), not both"
      : "missing: expected path = \"/dev/input/eventN\" or model = \"keyboard\" | \"tablet\"");
    return false;
  }
  if (hasPath && table.hello !== undefined) {
    report(_origins.get("hello") ?? origin, `pci.${id}.hello`, "only for a built-in model");
    return false;
  }
  return true;
}

/**
 * virtio-scsi's keys. bhyve's virtio-scsi hands a CTL port (/dev/cam/ctl, FreeBSD only) to the guest;
 * tsbhyve serves disk images itself: `path` (+ the block options) is LUN 0 of target 0, `lun.N.path`
 * (+ per-LUN block options) LUN N (1-255). Canonical form: LUN 0's keys at the top, `lun = { "N": {...} }`.
 */
const SCSI_LUN_KEYS = ["path", "ro", "nocache", "direct", "sync", "sectorsize", "nodelete", "ser"];
export const VIRTIO_SCSI_LUN_OPTIONS: readonly KeyDef[] = VIRTIO_BLK_OPTIONS.filter((o) => SCSI_LUN_KEYS.includes(o.key))
  .map((o) => o.key === "ro" ? { ...o, doc: "read-only: MODE SENSE reports write protect, writes fail with DATA PROTECT" }
    : o.key === "ser" ? { ...o, doc: "unit serial number (VPD page 0x80; default BHYVE-XXXX-XXXX-XXXX from the path's MD5)" }
    : o.key === "nodelete" ? { ...o, doc: "do not offer UNMAP / WRITE SAME with unmap (thin provisioning)" } : o);
export const VIRTIO_SCSI_MAX_LUN = 255;
export const VIRTIO_SCSI_OPTIONS: readonly KeyDef[] = [
  ...VIRTIO_SCSI_LUN_OPTIONS.map((o) => o.key === "path" ? { ...o, doc: "LUN 0: disk image (regular file) or host block device" } : o),
  { key: "queues", type: "int", default: 1, min: 1, max: 16, doc: "request queues (num_queues), 1-16" },
  { key: "queue_size", type: "int", default: 256, min: 4, max: 32768, check: (v) => isPow2(v as number) ? undefined : `expected a power of two 4-32768, got ${show(v)}`,
    doc: "descriptors per request queue, a power of two 4-32768" },
];

function normalizeScsi(id: string, table: Record<string, unknown>, origins: ReadonlyMap<string, Origin>, origin: Origin,
  report: (origin: Origin | undefined, key: string, message: string) => void): boolean {
  let ok = true;
  const bad = (at: Origin | undefined, key: string, msg: string) => { report(at ?? origin, `pci.${id}.${key}`, msg); ok = false; };
  const top = new Map(VIRTIO_SCSI_OPTIONS.map((o) => [o.key, o]));
  const per = new Map(VIRTIO_SCSI_LUN_OPTIONS.map((o) => [o.key, o]));
  const valueAt = (path: string): unknown => path.split(".").reduce<unknown>((o, k) => (o !== null && typeof o === "object" ? (o as Record<string, unknown>)[k] : undefined), table);
  const coerced = (def: KeyDef, raw: unknown, at: Origin, key: string): unknown => {
    const r = coerce(def, def.type === "string" && typeof raw === "number" ? String(raw) : raw, at.baseDir);
    if (!r.ok) { bad(at, key, r.error); return undefined; }
    return r.value;
  };
  const out: Record<string, unknown> = {};
  const luns: Record<string, Record<string, unknown>> = {};
  const lunAt = new Map<string, Origin>();
  for (const [key, at] of origins) {
    const segs = key.split(".");
    if (segs[0] === "device" || segs[0] === "bootindex" || segs[0] === "pcireg") continue;
    if (segs[0] === "lun") {
      if (segs.length !== 3 || !/^\d+$/.test(segs[1]!) || !per.has(segs[2]!)) {
        bad(at, key, `expected lun.N.KEY with N = 1-${VIRTIO_SCSI_MAX_LUN} and KEY one of ${[...per.keys()].join(", ")}`);
        continue;
      }
      const n = Number(segs[1]);
      if (n < 1 || n > VIRTIO_SCSI_MAX_LUN) {
        bad(at, key, n === 0 ? "LUN 0 is the table's own path (and block options)" : `expected a LUN number 1-${VIRTIO_SCSI_MAX_LUN}, got ${segs[1]}`);
        continue;
      }
      const v = coerced(per.get(segs[2]!)!, valueAt(key), at, key);
      if (v !== undefined) (luns[String(n)] ??= {})[segs[2]!] = v;
      if (segs[2] === "path" || !lunAt.has(String(n))) lunAt.set(String(n), at);
      continue;
    }
    const def = segs.length === 1 ? top.get(key) : undefined;
    if (!def) { bad(at, key, `unknown virtio-scsi option (expected one of ${[...top.keys()].join(", ")}, or lun.N.KEY)`); continue; }
    const v = coerced(def, table[key], at, key);
    if (v !== undefined) out[key] = v;
  }
  if (table.path === undefined) bad(origins.get("device") ?? origin, "path", "missing: virtio-scsi needs path = a disk image or block device (LUN 0)");
  for (const o of VIRTIO_SCSI_OPTIONS) {
    if (out[o.key] === undefined && o.default !== undefined) {
      const r = coerce(o, o.default, origin.baseDir);
      if (r.ok) out[o.key] = r.value;
    }
  }
  const paths = new Map<string, string>();
  if (typeof out.path === "string") paths.set(out.path, "LUN 0");
  for (const n of Object.keys(luns).sort((a, b) => Number(a) - Number(b))) {
    const l = luns[n]!;
    if (l.path === undefined) { bad(lunAt.get(n), `lun.${n}.path`, "missing: a LUN needs path = a disk image or block device"); continue; }
    const prev = paths.get(l.path as string);
    if (prev) { bad(lunAt.get(n), `lun.${n}.path`, `${l.path} is already ${prev}`); continue; }
    paths.set(l.path as string, `LUN ${n}`);
  }
  for (const k of Object.keys(table)) if (!(k === "device" || k === "bootindex" || k === "pcireg" || k.startsWith("pcireg."))) delete table[k];
  Object.assign(table, out);
  if (Object.keys(luns).length) table.lun = luns;
  return ok;
}

/**
 * virtio-net's keys (bhyve's: backend, mac, mtu; tsbhyve's queue_size). bhyve's command line form
 * `-s 3,virtio-net,tap0` gives the backend as the first bare value (`path` here), taken as `backend`.
 */
export const VIRTIO_NET_OPTIONS: readonly KeyDef[] = [
  { key: "backend", type: "string", pattern: /^(\/dev\/)?(?!\.{1,2}$)[\x21-\x2e\x30-\x39\x3b-\x7e]{1,15}$/,
    patternDoc: "a tap interface name of 1-15 characters like \"tap0\" (no '/', ':' or spaces; \"tap%d\" lets the kernel pick)",
    doc: "Linux tap interface (attached if it exists, created if not); a leading /dev/ is ignored" },
  { key: "mac", type: "string", check: checkMac,
    doc: "guest MAC address xx:xx:xx:xx:xx:xx, unicast, not all-zero (default: bhyve's 58:9c:fc:xx:xx:xx from the VM name, slot and function)" },
  { key: "mtu", type: "int", min: 68, max: 65535, doc: "MTU offered to the guest (VIRTIO_NET_F_MTU), 68-65535; also set on a tap tsbhyve creates" },
  { key: "queue_size", type: "int", default: 256, min: 64, max: 32768, check: (v) => isPow2(v as number) ? undefined : `expected a power of two 64-32768, got ${show(v)}`,
    doc: "descriptors per queue (receive and transmit), a power of two 64-32768" },
];

function checkMac(v: unknown): string | undefined {
  const s = String(v);
  if (!/^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$/.test(s)) return `expected a MAC address like 58:9c:fc:00:00:01, got ${show(v)}`;
  const b = s.split(":").map((x) => parseInt(x, 16));
  if (b[0]! & 1) return `expected a unicast MAC address (the first byte's low bit clear), got ${s}`;
  if (b.every((x) => x === 0)) return "expected a MAC address other than 00:00:00:00:00:00";
  return undefined;
}

/** bhyve's bare first value is the backend; backends other than a tap are FreeBSD's. */
function normalizeNet(id: string, table: Record<string, unknown>, origins: ReadonlyMap<string, Origin>, origin: Origin,
  report: (origin: Origin | undefined, key: string, message: string) => void): boolean {
  if (table.path !== undefined) {
    if (table.backend !== undefined) { report(origins.get("path") ?? origin, `pci.${id}.path`, "give the tap once: backend = \"tapN\" (or bhyve's bare first value), not both"); return false; }
    table.backend = table.path;
    delete table.path;
  }
  if (table.backend === undefined) { report(origins.get("device") ?? origin, `pci.${id}.backend`, "missing: virtio-net needs backend = a tap interface like \"tap0\""); return false; }
  const b = String(table.backend);
  if (/^(netgraph|slirp|vale|netmap:)/.test(b)) { report(origins.get("backend") ?? origins.get("path") ?? origin, `pci.${id}.backend`, `the ${b.split(/[:,]/)[0]} backend is not available; tsbhyve has Linux tap interfaces (backend = "tap0")`); return false; }
  return true;
}

/**
 * virtio-9p's keys, bhyve's config tree: `sharename` (the mount tag the guest names), `path` (the host
 * folder), `ro`. bhyve's command-line pair form `-s 4,virtio-9p,NAME=/path[,ro]` (share NAME of /path;
 * also as a TOML key NAME = "/path") is rewritten into that form by normalize9p.
 */
export const NINEP_TAG_MAX = 255;
export const VIRTIO_9P_OPTIONS: readonly KeyDef[] = [
  { key: "sharename", type: "string", pattern: /^[\x21-\x7e]{1,255}$/, patternDoc: `a mount tag of 1-${NINEP_TAG_MAX} printable ASCII characters without spaces`,
    doc: "mount tag the guest names (mount -t 9p -o trans=virtio TAG /mnt)" },
  { key: "path", type: "string", check: checkShareDir, doc: "host folder shared with the guest (the guest cannot leave it)" },
  { key: "ro", type: "bool", default: false, doc: "read-only share: every change and every open for writing fails with EROFS" },
];

/** A share's host folder: an existing directory. */
function checkShareDir(v: unknown): string | undefined {
  const p = String(v);
  let st: Stats;
  try { st = statSync(p); } catch { return `folder not found: ${p}`; }
  return st.isDirectory() ? undefined : `expected a directory to share, got ${p}`;
}

/** bhyve's pair form NAME=/path (no `path` key) → sharename = NAME, path = /path. */
function normalize9p(id: string, table: Record<string, unknown>, origins: ReadonlyMap<string, Origin>, origin: Origin,
  report: (origin: Origin | undefined, key: string, message: string) => void): boolean {
  if (table.path !== undefined) return true; // config-tree form: checked as options
  const pairs = Object.keys(table).filter((k) => !(k === "device" || k === "bootindex" || k === "ro" || k === "pcireg" || k.startsWith("pcireg.")));
  const at = (k: string) => origins.get(k) ?? [...origins].find(([p]) => p.startsWith(`${k}.`))?.[1] ?? origin;
  if (pairs.length !== 1 || typeof table[pairs[0]!] !== "string") {
    const k = pairs[1] ?? pairs[0];
    report(k ? at(k) : origins.get("device") ?? origin, `pci.${id}.${k ?? "path"}`, pairs.length > 1
      ? `one share per device: expected NAME=/path (e.g. -s 4,virtio-9p,hostshare=/srv/share) or sharename + path, got ${pairs.join(", ")}`
      : `missing: expected NAME=/path (e.g. -s 4,virtio-9p,hostshare=/srv/share) or sharename = TAG and path = FOLDER`);
    return false;
  }
  const name = pairs[0]!, path = table[name] as string;
  delete table[name];
  table.sharename = name;
  table.path = resolve(at(name).baseDir, path);
  return true;
}

export const PCI_DEVICES: Readonly<Record<string, PciDeviceDef>> = {
  hostbridge: { implemented: true },
  amd_hostbridge: { implemented: true },
  lpc: { implemented: true, singleOnBus0: true },
  passthru: { implemented: false },
  "virtio-net": { implemented: true, options: VIRTIO_NET_OPTIONS, required: ["backend"], normalize: normalizeNet },
  "virtio-blk": { implemented: true, pathKeys: ["path"], options: VIRTIO_BLK_OPTIONS, required: ["path"] },
  "virtio-scsi": {
    implemented: true, normalize: normalizeScsi, required: ["path"],
    helpOptions: [...VIRTIO_SCSI_OPTIONS, ...VIRTIO_SCSI_LUN_OPTIONS.map((o) => ({ ...o, key: `lun.N.${o.key}`, doc: `LUN N (1-${VIRTIO_SCSI_MAX_LUN}): ${o.doc}` }))],
  },
  "virtio-9p": { implemented: true, pathKeys: ["path"], options: VIRTIO_9P_OPTIONS, required: ["sharename", "path"], normalize: normalize9p },
  "virtio-rnd": { implemented: true },
  "virtio-console": { implemented: true, normalize: normalizeConsole },
  "virtio-input": { implemented: true, pathKeys: ["path"], options: VIRTIO_INPUT_OPTIONS, normalize: normalizeInput },
  ahci: { implemented: false },
  "ahci-cd": { implemented: false },
  "ahci-hd": { implemented: false },
  e1000: { implemented: false },
  uart: { implemented: false },
  fbuf: { implemented: false },
  xhci: { implemented: false },
  nvme: { implemented: false },
  hda: { implemented: false },
};

/** What a key type accepts, for "expected ..." messages. */
export function expected(def: KeyDef): string {
  switch (def.type) {
    case "string": return def.patternDoc ?? "a string";
    case "int": return `an integer ${def.min ?? "-inf"}-${def.max ?? "inf"}`;
    case "bool": return "a boolean (true/false, or on/off, yes/no, 1/0)";
    case "size": return `a size like "512M" or "2G"`;
    case "enum": return `one of ${def.values!.join(", ")}`;
    case "path": return def.blockdev ? "a path to an existing file or block device" : "a path to an existing file";
    case "chardev": return CHARDEV_EXPECTED;
  }
}

const fail = (error: string): Parsed<never> => ({ ok: false, error });

function coerceSize(def: KeyDef, raw: unknown): Parsed<number> {
  const bytes = parseSize(raw);
  if (bytes === undefined) return fail(`expected ${expected(def)}, got ${show(raw)}`);
  if (bytes % (4 * KiB) !== 0) return fail(`expected a multiple of 4K, got ${show(raw)} (${bytes} bytes)`);
  const v = def.roundTo ? Math.ceil(bytes / def.roundTo) * def.roundTo : bytes;
  if (def.min !== undefined && v < def.min) return fail(`expected at least ${formatSize(def.min)}, got ${show(raw)}`);
  if (def.max !== undefined && v > def.max) return fail(`expected at most ${formatSize(def.max)}, got ${show(raw)}`);
  return { ok: true, value: v };
}

function coercePath(def: KeyDef, raw: unknown, baseDir: string): Parsed<string> {
  if (typeof raw !== "string" || raw === "") return fail(`expected ${expected(def)}, got ${show(raw)}`);
  const abs = resolve(baseDir, raw);
  let st: Stats;
  try {
    st = statSync(abs);
  } catch {
    return fail(`file not found: ${abs}`);
  }
  if (!st.isFile() && !(def.blockdev && st.isBlockDevice())) return fail(`expected a regular file${def.blockdev ? " or a block device" : ""}, got ${abs}`);
  const bad = def.checkFile?.(st);
  return bad ? fail(`${bad} (${abs})`) : { ok: true, value: abs };
}

/** Convert a raw TOML/command-line value to the key's typed value. */
export function coerce(def: KeyDef, raw: unknown, baseDir: string): Parsed<unknown> {
  const r = coerceType(def, raw, baseDir);
  const bad = r.ok && def.check ? def.check(r.value) : undefined;
  return bad ? fail(bad) : r;
}

function coerceType(def: KeyDef, raw: unknown, baseDir: string): Parsed<unknown> {
  switch (def.type) {
    case "string": {
      if (typeof raw !== "string") return fail(`expected ${def.patternDoc ?? "a string"}, got ${show(raw)}`);
      if (def.pattern && !def.pattern.test(raw)) return fail(`expected ${def.patternDoc}, got ${show(raw)}`);
      return { ok: true, value: raw };
    }
    case "int": {
      const n = parseInteger(raw);
      if (n === undefined || (def.min !== undefined && n < def.min) || (def.max !== undefined && n > def.max)) {
        return fail(`expected ${expected(def)}, got ${show(raw)}`);
      }
      return { ok: true, value: n };
    }
    case "bool": {
      const b = parseBool(raw);
      return b === undefined ? fail(`expected ${expected(def)}, got ${show(raw)}`) : { ok: true, value: b };
    }
    case "enum":
      return typeof raw === "string" && def.values!.includes(raw)
        ? { ok: true, value: raw }
        : fail(`expected ${expected(def)}, got ${show(raw)}`);
    case "size":
      return coerceSize(def, raw);
    case "path":
      return coercePath(def, raw, baseDir);
    case "chardev":
      return parseChardev(raw, baseDir);
  }
}

/** The config key listing for `tsbhyve --help`, generated from KEYS and PCI_DEVICES. */
export function describeKeys(): string {
  const rows = KEYS.map((d) => [d.key, d.type, d.default === undefined ? "-" : d.default === "" ? '""' : String(d.default), d.doc]);
  rows.push(["pci.B.S.F.device", "enum", "-", "PCI device at bus B (0-255), slot S (0-31), function F (0-7); " +
    "other keys of the table are the device's options (bootindex = N: boot order for firmware)"]);
  for (const [name, d] of Object.entries(PCI_DEVICES)) {
    for (const o of d.options ?? d.helpOptions ?? []) {
      rows.push([`pci.B.S.F.${o.key}`, o.type, o.default === undefined ? "-" : String(o.default),
        `${name}${d.required?.includes(o.key) ? " (required)" : ""}: ${o.doc}`]);
    }
  }
  rows.push(["fw_cfg", "array", "-", `extra fw_cfg files: [[fw_cfg]] name = "opt/x" and file = PATH or string = TEXT ` +
    `(-f name,file=PATH | name,string=TEXT); name 1-${FWCFG_NAME_MAX} chars, not a built-in file`]);
  const header = ["key", "type", "default", "meaning"];
  const w = [0, 1, 2].map((c) => Math.max(...[header, ...rows].map((r) => r[c]!.length)));
  const fmt = (r: string[]) => `  ${r[0]!.padEnd(w[0]!)}  ${r[1]!.padEnd(w[1]!)}  ${r[2]!.padEnd(w[2]!)}  ${r[3]}`;
  const impl = Object.keys(PCI_DEVICES).filter((n) => PCI_DEVICES[n]!.implemented);
  const later = Object.keys(PCI_DEVICES).filter((n) => !PCI_DEVICES[n]!.implemented);
  return [
    "Config keys (TOML tables or dotted paths; -o key=value sets any of them):",
    fmt(header),
    ...rows.map(fmt),
    `  PCI devices: ${impl.join(", ")} (not implemented yet: ${later.join(", ")})`,
    "  Booleans: true/false or on/off, yes/no, 1/0. Integers: TOML integers or strtol syntax (0x1f, 017).",
    "  Relative paths in a config file are resolved against the file's directory; on the command line, the cwd.",
  ].join("\n");
}
