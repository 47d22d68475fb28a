import { describe, expect, test } from "bun:test";
import {
  FW_CFG_ACPI_RSDP, FW_CFG_ACPI_TABLES, LOADER_ENTRY_BYTES, LoaderZone, buildTableLoader, decodeLoader, encodeLoader,
  type LoaderCommand, type TableLoader,
} from "../../src/acpi/loader.ts";
import { describePlatform } from "../../src/acpi/platform.ts";
import { FADT, buildAcpi, buildAcpiTables } from "../../src/acpi/tables.ts";
import { sum8 } from "../../src/loader/blob.ts";
import { GuestMemory, MiB } from "../../src/mem/guest-memory.ts";

const platform = () => describePlatform({
  cpus: 3, ramSize: 2 * 2 ** 30, com: [true, true], hpetCapabilities: 0x8086a201,
  slots: [{ slot: 2, pins: [1] }, { slot: 3, pins: [1, 2, 3, 4] }],
});

/**
 * Run the loader script like firmware: ALLOCATE places each file at a fake address (HIGH files high
 * in RAM, FSEG files in 0xE0000-0xFFFFF) and copies it there, ADD_POINTER adds the source file's
 * address, ADD_CHECKSUM sets the result byte. `style` picks OVMF's (zero the byte, then store the
 * checksum) or SeaBIOS's (subtract the sum from the byte) checksum update.
 */
function runLoader(m: GuestMemory, files: Map<string, Uint8Array>, script: Uint8Array, style: "ovmf" | "seabios") {
  const addr = new Map<string, number>();
  let high = 0x40_0000, fseg = 0xe_0000;
  const pointees: number[] = [];
  for (const c of decodeLoader(script)) {
    if (c.type === "allocate") {
      const blob = files.get(c.file)!;
      expect(blob, c.file).toBeDefined();
      expect(addr.has(c.file)).toBe(false);
      const take = (cur: number) => Math.ceil(cur / c.align) * c.align;
      const a = c.zone === LoaderZone.FSEG ? take(fseg) : take(high);
      if (c.zone === LoaderZone.FSEG) { fseg = a + blob.length; expect(fseg).toBeLessThanOrEqual(0x10_0000); } else high = a + blob.length;
      m.writeBytes(a, blob);
      addr.set(c.file, a);
    } else if (c.type === "add-pointer") {
      const dst = addr.get(c.dest)!, src = addr.get(c.src)!;
      expect(dst !== undefined && src !== undefined, "pointer files allocated first").toBe(true);
      expect(c.offset + c.size).toBeLessThanOrEqual(files.get(c.dest)!.length);
      const at = dst + c.offset;
      const old = c.size === 8 ? Number(m.read64(at)) : m.read32(at);
      expect(old, "pointer value is an offset inside the source file").toBeLessThan(files.get(c.src)!.length);
      if (c.size === 8) m.write64(at, BigInt(old + src)); else m.write32(at, old + src);
      pointees.push(old + src);
    } else {
      const a = addr.get(c.file)!;
      const at = a + c.resultOffset;
      if (style === "ovmf") {
        m.write8(at, 0);
        m.write8(at, (0x100 - sum8(m.readBytes(a + c.start, c.length))) & 0xff);
      } else {
        m.write8(at, (m.read8(at) - sum8(m.readBytes(a + c.start, c.length))) & 0xff);
      }
    }
  }
  return { addr, pointees };
}

/** Walk RSDP -> XSDT/RSDT -> tables -> FADT's DSDT/FACS, checking every checksum; returns signatures. */
function walkFrom(m: GuestMemory, rsdp: number): string[] {
  const sig = (a: number) => String.fromCharCode(...m.readBytes(a, 4));
  expect(String.fromCharCode(...m.readBytes(rsdp, 8))).toBe("RSD PTR ");
  expect(sum8(m.readBytes(rsdp, 20))).toBe(0);
  expect(sum8(m.readBytes(rsdp, 36))).toBe(0);
  const check = (a: number, want?: string) => {
    if (want) expect(sig(a)).toBe(want);
    const len = m.read32(a + 4);
    expect(sum8(m.readBytes(a, len)), `${sig(a)} checksum`).toBe(0);
    return len;
  };
  const xsdt = Number(m.read64(rsdp + 24)), rsdt = m.read32(rsdp + 16);
  const xl = check(xsdt, "XSDT");
  check(rsdt, "RSDT");
  const seen: string[] = [];
  for (let i = 0; i < (xl - 36) / 8; i++) {
    const a = Number(m.read64(xsdt + 36 + 8 * i));
    expect(m.read32(rsdt + 36 + 4 * i)).toBe(a);
    check(a);
    seen.push(sig(a));
  }
  const fadt = Number(m.read64(xsdt + 36));
  expect(sig(fadt)).toBe("FACP");
  const dsdt = Number(m.read64(fadt + FADT.X_DSDT));
  expect(m.read32(fadt + FADT.DSDT)).toBe(dsdt);
  check(dsdt, "DSDT");
  const facs = Number(m.read64(fadt + FADT.X_FIRMWARE_CTRL));
  expect(m.read32(fadt + FADT.FIRMWARE_CTRL)).toBe(facs);
  expect(sig(facs)).toBe("FACS");
  expect(facs % 64).toBe(0);
  return [...seen, "DSDT", "FACS"];
}

const filesOf = (l: TableLoader) => new Map([[FW_CFG_ACPI_TABLES, l.tables], [FW_CFG_ACPI_RSDP, l.rsdp]]);

describe("fw_cfg table loader (etc/table-loader)", () => {
  test("command encoding: 128-byte entries, round trip", () => {
    const cmds: LoaderCommand[] = [
      { type: "allocate", file: "etc/acpi/tables", align: 64, zone: 1 },
      { type: "add-pointer", dest: "etc/acpi/rsdp", src: "etc/acpi/tables", offset: 16, size: 4 },
      { type: "add-checksum", file: "etc/acpi/rsdp", resultOffset: 8, start: 0, length: 20 },
    ];
    const b = encodeLoader(cmds);
    expect(b.length).toBe(3 * LOADER_ENTRY_BYTES);
    const dv = new DataView(b.buffer);
    expect([dv.getUint32(0, true), dv.getUint32(128, true), dv.getUint32(256, true)]).toEqual([1, 2, 3]);
    expect(String.fromCharCode(...b.subarray(4, 19))).toBe("etc/acpi/tables");
    expect(b[4 + 15]).toBe(0);
    expect(dv.getUint32(4 + 56, true)).toBe(64); // ALLOCATE alignment
    expect(b[4 + 60]).toBe(1); // zone
    expect(String.fromCharCode(...b.subarray(128 + 60, 128 + 75))).toBe("etc/acpi/tables"); // ADD_POINTER src
    expect(dv.getUint32(128 + 116, true)).toBe(16);
    expect(b[128 + 120]).toBe(4);
    expect([dv.getUint32(256 + 60, true), dv.getUint32(256 + 64, true), dv.getUint32(256 + 68, true)]).toEqual([8, 0, 20]);
    expect(decodeLoader(b)).toEqual(cmds);
    expect(() => encodeLoader([{ type: "allocate", file: "x".repeat(56), align: 1, zone: 1 }])).toThrow(RangeError);
  });

  test("script shape: allocations, then pointers, then checksums; RSDP in FSEG", () => {
    const l = buildTableLoader(buildAcpiTables(platform()));
    const kinds = l.commands.map((c) => c.type);
    const lastAlloc = kinds.lastIndexOf("allocate"), firstPtr = kinds.indexOf("add-pointer");
    expect(lastAlloc).toBeLessThan(firstPtr);
    expect(kinds.lastIndexOf("add-pointer")).toBeLessThan(kinds.indexOf("add-checksum"));
    expect(l.commands.filter((c) => c.type === "allocate")).toEqual([
      { type: "allocate", file: FW_CFG_ACPI_RSDP, align: 16, zone: LoaderZone.FSEG },
      { type: "allocate", file: FW_CFG_ACPI_TABLES, align: 64, zone: LoaderZone.HIGH },
    ]);
    expect(decodeLoader(l.loader)).toEqual(l.commands);
    expect(l.rsdp.length).toBe(36);
  });

  for (const style of ["ovmf", "seabios"] as const) {
    test(`applied like ${style}: RSDP walks to every table with valid checksums`, () => {
      const l = buildTableLoader(buildAcpi(platform()).set);
      const m = GuestMemory.fake(8 * MiB);
      const { addr, pointees } = runLoader(m, filesOf(l), l.loader, style);
      const found = walkFrom(m, addr.get(FW_CFG_ACPI_RSDP)!);
      expect(found.sort()).toEqual(["APIC", "DSDT", "FACP", "FACS", "HPET", "MCFG", "SPCR"]);
      // OVMF installs every ADD_POINTER target that is a table: each one must start with a table.
      const sigs = new Set(pointees.map((a) => String.fromCharCode(...m.readBytes(a, 4))));
      expect([...sigs].sort()).toEqual(["APIC", "DSDT", "FACP", "FACS", "HPET", "MCFG", "RSDT", "SPCR", "XSDT"]);
    });
  }

  test("same table contents as the direct-boot placement (only addresses differ)", () => {
    const acpi = buildAcpi(platform());
    const l = buildTableLoader(acpi.set);
    const m = GuestMemory.fake(8 * MiB);
    const { addr } = runLoader(m, filesOf(l), l.loader, "ovmf");
    const base = addr.get(FW_CFG_ACPI_TABLES)!;
    const dsdtDirect = acpi.blobs.find((b) => String.fromCharCode(...b.bytes.subarray(0, 4)) === "DSDT")!.bytes;
    let off = 0, found = false;
    while (off < l.tables.length) {
      const sig = String.fromCharCode(...l.tables.subarray(off, off + 4));
      const len = new DataView(l.tables.buffer).getUint32(off + 4, true);
      if (sig === "DSDT") { expect(m.readBytes(base + off, len)).toEqual(dsdtDirect); found = true; }
      off = Math.ceil((off + Math.max(len, 1)) / 16) * 16;
    }
    expect(found).toBe(true);
  });
});
