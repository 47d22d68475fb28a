/**
 * The PIRQ router: PCI INTx lines shared by level, as the chipset wires them.
 *
 * Each function's INTx pin drives PIRQ pirqOf(slot, pin) (src/platform/map.ts). A PIRQ is the wired-OR of
 * every function asserting on it: a per-PIRQ share count in shared state. While the count is non-zero the
 * PIRQ drives IOAPIC pin ioapicPinOfPirq(p) (APIC mode) and, when the LPC's route register for it is
 * valid (bit 7 clear, IRQ in IRQ.pirqIsaMask), that ISA IRQ for the PIC (a per-ISA-IRQ count, since
 * several PIRQs may be steered to one IRQ). Lines are only driven on 0↔1 transitions of a count.
 *
 * Locking: the router has its own lock in its own block. Callers hold their function's lock (order:
 * config-mechanism lock → function lock → router lock), so the router never calls back into a function.
 */
import type { DeviceContext, Platform } from "../devices/device.ts";
import { defineLayout, type DeviceLock } from "../devices/state.ts";
import { IRQ, ioapicPinOfPirq } from "../platform/map.ts";

/** PIRQ route register: bit 7 = routing disabled, bits 3:0 = ISA IRQ. */
export const PIRQ_ROUTE = { DISABLE: 0x80, IRQ_MASK: 0x0f, STORED: 0x8f, POWER_ON: 0x80 } as const;

/** Whether a route register value routes its PIRQ to an ISA IRQ; the IRQ or undefined. */
export function pirqRouteIrq(reg: number): number | undefined {
  if (reg & PIRQ_ROUTE.DISABLE) return undefined;
  const irq = reg & PIRQ_ROUTE.IRQ_MASK;
  return (IRQ.pirqIsaMask >> irq) & 1 ? irq : undefined;
}

/** Whether a value is acceptable for a route register (disabled, or an IRQ the mask permits). */
export function pirqRouteAcceptable(reg: number): boolean {
  return (reg & PIRQ_ROUTE.DISABLE) !== 0 || pirqRouteIrq(reg) !== undefined;
}

export const pirqRouterLayout = defineLayout("pci-pirq", 1, {
  /** functions currently asserting each PIRQ */
  count: { type: "i32", count: IRQ.pirqCount },
  /** active PIRQs steered to each ISA IRQ */
  isaCount: { type: "i32", count: 16 },
  /** the router's copy of the route registers */
  route: { type: "u8", count: IRQ.pirqCount },
});

export class PirqRouter {
  private readonly count: Int32Array;
  private readonly isaCount: Int32Array;
  private readonly route: Uint8Array;
  readonly lock: DeviceLock;
  private readonly platform: Platform;

  constructor(ctx: DeviceContext) {
    const b = ctx.arena.alloc(pirqRouterLayout);
    this.count = b.s.count;
    this.isaCount = b.s.isaCount;
    this.route = b.s.route;
    this.lock = b.lock;
    this.platform = ctx.platform;
  }

  /** Power-on: no PIRQ asserted, every route disabled. Drives no line. */
  powerOn(): void {
    this.count.fill(0);
    this.isaCount.fill(0);
    this.route.fill(PIRQ_ROUTE.POWER_ON);
  }

  /** One function's contribution to PIRQ `p` goes up (+1) or down (-1). */
  level(p: number, delta: 1 | -1): void {
    this.lock.acquire();
    try {
      const before = this.count[p]!;
      const after = Math.max(0, before + delta);
      this.count[p] = after;
      if ((before === 0) === (after === 0)) return;
      const up: 0 | 1 = after > 0 ? 1 : 0;
      this.platform.irqLine(ioapicPinOfPirq(p), up);
      const irq = pirqRouteIrq(this.route[p]!);
      if (irq !== undefined) this.isa(irq, up ? 1 : -1);
    } finally { this.lock.release(); }
  }

  /** The LPC's route register for PIRQ `p` changed (the LPC keeps only acceptable values). */
  setRoute(p: number, reg: number): void {
    this.lock.acquire();
    try {
      const old = pirqRouteIrq(this.route[p]!);
      this.route[p] = reg & PIRQ_ROUTE.STORED;
      const now = pirqRouteIrq(this.route[p]!);
      if (old === now || this.count[p] === 0) return;
      if (old !== undefined) this.isa(old, -1);
      if (now !== undefined) this.isa(now, 1);
    } finally { this.lock.release(); }
  }

  /** Set a route without driving lines (power-on of the LPC). */
  powerOnRoute(p: number, reg: number): void {
    this.route[p] = reg & PIRQ_ROUTE.STORED;
  }

  /** Diagnostics/tests: share count of PIRQ p. */
  asserted(p: number): number { return Atomics.load(this.count, p); }

  private isa(irq: number, delta: 1 | -1): void {
    const before = this.isaCount[irq]!;
    const after = Math.max(0, before + delta);
    this.isaCount[irq] = after;
    if ((before === 0) !== (after === 0)) this.platform.irqLine(irq, after > 0 ? 1 : 0);
  }
}
