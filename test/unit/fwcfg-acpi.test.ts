/**
 * The fw_cfg ACPI files follow the PM base firmware programmed before reading them (OVMF moves the PIIX4
 * PM block to 0xB000, SeaBIOS to 0x600): the FADT a firmware loads must point where the block now is.
 */
import { describe, expect, test } from "bun:test";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Bus } from "../../src/devices/bus.ts";
import { sharedPmBase } from "../../src/devices/acpi-pm.ts";
import type { Platform } from "../../src/devices/device.ts";
import { StateArena } from "../../src/devices/state.ts";
import { loadConfigText } from "../../src/config/load.ts";
import { createFwCfg } from "../../src/fwcfg/device.ts";
import { fwcfgForConfig } from "../../src/fwcfg/items.ts";
import { GuestMemory } from "../../src/mem/guest-memory.ts";
import { PORTS } from "../../src/platform/map.ts";
import { acpiFwCfgFiles, acpiRefresher } from "../../src/vm/describe.ts";

const dir = mkdtempSync(join(tmpdir(), "tsb-fwacpi-"));
const kernel = join(dir, "vmlinuz");
writeFileSync(kernel, "x");
const cfg = loadConfigText(`name = "t"\ncpus = 2\n[boot]\nkernel = "${kernel}"\n`, join(dir, "g.toml"));
const platform: Platform = { irqLine() {}, msi() {}, requestExit() {}, wakeIo() {}, log() {} };

/** Read a whole fw_cfg file through the selector/data ports, as firmware without DMA would. */
function readFile(bus: Bus, name: string): Uint8Array {
  bus.write("pio", 0x510, 2, 0x19);
  const be = (n: number) => { let v = 0; for (let i = 0; i < n; i++) v = v * 256 + bus.read("pio", 0x511, 1); return v; };
  const count = be(4);
  for (let i = 0; i < count; i++) {
    const size = be(4), key = be(2);
    be(2);
    const raw = Array.from({ length: 56 }, () => bus.read("pio", 0x511, 1));
    const fname = String.fromCharCode(...raw.slice(0, raw.indexOf(0)));
    if (fname !== name) continue;
    bus.write("pio", 0x510, 2, key);
    return Uint8Array.from({ length: size }, () => bus.read("pio", 0x511, 1));
  }
  throw new Error(`no fw_cfg file ${name}`);
}

describe("fw_cfg ACPI files follow the PM base", () => {
  test("the FADT read after firmware moved PMBA to 0xB000 points at 0xB000", () => {
    const items = fwcfgForConfig(cfg, { extraFiles: acpiFwCfgFiles(cfg) });
    const arena = new StateArena(new SharedArrayBuffer(1 << 20));
    const pb = sharedPmBase(arena, PORTS.pmBase);
    const dev = createFwCfg({ mem: GuestMemory.fake(64 << 20), arena, platform, role: "vcpu" }, items, {
      onSelect: acpiRefresher(cfg, () => pb.current() ?? PORTS.pmBase),
    });
    const bus = new Bus();
    bus.register(dev);
    const fadtPm1a = (tables: Uint8Array) => {
      for (let o = 0; o + 4 <= tables.length; o += 4) {
        if (String.fromCharCode(...tables.subarray(o, o + 4)) === "FACP") return new DataView(tables.buffer, tables.byteOffset + o).getUint32(56, true);
      }
      throw new Error("no FADT");
    };
    expect(fadtPm1a(readFile(bus, "etc/acpi/tables"))).toBe(0x600);
    pb.set(0xb000); // what OVMF's PlatformPei programs into 00:01.3 PMBA
    const t = readFile(bus, "etc/acpi/tables");
    expect(fadtPm1a(t)).toBe(0xb000);
    expect(t.length).toBe(acpiFwCfgFiles(cfg).find((f) => f.name === "etc/acpi/tables")!.data.length);
  });
});
