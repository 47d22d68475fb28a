/**
 * SMBIOS: our own parser walks the tables back (structures, string sets, handles, checksums), then
 * dmidecode (Debian package dmidecode) decodes a --from-dump file built from them: entry point at 0,
 * table at 0x20. The test fails (never skips) if dmidecode is missing.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { loadConfigText } from "../../src/config/load.ts";
import type { VmConfig } from "../../src/config/types.ts";
import { sum8 } from "../../src/loader/blob.ts";
import { GuestMemory, ramLayout } from "../../src/mem/guest-memory.ts";
import { buildSmbios, encodeAnchor21, encodeAnchor3, parseSmbiosTable, placeSmbios, SMBIOS_BASE, SMBIOS_OVERFLOW_BASE, writeSmbios, type Smbios } from "../../src/smbios/smbios.ts";
import { defaultVmUuid, formatUuid, TSBHYVE_NAMESPACE, URL_NAMESPACE, uuidSmbiosBytes, uuidV5 } from "../../src/smbios/uuid.ts";

const GiB = 2 ** 30, MiB = 2 ** 20;
const dir = mkdtempSync(join(tmpdir(), "tsbhyve-smbios-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const cfgOf = (extra = "", mem = "256M"): VmConfig =>
  loadConfigText(`name = "smb"\nmemory.size = "${mem}"\nboot.kernel = "k"\n${extra}`, join(dir, "g.toml"));
writeFileSync(join(dir, "k"), "x");

const CUSTOM = `cpus = 8\nsockets = 2\ncores = 2\nthreads = 2\nuuid = "01234567-89AB-cdef-0123-456789abcdef"\n` +
  `[bios]\nvendor = "ACME BIOS"\nversion = "2.7.1"\nrelease_date = "12/24/2024"\n` +
  `[system]\nmanufacturer = "ACME"\nproduct_name = "Rocket Sled"\nversion = "v9"\nserial_number = "SN-1"\nsku = "SKU-1"\nfamily_name = "Sleds"\n` +
  `[board]\nmanufacturer = "ACME Boards"\nproduct_name = "B-1"\nversion = "rev A"\nserial_number = "BSN"\nasset_tag = "BAT"\nlocation = "slot 0"\n` +
  `[chassis]\nmanufacturer = "ACME Cases"\nversion = "c1"\nserial_number = "CSN"\nasset_tag = "CAT"\nsku = ""\n`;

function checkTable(sm: Smbios) {
  const list = parseSmbiosTable(sm.tables);
  expect(list.length).toBe(sm.count);
  expect(new Set(list.map((s) => s.handle)).size).toBe(list.length);
  expect(list.at(-1)!.type).toBe(127);
  // anchor: checksum, size, address 0
  expect(new TextDecoder().decode(sm.anchor.subarray(0, 5))).toBe("_SM3_");
  expect(sum8(sm.anchor)).toBe(0);
  const dv = new DataView(sm.anchor.buffer);
  expect(dv.getUint32(0x0c, true)).toBe(sm.tables.length);
  expect(dv.getBigUint64(0x10, true)).toBe(0n);
  // every string reference points into its string set
  return list;
}

describe("uuid", () => {
  test("RFC 9562 v5 test vector, stable default, SMBIOS byte order", () => {
    // RFC 9562 appendix A.4: UUIDv5 of "www.example.com" in the DNS namespace
    expect(uuidV5("6ba7b810-9dad-11d1-80b4-00c04fd430c8", "www.example.com")).toBe("2ed6657d-e927-568b-95e1-2665a8aea6a2");
    expect(TSBHYVE_NAMESPACE).toBe(uuidV5(URL_NAMESPACE, "tsbhyve:vm"));
    expect(defaultVmUuid("web1")).toBe(defaultVmUuid("web1"));
    expect(defaultVmUuid("web1")).not.toBe(defaultVmUuid("web2"));
    expect(defaultVmUuid("web1")[14]).toBe("5");
    expect(formatUuid(uuidSmbiosBytes("00112233-4455-6677-8899-aabbccddeeff"))).toBe("33221100-5544-7766-8899-aabbccddeeff");
    expect(cfgOf().uuid).toBe(defaultVmUuid("smb"));
  });
});

describe("structures", () => {
  test("defaults: every type present, strings and numbers", () => {
    const cfg = cfgOf();
    const sm = buildSmbios(cfg, ramLayout(cfg.memory.size));
    const list = checkTable(sm);
    expect(list.map((s) => s.type)).toEqual([0, 1, 2, 3, 4, 16, 17, 19, 32, 127]);
    const t0 = list[0]!;
    expect([t0.str(t0.area[4]!), t0.str(t0.area[5]!), t0.str(t0.area[8]!)]).toEqual(["tsbhyve", "1.0", "01/01/2025"]);
    expect(t0.area[0x13]! & 0x10).toBe(0x10); // virtual machine
    expect([t0.area[0x14], t0.area[0x15]]).toEqual([1, 0]);
    const t1 = list[1]!;
    expect(t1.strings).toEqual(["tsbhyve", "tsbhyve VM", "1.0", "None", "Virtual Machine"]);
    expect(formatUuid(uuidSmbiosBytes(formatUuid(t1.area.subarray(8, 24))))).toBe(cfg.uuid); // swap is an involution
    const t16 = list[5]!;
    expect(new DataView(t16.area.buffer, t16.area.byteOffset).getUint32(7, true)).toBe(256 * 1024);
    const t17 = list[6]!;
    expect(new DataView(t17.area.buffer, t17.area.byteOffset).getUint16(0x0c, true)).toBe(256);
    const t19 = list[7]!;
    const dv19 = new DataView(t19.area.buffer, t19.area.byteOffset);
    expect([dv19.getUint32(4, true), dv19.getUint32(8, true)]).toEqual([0, 256 * 1024 - 1]);
    const t32 = list[8]!;
    expect(t32.length).toBe(11);
    expect(t32.strings).toEqual([]);
  });
  test("custom keys, topology, high memory, empty string = 0", () => {
    const cfg = cfgOf(CUSTOM, "6G");
    const sm = buildSmbios(cfg, ramLayout(cfg.memory.size));
    const list = checkTable(sm);
    const t4 = list.filter((s) => s.type === 4);
    expect(t4.length).toBe(2);
    expect(t4.map((s) => s.str(s.area[4]!))).toEqual(["CPU 0", "CPU 1"]);
    expect([t4[0]!.area[0x23], t4[0]!.area[0x24], t4[0]!.area[0x25]]).toEqual([2, 2, 4]);
    expect(new DataView(t4[0]!.area.buffer, t4[0]!.area.byteOffset).getUint16(0x26, true)).toBe(0x1c);
    const t3 = list.find((s) => s.type === 3)!;
    expect(t3.area[0x15]).toBe(0); // empty SKU
    expect(list[0]!.strings).toEqual(["ACME BIOS", "2.7.1", "12/24/2024"]);
    expect([list[0]!.area[0x14], list[0]!.area[0x15]]).toEqual([2, 7]);
    expect(formatUuid(list[1]!.area.subarray(8, 24))).toBe("67452301-ab89-efcd-0123-456789abcdef");
    const t19 = list.filter((s) => s.type === 19).map((s) => new DataView(s.area.buffer, s.area.byteOffset));
    expect(t19.map((d) => [d.getUint32(4, true), d.getUint32(8, true)])).toEqual([[0, 3 * 1024 * 1024 - 1], [4 * 1024 * 1024, 7 * 1024 * 1024 - 1]]);
    expect(list.filter((s) => s.type === 17).length).toBe(1);
  });
  test("big memory: several DIMMs; 16 MiB ROM uses the extended size", () => {
    const cfg = cfgOf("", "40G");
    const sm = buildSmbios(cfg, ramLayout(cfg.memory.size), { biosRomSize: 16 * MiB });
    const list = checkTable(sm);
    const t17 = list.filter((s) => s.type === 17).map((s) => new DataView(s.area.buffer, s.area.byteOffset).getUint16(0x0c, true));
    expect(t17).toEqual([16384, 16384, 8192]);
    expect(list[0]!.area[9]).toBe(0xff);
    expect(new DataView(list[0]!.area.buffer, list[0]!.area.byteOffset).getUint16(0x18, true)).toBe(16);
  });
  test("config validation of the SMBIOS keys", () => {
    expect(() => cfgOf(`[bios]\nrelease_date = "2024-12-24"\n`)).toThrow("bios.release_date: expected a date mm/dd/yyyy");
    expect(() => cfgOf(`[system]\nproduct_name = "bad\\u0007bell"\n`)).toThrow("system.product_name: expected text of at most 64 characters");
    expect(() => cfgOf(`[chassis]\nsku = "${"x".repeat(65)}"\n`)).toThrow("chassis.sku");
    expect(() => cfgOf(`[board]\nlocaton = "x"\n`)).toThrow("board.location");
    expect(cfgOf(`[system]\nproduct_name = "Ünïcode ✓"\n`).smbios.system.productName).toBe("Ünïcode ✓");
  });
});

describe("placement for direct boot", () => {
  test("entry points at 0xF1000/0xF1020, table at 0xF1040, below the ACPI tables", () => {
    const cfg = cfgOf(CUSTOM);
    const sm = buildSmbios(cfg, ramLayout(cfg.memory.size));
    const mem = GuestMemory.fake(cfg.memory.size);
    const p = writeSmbios(mem, sm);
    expect([p.anchor3, p.anchor21, p.table]).toEqual([0xf1000, 0xf1020, 0xf1040]);
    expect(p.table + sm.tables.length).toBeLessThanOrEqual(0xf2400);
    const a3 = mem.readBytes(0xf1000, 24);
    expect(sum8(a3)).toBe(0);
    expect(new DataView(a3.buffer).getBigUint64(0x10, true)).toBe(0xf1040n);
    const a21 = mem.readBytes(0xf1020, 31);
    expect(new TextDecoder().decode(a21.subarray(0, 4))).toBe("_SM_");
    expect(sum8(a21)).toBe(0);
    expect(sum8(a21.subarray(0x10))).toBe(0);
    expect(new DataView(a21.buffer).getUint32(0x18, true)).toBe(0xf1040);
    expect(mem.readBytes(0xf1040, sm.tables.length)).toEqual(sm.tables);
  });
  test("too many sockets for 0xF1040..0xF2400: the table moves to 0xE0000", () => {
    const cfg = cfgOf(`cpus = 200\n`);
    expect(cfg.sockets).toBe(200);
    const sm = buildSmbios(cfg, ramLayout(cfg.memory.size));
    const p = placeSmbios(sm);
    expect(p.anchor3).toBe(SMBIOS_BASE);
    expect(p.table).toBe(SMBIOS_OVERFLOW_BASE);
    expect(new DataView(p.blobs[0]!.bytes.buffer).getBigUint64(0x10, true)).toBe(BigInt(SMBIOS_OVERFLOW_BASE));
  });
});

/** dmidecode --from-dump: entry point at 0 with the table address patched to 0x20, table at 0x20. */
function dmidecode(sm: Smbios, which: "3" | "21"): { code: number; out: string; err: string } {
  const ep = which === "3" ? encodeAnchor3(sm.tables.length, 0x20) : encodeAnchor21(sm, 0x20);
  const file = new Uint8Array(0x20 + sm.tables.length);
  file.set(ep, 0);
  file.set(sm.tables, 0x20);
  const path = join(dir, `dump-${which}.bin`);
  writeFileSync(path, file);
  const r = Bun.spawnSync(["dmidecode", "--from-dump", path], { env: { ...process.env, PATH: `${process.env.PATH}:/usr/sbin:/sbin` } });
  return { code: r.exitCode, out: r.stdout.toString(), err: r.stderr.toString() };
}

describe("dmidecode", () => {
  for (const which of ["3", "21"] as const) {
    test(`decodes every structure (${which === "3" ? "3.0" : "2.1"} entry point)`, () => {
      const cfg = cfgOf(CUSTOM, "6G");
      const sm = buildSmbios(cfg, ramLayout(cfg.memory.size), { biosRomSize: 2 * MiB });
      const { code, out, err } = dmidecode(sm, which);
      expect(err).toBe("");
      expect(code).toBe(0);
      expect(out).toContain(which === "3" ? "SMBIOS 3.1.0 present." : "SMBIOS 3.1 present.");
      if (which === "21") expect(out).toContain(`${sm.count} structures occupying ${sm.tables.length} bytes.`);
      expect(out.match(/^Handle 0x/gm)!.length).toBe(sm.count);
      for (const bad of ["<OUT OF SPEC>", "Bad index", "Invalid entry", "Unknown Type", "Wrong DMI structures", "<BAD INDEX>"]) {
        expect(out).not.toContain(bad);
      }
      for (const want of [
        "BIOS Information", "Vendor: ACME BIOS", "Version: 2.7.1", "Release Date: 12/24/2024", "ROM Size: 2 MB",
        "System is a virtual machine", "BIOS Revision: 2.7",
        "System Information", "Manufacturer: ACME", "Product Name: Rocket Sled", "Serial Number: SN-1",
        "UUID: 01234567-89ab-cdef-0123-456789abcdef", "Wake-up Type: Power Switch", "SKU Number: SKU-1", "Family: Sleds",
        "Base Board Information", "Manufacturer: ACME Boards", "Asset Tag: BAT", "Location In Chassis: slot 0", "Type: Motherboard",
        "Chassis Information", "Type: Other", "Asset Tag: CAT", "SKU Number: Not Specified",
        "Processor Information", "Socket Designation: CPU 0", "Socket Designation: CPU 1", "Core Count: 2", "Thread Count: 4",
        "64-bit capable", "Multi-Core", "Hardware Thread",
        "Physical Memory Array", "Maximum Capacity: 6 GB", "Number Of Devices: 1",
        "Memory Device", "Size: 6 GB", "Locator: DIMM 0", "Speed: Unknown",
        "Memory Array Mapped Address", "Starting Address: 0x00000000000", "Ending Address: 0x000BFFFFFFF",
        "Starting Address: 0x00100000000", "Ending Address: 0x001BFFFFFFF",
        "System Boot Information", "Status: No errors detected",
        "End Of Table",
      ]) expect(out).toContain(want);
      expect(out.toUpperCase()).toContain(cfg.uuid.toUpperCase());
    });
  }
  test("defaults decode too (64 KiB ROM, default UUID)", () => {
    const cfg = cfgOf();
    const { code, out, err } = dmidecode(buildSmbios(cfg, ramLayout(cfg.memory.size)), "3");
    expect([code, err]).toEqual([0, ""]);
    expect(out).toContain("ROM Size: 64 kB");
    expect(out).toContain(`UUID: ${cfg.uuid}`);
    expect(out).toContain("Product Name: tsbhyve VM");
  });
  test("GiB-sized extended ROM field and many sockets", () => {
    const cfg = cfgOf(`cpus = 64\n`, "1G");
    const { code, out, err } = dmidecode(buildSmbios(cfg, ramLayout(cfg.memory.size), { biosRomSize: 16 * MiB }), "3");
    expect([code, err]).toEqual([0, ""]);
    expect(out).toContain("ROM Size: 16 MB");
    expect(out).toContain("Socket Designation: CPU 63");
  });
});

void GiB;
