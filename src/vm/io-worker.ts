/**
 * The I/O Worker: blocks in poll() on every fd the devices want watched (character backends now;
 * virtio queue eventfds later) plus a wake-up eventfd, and runs the device handlers on this thread.
 * Never the main thread, never a vCPU.
 */
import type { PollSource } from "../devices/device.ts";
import { host, POLLIN } from "../vmm/index.ts";
import { setupThread } from "./thread.ts";
import { Ctrl, RunState, type ThreadInit, type WorkerMsg } from "./shared.ts";

declare const self: Worker;
const post = (m: WorkerMsg) => self.postMessage(m);

self.onmessage = (ev: MessageEvent<ThreadInit>) => {
  const init = ev.data;
  try {
    host.setThreadName("tsbhyve io");
    const env = setupThread(init, "io", post);
    let sources: PollSource[] = [];
    let fds = new Int32Array(1), events = new Int16Array(1), revents = new Int16Array(1);
    const collect = () => {
      sources = env.machine.pollSources();
      fds = new Int32Array(sources.length + 1);
      events = new Int16Array(sources.length + 1);
      revents = new Int16Array(sources.length + 1);
      fds[0] = init.ioWakeFd;
      events[0] = POLLIN;
      sources.forEach((s, i) => { fds[i + 1] = s.fd; events[i + 1] = s.events; });
    };
    collect();
    while (Atomics.load(env.ctrl, Ctrl.STATE) === RunState.RUNNING) {
      host.poll(fds, events, revents, 1000);
      let recollect = false;
      if (revents[0]) { host.drain(init.ioWakeFd); recollect = true; }
      for (let i = 1; i < fds.length; i++) {
        const r = revents[i]!;
        if (!r) continue;
        try {
          if (sources[i - 1]!.ready(r) === false) recollect = true;
        } catch (err) {
          env.platform.requestExit(4, `I/O worker: device error: ${(err as Error).stack ?? err}`);
        }
      }
      if (recollect) collect();
    }
  } catch (err) {
    post({ type: "error", text: `io worker: ${(err as Error).stack ?? err}` });
  }
  post({ type: "stopped", vcpu: -1, exits: 0 });
};
