import { describe, expect, test } from "bun:test";
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { buildAcpi, writeAcpi, sdt, FADT, FadtFlag, SLP_TYP_S5, ACPI_BASE, type Acpi } from "../../src/acpi/tables.ts";
import { name, pkg } from "../../src/acpi/aml.ts";
import { describePlatform } from "../../src/acpi/platform.ts";

/** An HPET GCAP_ID low dword: vendor 0x8086, legacy-replacement capable, 64-bit, 3 timers, rev 1. */
const HPET_CAP = 0x8086a201;
import { sum8 } from "../../src/loader/blob.ts";
import { buildMptable } from "../../src/loader/mptable.ts";
import { GuestMemory, MiB } from "../../src/mem/guest-memory.ts";

const ascii = (m: GuestMemory, a: number, n: number) => String.fromCharCode(...m.readBytes(a, n));

interface Walked {
  rsdp: number; xsdt: number; rsdt: number;
  tables: Map<string, number>;
  fadt: number; facs: number; dsdt: number; madt: number;
}

/** Find and follow the tables the way an OS does, verifying every checksum on the way. */
function walk(m: GuestMemory): Walked {
  let rsdp = -1;
  for (let a = 0xe0000; a < 0x100000; a += 16) {
    if (ascii(m, a, 8) === "RSD PTR " && sum8(m.readBytes(a, 20)) === 0) { rsdp = a; break; }
  }
  expect(rsdp).toBeGreaterThan(0);
  expect(m.read8(rsdp + 15)).toBe(2);
  expect(m.read32(rsdp + 20)).toBe(36);
  expect(sum8(m.readBytes(rsdp, 36))).toBe(0);
  const xsdt = Number(m.read64(rsdp + 24));
  const rsdt = m.read32(rsdp + 16);
  const checkSdt = (a: number, sig: string) => {
    expect(ascii(m, a, 4)).toBe(sig);
    const len = m.read32(a + 4);
    expect(len).toBeGreaterThanOrEqual(36);
    expect(sum8(m.readBytes(a, len))).toBe(0);
    expect(ascii(m, a + 10, 6)).toBe("TSBHYV");
    return len;
  };
  const xl = checkSdt(xsdt, "XSDT");
  const rl = checkSdt(rsdt, "RSDT");
  expect((xl - 36) / 8).toBe((rl - 36) / 4);
  const tables = new Map<string, number>();
  for (let i = 0; i < (xl - 36) / 8; i++) {
    const a = Number(m.read64(xsdt + 36 + 8 * i));
    expect(m.read32(rsdt + 36 + 4 * i)).toBe(a);
    const sig = ascii(m, a, 4);
    checkSdt(a, sig);
    tables.set(sig, a);
  }
  const fadt = tables.get("FACP")!;
  const madt = tables.get("APIC")!;
  const dsdt = Number(m.read64(fadt + FADT.X_DSDT));
  expect(m.read32(fadt + FADT.DSDT)).toBe(dsdt);
  checkSdt(dsdt, "DSDT");
  const facs = Number(m.read64(fadt + FADT.X_FIRMWARE_CTRL));
  expect(m.read32(fadt + FADT.FIRMWARE_CTRL)).toBe(facs);
  expect(ascii(m, facs, 4)).toBe("FACS");
  expect(m.read32(facs + 4)).toBe(64);
  expect(facs % 64).toBe(0);
  return { rsdp, xsdt, rsdt, tables, fadt, facs, dsdt, madt };
}

function place(acpi: Acpi): GuestMemory {
  const m = GuestMemory.fake(4 * MiB);
  expect(writeAcpi(m, acpi)).toBe(acpi.rsdp);
  return m;
}

describe("ACPI tables", () => {
  test("every blob checksums, no overlaps, inside the BIOS area", () => {
    const acpi = buildAcpi({ cpus: 4 });
    expect(acpi.rsdp).toBe(ACPI_BASE);
    const sorted = [...acpi.blobs].sort((a, b) => a.addr - b.addr);
    for (let i = 1; i < sorted.length; i++) expect(sorted[i]!.addr).toBeGreaterThanOrEqual(sorted[i - 1]!.addr + sorted[i - 1]!.bytes.length);
    for (const b of acpi.blobs) {
      const sig = String.fromCharCode(...b.bytes.subarray(0, 4));
      if (sig === "FACS") continue; // no checksum
      if (sig === "RSD ") { expect(sum8(b.bytes.subarray(0, 20))).toBe(0); expect(sum8(b.bytes)).toBe(0); continue; }
      expect(new DataView(b.bytes.buffer, b.bytes.byteOffset).getUint32(4, true)).toBe(b.bytes.length);
      expect(sum8(b.bytes)).toBe(0);
    }
    expect(acpi.end).toBeLessThanOrEqual(0x100000);
    expect(acpi.tables.map((t) => t.signature)).toEqual(["RSD PTR ", "XSDT", "RSDT", "FACP", "FACS", "APIC", "MCFG", "SPCR", "DSDT"]);
    const full = buildAcpi(describePlatform({ cpus: 2, hpetCapabilities: HPET_CAP }));
    expect(full.tables.map((t) => t.signature)).toEqual(["RSD PTR ", "XSDT", "RSDT", "FACP", "FACS", "APIC", "HPET", "MCFG", "SPCR", "DSDT"]);
  });

  test("RSDP -> XSDT -> tables chain walks in guest memory", () => {
    const w = walk(place(buildAcpi({ cpus: 2 })));
    expect([...w.tables.keys()].sort()).toEqual(["APIC", "FACP", "MCFG", "SPCR"]);
    const w2 = walk(place(buildAcpi(describePlatform({ cpus: 2, hpetCapabilities: HPET_CAP, com: [false, true] }))));
    expect([...w2.tables.keys()].sort()).toEqual(["APIC", "FACP", "HPET", "MCFG"]); // no COM1: no SPCR
  });

  test("FADT fields at their spec offsets", () => {
    const m = place(buildAcpi({ cpus: 1 }));
    const { fadt: f } = walk(m);
    expect(m.read32(f + 4)).toBe(276);
    expect(m.read8(f + 8)).toBe(6);
    expect(m.read16(f + 46)).toBe(9); // SCI_INT
    expect(m.read32(f + 48)).toBe(0); // SMI_CMD: already in ACPI mode
    expect(m.read32(f + 56)).toBe(0x600); // PM1a_EVT_BLK (PORTS.pmBase)
    expect(m.read32(f + 0x40)).toBe(0x604); // PM1a_CNT_BLK at 64
    expect(m.read32(f + 76)).toBe(0x608); // PM_TMR_BLK = PM base + 8
    expect(m.read32(f + 80)).toBe(0x60c); // GPE0_BLK = PM base + 0xC
    expect(m.read8(f + 88)).toBe(4);
    expect(m.read8(f + 89)).toBe(2);
    expect(m.read8(f + 91)).toBe(4); // PM_TMR_LEN
    expect(m.read8(f + 92)).toBe(4); // GPE0_BLK_LEN
    expect(m.read8(f + 108)).toBe(0x32); // century
    expect(m.read16(f + 109)).toBe(3); // legacy devices + 8042
    const flags = m.read32(f + 112);
    for (const fl of [FadtFlag.WBINVD, FadtFlag.PROC_C1, FadtFlag.SLP_BUTTON, FadtFlag.RESET_REG_SUP, FadtFlag.TMR_VAL_EXT]) expect(flags & fl).toBe(fl);
    expect(flags & FadtFlag.HW_REDUCED_ACPI).toBe(0);
    expect(flags & FadtFlag.PWR_BUTTON).toBe(0); // fixed-feature power button
    // RESET_REG: GAS at 116 (SystemIO, 8 bits, byte access, 0xCF9), value 6 at 128
    expect([...m.readBytes(f + 116, 4)]).toEqual([1, 8, 0, 1]);
    expect(m.read64(f + 120)).toBe(0xcf9n);
    expect(m.read8(f + 128)).toBe(6);
    // X_PM1a_EVT_BLK (148) and X_PM1a_CNT_BLK (172)
    expect([m.read8(f + 148), m.read8(f + 149)]).toEqual([1, 32]);
    expect(m.read64(f + 152)).toBe(0x600n);
    expect([m.read8(f + 172), m.read8(f + 173)]).toEqual([1, 16]);
    expect(m.read64(f + 176)).toBe(0x604n);
    // X_PM_TMR_BLK (208): SystemIO, 32 bits, dword access; X_GPE0_BLK (220): 32 bits, byte access
    expect([...m.readBytes(f + 208, 4)]).toEqual([1, 32, 0, 3]);
    expect(m.read64(f + 212)).toBe(0x608n);
    expect([...m.readBytes(f + 220, 4)]).toEqual([1, 32, 0, 1]);
    expect(m.read64(f + 224)).toBe(0x60cn);
  });

  test("FADT follows the description: PM base, century, no timer, no i8042", () => {
    const p = describePlatform({ cpus: 1, pmBase: 0xb000, century: 0 });
    const m = place(buildAcpi({ ...p, pm: { base: 0xb000, timer: false }, keyboard: undefined }));
    const { fadt: f } = walk(m);
    expect(m.read32(f + 56)).toBe(0xb000);
    expect(m.read32(f + 64)).toBe(0xb004);
    expect(m.read32(f + 76)).toBe(0);
    expect(m.read8(f + 91)).toBe(0);
    expect(m.read32(f + 112) & FadtFlag.TMR_VAL_EXT).toBe(0);
    expect(m.read32(f + 80)).toBe(0xb00c);
    expect(m.read8(f + 108)).toBe(0);
    expect(m.read16(f + 109)).toBe(1); // legacy devices, no 8042
  });

  test("HPET, MCFG and SPCR contents", () => {
    const m = place(buildAcpi(describePlatform({ cpus: 2, hpetCapabilities: HPET_CAP })));
    const w = walk(m);
    const h = w.tables.get("HPET")!;
    expect(m.read32(h + 4)).toBe(56);
    expect(m.read32(h + 36)).toBe(HPET_CAP);
    expect(m.read8(h + 40)).toBe(0); // system memory
    expect(m.read64(h + 44)).toBe(0xfed00000n);
    expect(m.read8(h + 52)).toBe(0);
    expect(m.read16(h + 53)).toBe(0x80);
    const c = w.tables.get("MCFG")!;
    expect(m.read32(c + 4)).toBe(60);
    expect(m.read64(c + 44)).toBe(0xe0000000n);
    expect([m.read16(c + 52), m.read8(c + 54), m.read8(c + 55)]).toEqual([0, 0, 255]);
    const s = w.tables.get("SPCR")!;
    expect(m.read32(s + 4)).toBe(80);
    expect(m.read8(s + 8)).toBe(2); // revision 2
    expect(m.read8(s + 36)).toBe(0); // 16550
    expect([...m.readBytes(s + 40, 4)]).toEqual([1, 8, 0, 1]);
    expect(m.read64(s + 44)).toBe(0x3f8n);
    expect([m.read8(s + 52), m.read8(s + 53), m.read32(s + 54)]).toEqual([3, 4, 4]);
    expect([m.read8(s + 58), m.read8(s + 59), m.read8(s + 60), m.read8(s + 61)]).toEqual([7, 0, 1, 0]); // 115200 8N1
    expect([m.read16(s + 64), m.read16(s + 66)]).toEqual([0xffff, 0xffff]);
  });

  for (const cpus of [1, 3, 16]) {
    test(`MADT for ${cpus} CPU(s)`, () => {
      const m = place(buildAcpi({ cpus }));
      const { madt: a } = walk(m);
      expect(m.read8(a + 8)).toBeGreaterThanOrEqual(3);
      expect(m.read32(a + 36)).toBe(0xfee00000);
      expect(m.read32(a + 40) & 1).toBe(1); // PCAT_COMPAT
      const len = m.read32(a + 4);
      const lapics: number[][] = [], ioapics: number[][] = [], isos: number[][] = [], nmis: number[][] = [];
      let o = a + 44;
      while (o < a + len) {
        const t = m.read8(o), l = m.read8(o + 1);
        expect(l).toBeGreaterThan(0);
        if (t === 0) lapics.push([m.read8(o + 2), m.read8(o + 3), m.read32(o + 4)]);
        if (t === 1) ioapics.push([m.read8(o + 2), m.read32(o + 4), m.read32(o + 8)]);
        if (t === 2) isos.push([m.read8(o + 2), m.read8(o + 3), m.read32(o + 4), m.read16(o + 8)]);
        if (t === 4) nmis.push([m.read8(o + 2), m.read16(o + 3), m.read8(o + 5)]);
        o += l;
      }
      expect(o).toBe(a + len);
      expect(lapics).toEqual(Array.from({ length: cpus }, (_, i) => [i, i, 1]));
      expect(ioapics).toEqual([[cpus, 0xfec00000, 0]]);
      expect(isos).toEqual([[0, 0, 2, 0x5], [0, 9, 9, 0xd]]);
      expect(nmis).toEqual([[0xff, 0, 1]]);
    });
  }

  test("DSDT carries _S5 = {5,5,0,0} (and _S0)", () => {
    const m = place(buildAcpi({ cpus: 1 }));
    const { dsdt } = walk(m);
    const body = m.readBytes(dsdt + 36, m.read32(dsdt + 4) - 36);
    const needle = name("\\_S5", pkg(SLP_TYP_S5, SLP_TYP_S5, 0, 0));
    const hexs = (b: Uint8Array) => Buffer.from(b).toString("hex");
    expect(hexs(body)).toContain(hexs(needle));
    expect(hexs(body)).toContain(hexs(name("\\_S0", pkg(0, 0, 0, 0))));
    expect(m.read8(dsdt + 8)).toBe(2); // 64-bit integers
  });

  test("extensible: extra DSDT terms and extra tables are linked", () => {
    const extra = sdt("TEST", 1, Uint8Array.of(1, 2, 3, 4));
    const acpi = buildAcpi({ cpus: 2, dsdt: [name("FOO", 7)], tables: [extra] });
    const m = place(acpi);
    const w = walk(m);
    expect(w.tables.has("TEST")).toBe(true);
    expect(m.readBytes(w.tables.get("TEST")! + 36, 4)).toEqual(Uint8Array.of(1, 2, 3, 4));
    expect(Buffer.from(m.readBytes(w.dsdt, m.read32(w.dsdt + 4))).toString("hex")).toContain(Buffer.from(name("FOO", 7)).toString("hex"));
  });

  test("coexists with the MP table at 0xF0000 and validates its inputs", () => {
    const mp = buildMptable({ cpus: 16 });
    const acpi = buildAcpi({ cpus: 16 });
    const mpEnd = Math.max(...mp.blobs.map((b) => b.addr + b.bytes.length));
    expect(mpEnd).toBeLessThanOrEqual(acpi.rsdp);
    expect(() => buildAcpi({ cpus: 0 })).toThrow(RangeError);
    expect(() => buildAcpi({ cpus: 255 })).toThrow(RangeError);
    expect(() => buildAcpi({ cpus: 1, base: 0xf2401 })).toThrow(RangeError);
    expect(() => buildAcpi({ cpus: 200, base: 0xfff00 })).toThrow(/run past/);
    const small = GuestMemory.fake(2 * MiB);
    expect(() => writeAcpi(small, buildAcpi({ cpus: 1, base: 0x300000, limit: 0x400000 }))).toThrow(/outside guest RAM/);
  });
});

describe("ACPI tables vs iasl -d", () => {
  const which = spawnSync("sh", ["-c", "command -v iasl"], { encoding: "utf8" });
  const iasl = which.status === 0 ? which.stdout.trim() : undefined;
  if (!iasl) {
    if (process.env.CI) test("iasl is required in CI", () => { throw new Error("iasl not found (install acpica-tools)"); });
    else { console.warn("[acpi-tables] iasl not found: skipping the iasl disassembly check"); test.skip("iasl -d", () => {}); }
    return;
  }
  test("every table disassembles without warnings or errors", () => {
    const dir = mkdtempSync(join(tmpdir(), "tsbhyve-acpi-"));
    const cpus = 4;
    const acpi = buildAcpi(describePlatform({ cpus, hpetCapabilities: HPET_CAP, com: [true, true], ramSize: 8 * 2 ** 30, slots: [{ slot: 3, pins: [1] }, { slot: 4, pins: [1, 2] }] }));
    const seen: string[] = [];
    for (const [i, b] of acpi.blobs.entries()) {
      const sig = acpi.tables[i]!.signature;
      if (sig === "RSD PTR ") continue; // iasl -d does not take a bare RSDP; checked by walk()
      const file = join(dir, `${sig.toLowerCase()}.dat`);
      writeFileSync(file, b.bytes);
      const r = spawnSync(iasl, ["-d", file], { encoding: "utf8", cwd: dir });
      const out = r.stdout + r.stderr;
      expect(r.status, out).toBe(0);
      expect(out, `${sig}: ${out}`).not.toMatch(/warning|error|does not contain a valid|too long|could not/i);
      const dsl = join(dir, `${sig.toLowerCase()}.dsl`);
      expect(existsSync(dsl), `${sig}: no .dsl`).toBe(true);
      const text = readFileSync(dsl, "utf8");
      expect(text, sig).not.toMatch(/Incorrect|Invalid|\*\*\*\*/);
      if (sig === "APIC") expect(text.match(/Subtable Type/g)!.length).toBe(cpus + 1 + 2 + 1);
      if (sig === "DSDT") expect(text).toMatch(/Name \(\\_S5, Package \(0x04\)[\s\S]*0x05,\s*0x05,\s*Zero,\s*Zero/);
      if (sig === "FACP") expect(text).toMatch(/Value to cause reset : 06/);
      if (sig === "FACP") expect(text).toMatch(/PM Timer Block Address : 00000608/);
      if (sig === "HPET") expect(text).toMatch(/Address : 00000000FED00000/);
      if (sig === "MCFG") expect(text).toMatch(/Base Address : 00000000E0000000[\s\S]*End Bus Number : FF/);
      if (sig === "SPCR") expect(text).toMatch(/Baud Rate : 07/);
      seen.push(sig);
    }
    expect(seen).toEqual(["XSDT", "RSDT", "FACP", "FACS", "APIC", "HPET", "MCFG", "SPCR", "DSDT"]);
  });
});
