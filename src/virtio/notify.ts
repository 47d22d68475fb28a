/**
 * Host resources of virtio devices: one eventfd per queue, opened once on the main thread before any
 * Worker starts (like the serial ports' host ends) and reaching every thread by fd number through
 * `Prepared.virtioNotify` (keyed by the pci table's "B.S.F"). The transport attaches them as ioeventfds
 * (guest notifications stay in the kernel) and the I/O Worker polls them.
 */
import type { VmConfig } from "../config/types.ts";
import { consoleMaxNrPorts, consoleQueueCount } from "./devices/console.ts";
import type { DeviceContext, Platform, Space } from "../devices/device.ts";
import type { PciAddress } from "../pci/function.ts";
import { host } from "../vmm/index.ts";
import type { IoEventFdAttach } from "./pci.ts";

/** Queues of each virtio emulation (how many eventfds its table needs): fixed, or from the table. */
export const VIRTIO_QUEUE_COUNT: Readonly<Record<string, number | ((table: Record<string, unknown>) => number)>> = {
  "virtio-rnd": 1,
  "virtio-blk": (t) => (typeof t.queues === "number" ? t.queues : 1),
  // receiveq/transmitq per port plus the two control queues; the highest port number sets the count
  "virtio-console": (t) => consoleQueueCount(consoleMaxNrPorts(t)),
  "virtio-input": 2, // eventq, statusq
  "virtio-9p": 1, // requests
  "virtio-net": 2, // receiveq, transmitq
  "virtio-scsi": (t) => 2 + (typeof t.queues === "number" ? t.queues : 1), // controlq, eventq, request queues
};

/** How many queues (eventfds) the table's virtio function has; 0 for non-virtio devices. */
export function virtioQueueCount(table: { device: string; [key: string]: unknown }): number {
  const n = VIRTIO_QUEUE_COUNT[table.device];
  return typeof n === "function" ? n(table) : n ?? 0;
}

/** What prepare() adds for virtio: table key "B.S.F" → one eventfd per queue. */
export interface VirtioPrepared { virtioNotify?: Record<string, readonly number[]> }

export const notifyKey = (a: PciAddress): string => `${a.bus}.${a.slot}.${a.fn}`;

/** Main thread: an eventfd for every queue of every virtio table of the configuration. */
export function openVirtioNotifiers(cfg: Pick<VmConfig, "pci">, eventfd: () => number = () => host.eventfd()): Record<string, number[]> {
  const out: Record<string, number[]> = {};
  try {
    for (const [key, table] of Object.entries(cfg.pci)) {
      const n = virtioQueueCount(table);
      if (!n) continue;
      out[key] = [];
      for (let q = 0; q < n; q++) out[key]!.push(eventfd());
    }
  } catch (e) {
    closeVirtioNotifiers(out);
    throw e;
  }
  return out;
}

export function closeVirtioNotifiers(m: Record<string, readonly number[]>, close: (fd: number) => void = (fd) => host.close(fd)): void {
  for (const fds of Object.values(m)) for (const fd of fds) close(fd);
}

/** The eventfds prepare() opened for the function at `addr` (undefined: not wired). */
export function notifyFdsFor(prepared: unknown, addr: PciAddress): readonly number[] | undefined {
  return (prepared as VirtioPrepared | undefined)?.virtioNotify?.[notifyKey(addr)];
}

/** The platform's ioeventfd service, when it has one (Platform.ioeventfd). */
export function attachService(ctx: DeviceContext): IoEventFdAttach | undefined {
  const p = ctx.platform as Platform & Partial<IoEventFdAttach>;
  if (typeof p.ioeventfd !== "function") return undefined;
  return { ioeventfd: (space: Space, addr, len, dm, fd, detach) => p.ioeventfd!(space, addr, len, dm, fd, detach) };
}
