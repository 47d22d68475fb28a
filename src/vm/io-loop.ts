/**
 * The I/O Worker's loop, kept apart from the Worker bootstrap so it can be tested: block in ppoll() on
 * every fd the devices want watched plus the wake-up eventfd, with a timeout at the earliest device
 * deadline (HPET comparators, RTC interrupts...), then run the handlers on this thread.
 */
import type { Device, Platform, PollSource } from "../devices/device.ts";
import { host, POLLIN } from "../vmm/index.ts";
import { Ctrl, RunState } from "./shared.ts";

export interface IoLoopInput {
  devices: readonly Device[];
  pollSources(): PollSource[];
  wakeFd: number;
  ctrl: Int32Array;
  platform: Platform;
  /** clock (default host.monotonicNs) */
  now?: () => number;
}

export function runIoLoop(inp: IoLoopInput): void {
  const now = inp.now ?? (() => host.monotonicNs());
  const timed = inp.devices.filter((d) => d.deadline && d.expire);
  let sources: PollSource[] = [];
  let fds = new Int32Array(1), events = new Int16Array(1), revents = new Int16Array(1);
  const collect = () => {
    sources = inp.pollSources();
    fds = new Int32Array(sources.length + 1);
    events = new Int16Array(sources.length + 1);
    revents = new Int16Array(sources.length + 1);
    fds[0] = inp.wakeFd;
    events[0] = POLLIN;
    sources.forEach((s, i) => { fds[i + 1] = s.fd; events[i + 1] = s.events; });
  };
  const guard = (fn: () => unknown) => {
    try { return fn(); } catch (err) {
      inp.platform.requestExit(4, `I/O worker: device error: ${(err as Error).stack ?? err}`);
      return undefined;
    }
  };
  collect();
  while (Atomics.load(inp.ctrl, Ctrl.STATE) === RunState.RUNNING) {
    let next = Infinity;
    for (const d of timed) next = Math.min(next, d.deadline!());
    const t = now();
    // Cap the wait so a missed wake-up costs at most a second; never negative.
    const timeout = next === Infinity ? 1e9 : Math.max(0, Math.min(1e9, next - t));
    host.ppoll(fds, events, revents, timeout);
    let recollect = false;
    if (revents[0]) { host.drain(inp.wakeFd); recollect = true; }
    for (let i = 1; i < fds.length; i++) {
      const r = revents[i]!;
      if (r && guard(() => sources[i - 1]!.ready(r)) === false) recollect = true;
    }
    if (timed.length) {
      const t2 = now();
      for (const d of timed) if (d.deadline!() <= t2) guard(() => d.expire!(t2));
    }
    if (recollect) collect();
  }
}
