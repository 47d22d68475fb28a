import { afterAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync, truncateSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs, parseLpc, parseSlot, parseTopology, UsageError } from "../../src/cli/args.ts";
import { ConfigError, layerFromObject, resolveLayers } from "../../src/config/load.ts";
import { GiB, MiB } from "../../src/config/size.ts";

const dir = mkdtempSync(join(tmpdir(), "tsbhyve-cli-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const touch = (name: string, bytes: number) => {
  const p = join(dir, name);
  writeFileSync(p, "");
  truncateSync(p, bytes);
  return p;
};
const ROM = touch("rom.fd", 1 * MiB);
const ROM2 = touch("rom2.fd", 1 * MiB);
const KERNEL = touch("bzImage", 8192);
const GUEST = join(dir, "guest.toml");
writeFileSync(GUEST, `name = "filevm"\ncpus = 4\nsockets = 2\ncores = 2\n[memory]\nsize = "512M"\n[lpc]\nbootrom = "rom.fd"\n` +
  `[lpc.com1]\npath = "stdio"\n[pci.0.0.0]\ndevice = "hostbridge"\n[pci.0.31.0]\ndevice = "lpc"\n`);

const run = (...argv: string[]) => parseArgs(argv, { cwd: dir });
function fails(argv: string[]): Error {
  try {
    run(...argv);
  } catch (e) {
    expect((e as { exitCode: number }).exitCode).toBe(4);
    return e as Error;
  }
  throw new Error("expected an error");
}

describe("flag syntax", () => {
  test("-c", () => {
    expect(parseTopology("4")).toEqual([["cpus", "4"]]);
    expect(parseTopology("cpus=8,sockets=2,cores=2,threads=2")).toEqual([["cpus", "8"], ["sockets", "2"], ["cores", "2"], ["threads", "2"]]);
    expect(parseTopology("sockets=2,cores=4")).toEqual([["sockets", "2"], ["cores", "4"]]);
    expect(() => parseTopology("4,dies=2")).toThrow(UsageError);
    expect(() => parseTopology("")).toThrow(UsageError);
  });
  test("-s", () => {
    expect(parseSlot("4,virtio-blk,/d.img,ro,sectorsize=4096")).toEqual({
      prefix: "pci.0.4.0",
      entries: [["device", "virtio-blk"], ["path", "/d.img"], ["ro", "true"], ["sectorsize", "4096"]],
    });
    expect(parseSlot("3:1,lpc").prefix).toBe("pci.0.3.1");
    expect(parseSlot("2:05:7,hostbridge").prefix).toBe("pci.2.5.7");
    expect(parseSlot("0,hostbridge").entries).toEqual([["device", "hostbridge"]]);
    expect(parseSlot("5,virtio-net,backend=tap0").entries).toEqual([["device", "virtio-net"], ["backend", "tap0"]]);
    for (const bad of ["x,lpc", "4", "1:2:3:4,lpc", "4,"]) expect(() => parseSlot(bad)).toThrow(UsageError);
  });
  test("-l", () => {
    expect(parseLpc("com1,stdio")).toEqual({ entries: [["lpc.com1.path", "stdio"]], clears: ["lpc.com1"] });
    expect(parseLpc("COM2,tcp=127.0.0.1:5000").entries).toEqual([["lpc.com2.path", "tcp=127.0.0.1:5000"]]);
    expect(parseLpc("bootrom,/r.fd,/v.fd").entries).toEqual([["lpc.bootrom", "/r.fd"], ["lpc.bootvars", "/v.fd"]]);
    expect(parseLpc("bootrom,/r.fd,fwcfg=qemu").entries).toEqual([["lpc.bootrom", "/r.fd"], ["lpc.fwcfg", "qemu"]]);
    for (const bad of ["com5,stdio", "com1", "bootrom", "tpm,swtpm,/s"]) expect(() => parseLpc(bad)).toThrow(UsageError);
  });
});

describe("commands and precedence", () => {
  test("run a file as is", () => {
    const r = run(GUEST);
    expect(r.command).toBe("run");
    expect(r.dump).toBe(false);
    expect(r.config!.name).toBe("filevm");
    expect(r.config!.memory.size).toBe(512 * MiB);
    expect(r.config!.bootrom).toBe(ROM);
  });
  test("file < -o < specific flags", () => {
    expect(run(GUEST, "-o", "memory.size=1G").config!.memory.size).toBe(GiB);
    expect(run("-o", "memory.size=1G", "-m", "2G", GUEST).config!.memory.size).toBe(2 * GiB);
    expect(run(GUEST, "-m", "1024").config!.memory.size).toBe(GiB); // plain number = MiB
    expect(run(GUEST, "-o", "x86.strictio=on", "-S").config!.memory.wired).toBe(true);
    expect(run(GUEST, "-o", "x86.strictio=on").config!.x86.strictio).toBe(true);
    expect(run(GUEST, "-o", "memory.wired=false", "-S").config!.memory.wired).toBe(true);
  });
  test("-c replaces the file's topology", () => {
    const c = run(GUEST, "-c", "2").config!;
    expect([c.cpus, c.sockets, c.cores, c.threads]).toEqual([2, 2, 1, 1]);
    const d = run(GUEST, "-c", "sockets=1,cores=2,threads=2").config!;
    expect([d.cpus, d.sockets, d.cores, d.threads]).toEqual([4, 1, 2, 2]);
  });
  test("-s replaces a slot, -l and -k replace the boot method", () => {
    const c = run(GUEST, "-s", "31,hostbridge", "-s", "1,lpc", "-l", "com1,null", "-l", "bootrom,rom2.fd").config!;
    expect(c.pci).toEqual({ "0.0.0": { device: "hostbridge" }, "0.1.0": { device: "lpc" }, "0.31.0": { device: "hostbridge" } });
    expect(c.com[0]).toEqual({ kind: "null" });
    expect(c.bootrom).toBe(ROM2);
    const k = run(GUEST, "-k", "bzImage", "--append", "console=ttyS0").config!;
    expect(k.bootrom).toBeUndefined();
    expect(k.boot).toEqual({ kernel: KERNEL, cmdline: "console=ttyS0" });
  });
  test("-s virtio-blk: first bare token is the path (cwd-relative), bare options are true", () => {
    const disk = touch("disk.img", 1 * MiB);
    const c = run(GUEST, "-s", "4,virtio-blk,disk.img,ro,sectorsize=512/4096,ser=ABC,queues=2").config!;
    expect(c.pci["0.4.0"]).toEqual({ device: "virtio-blk", path: disk, ro: true, sectorsize: "512/4096", ser: "ABC", queues: 2, queue_size: 256 });
    const e = fails([GUEST, "-s", "4,virtio-blk,nope.img,nocache=maybe,bogus=1"]);
    expect(e).toBeInstanceOf(ConfigError);
    expect(e.message.split("\n")).toEqual([
      `command line (-s 4,virtio-blk,nope.img,nocache=maybe,bogus=1): pci.0.4.0.path: file not found: ${join(dir, "nope.img")}`,
      `command line (-s 4,virtio-blk,nope.img,nocache=maybe,bogus=1): pci.0.4.0.nocache: expected a boolean (true/false, or on/off, yes/no, 1/0), got "maybe"`,
      expect.stringContaining(`command line (-s 4,virtio-blk,nope.img,nocache=maybe,bogus=1): pci.0.4.0.bogus: unknown virtio-blk option (expected one of path, ro,`),
    ]);
  });
  test("bhyve boolean flags", () => {
    const c = run(GUEST, "-D", "-e", "-H", "-u", "-w", "-Y", "-A", "-U", "01234567-89ab-cdef-0123-456789abcdef").config!;
    expect([c.destroyOnPoweroff, c.rtcLocaltime, c.uuid]).toEqual([true, false, "01234567-89ab-cdef-0123-456789abcdef"]);
    expect(c.x86).toEqual({ strictio: true, strictmsr: false, mptable: false, vmexitOnHlt: true, verbosemsr: false });
    expect(run(GUEST, "-SH").config!.memory.wired).toBe(true);
  });
  test("no config file: flags give everything, positional = VM name", () => {
    const c = run("-m", "512M", "-l", "com1,stdio", "-l", "bootrom,rom.fd", "myvm").config!;
    expect(c.name).toBe("myvm");
    expect(c.source).toBe("command line");
    expect(c.memory.size).toBe(512 * MiB);
    expect(c.com[0]).toEqual({ kind: "stdio" });
    expect(run("-o", `boot.kernel=${KERNEL}`).config!.boot!.kernel).toBe(KERNEL);
  });
  test("check, dump, demo, help", () => {
    expect(run("check", GUEST).command).toBe("check");
    expect(run("check", GUEST, "-o", "config.dump=1").dump).toBe(true);
    expect(run(GUEST, "-o", "config.dump=yes").dump).toBe(true);
    const demo = run("demo", "-m", "1G", "-o", "config.dump=true");
    expect(demo.command).toBe("demo");
    expect(demo.dump).toBe(true);
    const base = layerFromObject("built-in demo guest", { boot: { kernel: KERNEL }, memory: { size: "128M" } }, dir);
    const resolved = resolveLayers([base, ...demo.demo!.layers], "demo");
    expect(resolved.config.memory.size).toBe(GiB);
    expect(resolved.dump).toBe(true);
    const help = run("--help");
    expect(help.command).toBe("help");
    expect(help.output).toContain("Usage: tsbhyve");
    expect(help.output).toContain("memory.size");
    expect(help.output).toContain("lpc.com1.path");
    expect(run("-s", "help").output).toContain("e1000 (not implemented yet)");
    expect(run("-s", "help").output).toContain("\nvirtio-blk\n");
    expect(run("-l", "help").output).toContain("bootrom");
  });
});

describe("command-line errors", () => {
  test("usage errors", () => {
    expect(fails(["-z"])).toBeInstanceOf(UsageError);
    expect(fails(["-z"]).message).toContain("unknown option '-z'");
    expect(fails([]).message).toContain("expected <guest.toml>");
    expect(fails(["check"]).message).toContain("check: expected <guest.toml>");
    expect(fails(["a.toml", "b.toml"]).message).toContain(`expected one guest file or VM name`);
    expect(fails(["-o", "memory.size"]).message).toContain("-o memory.size: expected key=value");
    expect(fails(["demo", GUEST]).message).toContain("demo takes no config file");
    expect(fails([GUEST, "-s", "3,lpc", "-s", "3,hostbridge"]).message).toContain("slot 0.3.0 is already in use");
    expect(fails(["-m"]).message).toContain("argument missing");
    expect(fails(["rom.fd"]).message).toContain(`"rom.fd" is a file, but config files must end in .toml`);
  });
  test("config errors name the flag", () => {
    const e = fails([GUEST, "-m", "lots", "-o", "x86.strictmsr=perhaps", "-c", "300", "-s", "4,e1000,d.img"]);
    expect(e).toBeInstanceOf(ConfigError);
    expect(e.message.split("\n")).toEqual([
      `command line (-o x86.strictmsr=perhaps): x86.strictmsr: expected a boolean (true/false, or on/off, yes/no, 1/0), got "perhaps"`,
      `command line (-m lots): memory.size: expected a size like "512M" or "2G", got "lots"`,
      `command line (-c 300): cpus: expected an integer 1-255, got "300"`,
      expect.stringContaining(`command line (-s 4,e1000,d.img): pci.0.4.0.device: "e1000" is not implemented yet (available: hostbridge, amd_hostbridge, lpc,`),
    ]);
    expect(fails(["-l", "com1,stdio", "vm1"]).message).toBe(
      "command line: lpc.bootrom: expected lpc.bootrom (firmware) or boot.kernel (direct kernel boot); neither is set");
    expect(fails([join(dir, "missing.toml")]).message).toContain("cannot read config file: file not found");
    expect(fails(["-l", "bootrom,rom.fd,fwcfg=qemu", "vm"]).message).toContain("lpc.fwcfg: unknown key");
  });
});

describe("-f fw_cfg files", () => {
  writeFileSync(join(dir, "fw.bin"), "fw");
  test("-f adds to the file's list, same name replaces, -o works too", () => {
    const g = join(dir, "fw.toml");
    writeFileSync(g, `lpc.bootrom = "rom.fd"\n[[fw_cfg]]\nname = "opt/a"\nstring = "from file"\n[[fw_cfg]]\nname = "opt/b"\nstring = "b"\n`);
    const c = run(g, "-f", "opt/a,string=from flag, with comma", "-f", "opt/c,file=fw.bin", "-o", "fw_cfg=opt/d,string=o").config!;
    expect(c.fwcfg).toEqual([
      { name: "opt/a", string: "from flag, with comma" }, { name: "opt/b", string: "b" },
      { name: "opt/d", string: "o" }, { name: "opt/c", file: join(dir, "fw.bin") },
    ]);
  });
  test("-f errors", () => {
    expect(fails([GUEST, "-f", "opt/x"]).message).toContain("-f opt/x: expected name,string=TEXT or name,file=PATH");
    expect(fails([GUEST, "-f", "opt/x,data=1"])).toBeInstanceOf(UsageError);
    expect(fails([GUEST, "-f", "opt/x,file=nope.bin"]).message).toBe(`command line (-f opt/x,file=nope.bin): fw_cfg "opt/x": file not found: ${join(dir, "nope.bin")}`);
    expect(fails([GUEST, "-f", "opt/x,string=1", "-f", "opt/x,string=2"]).message).toContain(`fw_cfg "opt/x": given twice`);
  });
});
