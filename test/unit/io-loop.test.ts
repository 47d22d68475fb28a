import { describe, expect, test } from "bun:test";
import type { Device, Platform } from "../../src/devices/device.ts";
import { runIoLoop } from "../../src/vm/io-loop.ts";
import { Ctrl, RunState } from "../../src/vm/shared.ts";
import { host } from "../../src/vmm/index.ts";

function platform(ctrl: Int32Array, exits: string[]): Platform {
  return {
    irqLine() {}, msi() {}, wakeIo() {}, log() {},
    requestExit(code, reason) { exits.push(`${code} ${reason}`); Atomics.store(ctrl, Ctrl.STATE, RunState.STOPPING); },
  };
}

describe("I/O Worker loop", () => {
  test("device deadlines fire on time, in order, from the shared monotonic clock", () => {
    const ctrl = new Int32Array(new SharedArrayBuffer(Ctrl.SLOTS * 4));
    const wake = host.eventfd();
    const t0 = host.monotonicNs();
    const fired: [string, number][] = [];
    const timer = (name: string, at: number, last = false): Device => {
      let due = at;
      return {
        name, ranges: [], read: () => 0, write: () => {},
        deadline: () => due,
        expire: (now) => { fired.push([name, now - t0]); due = Infinity; if (last) Atomics.store(ctrl, Ctrl.STATE, RunState.STOPPING); },
      };
    };
    const devices = [timer("b", t0 + 30e6, true), timer("a", t0 + 10e6)];
    runIoLoop({ devices, pollSources: () => [], wakeFd: wake, ctrl, platform: platform(ctrl, []) });
    expect(fired.map(([n]) => n)).toEqual(["a", "b"]);
    expect(fired[0]![1]).toBeGreaterThanOrEqual(10e6);
    expect(fired[1]![1]).toBeGreaterThanOrEqual(30e6);
    expect(fired[1]![1]).toBeLessThan(500e6);
    host.close(wake);
  });

  test("a throwing device stops the VM with a reason instead of killing the thread", () => {
    const ctrl = new Int32Array(new SharedArrayBuffer(Ctrl.SLOTS * 4));
    const wake = host.eventfd();
    const exits: string[] = [];
    const bad: Device = { name: "bad", ranges: [], read: () => 0, write: () => {}, deadline: () => 0, expire: () => { throw new Error("boom"); } };
    runIoLoop({ devices: [bad], pollSources: () => [], wakeFd: wake, ctrl, platform: platform(ctrl, exits) });
    expect(exits.length).toBe(1);
    expect(exits[0]).toMatch(/^4 I\/O worker: device error: Error: boom/);
    host.close(wake);
  });
});
