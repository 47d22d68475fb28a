/**
 * Command line: `tsbhyve [options] <guest.toml | vmname>`, `tsbhyve check ...`, `tsbhyve demo [options]`.
 * Flags use bhyve(8) syntax and override the file: file < -o key=value < specific flags (-c -m -S -s -l -k ...).
 * parseArgs never exits or prints; the caller prints `output`/errors and exits (errors: exit code 4).
 */
import { Command, CommanderError } from "commander";
import { existsSync, statSync } from "node:fs";
import { resolve } from "node:path";
import { CONFIG_EXIT_CODE, readConfigLayer, resolveLayers, type Layer, type Setting } from "../config/load.ts";
import { describeKeys, PCI_DEVICES } from "../config/schema.ts";
import { parseFwCfgArg } from "../fwcfg/config.ts";
import { parseBool } from "../config/size.ts";
import type { VmConfig } from "../config/types.ts";

/** Bad command-line syntax (exit code 4, like config errors). */
export class UsageError extends Error {
  readonly exitCode = CONFIG_EXIT_CODE;
  constructor(message: string) {
    super(`${message}\n(see tsbhyve --help)`);
    this.name = "UsageError";
  }
}

export interface DemoOptions {
  /** command-line override layers to stack on top of the built-in demo guest (see resolveLayers) */
  layers: Layer[];
}

export interface ParsedCommand {
  command: "run" | "check" | "demo" | "help";
  /** run/check: the resolved configuration */
  config?: VmConfig;
  demo?: DemoOptions;
  /** -o config.dump=1: print dumpConfig(config) and exit 0 (for demo: after resolving the demo guest) */
  dump: boolean;
  /** help: text to print to stdout before exiting 0 */
  output?: string;
}

const TOPOLOGY = ["cpus", "sockets", "cores", "threads"];
const LPC_COM = /^com[1-4]$/;

const RULES = `
Commands:
  tsbhyve [options] <guest.toml>    run the guest described by guest.toml
  tsbhyve [options] <vmname>        run a guest given entirely by flags (an argument not ending in .toml is the VM name)
  tsbhyve check [options] <guest.toml | vmname>   validate the configuration only (exit 0 if valid, 4 if not)
  tsbhyve demo [options]            boot the built-in default guest (flags override it)

Precedence: defaults < guest.toml < -o key=value < specific flags. -c replaces all of cpus/sockets/cores/threads,
-s replaces that slot's whole pci.B.S.F table, -l bootrom and -k replace the other boot method,
-f adds fw_cfg files to the config file's [[fw_cfg]] list (an entry of the same name is replaced).
A config file is optional: flags must then give a boot method (-l bootrom,FILE or -k KERNEL).
hostbridge (pci.0.0.0) and lpc (pci.0.1.0) are added unless the config has one (or the slot is taken). Errors exit with status 4.
vcpu.N.cpuset = "0-3,6" (TOML: [vcpu.N] cpuset = ...) keeps vCPU N's thread on those host CPUs; -p N:CPU lists them one by one.
Note: unlike bhyve(8), -k takes a kernel, not a key=value config file (use a TOML file instead).
`;

function setting(key: string, value: unknown, flag: string, cwd: string): Setting {
  return { key, value, origin: { where: `command line (${flag})`, baseDir: cwd } };
}

function collect(v: string, prev: string[] | undefined): string[] {
  return [...(prev ?? []), v];
}

function buildProgram(): Command {
  return new Command("tsbhyve")
    .usage("[options] <guest.toml | vmname>  |  check [options] <guest.toml>  |  demo [options]")
    .description("a bhyve-class hypervisor in TypeScript")
    .argument("[args...]")
    .option("-c, --cpus <topology>", "[[cpus=]n][,sockets=n][,cores=n][,threads=n]")
    .option("-m, --memory <size>", "guest RAM, e.g. 512M or 2G (plain number = MiB)")
    .option("-o, --option <key=value>", "set any config key (repeatable)", collect)
    .option("-p, --pin <vcpu:hostcpu>", "run vCPU only on that host CPU (repeatable; a vCPU's -p's make its vcpu.N.cpuset)", collect)
    .option("-S, --wired", "wire guest memory (memory.wired)")
    .option("-s, --slot <spec>", "PCI device [bus:]slot[:func],emulation[,conf] (repeatable; -s help)", collect)
    .option("-l, --lpc <spec>", "LPC device: com1..com4,CHARDEV or bootrom,ROM[,VARS] (repeatable; -l help)", collect)
    .option("-k, --kernel <file>", "direct kernel boot: Linux bzImage (boot.kernel)")
    .option("--initrd <file>", "initramfs for -k (boot.initrd)")
    .option("--append <cmdline>", "kernel command line for -k (boot.cmdline)")
    .option("-D, --destroy-on-poweroff", "destroy the VM on guest power-off")
    .option("-e, --strictio", "exit on unemulated I/O ports (x86.strictio)")
    .option("-H, --vmexit-on-hlt", "exit to the host on HLT (x86.vmexit_on_hlt)")
    .option("-u, --utc", "RTC keeps UTC (rtc.use_localtime=false)")
    .option("-U, --uuid <uuid>", "SMBIOS system UUID")
    .option("-f, --fw-cfg <name,string=text|name,file=path>", "add a fw_cfg file (repeatable; fw_cfg key)", collect)
    .option("-w, --ignore-msrs", "ignore unimplemented MSRs (x86.strictmsr=false)")
    .option("-Y, --without-mptable", "no MP table (x86.mptable=false)")
    .option("-A, --acpi", "generate ACPI tables (always on; accepted for bhyve compatibility)")
    .helpOption("-h, --help", "show this help")
    .addHelpText("after", `${RULES}\n${describeKeys()}\n`)
    .exitOverride()
    .allowExcessArguments(false);
}

/** -c [[cpus=]n][,sockets=n][,cores=n][,threads=n] */
export function parseTopology(spec: string): [string, string][] {
  const out: [string, string][] = [];
  spec.split(",").forEach((tok, i) => {
    const eq = tok.indexOf("=");
    if (eq < 0 && i === 0 && tok !== "") out.push(["cpus", tok]);
    else if (eq > 0 && TOPOLOGY.includes(tok.slice(0, eq))) out.push([tok.slice(0, eq), tok.slice(eq + 1)]);
    else throw new UsageError(`-c ${spec}: expected [[cpus=]n][,sockets=n][,cores=n][,threads=n], bad part "${tok}"`);
  });
  return out;
}

/** -s [bus:]slot[:func],emulation[,conf]: returns the pci.B.S.F prefix and the table's key/value pairs. */
export function parseSlot(spec: string): { prefix: string; entries: [string, string][] } {
  const [addr = "", emul = "", ...conf] = spec.split(",");
  const parts = addr.split(":");
  if (parts.length > 3 || !parts.every((p) => /^\d+$/.test(p)) || emul === "") {
    throw new UsageError(`-s ${spec}: expected [bus:]slot[:func],emulation[,conf]`);
  }
  const [b, s, f] = parts.length === 3 ? parts : parts.length === 2 ? ["0", ...parts] : ["0", parts[0]!, "0"];
  const entries: [string, string][] = [["device", emul]];
  let first = true;
  for (const tok of conf) {
    if (tok === "") continue;
    const eq = tok.indexOf("=");
    if (eq > 0) entries.push([tok.slice(0, eq), tok.slice(eq + 1)]);
    else entries.push([first ? "path" : tok, first ? tok : "true"]);
    first = false;
  }
  return { prefix: `pci.${Number(b)}.${Number(s)}.${Number(f)}`, entries };
}

/** -l com1,CHARDEV | -l bootrom,ROM[,VARS][,key=value]: returns [key, value] pairs and the prefixes it replaces. */
export function parseLpc(spec: string): { entries: [string, string][]; clears: string[] } {
  const comma = spec.indexOf(",");
  const dev = (comma < 0 ? spec : spec.slice(0, comma)).toLowerCase();
  const rest = comma < 0 ? "" : spec.slice(comma + 1);
  if (LPC_COM.test(dev)) {
    if (rest === "") throw new UsageError(`-l ${spec}: expected ${dev},stdio|null|pty|file=PATH|tcp=[ADDR:]PORT|unix=PATH|/dev/TTY`);
    return { entries: [[`lpc.${dev}.path`, rest]], clears: [`lpc.${dev}`] };
  }
  if (dev === "bootrom") {
    const [rom = "", ...more] = rest.split(",");
    if (rom === "") throw new UsageError(`-l ${spec}: expected bootrom,ROMFILE[,VARSFILE]`);
    const entries: [string, string][] = [["lpc.bootrom", rom]];
    more.forEach((tok, i) => {
      const eq = tok.indexOf("=");
      if (eq > 0) entries.push([`lpc.${tok.slice(0, eq)}`, tok.slice(eq + 1)]);
      else if (i === 0 && tok !== "") entries.push(["lpc.bootvars", tok]);
      else throw new UsageError(`-l ${spec}: unexpected "${tok}"`);
    });
    return { entries, clears: ["lpc.bootrom", "lpc.bootvars", "boot"] };
  }
  throw new UsageError(`-l ${spec}: unknown LPC device "${dev}" (supported: com1, com2, com3, com4, bootrom)`);
}

type Opts = Record<string, string | string[] | boolean | undefined>;

/** The two override layers from parsed options: [-o layer, specific-flags layer]. */
function flagLayers(o: Opts, vmname: string | undefined, cwd: string): Layer[] {
  const oLayer: Layer = { name: "-o", settings: [] };
  for (const kv of (o.option as string[] | undefined) ?? []) {
    const eq = kv.indexOf("=");
    if (eq <= 0) throw new UsageError(`-o ${kv}: expected key=value`);
    oLayer.settings.push(setting(kv.slice(0, eq), kv.slice(eq + 1), `-o ${kv}`, cwd));
  }
  const flags: Layer = { name: "flags", settings: [], clears: [] };
  const set = (key: string, value: unknown, flag: string) => flags.settings.push(setting(key, value, flag, cwd));
  if (typeof o.cpus === "string") {
    flags.clears!.push(...TOPOLOGY);
    for (const [k, v] of parseTopology(o.cpus)) set(k, v, `-c ${o.cpus}`);
  }
  if (typeof o.memory === "string") set("memory.size", o.memory, `-m ${o.memory}`);
  const pins = new Map<number, string[]>();
  for (const spec of (o.pin as string[] | undefined) ?? []) {
    const m = /^(\d+):(\d+)$/.exec(spec);
    if (!m) throw new UsageError(`-p ${spec}: expected vcpu:hostcpu, e.g. -p 0:2`);
    const list = pins.get(Number(m[1])) ?? [];
    list.push(m[2]!);
    pins.set(Number(m[1]), list);
  }
  for (const [v, list] of pins) set(`vcpu.${v}.cpuset`, list.join(","), `-p ${list.map((c) => `${v}:${c}`).join(" -p ")}`);
  if (o.wired) set("memory.wired", true, "-S");
  const seen = new Set<string>();
  for (const spec of (o.slot as string[] | undefined) ?? []) {
    const { prefix, entries } = parseSlot(spec);
    if (seen.has(prefix)) throw new UsageError(`-s ${spec}: slot ${prefix.slice(4)} is already in use`);
    seen.add(prefix);
    flags.clears!.push(prefix);
    for (const [k, v] of entries) set(`${prefix}.${k}`, v, `-s ${spec}`);
  }
  for (const spec of (o.lpc as string[] | undefined) ?? []) {
    const { entries, clears } = parseLpc(spec);
    flags.clears!.push(...clears);
    for (const [k, v] of entries) set(k, v, `-l ${spec}`);
  }
  if (typeof o.kernel === "string") {
    flags.clears!.push("boot", "lpc.bootrom", "lpc.bootvars");
    set("boot.kernel", o.kernel, `-k ${o.kernel}`);
  }
  if (typeof o.initrd === "string") set("boot.initrd", o.initrd, `--initrd ${o.initrd}`);
  if (typeof o.append === "string") set("boot.cmdline", o.append, `--append ${o.append}`);
  if (o.destroyOnPoweroff) set("destroy_on_poweroff", true, "-D");
  if (o.strictio) set("x86.strictio", true, "-e");
  if (o.vmexitOnHlt) set("x86.vmexit_on_hlt", true, "-H");
  if (o.utc) set("rtc.use_localtime", false, "-u");
  if (typeof o.uuid === "string") set("uuid", o.uuid, `-U ${o.uuid}`);
  for (const spec of (o.fwCfg as string[] | undefined) ?? []) {
    if (!parseFwCfgArg(spec)) throw new UsageError(`-f ${spec}: expected name,string=TEXT or name,file=PATH`);
    set("fw_cfg", spec, `-f ${spec}`);
  }
  if (o.ignoreMsrs) set("x86.strictmsr", false, "-w");
  if (o.withoutMptable) set("x86.mptable", false, "-Y");
  if (vmname !== undefined) set("name", vmname, vmname);
  return [oLayer, flags];
}

function deviceHelp(which: string): string {
  if (which === "-s") {
    return Object.entries(PCI_DEVICES).map(([n, d]) => `${n}${d.implemented ? "" : " (not implemented yet)"}`).join("\n") + "\n";
  }
  return "com1\ncom2\ncom3\ncom4\nbootrom\n";
}

/** Parse the user arguments (process.argv.slice(2)). Throws UsageError or ConfigError. */
export function parseArgs(argv: string[], env: { cwd?: string } = {}): ParsedCommand {
  const cwd = env.cwd ?? process.cwd();
  let output = "";
  const program = buildProgram().configureOutput({
    writeOut: (s) => { output += s; },
    writeErr: (s) => { output += s; },
    outputError: () => {},
  });
  try {
    program.parse(argv, { from: "user" });
  } catch (e) {
    if (e instanceof CommanderError) {
      if (e.code === "commander.helpDisplayed" || e.code === "commander.help") return { command: "help", dump: false, output };
      throw new UsageError(e.message.replace(/^error: /, ""));
    }
    throw e;
  }
  const o = program.opts() as Opts;
  for (const [flag, list] of [["-s", o.slot], ["-l", o.lpc]] as const) {
    if ((list as string[] | undefined)?.includes("help")) return { command: "help", dump: false, output: deviceHelp(flag) };
  }
  const args = [...program.args];
  const command = args[0] === "check" || args[0] === "demo" ? (args.shift() as "check" | "demo") : "run";
  if (args.length > 1) throw new UsageError(`expected one guest file or VM name, got ${args.map((a) => `"${a}"`).join(" ")}`);
  const target = args[0];
  const file = target?.endsWith(".toml") ? target : undefined;
  const vmname = file ? undefined : target;
  if (vmname !== undefined && existsSync(resolve(cwd, vmname)) && statSync(resolve(cwd, vmname)).isFile()) {
    throw new UsageError(`"${vmname}" is a file, but config files must end in .toml (an argument without .toml is the VM name)`);
  }
  const overrides = flagLayers(o, vmname, cwd);

  if (command === "demo") {
    if (file) throw new UsageError(`demo takes no config file (got ${file}); run it with: tsbhyve ${file}`);
    const dump = overrides[0]!.settings.some((s) => s.key === "config.dump" && parseBool(s.value) === true);
    return { command, demo: { layers: overrides }, dump };
  }
  if (!file && argv.length === (command === "check" ? 1 : 0)) {
    throw new UsageError(command === "check" ? "check: expected <guest.toml>" : "expected <guest.toml> (or try: tsbhyve demo)");
  }
  const layers = file ? [readConfigLayer(file), ...overrides] : overrides;
  const { config, dump } = resolveLayers(layers, file ?? "command line");
  return { command, config, dump };
}
