/**
 * The PC's real-time clock and CMOS NVRAM: a Motorola MC146818A as integrated in the Intel PIIX4
 * (82371AB datasheet §4.5 "RTC"), at ports 0x70 (index, bit 7 = NMI disable) / 0x71 (data), plus the
 * PIIX4's upper 128-byte bank at 0x72 (index) / 0x73 (data).
 *
 * Registers (index): 0x00 seconds, 0x01 seconds alarm, 0x02 minutes, 0x03 minutes alarm, 0x04 hours,
 * 0x05 hours alarm, 0x06 day of week (1 = Sunday), 0x07 day of month, 0x08 month, 0x09 year, 0x0A A,
 * 0x0B B, 0x0C C, 0x0D D, 0x32 century (the FADT's CENTURY field: RTC_CENTURY_INDEX); everything else is
 * battery-backed RAM. Time bytes are BCD or binary per B.DM, hours 24- or 12-hour per B.24/12 (12-hour:
 * bit 7 = PM), century in the same format as the others.
 *
 * Time source: the RTC's time (local time when `localtime`, bhyve's default, else UTC) is the host's wall
 * clock at power-on, carried forward by host.monotonicNs(): the state block holds a second boundary of the
 * divider chain (`base`, host monotonic ns) and the RTC's time then (`sec`, seconds since 1970 in the
 * RTC's own time scale). Reading gives sec + whole seconds since base; setting the time (B.SET, or a time
 * byte written while running) replaces `sec`, i.e. keeps the guest's offset from host time. Later host
 * clock steps (NTP, DST) are not followed — as with a real battery clock; the guest's NTP corrects.
 *
 * Register A: UIP (bit 7) reads 1 during the last 244 µs before each second boundary (the MC146818's
 * update-in-progress warning; the registers change exactly at the boundary, so a read that saw UIP = 0
 * has ≥ 244 µs of stable time — what Linux's mc146818_get_time loop relies on). DV (bits 6:4) = 010 runs
 * the divider; 11x holds it in reset (clock stopped; the first update comes 500 ms after leaving reset);
 * other values stop it too. RS (bits 3:0) selects the periodic rate (32.768 kHz table: 1 → 256 Hz,
 * 2 → 128 Hz, n ≥ 3 → 65536 / 2^n Hz, 0 = none).
 * Register B: SET stops updates (time bytes become plain RAM until SET is cleared; setting SET clears UIE
 * as on the MC146818), PIE/AIE/UIE enable the three interrupts, SQWE has no effect (no SQW pin), DM and
 * 24/12 select the format, DSE is stored but has no effect (no automatic daylight saving switch).
 * Register C: IRQF/PF/AF/UF; reading it returns and clears them. Register D: VRT = 1 (battery good).
 *
 * Events are not ticked: PF/UF/AF are computed for the interval since the last look whenever the device
 * is touched (any register access, or the I/O Worker at deadline()). The alarm matches when the new
 * time's hours, minutes and seconds bytes equal the alarm bytes; an alarm byte 0xC0–0xFF matches anything.
 *
 * IRQ 8: the line follows IRQF — raised when a flag with its enable makes IRQF 1, lowered when C is read
 * (or the enables are cleared). That is the chip's IRQ# pin: the ISA PIC and the IOAPIC see ISA IRQ 8 as
 * edge-triggered (MADT: no override for IRQ 8), so there is exactly one edge per IRQF 0 → 1 and none
 * until the guest reads C, as on hardware; Linux's rtc-cmos handler reads C on every interrupt. With
 * HPET legacy replacement on, IRQ 8 belongs to HPET timer 1 and the RTC does not drive it
 * (`irq8Taken`). Deadlines are only set for enabled interrupts, and none while IRQF is still set (no edge
 * is possible until C is read), so a guest that ignores the RTC costs nothing.
 *
 * NVRAM configuration bytes written at power-on (firmware reads them): 0x14 equipment, 0x15/0x16 base
 * memory (640 KiB), 0x17/0x18 and 0x30/0x31 memory above 1 MiB in KiB (max 0xFFFF), 0x34/0x35 memory above
 * 16 MiB (below 4 GiB) in 64 KiB units (max 0xFFFF), 0x5B–0x5D memory above 4 GiB in 64 KiB units
 * (SeaBIOS/OVMF convention), 0x5F CPUs − 1 (SeaBIOS), 0x2E/0x2F checksum (big-endian sum of 0x10–0x2D).
 */
import { ramLayout } from "../mem/guest-memory.ts";
import { IRQ, PORTS } from "../platform/map.ts";
import { host } from "../vmm/index.ts";
import type { AccessSize, Device, DeviceContext, Space } from "./device.ts";
import { defineLayout } from "./state.ts";

export const RTC_BASE = PORTS.rtc;
/** CMOS index of the century byte (FADT CENTURY). */
export const RTC_CENTURY_INDEX = 0x32;

export const RTC_REG = {
  SEC: 0x00, SEC_ALARM: 0x01, MIN: 0x02, MIN_ALARM: 0x03, HOUR: 0x04, HOUR_ALARM: 0x05,
  DOW: 0x06, DOM: 0x07, MONTH: 0x08, YEAR: 0x09, A: 0x0a, B: 0x0b, C: 0x0c, D: 0x0d,
  CENTURY: RTC_CENTURY_INDEX,
} as const;

export const REG_A = { UIP: 0x80, DV_MASK: 0x70, DV_SHIFT: 4, RS_MASK: 0x0f } as const;
export const REG_B = { SET: 0x80, PIE: 0x40, AIE: 0x20, UIE: 0x10, SQWE: 0x08, DM: 0x04, H24: 0x02, DSE: 0x01 } as const;
export const REG_C = { IRQF: 0x80, PF: 0x40, AF: 0x20, UF: 0x10 } as const;
export const REG_D = { VRT: 0x80 } as const;

/** CMOS configuration bytes (firmware conventions). */
export const CMOS = {
  EQUIPMENT: 0x14,
  BASEMEM_LO: 0x15, BASEMEM_HI: 0x16,
  EXTMEM_LO: 0x17, EXTMEM_HI: 0x18,
  CHECKSUM_HI: 0x2e, CHECKSUM_LO: 0x2f,
  EXTMEM2_LO: 0x30, EXTMEM2_HI: 0x31,
  MEM16M_LO: 0x34, MEM16M_HI: 0x35,
  HIGHMEM_0: 0x5b, HIGHMEM_1: 0x5c, HIGHMEM_2: 0x5d,
  NCPUS_M1: 0x5f,
} as const;

/** Power-on register values: A = 32.768 kHz divider, 1024 Hz periodic rate; B = 24-hour BCD. */
export const REG_A_POWER_ON = 0x26;
export const REG_B_POWER_ON = REG_B.H24;
/** UIP is reported this long before each update (MC146818A: t_BUC = 244 µs). */
export const UIP_WINDOW_NS = 244_000;

const DV_NORMAL = 2;
const NS_PER_SEC = 1e9;
const KiB = 1024, MiB = 1024 * 1024;

export const rtcLayout = defineLayout("rtc", 1, {
  /** bank 0 (0x00–0x7F, the registers live at 0x00–0x0D) and bank 1 (0x80–0xFF, via 0x72/0x73) */
  nv: { type: "u8", count: 256 },
  /** last write to 0x70 (index | NMI disable) and to 0x72 */
  index: "u8",
  xindex: "u8",
  /** (day of week shown − true day of week) mod 7: the DOW byte is a free counter on the chip */
  dowAdj: "u8",
  /** level we drive on IRQ 8 */
  line: "u8",
  /** RTC seconds at `base` (running), or the frozen time (stopped) */
  sec: "f64",
  /** a second boundary of the divider chain, host monotonic ns (integer) */
  base: "f64",
  /** next periodic tick / next second boundary not yet accounted */
  pNext: "f64",
  uNext: "f64",
  /** what deadline() returns */
  dl: "f64",
});

export interface RtcOptions {
  /** RTC in local time (bhyve's rtc.use_localtime, default) or UTC */
  localtime: boolean;
  /** guest RAM in bytes (for the NVRAM memory-size bytes) */
  ramSize: number;
  cpus: number;
  /** I/O base (default 0x70; the upper bank is at base + 2) */
  base?: number;
  /** ISA IRQ (default 8) */
  irq?: number;
  /** true while something else owns IRQ 8 (HPET legacy replacement) */
  irq8Taken?: () => boolean;
  /** monotonic clock in ns (default host.monotonicNs) */
  now?: () => number;
  /** wall clock in ms since 1970 (default Date.now) */
  wallNow?: () => number;
}

export interface RtcDevice extends Device {
  /** The RTC's current time as seconds since 1970 in its own time scale (diagnostics, tests). */
  seconds(): number;
  /** NMI disable bit (bit 7 of the last index write). */
  nmiDisabled(): boolean;
}

/** floor(a / b) that is exact even where the floating-point quotient rounds across an integer. */
function divFloor(a: number, b: number): number {
  let q = Math.floor(a / b);
  if (q * b > a) q--;
  else if ((q + 1) * b <= a) q++;
  return q;
}

/**
 * The CMOS configuration bytes for a guest (index → value), checksum included. RAM below 4 GiB is what
 * ramLayout puts there (up to 3 GiB), the rest is above 4 GiB.
 */
export function cmosConfigBytes(ramSize: number, cpus: number): Map<number, number> {
  const low = ramLayout(ramSize).filter((r) => r.gpa < 2 ** 32).reduce((a, r) => a + r.size, 0);
  const high = ramSize - low;
  const out = new Map<number, number>();
  const put16 = (lo: number, v: number) => { out.set(lo, v & 0xff); out.set(lo + 1, (v >>> 8) & 0xff); };
  out.set(CMOS.EQUIPMENT, 0x02); // math coprocessor present, no floppy, EGA/VGA class display
  put16(CMOS.BASEMEM_LO, 640);
  const ext = Math.min(0xffff, Math.floor(Math.max(0, low - MiB) / KiB));
  put16(CMOS.EXTMEM_LO, ext);
  put16(CMOS.EXTMEM2_LO, ext);
  put16(CMOS.MEM16M_LO, Math.min(0xffff, Math.floor(Math.max(0, low - 16 * MiB) / (64 * KiB))));
  const hi64k = Math.min(0xffffff, Math.floor(Math.max(0, high) / (64 * KiB)));
  out.set(CMOS.HIGHMEM_0, hi64k & 0xff);
  out.set(CMOS.HIGHMEM_1, (hi64k >>> 8) & 0xff);
  out.set(CMOS.HIGHMEM_2, (hi64k >>> 16) & 0xff);
  out.set(CMOS.NCPUS_M1, Math.max(0, Math.min(255, cpus - 1)));
  let sum = 0;
  for (let i = 0x10; i <= 0x2d; i++) sum += out.get(i) ?? 0;
  out.set(CMOS.CHECKSUM_HI, (sum >>> 8) & 0xff);
  out.set(CMOS.CHECKSUM_LO, sum & 0xff);
  return out;
}

/** Periodic interrupt period in ns for rate select RS (0 = none), 32.768 kHz time base. */
export function rtcPeriodNs(rs: number): number {
  rs &= 0xf;
  if (rs === 0) return 0;
  const exp = rs <= 2 ? rs + 6 : rs - 1;
  return (2 ** exp * NS_PER_SEC) / 32768;
}

const TIME_REGS = [RTC_REG.SEC, RTC_REG.MIN, RTC_REG.HOUR, RTC_REG.DOW, RTC_REG.DOM, RTC_REG.MONTH, RTC_REG.YEAR, RTC_REG.CENTURY] as const;
const isTimeReg = (i: number): boolean => (TIME_REGS as readonly number[]).includes(i);

export function createRtc(ctx: DeviceContext, opts: RtcOptions): RtcDevice {
  const ioBase = opts.base ?? RTC_BASE;
  const irq = opts.irq ?? IRQ.rtc;
  const taken = opts.irq8Taken ?? (() => false);
  const clock = opts.now ?? (() => host.monotonicNs());
  const wall = opts.wallNow ?? (() => Date.now());
  const now = (): number => Math.floor(clock());
  const { s, lock } = ctx.arena.alloc(rtcLayout);
  const { platform } = ctx;
  const nv = s.nv;

  const regA = () => nv[RTC_REG.A]!;
  const regB = () => nv[RTC_REG.B]!;
  const dividerOn = (a = regA()): boolean => ((a & REG_A.DV_MASK) >>> REG_A.DV_SHIFT) === DV_NORMAL;
  const running = (a = regA(), b = regB()): boolean => dividerOn(a) && !(b & REG_B.SET);
  const timeAt = (t: number, a = regA(), b = regB()): number => (running(a, b) ? s.sec + divFloor(t - s.base, NS_PER_SEC) : s.sec);
  /** First grid point (base + k·period) strictly after t, rounded up to whole ns. */
  const nextGrid = (t: number, period: number): number => {
    let r = Math.ceil(s.base + (divFloor(t - s.base, period) + 1) * period);
    if (r <= t) r = t + 1;
    return r;
  };

  // ---- formats ----
  const enc = (v: number, b = regB()): number => (b & REG_B.DM ? v & 0xff : ((Math.floor(v / 10) % 10) << 4) | (v % 10));
  const dec = (x: number, b = regB()): number => (b & REG_B.DM ? x : ((x >>> 4) & 0xf) * 10 + (x & 0xf));
  const encHour = (h: number, b = regB()): number => {
    if (b & REG_B.H24) return enc(h, b);
    const h12 = h % 12 === 0 ? 12 : h % 12;
    return enc(h12, b) | (h >= 12 ? 0x80 : 0);
  };
  const decHour = (x: number, b = regB()): number => {
    if (b & REG_B.H24) return dec(x, b);
    return (dec(x & 0x7f, b) % 12) + (x & 0x80 ? 12 : 0);
  };
  const trueDow = (sec: number): number => ((Math.floor(sec / 86400) + 4) % 7 + 7) % 7; // 1970-01-01 was a Thursday

  /** Time bytes for RTC seconds `sec` in format b: index → value. */
  const encodeTime = (sec: number, b = regB()): Map<number, number> => {
    const d = new Date(sec * 1000);
    const year = d.getUTCFullYear();
    return new Map([
      [RTC_REG.SEC, enc(d.getUTCSeconds(), b)],
      [RTC_REG.MIN, enc(d.getUTCMinutes(), b)],
      [RTC_REG.HOUR, encHour(d.getUTCHours(), b)],
      [RTC_REG.DOW, enc(((trueDow(sec) + s.dowAdj) % 7) + 1, b)],
      [RTC_REG.DOM, enc(d.getUTCDate(), b)],
      [RTC_REG.MONTH, enc(d.getUTCMonth() + 1, b)],
      [RTC_REG.YEAR, enc(((year % 100) + 100) % 100, b)],
      [RTC_REG.CENTURY, enc(Math.floor(year / 100) % (b & REG_B.DM ? 256 : 100), b)],
    ]);
  };
  /** Parse time bytes (format b) into RTC seconds, and set the day-of-week adjustment from them. */
  const parseTime = (get: (i: number) => number, b = regB()): number => {
    const d = new Date(0);
    const year = dec(get(RTC_REG.CENTURY), b) * 100 + dec(get(RTC_REG.YEAR), b);
    d.setUTCFullYear(year, dec(get(RTC_REG.MONTH), b) - 1, dec(get(RTC_REG.DOM), b));
    d.setUTCHours(decHour(get(RTC_REG.HOUR), b), dec(get(RTC_REG.MIN), b), dec(get(RTC_REG.SEC), b), 0);
    let sec = Math.floor(d.getTime() / 1000);
    if (!Number.isFinite(sec)) sec = 0;
    const shown = dec(get(RTC_REG.DOW), b) - 1;
    s.dowAdj = (((shown - trueDow(sec)) % 7) + 7) % 7;
    return sec;
  };
  /** Make the RTC read `sec` now, keeping the divider's phase. */
  const setTime = (sec: number, t: number): void => {
    s.sec = running() ? sec - divFloor(t - s.base, NS_PER_SEC) : sec;
  };

  const alarmMatch = (sec: number, b = regB()): boolean => {
    const sod = ((sec % 86400) + 86400) % 86400;
    const m = (alarm: number, v: number) => (alarm & 0xc0) === 0xc0 || alarm === v;
    return m(nv[RTC_REG.SEC_ALARM]!, enc(sod % 60, b)) && m(nv[RTC_REG.MIN_ALARM]!, enc(Math.floor(sod / 60) % 60, b))
      && m(nv[RTC_REG.HOUR_ALARM]!, encHour(Math.floor(sod / 3600), b));
  };

  // ---- events ----
  const rearm = (t: number): void => {
    const p = rtcPeriodNs(regA());
    s.pNext = p ? nextGrid(t, p) : Infinity;
    s.uNext = nextGrid(t, NS_PER_SEC);
  };

  const updateIrq = (): void => {
    const c = nv[RTC_REG.C]! & (REG_C.PF | REG_C.AF | REG_C.UF);
    const irqf = (c & regB()) !== 0;
    nv[RTC_REG.C] = c | (irqf ? REG_C.IRQF : 0);
    const want = irqf && !taken() ? 1 : 0;
    if (want !== s.line) {
      s.line = want;
      platform.irqLine(irq, want);
    }
  };

  /** Account PF/UF/AF for everything up to t. */
  const account = (t: number): void => {
    let c = nv[RTC_REG.C]!;
    if (dividerOn()) {
      const p = rtcPeriodNs(regA());
      if (p && s.pNext <= t) { c |= REG_C.PF; s.pNext = nextGrid(t, p); }
    }
    if (running() && s.uNext <= t) {
      c |= REG_C.UF;
      const last = timeAt(t);
      const first = Math.max(timeAt(s.uNext), last - 86399);
      if (!(c & REG_C.AF)) {
        for (let v = last; v >= first; v--) if (alarmMatch(v)) { c |= REG_C.AF; break; }
      }
      s.uNext = nextGrid(t, NS_PER_SEC);
    }
    nv[RTC_REG.C] = c;
    updateIrq();
  };

  const updateDeadline = (): void => {
    let dl = Infinity;
    const b = regB();
    if (!(nv[RTC_REG.C]! & REG_C.IRQF)) {
      if (b & REG_B.PIE && dividerOn() && rtcPeriodNs(regA())) dl = Math.min(dl, s.pNext);
      if (b & (REG_B.UIE | REG_B.AIE) && running()) dl = Math.min(dl, s.uNext);
    }
    s.dl = dl;
  };

  // ---- registers ----
  const readReg = (i: number, t: number): number => {
    switch (i) {
      case RTC_REG.A: {
        const uip = running() && s.uNext - t <= UIP_WINDOW_NS ? REG_A.UIP : 0;
        return (regA() & ~REG_A.UIP) | uip;
      }
      case RTC_REG.C: {
        const v = nv[RTC_REG.C]!;
        nv[RTC_REG.C] = 0;
        updateIrq();
        return v;
      }
      case RTC_REG.D: return REG_D.VRT;
      default:
        if (isTimeReg(i) && !(regB() & REG_B.SET)) return encodeTime(timeAt(t)).get(i)!;
        return nv[i]!;
    }
  };

  const writeReg = (i: number, v: number, t: number): void => {
    switch (i) {
      case RTC_REG.A: {
        const old = regA(), nw = v & ~REG_A.UIP;
        if (dividerOn(old) && !dividerOn(nw)) s.sec = timeAt(t, old); // stop: freeze the time
        nv[RTC_REG.A] = nw;
        if (!dividerOn(old) && dividerOn(nw)) {
          // leaving reset: the first update is 500 ms later
          s.base = t + NS_PER_SEC / 2 - NS_PER_SEC;
        }
        rearm(t);
        return;
      }
      case RTC_REG.B: {
        const old = regB();
        let nw = v;
        if (nw & REG_B.SET) nw &= ~REG_B.UIE;
        if (!(old & REG_B.SET) && nw & REG_B.SET) {
          // updates stop: the time bytes become RAM holding the current time, in the new format
          const sec = timeAt(t);
          s.sec = sec;
          nv[RTC_REG.B] = nw;
          for (const [k, x] of encodeTime(sec, nw)) nv[k] = x;
        } else if (old & REG_B.SET && !(nw & REG_B.SET)) {
          nv[RTC_REG.B] = nw;
          const sec = parseTime((k) => nv[k]!, nw);
          setTime(sec, t);
          rearm(t);
        } else {
          nv[RTC_REG.B] = nw;
        }
        updateIrq();
        return;
      }
      case RTC_REG.C: case RTC_REG.D: return; // read-only
      default:
        if (isTimeReg(i) && !(regB() & REG_B.SET)) {
          const bytes = encodeTime(timeAt(t));
          bytes.set(i, v);
          setTime(parseTime((k) => bytes.get(k)!), t);
          return;
        }
        nv[i] = v;
    }
  };

  const readPort = (port: number): number => {
    switch (port) {
      case 0: return s.index;
      case 1: return access((t) => readReg(s.index & 0x7f, t));
      case 2: return s.xindex;
      default: return nv[0x80 | (s.xindex & 0x7f)]!;
    }
  };
  const writePort = (port: number, v: number): void => {
    switch (port) {
      case 0: s.index = v; return;
      case 1: access((t) => writeReg(s.index & 0x7f, v, t)); return;
      case 2: s.xindex = v & 0x7f; return;
      default: nv[0x80 | (s.xindex & 0x7f)] = v;
    }
  };

  const access = <T>(fn: (t: number) => T): T => {
    const t = now();
    const before = s.dl;
    account(t);
    const r = fn(t);
    updateDeadline();
    if (s.dl < before) platform.wakeIo();
    return r;
  };

  return {
    name: "rtc",
    ranges: [{ space: "pio" as Space, base: ioBase, size: 4 }],
    lock,
    // The ports are byte-wide: a wider access is a sequence of byte accesses to consecutive ports.
    read(_space: Space, _base: number, offset: number, size: AccessSize): number {
      let v = 0;
      for (let i = 0; i < size; i++) v |= readPort(offset + i) << (8 * i);
      return v >>> 0;
    },
    write(_space: Space, _base: number, offset: number, size: AccessSize, value: number): void {
      for (let i = 0; i < size; i++) writePort(offset + i, (value >>> (8 * i)) & 0xff);
    },
    deadline: () => s.dl,
    expire(nowNs: number): void {
      lock.with(() => { account(Math.floor(nowNs)); updateDeadline(); });
    },
    powerOn(): void {
      nv.fill(0);
      for (const [k, x] of cmosConfigBytes(opts.ramSize, opts.cpus)) nv[k] = x;
      nv[RTC_REG.A] = REG_A_POWER_ON;
      nv[RTC_REG.B] = REG_B_POWER_ON;
      nv[RTC_REG.C] = 0;
      nv[RTC_REG.D] = REG_D.VRT;
      s.index = 0;
      s.xindex = 0;
      s.dowAdj = 0;
      s.line = 0;
      const t = now();
      const ms = wall();
      const tz = opts.localtime ? new Date(ms).getTimezoneOffset() * 60 : 0;
      const whole = Math.floor(ms / 1000);
      s.sec = whole - tz;
      s.base = t - Math.round((ms - whole * 1000) * 1e6);
      rearm(t);
      s.dl = Infinity;
    },
    seconds: () => lock.with(() => timeAt(now())),
    nmiDisabled: () => (s.index & 0x80) !== 0,
  };
}
