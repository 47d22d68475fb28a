/**
 * HPET: the IA-PC High Precision Event Timer (IA-PC HPET Specification 1.0a), one block of 3 timers at
 * 0xFED00000 (1 KiB of MMIO).
 *
 * Choices (and why):
 * - Counter clock 100 MHz, COUNTER_CLK_PERIOD = 10,000,000 fs. The period is an integer number of
 *   femtoseconds, so the rate the guest reads from GCAP_ID is exactly the rate we count at (14.31818 MHz
 *   would advertise 69,841,279 fs, 0.3 ppm off), and one tick is exactly 10 ns of host.monotonicNs(), so
 *   "when does the counter reach X" is an exact integer computation with no drift or rounding. It is
 *   within the spec's bounds (≥ 10 MHz, period ≤ 100 ns). In 32-bit mode the counter wraps every 42.9 s.
 * - 3 timers (the spec's recommended minimum, what Intel ICH parts and QEMU have): timer 0 for the legacy
 *   PIT replacement, timer 1 for the RTC replacement, timer 2 free. All three are 64-bit and periodic
 *   capable (the spec requires at least one).
 * - Tn_INT_ROUTE_CAP = IOAPIC pins 20-23 (as bhyve). ISA pins are taken by ISA devices, and pins 16-19
 *   are the first PCI INTx pins most devices use. Pins 20-23 can still be shared with PCI INTx (PIRQ E-H):
 *   see the note on shared lines in the report/ARCHITECTURE.
 * - No FSB (MSI) delivery: Tn_FSB_INT_DEL_CAP is 0 and the FSB route registers read 0.
 * - Legacy replacement (ENABLE_CNF and LEG_RT_CNF): timer 0 drives ISA IRQ 0 — `Platform.irqLine(0)`,
 *   which the shim's routing table sends to PIC pin 0 and IOAPIC pin 2 (the spec's "IRQ2 in the I/O
 *   APIC") — and timer 1 drives IRQ 8 (PIC pin 8 / IOAPIC pin 8). While it is on, the RTC must not drive
 *   IRQ 8 itself: `legacyActive()` is what the RTC checks.
 *
 * Counting: the main counter is never ticked in software. The state block holds the counter's value at
 * a host time (`cntLo/cntHi` at `cntBase`, host.monotonicNs()); while ENABLE_CNF is set the guest reads
 * value + (now − cntBase) / 10 ns. Halting stores the current value.
 *
 * Timers: each timer keeps the host time of its next match (`due`). Whoever touches the device next —
 * a vCPU reading or writing a register, or the I/O Worker at `deadline()` — processes every timer whose
 * `due` has passed (status bits, comparator accumulation, interrupt), so register reads always show what
 * the hardware would show no matter how late the I/O Worker runs.
 * - One-shot: an event when the counter equals the comparator (the comparator is not changed; the match
 *   recurs when the counter comes round again, every 2^32 ticks in 32-bit mode); in 32-bit mode also when
 *   the counter's low 32 bits wrap to 0 (spec 2.3.9.2.1).
 * - Periodic: at a match the comparator is increased by the last value written to it (the accumulator
 *   of spec 2.3.9.2.2), so the period is exact and does not drift with the I/O Worker's latency. After
 *   a stall longer than a period (host busy, VM paused) the timer fires once and the comparator skips
 *   the missed periods to the first match still in the future: no burst of catch-up interrupts (guests
 *   count elapsed time from the main counter, not from the interrupt count).
 * - Writing the comparator in periodic mode sets the period; with Tn_VAL_SET_CNF it also sets the
 *   accumulator (as most hardware and guests expect; Linux writes twice, first with VAL_SET). VAL_SET
 *   clears itself after the write — for a 64-bit value written as two 32-bit halves (which is what the
 *   bus does with an 8-byte access) it stays in force for the other half, in either order.
 * - Edge-triggered timers pulse their line (1 then 0) and do not set the status bit; level-triggered
 *   ones set the status bit (also with Tn_INT_ENB_CNF clear) and hold the line while it is set; writing
 *   1 to it clears it and drops the line. ENABLE_CNF = 0 stops every interrupt (and drops held lines).
 *
 * 64-bit main counter read in two halves: a read of the low half latches the high half for this thread
 * (one thread = one vCPU); a read of the high half within 100 µs after it returns the latched value, so
 * an 8-byte read, or a 32-bit "low then high" pair, is consistent across a carry. The latch is a
 * per-accessor transient (like a CPU's load buffer), not device state: it is deliberately not in the
 * state block.
 */
import { MEMMAP } from "../platform/map.ts";
import { host } from "../vmm/index.ts";
import type { AccessSize, Device, DeviceContext, Space } from "./device.ts";
import { defineLayout } from "./state.ts";

export const HPET_BASE = MEMMAP.hpet;
export const HPET_SIZE = 0x400;
export const HPET_TIMERS = 3;
/** Main counter tick period in femtoseconds (COUNTER_CLK_PERIOD) = 100 MHz. */
export const HPET_PERIOD_FS = 10_000_000;
export const HPET_FREQ_HZ = 1e15 / HPET_PERIOD_FS;
const NS_PER_TICK = HPET_PERIOD_FS / 1e6;
export const HPET_VENDOR_ID = 0x8086;
/** IOAPIC pins a timer may be routed to outside legacy replacement mode: 20, 21, 22, 23. */
export const HPET_ROUTE_CAP = 0x00f0_0000;
/** Lines (Platform.irqLine numbers) of timers 0 and 1 in legacy replacement mode. */
export const HPET_LEGACY_GSI = [0, 8] as const;

export const HPET_REG = {
  GCAP_ID: 0x000,
  GEN_CONF: 0x010,
  GINTR_STA: 0x020,
  MAIN_CNT: 0x0f0,
  /** timer n registers: 0x100 + 0x20 * n + (CONF 0x0, COMPARATOR 0x8, FSB_ROUTE 0x10) */
  TIMER: 0x100,
  TIMER_STRIDE: 0x20,
  T_CONF: 0x0,
  T_CMP: 0x8,
  T_FSB: 0x10,
} as const;

export const GCAP = {
  REV_ID: 0x01,
  NUM_TIM_SHIFT: 8,
  COUNT_SIZE_CAP: 1 << 13,
  LEG_RT_CAP: 1 << 15,
  VENDOR_SHIFT: 16,
} as const;

/**
 * GCAP_ID bits 31:0 (REV_ID 1, NUM_TIM_CAP 2, COUNT_SIZE_CAP, LEG_RT_CAP, vendor 0x8086) = 0x8086A201:
 * the ACPI HPET table's "Event Timer Block ID". Bits 63:32 are HPET_PERIOD_FS.
 */
export const HPET_CAPABILITIES = ((HPET_VENDOR_ID << GCAP.VENDOR_SHIFT) | GCAP.LEG_RT_CAP | GCAP.COUNT_SIZE_CAP
  | ((HPET_TIMERS - 1) << GCAP.NUM_TIM_SHIFT) | GCAP.REV_ID) >>> 0;

/**
 * The ACPI HPET table's "main counter minimum clock tick in periodic mode": 10,000 ticks = 100 µs. Shorter
 * periods work but coalesce whenever the I/O Worker wakes later than one period (tens of µs on a busy host).
 */
export const HPET_MIN_TICK = 10_000;

export const GEN_CONF = { ENABLE_CNF: 1 << 0, LEG_RT_CNF: 1 << 1 } as const;

/** Timer n configuration and capability register, low 32 bits (bits 63:32 are Tn_INT_ROUTE_CAP). */
export const TN = {
  INT_TYPE_CNF: 1 << 1,   // 1 = level
  INT_ENB_CNF: 1 << 2,
  TYPE_CNF: 1 << 3,       // 1 = periodic
  PER_INT_CAP: 1 << 4,    // RO
  SIZE_CAP: 1 << 5,       // RO, 64-bit
  VAL_SET_CNF: 1 << 6,
  MODE32_CNF: 1 << 8,
  INT_ROUTE_SHIFT: 9,
  INT_ROUTE_MASK: 0x1f << 9,
  FSB_EN_CNF: 1 << 14,
  FSB_INT_DEL_CAP: 1 << 15,
} as const;
const TN_RO = TN.PER_INT_CAP | TN.SIZE_CAP;
/** Bits of the stored configuration (VAL_SET is kept apart, FSB_EN is not supported). */
const TN_STORED = TN.INT_TYPE_CNF | TN.INT_ENB_CNF | TN.TYPE_CNF | TN.MODE32_CNF | TN.INT_ROUTE_MASK;

/** VAL_SET state: none, armed by a config write, or in force for the other half of a split write. */
const VS_NONE = 0, VS_ARMED = 1, VS_HI_PENDING = 2, VS_LO_PENDING = 3;

const N = HPET_TIMERS;
export const hpetLayout = defineLayout("hpet", 1, {
  conf: "u32",
  isr: "u32",
  /** main counter value at cntBase (running) or now (halted) */
  cntLo: "u32",
  cntHi: "u32",
  /** host.monotonicNs() at which the counter had the value cntHi:cntLo (integer ns) */
  cntBase: "f64",
  /** bumped whenever the counter is written or started/stopped (invalidates per-thread latches) */
  cntGen: "u32",
  /** bit g set = we drive line g high (level-triggered timers) */
  lines: "u32",
  /** earliest due of a timer that can interrupt (what deadline() returns) */
  dl: "f64",
  tcfg: { type: "u32", count: N },
  cmpLo: { type: "u32", count: N },
  cmpHi: { type: "u32", count: N },
  perLo: { type: "u32", count: N },
  perHi: { type: "u32", count: N },
  /** host time of the timer's next event (Infinity when the counter is halted) */
  due: { type: "f64", count: N },
  valset: { type: "u8", count: N },
});

export interface HpetOptions {
  /** MMIO base (default 0xFED00000) */
  base?: number;
  /** clock in ns (default host.monotonicNs; tests inject a fake) */
  now?: () => number;
}

export interface HpetDevice extends Device {
  /** ENABLE_CNF and LEG_RT_CNF both set: timer 1 owns IRQ 8 (the RTC must not drive it). Lock-free read. */
  legacyActive(): boolean;
}

const TWO32 = 2 ** 32;
const M32 = (1n << 32n) - 1n;
const M64 = (1n << 64n) - 1n;
const SIZE_MASK = [0, 0xff, 0xffff, 0, 0xffffffff] as const;
const LATCH_NS = 100_000;

export function createHpet(ctx: DeviceContext, opts: HpetOptions = {}): HpetDevice {
  const mmioBase = opts.base ?? HPET_BASE;
  const clock = opts.now ?? (() => host.monotonicNs());
  const now = (): number => Math.floor(clock());
  const { s, lock } = ctx.arena.alloc(hpetLayout);
  const { platform } = ctx;
  /** per-thread latch of the counter's high half (see the header) */
  let latchHi = 0, latchNs = -Infinity, latchGen = -1, latchValid = false;

  const enabled = (): boolean => (s.conf & GEN_CONF.ENABLE_CNF) !== 0;
  const legacy = (): boolean => (s.conf & (GEN_CONF.ENABLE_CNF | GEN_CONF.LEG_RT_CNF)) === (GEN_CONF.ENABLE_CNF | GEN_CONF.LEG_RT_CNF);

  // ---- main counter ----
  /** Ticks elapsed since cntBase (running) — exact for integer ns. */
  const elapsed = (t: number): number => Math.floor((t - s.cntBase) / NS_PER_TICK);
  const counterParts = (t: number): [number, number] => {
    if (!enabled()) return [s.cntLo, s.cntHi];
    const e = elapsed(t);
    const sum = s.cntLo + (e % TWO32);
    return [sum % TWO32, (s.cntHi + Math.floor(e / TWO32) + Math.floor(sum / TWO32)) % TWO32];
  };
  const counter = (t: number): bigint => {
    const [lo, hi] = counterParts(t);
    return (BigInt(hi) << 32n) | BigInt(lo);
  };
  /** Host time at which the current counter tick began. */
  const tickStart = (t: number): number => (enabled() ? s.cntBase + elapsed(t) * NS_PER_TICK : t);
  const setCounter = (v: bigint, t: number): void => {
    s.cntLo = Number(v & M32);
    s.cntHi = Number((v >> 32n) & M32);
    s.cntBase = t;
    s.cntGen = s.cntGen + 1;
  };

  // ---- timers ----
  const cmp = (n: number): bigint => (BigInt(s.cmpHi[n]!) << 32n) | BigInt(s.cmpLo[n]!);
  const per = (n: number): bigint => (BigInt(s.perHi[n]!) << 32n) | BigInt(s.perLo[n]!);
  const setCmp = (n: number, v: bigint): void => { s.cmpLo[n] = Number(v & M32); s.cmpHi[n] = Number((v >> 32n) & M32); };
  const is32 = (n: number): boolean => (s.tcfg[n]! & TN.MODE32_CNF) !== 0;
  const modMask = (n: number): bigint => (is32(n) ? M32 : M64);

  /** The line timer n interrupts on now, or -1 (no deliverable route). */
  const routeOf = (n: number): number => {
    if (n < 2 && legacy()) return HPET_LEGACY_GSI[n]!;
    const r = (s.tcfg[n]! & TN.INT_ROUTE_MASK) >>> TN.INT_ROUTE_SHIFT;
    return (HPET_ROUTE_CAP >>> r) & 1 ? r : -1;
  };

  /** Ticks from the current counter value to timer n's next event; `after` = strictly after now. */
  const ticksToEvent = (n: number, c: bigint, after: boolean): bigint => {
    const mask = modMask(n);
    const cur = c & mask;
    let d = (cmp(n) - cur) & mask;
    if (d === 0n && after) d = mask + 1n;
    if (is32(n) && !(s.tcfg[n]! & TN.TYPE_CNF)) {
      // 32-bit one-shot: also an event when the low half wraps to 0
      let w = (0n - cur) & mask;
      if (w === 0n) w = mask + 1n;
      if (w < d) d = w;
    }
    return d;
  };

  /** (Re)compute timer n's next event from its comparator (after a register write). */
  const program = (n: number, t: number): void => {
    if (!enabled()) { s.due[n] = Infinity; return; }
    s.due[n] = tickStart(t) + Number(ticksToEvent(n, counter(t), false)) * NS_PER_TICK;
  };
  const programAll = (t: number): void => { for (let n = 0; n < N; n++) program(n, t); };

  /** Drive the lines of level-triggered timers from the status bits. */
  const updateLines = (): void => {
    let want = 0;
    if (enabled()) {
      for (let n = 0; n < N; n++) {
        const c = s.tcfg[n]!;
        if (!(c & TN.INT_TYPE_CNF) || !(c & TN.INT_ENB_CNF) || !((s.isr >>> n) & 1)) continue;
        const g = routeOf(n);
        if (g >= 0) want |= 1 << g;
      }
    }
    const diff = (want ^ s.lines) >>> 0;
    if (!diff) return;
    s.lines = want >>> 0;
    for (let g = 0; g < 32; g++) if ((diff >>> g) & 1) platform.irqLine(g, ((want >>> g) & 1) as 0 | 1);
  };

  /** Timer n's event: status, interrupt. */
  const raise = (n: number): void => {
    const c = s.tcfg[n]!;
    if (c & TN.INT_TYPE_CNF) {
      s.isr = (s.isr | (1 << n)) >>> 0;
      updateLines();
      return;
    }
    if (!(c & TN.INT_ENB_CNF)) return;
    const g = routeOf(n);
    if (g < 0 || (s.lines >>> g) & 1) return; // a level source holds the line: no edge possible
    platform.irqLine(g, 1);
    platform.irqLine(g, 0);
  };

  /** Timer n's due time has passed: fire once, then find its next event strictly in the future. */
  const fire = (n: number, t: number): void => {
    raise(n);
    const c = counter(t);
    if (s.tcfg[n]! & TN.TYPE_CNF) {
      const mask = modMask(n);
      const p = per(n) & mask;
      if (p !== 0n) {
        const late = (c - cmp(n)) & mask; // ticks since the match
        const k = late / p + 1n;
        setCmp(n, (cmp(n) + k * p) & mask);
      }
    }
    s.due[n] = tickStart(t) + Number(ticksToEvent(n, c, true)) * NS_PER_TICK;
  };

  const updateDeadline = (): void => {
    let dl = Infinity;
    if (enabled()) {
      for (let n = 0; n < N; n++) {
        const c = s.tcfg[n]!;
        if (!(c & TN.INT_ENB_CNF) || routeOf(n) < 0) continue;
        if ((c & TN.INT_TYPE_CNF) && (s.isr >>> n) & 1) continue; // line already held: nothing new to deliver
        if (s.due[n]! < dl) dl = s.due[n]!;
      }
    }
    s.dl = dl;
  };

  /** Process every event due by t. */
  const sync = (t: number): void => {
    if (enabled()) {
      for (let n = 0; n < N; n++) if (s.due[n]! <= t) fire(n, t);
    }
    updateDeadline();
  };

  // ---- registers (32-bit view) ----
  const readDword = (off: number, t: number): number => {
    if (off >= HPET_REG.TIMER) {
      const n = (off - HPET_REG.TIMER) >>> 5;
      if (n >= N) return 0;
      const r = (off - HPET_REG.TIMER) & 0x1f;
      switch (r) {
        case HPET_REG.T_CONF:
          return ((s.tcfg[n]! & TN_STORED) | TN_RO | (s.valset[n] === VS_ARMED ? TN.VAL_SET_CNF : 0)) >>> 0;
        case HPET_REG.T_CONF + 4: return HPET_ROUTE_CAP;
        case HPET_REG.T_CMP: return s.cmpLo[n]!;
        case HPET_REG.T_CMP + 4: return s.cmpHi[n]!;
        default: return 0; // FSB route (unsupported) and reserved
      }
    }
    switch (off) {
      case HPET_REG.GCAP_ID: return HPET_CAPABILITIES;
      case HPET_REG.GCAP_ID + 4: return HPET_PERIOD_FS;
      case HPET_REG.GEN_CONF: return s.conf;
      case HPET_REG.GINTR_STA: return s.isr;
      case HPET_REG.MAIN_CNT: {
        const [lo, hi] = counterParts(t);
        latchHi = hi; latchNs = t; latchGen = s.cntGen; latchValid = true;
        return lo;
      }
      case HPET_REG.MAIN_CNT + 4: {
        if (latchValid && latchGen === s.cntGen && t - latchNs < LATCH_NS) { latchValid = false; return latchHi; }
        latchValid = false;
        return counterParts(t)[1];
      }
      default: return 0;
    }
  };

  const writeComparator = (n: number, half: 0 | 1, v: number, t: number): void => {
    const vs = s.valset[n]!;
    const valset = vs === VS_ARMED || (vs === VS_HI_PENDING && half === 1) || (vs === VS_LO_PENDING && half === 0);
    s.valset[n] = vs === VS_ARMED ? (half === 0 ? VS_HI_PENDING : VS_LO_PENDING) : VS_NONE;
    if (half === 1 && is32(n)) return; // a 32-bit timer has no high half
    const periodic = (s.tcfg[n]! & TN.TYPE_CNF) !== 0;
    const setHalf = (lo: Uint32Array, hi: Uint32Array) => { if (half === 0) lo[n] = v; else hi[n] = v; };
    setHalf(s.perLo, s.perHi); // the "last value written" (the period in periodic mode)
    if (!periodic || valset) setHalf(s.cmpLo, s.cmpHi);
    program(n, t);
  };

  const writeConfig = (n: number, v: number, t: number): void => {
    const old = s.tcfg[n]!;
    let c = v & TN_STORED;
    const route = (c & TN.INT_ROUTE_MASK) >>> TN.INT_ROUTE_SHIFT;
    if (!((HPET_ROUTE_CAP >>> route) & 1)) c = (c & ~TN.INT_ROUTE_MASK) | (old & TN.INT_ROUTE_MASK); // unsupported: keep
    if ((c & TN.MODE32_CNF) && !(old & TN.MODE32_CNF)) { s.cmpHi[n] = 0; s.perHi[n] = 0; }
    if (!(c & TN.INT_TYPE_CNF)) s.isr = (s.isr & ~(1 << n)) >>> 0; // edge mode has no status
    s.valset[n] = v & TN.VAL_SET_CNF ? VS_ARMED : VS_NONE;
    s.tcfg[n] = c >>> 0;
    program(n, t);
    updateLines();
  };

  const writeGenConf = (v: number, t: number): void => {
    const wasOn = enabled();
    const c = v & (GEN_CONF.ENABLE_CNF | GEN_CONF.LEG_RT_CNF);
    if (wasOn && !(c & GEN_CONF.ENABLE_CNF)) { setCounter(counter(t), t); }
    s.conf = c;
    if (!wasOn && enabled()) { s.cntBase = t; s.cntGen = s.cntGen + 1; }
    programAll(t);
    updateLines();
  };

  /** Write `v` (already merged with the rest of the dword for partial writes) to the dword at off. */
  const writeDword = (off: number, v: number, mask: number, t: number): void => {
    if (off >= HPET_REG.TIMER) {
      const n = (off - HPET_REG.TIMER) >>> 5;
      if (n >= N) return;
      const r = (off - HPET_REG.TIMER) & 0x1f;
      const merged = ((readDword(off, t) & ~mask) | (v & mask)) >>> 0;
      if (r === HPET_REG.T_CONF) writeConfig(n, merged, t);
      else if (r === HPET_REG.T_CMP) writeComparator(n, 0, merged, t);
      else if (r === HPET_REG.T_CMP + 4) writeComparator(n, 1, merged, t);
      return;
    }
    switch (off) {
      case HPET_REG.GEN_CONF: writeGenConf(((s.conf & ~mask) | (v & mask)) >>> 0, t); break;
      case HPET_REG.GINTR_STA:
        s.isr = (s.isr & ~(v & mask)) >>> 0;
        updateLines();
        break;
      case HPET_REG.MAIN_CNT:
      case HPET_REG.MAIN_CNT + 4: {
        const [lo, hi] = counterParts(t);
        const nlo = off === HPET_REG.MAIN_CNT ? ((lo & ~mask) | (v & mask)) >>> 0 : lo;
        const nhi = off === HPET_REG.MAIN_CNT ? hi : ((hi & ~mask) | (v & mask)) >>> 0;
        setCounter((BigInt(nhi) << 32n) | BigInt(nlo), t);
        programAll(t);
        break;
      }
      default: break; // read-only and reserved
    }
  };

  /** Run a register access: process due events first, and wake the I/O Worker if the deadline moved in. */
  const access = <T>(fn: (t: number) => T): T => {
    const t = now();
    const before = s.dl;
    sync(t);
    const r = fn(t);
    sync(t);
    if (s.dl < before) platform.wakeIo();
    return r;
  };

  return {
    name: "hpet",
    ranges: [{ space: "mmio" as Space, base: mmioBase, size: HPET_SIZE }],
    lock,
    read(_space: Space, _base: number, offset: number, size: AccessSize): number {
      return access((t) => {
        const shift = (offset & 3) * 8;
        return ((readDword(offset & ~3, t) >>> shift) & SIZE_MASK[size]) >>> 0;
      });
    },
    write(_space: Space, _base: number, offset: number, size: AccessSize, value: number): void {
      access((t) => {
        const shift = (offset & 3) * 8;
        const mask = (SIZE_MASK[size] << shift) >>> 0;
        writeDword(offset & ~3, ((value << shift) & mask) >>> 0, mask, t);
      });
    },
    deadline: () => s.dl,
    expire(nowNs: number): void {
      lock.with(() => sync(Math.floor(nowNs)));
    },
    powerOn(): void {
      s.conf = 0;
      s.isr = 0;
      s.cntLo = 0;
      s.cntHi = 0;
      s.cntBase = 0;
      s.cntGen = 0;
      s.lines = 0;
      s.dl = Infinity;
      for (let n = 0; n < N; n++) {
        s.tcfg[n] = 0;
        s.cmpLo[n] = 0xffffffff; s.cmpHi[n] = 0xffffffff; // spec: all ones
        s.perLo[n] = 0xffffffff; s.perHi[n] = 0xffffffff;
        s.due[n] = Infinity;
        s.valset[n] = VS_NONE;
      }
    },
    legacyActive: () => legacy(),
  };
}
