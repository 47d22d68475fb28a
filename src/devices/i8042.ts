/**
 * A minimal Intel 8042-compatible keyboard controller (the PS/2 controller of every PC): enough for
 * firmware and Linux's i8042/atkbd probing to succeed without waiting on timeouts, and for the
 * "pulse reset line" reboot method. No real keyboard yet (a full PS/2 keyboard comes later): the
 * keyboard answers commands (ACK, BAT, ID) but never produces scancodes. The auxiliary (mouse) port
 * is reported absent.
 *
 * Ports (claimed one byte each, so 0x61 — port B of the PIT/speaker — stays free):
 *   0x60  data: read the output buffer; write a keyboard command or a controller-command parameter
 *   0x64  read: status register; write: controller command
 *
 * The controller runs commands instantly, so the input buffer is never full. Bytes for the guest go
 * through a small FIFO whose head is the output buffer (the real 8042 has one byte; a keyboard
 * reply such as reset's ACK+BAT would arrive as two successive buffer fills, which is what the FIFO
 * models). IRQ1 is edge-triggered at the PIC: it is pulsed (1 then 0) on every rising edge of
 * "output buffer full AND command byte bit 0 (INT)", including each refill from the FIFO.
 *
 * Power-on state (powerOn): command byte 0x65, output port 0x03, keyboard enabled in scancode set 2,
 * everything else zero.
 */
import type { Device, DeviceContext, Space } from "./device.ts";
import { defineLayout } from "./state.ts";

export const I8042_PORTS = { DATA: 0x60, STATUS: 0x64 } as const;
export const I8042_IRQ = 1;

/** Status register (read 0x64). */
export const STATUS = {
  OBF: 1 << 0,        // output buffer full: a byte is waiting at 0x60
  IBF: 1 << 1,        // input buffer full: never (commands complete instantly)
  SYS: 1 << 2,        // system flag, mirrors command byte bit 2
  A2: 1 << 3,         // last write was to 0x64 (command) rather than 0x60 (data)
  UNLOCKED: 1 << 4,   // keyboard not inhibited by the keylock: always 1
  AUX_OBF: 1 << 5,    // the output byte came from the aux port: never
  TIMEOUT: 1 << 6,
  PARITY: 1 << 7,
} as const;

/** Controller command byte (internal RAM byte 0; read with 0x20, write with 0x60). */
export const CMD_BYTE = {
  INT: 1 << 0,        // IRQ1 on keyboard output buffer full
  INT2: 1 << 1,       // IRQ12 on aux output buffer full
  SYS: 1 << 2,        // system flag
  KBD_DIS: 1 << 4,    // keyboard interface disabled (clock held low)
  AUX_DIS: 1 << 5,    // aux interface disabled
  XLATE: 1 << 6,      // translate set-2 scancodes to set 1
  /** Power-on value: INT, SYS, AUX_DIS, XLATE — what PC firmware usually leaves behind. */
  RESET_VALUE: 0x65,
} as const;

/** Output port (read with 0xD0, write with 0xD1). */
export const OUT_PORT = {
  RESET_N: 1 << 0,    // system reset, active low: writing 0 resets the machine
  A20: 1 << 1,        // A20 gate (read back only; A20 is always on)
  /** Power-on value. */
  RESET_VALUE: 0x03,
} as const;

/** Controller commands (write 0x64). */
export const CTRL_CMD = {
  READ_RAM: 0x20,       // 0x20..0x3F: read internal RAM byte (cmd & 0x1F); 0x20 = command byte
  WRITE_RAM: 0x60,      // 0x60..0x7F: next data byte goes to RAM byte (cmd & 0x1F)
  AUX_DISABLE: 0xa7,
  AUX_ENABLE: 0xa8,
  AUX_TEST: 0xa9,       // aux interface test: we answer 0x02 ("clock line stuck high": nothing there)
  SELF_TEST: 0xaa,      // → 0x55
  KBD_TEST: 0xab,       // keyboard interface test → 0x00
  KBD_DISABLE: 0xad,
  KBD_ENABLE: 0xae,
  READ_OUT: 0xd0,
  WRITE_OUT: 0xd1,      // next data byte → output port
  WRITE_KBD_OB: 0xd2,   // next data byte appears in the output buffer as if from the keyboard
  WRITE_AUX_OB: 0xd3,   // aux loopback: aux absent, the data byte is dropped
  WRITE_AUX: 0xd4,      // to the aux device: absent, the data byte is dropped
  PULSE_BASE: 0xf0,     // 0xF0..0xFF: pulse output lines whose bit (3:0) is 0; bit 0 = reset line
} as const;

/** Keyboard commands (write 0x60 with no controller command pending) and replies. */
export const KBD = {
  SET_LEDS: 0xed,       // + 1 parameter byte
  ECHO: 0xee,           // → 0xEE (no ACK)
  SCANCODE_SET: 0xf0,   // + 1 parameter byte; parameter 0 = query → ACK, current set
  GET_ID: 0xf2,         // → ACK, 0xAB, 0x83 (0x41 when the controller translates)
  SET_TYPEMATIC: 0xf3,  // + 1 parameter byte
  ENABLE: 0xf4,
  DISABLE: 0xf5,        // stop scanning and restore defaults
  SET_DEFAULT: 0xf6,
  RESEND: 0xfe,         // → the last byte the keyboard sent
  RESET: 0xff,          // → ACK, BAT OK (0xAA)
  ACK: 0xfa,
  BAT_OK: 0xaa,
  ID_1: 0xab,
  ID_2_RAW: 0x83,
  ID_2_XLATE: 0x41,
} as const;

/** Replies of controller self-tests. */
const SELF_TEST_OK = 0x55;
const KBD_TEST_OK = 0x00;
const AUX_TEST_ABSENT = 0x02;

const FIFO_SIZE = 16;
/** Scancode set of the keyboard at power-on and after F5/F6/FF restore its defaults. */
const KBD_DEFAULT_SET = 2;

export const i8042Layout = defineLayout("i8042", 2, {
  /** Internal RAM (32 bytes); byte 0 is the command byte. */
  ram: { type: "u8", count: 32 },
  /** Output port (0xD0/0xD1). */
  outPort: "u8",
  /** Controller command awaiting its data byte at 0x60 (0 = none). */
  pendingCmd: "u8",
  /** Keyboard command awaiting its parameter byte (0 = none). */
  kbdPending: "u8",
  /** Keyboard scanning enabled (1) or disabled by F5 (0). */
  kbdEnabled: "u8",
  /** Keyboard scancode set (1-3). */
  scanSet: "u8",
  /** Last byte the keyboard sent (for RESEND). */
  kbdLast: "u8",
  /** 1 if the last write went to 0x64. */
  a2: "u8",
  /** Last byte read from 0x60 (re-read when the buffer is empty). */
  lastData: "u8",
  /** Level of "OBF && INT" at the last update, for edge detection. */
  irqLevel: "u8",
  fifo: { type: "u8", count: FIFO_SIZE },
  head: "u8",
  count: "u8",
});

export interface I8042Device extends Device {
  /** Bytes waiting in the output FIFO, oldest first (diagnostics and tests). */
  pending(): number[];
}

export function createI8042(ctx: DeviceContext, _opts: Record<string, never> = {}): I8042Device {
  const { s, lock } = ctx.arena.alloc(i8042Layout);
  const { platform } = ctx;

  const cmdByte = (): number => s.ram[0]!;
  const setCmdByte = (v: number): void => { s.ram[0] = v & 0xff; };

  const updateIrq = (): void => {
    const level = s.count > 0 && (cmdByte() & CMD_BYTE.INT) !== 0 ? 1 : 0;
    if (level && !s.irqLevel) {
      platform.irqLine(I8042_IRQ, 1);
      platform.irqLine(I8042_IRQ, 0);
    }
    s.irqLevel = level;
  };

  const push = (b: number): void => {
    if (s.count >= FIFO_SIZE) return; // overrun: drop (a real keyboard would send 0x00/0xFF)
    s.fifo[(s.head + s.count) % FIFO_SIZE] = b & 0xff;
    s.count = s.count + 1;
  };
  const kbdSend = (...bytes: number[]): void => {
    for (const b of bytes) { push(b); s.kbdLast = b; }
  };

  const pop = (): number => {
    if (s.count === 0) return s.lastData;
    const b = s.fifo[s.head]!;
    s.head = (s.head + 1) % FIFO_SIZE;
    s.count = s.count - 1;
    s.lastData = b;
    s.irqLevel = 0; // OBF fell; a refill from the FIFO is a new edge
    return b;
  };

  const status = (): number =>
    (s.count > 0 ? STATUS.OBF : 0) | (cmdByte() & CMD_BYTE.SYS ? STATUS.SYS : 0) | (s.a2 ? STATUS.A2 : 0) | STATUS.UNLOCKED;

  const reset = (why: string): void => platform.requestExit(0, why);

  const controllerCommand = (c: number): void => {
    s.pendingCmd = 0;
    if (c >= CTRL_CMD.READ_RAM && c < CTRL_CMD.READ_RAM + 0x20) {
      const i = c & 0x1f;
      push(i === 0 ? cmdByte() : s.ram[i]!);
      return;
    }
    if (c >= CTRL_CMD.WRITE_RAM && c < CTRL_CMD.WRITE_RAM + 0x20) { s.pendingCmd = c; return; }
    if (c >= CTRL_CMD.PULSE_BASE) {
      if ((c & OUT_PORT.RESET_N) === 0) reset("reset via i8042");
      return;
    }
    switch (c) {
      case CTRL_CMD.AUX_DISABLE: setCmdByte(cmdByte() | CMD_BYTE.AUX_DIS); return;
      case CTRL_CMD.AUX_ENABLE: setCmdByte(cmdByte() & ~CMD_BYTE.AUX_DIS); return;
      case CTRL_CMD.AUX_TEST: push(AUX_TEST_ABSENT); return;
      case CTRL_CMD.SELF_TEST: setCmdByte(cmdByte() | CMD_BYTE.SYS); push(SELF_TEST_OK); return;
      case CTRL_CMD.KBD_TEST: push(KBD_TEST_OK); return;
      case CTRL_CMD.KBD_DISABLE: setCmdByte(cmdByte() | CMD_BYTE.KBD_DIS); return;
      case CTRL_CMD.KBD_ENABLE: setCmdByte(cmdByte() & ~CMD_BYTE.KBD_DIS); return;
      case CTRL_CMD.READ_OUT: push(s.outPort); return;
      case CTRL_CMD.WRITE_OUT:
      case CTRL_CMD.WRITE_KBD_OB:
      case CTRL_CMD.WRITE_AUX_OB:
      case CTRL_CMD.WRITE_AUX:
        s.pendingCmd = c;
        return;
      default:
        platform.log(`i8042: unsupported controller command 0x${c.toString(16)} ignored`);
    }
  };

  const controllerData = (c: number, v: number): void => {
    s.pendingCmd = 0;
    if (c >= CTRL_CMD.WRITE_RAM && c < CTRL_CMD.WRITE_RAM + 0x20) {
      const i = c & 0x1f;
      if (i === 0) setCmdByte(v); else s.ram[i] = v;
      return;
    }
    switch (c) {
      case CTRL_CMD.WRITE_OUT:
        s.outPort = v;
        if ((v & OUT_PORT.RESET_N) === 0) reset("reset via i8042");
        return;
      case CTRL_CMD.WRITE_KBD_OB: push(v); return;
      default: return; // aux absent: D3/D4 data dropped
    }
  };

  const keyboardByte = (v: number): void => {
    const param = s.kbdPending;
    if (param) {
      s.kbdPending = 0;
      if (param === KBD.SCANCODE_SET) {
        if (v === 0) { kbdSend(KBD.ACK, s.scanSet); return; }
        if (v >= 1 && v <= 3) s.scanSet = v;
      }
      kbdSend(KBD.ACK);
      return;
    }
    switch (v) {
      case KBD.SET_LEDS:
      case KBD.SCANCODE_SET:
      case KBD.SET_TYPEMATIC:
        s.kbdPending = v;
        kbdSend(KBD.ACK);
        return;
      case KBD.ECHO: kbdSend(KBD.ECHO); return;
      case KBD.GET_ID:
        kbdSend(KBD.ACK, KBD.ID_1, cmdByte() & CMD_BYTE.XLATE ? KBD.ID_2_XLATE : KBD.ID_2_RAW);
        return;
      case KBD.ENABLE: s.kbdEnabled = 1; kbdSend(KBD.ACK); return;
      case KBD.DISABLE: s.kbdEnabled = 0; s.scanSet = KBD_DEFAULT_SET; kbdSend(KBD.ACK); return;
      case KBD.SET_DEFAULT: s.scanSet = KBD_DEFAULT_SET; kbdSend(KBD.ACK); return;
      case KBD.RESEND: push(s.kbdLast); return;
      case KBD.RESET:
        s.kbdEnabled = 1; s.scanSet = KBD_DEFAULT_SET;
        kbdSend(KBD.ACK, KBD.BAT_OK);
        return;
      default:
        kbdSend(KBD.ACK);
    }
  };

  const ranges = [
    { space: "pio" as Space, base: I8042_PORTS.DATA, size: 1 },
    { space: "pio" as Space, base: I8042_PORTS.STATUS, size: 1 },
  ];

  return {
    name: "i8042",
    ranges,
    lock,
    read(_space, base) {
      if (base === I8042_PORTS.STATUS) return status();
      const b = pop();
      updateIrq();
      return b;
    },
    write(_space, base, _offset, _size, value) {
      const v = value & 0xff;
      if (base === I8042_PORTS.STATUS) {
        s.a2 = 1;
        controllerCommand(v);
      } else {
        s.a2 = 0;
        const c = s.pendingCmd;
        if (c) controllerData(c, v); else keyboardByte(v);
      }
      updateIrq();
    },
    powerOn() {
      s.ram.fill(0);
      s.ram[0] = CMD_BYTE.RESET_VALUE;
      s.outPort = OUT_PORT.RESET_VALUE;
      s.pendingCmd = 0;
      s.kbdPending = 0;
      s.kbdEnabled = 1;
      s.scanSet = KBD_DEFAULT_SET;
      s.kbdLast = 0;
      s.a2 = 0;
      s.lastData = 0;
      s.irqLevel = 0;
      s.fifo.fill(0);
      s.head = 0;
      s.count = 0;
    },
    pending() {
      return lock.with(() => Array.from({ length: s.count }, (_, i) => s.fifo[(s.head + i) % FIFO_SIZE]!));
    },
  };
}
