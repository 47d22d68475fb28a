/**
 * ACPI power-management timer (ACPI 6.5 §4.8.3.3 "Power Management Timer (PM_TMR)"): a free-running
 * counter at 3.579545 MHz, read-only, in the PM register block at PM base + 8 (FADT PM_TMR_BLK,
 * PM_TMR_LEN = 4).
 *
 * Width: 32 bits (the FADT must set TMR_VAL_EXT, flags bit 8): it wraps every 1200 s instead of every
 * 4.7 s, which keeps guests that sample it rarely (calibration loops under a loaded host) correct.
 *
 * The value is derived from host.monotonicNs(), never ticked: ticks = (now − origin) · 3579545 / 10^9,
 * with origin (the host time of power-on) in the state block, so every vCPU thread reads the same counter.
 *
 * TMR_STS / TMR_EN (the PM1 status bit set when bit 31 toggles, and its SCI) belong to the PM1 event block
 * in acpi-pm.ts; `msbToggleAfter()` gives that block the host time of the next toggle if it implements it.
 *
 * The port follows the PM base: `base` is an accessor (read it from shared state when firmware moves
 * PMBA); `ranges` is re-read from it, so unregistering and registering the device on the bus moves it.
 */
import { PM, PORTS } from "../platform/map.ts";
import { host } from "../vmm/index.ts";
import type { AccessSize, Device, DeviceContext, Space } from "./device.ts";
import { defineLayout } from "./state.ts";

export const PM_TIMER_HZ = 3_579_545;
/** Offset of PM_TMR from the PM base, and its length (FADT PM_TMR_LEN). */
export const PM_TIMER_OFFSET = PM.tmr;
export const PM_TIMER_LEN = 4;
/** The counter is 32 bits wide: FADT flag TMR_VAL_EXT must be set. */
export const PM_TIMER_BITS = 32;

export const pmTimerLayout = defineLayout("pmtimer", 1, {
  /** host.monotonicNs() at power-on: the counter is 0 then */
  origin: "f64",
});

/**
 * Counter value (mod 2^32) after `ns` nanoseconds. Splits whole seconds from the rest so every product
 * stays an exact integer below 2^53 (good for ~80 years of uptime).
 */
export function pmTimerTicks(ns: number): number {
  if (!(ns > 0)) return 0;
  const sec = Math.floor(ns / 1e9);
  const rest = ns - sec * 1e9;
  const ticks = (sec * PM_TIMER_HZ) % 2 ** 32 + Math.floor((rest * PM_TIMER_HZ) / 1e9);
  return ticks % 2 ** 32;
}

/** Smallest elapsed time (ns, integer) at which the counter has reached `ticks` ticks (unwrapped). */
function nsForTicks(ticks: number): number {
  const sec = Math.floor(ticks / PM_TIMER_HZ);
  const rest = ticks - sec * PM_TIMER_HZ;
  return sec * 1e9 + Math.ceil((rest * 1e9) / PM_TIMER_HZ);
}

export interface PmTimerOptions {
  /**
   * PM base (PMBA) accessor; the timer is at base() + 8, and not decoded while it returns undefined (PM
   * I/O space disabled). Default: the power-on PM base 0x600. Read from shared state (acpi-pm.ts's
   * sharedPmBase(...).current) so every thread agrees.
   */
  base?: () => number | undefined;
  /**
   * The bus's shared map generation (sharedPmBase(...).gen): when given, the device carries it as
   * `mapGeneration`, making it a relocatable device the bus re-maps when the generation is bumped.
   */
  mapGeneration?: { readonly value: number; bump(): void };
  /** clock in ns (default host.monotonicNs) */
  now?: () => number;
}

export interface PmTimerDevice extends Device {
  /** Counter value at host time `nowNs`. */
  value(nowNs: number): number;
  /** Host time (ns) of the next toggle of bit 31 strictly after `nowNs` (for TMR_STS). */
  msbToggleAfter(nowNs: number): number;
}

const SIZE_MASK = [0, 0xff, 0xffff, 0, 0xffffffff] as const;

export function createPmTimer(ctx: DeviceContext, opts: PmTimerOptions = {}): PmTimerDevice {
  const base = opts.base ?? (() => PORTS.pmBase);
  const now = opts.now ?? (() => host.monotonicNs());
  const { s } = ctx.arena.alloc(pmTimerLayout);

  const value = (t: number): number => pmTimerTicks(t - s.origin);

  const dev: PmTimerDevice = {
    name: "pmtimer",
    get ranges() {
      const b = base();
      return b === undefined ? [] : [{ space: "pio" as Space, base: b + PM_TIMER_OFFSET, size: PM_TIMER_LEN }];
    },
    // No lock: the only state is written once at power-on, and reads have no side effects.
    read(_space: Space, _base: number, offset: number, size: AccessSize): number {
      return ((value(now()) >>> (8 * (offset & 3))) & SIZE_MASK[size]) >>> 0;
    },
    write(): void { /* read-only */ },
    powerOn(): void {
      s.origin = now();
    },
    value,
    msbToggleAfter(nowNs: number): number {
      const el = Math.max(0, nowNs - s.origin);
      // unwrapped tick count now, then the next multiple of 2^31
      const sec = Math.floor(el / 1e9);
      const ticks = sec * PM_TIMER_HZ + Math.floor(((el - sec * 1e9) * PM_TIMER_HZ) / 1e9);
      const next = (Math.floor(ticks / 2 ** 31) + 1) * 2 ** 31;
      return s.origin + nsForTicks(next);
    },
  };
  return opts.mapGeneration ? Object.assign(dev, { mapGeneration: opts.mapGeneration }) : dev;
}
