import { describe, expect, test } from "bun:test";
import { buildMptable, MPTABLE_BASE } from "../../src/loader/mptable.ts";
import { sum8, writeBlobs } from "../../src/loader/blob.ts";
import { GuestMemory, MiB } from "../../src/mem/guest-memory.ts";

const ascii = (m: GuestMemory, a: number, n: number) => String.fromCharCode(...m.readBytes(a, n));

/** Find the floating pointer the way a guest does: 16-byte steps through 0xF0000-0xFFFFF. */
function scanFloating(m: GuestMemory): number | undefined {
  for (let a = 0xf0000; a < 0x100000; a += 16) if (ascii(m, a, 4) === "_MP_" && sum8(m.readBytes(a, 16)) === 0) return a;
  return undefined;
}

describe("MP table", () => {
  for (const cpus of [1, 4, 16]) {
    test(`${cpus} CPU(s): decodes like a guest would`, () => {
      const mp = buildMptable({ cpus });
      const m = GuestMemory.fake(4 * MiB);
      writeBlobs(m, mp.blobs);
      const fp = scanFloating(m)!;
      expect(fp).toBe(MPTABLE_BASE);
      expect(m.read8(fp + 8)).toBe(1);
      expect(m.read8(fp + 9)).toBe(4);
      expect(m.read8(fp + 11)).toBe(0);
      const ct = m.read32(fp + 4);
      expect(ct % 4).toBe(0);
      expect(ascii(m, ct, 4)).toBe("PCMP");
      const len = m.read16(ct + 4);
      expect(sum8(m.readBytes(ct, len))).toBe(0);
      expect(m.read8(ct + 6)).toBe(4);
      expect(m.read32(ct + 36)).toBe(0xfee00000);
      const count = m.read16(ct + 34);
      expect(count).toBe(mp.entries);
      const procs: { id: number; flags: number }[] = [];
      const ioints: [number, number, number, number][] = [];
      const lints: [number, number, number][] = [];
      let ioapic: { id: number; ver: number; addr: number } | undefined;
      let buses = 0, lastType = -1;
      let o = ct + 44;
      for (let i = 0; i < count; i++) {
        const t = m.read8(o);
        expect(t).toBeGreaterThanOrEqual(lastType); // spec: entries sorted by type
        lastType = t;
        if (t === 0) { procs.push({ id: m.read8(o + 1), flags: m.read8(o + 3) }); o += 20; continue; }
        if (t === 1) { expect(ascii(m, o + 2, 6)).toBe("ISA   "); buses++; }
        if (t === 2) ioapic = { id: m.read8(o + 1), ver: m.read8(o + 2), addr: m.read32(o + 4) };
        if (t === 3) ioints.push([m.read8(o + 1), m.read8(o + 5), m.read8(o + 6), m.read8(o + 7)]);
        if (t === 4) lints.push([m.read8(o + 1), m.read8(o + 6), m.read8(o + 7)]);
        o += 8;
      }
      expect(o).toBe(ct + len);
      expect(procs).toEqual(Array.from({ length: cpus }, (_, i) => ({ id: i, flags: i === 0 ? 3 : 1 })));
      expect(buses).toBe(1);
      expect(ioapic).toEqual({ id: cpus, ver: 0x11, addr: 0xfec00000 });
      expect(ioints.length).toBe(15);
      expect(ioints.find((e) => e[1] === 0)).toEqual([0, 0, cpus, 2]);
      expect(ioints.find((e) => e[1] === 2)).toBeUndefined();
      for (const [type, irq, id, pin] of ioints) {
        expect(type).toBe(0);
        expect(id).toBe(cpus);
        if (irq !== 0) expect(pin).toBe(irq);
      }
      expect(lints).toEqual([[3, 0xff, 0], [1, 0xff, 1]]);
    });
  }

  test("limits", () => {
    expect(() => buildMptable({ cpus: 0 })).toThrow(RangeError);
    expect(() => buildMptable({ cpus: 255 })).toThrow(RangeError);
    expect(() => buildMptable({ cpus: 1, base: 0xf0008 })).toThrow(/aligned/);
    expect(() => buildMptable({ cpus: 254 })).not.toThrow();
    expect(() => buildMptable({ cpus: 64, limit: 0xf0400 })).toThrow(/runs past/);
  });
});
