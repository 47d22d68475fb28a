import { describe, expect, test } from "bun:test";
import { spawnSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { device, name } from "../../src/acpi/aml.ts";
import { buildDsdt, dsdtBody, prtEntries } from "../../src/acpi/dsdt.ts";
import { describePlatform, type PlatformDescription } from "../../src/acpi/platform.ts";
import { ioapicPinOfPirq, pirqOf } from "../../src/platform/map.ts";
import { sum8 } from "../../src/loader/blob.ts";
import { BAD_DSL, BAD_OUTPUT, IASL, disassemble, hex, recompile, tmp } from "./acpi-iasl.ts";

/** The sample platform: two populated slots (one multi-pin), COM1 + COM2, HPET, 8 GiB. */
const sample = (): PlatformDescription => describePlatform({
  cpus: 2, ramSize: 8 * 2 ** 30, com: [true, true], hpetCapabilities: 0x8086a201,
  slots: [{ slot: 3, pins: [1] }, { slot: 4, pins: [1, 2] }],
});

describe("DSDT generator", () => {
  test("header: DSDT revision 2, checksum", () => {
    const d = buildDsdt(sample());
    expect(String.fromCharCode(...d.subarray(0, 4))).toBe("DSDT");
    expect(d[8]).toBe(2);
    expect(new DataView(d.buffer).getUint32(4, true)).toBe(d.length);
    expect(sum8(d)).toBe(0);
  });

  test("_PRT entries follow map.ts pirqOf in both modes", () => {
    const p = sample();
    const { pic, apic } = prtEntries(p);
    expect(pic.length).toBe(3);
    const want = [[3, 1], [4, 1], [4, 2]].map(([s, pin]) => ({ s: s!, pin: pin!, pirq: pirqOf(s!, pin!) }));
    want.forEach((w, i) => {
      const link = "LNK" + "ABCDEFGH"[w.pirq];
      expect(hex(pic[i]!)).toContain(hex(Uint8Array.from(link, (c) => c.charCodeAt(0))));
      // APIC form ends with the GSI (BytePrefix GSI)
      expect(hex(apic[i]!.subarray(-2))).toBe(hex(Uint8Array.of(0x0a, ioapicPinOfPirq(w.pirq))));
    });
    expect(() => prtEntries({ ...p, pci: { ...p.pci, slots: [{ slot: 32, pins: [1] }] } })).toThrow(RangeError);
    expect(() => prtEntries({ ...p, pci: { ...p.pci, slots: [{ slot: 2, pins: [5] }] } })).toThrow(RangeError);
  });

  test("extra AML terms land inside \\_SB.PCI0 and at the root", () => {
    const frag = device("VDEV", name("_ADR", 0x50000));
    const root = name("\\XTRA", 7);
    const body = dsdtBody({ ...sample(), extra: { pci0: [frag], root: [root] } });
    expect(hex(body)).toContain(hex(frag));
    expect(hex(body).endsWith(hex(root))).toBe(true);
  });
});

describe("DSDT vs iasl / acpiexec", () => {
  if (!IASL) {
    if (process.env.CI) test("iasl is required in CI", () => { throw new Error("iasl not found (install acpica-tools)"); });
    else test.skip("iasl checks (iasl not installed)", () => {});
    return;
  }

  test("disassembles cleanly and recompiles with no errors or warnings", () => {
    const p = { ...sample(), extra: { pci0: [device("VDEV", name("_ADR", 0x50000))] } };
    const dir = tmp("dsdt");
    const { dsl, out, path } = disassemble(buildDsdt(p), "dsdt", dir);
    expect(out).not.toMatch(BAD_OUTPUT);
    expect(dsl).not.toMatch(BAD_DSL);
    const re = recompile(path);
    expect(re.status, re.out).toBe(0);
    expect(re.out).toMatch(/0 Errors, 0 Warnings/);
    // The namespace as a reader sees it.
    const has = (re: RegExp) => expect(re.test(dsl), String(re)).toBe(true);
    has(/Name \(\\_S5, Package \(0x04\)[^{]*\{\s*0x05,\s*0x05,\s*Zero,\s*Zero/);
    has(/Name \(\\_S0, Package \(0x04\)[^{]*\{\s*Zero,/);
    has(/Method \(\\_PIC, 1, NotSerialized\)[^{]*\{\s*\\PICM = Arg0/);
    for (const d of ["PCI0", "ISA", "PIC", "TIMR", "RTC", "KBD", "COM1", "COM2", "SYSR", "FWCF", "HPET", "MRES", "VDEV", ..."ABCDEFGH".split("").map((c) => "LNK" + c)]) {
      expect(dsl, d).toContain(`Device (${d})`);
    }
    expect(dsl).not.toContain("Device (COM3)");
    has(/Device \(COM2\)[\s\S]*?EisaId \("PNP0501"\)[\s\S]*?0x02F8,\s*\/\/ Range Minimum[\s\S]*?IRQNoFlags \(\)\s*\{3\}/);
    has(/Device \(RTC\)[\s\S]*?0x0070,[\s\S]*?0x02,\s*\/\/ Length[\s\S]*?\{8\}/);
    has(/Device \(KBD\)[\s\S]*?PNP0303[\s\S]*?0x0060,[\s\S]*?0x0064,[\s\S]*?\{1\}/);
    has(/Device \(HPET\)[\s\S]*?Memory32Fixed \(ReadOnly,\s*0xFED00000,\s*\/\/ Address Base\s*0x00000400/);
    has(/Device \(SYSR\)[\s\S]*?0x0600,\s*\/\/ Range Minimum[\s\S]*?0x40,\s*\/\/ Length[\s\S]*?0x0402,/);
    has(/Device \(FWCF\)[\s\S]*?"QEMU0002"[\s\S]*?0x0510,[\s\S]*?0x0C,\s*\/\/ Length/);
    has(/Device \(MRES\)[\s\S]*?0xE0000000,\s*\/\/ Address Base\s*0x10000000/);
    has(/OperationRegion \(PIRQ, PCI_Config, 0x60, 0x0C\)/);
    has(/Device \(ISA\)\s*\{\s*Name \(_ADR, 0x00010000\)/);
    has(/QWordMemory[\s\S]*?0x0000000800000000, \/\/ Range Minimum/);
  });

  const acpiexec = spawnSync("sh", ["-c", "command -v acpiexec"], { encoding: "utf8" }).stdout.trim();
  test.skipIf(!acpiexec)("link devices and _PRT run under ACPICA's interpreter (acpiexec)", () => {
    const dir = tmp("exec");
    const file = join(dir, "dsdt.dat");
    writeFileSync(file, buildDsdt(sample()));
    const cmds = [
      "execute \\_SB.LNKA._SRS (23 20 00 18 79 00)", // route PIRQ A to IRQ 5
      "evaluate \\_SB.PCI0.ISA.PIRA", "evaluate \\_SB.LNKA._CRS", "evaluate \\_SB.LNKA._STA",
      "execute \\_SB.LNKA._DIS",
      "evaluate \\_SB.PCI0.ISA.PIRA", "evaluate \\_SB.LNKA._STA", "evaluate \\_SB.LNKA._CRS",
      "evaluate \\_SB.PCI0._PRT", "execute \\_PIC 1", "evaluate \\_SB.PCI0._PRT", "evaluate \\_SB.LNKH._PRS",
    ];
    const r = spawnSync(acpiexec, ["-b", cmds.join("; "), file], { encoding: "utf8", timeout: 30_000 });
    const out = r.stdout + r.stderr;
    const results = out.split(/Evaluating /).slice(1);
    expect(results.length, out).toBe(cmds.length);
    expect(results[1]).toMatch(/\[Integer\] = 0000000000000005/);
    expect(results[2]).toMatch(/0000: 23 20 00 18 79 00/);
    expect(results[3]).toMatch(/\[Integer\] = 000000000000000B/);
    expect(results[5]).toMatch(/\[Integer\] = 0000000000000085/);
    expect(results[6]).toMatch(/\[Integer\] = 0000000000000009/);
    expect(results[7]).toMatch(/0000: 23 00 00 18 79 00/);
    expect(results[8]).toMatch(/Name LNKA Device[\s\S]*Name LNKB Device[\s\S]*Name LNKC Device/);
    expect(results[10]).not.toMatch(/LNK/);
    expect(results[10]).toMatch(/0000000000000010[\s\S]*0000000000000011[\s\S]*0000000000000012/);
    expect(results[11]).toMatch(/0000: 23 F8 DE 18 79 00/);
    expect(out).not.toMatch(/AE_[A-Z_]+ .*(error|exception)|Exception/i);
  });
});
