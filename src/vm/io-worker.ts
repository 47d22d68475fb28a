/**
 * The I/O Worker: runs the device side of host I/O and timers (src/vm/io-loop.ts) on its own thread —
 * never the main thread, never a vCPU.
 */
import { host } from "../vmm/index.ts";
import { runIoLoop } from "./io-loop.ts";
import { setupThread } from "./thread.ts";
import type { ThreadInit, WorkerMsg } from "./shared.ts";

declare const self: Worker;
const post = (m: WorkerMsg) => self.postMessage(m);

self.onmessage = (ev: MessageEvent<ThreadInit>) => {
  const init = ev.data;
  try {
    host.setThreadName("tsbhyve io");
    const env = setupThread(init, "io", post);
    runIoLoop({
      devices: env.machine.devices, pollSources: () => env.machine.pollSources(), wakeFd: init.ioWakeFd,
      ctrl: env.ctrl, platform: env.platform,
    });
  } catch (err) {
    post({ type: "error", text: `io worker: ${(err as Error).stack ?? err}` });
  }
  post({ type: "stopped", vcpu: -1, exits: 0 });
};
