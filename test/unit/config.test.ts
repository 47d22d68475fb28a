import { afterAll, describe, expect, test } from "bun:test";
import { mkdirSync, mkdtempSync, rmSync, truncateSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { dumpConfig } from "../../src/config/dump.ts";
import { CONFIG_EXIT_CODE, ConfigError, loadConfigFile, loadConfigText } from "../../src/config/load.ts";
import { describeKeys, KEYS } from "../../src/config/schema.ts";
import { formatSize, GiB, MiB, parseBool, parseInteger, parseSize } from "../../src/config/size.ts";
import { defaultVmUuid } from "../../src/smbios/uuid.ts";

const DEFAULT_SMBIOS = {
  bios: { vendor: "tsbhyve", version: "1.0", releaseDate: "01/01/2025" },
  system: { manufacturer: "tsbhyve", productName: "tsbhyve VM", version: "1.0", serialNumber: "None", sku: "None", familyName: "Virtual Machine" },
  board: { manufacturer: "tsbhyve", productName: "tsbhyve VM", version: "1.0", serialNumber: "None", assetTag: "None", location: "None" },
  chassis: { manufacturer: "tsbhyve", version: "1.0", serialNumber: "None", assetTag: "None", sku: "None" },
};

const dir = mkdtempSync(join(tmpdir(), "tsbhyve-config-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function file(name: string, bytes: number): string {
  const p = join(dir, name);
  writeFileSync(p, "");
  truncateSync(p, bytes);
  return p;
}
const ROM = file("rom.fd", 2 * MiB);
const BADROM = file("bad.fd", 5000);
const BIGROM = file("big.fd", 17 * MiB);
const EMPTYROM = file("empty.fd", 0);
const VARS = file("vars.fd", 128 * 1024);
const KERNEL = file("bzImage", 4096);
const INITRD = file("initrd.img", 4096);

/** Load TOML text as if it were the file guest.toml in the temp dir. */
const load = (text: string) => loadConfigText(text, join(dir, "guest.toml"));
const withRom = (text: string) => load(`lpc.bootrom = "rom.fd"\n# (line 2)\n${text}`);

/** The message of the ConfigError thrown by fn, with the temp dir stripped. */
function errorOf(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(ConfigError);
    expect((e as ConfigError).exitCode).toBe(4);
    return (e as Error).message.replaceAll(dir + "/", "");
  }
  throw new Error("expected a ConfigError");
}

describe("size / integer / boolean parsing", () => {
  test("sizes with suffixes, case-insensitive, plain = MiB", () => {
    expect(parseSize("512M")).toBe(512 * MiB);
    expect(parseSize("2g")).toBe(2 * GiB);
    expect(parseSize("1.5G")).toBe(1536 * MiB);
    expect(parseSize("4096k")).toBe(4 * MiB);
    expect(parseSize("1T")).toBe(1024 * GiB);
    expect(parseSize("2GiB")).toBe(2 * GiB);
    expect(parseSize(1024)).toBe(GiB);
    expect(parseSize("300")).toBe(300 * MiB);
    for (const bad of ["lots", "12X", "-1M", "", "1.5", 1.5, true, "M"]) {
      if (bad === "1.5") continue; // 1.5 MiB is a whole number of bytes
      expect(parseSize(bad)).toBeUndefined();
    }
    expect(formatSize(512 * MiB)).toBe("512M");
    expect(formatSize(3 * GiB)).toBe("3G");
    expect(formatSize(1536 * MiB)).toBe("1536M");
  });
  test("strtol-style integers", () => {
    expect(parseInteger("0x10")).toBe(16);
    expect(parseInteger("010")).toBe(8);
    expect(parseInteger("12")).toBe(12);
    expect(parseInteger("-3")).toBe(-3);
    expect(parseInteger("0")).toBe(0);
    expect(parseInteger(7)).toBe(7);
    expect(parseInteger("12abc")).toBeUndefined();
    expect(parseInteger("09")).toBeUndefined();
    expect(parseInteger(2.5)).toBeUndefined();
  });
  test("bhyve booleans", () => {
    for (const t of [true, "true", "on", "YES", "1", 1]) expect(parseBool(t)).toBe(true);
    for (const f of [false, "false", "Off", "no", "0", 0]) expect(parseBool(f)).toBe(false);
    expect(parseBool("maybe")).toBeUndefined();
    expect(parseBool(2)).toBeUndefined();
  });
});

describe("the documented example and defaults", () => {
  test("exact example form", () => {
    const p = join(dir, "example.toml");
    writeFileSync(p, `name = "vm1"\ncpus = 2\n[memory]\nsize = "512M"\n[lpc]\nbootrom = "${ROM}"     # firmware\n[lpc.com1]\npath = "stdio"\n`);
    const c = loadConfigFile(p);
    expect(c).toEqual({
      name: "vm1", cpus: 2, sockets: 2, cores: 1, threads: 1, cpusets: {},
      memory: { size: 512 * MiB, wired: false },
      bootrom: ROM,
      com: [{ kind: "stdio" }, undefined, undefined, undefined],
      pci: { "0.0.0": { device: "hostbridge" }, "0.1.0": { device: "lpc" } },
      acpiTables: true, destroyOnPoweroff: false, virtioMsix: true, pcTestdev: false, rtcLocaltime: true,
      uuid: defaultVmUuid("vm1"),
      smbios: DEFAULT_SMBIOS,
      fwcfg: [],
      x86: { strictio: false, strictmsr: true, mptable: true, vmexitOnHlt: false, verbosemsr: false },
      source: p,
    });
  });
  test("defaults", () => {
    const c = withRom("");
    expect(c.name).toBe("vm");
    expect([c.cpus, c.sockets, c.cores, c.threads]).toEqual([1, 1, 1, 1]);
    expect(c.memory).toEqual({ size: 256 * MiB, wired: false });
    expect(c.com).toEqual([undefined, undefined, undefined, undefined]);
    expect(c.boot).toBeUndefined();
    expect(c.uuid).toBe(defaultVmUuid("vm"));
    expect(c.smbios).toEqual(DEFAULT_SMBIOS);
    expect(c.fwcfg).toEqual([]);
    expect(c.acpiTables && c.rtcLocaltime && c.x86.strictmsr && c.x86.mptable).toBe(true);
  });
  test("every key type from TOML values and bhyve strings", () => {
    const c = withRom(`name = "web-1.test"\ncpus = "0x4"\nacpi_tables = "off"\ndestroy_on_poweroff = "yes"\n` +
      `uuid = "0123ABCD-89ab-cdef-0123-456789abcdef"\n[memory]\nsize = 1024\nwired = "on"\n[rtc]\nuse_localtime = false\n` +
      `[x86]\nstrictio = 1\nstrictmsr = "no"\nmptable = "0"\nvmexit_on_hlt = true\nverbosemsr = "TRUE"\n`);
    expect(c.name).toBe("web-1.test");
    expect(c.cpus).toBe(4);
    expect(c.memory).toEqual({ size: GiB, wired: true });
    expect([c.acpiTables, c.destroyOnPoweroff, c.rtcLocaltime]).toEqual([false, true, false]);
    expect(c.uuid).toBe("0123abcd-89ab-cdef-0123-456789abcdef");
    expect(c.x86).toEqual({ strictio: true, strictmsr: false, mptable: false, vmexitOnHlt: true, verbosemsr: true });
  });
  test("flat dotted keys, dotted TOML keys and inline tables", () => {
    expect(withRom(`"memory.size" = "1G"`).memory.size).toBe(GiB);
    expect(load(`memory.size = "1G"\nlpc.bootrom = "rom.fd"`).memory.size).toBe(GiB);
    expect(load(`memory = { size = "2G", wired = true }\nlpc = { bootrom = "rom.fd", com2 = { path = "null" } }`).com[1])
      .toEqual({ kind: "null" });
  });
});

describe("topology", () => {
  test("only cpus: sockets = cpus", () => {
    const c = withRom("cpus = 4");
    expect([c.cpus, c.sockets, c.cores, c.threads]).toEqual([4, 4, 1, 1]);
  });
  test("only topology: cpus = product", () => {
    const c = withRom("sockets = 2\ncores = 3\nthreads = 2");
    expect([c.cpus, c.sockets, c.cores, c.threads]).toEqual([12, 2, 3, 2]);
    expect(withRom("cores = 2").cpus).toBe(2);
  });
  test("consistent cpus and topology", () => {
    expect(withRom("cpus = 8\nsockets = 2\ncores = 4").cpus).toBe(8);
  });
  test("mismatch and range errors", () => {
    expect(errorOf(() => withRom("cpus = 6\nsockets = 2\ncores = 2"))).toBe(
      "guest.toml:3: cpus: expected cpus to equal sockets*cores*threads = 2*2*1 = 4, got 6");
    expect(errorOf(() => withRom("cpus = 0"))).toBe("guest.toml:3: cpus: expected an integer 1-255, got 0");
    expect(errorOf(() => withRom("sockets = 16\ncores = 16"))).toContain("expected sockets*cores*threads <= 255, got 256");
  });
});

describe("memory.size", () => {
  test("rounding and limits", () => {
    expect(withRom(`memory.size = "65M"`).memory.size).toBe(66 * MiB);
    expect(withRom(`memory.size = "2g"`).memory.size).toBe(2 * GiB);
    expect(errorOf(() => withRom(`memory.size = "32M"`))).toBe(`guest.toml:3: memory.size: expected at least 64M, got "32M"`);
    expect(errorOf(() => withRom(`memory.size = "65537K"`))).toContain("expected a multiple of 4K");
    expect(errorOf(() => withRom(`memory.size = "2T"`))).toContain("expected at most 1T");
  });
  test("bad size message", () => {
    expect(errorOf(() => load(`name = "x"\n\n[lpc]\nbootrom = "rom.fd"\n\n[memory]\nsize = "lots"`)))
      .toBe(`guest.toml:7: memory.size: expected a size like "512M" or "2G", got "lots"`);
  });
});

describe("boot sources", () => {
  test("bootrom sizes", () => {
    expect(errorOf(() => load(`lpc.bootrom = "bad.fd"`))).toBe(
      "guest.toml:1: lpc.bootrom: expected a ROM image whose size is a non-zero multiple of 4K and at most 16M, got 5000 bytes (bad.fd)");
    expect(errorOf(() => load(`lpc.bootrom = "${BIGROM}"`))).toContain(`got ${17 * MiB} bytes`);
    expect(errorOf(() => load(`lpc.bootrom = "${EMPTYROM}"`))).toContain("got 0 bytes");
    expect(errorOf(() => load(`lpc.bootrom = "nope.fd"`))).toBe("guest.toml:1: lpc.bootrom: file not found: nope.fd");
    expect(errorOf(() => load(`lpc.bootrom = "."`))).toContain("expected a regular file");
  });
  test("bootvars", () => {
    expect(withRom(`lpc.bootvars = "vars.fd"`).bootvars).toBe(VARS);
    expect(errorOf(() => load(`lpc.bootvars = "vars.fd"`))).toContain("guest.toml:1: lpc.bootvars: needs lpc.bootrom");
    const big = file("bigvars.fd", 15 * MiB);
    expect(errorOf(() => withRom(`lpc.bootvars = "${big}"`))).toContain("expected boot ROM + vars <= 16M, got 17M");
  });
  test("direct kernel boot", () => {
    const c = load(`[boot]\nkernel = "bzImage"\ninitrd = "initrd.img"\ncmdline = "console=ttyS0"`);
    expect(c.boot).toEqual({ kernel: KERNEL, initrd: INITRD, cmdline: "console=ttyS0" });
    expect(c.bootrom).toBeUndefined();
    expect(load(`boot.kernel = "bzImage"`).boot).toEqual({ kernel: KERNEL, cmdline: "" });
    expect(errorOf(() => load(`[boot]\nkernel = "bzImage"\ninitrd = "missing.img"`))).toBe(
      "guest.toml:3: boot.initrd: file not found: missing.img");
  });
  test("exclusive, required, dependent", () => {
    expect(errorOf(() => load(`lpc.bootrom = "rom.fd"\nboot.kernel = "bzImage"`))).toBe(
      "guest.toml:2: boot.kernel: cannot be used together with lpc.bootrom (set at guest.toml:1); choose firmware or direct kernel boot");
    expect(errorOf(() => load(`name = "a"`))).toBe(
      `${dir}/guest.toml: lpc.bootrom: expected lpc.bootrom (firmware) or boot.kernel (direct kernel boot); neither is set`.replace(dir + "/", ""));
    expect(errorOf(() => load(`lpc.bootrom = "rom.fd"\nboot.cmdline = "x"`))).toBe("guest.toml:2: boot.cmdline: needs boot.kernel");
  });
  test("paths are relative to the config file's directory", () => {
    const sub = join(dir, "sub");
    mkdirSync(sub, { recursive: true });
    writeFileSync(join(sub, "g.toml"), `lpc.bootrom = "../rom.fd"\nlpc.com1.path = "file=out.log"\n`);
    const c = loadConfigFile(join(sub, "g.toml"));
    expect(c.bootrom).toBe(ROM);
    expect(c.com[0]).toEqual({ kind: "file", path: join(sub, "out.log") });
  });
});

describe("chardevs", () => {
  const com1 = (spec: string) => withRom(`lpc.com1.path = ${JSON.stringify(spec)}`).com[0];
  test("all forms", () => {
    expect(com1("stdio")).toEqual({ kind: "stdio" });
    expect(com1("null")).toEqual({ kind: "null" });
    expect(com1("pty")).toEqual({ kind: "pty" });
    expect(com1("file=/tmp/x.log")).toEqual({ kind: "file", path: "/tmp/x.log" });
    expect(com1("unix=s.sock")).toEqual({ kind: "unix", path: join(dir, "s.sock") });
    expect(com1("tcp=4444")).toEqual({ kind: "tcp", addr: "127.0.0.1", port: 4444 });
    expect(com1("tcp=0.0.0.0:23")).toEqual({ kind: "tcp", addr: "0.0.0.0", port: 23 });
    expect(com1("tcp=[::1]:23")).toEqual({ kind: "tcp", addr: "::1", port: 23 });
    expect(com1("/dev/null")).toEqual({ kind: "device", path: "/dev/null" });
    const c = withRom(`lpc.com4.path = "null"`);
    expect(c.com).toEqual([undefined, undefined, undefined, { kind: "null" }]);
  });
  test("errors", () => {
    expect(errorOf(() => com1("tcp=70000"))).toBe(`guest.toml:3: lpc.com1.path: tcp=: expected a port 1-65535, got "70000"`);
    expect(errorOf(() => com1("/dev/definitely-not-here"))).toContain(`device "/dev/definitely-not-here" does not exist`);
    expect(errorOf(() => com1("/dev/shm"))).toContain("is not a character device");
    expect(errorOf(() => com1("serial"))).toContain(`expected a character device: "stdio", "null", "pty"`);
    expect(errorOf(() => withRom(`lpc.com1.path = 1`))).toContain("got 1");
  });
});

describe("pci", () => {
  test("virtio-blk: options typed, path relative to the file, defaults", () => {
    file("disk.img", 1 * MiB);
    const c = withRom(`[pci.0.4.0]\ndevice = "virtio-blk"\npath = "disk.img"\nro = "on"\nnocache = false\nsectorsize = 4096\nser = "S1"\nnodelete = true\nbootindex = 1\nqueue_size = 128\n`);
    expect(c.pci["0.4.0"]).toEqual({ device: "virtio-blk", path: join(dir, "disk.img"), ro: true, nocache: false, sectorsize: "4096", ser: "S1",
      nodelete: true, bootindex: 1, queues: 1, queue_size: 128 });
  });
  test("virtio-blk: errors with file:line", () => {
    file("disk2.img", 4096);
    const msg = errorOf(() => withRom(
      `[pci.0.4.0]\ndevice = "virtio-blk"\n[pci.0.5.0]\ndevice = "virtio-blk"\npath = "disk2.img"\nsectorsize = "4096/512"\nqueues = 0\nqueue_size = 100\n` +
      `ser = "this serial is far too long"\nfoo = 1\n[pci.0.6.0]\ndevice = "virtio-blk"\npath = "."\nsectorsize = "1000"\n`));
    expect(msg.split("\n")).toEqual([
      `guest.toml:4: pci.0.4.0.path: missing: virtio-blk needs path = disk image (regular file) or host block device`,
      `guest.toml:8: pci.0.5.0.sectorsize: the physical sector size must not be smaller than the logical one, got "4096/512"`,
      `guest.toml:9: pci.0.5.0.queues: expected an integer 1-16, got 0`,
      `guest.toml:10: pci.0.5.0.queue_size: expected a power of two 4-32768, got 100`,
      `guest.toml:11: pci.0.5.0.ser: expected a serial of at most 20 printable ASCII characters, got "this serial is far too long"`,
      expect.stringContaining(`guest.toml:12: pci.0.5.0.foo: unknown virtio-blk option (expected one of path, ro, nocache,`),
      `guest.toml:15: pci.0.6.0.path: expected a regular file or a block device, got ${dir}`,
      `guest.toml:16: pci.0.6.0.sectorsize: expected sector sizes that are powers of two from 512 to 65536, got "1000"`,
    ]);
  });
  test("hostbridge and lpc, extra keys kept, defaults", () => {
    const c = withRom(`[pci.0.0.0]\ndevice = "hostbridge"\n"pcireg.vendor" = "0x1234"\n[pci.0.1.0]\ndevice = "lpc"\n`);
    expect(c.pci).toEqual({ "0.0.0": { device: "hostbridge", pcireg: { vendor: "0x1234" } }, "0.1.0": { device: "lpc" } });
    expect(withRom(`pci.0.5.0.device = "hostbridge"`).pci).toEqual({
      "0.5.0": { device: "hostbridge" }, "0.1.0": { device: "lpc" } });
  });
  test("errors", () => {
    const msg = errorOf(() => withRom(
      `[pci.0.3.0]\ndevice = "e1000"\n[pci.0.4.0]\ndevice = "bogus"\n[pci.0.32.0]\ndevice = "lpc"\n[pci.1.2.0]\ndevice = "lpc"\n[pci.0.6.0]\npath = "x"\n`));
    expect(msg.split("\n")).toEqual([
      expect.stringContaining(`guest.toml:4: pci.0.3.0.device: "e1000" is not implemented yet (available: hostbridge, amd_hostbridge, lpc,`),
      expect.stringContaining(`guest.toml:6: pci.0.4.0.device: expected a PCI emulation (hostbridge, amd_hostbridge, lpc,`),
      `guest.toml:8: pci.0.32.0.device: expected slot 0-31, got 32`,
      `guest.toml:10: pci.1.2.0.device: "lpc" must be on bus 0`,
      `guest.toml:12: pci.0.6.0.device: missing: expected one of hostbridge, amd_hostbridge, lpc, passthru, virtio-net, virtio-blk, virtio-scsi, virtio-9p, virtio-rnd, virtio-console, virtio-input, ahci, ahci-cd, ahci-hd, e1000, uart, fbuf, xhci, nvme, hda`,
    ]);
    expect(errorOf(() => withRom(`pci.x.0.0.device = "lpc"`))).toContain("expected pci.B.S.F (bus 0-255, slot 0-31, function 0-7)");
    expect(errorOf(() => withRom(`pci.0.3.8.device = "lpc"`))).toContain("expected function 0-7, got 8");
    expect(errorOf(() => withRom(`pci.0.3.0.device = "lpc"\npci.0.4.0.device = "lpc"`))).toContain(
      `guest.toml:4: pci.0.4.0.device: only one "lpc" device is allowed (already at pci.0.3.0)`);
    expect(errorOf(() => withRom(`lpc.com1.path = "stdio"\npci.0.1.0.device = "hostbridge"`))).toContain(
      "guest.toml:3: lpc.com1.path: needs an lpc PCI device");
  });
});

describe("error reporting", () => {
  test("unknown keys, wrong types, all errors together in line order", () => {
    const msg = errorOf(() => load(
      `name = 5\ncpu = 2\n\n[memory]\nsize = true\nwired = "maybe"\n[lpc]\nbootrom = "rom.fd"\n[x86]\nstrictmsrr = 1\n[disk]\npath = "a"\n`));
    expect(msg.split("\n")).toEqual([
      `guest.toml:1: name: expected a name of 1-64 letters, digits, '.', '_' or '-' (starting with a letter or digit), got 5`,
      `guest.toml:2: cpu: unknown key (did you mean cpus?)`,
      `guest.toml:5: memory.size: expected a size like "512M" or "2G", got true`,
      `guest.toml:6: memory.wired: expected a boolean (true/false, or on/off, yes/no, 1/0), got "maybe"`,
      `guest.toml:10: x86.strictmsrr: unknown key (did you mean x86.strictmsr?)`,
      `guest.toml:12: disk.path: unknown key`,
    ]);
  });
  test("scalar where a table is expected; empty table is fine", () => {
    expect(errorOf(() => withRom(`memory = "1G"`))).toBe(`guest.toml:3: memory: expected a table with keys memory.size, memory.wired`);
    expect(withRom("[x86]").x86.mptable).toBe(true);
  });
  test("TOML syntax errors give file:line", () => {
    const msg = errorOf(() => load(`name = "a"\n\n[memory]\nsize = = 3\n`));
    expect(msg).toMatch(/^guest\.toml:4: TOML syntax error: .+ \(column \d+\)$/);
    expect(errorOf(() => load(`name = "a"\nname = "b"`))).toMatch(/^guest\.toml:2: TOML syntax error/);
  });
  test("missing config file", () => {
    expect(errorOf(() => loadConfigFile(join(dir, "nope.toml")))).toBe("nope.toml: cannot read config file: file not found");
  });
  test("exit code constant", () => expect(CONFIG_EXIT_CODE).toBe(4));
});

describe("describeKeys and dump", () => {
  test("help lists every schema key with its default", () => {
    const text = describeKeys();
    for (const k of KEYS) expect(text).toContain(k.key);
    expect(text).toMatch(/memory\.size\s+size\s+256M/);
    expect(text).toContain("pci.B.S.F.device");
  });
  test("dump round-trips", () => {
    const c = load(`name = "rt"\ncpus = 4\nsockets = 2\ncores = 2\nuuid = "01234567-89ab-cdef-0123-456789abcdef"\n` +
      `[memory]\nsize = "1536M"\n[boot]\nkernel = "bzImage"\ninitrd = "initrd.img"\ncmdline = "quiet"\n` +
      `[lpc.com1]\npath = "tcp=[::1]:9000"\n[lpc.com2]\npath = "unix=x.sock"\n[pci.0.0.0]\ndevice = "hostbridge"\n"pcireg.vendor" = "0x1"\n` +
      `[pci.0.31.0]\ndevice = "lpc"\n`);
    const text = dumpConfig(c);
    expect(text).toContain(`size = "1536M"`);
    const again = loadConfigText(text, join(dir, "dump.toml"));
    expect({ ...again, source: c.source }).toEqual(c);
  });
});

describe("fw_cfg files, bootindex, SMBIOS keys", () => {
  writeFileSync(join(dir, "blob.bin"), "blob");
  test("[[fw_cfg]] entries: file relative to the config, string", () => {
    const c = withRom(`[[fw_cfg]]\nname = "opt/org.example/a"\nfile = "blob.bin"\n[[fw_cfg]]\nname = "opt/b"\nstring = "x,y=z"\n`);
    expect(c.fwcfg).toEqual([{ name: "opt/org.example/a", file: join(dir, "blob.bin") }, { name: "opt/b", string: "x,y=z" }]);
    expect(withRom(`fw_cfg = ["opt/c,string=hi", { name = "opt/d", string = "" }]\n`).fwcfg).toEqual([{ name: "opt/c", string: "hi" }, { name: "opt/d", string: "" }]);
  });
  test("fw_cfg errors", () => {
    const e = errorOf(() => withRom(`[[fw_cfg]]\nname = "${"n".repeat(56)}"\nstring = "x"\n[[fw_cfg]]\nname = "etc/e820"\nstring = "x"\n` +
      `[[fw_cfg]]\nname = "opt/a"\nfile = "missing.bin"\n[[fw_cfg]]\nname = "opt/b"\nfile = "x"\nstring = "y"\n[[fw_cfg]]\nstring = "y"\n` +
      `[[fw_cfg]]\nname = "opt/c"\nstring = "1"\n[[fw_cfg]]\nname = "opt/c"\nstring = "2"\n[[fw_cfg]]\nname = "opt/d"\nfile = "."\n[[fw_cfg]]\nname = "opt/e"\ndata = "x"\n`));
    expect(e).toContain(`fw_cfg "${"n".repeat(56)}": expected a name of at most 55 bytes`);
    expect(e).toContain(`fw_cfg "etc/e820": is a file tsbhyve provides itself`);
    expect(e).toContain(`fw_cfg "opt/a": file not found: missing.bin`);
    expect(e).toContain(`fw_cfg "opt/b": expected exactly one of file = PATH or string = TEXT`);
    expect(e).toContain(`fw_cfg: expected a name`);
    expect(e).toContain(`fw_cfg "opt/c": given twice`);
    expect(e).toContain(`fw_cfg "opt/d": expected a regular file`);
    expect(e).toContain(`fw_cfg "opt/e": unknown key data`);
    expect(errorOf(() => withRom(`[fw_cfg]\nname = "opt/x"\nstring = "y"\n`))).toContain("write [[fw_cfg]]");
    expect(errorOf(() => withRom(`fw_cfg = "opt/x"\n`))).toContain(`fw_cfg: expected [[fw_cfg]] entries`);
  });
  test("bootindex: integer >= 0, unique", () => {
    const c = withRom(`[pci.0.3.0]\ndevice = "hostbridge"\nbootindex = "2"\n`);
    expect(c.pci["0.3.0"]!.bootindex).toBe(2);
    const e = errorOf(() => withRom(`[pci.0.3.0]\ndevice = "hostbridge"\nbootindex = 1\n[pci.0.4.0]\ndevice = "hostbridge"\nbootindex = 1\n` +
      `[pci.0.5.0]\ndevice = "hostbridge"\nbootindex = -1\n`));
    expect(e).toContain("pci.0.4.0.bootindex: bootindex 1 is already used by pci.0.3.0");
    expect(e).toContain("pci.0.5.0.bootindex: expected an integer 0-65535, got -1");
  });
  test("SMBIOS keys and explicit uuid; dump round-trips them with fw_cfg", () => {
    const c = withRom(`uuid = "AAAAAAAA-bbbb-cccc-dddd-eeeeeeeeeeee"\n[bios]\nvendor = "V"\nrelease_date = "02/29/24"\n[system]\nsku = ""\n` +
      `[board]\nlocation = "rack 4"\n[chassis]\nasset_tag = "T-1"\n[[fw_cfg]]\nname = "opt/a"\nfile = "blob.bin"\n[[fw_cfg]]\nname = "opt/b"\nstring = "s"\n`);
    expect(c.uuid).toBe("aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee");
    expect(c.smbios.bios).toEqual({ vendor: "V", version: "1.0", releaseDate: "02/29/24" });
    expect([c.smbios.system.sku, c.smbios.board.location, c.smbios.chassis.assetTag]).toEqual(["", "rack 4", "T-1"]);
    const text = dumpConfig(c);
    expect(text).toContain("[[fw_cfg]]");
    const again = loadConfigText(text, join(dir, "dump2.toml"));
    expect({ ...again, source: c.source }).toEqual(c);
    // a renamed VM gets another default UUID
    expect(withRom(`name = "other"`).uuid).not.toBe(withRom("").uuid);
  });
});
