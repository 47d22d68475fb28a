/**
 * Tier 2: the PCI hierarchy seen by a boot-ROM payload (test/payloads/pci.asm) on /dev/kvm: bus 0 scanned
 * through mechanism #1 and ECAM (same answers), the i440FX/PIIX3/PIIX4 persona, and the PIIX4 PMBA moving
 * the ACPI PM block for the guest.
 */
import { beforeAll, describe, expect, test } from "bun:test";
import { buildPayload } from "../payloads/build.ts";
import { requireKvm, romConfig, runTsb } from "./tsb.ts";

beforeAll(() => requireKvm());

const lines = (s: string) => s.split(/\r?\n/).map((l) => l.trim()).filter(Boolean);

describe("PCI configuration space on /dev/kvm", () => {
  test("default chipset with lpc at slot 1: IDs by both mechanisms, multi-function, PMBA moves PM1", async () => {
    const r = await runTsb({ toml: romConfig(await buildPayload("pci"), `[pci.0.1.0]\ndevice = "lpc"\n`), timeoutMs: 30_000 });
    const l = lines(r.com1);
    expect(l).toContain("OK pci-cf8");
    expect(l.filter((x) => x.startsWith("FN "))).toEqual(["FN 00.0 12378086", "FN 01.0 70008086", "FN 01.3 71138086"]);
    expect(l).toContain("ECAMDIFF 00000000");
    expect(l).toContain("HDR 80");
    expect(l).toContain("PM1 0001");
    expect(l).toContain("DONE pci fails=00");
    expect(r.code).toBe(1);
  });

  test("bhyve persona and lpc at slot 31, as bhyve users write it", async () => {
    const extra = `[pci.0.0.0]\ndevice = "hostbridge"\npersona = "bhyve"\n[pci.0.31.0]\ndevice = "lpc"\n`;
    const r = await runTsb({ toml: romConfig(await buildPayload("pci"), extra), timeoutMs: 30_000 });
    const l = lines(r.com1);
    expect(l.filter((x) => x.startsWith("FN "))).toEqual(["FN 00.0 12751275", "FN 1f.0 70008086", "FN 1f.3 71138086"]);
    expect(l).toContain("ECAMDIFF 00000000");
    expect(l).toContain("PM1 ffff"); // the payload programs 00:01.3, absent here: the PM block stays off
    expect(l).toContain("DONE pci fails=01");
    expect(r.code).toBe(3);
  });
});
