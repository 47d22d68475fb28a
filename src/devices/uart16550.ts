/**
 * NS16550A UART (the PC's COM ports), after the National/TI PC16550D datasheet.
 *
 * All mutable state lives in the shared state block, so whichever thread traps (a vCPU) or polls (the
 * I/O Worker) runs the same device. The bus calls read/write with the device lock held; the I/O
 * Worker's poll handlers take it themselves.
 *
 * Output: a THR write appends to the TX ring and is flushed at once with a never-blocking write. What
 * the backend cannot take (EAGAIN) stays in the ring — LSR.THRE/TEMT read clear, so the guest's driver
 * waits — and the I/O Worker flushes it when the fd turns writable, then reports THRE and interrupts.
 * The ring is larger than the 16-byte FIFO so a driver that writes without waiting for THRE (Linux's
 * console gives up waiting after ~10 ms) still loses nothing short of TX_RING bytes of backlog.
 * With no backend, or no client on a tcp/unix listener, output is dropped.
 *
 * Input: the I/O Worker reads only as many bytes as fit in the RX FIFO, so unread bytes wait in the
 * kernel and nothing is lost. When the FIFO is full (or the UART is in loopback) it stops watching the
 * fd ("parked"); when the guest empties the FIFO the device calls platform.wakeIo() to resume.
 *
 * Interrupt line: after every register access and every I/O event the level (an interrupt pending AND
 * MCR.OUT2, the PC's IRQ gate, and not in loopback, where OUT2 is cut off from the pin) is computed and
 * platform.irqLine() is called only when it changed.
 */
import {
  Chardev, CHARDEV_STATE, GONE, POLLNVAL, type ChardevHandle,
} from "../chardev/index.ts";
import { POLLERR, POLLIN, POLLOUT } from "../vmm/index.ts";
import type { AccessSize, Device, DeviceContext, IoRange, Platform, PollSource, Space } from "./device.ts";
import { defineLayout, type DeviceLock, type StateOf } from "./state.ts";

/** Register offsets from the base port (PC16550D, "Register Addresses"). */
export const REG = {
  RBR: 0, // Receiver Buffer Register        (read,  DLAB=0)
  THR: 0, // Transmitter Holding Register    (write, DLAB=0)
  DLL: 0, // Divisor Latch, low byte         (DLAB=1)
  IER: 1, // Interrupt Enable Register       (DLAB=0)
  DLM: 1, // Divisor Latch, high byte        (DLAB=1)
  IIR: 2, // Interrupt Identification (read; regardless of DLAB)
  FCR: 2, // FIFO Control Register    (write; regardless of DLAB)
  LCR: 3, // Line Control Register
  MCR: 4, // Modem Control Register
  LSR: 5, // Line Status Register
  MSR: 6, // Modem Status Register
  SCR: 7, // Scratch Register
} as const;

/** Number of I/O ports a UART decodes. */
export const UART_PORTS = 8;

/** IER bits. */
export const IER = {
  ERBFI: 0x01, // received data available (and character timeout)
  ETBEI: 0x02, // transmitter holding register empty
  ELSI: 0x04,  // receiver line status
  EDSSI: 0x08, // modem status
  MASK: 0x0f,  // bits 4-7 always read 0 on a 16550A
} as const;

/** IIR values: bit 0 = no interrupt pending, bits 3:1 the source, bits 7:6 set when FIFOs are on. */
export const IIR = {
  NONE: 0x01, // no interrupt pending
  RLS: 0x06,  // priority 1: receiver line status (OE/PE/FE/BI) — cleared by reading LSR
  RDA: 0x04,  // priority 2: received data at/over the trigger level — cleared by reading RBR below it
  CTI: 0x0c,  // priority 2: character timeout (FIFO mode) — cleared by reading RBR
  THRE: 0x02, // priority 3: THR empty — cleared by reading IIR (when it is the source) or writing THR
  MSR: 0x00,  // priority 4: modem status change — cleared by reading MSR
  FIFO: 0xc0, // FIFOs enabled (what Linux probes for a 16550A)
} as const;

/** FCR bits (write-only; only programmed while bit 0 is written as 1). */
export const FCR = {
  ENABLE: 0x01,   // enable both FIFOs; changing it clears them
  RX_RESET: 0x02, // clear the RX FIFO (self-clearing)
  TX_RESET: 0x04, // clear the TX FIFO (self-clearing)
  DMA: 0x08,      // DMA mode select (no effect here)
  TRIGGER: 0xc0,  // RX trigger level, index into RX_TRIGGER
} as const;

/** RX FIFO trigger levels selected by FCR bits 7:6. */
export const RX_TRIGGER = [1, 4, 8, 14] as const;

/** LCR bits (word length, stop bits and parity are stored but mean nothing to a virtual line). */
export const LCR = { DLAB: 0x80, BREAK: 0x40 } as const;

/** MCR bits. */
export const MCR = {
  DTR: 0x01, RTS: 0x02,
  OUT1: 0x04,
  OUT2: 0x08, // PC convention: gates the UART's interrupt onto the IRQ line
  LOOP: 0x10, // local loopback: TX feeds RX, MCR outputs feed MSR inputs
  MASK: 0x1f, // bits 5-7 read 0
} as const;

/** LSR bits. */
export const LSR = {
  DR: 0x01, OE: 0x02, PE: 0x04, FE: 0x08, BI: 0x10,
  THRE: 0x20, // TX FIFO/holding register empty
  TEMT: 0x40, // transmitter completely empty
  RXFE: 0x80, // error in RX FIFO (never: a virtual line has no parity/framing errors)
  ERRORS: 0x1e,
} as const;

/** MSR bits: deltas in 3:0 (cleared by reading MSR), line states in 7:4. */
export const MSR = {
  DCTS: 0x01, DDSR: 0x02, TERI: 0x04, DDCD: 0x08,
  CTS: 0x10, DSR: 0x20, RI: 0x40, DCD: 0x80,
  DELTAS: 0x0f,
} as const;

/** 16550A FIFO depth. */
export const FIFO_SIZE = 16;
/** Host-side TX backlog held while the backend is slow (THRE stays clear while it is non-empty). */
export const TX_RING = 4096;

/** The standard PC COM ports (base port, ISA IRQ = GSI). */
export const COM_PORTS = [
  { name: "com1", base: 0x3f8, irq: 4 },
  { name: "com2", base: 0x2f8, irq: 3 },
  { name: "com3", base: 0x3e8, irq: 4 },
  { name: "com4", base: 0x2e8, irq: 3 },
] as const;

const SPEC = {
  ier: "u8", lcr: "u8", mcr: "u8", scr: "u8", dll: "u8", dlm: "u8",
  /** FCR as last programmed: ENABLE | DMA | TRIGGER bits. */
  fcr: "u8",
  /** Sticky LSR error bits (OE...), cleared by reading LSR. */
  lsrErr: "u8",
  /** MSR delta bits 3:0, cleared by reading MSR. */
  msrDelta: "u8",
  /** Modem input lines (MSR 7:4) as last seen, to derive the deltas. */
  msrLines: "u8",
  /** A THRE interrupt is pending (set when the transmitter empties or ETBEI is turned on while empty). */
  thrPending: "u8",
  /** Level last driven on the IRQ line. */
  irqLevel: "u8",
  /** The I/O Worker is not watching the input fd (RX FIFO full or loopback); wake it when that ends. */
  rxParked: "u8",
  /** The I/O Worker has (or was asked to add) a POLLOUT watch for the TX backlog. */
  txWaiting: "u8",
  rxHead: "u8", rxCount: "u8",
  rxBuf: { type: "u8", count: FIFO_SIZE },
  txHead: "u16", txCount: "u16",
  txBuf: { type: "u8", count: TX_RING },
  /** Bytes dropped because the TX backlog was full (diagnostics). */
  txDropped: "u32",
  ...CHARDEV_STATE,
} as const;

/** A UART's state layout (one per COM port; the name keeps the snapshot directory readable). */
export function uartLayout(name: string) {
  return defineLayout(`uart16550:${name}`, 1, SPEC);
}

type UartState = StateOf<typeof SPEC>;

export interface UartOptions {
  name: string;
  base: number;
  gsi: number;
  /** The opened backend; undefined = no backend (output dropped, no input, modem lines present). */
  chardev: ChardevHandle | undefined;
}

export interface UartDevice extends Device {
  readonly lock: DeviceLock;
  /** Thread-side backend (its shared connection state is `chardev.st`), for closeChardev at exit. */
  readonly chardev: Chardev | undefined;
}

export function createUart(ctx: DeviceContext, opts: UartOptions): UartDevice {
  return new Uart16550(ctx, opts);
}

class Uart16550 implements UartDevice {
  readonly name: string;
  readonly ranges: readonly IoRange[];
  readonly lock: DeviceLock;
  readonly chardev: Chardev | undefined;
  private readonly s: UartState;
  private readonly platform: Platform;
  private readonly gsi: number;
  /** Per-thread scratch for reads from the backend (holds nothing between calls). */
  private readonly scratch = new Uint8Array(FIFO_SIZE);

  constructor(ctx: DeviceContext, opts: UartOptions) {
    this.name = opts.name;
    this.ranges = [{ space: "pio", base: opts.base, size: UART_PORTS }];
    const block = ctx.arena.alloc(uartLayout(opts.name));
    this.s = block.s;
    this.lock = block.lock;
    this.platform = ctx.platform;
    this.gsi = opts.gsi;
    this.chardev = opts.chardev ? new Chardev(opts.chardev, this.s) : undefined;
  }

  // ---- guest accesses (device lock held by the bus) ----

  read(_space: Space, _base: number, offset: number, size: AccessSize): number {
    let v = 0;
    for (let i = 0; i < size; i++) v |= this.readReg((offset + i) & 7) << (8 * i);
    this.settle();
    return v >>> 0;
  }

  write(_space: Space, _base: number, offset: number, size: AccessSize, value: number): void {
    for (let i = 0; i < size; i++) this.writeReg((offset + i) & 7, (value >>> (8 * i)) & 0xff);
    this.settle();
  }

  private readReg(off: number): number {
    const s = this.s;
    const dlab = (s.lcr & LCR.DLAB) !== 0;
    switch (off) {
      case REG.RBR: return dlab ? s.dll : this.popRx();
      case REG.IER: return dlab ? s.dlm : s.ier;
      case REG.IIR: {
        const id = this.source();
        // Reading IIR clears a THRE interrupt, but only when THRE is what it reports.
        if (id === IIR.THRE) s.thrPending = 0;
        return id | (s.fcr & FCR.ENABLE ? IIR.FIFO : 0);
      }
      case REG.LCR: return s.lcr;
      case REG.MCR: return s.mcr;
      case REG.LSR: {
        const v = (s.rxCount > 0 ? LSR.DR : 0) | s.lsrErr | (s.txCount === 0 ? LSR.THRE | LSR.TEMT : 0);
        s.lsrErr = 0;
        return v;
      }
      case REG.MSR: {
        this.updateModem();
        const v = s.msrLines | s.msrDelta;
        s.msrDelta = 0;
        return v;
      }
      default: return s.scr;
    }
  }

  private writeReg(off: number, v: number): void {
    const s = this.s;
    const dlab = (s.lcr & LCR.DLAB) !== 0;
    switch (off) {
      case REG.THR:
        if (dlab) s.dll = v;
        else this.transmit(v);
        return;
      case REG.IER: {
        if (dlab) { s.dlm = v; return; }
        const old = s.ier;
        s.ier = v & IER.MASK;
        // A 16550 raises THRE when ETBEI is turned on while the transmitter is empty (Linux's
        // UART_BUG_THRE probe toggles IER and expects the interrupt back each time).
        if (!(s.ier & IER.ETBEI)) s.thrPending = 0;
        else if (!(old & IER.ETBEI) && s.txCount === 0) s.thrPending = 1;
        return;
      }
      case REG.FCR: this.writeFcr(v); return;
      case REG.LCR: s.lcr = v; return;
      case REG.MCR: s.mcr = v & MCR.MASK; return;
      case REG.LSR: return; // factory test only; writes ignored
      case REG.MSR: return; // read-only
      default: s.scr = v; return;
    }
  }

  private writeFcr(v: number): void {
    const s = this.s;
    const wasOn = (s.fcr & FCR.ENABLE) !== 0;
    if (!(v & FCR.ENABLE)) {
      // FIFOs off: other bits are not programmed; switching off clears the FIFO.
      if (wasOn) this.clearRx();
      s.fcr = 0;
      return;
    }
    if (!wasOn || (v & FCR.RX_RESET)) this.clearRx();
    // TX_RESET discards nothing: in this model a byte leaves the FIFO for the line the moment it is
    // written; the TX ring only holds bytes the host backend has not accepted yet ("on the wire").
    // Linux resets the FIFOs on every port open, and console output queued then must not vanish.
    s.fcr = v & (FCR.ENABLE | FCR.DMA | FCR.TRIGGER);
  }

  // ---- receive side ----

  private fifoOn(): boolean { return (this.s.fcr & FCR.ENABLE) !== 0; }
  /** RX capacity: the 16-byte FIFO, or the single holding register with FIFOs off. */
  private rxCap(): number { return this.fifoOn() ? FIFO_SIZE : 1; }
  private trigger(): number { return this.fifoOn() ? RX_TRIGGER[this.s.fcr >> 6]! : 1; }

  private clearRx(): void {
    this.s.rxCount = 0;
    this.s.rxHead = 0;
  }

  private popRx(): number {
    const s = this.s;
    if (s.rxCount === 0) return 0;
    const v = s.rxBuf[s.rxHead]!;
    s.rxHead = (s.rxHead + 1) % FIFO_SIZE;
    s.rxCount = s.rxCount - 1;
    return v;
  }

  /** Push received bytes; returns false (and flags an overrun) for a byte that does not fit. */
  private pushRx(b: number): boolean {
    const s = this.s;
    if (s.rxCount >= this.rxCap()) {
      s.lsrErr |= LSR.OE;
      return false;
    }
    s.rxBuf[(s.rxHead + s.rxCount) % FIFO_SIZE] = b;
    s.rxCount = s.rxCount + 1;
    return true;
  }

  private loopback(): boolean { return (this.s.mcr & MCR.LOOP) !== 0; }

  // ---- transmit side ----

  private transmit(b: number): void {
    const s = this.s;
    s.thrPending = 0; // writing THR clears the THRE interrupt
    if (this.loopback()) {
      // Loopback: the byte arrives in our own receiver (overrun if full: Linux's size_fifo counts on it).
      this.pushRx(b);
    } else if (this.chardev && this.chardev.outFd() >= 0) {
      if (s.txCount < TX_RING) {
        s.txBuf[(s.txHead + s.txCount) % TX_RING] = b;
        s.txCount = s.txCount + 1;
      } else {
        s.txDropped = s.txDropped + 1;
      }
      // With a backlog the I/O Worker is already waiting for POLLOUT and will write it all in one go;
      // trying here too would only cost a failing syscall per byte.
      if (!s.txWaiting) this.flushTx();
      return;
    }
    // Dropped or looped back: the transmitter is empty again at once.
    if (s.txCount === 0 && s.ier & IER.ETBEI) s.thrPending = 1;
  }

  /** Hand the TX backlog to the backend without blocking; ask the I/O Worker to finish if it can't. */
  private flushTx(): void {
    const s = this.s;
    const cd = this.chardev;
    if (s.txCount === 0) return;
    while (s.txCount > 0) {
      const run = Math.min(s.txCount, TX_RING - s.txHead);
      const n = cd ? cd.write(s.txBuf.subarray(s.txHead, s.txHead + run)) : GONE;
      if (n === GONE) {
        // Nowhere to send (no client any more, or the output failed): drop the backlog.
        s.txCount = 0;
        s.txHead = 0;
        s.txWaiting = 0;
        this.platform.wakeIo(); // let the I/O Worker drop watches on a closed client
        break;
      }
      if (n === 0) break;
      s.txHead = (s.txHead + n) % TX_RING;
      s.txCount = s.txCount - n;
    }
    if (s.txCount === 0) {
      s.txHead = 0;
      if (s.ier & IER.ETBEI) s.thrPending = 1; // the transmitter just became empty
    } else if (!s.txWaiting) {
      s.txWaiting = 1;
      this.platform.wakeIo();
    }
  }

  // ---- modem lines, interrupts ----

  /** Recompute the modem input lines and accumulate the MSR deltas. */
  private updateModem(): void {
    const s = this.s;
    let lines: number;
    if (this.loopback()) {
      // Loopback wiring: RTS→CTS, DTR→DSR, OUT1→RI, OUT2→DCD.
      const m = s.mcr;
      lines = (m & MCR.RTS ? MSR.CTS : 0) | (m & MCR.DTR ? MSR.DSR : 0)
        | (m & MCR.OUT1 ? MSR.RI : 0) | (m & MCR.OUT2 ? MSR.DCD : 0);
    } else {
      // A connected backend looks like a modem with carrier: DCD, DSR and CTS up. tcp/unix only
      // while a client is connected, so a getty without CLOCAL waits for one.
      const up = !this.chardev || this.chardev.connected;
      lines = up ? MSR.DCD | MSR.DSR | MSR.CTS : 0;
    }
    const ch = lines ^ s.msrLines;
    if (ch) {
      let d = 0;
      if (ch & MSR.CTS) d |= MSR.DCTS;
      if (ch & MSR.DSR) d |= MSR.DDSR;
      if (ch & MSR.DCD) d |= MSR.DDCD;
      if (ch & MSR.RI && !(lines & MSR.RI)) d |= MSR.TERI; // trailing edge of RI
      s.msrDelta = s.msrDelta | d;
      s.msrLines = lines;
    }
  }

  /**
   * The highest-priority pending interrupt, as an IIR code.
   *
   * Character timeout: a real 16550 reports CTI when the FIFO holds fewer bytes than the trigger level
   * and nothing has moved for 4 character times. We have no line timing and want no timers, so CTI is
   * reported at once whenever 0 < count < trigger: the guest reads what is there without delay, and
   * since the I/O Worker pushes whatever the host had in one go, waiting would only add latency.
   */
  private source(): number {
    const s = this.s;
    const ier = s.ier;
    if (ier & IER.ELSI && s.lsrErr & LSR.ERRORS) return IIR.RLS;
    if (ier & IER.ERBFI && s.rxCount > 0) return s.rxCount >= this.trigger() ? IIR.RDA : IIR.CTI;
    if (ier & IER.ETBEI && s.thrPending) return IIR.THRE;
    if (ier & IER.EDSSI && s.msrDelta & MSR.DELTAS) return IIR.MSR;
    return IIR.NONE;
  }

  /** After any access or I/O event: modem lines, RX watch, interrupt line. Lock held. */
  private settle(): void {
    const s = this.s;
    this.updateModem();
    // Resume input when the guest has emptied the FIFO (and left loopback) after the worker parked it.
    if (s.rxParked && s.rxCount === 0 && !this.loopback()) {
      s.rxParked = 0;
      this.platform.wakeIo();
    }
    const level = this.source() !== IIR.NONE && (s.mcr & (MCR.OUT2 | MCR.LOOP)) === MCR.OUT2 ? 1 : 0;
    if (level !== s.irqLevel) {
      s.irqLevel = level;
      this.platform.irqLine(this.gsi, level);
    }
  }

  // ---- I/O Worker side ----

  /**
   * What the I/O Worker must watch now, from the shared state: the listening socket (always), the
   * input fd while the RX FIFO has room and we are not in loopback, the output fd while there is a TX
   * backlog. A handler returns false when its reason to watch is gone; anything that creates a new
   * reason calls platform.wakeIo(), and the Worker then asks again.
   */
  pollSources(): PollSource[] {
    const cd = this.chardev;
    if (!cd) return [];
    const out: PollSource[] = [];
    this.lock.with(() => {
      const s = this.s;
      const lfd = cd.listenFd();
      if (lfd >= 0) out.push({ fd: lfd, events: POLLIN, ready: (r) => this.onListen(r) });
      const ifd = cd.inFd();
      if (ifd >= 0) {
        if (!this.loopback() && s.rxCount < this.rxCap()) {
          s.rxParked = 0;
          out.push({ fd: ifd, events: POLLIN, ready: (r) => this.onInput(ifd, r) });
        } else {
          s.rxParked = 1;
        }
      }
      const ofd = cd.outFd();
      if (ofd >= 0 && s.txCount > 0) {
        s.txWaiting = 1;
        out.push({ fd: ofd, events: POLLOUT, ready: (r) => this.onOutput(ofd, r) });
      } else {
        s.txWaiting = 0;
      }
    });
    return out;
  }

  private onListen(revents: number): boolean {
    const cd = this.chardev!;
    this.lock.acquire();
    try {
      if (revents & (POLLNVAL | POLLERR)) {
        cd.listenFailed(); // closed under us (shutdown) or broken: stop watching it for good
        return false;
      }
      if (cd.acceptPending()) {
        this.settle(); // carrier up → MSR deltas (→ modem status interrupt if enabled)
        this.platform.wakeIo(); // watch the new client
      }
    } finally {
      this.lock.release();
    }
    return true;
  }

  private onInput(fd: number, revents: number): boolean {
    void revents;
    const cd = this.chardev!;
    const s = this.s;
    this.lock.acquire();
    try {
      if (cd.inFd() !== fd) return false; // a client that has gone
      const room = this.loopback() ? 0 : this.rxCap() - s.rxCount;
      if (room <= 0) {
        s.rxParked = 1;
        return false;
      }
      // Read only what fits: the rest stays in the kernel until the guest makes room.
      const n = cd.read(this.scratch.subarray(0, room));
      if (n === GONE) {
        // A tcp/unix client hung up: its unsent output goes too. (stdin at EOF: output carries on.)
        if (cd.listening) this.dropTx();
        this.settle();
        return false;
      }
      for (let i = 0; i < n; i++) this.pushRx(this.scratch[i]!);
      this.settle();
      if (s.rxCount >= this.rxCap()) {
        s.rxParked = 1;
        return false;
      }
      return true;
    } finally {
      this.lock.release();
    }
  }

  private onOutput(fd: number, revents: number): boolean {
    void revents;
    const cd = this.chardev!;
    const s = this.s;
    this.lock.acquire();
    try {
      if (cd.outFd() !== fd || s.txCount === 0) {
        s.txWaiting = 0;
        return false;
      }
      this.flushTx();
      this.settle(); // THRE (and its interrupt) once the backlog is gone
      if (s.txCount === 0) {
        s.txWaiting = 0;
        return false;
      }
      return true;
    } finally {
      this.lock.release();
    }
  }

  /** The client went away: what it had not taken is dropped. */
  private dropTx(): void {
    const s = this.s;
    const had = s.txCount > 0;
    s.txCount = 0;
    s.txHead = 0;
    s.txWaiting = 0;
    if (had && s.ier & IER.ETBEI) s.thrPending = 1;
  }
}
