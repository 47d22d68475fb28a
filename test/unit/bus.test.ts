import { describe, expect, test } from "bun:test";
import { Bus, BusError } from "../../src/devices/bus.ts";
import type { AccessSize, Device, Space } from "../../src/devices/device.ts";

function recorder(name: string, ranges: Device["ranges"]) {
  const log: string[] = [];
  const regs = new Map<number, number>();
  const dev: Device = {
    name, ranges,
    read(space: Space, base: number, off: number, size: AccessSize) { log.push(`r ${space} ${base.toString(16)}+${off} ${size}`); return regs.get(off) ?? 0x11223344 >>> (8 * (4 - size)); },
    write(space: Space, base: number, off: number, size: AccessSize, v: number) { log.push(`w ${space} ${base.toString(16)}+${off} ${size} ${v.toString(16)}`); regs.set(off, v); },
  };
  return { dev, log };
}

describe("Bus", () => {
  test("unassigned ports and MMIO read all-ones and ignore writes, reporting each byte", () => {
    const seen: string[] = [];
    const bus = new Bus((space, addr, size, write) => seen.push(`${space} ${addr.toString(16)} ${size} ${write}`));
    expect(bus.read("pio", 0x300, 1)).toBe(0xff);
    expect(bus.read("pio", 0x300, 2)).toBe(0xffff);
    expect(bus.read("pio", 0x300, 4)).toBe(0xffffffff);
    expect(bus.readWide("mmio", 0xc0000000, 8)).toEqual([0xffffffff, 0xffffffff]);
    bus.write("pio", 0x300, 4, 0x12345678);
    expect(seen.length).toBe(1 + 2 + 4 + 8 + 4);
  });
  test("overlaps are refused, byte-granular neighbours are fine", () => {
    const bus = new Bus();
    bus.register(recorder("a", [{ space: "pio", base: 0xcf9, size: 1 }]).dev);
    bus.register(recorder("b", [{ space: "pio", base: 0xcf8, size: 1 }, { space: "pio", base: 0xcfc, size: 4 }]).dev);
    expect(() => bus.register(recorder("c", [{ space: "pio", base: 0xcf8, size: 4 }]).dev)).toThrow(/0xcf8 already used by b/);
    bus.register(recorder("m", [{ space: "mmio", base: 0xfed00000, size: 0x400 }]).dev);
    expect(() => bus.register(recorder("n", [{ space: "mmio", base: 0xfed003ff, size: 2 }]).dev)).toThrow(BusError);
    expect(() => bus.register(recorder("p", [{ space: "pio", base: 0xffff, size: 2 }]).dev)).toThrow(/outside/);
  });
  test("8-byte MMIO is split into two 4-byte accesses; straddling accesses into bytes", () => {
    const bus = new Bus();
    const { dev, log } = recorder("m", [{ space: "mmio", base: 0x1000, size: 16 }]);
    bus.register(dev);
    bus.writeWide("mmio", 0x1000, 8, 0xaabbccdd, 0x11223344);
    expect(log).toEqual(["w mmio 1000+0 4 aabbccdd", "w mmio 1000+4 4 11223344"]);
    log.length = 0;
    expect(bus.read("mmio", 0x100e, 4)).toBe((0xffff0000 | (0x11 << 8) | 0x11) >>> 0); // last two bytes in device, rest unassigned
    expect(log).toEqual(["r mmio 1000+14 1", "r mmio 1000+15 1"]);
  });
  test("the device lock is taken around every access", () => {
    const bus = new Bus();
    let held = 0, max = 0;
    const { dev } = recorder("l", [{ space: "pio", base: 0x10, size: 4 }]);
    const locked: Device = { ...dev, lock: { acquire: () => { held++; max = Math.max(max, held); }, release: () => { held--; } },
      read: (...a) => { expect(held).toBe(1); return dev.read(...a); } };
    bus.register(locked);
    bus.read("pio", 0x10, 4);
    bus.read("pio", 0x11, 2); // unaligned: split into bytes, each locked
    expect(held).toBe(0);
    expect(max).toBe(1);
  });
});
