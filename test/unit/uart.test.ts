/**
 * 16550A UART: driven the way Linux's 8250 driver drives it (autoconfig probe, startup, interrupt
 * handler), against real host fds (file, FIFO, pty, tcp). Every test builds TWO device instances on
 * one SharedArrayBuffer — a "vCPU" one taking register accesses through the bus and an "I/O" one
 * polled by a miniature I/O Worker — so any state kept in JS fields instead of the shared block
 * shows up as a failure.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { closeSync, constants as fsc, mkdtempSync, openSync, readFileSync, readSync, rmSync, writeSync } from "node:fs";
import { createServer, Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { spawnSync } from "node:child_process";
import { closeChardev, openChardev, type ChardevHandle } from "../../src/chardev/index.ts";
import { Bus } from "../../src/devices/bus.ts";
import type { DeviceContext, PollSource } from "../../src/devices/device.ts";
import { StateArena } from "../../src/devices/state.ts";
import {
  COM_PORTS, createUart, FCR, IER, IIR, LSR, MCR, MSR, REG, TX_RING, type UartDevice,
} from "../../src/devices/uart16550.ts";
import { GuestMemory } from "../../src/mem/guest-memory.ts";
import { host } from "../../src/vmm/index.ts";
import { RecordingPlatform } from "./fake-platform.ts";

const BASE = 0x3f8, GSI = 4;


/** A miniature I/O Worker with the real one's rules: re-collect on wake or when a handler returns false. */
class MiniIo {
  private sources: PollSource[] = [];
  private seenWakes = -1;
  constructor(private readonly dev: UartDevice, private readonly plat: RecordingPlatform) {}
  /** One poll round; returns how many sources fired. */
  pump(timeoutMs = 0): number {
    if (this.plat.wakes !== this.seenWakes) this.collect();
    if (this.sources.length === 0) return 0;
    const fds = new Int32Array(this.sources.map((s) => s.fd));
    const ev = new Int16Array(this.sources.map((s) => s.events));
    const rev = new Int16Array(this.sources.length);
    host.poll(fds, ev, rev, timeoutMs);
    let fired = 0, recollect = false;
    this.sources.forEach((s, i) => {
      if (!rev[i]) return;
      fired++;
      if (s.ready(rev[i]!) === false) recollect = true;
    });
    if (recollect) this.collect();
    return fired;
  }
  private collect(): void {
    this.seenWakes = this.plat.wakes;
    this.sources = this.dev.pollSources?.() ?? [];
  }
  get watching(): { fd: number; events: number }[] { return this.sources.map((s) => ({ fd: s.fd, events: s.events })); }
}

interface Rig {
  plat: RecordingPlatform;
  dev: UartDevice;
  io: MiniIo;
  inb(off: number): number;
  outb(off: number, v: number): void;
}

function rig(chardev?: ChardevHandle): Rig {
  const plat = new RecordingPlatform({ throwOnExit: true });
  const buf = new SharedArrayBuffer(64 * 1024);
  const mem = GuestMemory.fake(1 << 20);
  const mk = (role: "vcpu" | "io"): UartDevice => {
    const ctx: DeviceContext = { mem, arena: new StateArena(buf), platform: plat, role };
    return createUart(ctx, { name: "com1", base: BASE, gsi: GSI, chardev });
  };
  const dev = mk("vcpu");
  const ioDev = mk("io");
  const bus = new Bus();
  bus.register(dev);
  return {
    plat, dev, io: new MiniIo(ioDev, plat),
    inb: (off) => bus.read("pio", BASE + off, 1),
    outb: (off, v) => bus.write("pio", BASE + off, 1, v),
  };
}

/** Linux 8250 autoconfig(), the parts that decide the port type. Returns the detected type. */
function autoconfig(r: Rig): string {
  const { inb, outb } = r;
  // existence test through IER
  const scratch = inb(REG.IER);
  outb(REG.IER, 0);
  const scratch2 = inb(REG.IER) & 0x0f;
  outb(REG.IER, 0x0f);
  const scratch3 = inb(REG.IER) & 0x0f;
  outb(REG.IER, scratch);
  if (scratch2 !== 0 || scratch3 !== 0x0f) return "none";
  const saveMcr = inb(REG.MCR), saveLcr = inb(REG.LCR);
  // loopback MSR test: MCR = LOOP | OUT2 | RTS must read back DCD | CTS
  outb(REG.MCR, MCR.LOOP | 0x0a);
  const status1 = inb(REG.MSR) & 0xf0;
  outb(REG.MCR, saveMcr);
  if (status1 !== 0x90) return "none";
  outb(REG.LCR, 0xbf);
  outb(2, 0); // EFR on enhanced parts; FCR = 0 here
  outb(REG.LCR, 0);
  outb(REG.FCR, FCR.ENABLE);
  const type = inb(REG.IIR) >> 6;
  if (type !== 3) return ["8250", "unknown", "16550"][type]!;
  // autoconfig_16550a: EFR with DLAB (must read non-zero: it is IIR)
  outb(REG.LCR, 0x80);
  if (inb(2) === 0) return "16650V1";
  outb(REG.LCR, 0xbf);
  if (inb(2) === 0) return "16650";
  // NS SuperIO bank switch test
  outb(REG.LCR, 0);
  const m1 = inb(REG.MCR);
  outb(REG.LCR, 0xe0);
  let s2 = inb(2);
  if (!((s2 ^ m1) & MCR.LOOP)) {
    outb(REG.LCR, 0);
    outb(REG.MCR, m1 ^ MCR.LOOP);
    outb(REG.LCR, 0xe0);
    s2 = inb(2);
    outb(REG.LCR, 0);
    outb(REG.MCR, m1);
    if ((s2 ^ m1) & MCR.LOOP) return "NS16550A";
  }
  // TI16750: 64-byte FIFO bit only with DLAB
  outb(REG.LCR, 0);
  outb(REG.FCR, FCR.ENABLE | 0x20);
  const a = inb(REG.IIR) & 0xe0;
  outb(REG.FCR, FCR.ENABLE);
  outb(REG.LCR, 0x80);
  outb(REG.FCR, FCR.ENABLE | 0x20);
  const b = inb(REG.IIR) & 0xe0;
  outb(REG.FCR, FCR.ENABLE);
  outb(REG.LCR, 0);
  if (a === 0xc0 && b === 0xe0) return "16750";
  // XScale UUE bit
  const iersave = inb(REG.IER);
  outb(REG.IER, iersave | 0x40);
  if (inb(REG.IER) & 0x40) return "xscale";
  outb(REG.IER, iersave);
  outb(REG.LCR, saveLcr);
  outb(REG.FCR, FCR.ENABLE | FCR.RX_RESET | FCR.TX_RESET);
  outb(REG.FCR, 0);
  return "16550A";
}

/** Linux size_fifo(): count how many loopback bytes the receiver holds. */
function sizeFifo(r: Rig): number {
  const { inb, outb } = r;
  const oldFcr = 0, oldLcr = inb(REG.LCR), oldMcr = inb(REG.MCR);
  outb(REG.FCR, FCR.ENABLE | FCR.RX_RESET | FCR.TX_RESET);
  outb(REG.MCR, MCR.LOOP);
  outb(REG.LCR, 0x80);
  outb(REG.DLL, 1);
  outb(REG.DLM, 0);
  outb(REG.LCR, 0x03);
  for (let i = 0; i < 256; i++) outb(REG.THR, i);
  let count = 0;
  for (; inb(REG.LSR) & LSR.DR && count < 256; count++) expect(inb(REG.RBR)).toBe(count);
  outb(REG.FCR, oldFcr);
  outb(REG.MCR, oldMcr);
  outb(REG.LCR, oldLcr);
  return count;
}

/** A guest running Linux's 8250 interrupt paths. */
class Guest {
  ier = 0;
  rx: number[] = [];
  msrSeen: number[] = [];
  tx: number[] = [];
  txPos = 0;
  constructor(readonly r: Rig) {}

  /** serial8250_do_startup(), reduced: clear FIFOs, drain, THRE re-assert test, 8N1, OUT2, RX irqs. */
  startup(fcr = FCR.ENABLE | 0x80 /* trigger 8 */): { threBug: boolean } {
    const { inb, outb } = this.r;
    outb(REG.FCR, FCR.ENABLE);
    outb(REG.FCR, FCR.ENABLE | FCR.RX_RESET | FCR.TX_RESET);
    outb(REG.FCR, 0);
    inb(REG.LSR); inb(REG.RBR); inb(REG.IIR); inb(REG.MSR);
    outb(REG.LCR, 0x03);
    outb(REG.FCR, fcr);
    // UART_BUG_THRE test
    outb(REG.IER, IER.ETBEI);
    const iir1 = inb(REG.IIR);
    outb(REG.IER, 0);
    outb(REG.IER, IER.ETBEI);
    const iir = inb(REG.IIR);
    outb(REG.IER, 0);
    const lsr = inb(REG.LSR);
    const threBug = !(iir1 & IIR.NONE) && !!(lsr & LSR.TEMT) && !!(iir & IIR.NONE);
    expect(iir1 & 0x0f).toBe(IIR.THRE);
    outb(REG.MCR, MCR.DTR | MCR.RTS | MCR.OUT2);
    inb(REG.LSR); inb(REG.RBR); inb(REG.IIR); inb(REG.MSR);
    this.ier = IER.ELSI | IER.ERBFI;
    outb(REG.IER, this.ier);
    return { threBug };
  }

  /** serial8250_handle_irq(). Returns false if the UART had nothing pending. */
  handleIrq(): boolean {
    const { inb, outb } = this.r;
    const iir = inb(REG.IIR);
    if (iir & IIR.NONE) return false;
    let lsr = inb(REG.LSR);
    if (lsr & (LSR.DR | LSR.BI)) {
      for (let max = 256; lsr & LSR.DR && max > 0; max--) {
        this.rx.push(inb(REG.RBR));
        lsr = inb(REG.LSR);
      }
    }
    this.msrSeen.push(inb(REG.MSR));
    if (lsr & LSR.THRE && this.ier & IER.ETBEI) this.txChars();
    return true;
  }

  /** uart_write + start_tx. */
  write(bytes: ArrayLike<number>): void {
    for (let i = 0; i < bytes.length; i++) this.tx.push(bytes[i]!);
    if (!(this.ier & IER.ETBEI)) {
      this.ier |= IER.ETBEI;
      this.r.outb(REG.IER, this.ier);
    }
  }

  get txDone(): boolean { return this.txPos >= this.tx.length; }

  private txChars(): void {
    for (let n = 16; n > 0 && this.txPos < this.tx.length; n--) this.r.outb(REG.THR, this.tx[this.txPos++]!);
    if (this.txPos >= this.tx.length) {
      this.ier &= ~IER.ETBEI; // __stop_tx
      this.r.outb(REG.IER, this.ier);
    }
  }

  /** Service the interrupt while the line is up (what the CPU + PIC would do). */
  serviceIrqs(): number {
    let n = 0;
    while (this.r.plat.level && n < 10000) { this.handleIrq(); n++; }
    return n;
  }
}

const tmpDirs: string[] = [];
const handles: ChardevHandle[] = [];
function tmp(): string {
  const d = mkdtempSync(join(tmpdir(), "tsb-uart-"));
  tmpDirs.push(d);
  return d;
}
function open(spec: Parameters<typeof openChardev>[0]): ChardevHandle {
  const h = openChardev(spec, "com1");
  handles.push(h);
  return h;
}
afterEach(() => {
  for (const h of handles.splice(0)) closeChardev(h);
  for (const d of tmpDirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function bytes(n: number, seed = 1): Uint8Array {
  const b = new Uint8Array(n);
  let x = seed;
  for (let i = 0; i < n; i++) { x = (x * 1103515245 + 12345) >>> 0; b[i] = x >>> 16; }
  return b;
}

describe("registers (Linux 8250 probe)", () => {
  test("COM table is the PC standard", () => {
    expect(COM_PORTS.map((c) => [c.name, c.base, c.irq])).toEqual([
      ["com1", 0x3f8, 4], ["com2", 0x2f8, 3], ["com3", 0x3e8, 4], ["com4", 0x2e8, 3],
    ]);
  });

  test("power-on values", () => {
    const r = rig();
    expect(r.dev.ranges).toEqual([{ space: "pio", base: BASE, size: 8 }]);
    expect(r.inb(REG.IER)).toBe(0);
    expect(r.inb(REG.IIR)).toBe(IIR.NONE);
    expect(r.inb(REG.LCR)).toBe(0);
    expect(r.inb(REG.MCR)).toBe(0);
    expect(r.inb(REG.LSR)).toBe(LSR.THRE | LSR.TEMT);
    expect(r.plat.irqs).toEqual([]);
  });

  test("autoconfig detects a 16550A and size_fifo measures 16 bytes", () => {
    const r = rig();
    expect(autoconfig(r)).toBe("16550A");
    expect(sizeFifo(r)).toBe(16);
    // loopback overrun was flagged, and reading LSR cleared it
    expect(r.inb(REG.LSR) & LSR.OE).toBe(0);
    // the probe never drove the IRQ line (OUT2 off / loopback)
    expect(r.plat.irqs).toEqual([]);
  });

  test("scratch register and divisor latch", () => {
    const r = rig();
    for (const v of [0x00, 0x55, 0xaa, 0xff]) { r.outb(REG.SCR, v); expect(r.inb(REG.SCR)).toBe(v); }
    r.outb(REG.IER, 0x05);
    r.outb(REG.LCR, 0x83);
    r.outb(REG.DLL, 0x0c);
    r.outb(REG.DLM, 0x01);
    expect(r.inb(REG.DLL)).toBe(0x0c);
    expect(r.inb(REG.DLM)).toBe(0x01);
    expect(r.inb(REG.LCR)).toBe(0x83);
    r.outb(REG.LCR, 0x03);
    expect(r.inb(REG.IER)).toBe(0x05); // untouched by the DLM write
    expect(r.inb(REG.LCR)).toBe(0x03);
    r.outb(REG.IER, 0xff);
    expect(r.inb(REG.IER)).toBe(0x0f);
    r.outb(REG.MCR, 0xff);
    expect(r.inb(REG.MCR)).toBe(0x1f);
  });

  test("IIR FIFO bits follow FCR.ENABLE; trigger levels select RDA vs character timeout", () => {
    const r = rig();
    r.outb(REG.MCR, MCR.LOOP);
    r.outb(REG.IER, IER.ERBFI);
    expect(r.inb(REG.IIR)).toBe(IIR.NONE);
    for (const [bits, level] of [[0x00, 1], [0x40, 4], [0x80, 8], [0xc0, 14]] as const) {
      r.outb(REG.FCR, FCR.ENABLE | FCR.RX_RESET | bits);
      expect(r.inb(REG.IIR)).toBe(IIR.FIFO | IIR.NONE);
      for (let i = 1; i <= 16; i++) {
        r.outb(REG.THR, i);
        expect(r.inb(REG.IIR)).toBe(IIR.FIFO | (i >= level ? IIR.RDA : IIR.CTI));
      }
      // reading the FIFO below the trigger turns RDA into timeout, then nothing
      for (let i = 16; i >= 1; i--) {
        expect(r.inb(REG.IIR)).toBe(IIR.FIFO | (i >= level ? IIR.RDA : IIR.CTI));
        expect(r.inb(REG.RBR)).toBe(17 - i);
      }
      expect(r.inb(REG.IIR)).toBe(IIR.FIFO | IIR.NONE);
    }
    // FIFOs off: one holding register, RDA on the first byte, overrun on the second
    r.outb(REG.FCR, 0);
    r.outb(REG.THR, 0x41);
    expect(r.inb(REG.IIR)).toBe(IIR.RDA);
    r.outb(REG.THR, 0x42);
    r.outb(REG.IER, IER.ERBFI | IER.ELSI);
    expect(r.inb(REG.IIR)).toBe(IIR.RLS); // line status outranks data
    expect(r.inb(REG.LSR)).toBe(LSR.DR | LSR.OE | LSR.THRE | LSR.TEMT);
    expect(r.inb(REG.IIR)).toBe(IIR.RDA);
    expect(r.inb(REG.RBR)).toBe(0x41);
    expect(r.inb(REG.LSR)).toBe(LSR.THRE | LSR.TEMT);
  });

  test("FCR RX reset empties the receive FIFO", () => {
    const r = rig();
    r.outb(REG.FCR, FCR.ENABLE);
    r.outb(REG.MCR, MCR.LOOP);
    for (let i = 0; i < 5; i++) r.outb(REG.THR, i);
    expect(r.inb(REG.LSR) & LSR.DR).toBe(LSR.DR);
    r.outb(REG.FCR, FCR.ENABLE | FCR.RX_RESET);
    expect(r.inb(REG.LSR) & LSR.DR).toBe(0);
  });

  test("loopback routes MCR outputs to MSR inputs with deltas and TERI", () => {
    const r = rig();
    r.inb(REG.MSR); // carrier came up at power-on: clear those deltas
    expect(r.inb(REG.MSR)).toBe(MSR.DCD | MSR.DSR | MSR.CTS); // no backend: lines present
    r.outb(REG.MCR, MCR.LOOP);
    expect(r.inb(REG.MSR)).toBe(MSR.DCTS | MSR.DDSR | MSR.DDCD);
    r.outb(REG.MCR, MCR.LOOP | MCR.DTR);
    expect(r.inb(REG.MSR)).toBe(MSR.DSR | MSR.DDSR);
    r.outb(REG.MCR, MCR.LOOP | MCR.DTR | MCR.OUT1);
    expect(r.inb(REG.MSR)).toBe(MSR.DSR | MSR.RI);
    r.outb(REG.MCR, MCR.LOOP | MCR.DTR);
    expect(r.inb(REG.MSR)).toBe(MSR.DSR | MSR.TERI);
    r.outb(REG.MCR, MCR.LOOP | MCR.RTS | MCR.OUT2);
    expect(r.inb(REG.MSR)).toBe(MSR.CTS | MSR.DCD | MSR.DCTS | MSR.DDSR | MSR.DDCD);
    expect(r.inb(REG.MSR)).toBe(MSR.CTS | MSR.DCD);
  });
});

describe("interrupts", () => {
  test("THRE re-asserts on IER toggle (no UART_BUG_THRE); IRQ gated by OUT2; irqLine only on change", () => {
    const r = rig();
    const g = new Guest(r);
    expect(g.startup().threBug).toBe(false);
    // during startup OUT2 was off: the THRE interrupts never reached the line
    expect(r.plat.irqs).toEqual([]);
    // OUT2 on, enable THRE: line goes up once
    r.outb(REG.IER, IER.ETBEI);
    expect(r.plat.irqs).toEqual([[GSI, 1]]);
    r.inb(REG.LSR); r.inb(REG.SCR); // unrelated accesses: no new calls
    expect(r.plat.irqs).toEqual([[GSI, 1]]);
    // dropping OUT2 gates the line, raising it brings it back
    r.outb(REG.MCR, MCR.DTR | MCR.RTS);
    r.outb(REG.MCR, MCR.DTR | MCR.RTS | MCR.OUT2);
    expect(r.plat.irqs).toEqual([[GSI, 1], [GSI, 0], [GSI, 1]]);
    // reading IIR (THRE is the source) clears it
    expect(r.inb(REG.IIR)).toBe(IIR.FIFO | IIR.THRE);
    expect(r.plat.irqs.at(-1)).toEqual([GSI, 0]);
    expect(r.inb(REG.IIR)).toBe(IIR.FIFO | IIR.NONE);
    // toggling ETBEI re-asserts it (the transmitter is idle)
    r.outb(REG.IER, 0);
    r.outb(REG.IER, IER.ETBEI);
    expect(r.inb(REG.IIR)).toBe(IIR.FIFO | IIR.THRE);
    // loopback cuts the line even with OUT2 set
    r.outb(REG.IER, 0);
    r.outb(REG.IER, IER.ETBEI);
    const n = r.plat.irqs.length;
    expect(r.plat.level).toBe(1);
    r.outb(REG.MCR, MCR.LOOP | MCR.OUT2);
    expect(r.plat.irqs.length).toBe(n + 1);
    expect(r.plat.level).toBe(0);
    // consecutive calls always alternate (never the same level twice)
    const levels = r.plat.irqs.map(([, l]) => l);
    for (let i = 1; i < levels.length; i++) expect(levels[i]).not.toBe(levels[i - 1]!);
  });

  test("priority: line status > received data > THRE > modem status", () => {
    const r = rig();
    r.outb(REG.FCR, FCR.ENABLE);
    r.outb(REG.MCR, MCR.LOOP);
    r.outb(REG.IER, IER.MASK);
    // modem status change pending (MCR change in loopback) and THRE pending (ETBEI turned on)
    expect(r.inb(REG.IIR)).toBe(IIR.FIFO | IIR.THRE);
    expect(r.inb(REG.IIR)).toBe(IIR.FIFO | IIR.MSR);
    r.inb(REG.MSR);
    expect(r.inb(REG.IIR)).toBe(IIR.FIFO | IIR.NONE);
    for (let i = 0; i < 17; i++) r.outb(REG.THR, i); // 16 fit, the 17th overruns
    expect(r.inb(REG.IIR)).toBe(IIR.FIFO | IIR.RLS);
    expect(r.inb(REG.LSR) & LSR.OE).toBe(LSR.OE);
    expect(r.inb(REG.IIR)).toBe(IIR.FIFO | IIR.RDA);
    while (r.inb(REG.LSR) & LSR.DR) r.inb(REG.RBR);
    expect(r.inb(REG.IIR)).toBe(IIR.FIFO | IIR.THRE);
  });
});

describe("transmit", () => {
  test("interrupt-driven TX lands in a file; no backend drops without stalling", () => {
    const path = join(tmp(), "out.txt");
    const r = rig(open({ kind: "file", path }));
    const g = new Guest(r);
    g.startup();
    const msg = new TextEncoder().encode("Linux version 6.x (tsbhyve) #1 SMP\r\nconsole [ttyS0] enabled\r\n".repeat(20));
    g.write(msg);
    expect(r.plat.level).toBe(1);
    g.serviceIrqs();
    expect(g.txDone).toBe(true);
    expect(r.plat.level).toBe(0);
    expect(r.inb(REG.LSR) & (LSR.THRE | LSR.TEMT)).toBe(LSR.THRE | LSR.TEMT);
    expect(readFileSync(path)).toEqual(Buffer.from(msg));

    const r2 = rig(undefined);
    const g2 = new Guest(r2);
    g2.startup();
    g2.write(msg);
    g2.serviceIrqs();
    expect(g2.txDone).toBe(true);
    expect(r2.inb(REG.LSR) & LSR.TEMT).toBe(LSR.TEMT);
  });

  test("a stalled FIFO reader loses nothing: THRE waits, the I/O worker flushes later", () => {
    const dir = tmp();
    const fifo = join(dir, "fifo");
    expect(spawnSync("mkfifo", [fifo]).status).toBe(0);
    const reader = openSync(fifo, fsc.O_RDONLY | fsc.O_NONBLOCK);
    try {
      const r = rig(open({ kind: "file", path: fifo }));
      const g = new Guest(r);
      g.startup();
      const data = bytes(160 * 1024, 7); // well over the 64 KiB pipe buffer
      g.write(data);
      const got: Buffer[] = [];
      const rb = Buffer.alloc(8192);
      let stalledRounds = 0, sawBackpressure = false, reading = false;
      for (let round = 0; round < 100000 && !(g.txDone && r.inb(REG.LSR) & LSR.TEMT && got.reduce((a, b) => a + b.length, 0) === data.length); round++) {
        g.serviceIrqs();
        if (!reading) {
          // the reader stalls: once the pipe is full the UART must hold THRE clear and wait
          if (!(r.inb(REG.LSR) & LSR.THRE)) {
            sawBackpressure = true;
            expect(r.plat.level).toBe(0); // no THRE interrupt while bytes are pending
            r.io.pump(0);
            expect(r.io.watching.some((w) => w.events === 4 /* POLLOUT */)).toBe(true);
            if (++stalledRounds > 50) reading = true;
          }
        } else {
          try {
            const n = readSync(reader, rb, 0, rb.length, null);
            if (n > 0) got.push(Buffer.from(rb.subarray(0, n)));
          } catch (e) {
            if ((e as NodeJS.ErrnoException).code !== "EAGAIN") throw e;
          }
        }
        r.io.pump(reading ? 1 : 0);
      }
      expect(sawBackpressure).toBe(true);
      expect(Buffer.concat(got)).toEqual(Buffer.from(data));
      expect(r.plat.level).toBe(0);
    } finally {
      closeSync(reader);
    }
  });

  test("a driver that ignores THRE is still lossless up to the TX backlog", () => {
    const dir = tmp();
    const fifo = join(dir, "fifo");
    expect(spawnSync("mkfifo", [fifo]).status).toBe(0);
    const reader = openSync(fifo, fsc.O_RDONLY | fsc.O_NONBLOCK);
    try {
      const r = rig(open({ kind: "file", path: fifo }));
      r.outb(REG.FCR, FCR.ENABLE);
      // fill the pipe (while THRE says so), then write TX_RING - 1 more bytes blindly, as a
      // console that gave up waiting for THRE would
      const data: number[] = [];
      const src = bytes(1 << 20, 3);
      while (r.inb(REG.LSR) & LSR.THRE) { r.outb(REG.THR, src[data.length]!); data.push(src[data.length]!); }
      expect(data.length).toBeGreaterThan(4096); // the pipe took a lot before pushing back
      for (let i = 1; i < TX_RING; i++) { r.outb(REG.THR, src[data.length]!); data.push(src[data.length]!); }
      expect(r.inb(REG.LSR) & (LSR.THRE | LSR.TEMT)).toBe(0);
      const total = data.length;
      const got: Buffer[] = [];
      const rb = Buffer.alloc(65536);
      for (let i = 0; i < 1000 && got.reduce((a, b) => a + b.length, 0) < total; i++) {
        try {
          const n = readSync(reader, rb, 0, rb.length, null);
          if (n > 0) got.push(Buffer.from(rb.subarray(0, n)));
        } catch (e) {
          if ((e as NodeJS.ErrnoException).code !== "EAGAIN") throw e;
        }
        r.io.pump(1);
      }
      expect(Buffer.concat(got)).toEqual(Buffer.from(data));
      expect(r.inb(REG.LSR) & (LSR.THRE | LSR.TEMT)).toBe(LSR.THRE | LSR.TEMT);
    } finally {
      closeSync(reader);
    }
  });
});

describe("receive", () => {
  test("RX from a real pty: only what fits is read, the rest waits in the kernel; RDA then timeout", () => {
    const origWrite = process.stderr.write;
    process.stderr.write = (() => true) as typeof process.stderr.write;
    let h: ChardevHandle;
    try { h = open({ kind: "pty" }); } finally { process.stderr.write = origWrite; }
    const slave = openSync(h.path!, fsc.O_RDWR | fsc.O_NOCTTY | fsc.O_NONBLOCK);
    try {
      const r = rig(h);
      const g = new Guest(r);
      g.startup(FCR.ENABLE | 0x80); // trigger level 8, like Linux
      const input = bytes(100, 11);
      writeSync(slave, input);
      // the worker reads 16 (the FIFO) and stops watching the fd
      for (let i = 0; i < 20; i++) r.io.pump(10);
      expect(r.io.watching.some((w) => w.fd === h.inFd && w.events === 1)).toBe(false);
      expect(r.plat.level).toBe(1);
      expect(r.inb(REG.IIR)).toBe(IIR.FIFO | IIR.RDA);
      let n = 0;
      while (r.inb(REG.LSR) & LSR.DR) { r.inb(REG.RBR); n++; }
      expect(n).toBe(16); // exactly one FIFO's worth was taken from the kernel
      // the drain woke the worker; run the guest's interrupt handler as data arrives
      const got: number[] = [];
      const wakes = r.plat.wakes;
      for (let i = 0; i < 200 && got.length < 84; i++) {
        r.io.pump(10);
        if (r.plat.level) {
          const iir = r.inb(REG.IIR) & 0x0f;
          const lsrDr = r.inb(REG.LSR) & LSR.DR;
          let k = 0;
          if (lsrDr) for (; r.inb(REG.LSR) & LSR.DR; k++) got.push(r.inb(REG.RBR));
          // a full FIFO reports RDA, the final 4 bytes (below the trigger) report a timeout
          expect(iir).toBe(k >= 8 ? IIR.RDA : IIR.CTI);
        }
      }
      expect(r.plat.wakes).toBeGreaterThan(wakes);
      expect(got).toEqual([...input.subarray(16)]);
      expect(r.plat.level).toBe(0);

      // and guest output reaches the pty slave
      g.write(new TextEncoder().encode("login: "));
      g.serviceIrqs();
      const rb = Buffer.alloc(64);
      let k = 0;
      for (let i = 0; i < 50 && k < 7; i++) {
        try { k += readSync(slave, rb, k, rb.length - k, null); } catch { Bun.sleepSync(2); }
      }
      expect(rb.subarray(0, k).toString()).toBe("login: ");
    } finally {
      closeSync(slave);
    }
  });

  test("loopback keeps host input in the kernel until loopback ends", () => {
    const origWrite = process.stderr.write;
    process.stderr.write = (() => true) as typeof process.stderr.write;
    let h: ChardevHandle;
    try { h = open({ kind: "pty" }); } finally { process.stderr.write = origWrite; }
    const slave = openSync(h.path!, fsc.O_RDWR | fsc.O_NOCTTY | fsc.O_NONBLOCK);
    try {
      const r = rig(h);
      r.outb(REG.FCR, FCR.ENABLE);
      r.outb(REG.MCR, MCR.LOOP);
      writeSync(slave, "abc");
      for (let i = 0; i < 5; i++) r.io.pump(5);
      expect(r.inb(REG.LSR) & LSR.DR).toBe(0);
      r.outb(REG.MCR, 0);
      for (let i = 0; i < 20 && !(r.inb(REG.LSR) & LSR.DR); i++) r.io.pump(5);
      const got: number[] = [];
      for (let i = 0; i < 20 && got.length < 3; i++) {
        while (r.inb(REG.LSR) & LSR.DR) got.push(r.inb(REG.RBR));
        r.io.pump(5);
      }
      expect(String.fromCharCode(...got)).toBe("abc");
    } finally {
      closeSync(slave);
    }
  });
});

describe("input end of file", () => {
  test("stdin-style input at EOF is delivered, then no longer watched; output carries on", () => {
    const dir = tmp();
    const fifo = join(dir, "in");
    expect(spawnSync("mkfifo", [fifo]).status).toBe(0);
    const inFd = openSync(fifo, fsc.O_RDONLY | fsc.O_NONBLOCK);
    const writer = openSync(fifo, fsc.O_WRONLY);
    const outPath = join(dir, "out");
    const outFd = openSync(outPath, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_APPEND);
    try {
      // what openChardev("stdio") returns, with our own fds in place of 0 and 1
      const h: ChardevHandle = { kind: "stdio", name: "com1", inFd, outFd, listenFd: -1, rawTtys: [], owned: [] };
      const r = rig(h);
      const g = new Guest(r);
      g.startup();
      writeSync(writer, "xy");
      closeSync(writer);
      for (let i = 0; i < 20 && g.rx.length < 2; i++) { r.io.pump(5); g.serviceIrqs(); }
      expect(String.fromCharCode(...g.rx)).toBe("xy");
      for (let i = 0; i < 5; i++) r.io.pump(5);
      expect(r.io.watching).toEqual([]); // EOF: the fd is dropped, no POLLHUP spin
      expect(r.io.pump(0)).toBe(0);
      g.write(new TextEncoder().encode("still here"));
      g.serviceIrqs();
      expect(readFileSync(outPath, "utf8")).toBe("still here");
    } finally {
      closeSync(inFd);
      closeSync(outFd);
    }
  });
});

async function freePort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((res) => srv.listen(0, "127.0.0.1", res));
  const port = (srv.address() as { port: number }).port;
  await new Promise<void>((res) => srv.close(() => res()));
  return port;
}

/** Pump the I/O worker while letting the JS event loop (the socket clients) run. */
async function until(r: Rig, cond: () => boolean, what: string, ms = 3000): Promise<void> {
  const t0 = Date.now();
  while (!cond()) {
    if (Date.now() - t0 > ms) throw new Error(`timed out waiting for ${what}`);
    r.io.pump(1);
    await new Promise((res) => setImmediate(res));
  }
}

describe("tcp backend with a real client", () => {
  test("carrier follows the client, one client at a time, data both ways, output dropped without one", async () => {
    const port = await freePort();
    const h = open({ kind: "tcp", addr: "127.0.0.1", port });
    const r = rig(h);
    const g = new Guest(r);
    g.startup();
    // no client: no carrier, output is dropped (THRE stays set)
    expect(r.inb(REG.MSR) & 0xf0).toBe(0);
    g.write(new TextEncoder().encode("lost"));
    g.serviceIrqs();
    expect(g.txDone).toBe(true);
    r.io.pump(0);
    expect(r.io.watching).toEqual([{ fd: h.listenFd, events: 1 }]);

    // modem status interrupt on connect
    g.ier |= IER.EDSSI;
    r.outb(REG.IER, g.ier);
    const c1 = new Socket();
    let rx1 = "";
    c1.on("data", (d) => { rx1 += d.toString("latin1"); });
    await new Promise<void>((res) => c1.connect(port, "127.0.0.1", res));
    await until(r, () => r.plat.level === 1, "modem status interrupt");
    expect(r.inb(REG.IIR)).toBe(IIR.FIFO | IIR.MSR);
    expect(r.inb(REG.MSR)).toBe(MSR.DCD | MSR.DSR | MSR.CTS | MSR.DDCD | MSR.DDSR | MSR.DCTS);
    expect(r.plat.level).toBe(0);

    // a second client is refused (closed at once); the first keeps working
    const c2 = new Socket();
    let c2closed = false, rx2 = "";
    c2.on("data", (d) => { rx2 += d.toString(); });
    c2.on("close", () => { c2closed = true; });
    c2.on("error", () => {});
    c2.connect(port, "127.0.0.1");
    await until(r, () => c2closed, "second client closed");

    g.write(new TextEncoder().encode("hello, client\r\n"));
    g.serviceIrqs();
    await until(r, () => rx1 === "hello, client\r\n", "client receives output");
    expect(rx2).toBe("");

    c1.write("ping\r");
    await until(r, () => { g.serviceIrqs(); return g.rx.length >= 5; }, "guest receives input");
    expect(String.fromCharCode(...g.rx)).toBe("ping\r");

    // client leaves: carrier drops (with a modem status interrupt), output is dropped again
    c1.end();
    await until(r, () => r.plat.level === 1, "carrier loss interrupt");
    expect(r.inb(REG.MSR)).toBe(MSR.DDCD | MSR.DDSR | MSR.DCTS);
    g.write(new TextEncoder().encode("nobody"));
    g.serviceIrqs();
    expect(g.txDone).toBe(true);

    // a new client can connect
    const c3 = new Socket();
    let rx3 = "";
    c3.on("data", (d) => { rx3 += d.toString(); });
    await new Promise<void>((res) => c3.connect(port, "127.0.0.1", res));
    await until(r, () => (r.inb(REG.MSR) & MSR.DCD) !== 0, "reconnect");
    g.write(new TextEncoder().encode("again"));
    g.serviceIrqs();
    await until(r, () => rx3 === "again", "third client output");
    c3.destroy();
    c2.destroy();
  }, 15000);

  test("unix socket client that stalls loses nothing", async () => {
    const path = join(tmp(), "com1.sock");
    const h = open({ kind: "unix", path });
    const r = rig(h);
    const g = new Guest(r);
    g.startup();
    // a client that reads nothing for a while: a child process sleeping before it reads everything
    const total = 256 * 1024;
    const outFile = join(tmp(), "received");
    const script = `import socket,sys,time
s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); time.sleep(1.0)
n=0; out=open(sys.argv[2],"wb")
while n < ${total}:
    d=s.recv(65536)
    if not d: break
    out.write(d); n+=len(d)
out.close()`;
    const proc = Bun.spawn(["python3", "-c", script, path, outFile], { stdout: "inherit" });
    await until(r, () => (r.inb(REG.MSR) & MSR.DCD) !== 0, "client connect", 5000);
    const data = bytes(total, 5);
    g.write(data);
    let sawBackpressure = false;
    await until(r, () => {
      g.serviceIrqs();
      if (!(r.inb(REG.LSR) & LSR.THRE)) sawBackpressure = true;
      return g.txDone && (r.inb(REG.LSR) & LSR.TEMT) !== 0;
    }, "all output taken", 20000);
    expect(await proc.exited).toBe(0);
    const out = readFileSync(outFile);
    expect(sawBackpressure).toBe(true);
    expect(out.length).toBe(total);
    expect(Buffer.from(out).equals(Buffer.from(data))).toBe(true);
  }, 30000);
});
