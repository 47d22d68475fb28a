/**
 * The Platform the device unit tests hand their models: it records what a model asks of the machine —
 * interrupt line changes, MSIs, log lines, exit requests, I/O Worker wake-ups — for the test to check.
 * `throwOnExit` turns an exit request into an exception (for models that must never ask for one).
 */
import type { Platform } from "../../src/devices/device.ts";

export class RecordingPlatform implements Platform {
  irqs: [number, 0 | 1][] = [];
  msis: [number, number][] = [];
  logs: string[] = [];
  exits: { code: number; reason: string }[] = [];
  wakes = 0;
  /** the last level driven on any line */
  level = 0;
  constructor(private readonly o: { throwOnExit?: boolean } = {}) {}
  irqLine(gsi: number, level: 0 | 1): void { this.irqs.push([gsi, level]); this.level = level; }
  msi(addr: number, data: number): void { this.msis.push([addr, data]); }
  requestExit(code: number, reason: string): void {
    if (this.o.throwOnExit) throw new Error(`requestExit(${code}): ${reason}`);
    this.exits.push({ code, reason });
  }
  wakeIo(): void { this.wakes++; }
  log(msg: string): void { this.logs.push(msg); }
  /** the interrupt line changes since the last take */
  take(): [number, 0 | 1][] { const r = this.irqs; this.irqs = []; return r; }
}
