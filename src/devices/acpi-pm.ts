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
import type { AccessSize, Device, DeviceContext, Space } from "./device.ts";
import { defineLayout } from "./state.ts";

export const ACPI_PM_DEFAULT_BASE = 0x400;
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
}

export interface AcpiPmDevice extends Device {
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

  const ranges = [
    { space: "pio" as Space, base: base + PM_REG.PM1_EVT, size: PM_REG.PM1_EVT_LEN },
    { space: "pio" as Space, base: base + PM_REG.PM1_CNT, size: PM_REG.PM1_CNT_LEN },
  ];

  return {
    name: "acpi-pm",
    ranges,
    lock,
    read(_space, rbase, offset, size) {
      const whole = rbase === base + PM_REG.PM1_EVT ? evtRead() : cntRead();
      return (Math.floor(whole / 2 ** (8 * offset)) & BYTE_MASK[size]) >>> 0;
    },
    write(_space, rbase, offset, size, value) {
      if (rbase === base + PM_REG.PM1_EVT) evtWrite(offset, size, value >>> 0);
      else cntWrite(offset, size, value >>> 0);
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
}
