/**
 * The vCPU loop: enter the guest, read the exit from the exit page in place, dispatch through a table.
 * Handlers return CONTINUE or a bhyve exit code; they never exit the process.
 */
import type { Bus } from "../devices/bus.ts";
import type { Platform } from "../devices/device.ts";
import { DIR_WRITE, EXIT, EXIT_REASON_NAMES, ExitReason, type VcpuHandle } from "../vmm/index.ts";
import { Ctrl, RunState } from "../vm/shared.ts";

export const CONTINUE = -1;
export const ExitCode = { REBOOT: 0, POWEROFF: 1, HALT: 2, TRIPLE_FAULT: 3, ERROR: 4 } as const;

export interface VcpuContext {
  readonly index: number;
  readonly vcpu: VcpuHandle;
  readonly exit: DataView;
  readonly bus: Bus;
  readonly platform: Platform;
  readonly ctrl: Int32Array;
  readonly hasIrqchip: boolean;
}

function pio(c: VcpuContext): number {
  const e = c.exit;
  const size = e.getUint32(EXIT.size, true);
  const count = e.getUint32(EXIT.count, true);
  const port = Number(e.getBigUint64(EXIT.addr, true));
  const write = e.getUint32(EXIT.dir, true) === DIR_WRITE;
  for (let i = 0, o = EXIT.data; i < count; i++, o += size) {
    if (write) {
      const v = size === 1 ? e.getUint8(o) : size === 2 ? e.getUint16(o, true) : e.getUint32(o, true);
      c.bus.write("pio", port, size, v);
    } else {
      const v = c.bus.read("pio", port, size);
      if (size === 1) e.setUint8(o, v);
      else if (size === 2) e.setUint16(o, v, true);
      else e.setUint32(o, v, true);
    }
  }
  return CONTINUE;
}

function mmio(c: VcpuContext): number {
  const e = c.exit;
  const size = e.getUint32(EXIT.size, true);
  const addr = Number(e.getBigUint64(EXIT.addr, true));
  if (e.getUint32(EXIT.dir, true) === DIR_WRITE) {
    c.bus.writeWide("mmio", addr, size, e.getUint32(EXIT.data, true), e.getUint32(EXIT.data + 4, true));
  } else {
    const [lo, hi] = c.bus.readWide("mmio", addr, size);
    e.setUint32(EXIT.data, lo, true);
    e.setUint32(EXIT.data + 4, hi, true);
  }
  return CONTINUE;
}

function stop(c: VcpuContext, code: number, reason: string): number {
  c.platform.requestExit(code, reason);
  return code;
}

/** The vCPU's state for a message about a fatal stop (best effort: "" if the kernel will not say). */
function registers(c: VcpuContext): string {
  try {
    const r = c.vcpu.getRegs();
    const s = c.vcpu.getSregs();
    return ` rip=0x${r.rip.toString(16)} rsp=0x${r.rsp.toString(16)} rflags=0x${r.rflags.toString(16)} cs=0x${s.cs.selector.toString(16)}` +
      ` cr0=0x${s.cr0.toString(16)} cr2=0x${s.cr2.toString(16)} cr3=0x${s.cr3.toString(16)} cr4=0x${s.cr4.toString(16)} efer=0x${s.efer.toString(16)}` +
      ` idt=0x${s.idt.base.toString(16)}/${s.idt.limit}`;
  } catch { return ""; }
}

function fatal(c: VcpuContext, what: string): number {
  return stop(c, ExitCode.ERROR, `vcpu ${c.index}: ${what} (detail 0x${c.exit.getBigUint64(EXIT.detail, true).toString(16)})${registers(c)}`);
}

/**
 * After a kick (the main thread kicks every vCPU once a second): is this vCPU stopped for good? When
 * every vCPU is — halted with interrupts disabled, or never started — the guest has halted: bhyve's
 * exit 2. (With the kernel's LAPIC a HLT never reaches userspace, so this is how halts are seen.)
 */
function kicked(c: VcpuContext): number {
  const slot = Ctrl.VCPU_STOPPED + c.index;
  const stopped = c.vcpu.stopped() ? 1 : 0;
  Atomics.store(c.ctrl, slot, stopped);
  if (!stopped) return CONTINUE;
  const n = Atomics.load(c.ctrl, Ctrl.CPUS);
  for (let i = 0; i < n; i++) if (Atomics.load(c.ctrl, Ctrl.VCPU_STOPPED + i) !== 1) return CONTINUE;
  return stop(c, ExitCode.HALT, "every vCPU halted with interrupts disabled");
}

/** Exit dispatch table, indexed by ExitReason. */
export const EXIT_HANDLERS: Record<number, (c: VcpuContext) => number> = {
  [ExitReason.IO]: pio,
  [ExitReason.MMIO]: mmio,
  [ExitReason.INTR]: kicked,
  [ExitReason.DEBUG]: () => CONTINUE,
  [ExitReason.NONE]: () => CONTINUE,
  // Without an in-kernel LAPIC a HLT reaches us; bhyve treats a halted vCPU with interrupts off as halt.
  [ExitReason.HLT]: (c) => (c.hasIrqchip ? CONTINUE : stop(c, ExitCode.HALT, `vcpu ${c.index} halted`)),
  // the registers say where the guest was (the VM is over: reading them cannot disturb it)
  [ExitReason.SHUTDOWN]: (c) => stop(c, ExitCode.TRIPLE_FAULT, `vcpu ${c.index}: triple fault;${registers(c)}`),
  [ExitReason.RESET]: (c) => stop(c, ExitCode.REBOOT, `vcpu ${c.index}: reset`),
  [ExitReason.POWEROFF]: (c) => stop(c, ExitCode.POWEROFF, `vcpu ${c.index}: power-off`),
  [ExitReason.INTERNAL]: (c) => fatal(c, "the kernel could not emulate an instruction"),
  [ExitReason.FAIL_ENTRY]: (c) => fatal(c, "guest entry failed"),
  [ExitReason.UNKNOWN]: (c) => fatal(c, "unknown exit"),
  [ExitReason.ERROR]: (c) => fatal(c, "run failed"),
};

/** Run until the VM stops; returns the number of exits taken. */
export function runVcpu(c: VcpuContext, onFirstEntry?: () => void): number {
  const ctrl = c.ctrl;
  onFirstEntry?.();
  while (Atomics.load(ctrl, Ctrl.STATE) === RunState.RUNNING) {
    const r = c.vcpu.run();
    let out: number;
    try {
      // Fast paths first; everything else through the table.
      out = r === ExitReason.IO ? pio(c) : r === ExitReason.MMIO ? mmio(c) : (EXIT_HANDLERS[r] ?? ((x) => fatal(x, `exit ${EXIT_REASON_NAMES[r] ?? r}`)))(c);
    } catch (err) {
      // A device bug must not take the host down silently: stop the VM with a clear reason.
      out = stop(c, ExitCode.ERROR, `vcpu ${c.index}: device error: ${(err as Error).stack ?? err}`);
    }
    if (out !== CONTINUE) break;
    // any exit but a kick means the vCPU ran: it is not stopped
    if (r !== ExitReason.INTR && ctrl[Ctrl.VCPU_STOPPED + c.index] !== 0) Atomics.store(ctrl, Ctrl.VCPU_STOPPED + c.index, 0);
  }
  return Number(c.exit.getBigUint64(EXIT.exits, true));
}
