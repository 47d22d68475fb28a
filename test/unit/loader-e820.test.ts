import { describe, expect, test } from "bun:test";
import { buildE820, encodeE820, e820FindRam, formatE820, E820_RAM, E820_RESERVED, ECAM_BASE, FW_AREA_BASE } from "../../src/loader/e820.ts";
import { GiB, MiB } from "../../src/mem/guest-memory.ts";

function checkSortedDisjoint(m: { addr: number; size: number }[]) {
  for (let i = 1; i < m.length; i++) expect(m[i]!.addr).toBeGreaterThanOrEqual(m[i - 1]!.addr + m[i - 1]!.size);
}

describe("e820", () => {
  test("256 MiB guest", () => {
    const m = buildE820(256 * MiB);
    expect(m).toEqual([
      { addr: 0, size: 0x9fc00, type: E820_RAM },
      { addr: 0x9fc00, size: 0x100000 - 0x9fc00, type: E820_RESERVED },
      { addr: 0x100000, size: 255 * MiB, type: E820_RAM },
      { addr: 0xe0000000, size: 0x10000000, type: E820_RESERVED },
      { addr: 0xfec00000, size: 0x1_0000_0000 - 0xfec00000, type: E820_RESERVED },
    ]);
    checkSortedDisjoint(m);
  });

  test("RAM above 3 GiB is split around the PCI hole", () => {
    const m = buildE820(8 * GiB);
    checkSortedDisjoint(m);
    const ram = m.filter((e) => e.type === E820_RAM);
    expect(ram.reduce((a, e) => a + e.size, 0)).toBe(8 * GiB - (0x100000 - 0x9fc00));
    expect(ram.at(-1)).toEqual({ addr: 4 * GiB, size: 5 * GiB, type: E820_RAM });
    expect(ram[1]).toEqual({ addr: MiB, size: 3 * GiB - MiB, type: E820_RAM });
    // The PCI MMIO window between lowmem and ECAM stays a gap (Linux allocates BARs from gaps).
    expect(m.some((e) => e.addr < ECAM_BASE && e.addr + e.size > 3 * GiB)).toBe(false);
    expect(e820FindRam(m, FW_AREA_BASE, 1)).toBeUndefined();
    expect(e820FindRam(m, 0x9fc00, 1)).toBeUndefined();
    expect(e820FindRam(m, 0x9fbff, 1)?.addr).toBe(0);
  });

  test("encoding is packed 20-byte entries", () => {
    const m = buildE820(8 * GiB);
    const b = encodeE820(m);
    expect(b.length).toBe(20 * m.length);
    const dv = new DataView(b.buffer);
    const last = m.length - 1;
    expect(dv.getBigUint64(last * 20, true)).toBe(4n << 30n);
    expect(dv.getBigUint64(last * 20 + 8, true)).toBe(5n << 30n);
    expect(dv.getUint32(last * 20 + 16, true)).toBe(1);
    expect(formatE820(m)).toContain("reserved");
  });

  test("rejects tiny memory", () => {
    expect(() => buildE820(MiB)).toThrow(RangeError);
  });
});
