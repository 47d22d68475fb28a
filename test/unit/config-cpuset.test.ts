/**
 * vCPU pinning in the config: bhyve's vcpu.N.cpuset (TOML [vcpu.N] cpuset) and -p vcpu:hostcpu. The
 * running side (the vCPU threads' affinity) is checked on /dev/kvm in test/payload/payloads.test.ts.
 */
import { describe, expect, test } from "bun:test";
import { writeFileSync } from "node:fs";
import { cpus } from "node:os";
import { join } from "node:path";
import { parseArgs } from "../../src/cli/args.ts";
import { formatCpuList, parseCpuList } from "../../src/config/cpuset.ts";
import { dumpConfig } from "../../src/config/dump.ts";
import { loadConfigText } from "../../src/config/load.ts";
import { configFixture } from "./config-fixture.ts";

const { dir, touch, load, errorOf } = configFixture("tsbhyve-cpuset-", `cpus = 2\nlpc.bootrom = "rom.fd"\n`);
touch("rom.fd", 1 << 20);
const HOST = cpus().length;

describe("host CPU lists", () => {
  test("cpuset(1) form, integers and arrays; sorted, without duplicates", () => {
    expect(parseCpuList("0-3,6")).toEqual([0, 1, 2, 3, 6]);
    expect(parseCpuList(" 5 , 1-2,2")).toEqual([1, 2, 5]);
    expect(parseCpuList(3)).toEqual([3]);
    expect(parseCpuList([4, 1, 4])).toEqual([1, 4]);
    expect(formatCpuList([0, 1, 2, 3, 6, 8, 9])).toBe("0-3,6,8-9");
    expect(formatCpuList(parseCpuList("7,0-2") as number[])).toBe("0-2,7");
  });
  test("bad lists say what was expected", () => {
    for (const bad of ["", "a", "1-", "-1", "3-1", "1,,2", "0-5000", true, [1, "x"], [], -1, 1.5]) {
      expect(typeof parseCpuList(bad)).toBe("string");
    }
    expect(parseCpuList("3-1")).toContain("low-high");
    expect(parseCpuList("0-5000")).toContain("0..1023");
  });
});

describe("vcpu.N.cpuset in the config", () => {
  test("TOML tables, dotted keys and arrays resolve per vCPU; the dump loads back the same", () => {
    const c = load(`[vcpu.0]\ncpuset = "0"\n[vcpu.1]\ncpuset = [0]\n`);
    expect(c.cpusets).toEqual({ 0: [0], 1: [0] });
    expect(load(`vcpu.1.cpuset = 0\n`).cpusets).toEqual({ 1: [0] });
    expect(load("").cpusets).toEqual({});
    const dumped = dumpConfig(c);
    expect(dumped).toContain("cpuset = \"0\"");
    expect(loadConfigText(dumped, join(dir, "dumped.toml")).cpusets).toEqual(c.cpusets);
  });
  test("errors: a vCPU the guest lacks, a host CPU the host lacks, a bad list, other vcpu keys — all at once, with lines", () => {
    const msg = errorOf(() => load(`[vcpu.2]\ncpuset = "0"\n[vcpu.0]\ncpuset = "${HOST}"\n[vcpu.1]\ncpuset = "x"\npriority = 3\n`));
    expect(msg).toContain("vcpu.2.cpuset: expected a vCPU below 2 (the guest has 2), got vCPU 2");
    expect(msg).toContain(`vcpu.0.cpuset: expected host CPUs 0-${HOST - 1} (this host has ${HOST}), got ${HOST}`);
    expect(msg).toContain(`vcpu.1.cpuset: expected a host CPU list like "0-3,6"`);
    expect(msg).toContain("vcpu.1.priority: unknown key");
    expect(msg).toMatch(/guest\.toml:4: vcpu\.2\.cpuset/); // the line of [vcpu.2]'s cpuset
  });
});

describe("-p vcpu:hostcpu", () => {
  test("each -p adds a host CPU to that vCPU's list and overrides the file's list", () => {
    writeFileSync(join(dir, "pinned.toml"), `cpus = 2\n[lpc]\nbootrom = "rom.fd"\n[vcpu.0]\ncpuset = "0"\n[vcpu.1]\ncpuset = "0"\n`);
    const last = HOST - 1;
    const c = parseArgs(["-p", `0:${last}`, "-p", "0:0", join(dir, "pinned.toml")], { cwd: dir }).config!;
    expect(c.cpusets).toEqual({ 0: last === 0 ? [0] : [0, last], 1: [0] });
    expect(() => parseArgs(["-p", "0", join(dir, "pinned.toml")], { cwd: dir })).toThrow(/-p 0: expected vcpu:hostcpu/);
    expect(() => parseArgs(["-p", "5:0", join(dir, "pinned.toml")], { cwd: dir })).toThrow(/vcpu\.5\.cpuset: expected a vCPU below 2/);
    expect(() => parseArgs(["-p", `0:${HOST}`, join(dir, "pinned.toml")], { cwd: dir })).toThrow(/command line \(-p 0:\d+\).*vcpu\.0\.cpuset: expected host CPUs/s);
  });
});
