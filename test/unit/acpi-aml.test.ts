import { describe, expect, test } from "bun:test";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  AmlError, buffer, cat, decodePkgLength, device, eisaId, int, method, name, nameSeg, nameString, pkg, pkgLength, ret, scope, str, arg, ones,
} from "../../src/acpi/aml.ts";

const hex = (b: Uint8Array) => [...b].map((x) => x.toString(16).padStart(2, "0")).join(" ");
const ascii = (s: string) => [...s].map((c) => c.charCodeAt(0).toString(16)).join(" ");

describe("AML encoding (ACPI 6.x ch. 20)", () => {
  test("PkgLength: 1-4 byte forms, value counts its own bytes", () => {
    expect(hex(pkgLength(0))).toBe("01");
    expect(hex(pkgLength(62))).toBe("3f");
    expect(hex(pkgLength(63))).toBe("41 04"); // 65 = 0x041: lead 0x40|1, then 0x04
    expect(hex(pkgLength(4093))).toBe("4f ff"); // 4095
    expect(hex(pkgLength(4094))).toBe("81 00 01"); // 4097 = 0x1001
    expect(hex(pkgLength(0xffffc))).toBe("8f ff ff"); // 0xfffff
    expect(hex(pkgLength(0xffffd))).toBe("c1 00 00 01"); // 0x100001
    expect(() => pkgLength(2 ** 28)).toThrow(AmlError);
    for (const n of [0, 1, 62, 63, 64, 100, 4093, 4094, 5000, 0xffffc, 0xffffd, 2 ** 27]) {
      const enc = pkgLength(n);
      const [v, used] = decodePkgLength(enc, 0);
      expect(used).toBe(enc.length);
      expect(v).toBe(n + enc.length);
    }
  });

  test("integers use the smallest encoding", () => {
    expect(hex(int(0))).toBe("00");
    expect(hex(int(1))).toBe("01");
    expect(hex(int(5))).toBe("0a 05");
    expect(hex(int(0xff))).toBe("0a ff");
    expect(hex(int(0x1234))).toBe("0b 34 12");
    expect(hex(int(0x12345678))).toBe("0c 78 56 34 12");
    expect(hex(int(0x123456789n))).toBe("0e 89 67 45 23 01 00 00 00");
    expect(hex(ones())).toBe("ff");
    expect(() => int(-1)).toThrow(AmlError);
    expect(() => int(2n ** 64n)).toThrow(AmlError);
  });

  test("strings and names", () => {
    expect(hex(str("hello"))).toBe("0d 68 65 6c 6c 6f 00");
    expect(() => str("a\0b")).toThrow(AmlError);
    expect(() => str("é")).toThrow(AmlError);
    expect(hex(nameSeg("_S5"))).toBe(ascii("_S5_"));
    expect(hex(nameSeg("PCI0"))).toBe(ascii("PCI0"));
    expect(() => nameSeg("0ABC")).toThrow(AmlError);
    expect(() => nameSeg("ABCDE")).toThrow(AmlError);
    expect(() => nameSeg("ab")).toThrow(AmlError);
    expect(hex(nameString("\\"))).toBe("5c 00");
    expect(hex(nameString("\\_SB"))).toBe("5c " + ascii("_SB_"));
    expect(hex(nameString("\\_SB.PCI0"))).toBe("5c 2e " + ascii("_SB_PCI0"));
    expect(hex(nameString("\\_SB.PCI0.ISA"))).toBe("5c 2f 03 " + ascii("_SB_PCI0ISA_"));
    expect(hex(nameString("^^FOO"))).toBe("5e 5e " + ascii("FOO_"));
    expect(hex(eisaId("PNP0A03"))).toBe("0c 41 d0 0a 03");
    expect(hex(eisaId("PNP0C0F"))).toBe("0c 41 d0 0c 0f");
  });

  test("Name(_S5, Package(){5,5,0,0}) matches the spec's byte stream", () => {
    expect(hex(name("_S5", pkg(5, 5, 0, 0)))).toBe("08 5f 53 35 5f 12 08 04 0a 05 0a 05 00 00");
    expect(hex(name("\\_S5", pkg(5, 5, 0, 0)))).toBe("08 5c 5f 53 35 5f 12 08 04 0a 05 0a 05 00 00");
  });

  test("Scope, Device, Method, Return, Buffer", () => {
    expect(hex(method("_STA", {}, ret(0x0f)))).toBe("14 09 " + ascii("_STA") + " 00 a4 0a 0f");
    expect(hex(method("SER1", { args: 3, serialized: true, syncLevel: 2 }, ret(arg(2))))).toBe("14 08 " + ascii("SER1") + " 2b a4 6a");
    expect(() => method("X", { args: 8 })).toThrow(AmlError);
    const dev = device("PCI0", name("_HID", eisaId("PNP0A03")));
    expect(hex(dev)).toBe("5b 82 0f " + ascii("PCI0") + " 08 " + ascii("_HID") + " 0c 41 d0 0a 03");
    expect(hex(scope("\\_SB", dev))).toBe("10 17 5c " + ascii("_SB_") + " " + hex(dev));
    expect(hex(buffer(Uint8Array.of(1, 2, 3)))).toBe("11 06 0a 03 01 02 03");
    // A body large enough to need a 2-byte PkgLength.
    const big = pkg(...Array.from({ length: 40 }, (_, i) => i + 2));
    expect(big[1]! >> 6).toBe(1);
    expect(decodePkgLength(big, 1)[0]).toBe(big.length - 1);
  });
});

/** iasl cross-check: compile ASL with name optimisation off and compare with our encoder. */
describe("AML vs iasl", () => {
  const which = spawnSync("sh", ["-c", "command -v iasl"], { encoding: "utf8" });
  const iasl = which.status === 0 ? which.stdout.trim() : undefined;
  if (!iasl) {
    if (process.env.CI) test("iasl is required in CI", () => { throw new Error("iasl not found (install acpica-tools)"); });
    else { console.warn("[acpi-aml] iasl not found: skipping the iasl cross-check"); test.skip("iasl cross-check", () => {}); }
    return;
  }
  test("compiled ASL == our AML", () => {
    const dir = mkdtempSync(join(tmpdir(), "tsbhyve-aml-"));
    const asl = `DefinitionBlock ("", "DSDT", 2, "TSBHYV", "TSBHYVE", 1)
{
    Name (\\_S0, Package () { 0, 0, 0, 0 })
    Name (\\_S5, Package () { 5, 5, 0, 0 })
    Scope (\\_SB)
    {
        Device (PCI0)
        {
            Name (_HID, EisaId ("PNP0A03"))
            Name (_UID, 0x1234)
            Name (STR0, "hello")
            Name (BIG0, 0x123456789)
            Name (DW00, 0x12345678)
            Name (BUF0, Buffer () { 1, 2, 3 })
            Name (PKG0, Package () { ${Array.from({ length: 40 }, (_, i) => i + 2).join(", ")} })
            Method (_STA, 0, NotSerialized) { Return (0x0F) }
            Method (SER1, 3, Serialized, 2) { Return (Arg2) }
        }
    }
}
`;
    writeFileSync(join(dir, "t.asl"), asl);
    const r = spawnSync(iasl, ["-on", "-vr", "-p", join(dir, "t"), join(dir, "t.asl")], { encoding: "utf8" });
    expect(r.status, r.stdout + r.stderr).toBe(0);
    const aml = new Uint8Array(readFileSync(join(dir, "t.aml"))).subarray(36);
    const ours = cat(
      name("\\_S0", pkg(0, 0, 0, 0)),
      name("\\_S5", pkg(5, 5, 0, 0)),
      scope("\\_SB", device("PCI0",
        name("_HID", eisaId("PNP0A03")),
        name("_UID", 0x1234),
        name("STR0", "hello"),
        name("BIG0", 0x123456789n),
        name("DW00", 0x12345678),
        name("BUF0", buffer(Uint8Array.of(1, 2, 3))),
        name("PKG0", pkg(...Array.from({ length: 40 }, (_, i) => i + 2))),
        method("_STA", {}, ret(0x0f)),
        method("SER1", { args: 3, serialized: true, syncLevel: 2 }, ret(arg(2))),
      )),
    );
    expect(hex(ours)).toBe(hex(aml));
  });
});
