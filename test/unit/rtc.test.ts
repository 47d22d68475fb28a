/**
 * RTC/CMOS through a real Bus over a SharedArrayBuffer with a fake monotonic clock, a fake wall clock and
 * a Platform that records IRQ 8. The "vCPU" instance takes port accesses, the "I/O" instance runs
 * deadline()/expire().
 */
import { afterAll, describe, expect, test } from "bun:test";
import { Bus } from "../../src/devices/bus.ts";
import type { DeviceContext } from "../../src/devices/device.ts";
import {
  CMOS, cmosConfigBytes, createRtc, REG_A, REG_B, REG_C, RTC_CENTURY_INDEX, RTC_REG, rtcPeriodNs, type RtcDevice,
} from "../../src/devices/rtc.ts";
import { StateArena } from "../../src/devices/state.ts";
import { GuestMemory } from "../../src/mem/guest-memory.ts";
import { RecordingPlatform } from "./fake-platform.ts";


const T0 = 5_000_000_000_000;
/** 2024-02-29 23:59:58.500 UTC, a Thursday */
const WALL = Date.UTC(2024, 1, 29, 23, 59, 58, 500);
/** 11:59:58.500 the same day: no midnight (the power-on alarm bytes 00:00:00) in the next minute */
const NOON = Date.UTC(2024, 1, 29, 11, 59, 58, 500);
const GiB = 2 ** 30, MiB = 2 ** 20;
const mem = GuestMemory.fake(1 << 20);

function rig(o: { localtime?: boolean; ramSize?: number; cpus?: number; wall?: number } = {}) {
  const plat = new RecordingPlatform({ throwOnExit: true });
  const buf = new SharedArrayBuffer(4096);
  const clock = { t: T0 };
  const taken = { v: false };
  const mk = (role: "vcpu" | "io"): RtcDevice => {
    const ctx: DeviceContext = { mem, arena: new StateArena(buf), platform: plat, role };
    return createRtc(ctx, {
      localtime: o.localtime ?? false, ramSize: o.ramSize ?? 256 * MiB, cpus: o.cpus ?? 2,
      now: () => clock.t, wallNow: () => o.wall ?? WALL, irq8Taken: () => taken.v,
    });
  };
  const dev = mk("vcpu"), io = mk("io");
  dev.lock!.acquire(); dev.powerOn!(); dev.lock!.release();
  const bus = new Bus();
  bus.register(dev);
  const rd = (i: number) => { bus.write("pio", 0x70, 1, i); return bus.read("pio", 0x71, 1); };
  const wr = (i: number, v: number) => { bus.write("pio", 0x70, 1, i); bus.write("pio", 0x71, 1, v); };
  const time = () => [RTC_REG.HOUR, RTC_REG.MIN, RTC_REG.SEC].map(rd);
  const date = () => [RTC_CENTURY_INDEX, RTC_REG.YEAR, RTC_REG.MONTH, RTC_REG.DOM, RTC_REG.DOW].map(rd);
  /** Run the I/O Worker's expiries up to `until`; returns the times it ran. */
  const runUntil = (until: number, onFire?: () => void): number[] => {
    const at: number[] = [];
    for (let i = 0; i < 100000; i++) {
      const d = io.deadline!();
      if (d > until) break;
      clock.t = Math.max(clock.t, d);
      io.expire!(clock.t);
      at.push(clock.t);
      onFire?.();
    }
    clock.t = Math.max(clock.t, until);
    return at;
  };
  return { plat, dev, io, bus, clock, taken, rd, wr, time, date, runUntil };
}

const savedTz = process.env.TZ;
afterAll(() => { if (savedTz === undefined) delete process.env.TZ; else process.env.TZ = savedTz; });

describe("RTC time and date", () => {
  test("power-on time is the host's UTC time, BCD, 24-hour; D says the battery is good", () => {
    const { rd, time, date } = rig();
    expect(time()).toEqual([0x23, 0x59, 0x58]);
    expect(date()).toEqual([0x20, 0x24, 0x02, 0x29, 5]); // Thursday = 5 (Sunday = 1)
    expect(rd(RTC_REG.A)).toBe(0x26);
    expect(rd(RTC_REG.B)).toBe(REG_B.H24);
    expect(rd(RTC_REG.C)).toBe(0);
    expect(rd(RTC_REG.D)).toBe(0x80);
  });

  test("the clock advances with the monotonic clock, on the host's second boundaries", () => {
    const { clock, time, date } = rig();
    clock.t = T0 + 499_999_999; // wall 23:59:58.999999999
    expect(time()).toEqual([0x23, 0x59, 0x58]);
    clock.t = T0 + 500_000_000;
    expect(time()).toEqual([0x23, 0x59, 0x59]);
    clock.t = T0 + 1_500_000_000; // leap day → March 1st, Friday
    expect(time()).toEqual([0x00, 0x00, 0x00]);
    expect(date()).toEqual([0x20, 0x24, 0x03, 0x01, 6]);
  });

  test("binary mode (DM) and 12-hour mode", () => {
    const { wr, rd, time, clock } = rig();
    wr(RTC_REG.B, REG_B.H24 | REG_B.DM);
    expect(time()).toEqual([23, 59, 58]);
    expect(rd(RTC_REG.YEAR)).toBe(24);
    expect(rd(RTC_CENTURY_INDEX)).toBe(20);
    wr(RTC_REG.B, REG_B.DM); // 12-hour binary: 11 PM
    expect(rd(RTC_REG.HOUR)).toBe(0x80 | 11);
    wr(RTC_REG.B, 0); // 12-hour BCD
    expect(rd(RTC_REG.HOUR)).toBe(0x80 | 0x11);
    clock.t = T0 + 1_500_000_000; // midnight = 12 AM
    expect(rd(RTC_REG.HOUR)).toBe(0x12);
  });

  test("setting the time with SET: the written time is kept, then advances; century rolls over", () => {
    const { wr, rd, time, date, clock, dev } = rig();
    wr(RTC_REG.B, REG_B.SET | REG_B.H24);
    expect(rd(RTC_REG.B) & REG_B.SET).toBe(REG_B.SET);
    // while SET: the clock is stopped and the bytes read back as written
    wr(RTC_REG.SEC, 0x59); wr(RTC_REG.MIN, 0x59); wr(RTC_REG.HOUR, 0x23);
    wr(RTC_REG.DOM, 0x31); wr(RTC_REG.MONTH, 0x12); wr(RTC_REG.YEAR, 0x99); wr(RTC_CENTURY_INDEX, 0x20);
    wr(RTC_REG.DOW, 5);
    clock.t += 3e9;
    expect(time()).toEqual([0x23, 0x59, 0x59]);
    wr(RTC_REG.B, REG_B.H24);
    expect(time()).toEqual([0x23, 0x59, 0x59]);
    expect(dev.seconds()).toBe(Date.UTC(2099, 11, 31, 23, 59, 59) / 1000);
    clock.t += 1e9;
    expect(time()).toEqual([0x00, 0x00, 0x00]);
    expect(date()).toEqual([0x21, 0x00, 0x01, 0x01, 6]); // day of week counts on from what was written
    // and it keeps the offset: an hour later it reads an hour later
    clock.t += 3600e9;
    expect(time()).toEqual([0x01, 0x00, 0x00]);
  });

  test("setting the time in 12-hour binary format", () => {
    const { wr, time, dev } = rig();
    wr(RTC_REG.B, REG_B.SET | REG_B.DM);
    wr(RTC_REG.HOUR, 0x80 | 12); // 12 PM = noon
    wr(RTC_REG.MIN, 30); wr(RTC_REG.SEC, 0);
    wr(RTC_REG.B, REG_B.DM);
    expect(time()).toEqual([0x80 | 12, 30, 0]);
    expect(dev.seconds() % 86400).toBe(12 * 3600 + 30 * 60);
  });

  test("writing a time byte while running sets the time too", () => {
    const { wr, time } = rig();
    wr(RTC_REG.MIN, 0x10);
    expect(time()).toEqual([0x23, 0x10, 0x58]);
  });

  test("localtime: the RTC shows the host's local time", () => {
    process.env.TZ = "Asia/Kolkata"; // UTC+5:30, no DST
    const { time, date } = rig({ localtime: true });
    expect(time()).toEqual([0x05, 0x29, 0x58]);
    expect(date()).toEqual([0x20, 0x24, 0x03, 0x01, 6]);
    const u = rig({ localtime: false });
    expect(u.time()).toEqual([0x23, 0x59, 0x58]);
  });

  test("UIP is set during the 244 µs before each update and clear otherwise", () => {
    const { rd, clock, wr } = rig();
    const boundary = T0 + 500_000_000;
    for (const [dt, uip] of [[-300_000, 0], [-244_001, 0], [-244_000, REG_A.UIP], [-1, REG_A.UIP], [0, 0], [1000, 0]] as const) {
      clock.t = boundary + dt;
      expect(rd(RTC_REG.A) & REG_A.UIP).toBe(uip);
    }
    // Linux's read loop: wait for UIP clear, read, check seconds did not change
    clock.t = boundary + 1e9 - 100_000;
    expect(rd(RTC_REG.A) & REG_A.UIP).toBe(REG_A.UIP);
    // no UIP while SET or with the divider stopped
    wr(RTC_REG.B, REG_B.SET | REG_B.H24);
    expect(rd(RTC_REG.A) & REG_A.UIP).toBe(0);
    wr(RTC_REG.B, REG_B.H24);
    wr(RTC_REG.A, 0x66);
    expect(rd(RTC_REG.A)).toBe(0x66);
  });

  test("divider reset stops the clock; leaving it, the first update comes 500 ms later", () => {
    const { wr, time, clock } = rig();
    wr(RTC_REG.A, 0x76); // DV = 111: reset
    clock.t += 10e9;
    expect(time()).toEqual([0x23, 0x59, 0x58]);
    wr(RTC_REG.A, 0x26);
    const start = clock.t;
    clock.t = start + 499_999_999;
    expect(time()).toEqual([0x23, 0x59, 0x58]);
    clock.t = start + 500_000_000;
    expect(time()).toEqual([0x23, 0x59, 0x59]);
  });

  test("invalid time bytes do not break the clock", () => {
    const { wr, rd, dev } = rig();
    wr(RTC_REG.B, REG_B.SET | REG_B.H24);
    for (const i of [0, 2, 4, 6, 7, 8, 9, 0x32]) wr(i, 0xff);
    wr(RTC_REG.B, REG_B.H24);
    expect(Number.isFinite(dev.seconds())).toBe(true);
    for (const i of [0, 2, 4, 6, 7, 8, 9, 0x32]) expect(rd(i)).toBeLessThan(256);
  });
});

describe("RTC interrupts", () => {
  test("update-ended interrupt once a second; IRQ 8 held until C is read, C read clears", () => {
    const { wr, rd, plat, io, runUntil, clock } = rig({ wall: NOON });
    wr(RTC_REG.B, REG_B.H24 | REG_B.UIE);
    expect(plat.wakes).toBeGreaterThan(0);
    expect(io.deadline!()).toBe(T0 + 500_000_000);
    runUntil(T0 + 500_000_000);
    expect(plat.take()).toEqual([[8, 1]]);
    expect(io.deadline!()).toBe(Infinity); // nothing more until C is read
    clock.t += 3e9;
    expect(plat.take()).toEqual([]);
    expect(rd(RTC_REG.C)).toBe(REG_C.IRQF | REG_C.PF | REG_C.UF); // PF runs without PIE (1024 Hz)
    expect(plat.take()).toEqual([[8, 0]]);
    expect(rd(RTC_REG.C)).toBe(0);
    // then once per second, at the boundaries
    const at = runUntil(clock.t + 3e9, () => rd(RTC_REG.C));
    expect(at.map((t) => (t - T0 - 500_000_000) % 1e9)).toEqual([0, 0, 0]);
    expect(plat.take()).toEqual([[8, 1], [8, 0], [8, 1], [8, 0], [8, 1], [8, 0]]);
  });

  test("flags are set without the enables, and enabling with a pending flag raises IRQ 8", () => {
    const { wr, rd, plat, clock, io } = rig({ wall: NOON });
    clock.t += 2e9;
    expect(io.deadline!()).toBe(Infinity);
    wr(RTC_REG.B, REG_B.H24 | REG_B.PIE);
    expect(plat.take()).toEqual([[8, 1]]);
    expect(rd(RTC_REG.C)).toBe(REG_C.IRQF | REG_C.PF | REG_C.UF);
    expect(plat.take()).toEqual([[8, 0]]);
    // disabling the source clears IRQF and the line
    clock.t += 5e6;
    runUntil(io, clock);
    wr(RTC_REG.B, REG_B.H24);
    expect(rd(RTC_REG.C) & REG_C.IRQF).toBe(0);
  });

  test("periodic interrupt rates follow register A (32.768 kHz table)", () => {
    expect(rtcPeriodNs(0)).toBe(0);
    expect(rtcPeriodNs(1)).toBe(3_906_250);
    expect(rtcPeriodNs(2)).toBe(7_812_500);
    expect(rtcPeriodNs(3)).toBeCloseTo(122_070.3125, 6);
    expect(rtcPeriodNs(6)).toBeCloseTo(976_562.5, 6);
    expect(rtcPeriodNs(15)).toBe(500_000_000);
    for (const rs of [1, 2, 3, 6, 10, 15]) {
      const { wr, rd, runUntil, clock } = rig();
      wr(RTC_REG.A, 0x20 | rs);
      wr(RTC_REG.B, REG_B.H24 | REG_B.PIE);
      rd(RTC_REG.C);
      const start = clock.t;
      let n = 0;
      runUntil(start + 1e9, () => { if (rd(RTC_REG.C) & REG_C.PF) n++; });
      const hz = 1e9 / rtcPeriodNs(rs);
      expect(Math.abs(n - hz)).toBeLessThanOrEqual(1);
    }
  });

  test("periodic ticks are aligned to the divider, and a stall coalesces into one interrupt", () => {
    const { wr, rd, plat, io, clock } = rig({ wall: NOON });
    wr(RTC_REG.A, 0x2f); // 2 Hz
    wr(RTC_REG.B, REG_B.H24 | REG_B.PIE);
    expect(io.deadline!()).toBe(T0 + 500_000_000);
    clock.t = T0 + 10e9;
    io.expire!(clock.t);
    expect(plat.take()).toEqual([[8, 1]]);
    expect(rd(RTC_REG.C)).toBe(REG_C.IRQF | REG_C.PF | REG_C.UF);
    expect(io.deadline!()).toBe(T0 + 10.5e9);
  });

  test("alarm with don't-care bytes fires every minute at :30", () => {
    const { wr, rd, runUntil, clock, time } = rig();
    wr(RTC_REG.SEC_ALARM, 0x30);
    wr(RTC_REG.MIN_ALARM, 0xc0);
    wr(RTC_REG.HOUR_ALARM, 0xff);
    wr(RTC_REG.B, REG_B.H24 | REG_B.AIE);
    rd(RTC_REG.C);
    const hits: number[][] = [];
    runUntil(clock.t + 150e9, () => { if (rd(RTC_REG.C) & REG_C.AF) hits.push(time()); });
    expect(hits).toEqual([[0x00, 0x00, 0x30], [0x00, 0x01, 0x30]]);
  });

  test("exact alarm (hh:mm:ss), in 12-hour format; a missed alarm is still reported after a stall", () => {
    const { wr, rd, plat, io, clock } = rig();
    wr(RTC_REG.B, REG_B.DM); // 12-hour binary
    wr(RTC_REG.HOUR_ALARM, 12); // 12 AM
    wr(RTC_REG.MIN_ALARM, 0);
    wr(RTC_REG.SEC_ALARM, 5);
    wr(RTC_REG.B, REG_B.DM | REG_B.AIE);
    rd(RTC_REG.C);
    plat.take();
    clock.t = T0 + 60e9; // 00:00:58: 00:00:05 went by without the I/O Worker
    io.expire!(clock.t);
    expect(plat.take()).toEqual([[8, 1]]);
    expect(rd(RTC_REG.C) & REG_C.AF).toBe(REG_C.AF);
  });

  test("no IRQ 8 while HPET legacy replacement owns it", () => {
    const { wr, rd, plat, taken, runUntil, clock } = rig();
    taken.v = true;
    wr(RTC_REG.B, REG_B.H24 | REG_B.UIE);
    runUntil(clock.t + 2e9, () => rd(RTC_REG.C));
    expect(plat.take()).toEqual([]);
  });

  test("SET clears UIE and stops update interrupts", () => {
    const { wr, rd, io } = rig();
    wr(RTC_REG.B, REG_B.H24 | REG_B.UIE);
    wr(RTC_REG.B, REG_B.H24 | REG_B.UIE | REG_B.SET);
    expect(rd(RTC_REG.B)).toBe(REG_B.H24 | REG_B.SET);
    expect(io.deadline!()).toBe(Infinity);
  });
});

function runUntil(io: RtcDevice, clock: { t: number }): void {
  while (io.deadline!() <= clock.t) io.expire!(clock.t);
}

describe("CMOS NVRAM", () => {
  const word = (m: Map<number, number>, lo: number) => (m.get(lo) ?? 0) | ((m.get(lo + 1) ?? 0) << 8);
  const high = (m: Map<number, number>) => (m.get(CMOS.HIGHMEM_0) ?? 0) | ((m.get(CMOS.HIGHMEM_1) ?? 0) << 8) | ((m.get(CMOS.HIGHMEM_2) ?? 0) << 16);
  const checksumOk = (rd: (i: number) => number) => {
    let sum = 0;
    for (let i = 0x10; i <= 0x2d; i++) sum += rd(i);
    return ((rd(CMOS.CHECKSUM_HI) << 8) | rd(CMOS.CHECKSUM_LO)) === sum;
  };

  test("memory-size bytes for 256 MiB, 3 GiB and 8 GiB guests, CPUs − 1, checksum", () => {
    const m256 = cmosConfigBytes(256 * MiB, 1);
    expect(word(m256, CMOS.BASEMEM_LO)).toBe(640);
    expect(word(m256, CMOS.EXTMEM_LO)).toBe(0xffff);
    expect(word(m256, CMOS.EXTMEM2_LO)).toBe(0xffff);
    expect(word(m256, CMOS.MEM16M_LO)).toBe((256 - 16) * 16);
    expect(high(m256)).toBe(0);
    expect(m256.get(CMOS.NCPUS_M1)).toBe(0);

    const m3g = cmosConfigBytes(3 * GiB, 4);
    expect(word(m3g, CMOS.MEM16M_LO)).toBe((3072 - 16) * 16);
    expect(high(m3g)).toBe(0);
    expect(m3g.get(CMOS.NCPUS_M1)).toBe(3);

    const m8g = cmosConfigBytes(8 * GiB, 16);
    expect(word(m8g, CMOS.MEM16M_LO)).toBe((3072 - 16) * 16); // below 4 GiB: 3 GiB
    expect(high(m8g)).toBe(5 * 16384); // 5 GiB above 4 GiB in 64 KiB units
    expect([m8g.get(0x5b), m8g.get(0x5c), m8g.get(0x5d)]).toEqual([0x00, 0x40, 0x01]);
    expect(m8g.get(CMOS.NCPUS_M1)).toBe(15);

    const small = cmosConfigBytes(8 * MiB, 1);
    expect(word(small, CMOS.EXTMEM_LO)).toBe(7 * 1024);
    expect(word(small, CMOS.MEM16M_LO)).toBe(0);
  });

  test("the guest reads them through the ports, with a valid checksum", () => {
    for (const [ramSize, cpus] of [[256 * MiB, 1], [3 * GiB, 4], [8 * GiB, 8]] as const) {
      const { rd } = rig({ ramSize, cpus });
      const want = cmosConfigBytes(ramSize, cpus);
      for (const [k, v] of want) expect(rd(k)).toBe(v);
      expect(rd(CMOS.EQUIPMENT)).toBe(0x02);
      expect(checksumOk(rd)).toBe(true);
    }
  });

  test("plain RAM, the upper bank at 0x72/0x73, NMI bit, wide port accesses", () => {
    const { bus, rd, wr, dev } = rig();
    wr(0x40, 0xab);
    expect(rd(0x40)).toBe(0xab);
    bus.write("pio", 0x70, 1, 0x80 | 0x40); // NMI disable + index
    expect(dev.nmiDisabled()).toBe(true);
    expect(bus.read("pio", 0x71, 1)).toBe(0xab);
    expect(bus.read("pio", 0x70, 1)).toBe(0xc0);
    bus.write("pio", 0x72, 1, 0x40);
    bus.write("pio", 0x73, 1, 0x5a);
    expect(bus.read("pio", 0x73, 1)).toBe(0x5a);
    expect(rd(0x40)).toBe(0xab); // different bank
    bus.write("pio", 0x70, 2, 0x4141); // index 0x41, data 0x41
    expect(rd(0x41)).toBe(0x41);
    bus.write("pio", 0x70, 1, 0x41);
    expect(bus.read("pio", 0x70, 2)).toBe(0x4141);
    // C and D are read-only
    wr(RTC_REG.D, 0);
    expect(rd(RTC_REG.D)).toBe(0x80);
  });
});

describe("RTC fuzz", () => {
  test("random port accesses, widths and clock jumps never throw; deadlines always make progress", () => {
    const { bus, clock, io } = rig({ ramSize: 8 * GiB, cpus: 4 });
    let seed = 4242;
    const rnd = () => { seed = (seed * 1103515245 + 12345) >>> 0; return seed; };
    for (let i = 0; i < 30000; i++) {
      const port = 0x70 + (rnd() % 4), size = [1, 2, 4, 1][rnd() % 4]!;
      const base = Math.min(port, 0x74 - size);
      clock.t += rnd() % 3 === 0 ? rnd() * 10 : rnd() % 100000;
      if (rnd() % 2) {
        const v = rnd() % 3 === 0 ? (rnd() % 0x0e) : rnd();
        bus.write("pio", base, size, v);
      } else bus.read("pio", base, size);
      const d = io.deadline!();
      expect(Number.isNaN(d)).toBe(false);
      if (d <= clock.t) { io.expire!(clock.t); expect(io.deadline!()).toBeGreaterThan(clock.t); }
    }
  });
});
