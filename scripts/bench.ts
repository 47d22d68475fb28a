/**
 * `npm run bench`: tsbhyve side by side with QEMU (-accel kvm) on the same boot-ROM payload, as ratios.
 *   - port-I/O exits per second (ITER writes to port 0x80, timed from the first to the last serial byte)
 *   - userspace cost per exit with the kernel call mocked (the real exit loop, bus and a POST-port device)
 *   - time from process start to the first guest instruction (to the first serial byte, both sides)
 *   - VMM resident memory with 1 and 2 vCPUs
 *   - virtio: userspace cost per request with the kernel calls mocked (scripts/bench/virtio-mock.ts), then
 *     virtio-blk MB/s and IOPS and virtio-net Gbit/s in a real guest, tsbhyve vs QEMU in the same nested run
 *     (scripts/bench/virtio.ts; BENCH_VIRTIO=0 skips it)
 * Absolute figures on these machines mean little (the kernel emulates the guest); the ratios are the point.
 */
import { $ } from "bun";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { buildBinary } from "./build.ts";
import { Bus } from "../src/devices/bus.ts";
import { EXIT, ExitReason, DIR_WRITE, type VcpuHandle } from "../src/vmm/index.ts";
import { runVcpu } from "../src/vcpu/runloop.ts";
import { Ctrl, RunState } from "../src/vm/shared.ts";

const dir = mkdtempSync(join(tmpdir(), "tsbhyve-bench-"));
const bin = await buildBinary();
const ITER = Number(process.env.BENCH_ITER ?? 200_000);
const MEM = "256M";

async function payload(iter: number): Promise<string> {
  const out = join(dir, `pio-${iter}.bin`);
  await $`nasm -f bin -DITER=${iter} -o ${out} ${join(import.meta.dir, "bench/pio.asm")}`.quiet();
  return out;
}

function tsbConfig(rom: string, cpus: number): string {
  const p = join(dir, `guest-${cpus}.toml`);
  writeFileSync(p, `name = "bench"\ncpus = ${cpus}\n[memory]\nsize = "${MEM}"\n[lpc]\nbootrom = "${rom}"\npc-testdev = true\n[lpc.com1]\npath = "stdio"\n`);
  return p;
}

const qemuArgs = (rom: string, cpus: number) => [
  "qemu-system-x86_64", "-accel", "kvm", "-M", "pc", "-cpu", "host,-arch-capabilities", "-smp", String(cpus), "-m", MEM, "-bios", rom,
  "-display", "none", "-nodefaults", "-no-user-config", "-serial", "stdio", "-device", "isa-debug-exit,iobase=0xf4,iosize=1",
];
const tsbArgs = (rom: string, cpus: number) => [bin, tsbConfig(rom, cpus)];

interface Timing { firstByteMs: number; lastByteMs: number; totalMs: number }

/** Spawn, time the first and last serial bytes. */
async function timed(argv: string[]): Promise<Timing> {
  const t0 = performance.now();
  const p = Bun.spawn(argv, { stdout: "pipe", stderr: "pipe", stdin: "ignore" });
  let first = 0, last = 0, text = "";
  for await (const chunk of p.stdout) {
    const now = performance.now() - t0;
    const s = new TextDecoder().decode(chunk);
    if (s.includes("B") && !first) first = now;
    if (s.includes("E")) last = now;
    text += s;
  }
  await p.exited;
  if (!first || !last) throw new Error(`${argv[0]}: payload did not finish (output ${JSON.stringify(text)}, stderr ${await new Response(p.stderr).text()})`);
  return { firstByteMs: first, lastByteMs: last, totalMs: performance.now() - t0 };
}

async function rssKiB(argv: string[]): Promise<number> {
  const p = Bun.spawn(argv, { stdout: "pipe", stderr: "ignore", stdin: "ignore" });
  const reader = p.stdout.getReader();
  await reader.read(); // first serial byte: the guest runs
  await Bun.sleep(500);
  const status = await Bun.file(`/proc/${p.pid}/status`).text();
  p.kill("SIGKILL");
  await p.exited;
  return Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? NaN);
}

function mockedExitCostNs(n: number): number {
  const page = new DataView(new ArrayBuffer(EXIT.bytes));
  page.setUint32(EXIT.reason, ExitReason.IO, true);
  page.setUint32(EXIT.size, 1, true);
  page.setUint32(EXIT.count, 1, true);
  page.setUint32(EXIT.dir, DIR_WRITE, true);
  page.setBigUint64(EXIT.addr, 0x80n, true);
  const ctrl = new Int32Array(new SharedArrayBuffer(Ctrl.SLOTS * 4));
  let left = n, last = 0;
  const vcpu = { run: () => { if (--left === 0) Atomics.store(ctrl, Ctrl.STATE, RunState.STOPPING); return ExitReason.IO; } } as unknown as VcpuHandle;
  const bus = new Bus();
  const lockWord = new Int32Array(new SharedArrayBuffer(8));
  bus.register({
    name: "post", ranges: [{ space: "pio", base: 0x80, size: 1 }],
    lock: { acquire: () => { Atomics.compareExchange(lockWord, 0, 0, 1); }, release: () => { Atomics.store(lockWord, 0, 0); } },
    read: () => last, write: (_s, _b, _o, _z, v) => { last = v; },
  });
  const platform = { irqLine() {}, msi() {}, requestExit() {}, wakeIo() {}, log() {} };
  const t = Bun.nanoseconds();
  runVcpu({ index: 0, vcpu, exit: page, bus, platform, ctrl, hasIrqchip: true });
  return (Bun.nanoseconds() - t) / n;
}

const ratio = (a: number, b: number) => (a / b).toFixed(2);
const rom = await payload(ITER);
const romSmall = await payload(1);
const romForever = await payload(0x7fffffff);

console.log(`payload: ${ITER} port writes; guest RAM ${MEM}; median of 3 runs each`);
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1]!;
const tsbRuns: Timing[] = [], qemuRuns: Timing[] = [];
for (let i = 0; i < 3; i++) { tsbRuns.push(await timed(tsbArgs(rom, 1))); qemuRuns.push(await timed(qemuArgs(rom, 1))); }
const rate = (t: Timing[]) => ITER / (median(t.map((x) => x.lastByteMs - x.firstByteMs)) / 1000);
const tsbRate = rate(tsbRuns), qemuRate = rate(qemuRuns);
console.log(`port-I/O exits/s      tsbhyve ${tsbRate.toFixed(0).padStart(8)}   qemu ${qemuRate.toFixed(0).padStart(8)}   ratio ${ratio(tsbRate, qemuRate)} (higher is better)`);

const startT: number[] = [], startQ: number[] = [];
for (let i = 0; i < 3; i++) { startT.push((await timed(tsbArgs(romSmall, 1))).firstByteMs); startQ.push((await timed(qemuArgs(romSmall, 1))).firstByteMs); }
console.log(`start → first output  tsbhyve ${median(startT).toFixed(1).padStart(6)} ms  qemu ${median(startQ).toFixed(1).padStart(6)} ms  ratio ${ratio(median(startT), median(startQ))} (lower is better)`);

for (const cpus of [1, 2]) {
  const t = await rssKiB(tsbArgs(romForever, cpus)), q = await rssKiB(qemuArgs(romForever, cpus));
  console.log(`VMM RSS, ${cpus} vCPU${cpus > 1 ? "s" : " "}      tsbhyve ${(t / 1024).toFixed(1).padStart(6)} MiB qemu ${(q / 1024).toFixed(1).padStart(6)} MiB ratio ${ratio(t, q)} (lower is better)`);
}

mockedExitCostNs(200_000); // warm up the JIT
const ns = median([mockedExitCostNs(1_000_000), mockedExitCostNs(1_000_000), mockedExitCostNs(1_000_000)]);
console.log(`userspace per exit (kernel call mocked): ${ns.toFixed(0)} ns  (the measured exit itself: ${(1e9 / tsbRate).toFixed(0)} ns)`);

// --- virtio: userspace cost per request (mocked), then the nested side-by-side run (BENCH_VIRTIO=0 skips it)
const { mockedVirtioCosts } = await import("./bench/virtio-mock.ts");
for (const c of mockedVirtioCosts()) console.log(`userspace per request (kernel calls mocked), ${c.name}: ${c.ns.toFixed(0)} ns`);
if (process.env.BENCH_VIRTIO !== "0") {
  const { runVirtioBench } = await import("./bench/virtio.ts");
  await runVirtioBench();
}
