/**
 * What every Worker does first: rebuild guest-memory views, the platform services and the machine from
 * the ThreadInit the main thread posted.
 */
import { createVmFromHandle, VmHandle } from "../vmm/index.ts";
import { buildMachine, type Machine } from "./machine.ts";
import { viewMemory } from "./memory.ts";
import { makePlatform } from "./platform.ts";
import type { ThreadInit, WorkerMsg } from "./shared.ts";
import type { ThreadRole, Platform } from "../devices/device.ts";

export interface ThreadEnv {
  vm: VmHandle;
  ctrl: Int32Array;
  machine: Machine;
  platform: Platform;
  post: (m: WorkerMsg) => void;
}

export function setupThread(init: ThreadInit, role: ThreadRole, post: (m: WorkerMsg) => void): ThreadEnv {
  const vm = createVmFromHandle(init.vmId);
  const ctrl = new Int32Array(init.ctrl);
  const platform = makePlatform({ vm, ctrl, cpus: init.cfg.cpus, ioWakeFd: init.ioWakeFd, post });
  const mem = viewMemory(init.regions);
  const machine = buildMachine({ cfg: init.cfg, mem, state: init.state, platform, prepared: init.prepared, role });
  return { vm, ctrl, machine, platform, post };
}
