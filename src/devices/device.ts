/**
 * The device model interface. A device is constructed identically in every thread (main, each vCPU
 * Worker, each I/O Worker) from the resolved config; its state lives in a shared StateBlock, so the
 * thread that traps runs it. Constructors must have no side effects, not even on the state block (a
 * Worker constructs its copy while others may already run the device): host resources (files,
 * sockets, ptys) are opened once on the main thread during `prepare` and reach the devices as fd
 * numbers (fds are process-wide); power-on values are written by `powerOn()` (see below), once.
 */
import type { GuestMemory } from "../mem/guest-memory.ts";
import type { StateArena } from "./state.ts";

export type Space = "pio" | "mmio";
export type AccessSize = 1 | 2 | 4;

export interface IoRange {
  readonly space: Space;
  readonly base: number;
  readonly size: number;
}

export interface Device {
  readonly name: string;
  readonly ranges: readonly IoRange[];
  /** Guest read of `size` bytes at `offset` into the range starting at `base`. Called with the device lock held. */
  read(space: Space, base: number, offset: number, size: AccessSize): number;
  /** Guest write. Called with the device lock held. */
  write(space: Space, base: number, offset: number, size: AccessSize, value: number): void;
  /** The lock the bus takes around read/write (normally the state block's). */
  readonly lock?: { acquire(): void; release(): void };
  /** fds this device wants watched by an I/O Worker, with the handler to run (lock not held). */
  pollSources?(): PollSource[];
  /**
   * Timers: the next time (host.monotonicNs() clock, the same in every thread) at which `expire` must run
   * on the I/O Worker, or Infinity for none. Read from shared state; after changing it from a vCPU thread,
   * call Platform.wakeIo() so the I/O Worker re-reads it.
   */
  deadline?(): number;
  /** Called on the I/O Worker once the deadline has passed (lock not held: take it). */
  expire?(nowNs: number): void;
  /**
   * Write the power-on (reset) values into the state block. Called exactly once on the main thread
   * after the machine is built and before any Worker starts (`powerOnMachine`), with the device lock
   * held; later also by device reset. It must set every field, not only those whose power-on value is
   * non-zero, so that it restores the power-on state from any state. It must not call the Platform
   * (no interrupt line is driven at power-on: lines start low). A device without it powers on with
   * its state block all zero (a fresh buffer).
   */
  powerOn?(): void;
}

export interface PollSource {
  fd: number;
  events: number;
  /** Called on the I/O Worker with the poll revents. Return false to stop watching this fd. */
  ready(revents: number): boolean | void;
}

/** VM-wide services a device may call from any thread. */
export interface Platform {
  /** Drive an interrupt line (GSI) to a level. */
  irqLine(gsi: number, level: 0 | 1): void;
  msi(addr: number, data: number): void;
  /**
   * Attach (or detach) an eventfd the kernel signals when the guest writes `addr` (ioeventfd), so the
   * write never exits to userspace; datamatch null = any value. Absent where the backend has none.
   */
  ioeventfd?(space: Space, addr: number, len: number, datamatch: number | null, fd: number, detach: boolean): void;
  /** Ask the VM to stop with a bhyve exit code (0 reboot, 1 poweroff, 2 halt, 3 triple fault, 4 error). */
  requestExit(code: number, reason: string): void;
  /** Wake the I/O Worker so it re-reads pollSources() and anything a device queued for it. */
  wakeIo(): void;
  log(msg: string): void;
}

export type ThreadRole = "main" | "vcpu" | "io";

export interface DeviceContext {
  readonly mem: GuestMemory;
  readonly arena: StateArena;
  readonly platform: Platform;
  readonly role: ThreadRole;
}
