/**
 * vCPU Worker entry point: one per vCPU, its thread named "vcpu N" (as bhyve's show in top -H) and kept
 * on the host CPUs of vcpu.N.cpuset when the config pins it.
 * Devices run here, on the thread that trapped.
 */
import { setupThread } from "../vm/thread.ts";
import { Ctrl, type VcpuInit, type WorkerMsg } from "../vm/shared.ts";
import { Cap, host } from "../vmm/index.ts";
import { runVcpu } from "./runloop.ts";

declare const self: Worker;
const post = (m: WorkerMsg) => self.postMessage(m);

self.onmessage = (ev: MessageEvent<VcpuInit>) => {
  const init = ev.data;
  let exits = 0;
  try {
    const env = setupThread(init, "vcpu", post);
    const vcpu = env.vm.vcpu(init.vcpu);
    const pin = init.cfg.cpusets[init.vcpu];
    if (pin) host.setThreadAffinity(pin); // before the vCPU's first KVM_RUN
    vcpu.bindThread(`vcpu ${init.vcpu}`);
    exits = runVcpu(
      {
        index: init.vcpu, vcpu, exit: vcpu.exitPage(), bus: env.machine.bus, platform: env.platform,
        ctrl: env.ctrl, hasIrqchip: (env.vm.caps() & Cap.IRQCHIP) !== 0,
      },
      () => {
        const us = Math.max(1, Math.round((performance.timeOrigin + performance.now() - init.t0) * 1000));
        Atomics.compareExchange(env.ctrl, Ctrl.FIRST_RUN_US, 0, us);
      },
    );
  } catch (err) {
    post({ type: "error", text: `vcpu ${init.vcpu}: ${(err as Error).stack ?? err}` });
  }
  Atomics.add(new Int32Array(init.ctrl), Ctrl.STOPPED, 1);
  post({ type: "stopped", vcpu: init.vcpu, exits });
};
