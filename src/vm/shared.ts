/**
 * What the main thread hands every Worker: plain data plus shared buffers. Each thread rebuilds its
 * own views (guest memory, device objects) from this; device state and the control block are shared.
 */
import type { VmConfig } from "../config/types.ts";
import type { Prepared } from "./prepare.ts";

export interface MemRegionInfo { gpa: number; size: number; host: number; kind: "ram" | "rom" }

export interface ThreadInit {
  cfg: VmConfig;
  vmId: number;
  regions: MemRegionInfo[];
  /** device state (StateArena) */
  state: SharedArrayBuffer;
  /** control block, see Ctrl */
  ctrl: SharedArrayBuffer;
  prepared: Prepared;
  /** eventfd that wakes the I/O Worker */
  ioWakeFd: number;
  /** process start (performance.timeOrigin + now) for start-up tracing */
  t0: number;
  trace: boolean;
}

export interface VcpuInit extends ThreadInit { vcpu: number }

/** Control block layout (Int32 slots). */
export const Ctrl = {
  STATE: 0,        // RunState
  EXIT_CODE: 1,
  FIRST_RUN_US: 2, // µs after t0 at which the first vCPU entered the guest (0 = not yet)
  STOPPED: 3,      // number of vCPU Workers that left their loop
  CPUS: 4,         // number of vCPUs
  /** base of one slot per vCPU: 1 while that vCPU is stopped for good (halted, interrupts off) */
  VCPU_STOPPED: 8,
  SLOTS: 8 + 256,
} as const;
export const RunState = { RUNNING: 0, STOPPING: 1 } as const;

export type WorkerMsg =
  | { type: "exit"; code: number; reason: string }
  | { type: "stopped"; vcpu: number; exits: number }
  | { type: "log"; text: string }
  | { type: "error"; text: string };
