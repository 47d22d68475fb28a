/**
 * ACPI fixed-hardware power management registers: the PM1a event block (PM1_STS + PM1_EN) and the
 * PM1a control block (PM1_CNT). References: ACPI 6.5 §4.8.3.1 "PM1 Event Grouping" and §4.8.3.2
 * "PM1 Control Grouping", §7.4.2 (\_Sx sleep objects), §16.1 (sleep sequence).
 *
 * I/O layout (the FADT's PM1a_EVT_BLK / PM1a_CNT_BLK must agree; the base is an option because a
 * later issue lets firmware move the PM base):
 *
 *   base+0  PM1_STS  16 bits  status, write-1-to-clear
 *   base+2  PM1_EN   16 bits  enables
 *   base+4  PM1_CNT  16 bits  control (SCI_EN, SLP_TYP, SLP_EN)
 *
 * Relocation: with `follow` (a PmBase, see `sharedPmBase`) the block is a RelocatableDevice whose one
 * 6-byte range sits wherever the chipset's PM base register says — the PIIX4 PM function's PMBA/PMREGMISC
 * (src/pci/devices/lpc.ts) — and disappears while the PM I/O space is disabled. Every thread's bus follows
 * through the shared MapGeneration. Without `follow` the two ranges are fixed at `base`.
 *
 * The PM timer (base+8) is not here. There is no SMI_CMD (FADT SMI_CMD = 0), so the platform is always
 * in ACPI mode and SCI_EN always reads 1.
 *
 * The SCI is GSI 9, level-triggered (active high here; the MADT's interrupt source override must say
 * the same): the line is high while (PM1_STS & PM1_EN & SCI_EVENTS) != 0.
 *
 * Sleep: writing SLP_EN with SLP_TYP equal to the \_S5 value of our DSDT (5) powers the VM off (bhyve
 * exit 1). Any other SLP_TYP is refused with a log line: there is no S1–S4. So that an OS that tries
 * anyway does not spin forever on WAK_STS (§16.1.6: OSPM polls WAK_STS after setting SLP_EN), the
 * refused transition is reported as an immediate wake: WAK_STS is set.
 */
import { sharedMapGeneration, type MapGeneration } from "./bus.ts";
import type { AccessSize, Device, DeviceContext, Space } from "./device.ts";
import { defineLayout, type StateArena } from "./state.ts";

export const ACPI_PM_DEFAULT_BASE = 0x400;
/** Default of the chipset PM base (PORTS.pmBase in src/platform/map.ts). */
const PM_DEFAULT_BASE = 0x600;
/** GSI of the SCI (FADT SCI_INT). */
export const ACPI_SCI_GSI = 9;
/** SLP_TYP value of our DSDT's \_S5 package. */
export const SLP_TYP_S5 = 5;

/** Register offsets from the PM base. */
export const PM_REG = {
  /** PM1a_EVT_BLK: PM1_STS at +0, PM1_EN at +2 (PM1_EVT_LEN = 4). */
  PM1_EVT: 0x0,
  PM1_EVT_LEN: 4,
  /** PM1a_CNT_BLK (PM1_CNT_LEN = 2). */
  PM1_CNT: 0x4,
  PM1_CNT_LEN: 2,
} as const;

/** PM1_STS bits (ACPI Table 4.16). All status bits are write-1-to-clear. */
export const PM1_STS = {
  TMR_STS: 1 << 0,        // PM timer MSB toggled
  BM_STS: 1 << 4,         // bus master activity
  GBL_STS: 1 << 5,        // BIOS wants the global lock
  PWRBTN_STS: 1 << 8,     // fixed power button pressed
  SLPBTN_STS: 1 << 9,     // fixed sleep button pressed
  RTC_STS: 1 << 10,       // RTC alarm
  PCIEXP_WAKE_STS: 1 << 14,
  WAK_STS: 1 << 15,       // set when the system wakes from a sleep state
} as const;
const PM1_STS_VALID = Object.values(PM1_STS).reduce((a, b) => a | b, 0);

/** PM1_EN bits (ACPI Table 4.17). Plain read/write. */
export const PM1_EN = {
  TMR_EN: 1 << 0,
  GBL_EN: 1 << 5,
  PWRBTN_EN: 1 << 8,
  SLPBTN_EN: 1 << 9,
  RTC_EN: 1 << 10,
  PCIEXP_WAKE_DIS: 1 << 14,
} as const;
const PM1_EN_VALID = Object.values(PM1_EN).reduce((a, b) => a | b, 0);
/** Status bits whose enable raises the SCI (the four with an _EN companion that are SCI sources). */
const SCI_EVENTS = PM1_EN.TMR_EN | PM1_EN.GBL_EN | PM1_EN.PWRBTN_EN | PM1_EN.SLPBTN_EN | PM1_EN.RTC_EN;

/** PM1_CNT bits (ACPI Table 4.18). */
export const PM1_CNT = {
  SCI_EN: 1 << 0,         // reads 1: no SMI_CMD, always in ACPI mode; writes ignored
  BM_RLD: 1 << 1,         // read/write, no effect here
  GBL_RLS: 1 << 2,        // write-only: would raise an SMI to release the global lock; ignored, reads 0
  SLP_TYP_SHIFT: 10,
  SLP_TYP_MASK: 7 << 10,  // read/write, bits 12:10
  SLP_EN: 1 << 13,        // write-only: start the transition to SLP_TYP; reads 0
} as const;
/** Bits of PM1_CNT that are stored (everything else reads as fixed or 0). */
const PM1_CNT_STORED = PM1_CNT.BM_RLD | PM1_CNT.SLP_TYP_MASK;

export const acpiPmLayout = defineLayout("acpi-pm", 1, {
  sts: "u16",
  en: "u16",
  cnt: "u16",
  /** Level last driven on the SCI line (0/1), so the line is only touched on change. */
  sci: "u8",
});

export interface AcpiPmOptions {
  /** I/O base of the PM1a event block (control block at base+4). Default 0x400. */
  base?: number;
  /** SLP_TYP value that means S5 (default 5, matching our DSDT). */
  s5SlpTyp?: number;
  /** SCI GSI (default 9). */
  sciGsi?: number;
  /** Follow the chipset's PM base (relocatable block); `base` is then ignored. */
  follow?: PmBase;
}

export interface AcpiPmDevice extends Device {
  /** Present when the block follows a PmBase (it is then a RelocatableDevice). */
  readonly mapGeneration?: MapGeneration;
  /**
   * A press of the fixed-hardware power button: set PWRBTN_STS and raise the SCI if PWRBTN_EN.
   * Takes the device lock itself: call it from outside a bus access (e.g. a signal handler on main).
   */
  powerButton(): void;
  /** Current PM1_STS / PM1_EN / PM1_CNT as the guest would read them (for tests and diagnostics). */
  registers(): { sts: number; en: number; cnt: number };
}

/** Set PWRBTN_STS on an ACPI PM device and raise the SCI (SIGTERM → graceful ACPI shutdown). */
export function pressPowerButton(pm: AcpiPmDevice): void {
  pm.powerButton();
}

const BYTE_MASK = [0, 0xff, 0xffff, 0, 0xffffffff] as const;

/**
 * The chipset's ACPI PM I/O base as shared state: one word every thread reads, written by the register
 * that owns it (PIIX4 PMBA + PMREGMISC.PMIOSE). Devices of the PM block (PM1 here, the PM timer, GPE0)
 * compute their ranges from `current()` and carry `gen` as their mapGeneration, so every bus follows
 * when firmware moves the block.
 *
 * Encoding of the word: bit 31 "programmed", bit 16 "enabled", bits 15:0 base. A word of 0 (a fresh
 * arena, or no PM function in the configuration) means "never programmed": the block decodes at the
 * default base, so a directly booted kernel finds it where the FADT says.
 */
export interface PmBase {
  readonly gen: MapGeneration;
  readonly defaultBase: number;
  /** I/O base the PM block decodes at now, or undefined while its I/O space is disabled. */
  current(): number | undefined;
  /** Set the decoded base (undefined = disabled) and bump the generation if it changed. */
  set(base: number | undefined): void;
  /** Back to "never programmed" (decodes at defaultBase). */
  reset(): void;
}

export const pmBaseLayout = defineLayout("pm-base", 1, { word: { type: "i32", count: 1 } });
const PMB_PROGRAMMED = 0x8000_0000 | 0, PMB_ENABLED = 0x1_0000;
const pmBases = new WeakMap<StateArena, PmBase>();

/**
 * The arena's PmBase, allocated on the first call in this thread (the device table is identical in every
 * thread, so is the block's offset). `defaultBase` is fixed by the first caller.
 */
export function sharedPmBase(arena: StateArena, defaultBase: number = PM_DEFAULT_BASE): PmBase {
  let pb = pmBases.get(arena);
  if (pb) return pb;
  const gen = sharedMapGeneration(arena);
  const w = arena.alloc(pmBaseLayout).s.word;
  const decode = (v: number): number | undefined =>
    !(v & PMB_PROGRAMMED) ? defaultBase : v & PMB_ENABLED ? v & 0xffff : undefined;
  const store = (v: number): void => {
    const old = Atomics.exchange(w, 0, v);
    if (decode(old) !== decode(v)) gen.bump();
  };
  pb = {
    gen, defaultBase,
    current: () => decode(Atomics.load(w, 0)),
    set: (base) => store(base === undefined ? PMB_PROGRAMMED : PMB_PROGRAMMED | PMB_ENABLED | (base & 0xffff)),
    reset: () => store(0),
  };
  pmBases.set(arena, pb);
  return pb;
}

export function createAcpiPm(ctx: DeviceContext, opts: AcpiPmOptions = {}): AcpiPmDevice {
  const base = opts.base ?? ACPI_PM_DEFAULT_BASE;
  const s5 = opts.s5SlpTyp ?? SLP_TYP_S5;
  const gsi = opts.sciGsi ?? ACPI_SCI_GSI;
  const { s, lock } = ctx.arena.alloc(acpiPmLayout);
  const { platform } = ctx;

  const updateSci = (): void => {
    const level = (s.sts & s.en & SCI_EVENTS) !== 0 ? 1 : 0;
    if (level !== s.sci) {
      s.sci = level;
      platform.irqLine(gsi, level);
    }
  };

  const cntRead = (): number => (s.cnt & PM1_CNT_STORED) | PM1_CNT.SCI_EN;

  /** The event block as one 32-bit little-endian register: STS in bits 15:0, EN in 31:16. */
  const evtRead = (): number => (s.sts | (s.en << 16)) >>> 0;

  const evtWrite = (offset: number, size: AccessSize, value: number): void => {
    const mask = (BYTE_MASK[size] * 2 ** (8 * offset)) % 2 ** 32;
    const v = ((value * 2 ** (8 * offset)) % 2 ** 32) & mask;
    const stsMask = mask & 0xffff, enMask = (mask >>> 16) & 0xffff;
    // PM1_STS: writing 1 clears, writing 0 leaves alone.
    s.sts = s.sts & ~(v & stsMask & PM1_STS_VALID) & 0xffff;
    if (enMask) s.en = ((s.en & ~enMask) | ((v >>> 16) & enMask)) & PM1_EN_VALID;
    updateSci();
  };

  const cntWrite = (offset: number, size: AccessSize, value: number): void => {
    const mask = (BYTE_MASK[size] << (8 * offset)) & 0xffff;
    const v = (value << (8 * offset)) & mask;
    const merged = (cntRead() & ~mask) | v;
    s.cnt = merged & PM1_CNT_STORED;
    if (v & PM1_CNT.SLP_EN) {
      const typ = (merged & PM1_CNT.SLP_TYP_MASK) >> PM1_CNT.SLP_TYP_SHIFT;
      if (typ === s5) {
        platform.requestExit(1, "ACPI S5 power-off");
      } else {
        platform.log(`acpi-pm: sleep request SLP_TYP=${typ} ignored (only S5 is supported); reporting an immediate wake`);
        s.sts = s.sts | PM1_STS.WAK_STS;
        updateSci();
      }
    }
  };

  const fixed: Device["ranges"] = [
    { space: "pio" as Space, base: base + PM_REG.PM1_EVT, size: PM_REG.PM1_EVT_LEN },
    { space: "pio" as Space, base: base + PM_REG.PM1_CNT, size: PM_REG.PM1_CNT_LEN },
  ];
  const follow = opts.follow;
  /** Offset of an access from the start of the block (rbase is the start of the range it hit). */
  const rel = follow ? (_rbase: number, offset: number) => offset : (rbase: number, offset: number) => rbase - base + offset;
  const dev: AcpiPmDevice = {
    name: "acpi-pm",
    mapGeneration: follow?.gen,
    get ranges() {
      if (!follow) return fixed;
      const b = follow.current();
      return b === undefined ? [] : [{ space: "pio" as Space, base: b, size: PM_REG.PM1_CNT + PM_REG.PM1_CNT_LEN }];
    },
    lock,
    read(_space, rbase, offset, size) {
      const r = rel(rbase, offset);
      if (r >= PM_REG.PM1_CNT) return (cntRead() >>> (8 * (r - PM_REG.PM1_CNT))) & BYTE_MASK[size];
      return (Math.floor(evtRead() / 2 ** (8 * r)) & BYTE_MASK[size]) >>> 0;
    },
    write(_space, rbase, offset, size, value) {
      const r = rel(rbase, offset);
      if (r >= PM_REG.PM1_CNT) cntWrite(r - PM_REG.PM1_CNT, size, value >>> 0);
      else evtWrite(r, size, value >>> 0);
    },
    powerButton() {
      lock.with(() => {
        s.sts = s.sts | PM1_STS.PWRBTN_STS;
        updateSci();
      });
    },
    registers() {
      return lock.with(() => ({ sts: s.sts, en: s.en, cnt: cntRead() }));
    },
  };
  return dev;
}
