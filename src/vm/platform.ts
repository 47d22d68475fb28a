/**
 * The Platform services devices call, implemented once for every thread: interrupts go straight to the
 * kernel (VM-wide calls are legal from any thread), stop requests go through the shared control block
 * and a message to the main thread, and every vCPU is kicked out of the guest.
 */
import type { Platform } from "../devices/device.ts";
import { host, type VmHandle } from "../vmm/index.ts";
import { Ctrl, RunState, type WorkerMsg } from "./shared.ts";

export function makePlatform(opts: {
  vm: VmHandle;
  ctrl: Int32Array;
  cpus: number;
  ioWakeFd: number;
  post: (m: WorkerMsg) => void;
}): Platform {
  const { vm, ctrl, cpus, ioWakeFd, post } = opts;
  return {
    irqLine: (gsi, level) => vm.irqLine(gsi, level),
    msi: (addr, data) => vm.msi(addr, data),
    ioeventfd: (space, addr, len, datamatch, fd, detach) => vm.ioeventfd(addr, len, space === "pio", datamatch, fd, detach),
    requestExit(code, reason) {
      if (Atomics.compareExchange(ctrl, Ctrl.STATE, RunState.RUNNING, RunState.STOPPING) !== RunState.RUNNING) return;
      Atomics.store(ctrl, Ctrl.EXIT_CODE, code);
      post({ type: "exit", code, reason });
      for (let i = 0; i < cpus; i++) vm.vcpu(i).kick();
      host.signal(ioWakeFd);
    },
    wakeIo: () => host.signal(ioWakeFd),
    log: (text) => post({ type: "log", text }),
  };
}
