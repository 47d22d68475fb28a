/**
 * HPET through a real Bus over a SharedArrayBuffer, with a fake clock and a Platform that records
 * interrupt lines. Two device instances share the state buffer: the "vCPU" one takes register accesses,
 * the "I/O" one runs deadline()/expire() — so state kept in JS fields instead of the block would show.
 */
import { describe, expect, test } from "bun:test";
import { Bus } from "../../src/devices/bus.ts";
import type { DeviceContext } from "../../src/devices/device.ts";
import {
  createHpet, GEN_CONF, HPET_BASE, HPET_CAPABILITIES, HPET_PERIOD_FS, HPET_REG, HPET_ROUTE_CAP, TN, type HpetDevice,
} from "../../src/devices/hpet.ts";
import { StateArena } from "../../src/devices/state.ts";
import { GuestMemory } from "../../src/mem/guest-memory.ts";
import { RecordingPlatform } from "./fake-platform.ts";


const T0 = 1_000_000_000_000; // an arbitrary host monotonic time
const mem = GuestMemory.fake(1 << 20);

function rig() {
  const plat = new RecordingPlatform({ throwOnExit: true });
  const buf = new SharedArrayBuffer(4096);
  const clock = { t: T0, step: 0 };
  const now = () => { const t = clock.t; clock.t += clock.step; return t; };
  const mk = (role: "vcpu" | "io"): HpetDevice => {
    const ctx: DeviceContext = { mem, arena: new StateArena(buf), platform: plat, role };
    return createHpet(ctx, { now });
  };
  const dev = mk("vcpu"), io = mk("io");
  dev.lock!.acquire(); dev.powerOn!(); dev.lock!.release();
  const bus = new Bus();
  bus.register(dev);
  const r32 = (off: number) => bus.read("mmio", HPET_BASE + off, 4);
  const w32 = (off: number, v: number) => bus.write("mmio", HPET_BASE + off, 4, v);
  const r64 = (off: number) => { const [lo, hi] = bus.readWide("mmio", HPET_BASE + off, 8); return (BigInt(hi) << 32n) | BigInt(lo); };
  const w64 = (off: number, v: bigint) => bus.writeWide("mmio", HPET_BASE + off, 8, Number(v & 0xffffffffn), Number(v >> 32n));
  /** Let the I/O Worker run every expiry up to `until` (at the deadline times), like io-loop does. */
  const runUntil = (until: number): number[] => {
    const fired: number[] = [];
    for (let i = 0; i < 100000; i++) {
      const d = io.deadline!();
      if (d > until) break;
      clock.t = Math.max(clock.t, d);
      io.expire!(clock.t);
      fired.push(clock.t);
    }
    clock.t = Math.max(clock.t, until);
    return fired;
  };
  return { plat, dev, io, bus, clock, r32, w32, r64, w64, runUntil };
}

const tconf = (n: number) => HPET_REG.TIMER + HPET_REG.TIMER_STRIDE * n + HPET_REG.T_CONF;
const tcmp = (n: number) => HPET_REG.TIMER + HPET_REG.TIMER_STRIDE * n + HPET_REG.T_CMP;
const route = (pin: number) => pin << TN.INT_ROUTE_SHIFT;
const NS = 10; // ns per tick at 100 MHz

describe("HPET registers", () => {
  test("capabilities: rev 1, 3 timers, 64-bit counter, legacy route capable, vendor 8086, 100 MHz", () => {
    const { r32, r64 } = rig();
    expect(r32(HPET_REG.GCAP_ID)).toBe(0x8086a201);
    expect(HPET_CAPABILITIES).toBe(0x8086a201);
    expect(r32(HPET_REG.GCAP_ID + 4)).toBe(HPET_PERIOD_FS);
    expect(HPET_PERIOD_FS).toBe(10_000_000);
    expect(r64(HPET_REG.GCAP_ID)).toBe((10_000_000n << 32n) | 0x8086a201n);
    for (let n = 0; n < 3; n++) {
      expect(r32(tconf(n))).toBe(TN.PER_INT_CAP | TN.SIZE_CAP);
      expect(r32(tconf(n) + 4)).toBe(HPET_ROUTE_CAP);
      expect(r64(tcmp(n))).toBe(0xffffffffffffffffn);
      expect(r64(tcmp(n) + 8)).toBe(0n); // FSB route: unsupported
    }
    expect(r32(HPET_REG.GEN_CONF)).toBe(0);
    expect(r32(HPET_REG.GINTR_STA)).toBe(0);
    expect(r32(0x3fc)).toBe(0); // reserved
  });

  test("the main counter halts while ENABLE_CNF is clear and counts at 100 MHz while set", () => {
    const { clock, r64, w32, w64 } = rig();
    expect(r64(HPET_REG.MAIN_CNT)).toBe(0n);
    clock.t += 5e6;
    expect(r64(HPET_REG.MAIN_CNT)).toBe(0n);
    w32(HPET_REG.GEN_CONF, GEN_CONF.ENABLE_CNF);
    clock.t += 1e6; // 1 ms = 100,000 ticks
    expect(r64(HPET_REG.MAIN_CNT)).toBe(100_000n);
    clock.t += 1e9;
    expect(r64(HPET_REG.MAIN_CNT)).toBe(100_100_000n);
    clock.t += 7; // less than one tick
    expect(r64(HPET_REG.MAIN_CNT)).toBe(100_100_000n);
    w32(HPET_REG.GEN_CONF, 0);
    clock.t += 1e9;
    expect(r64(HPET_REG.MAIN_CNT)).toBe(100_100_000n);
    // writable while halted, as 64 bits (low then high) and as two halves high-then-low
    w64(HPET_REG.MAIN_CNT, 0x1_2345_6789n);
    expect(r64(HPET_REG.MAIN_CNT)).toBe(0x1_2345_6789n);
    w32(HPET_REG.MAIN_CNT + 4, 0xabcd);
    w32(HPET_REG.MAIN_CNT, 0x1111);
    expect(r64(HPET_REG.MAIN_CNT)).toBe(0xabcd_0000_1111n);
    // counting resumes from the written value
    w32(HPET_REG.GEN_CONF, GEN_CONF.ENABLE_CNF);
    clock.t += 1000;
    expect(r64(HPET_REG.MAIN_CNT)).toBe(0xabcd_0000_1111n + 100n);
  });

  test("a 64-bit counter read split in two halves is consistent across the low-half carry", () => {
    const { clock, r64, w32, w64 } = rig();
    w64(HPET_REG.MAIN_CNT, 0xffff_f000n);
    w32(HPET_REG.GEN_CONF, GEN_CONF.ENABLE_CNF);
    clock.step = 330; // the clock moves between the two halves of one access
    let prev = r64(HPET_REG.MAIN_CNT);
    expect(prev).toBeGreaterThanOrEqual(0xffff_f000n);
    for (let i = 0; i < 100; i++) {
      const v = r64(HPET_REG.MAIN_CNT);
      expect(v).toBeGreaterThanOrEqual(prev);
      expect(v - prev).toBeLessThan(1000n); // a torn read would jump by 2^32
      prev = v;
    }
    expect(prev).toBeGreaterThan(0x1_0000_0000n);
  });

  test("general config keeps only ENABLE_CNF and LEG_RT_CNF; sub-dword writes merge", () => {
    const { r32, bus } = rig();
    bus.write("mmio", HPET_BASE + HPET_REG.GEN_CONF, 4, 0xffffffff);
    expect(r32(HPET_REG.GEN_CONF)).toBe(3);
    bus.write("mmio", HPET_BASE + HPET_REG.GEN_CONF + 1, 1, 0xff); // bits 15:8 only
    expect(r32(HPET_REG.GEN_CONF)).toBe(3);
    bus.write("mmio", HPET_BASE + HPET_REG.GEN_CONF, 1, 0x01);
    expect(r32(HPET_REG.GEN_CONF)).toBe(1);
  });

  test("timer configuration: writable bits, unsupported routes ignored, 32-bit mode truncates", () => {
    const { r32, w32, r64, w64 } = rig();
    w32(tconf(2), 0xffffffff);
    // route 31 is not in the cap: kept at 0; FSB and reserved bits read 0; VAL_SET is self-clearing
    expect(r32(tconf(2)) & ~TN.VAL_SET_CNF).toBe(TN.INT_TYPE_CNF | TN.INT_ENB_CNF | TN.TYPE_CNF | TN.PER_INT_CAP | TN.SIZE_CAP | TN.MODE32_CNF);
    w32(tconf(2), route(22));
    expect((r32(tconf(2)) & TN.INT_ROUTE_MASK) >>> TN.INT_ROUTE_SHIFT).toBe(22);
    w32(tconf(2), route(5));
    expect((r32(tconf(2)) & TN.INT_ROUTE_MASK) >>> TN.INT_ROUTE_SHIFT).toBe(22);
    w64(tcmp(1), 0x1234_5678_9abc_def0n);
    expect(r64(tcmp(1))).toBe(0x1234_5678_9abc_def0n);
    w32(tconf(1), TN.MODE32_CNF);
    expect(r64(tcmp(1))).toBe(0x9abc_def0n);
    w32(tcmp(1) + 4, 0x5555); // no high half in 32-bit mode
    expect(r64(tcmp(1))).toBe(0x9abc_def0n);
  });
});

describe("HPET timers", () => {
  test("one-shot edge timer on IOAPIC pin 20 fires once at the comparator", () => {
    const { plat, clock, io, w32, w64, runUntil } = rig();
    w32(tconf(2), TN.INT_ENB_CNF | route(20));
    w64(tcmp(2), 1000n); // 10 µs after start
    w32(HPET_REG.GEN_CONF, GEN_CONF.ENABLE_CNF);
    expect(io.deadline!()).toBe(T0 + 1000 * NS);
    expect(plat.wakes).toBeGreaterThan(0);
    io.expire!(T0 + 1000 * NS - 1); // early call: nothing
    expect(plat.take()).toEqual([]);
    const fired = runUntil(T0 + 1e9);
    expect(fired).toEqual([T0 + 10_000]);
    expect(plat.take()).toEqual([[20, 1], [20, 0]]);
    void clock;
  });

  test("a comparator already passed does not fire (until the counter comes round)", () => {
    const { plat, clock, w32, w64, io } = rig();
    w32(HPET_REG.GEN_CONF, GEN_CONF.ENABLE_CNF);
    clock.t += 1e6;
    w32(tconf(2), TN.INT_ENB_CNF | route(20));
    w64(tcmp(2), 50n);
    expect(io.deadline!()).toBeGreaterThan(T0 + 1e15);
    expect(plat.take()).toEqual([]);
  });

  test("a comparator equal to the counter fires at once, from the vCPU's write", () => {
    const { plat, w32, w64 } = rig();
    w32(tconf(2), TN.INT_ENB_CNF | route(21));
    w64(tcmp(2), 0n);
    w32(HPET_REG.GEN_CONF, GEN_CONF.ENABLE_CNF);
    expect(plat.take()).toEqual([[21, 1], [21, 0]]);
  });

  test("periodic timer: accumulator semantics, exact period, VAL_SET, catch-up skips missed periods", () => {
    const { plat, clock, r64, w32, w64, runUntil, io } = rig();
    w32(tconf(2), TN.INT_ENB_CNF | TN.TYPE_CNF | TN.VAL_SET_CNF | route(23));
    w64(tcmp(2), 1000n);
    expect(r64(tcmp(2))).toBe(1000n);
    w32(HPET_REG.GEN_CONF, GEN_CONF.ENABLE_CNF);
    const fired = runUntil(T0 + 5 * 1000 * NS);
    expect(fired).toEqual([1, 2, 3, 4, 5].map((k) => T0 + k * 1000 * NS));
    expect(plat.take().length).toBe(10);
    expect(r64(tcmp(2))).toBe(6000n);
    // a stall of 10.5 periods: one interrupt, then the comparator is the next match in the future
    clock.t = T0 + 15_500 * NS;
    io.expire!(clock.t);
    expect(plat.take()).toEqual([[23, 1], [23, 0]]);
    expect(r64(tcmp(2))).toBe(16_000n);
    expect(io.deadline!()).toBe(T0 + 16_000 * NS);
    // register reads see the accumulator advance even if the I/O Worker has not run
    clock.t = T0 + 17_000 * NS;
    expect(r64(tcmp(2))).toBe(18_000n);
    expect(plat.take()).toEqual([[23, 1], [23, 0]]);
    // writing the comparator without VAL_SET changes the period from the next match on
    w64(tcmp(2), 500n);
    expect(r64(tcmp(2))).toBe(18_000n);
    const f2 = runUntil(T0 + 19_000 * NS);
    expect(f2).toEqual([T0 + 18_000 * NS, T0 + 18_500 * NS, T0 + 19_000 * NS]);
  });

  test("Linux's periodic sequence: 32-bit writes, VAL_SET then cmp, then the period", () => {
    const { plat, clock, r32, w32, runUntil } = rig();
    w32(HPET_REG.GEN_CONF, GEN_CONF.ENABLE_CNF | GEN_CONF.LEG_RT_CNF);
    clock.t += 123_456;
    const now = r32(HPET_REG.MAIN_CNT);
    const delta = 100_000; // 1 ms
    w32(tconf(0), TN.INT_ENB_CNF | TN.TYPE_CNF | TN.VAL_SET_CNF | TN.MODE32_CNF);
    w32(tcmp(0), now + delta);
    w32(tcmp(0), delta);
    expect(r32(tcmp(0))).toBe(now + delta);
    const start = clock.t;
    const fired = runUntil(start + 10e6);
    expect(fired.length).toBe(10);
    for (let i = 1; i < fired.length; i++) expect(fired[i]! - fired[i - 1]!).toBe(delta * NS);
    expect(plat.take().every(([g]) => g === 0)).toBe(true); // legacy: IRQ 0
  });

  test("VAL_SET holds for both halves of a split 64-bit comparator write, in either order", () => {
    const { r64, w32, w64, clock, runUntil } = rig();
    w32(tconf(2), TN.TYPE_CNF | TN.VAL_SET_CNF);
    w64(tcmp(2), 0x1_0000_0010n); // low then high (the bus's order)
    expect(r64(tcmp(2))).toBe(0x1_0000_0010n);
    w32(tconf(2), TN.TYPE_CNF | TN.VAL_SET_CNF);
    w32(tcmp(2) + 4, 0); // high then low
    w32(tcmp(2), 0x400);
    expect(r64(tcmp(2))).toBe(0x400n);
    // and the period is the same value: matches at 0x400, 0x800, ...
    w32(tconf(2), TN.TYPE_CNF | TN.INT_ENB_CNF | route(20));
    w32(HPET_REG.GEN_CONF, GEN_CONF.ENABLE_CNF);
    expect(runUntil(clock.t + 0x1000 * NS).length).toBe(4);
    expect(r64(tcmp(2))).toBe(0x1400n);
    // without VAL_SET a full write only sets the period
    w64(tcmp(2), 0x10n);
    expect(r64(tcmp(2))).toBe(0x1400n);
  });

  test("level-triggered: status bit set, line held until W1C; status also with INT_ENB clear", () => {
    const { plat, clock, r32, w32, w64, runUntil, io } = rig();
    w32(tconf(2), TN.INT_ENB_CNF | TN.INT_TYPE_CNF | TN.TYPE_CNF | TN.VAL_SET_CNF | route(21));
    w64(tcmp(2), 100n);
    w32(HPET_REG.GEN_CONF, GEN_CONF.ENABLE_CNF);
    runUntil(T0 + 100 * NS);
    expect(plat.take()).toEqual([[21, 1]]);
    expect(r32(HPET_REG.GINTR_STA)).toBe(1 << 2);
    // while the status is set, the line stays up and no deadline is needed
    expect(io.deadline!()).toBe(Infinity);
    clock.t = T0 + 450 * NS;
    expect(r32(HPET_REG.GINTR_STA)).toBe(1 << 2);
    expect(plat.take()).toEqual([]);
    w32(HPET_REG.GINTR_STA, 0); // writing 0 does nothing
    expect(r32(HPET_REG.GINTR_STA)).toBe(1 << 2);
    w32(HPET_REG.GINTR_STA, 1 << 2);
    expect(plat.take()).toEqual([[21, 0]]);
    expect(r32(HPET_REG.GINTR_STA)).toBe(0);
    expect(io.deadline!()).toBe(T0 + 500 * NS);
    runUntil(T0 + 500 * NS);
    expect(plat.take()).toEqual([[21, 1]]);
    // clearing INT_ENB drops the line but the status still reports matches
    w32(tconf(2), TN.INT_TYPE_CNF | TN.TYPE_CNF | route(21));
    expect(plat.take()).toEqual([[21, 0]]);
    w32(HPET_REG.GINTR_STA, 1 << 2);
    clock.t = T0 + 650 * NS;
    expect(r32(HPET_REG.GINTR_STA)).toBe(1 << 2);
    expect(plat.take()).toEqual([]);
    // halting the HPET drops held lines
    w32(tconf(2), TN.INT_ENB_CNF | TN.INT_TYPE_CNF | TN.TYPE_CNF | route(21));
    expect(plat.take()).toEqual([[21, 1]]);
    w32(HPET_REG.GEN_CONF, 0);
    expect(plat.take()).toEqual([[21, 0]]);
  });

  test("edge-triggered timers pulse every time and leave the status bit clear", () => {
    const { plat, r32, w32, w64, runUntil } = rig();
    w32(tconf(1), TN.INT_ENB_CNF | TN.TYPE_CNF | TN.VAL_SET_CNF | route(22));
    w64(tcmp(1), 10n);
    w32(HPET_REG.GEN_CONF, GEN_CONF.ENABLE_CNF);
    runUntil(T0 + 30 * NS);
    expect(plat.take()).toEqual([[22, 1], [22, 0], [22, 1], [22, 0], [22, 1], [22, 0]]);
    expect(r32(HPET_REG.GINTR_STA)).toBe(0);
  });

  test("legacy replacement routes timer 0 to IRQ 0 and timer 1 to IRQ 8", () => {
    const { plat, dev, w32, w64, runUntil } = rig();
    for (const n of [0, 1, 2]) w32(tconf(n), TN.INT_ENB_CNF | route(20));
    w64(tcmp(0), 10n);
    w64(tcmp(1), 20n);
    w64(tcmp(2), 30n);
    expect(dev.legacyActive()).toBe(false);
    w32(HPET_REG.GEN_CONF, GEN_CONF.LEG_RT_CNF); // not enabled: no legacy routing yet
    expect(dev.legacyActive()).toBe(false);
    w32(HPET_REG.GEN_CONF, GEN_CONF.ENABLE_CNF | GEN_CONF.LEG_RT_CNF);
    expect(dev.legacyActive()).toBe(true);
    runUntil(T0 + 40 * NS);
    expect(plat.take()).toEqual([[0, 1], [0, 0], [8, 1], [8, 0], [20, 1], [20, 0]]);
  });

  test("level-triggered timers sharing a pin: the line drops only when both are cleared", () => {
    const { plat, w32, w64, runUntil } = rig();
    for (const n of [1, 2]) w32(tconf(n), TN.INT_ENB_CNF | TN.INT_TYPE_CNF | route(20));
    w64(tcmp(1), 10n);
    w64(tcmp(2), 20n);
    w32(HPET_REG.GEN_CONF, GEN_CONF.ENABLE_CNF);
    runUntil(T0 + 40 * NS);
    expect(plat.take()).toEqual([[20, 1]]);
    w32(HPET_REG.GINTR_STA, 1 << 1);
    expect(plat.take()).toEqual([]);
    w32(HPET_REG.GINTR_STA, 1 << 2);
    expect(plat.take()).toEqual([[20, 0]]);
  });

  test("32-bit mode: comparator and accumulator wrap at 2^32; one-shot also fires at the wrap", () => {
    const { plat, clock, r64, w32, w64, runUntil } = rig();
    w64(HPET_REG.MAIN_CNT, 0x7_ffff_ff00n);
    w32(tconf(2), TN.INT_ENB_CNF | TN.TYPE_CNF | TN.VAL_SET_CNF | TN.MODE32_CNF | route(20));
    w32(tcmp(2), 0xffff_ff80);
    w32(tcmp(2), 0x100); // period
    w32(HPET_REG.GEN_CONF, GEN_CONF.ENABLE_CNF);
    const fired = runUntil(T0 + 0x200 * NS);
    expect(fired).toEqual([T0 + 0x80 * NS, T0 + 0x180 * NS]);
    expect(r64(tcmp(2))).toBe(0x80n + 0x100n); // 0xffffff80 + 0x100 + 0x100 wrapped
    plat.take();
    // one-shot 32-bit: an event at the comparator and one when the low half wraps to 0
    w32(HPET_REG.GEN_CONF, 0);
    w64(HPET_REG.MAIN_CNT, 0x2_ffff_ff00n);
    w32(tconf(1), TN.INT_ENB_CNF | TN.MODE32_CNF | route(21));
    w32(tcmp(1), 0xffff_ffc0);
    w32(HPET_REG.GEN_CONF, GEN_CONF.ENABLE_CNF);
    w32(tconf(2), TN.MODE32_CNF | route(20)); // quiet timer 2
    const start = clock.t;
    const f = runUntil(start + 0x200 * NS);
    expect(f).toEqual([start + 0xc0 * NS, start + 0x100 * NS]);
    // the comparator is 32 bits: the counter's high half does not matter
    expect(r64(HPET_REG.MAIN_CNT)).toBe(0x3_0000_0100n);
  });

  test("a vCPU write that moves the deadline earlier wakes the I/O Worker", () => {
    const { plat, w32, w64 } = rig();
    w32(HPET_REG.GEN_CONF, GEN_CONF.ENABLE_CNF);
    w32(tconf(2), TN.INT_ENB_CNF | route(20));
    const before = plat.wakes;
    w64(tcmp(2), 1_000_000n);
    expect(plat.wakes).toBeGreaterThan(before);
    const mid = plat.wakes;
    w32(HPET_REG.GINTR_STA, 0); // no change
    expect(plat.wakes).toBe(mid);
  });

  test("powerOn restores the reset state from any state", () => {
    const { dev, r32, w32, w64, r64 } = rig();
    w32(HPET_REG.GEN_CONF, 3);
    w32(tconf(0), TN.INT_ENB_CNF | TN.TYPE_CNF);
    w64(tcmp(0), 5n);
    dev.lock!.acquire(); dev.powerOn!(); dev.lock!.release();
    expect(r32(HPET_REG.GEN_CONF)).toBe(0);
    expect(r32(tconf(0))).toBe(TN.PER_INT_CAP | TN.SIZE_CAP);
    expect(r64(tcmp(0))).toBe(0xffffffffffffffffn);
    expect(r64(HPET_REG.MAIN_CNT)).toBe(0n);
  });
});

describe("HPET fuzz", () => {
  test("random accesses at random widths and offsets never throw, and the state stays sane", () => {
    const { bus, clock, io, plat } = rig();
    let seed = 12345;
    const rnd = () => { seed = (seed * 1103515245 + 12345) >>> 0; return seed; };
    const widths = [1, 2, 4, 8];
    const hot = [0x0, 0x10, 0x20, 0xf0, 0x100, 0x108, 0x110, 0x120, 0x128, 0x140, 0x148, 0x150, 0x160];
    for (let i = 0; i < 20000; i++) {
      const size = widths[rnd() % 4]!;
      const off = rnd() % 2 ? hot[rnd() % hot.length]! + (rnd() % 8) : rnd() % 0x400;
      const addr = HPET_BASE + Math.min(off, 0x400 - size);
      clock.t += rnd() % 5000;
      if (rnd() % 2) {
        const lo = rnd() % 3 === 0 ? 0xffffffff : rnd();
        if (size === 8) bus.writeWide("mmio", addr, 8, lo, rnd());
        else bus.write("mmio", addr, size, lo);
      } else if (size === 8) bus.readWide("mmio", addr, 8);
      else bus.read("mmio", addr, size);
      if (rnd() % 7 === 0 && io.deadline!() <= clock.t) io.expire!(clock.t);
      const d = io.deadline!();
      expect(Number.isNaN(d)).toBe(false);
      // after expire, the deadline must be in the future (no busy loop in the I/O Worker)
      if (d <= clock.t) { io.expire!(clock.t); expect(io.deadline!()).toBeGreaterThan(clock.t); }
    }
    // every line the device raised through level mode is a legal pin
    for (const [g] of plat.irqs) expect([0, 8, 20, 21, 22, 23]).toContain(g);
  });
});
