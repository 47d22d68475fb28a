/**
 * The machine: guest memory views, the buses and the device set, built identically in every thread
 * from the resolved config. Device construction is table-driven; each entry decides from the config
 * whether its device exists. Order matters: it fixes each device's offset in the shared state buffer.
 */
import type { VmConfig } from "../config/types.ts";
import { Bus } from "../devices/bus.ts";
import type { Device, DeviceContext, Platform, PollSource, ThreadRole } from "../devices/device.ts";
import { StateArena } from "../devices/state.ts";
import type { GuestMemory } from "../mem/guest-memory.ts";
import { DEVICE_TABLE } from "./devices.ts";
import type { Prepared } from "./prepare.ts";

export interface Machine {
  readonly mem: GuestMemory;
  readonly bus: Bus;
  readonly devices: readonly Device[];
  readonly arena: StateArena;
  /** Devices by table name, for the main thread's control paths (e.g. power button). */
  readonly named: ReadonlyMap<string, Device>;
  pollSources(): PollSource[];
}

/** Size of the shared device-state buffer. Generous and demand-paged; allocation overflow is reported. */
export const STATE_BYTES = 4 * 1024 * 1024;

export interface MachineInput {
  cfg: VmConfig;
  mem: GuestMemory;
  state: SharedArrayBuffer | ArrayBuffer;
  platform: Platform;
  prepared: Prepared;
  role: ThreadRole;
}

/**
 * Put every device in its power-on state: each device's powerOn() under its lock, in table order.
 * Main thread only, once, after buildMachine and before any Worker starts (constructors never write
 * shared state, so until this runs the state blocks are all zero).
 */
export function powerOnMachine(m: Pick<Machine, "devices">): void {
  for (const d of m.devices) {
    if (!d.powerOn) continue;
    if (!d.lock) { d.powerOn(); continue; }
    d.lock.acquire();
    try { d.powerOn(); } finally { d.lock.release(); }
  }
}

export function buildMachine(inp: MachineInput): Machine {
  const arena = new StateArena(inp.state);
  const { cfg, platform, prepared } = inp;
  // Unassigned accesses read all-ones and are ignored; TSBHYVE_LOG_UNASSIGNED=1 logs each one (debugging),
  // x86.strictio stops the VM on the first unassigned port.
  const logUnassigned = !!process.env.TSBHYVE_LOG_UNASSIGNED;
  const bus = new Bus((space, addr, size, write, value) => {
    if (logUnassigned) platform.log(`unassigned ${space} ${write ? "write 0x" + value.toString(16) + " to" : "read from"} 0x${addr.toString(16)}`);
    if (cfg.x86.strictio && space === "pio") {
      platform.requestExit(4, `x86.strictio: ${write ? "write 0x" + value.toString(16) + " to" : "read from"} unassigned port 0x${addr.toString(16)}`);
    }
  });
  const ctx: DeviceContext = { mem: inp.mem, arena, platform, role: inp.role };
  const devices: Device[] = [];
  const named = new Map<string, Device>();
  for (const entry of DEVICE_TABLE) {
    for (const dev of entry.create(ctx, cfg, prepared)) {
      bus.register(dev);
      devices.push(dev);
      named.set(dev.name, dev);
    }
  }
  return {
    mem: inp.mem, bus, devices, arena, named,
    pollSources: () => devices.flatMap((d) => d.pollSources?.() ?? []),
  };
}
