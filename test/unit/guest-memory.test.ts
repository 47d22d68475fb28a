import { describe, expect, test } from "bun:test";
import { GiB, GuestMemory, GuestMemoryError, HIGHMEM_BASE, LOWMEM_LIMIT, MiB, ramLayout, region } from "../../src/mem/guest-memory.ts";

describe("ramLayout (bhyve's map)", () => {
  test("small guests are one region from 0", () => {
    expect(ramLayout(512 * MiB)).toEqual([{ gpa: 0, size: 512 * MiB }]);
  });
  test("RAM above 3 GiB moves above 4 GiB, views split at 2 GiB", () => {
    const l = ramLayout(5 * GiB);
    expect(l).toEqual([
      { gpa: 0, size: 2 * GiB },
      { gpa: 2 * GiB, size: 1 * GiB },
      { gpa: HIGHMEM_BASE, size: 2 * GiB },
    ]);
    expect(l.reduce((a, r) => a + r.size, 0)).toBe(5 * GiB);
    expect(l.every((r) => r.gpa + r.size <= LOWMEM_LIMIT || r.gpa >= HIGHMEM_BASE)).toBe(true);
  });
});

describe("GuestMemory bounds checks", () => {
  const mem = GuestMemory.fake(64 * MiB);
  test("round trips at every width", () => {
    mem.write8(0x1000, 0xab); mem.write16(0x1002, 0xbeef); mem.write32(0x1004, 0xdeadbeef); mem.write64(0x1008, 0x0123456789abcdefn);
    expect(mem.read8(0x1000)).toBe(0xab);
    expect(mem.read16(0x1002)).toBe(0xbeef);
    expect(mem.read32(0x1004)).toBe(0xdeadbeef);
    expect(mem.read64(0x1008)).toBe(0x0123456789abcdefn);
    expect([...mem.readBytes(0x1004, 4)]).toEqual([0xef, 0xbe, 0xad, 0xde]);
  });
  test("refuses anything outside RAM, negative, fractional or overflowing", () => {
    const bad: [number, number][] = [[64 * MiB, 1], [64 * MiB - 3, 4], [-1, 1], [0.5, 1], [2 ** 60, 1], [0, -1], [Number.MAX_SAFE_INTEGER, 2], [NaN, 1]];
    for (const [a, l] of bad) {
      expect(() => mem.view(a, l)).toThrow(GuestMemoryError);
      expect(mem.valid(a, l)).toBe(false);
    }
    expect(() => mem.read32(64 * MiB - 2)).toThrow(GuestMemoryError);
    expect(() => mem.writeBytes(64 * MiB - 2, new Uint8Array(4))).toThrow(GuestMemoryError);
    // the failed write must not have written its first half
    expect(mem.read16(64 * MiB - 2)).toBe(0);
  });
  test("copies span adjacent regions but never a hole", () => {
    const m = new GuestMemory([region(0, new Uint8Array(16)), region(16, new Uint8Array(16)), region(64, new Uint8Array(16))]);
    m.writeBytes(12, new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8]));
    expect([...m.readBytes(12, 8)]).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
    expect(() => m.readBytes(28, 8)).toThrow(GuestMemoryError);
    expect(() => m.view(12, 8)).toThrow(GuestMemoryError); // a view must lie in one region
  });
  test("overlapping regions are refused", () => {
    expect(() => new GuestMemory([region(0, new Uint8Array(16)), region(8, new Uint8Array(16))])).toThrow(/overlap/);
  });
});
