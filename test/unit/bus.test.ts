import { describe, expect, test } from "bun:test";
import { Bus, BusError, isRelocatable, MapGeneration, sharedMapGeneration, type IoRangeEx, type RelocatableDevice } from "../../src/devices/bus.ts";
import type { AccessSize, Device, IoRange, Space } from "../../src/devices/device.ts";
import { StateArena, defineLayout } from "../../src/devices/state.ts";

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

  test("an exact claim takes only its width at its base; other widths fall through to byte owners", () => {
    const bus = new Bus();
    const reset = recorder("reset", [{ space: "pio", base: 0xcf9, size: 1 }]);
    const cfg = recorder("cfg", [{ space: "pio", base: 0xcf8, size: 4, exact: true } as IoRangeEx, { space: "pio", base: 0xcfc, size: 4 }]);
    bus.register(reset.dev);
    bus.register(cfg.dev);
    bus.write("pio", 0xcf8, 4, 0x80000400);
    expect(cfg.log).toEqual(["w pio cf8+0 4 80000400"]);
    expect(reset.log).toEqual([]);
    bus.write("pio", 0xcf9, 1, 6);
    expect(reset.log).toEqual(["w pio cf9+0 1 6"]);
    expect(bus.read("pio", 0xcf8, 1)).toBe(0xff); // a byte at 0xCF8: nobody
    expect(bus.read("pio", 0xcf8, 2)).toBe(0x06ff); // a word: split, 0xCF9 answers its byte
    expect(() => bus.register(recorder("again", [{ space: "pio", base: 0xcf8, size: 4, exact: true } as IoRangeEx]).dev)).toThrow(/0xcf8 already used by cfg/);
    expect(bus.list().filter((m) => m.exact)).toEqual([{ space: "pio", base: 0xcf8, size: 4, name: "cfg", exact: true }]);
  });
});

/** A relocatable device whose ranges live in shared memory: [space, base, size] triples. */
const relocLayout = defineLayout("reloc-test", 1, { r: { type: "u32", count: 6 } });
function relocatable(name: string, arena: StateArena, value: number): RelocatableDevice & { move(i: number, base: number, size: number, mmio?: boolean): void } {
  const gen = sharedMapGeneration(arena);
  const { s, lock } = arena.alloc(relocLayout);
  return {
    name, lock, mapGeneration: gen,
    get ranges(): IoRange[] {
      const out: IoRange[] = [];
      for (let i = 0; i < 2; i++) if (s.r[3 * i + 2]) out.push({ space: s.r[3 * i] ? "mmio" : "pio", base: s.r[3 * i + 1]!, size: s.r[3 * i + 2]! });
      return out;
    },
    read: (_sp, base, off, size) => (((value << 24) | (base & 0xffff) << 8 | off) >>> 0) % 2 ** (8 * size),
    write() {},
    move(i, base, size, mmio = false) { lock.with(() => { s.r[3 * i] = mmio ? 1 : 0; s.r[3 * i + 1] = base; s.r[3 * i + 2] = size; }); gen.bump(); },
  };
}

describe("Bus: relocatable devices", () => {
  const setup = () => {
    const buf = new SharedArrayBuffer(4096);
    const arenaA = new StateArena(buf), arenaB = new StateArena(buf);
    const fixed = recorder("fixed", [{ space: "pio", base: 0x3f8, size: 8 }, { space: "mmio", base: 0xfed00000, size: 0x400 }]);
    const busA = new Bus(), busB = new Bus();
    const a1 = relocatable("r1", arenaA, 1), a2 = relocatable("r2", arenaA, 2);
    const b1 = relocatable("r1", arenaB, 1), b2 = relocatable("r2", arenaB, 2);
    for (const [bus, x, y] of [[busA, a1, a2], [busB, b1, b2]] as const) { bus.register(fixed.dev); bus.register(x); bus.register(y); }
    return { busA, busB, a1, a2, b1, b2 };
  };

  test("a move made through one thread's device is seen by the other thread's bus", () => {
    const { busA, busB, a1 } = setup();
    expect(isRelocatable(a1)).toBe(true);
    expect(busB.read("pio", 0x2000, 1)).toBe(0xff);
    a1.move(0, 0x2000, 16);
    expect(busB.read("pio", 0x2004, 4) >>> 24).toBe(1);
    a1.move(0, 0x2100, 16);
    expect(busB.read("pio", 0x2004, 1)).toBe(0xff);
    expect(busB.read("pio", 0x2100, 1)).toBe(0); // (value<<24 | base<<8 | 0) & 0xff
    a1.move(1, 0xc0000000, 0x1000, true);
    expect(busB.read("mmio", 0xc0000ffc, 4) >>> 24).toBe(1);
    expect(busB.list()).toEqual(busA.list());
  });

  test("overlaps made by the guest never throw: fixed first, then registration order; clipped pieces keep working", () => {
    const { busA, busB, a1, a2 } = setup();
    a2.move(0, 0x3f0, 32); // over the fixed UART range
    expect(busB.list().filter((m) => m.space === "pio")).toEqual([
      { space: "pio", base: 0x3f8, size: 8, name: "fixed" },
      { space: "pio", base: 0x3f0, size: 8, name: "r2" },
      { space: "pio", base: 0x400, size: 16, name: "r2" },
    ]);
    expect(busB.read("pio", 0x400, 4) >>> 24).toBe(2);
    expect(busB.read("pio", 0x404, 1)).toBe(0x14); // offset from r2's base 0x3f0 = 0x14
    a1.move(1, 0xc0000000, 0x2000, true);
    a2.move(1, 0xc0001000, 0x2000, true); // upper half of r1, plus its own tail
    expect(busA.read("mmio", 0xc0001000, 4) >>> 24).toBe(1);
    expect(busA.read("mmio", 0xc0002000, 4) >>> 24).toBe(2);
    expect(busA.read("mmio", 0xc0002000, 1)).toBe(0); // offset 0x1000 of r2 → low byte 0
    a2.move(1, 0xfed00000, 0x1000, true); // over a fixed MMIO device
    expect(busB.list().filter((m) => m.space === "mmio").map((m) => [m.name, m.base, m.size])).toEqual([
      ["r1", 0xc0000000, 0x2000], ["fixed", 0xfed00000, 0x400], ["r2", 0xfed00400, 0xc00],
    ]);
  });

  test("one MapGeneration per arena; a bus refuses relocatable devices of two arenas", () => {
    const arena = new StateArena(new SharedArrayBuffer(4096));
    expect(sharedMapGeneration(arena)).toBe(sharedMapGeneration(arena));
    const bus = new Bus();
    bus.register(relocatable("x", arena, 1));
    const other = relocatable("y", new StateArena(new SharedArrayBuffer(4096)), 2);
    expect(() => bus.register(other)).toThrow(/two state arenas/);
    expect(new MapGeneration(new Int32Array(1)).value).toBe(0);
  });

  test("fast path: an unchanged generation costs no resync", () => {
    const { busA, a1 } = setup();
    a1.move(0, 0x2000, 16);
    busA.read("pio", 0x2000, 1);
    let reads = 0;
    const orig = Object.getOwnPropertyDescriptor(a1, "ranges")!;
    Object.defineProperty(a1, "ranges", { get: () => { reads++; return orig.get!.call(a1); } });
    for (let i = 0; i < 1000; i++) busA.read("pio", 0x2000 + (i & 15), 1);
    expect(reads).toBe(0);
    a1.move(0, 0x2010, 16);
    busA.read("pio", 0x2010, 1);
    expect(reads).toBe(1);
  });
});

