/**
 * The main thread's side of a running VM: create it, lay out memory, load the guest, start one Worker
 * per vCPU and one I/O Worker, then wait. The main thread only controls (signals, stop); it is never on
 * a guest's hot path. Stopping: set the shared STOPPING state, kick every vCPU out of the guest
 * (immediate_exit + signal), wake the I/O Worker, and wait for each Worker to say it stopped — never
 * `terminate()` a Worker that may be blocked in the kernel.
 */
import type { VmConfig } from "../config/types.ts";
import { available, Cap, createVm, host, type VmHandle } from "../vmm/index.ts";
import { loadGuest, setupVcpus } from "./boot.ts";
import { buildMachine, powerOnMachine, STATE_BYTES, type Machine } from "./machine.ts";
import { setupMemory, viewMemory } from "./memory.ts";
import { makePlatform } from "./platform.ts";
import { prepare, release, type Prepared } from "./prepare.ts";
import { startBlkPools, type BlkPools } from "./blk-pools.ts";
import { IO_WORKER, VCPU_WORKER } from "../entry-points.ts";
import { Ctrl, RunState, type ThreadInit, type VcpuInit, type WorkerMsg } from "./shared.ts";

export interface RunResult {
  code: number;
  reason: string;
  /** ms from process start to the first guest instruction */
  firstEntryMs: number;
  exits: number[];
}

export interface RunOptions {
  /** process start, for start-up tracing (default: performance.timeOrigin) */
  t0?: number;
  trace?: boolean;
  log?: (msg: string) => void;
  /** called once the VM runs, with a function that stops it (signal handlers use it) */
  onStart?: (ctl: VmControl) => void;
}

export interface VmControl {
  /** Stop now with this exit code. */
  stop(code: number, reason: string): void;
  machine: Machine;
  vm: VmHandle;
}


export async function runVm(cfg: VmConfig, opts: RunOptions = {}): Promise<RunResult> {
  const log = opts.log ?? ((m: string) => console.error(`tsbhyve: ${m}`));
  const ok = available();
  if (!ok.ok) throw new Error(ok.why);
  const t0 = opts.t0 ?? performance.timeOrigin;

  const vm = createVm();
  let prepared: Prepared | undefined;
  let pools: BlkPools | undefined;
  // Start the Workers first: loading their modules (tens of ms each) overlaps the main thread's set-up
  // below; they wait for their ThreadInit message.
  let route: (m: WorkerMsg) => void = () => {};
  const names = ["io", ...Array.from({ length: cfg.cpus }, (_, i) => `vcpu ${i}`)];
  const workers: Worker[] = names.map((name, i) => {
    const w = new Worker(i === 0 ? IO_WORKER : VCPU_WORKER, { name } as WorkerOptions);
    w.onmessage = (e: MessageEvent<WorkerMsg>) => route(e.data);
    w.onerror = (e) => route({ type: "error", text: `${name}: ${e.message}` });
    return w;
  });
  try {
    const caps = vm.caps();
    if (!(caps & Cap.IRQCHIP)) throw new Error("the kernel offers no in-kernel interrupt controller (KVM_CREATE_IRQCHIP failed)");
    const max = vm.maxVcpus();
    if (cfg.cpus > max) throw new Error(`cpus = ${cfg.cpus}, but this host allows at most ${max}`);

    const rom = cfg.bootrom ? new Uint8Array(await Bun.file(cfg.bootrom).arrayBuffer()) : undefined;
    const regions = setupMemory(vm, cfg.memory.size, cfg.memory.wired, rom);
    const mem = viewMemory(regions);
    prepared = prepare(cfg);

    const state = new SharedArrayBuffer(STATE_BYTES);
    const ctrlBuf = new SharedArrayBuffer(Ctrl.SLOTS * 4);
    const ctrl = new Int32Array(ctrlBuf);
    ctrl[Ctrl.CPUS] = cfg.cpus;
    const ioWakeFd = host.eventfd();

    let resolveExit!: (v: { code: number; reason: string }) => void;
    const exited = new Promise<{ code: number; reason: string }>((r) => (resolveExit = r));
    let stopped = 0;
    let resolveStopped!: () => void;
    const allStopped = new Promise<void>((r) => (resolveStopped = r));
    const exits: number[] = new Array(cfg.cpus).fill(0);
    const onMsg = (m: WorkerMsg) => {
      switch (m.type) {
        case "exit": resolveExit({ code: m.code, reason: m.reason }); break;
        case "log": log(m.text); break;
        case "error":
          log(m.text);
          platform.requestExit(4, m.text.split("\n")[0]!);
          break;
        case "stopped":
          if (m.vcpu >= 0) exits[m.vcpu] = m.exits;
          if (++stopped === cfg.cpus + 1) resolveStopped();
          break;
      }
    };
    const platform = makePlatform({ vm, ctrl, cpus: cfg.cpus, ioWakeFd, post: onMsg });
    const machine = buildMachine({ cfg, mem, state, platform, prepared, role: "main" });
    powerOnMachine(machine);

    setupVcpus(vm, cfg);
    await loadGuest(vm, cfg, mem, log);

    pools = startBlkPools(cfg, prepared, regions, onMsg);
    const init: ThreadInit = { cfg, vmId: vm.id, regions, state, ctrl: ctrlBuf, prepared, ioWakeFd, t0, trace: !!opts.trace };
    route = onMsg;
    workers[0]!.postMessage(init);
    for (let i = 0; i < cfg.cpus; i++) workers[i + 1]!.postMessage({ ...init, vcpu: i } satisfies VcpuInit);

    // Halt detection: a kick a second lets each vCPU look at its own state (see runloop.ts kicked()).
    // TSBHYVE_HALT_WATCH_MS changes the period; 0 turns it off (a halted guest then never exits 2).
    const haltMs = Number(process.env.TSBHYVE_HALT_WATCH_MS ?? 1000);
    const haltWatch = haltMs > 0 ? setInterval(() => { for (let i = 0; i < cfg.cpus; i++) vm.vcpu(i).kick(); }, haltMs) : undefined;
    opts.onStart?.({ stop: (code, reason) => platform.requestExit(code, reason), machine, vm });
    const result = await exited;
    clearInterval(haltWatch);

    // Stop: STOPPING is already set by requestExit; keep kicking until every Worker has left.
    const kicker = setInterval(() => {
      for (let i = 0; i < cfg.cpus; i++) vm.vcpu(i).kick();
      host.signal(ioWakeFd);
    }, 50);
    const timeout = new Promise<"timeout">((r) => setTimeout(() => r("timeout"), 5000));
    const how = await Promise.race([allStopped, timeout]);
    clearInterval(kicker);
    if (how === "timeout") log(`warning: ${cfg.cpus + 1 - stopped} worker(s) did not stop within 5 s`);
    if (Atomics.load(ctrl, Ctrl.STATE) !== RunState.STOPPING) throw new Error("internal: exit without STOPPING state");
    const firstUs = Atomics.load(ctrl, Ctrl.FIRST_RUN_US);
    host.close(ioWakeFd);
    return { ...result, firstEntryMs: firstUs / 1000, exits };
  } finally {
    await pools?.stop();
    for (const w of workers) w.terminate();
    if (prepared) release(prepared);
    vm.destroy();
  }
}
