/**
 * Tier 2: fw_cfg under dist/tsbhyve on /dev/kvm. The fwcfg payload (test/payloads/fwcfg.asm) reads the
 * signature, ID, DMA signature, the file directory and every file through the port interface AND by DMA,
 * and prints a checksum per file per interface; the files tsbhyve derives from the config are checked
 * against the same checksum computed here from fwcfgForConfig() on the same config. Files this test
 * cannot predict (the ACPI builder's) must at least read the same both ways.
 */
import { beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { loadConfigText } from "../../src/config/load.ts";
import { FW_CFG, fwcfgForConfig, parseFileDir } from "../../src/fwcfg/items.ts";
import { buildPayload } from "../payloads/build.ts";
import { requireKvm, romConfig, runTsb } from "./tsb.ts";

beforeAll(() => requireKvm());

const lines = (s: string) => s.split(/\r?\n/).map((l) => l.trim()).filter(Boolean);
const hex = (n: number, w: number) => (n >>> 0).toString(16).padStart(w, "0");
/** The payload's checksum: s = rol(s, 5) + b over the bytes. */
function sum(b: Uint8Array): number {
  let s = 0;
  for (const x of b) s = (((s << 5) | (s >>> 27)) + x) >>> 0;
  return s;
}

describe("fw_cfg payload on /dev/kvm", () => {
  test("port and DMA reads of every file agree with the items built from the config", async () => {
    const dir = mkdtempSync(join(tmpdir(), "tsb-fwcfg-"));
    const blob = join(dir, "blob.bin");
    writeFileSync(blob, Uint8Array.from({ length: 5000 }, (_, i) => (i * 31 + 7) & 0xff));
    const extra = `[system]\nproduct_name = "fw_cfg payload"\nserial_number = "S-42"\n` +
      `[[fw_cfg]]\nname = "opt/tsbhyve/blob"\nfile = "${blob}"\n[[fw_cfg]]\nname = "opt/tsbhyve/greeting"\nstring = "hello, firmware"\n`;
    const toml = romConfig(await buildPayload("fwcfg"), extra, 2).replace("cpus = 2\n", "cpus = 2\nsockets = 1\ncores = 2\n");
    const r = await runTsb({ toml, timeoutMs: 30_000 });
    const l = lines(r.com1);
    expect(l, r.com1 + r.stderr).toContain("DONE fwcfg fails=00");
    expect(l).toContain("SIG 554d4551");
    expect(l).toContain("ID 00000003");
    expect(l).toContain("DMASIG 554d4551 47464320");
    expect(l).toContain("DMAERR 00000001");
    expect(r.code).toBe(1); // pc-testdev exit: (0 << 1) | 1

    // the same items, from the same config (the COM1 path does not matter to fw_cfg)
    const cfg = loadConfigText(toml.replaceAll("${COM1}", join(dir, "com1.out")), join(dir, "guest.toml"));
    const items = fwcfgForConfig(cfg);
    const files = parseFileDir(items.items.find((i) => i.key === FW_CFG.FILE_DIR)!.data);
    const seen = new Map<string, { select: number; size: number; port: number; dma: number }>();
    for (const x of l) {
      const m = /^FILE ([0-9a-f]{4}) ([0-9a-f]{8}) ([0-9a-f]{8}) ([0-9a-f]{8}) (.+)$/.exec(x);
      if (m) seen.set(m[5]!, { select: parseInt(m[1]!, 16), size: parseInt(m[2]!, 16), port: parseInt(m[3]!, 16), dma: parseInt(m[4]!, 16) });
    }
    const count = /^FILES ([0-9a-f]{8}) DIR/.exec(l.find((x) => x.startsWith("FILES "))!)![1]!;
    expect(seen.size).toBe(parseInt(count, 16));
    for (const f of files) {
      const got = seen.get(f.name);
      expect(got, `file ${f.name} missing from the guest's directory`).toBeDefined();
      const data = items.items.find((i) => i.name === f.name)!.data;
      expect({ name: f.name, size: got!.size, port: hex(got!.port, 8), dma: hex(got!.dma, 8) })
        .toEqual({ name: f.name, size: data.length, port: hex(sum(data), 8), dma: hex(sum(data), 8) });
    }
    for (const [name, g] of seen) expect({ name, port: g.port }).toEqual({ name, port: g.dma });
    // the guest's directory is sorted by name with keys from 0x20
    const names = [...seen.keys()];
    expect(names).toEqual([...names].sort());
    expect([...seen.values()].map((g) => g.select)).toEqual(names.map((_, i) => 0x20 + i));
  });
});
