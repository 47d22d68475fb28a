/** ACPI PM timer through a real Bus, with a fake clock. */
import { describe, expect, test } from "bun:test";
import { Bus } from "../../src/devices/bus.ts";
import type { DeviceContext, Platform } from "../../src/devices/device.ts";
import { createPmTimer, PM_TIMER_HZ, pmTimerTicks } from "../../src/devices/pmtimer.ts";
import { StateArena } from "../../src/devices/state.ts";
import { GuestMemory } from "../../src/mem/guest-memory.ts";

const platform: Platform = {
  irqLine() { throw new Error("the PM timer has no interrupt"); }, msi() {}, wakeIo() {}, log() {},
  requestExit(c, r) { throw new Error(`${c} ${r}`); },
};
const T0 = 777_000_000_123;

function rig(base = 0x600) {
  const buf = new SharedArrayBuffer(256);
  const clock = { t: T0 };
  const pmBase = { v: base };
  const ctx: DeviceContext = { mem: GuestMemory.fake(1 << 20), arena: new StateArena(buf), platform, role: "vcpu" };
  const dev = createPmTimer(ctx, { base: () => pmBase.v, now: () => clock.t });
  dev.powerOn!();
  const bus = new Bus();
  bus.register(dev);
  return { dev, bus, clock, pmBase, rd: (size = 4, off = 0) => bus.read("pio", pmBase.v + 8 + off, size) };
}

/** Exact reference: floor(ns * 3579545 / 1e9) mod 2^32. */
const ref = (ns: number) => Number(((BigInt(ns) * 3579545n) / 1_000_000_000n) % (1n << 32n));

describe("ACPI PM timer", () => {
  test("counts at 3.579545 MHz from 0 at power-on", () => {
    const { clock, rd } = rig();
    expect(rd()).toBe(0);
    clock.t = T0 + 1e9;
    expect(rd()).toBe(PM_TIMER_HZ);
    clock.t = T0 + 279; // 0.9987 tick
    expect(rd()).toBe(0);
    clock.t = T0 + 280; // 1.0023 ticks
    expect(rd()).toBe(1);
  });

  test("matches the exact formula over long times, and wraps at 2^32 (TMR_VAL_EXT)", () => {
    const { clock, rd } = rig();
    let seed = 99;
    for (let i = 0; i < 2000; i++) {
      seed = (seed * 1103515245 + 12345) >>> 0;
      const ns = Math.floor((seed / 2 ** 32) * 5e15) + (i % 3 === 0 ? 0 : seed % 1000); // up to ~58 days
      clock.t = T0 + ns;
      expect(rd()).toBe(ref(ns));
    }
    // the wrap: 2^32 ticks = 1199.86 s
    const wrapNs = Math.ceil((2 ** 32 * 1e9) / PM_TIMER_HZ);
    clock.t = T0 + wrapNs - 300;
    expect(rd()).toBeGreaterThan(0xffff_ff00);
    clock.t = T0 + wrapNs;
    expect(rd()).toBe(0);
    expect(pmTimerTicks(-5)).toBe(0);
  });

  test("is monotonic between wraps and byte/word reads see the same value", () => {
    const { clock, rd } = rig();
    let prev = -1;
    for (let i = 0; i < 1000; i++) {
      clock.t += 1234567;
      const v = rd();
      expect(v).toBeGreaterThan(prev);
      prev = v;
      const b = rd(1, 0) | (rd(1, 1) << 8) | (rd(2, 2) << 16);
      expect(b >>> 0).toBe(v);
    }
  });

  test("is read-only", () => {
    const { bus, clock, rd } = rig();
    clock.t += 5e8;
    const v = rd();
    bus.write("pio", 0x608, 4, 0);
    expect(rd()).toBe(v);
  });

  test("the port follows the PM base accessor when re-registered", () => {
    const { dev, bus, pmBase, clock } = rig();
    clock.t += 1e9;
    expect(dev.ranges[0]).toEqual({ space: "pio", base: 0x608, size: 4 });
    bus.unregister(dev);
    pmBase.v = 0xb000;
    bus.register(dev);
    expect(bus.read("pio", 0xb008, 4)).toBe(PM_TIMER_HZ);
    expect(bus.read("pio", 0x608, 4)).toBe(0xffffffff);
  });

  test("a disabled PM base decodes nothing; the map generation is carried for the bus", () => {
    const buf = new SharedArrayBuffer(64);
    const ctx: DeviceContext = { mem: GuestMemory.fake(1 << 20), arena: new StateArena(buf), platform, role: "vcpu" };
    const gen = { value: 0, bump() { this.value++; } };
    let b: number | undefined = undefined;
    const dev = createPmTimer(ctx, { base: () => b, mapGeneration: gen, now: () => T0 });
    expect(dev.ranges).toEqual([]);
    b = 0x1000;
    expect(dev.ranges).toEqual([{ space: "pio", base: 0x1008, size: 4 }]);
    expect((dev as unknown as { mapGeneration: unknown }).mapGeneration).toBe(gen);
    expect("mapGeneration" in createPmTimer({ ...ctx, arena: new StateArena(new SharedArrayBuffer(64)) })).toBe(false);
  });

  test("msbToggleAfter gives the host time bit 31 next changes", () => {
    const { dev, clock } = rig();
    for (const start of [0, 1e9, 600e9, 1199.9e9, 1500e9]) {
      clock.t = T0 + start;
      const at = dev.msbToggleAfter(clock.t);
      expect(at).toBeGreaterThan(clock.t);
      const before = dev.value(at - 1) >>> 31, after = dev.value(at) >>> 31;
      expect(before).not.toBe(after);
      expect(at - clock.t).toBeLessThanOrEqual(Math.ceil((2 ** 31 * 1e9) / PM_TIMER_HZ));
    }
  });

  test("fuzz: random widths, offsets, writes and clock jumps never throw", () => {
    const { bus, clock } = rig();
    let seed = 7;
    const rnd = () => { seed = (seed * 1103515245 + 12345) >>> 0; return seed; };
    for (let i = 0; i < 5000; i++) {
      clock.t += rnd() * (rnd() % 4 === 0 ? 1000 : 1);
      const port = 0x604 + (rnd() % 10), size = [1, 2, 4, 3][rnd() % 4]!;
      if (rnd() % 2) bus.write("pio", port, size, rnd());
      else expect(Number.isInteger(bus.read("pio", port, size))).toBe(true);
    }
  });
});
