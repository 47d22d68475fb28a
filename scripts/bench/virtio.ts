/**
 * The virtio benchmark: one stock Debian guest (1 vCPU, 512 MiB, the same kernel, initramfs, disk file
 * and tap) run under tsbhyve and under QEMU (-accel kvm, vhost off, virtio-blk + virtio-net PCI) inside
 * the same nested L1, alternating, twice each. The guest runs:
 *   blkbench (scripts/bench/blkbench.c, static, O_DIRECT): sequential 1 MiB read and write, 4 KiB random
 *     read and write with 8 threads (queue depth 8) and 4 KiB random read with 1 thread (latency-bound);
 *   iperf3 against the host end of the tap inside a network namespace: guest → host and host → guest (-R).
 * The disk is a 256 MiB file in L1's /dev/shm (both VMMs on the host page cache, tsbhyve's default and
 * QEMU's cache=writeback). Figures are medians of the runs and ratios tsbhyve / QEMU (higher is better);
 * a third column runs tsbhyve with `iothreads = 8` (bhyve's block Worker pool; the default for this
 * page-cache image is none: requests inline on the I/O Worker).
 *
 *   bun scripts/bench/virtio.ts          (also the second half of `npm run bench`)
 *   BENCH_VIRTIO_RUNS=1 for one run each
 */
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { hostBinaryFiles, prepareGuest } from "../../src/guest/index.ts";
import { describeResult, requireQemu, runNested } from "../../test/harness/nested.ts";
import { L2_DEVICE_CPUS as VCPUS, l2Init } from "../../test/harness/l2.ts";

const RUNS = Number(process.env.BENCH_VIRTIO_RUNS ?? 2);
const SECS = Number(process.env.BENCH_VIRTIO_SECS ?? 4);
const MAC = "58:9c:fc:00:be:01";

/** Workloads in the order the guest runs them: [key, blkbench arguments]. */
const BLK_RUNS: [string, string][] = [
  ["seqread", "seqread 1048576 1"],
  ["seqwrite", "seqwrite 1048576 1"],
  ["randread-qd8", "randread 4096 8"],
  ["randwrite-qd8", "randwrite 4096 8"],
  ["randread-qd1", "randread 4096 1"],
];

const L2_INIT = l2Init(`
i=0; while { [ ! -b /dev/vda ] || [ ! -e /sys/class/net/eth0 ]; } && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
ip link set lo up; ip addr add 10.77.0.2/24 dev eth0; ip link set eth0 up
${BLK_RUNS.map(([k, a]) => `echo "BENCH-BLK ${k} $(/bin/blkbench /dev/vda ${a} ${SECS} 2>&1)"`).join("\n")}
i=0; while ! ping -c 1 -W 1 10.77.0.1 >/dev/null 2>&1 && [ $i -lt 20 ]; do i=$((i + 1)); done
echo "BENCH-NET tx $(iperf3 -c 10.77.0.1 -t ${SECS} -f m 2>&1 | grep -E 'sender$' | tail -1)"
echo "BENCH-NET rx $(iperf3 -c 10.77.0.1 -t ${SECS} -f m -R 2>&1 | grep -E 'receiver$' | tail -1)"
`);

const job = (g: { bzImage: string; initrd: string }) => `
set -u
dd if=/dev/urandom of=/dev/shm/bench.img bs=1M count=256 status=none
ip netns add tsbb
ip -n tsbb link set lo up
ip -n tsbb tuntap add dev tsbtap0 mode tap
ip -n tsbb addr add 10.77.0.1/24 dev tsbtap0
ip -n tsbb link set tsbtap0 up
ip netns exec tsbb iperf3 -s -D
cat > /dev/shm/bench.toml <<EOF
name = "bench"
cpus = ${VCPUS}
[memory]
size = "512M"
[boot]
kernel = "${g.bzImage}"
initrd = "${g.initrd}"
cmdline = "console=ttyS0 quiet"
[lpc.com1]
path = "stdio"
[pci.0.4.0]
device = "virtio-blk"
path = "/dev/shm/bench.img"
[pci.0.5.0]
device = "virtio-net"
backend = "tsbtap0"
mac = "${MAC}"
EOF
sed 's|^path = "/dev/shm/bench.img"$|&\\niothreads = 8|' /dev/shm/bench.toml > /dev/shm/bench-pool.toml
for run in ${Array.from({ length: RUNS }, (_, i) => i + 1).join(" ")}; do
  t0=$(tsb_now_ms)
  timeout -s KILL 300 ip netns exec tsbb "$TSB_TSBHYVE" /dev/shm/bench.toml > "$TSB_OUT/tsbhyve.$run.log" 2>&1 < /dev/null
  tsb_result "tsbhyve-run-$run" pass "rc=$? ms=$(( $(tsb_now_ms) - t0 ))"
  timeout -s KILL 300 ip netns exec tsbb "$TSB_TSBHYVE" /dev/shm/bench-pool.toml > "$TSB_OUT/pool.$run.log" 2>&1 < /dev/null
  t0=$(tsb_now_ms)
  timeout -s KILL 300 ip netns exec tsbb qemu-system-x86_64 -accel kvm -cpu host -M pc -smp ${VCPUS} -m 512M \\
    -kernel "${g.bzImage}" -initrd "${g.initrd}" -append "console=ttyS0 quiet" \\
    -display none -nodefaults -no-user-config -serial stdio -no-reboot \\
    -drive file=/dev/shm/bench.img,format=raw,if=none,id=d0,cache=writeback \\
    -device virtio-blk-pci,drive=d0 \\
    -netdev tap,id=n0,ifname=tsbtap0,script=no,downscript=no,vhost=off -device virtio-net-pci,netdev=n0,mac=${MAC} \\
    > "$TSB_OUT/qemu.$run.log" 2>&1 < /dev/null
  tsb_result "qemu-run-$run" pass "rc=$? ms=$(( $(tsb_now_ms) - t0 ))"
done
exit 0
`;

interface Figures { [key: string]: number }

/** The figures of one guest log: blk MB/s and IOPS per workload, iperf3 Mbit/s per direction. */
export function parseBenchLog(log: string): Figures {
  const f: Figures = {};
  for (const line of log.split(/\r?\n/)) {
    let m = /^BENCH-BLK (\S+) BLKBENCH \S+ .*iops=(\d+) mbps=([\d.]+) errors=(\d+)/.exec(line);
    if (m && m[4] === "0") { f[`${m[1]} IOPS`] = Number(m[2]); f[`${m[1]} MB/s`] = Number(m[3]); continue; }
    m = /^BENCH-NET (tx|rx) .*?([\d.]+) Mbits\/sec/.exec(line);
    if (m) f[`net ${m[1] === "tx" ? "guest→host" : "host→guest"} Gbit/s`] = Number(m[2]) / 1000;
  }
  return f;
}

const median = (xs: number[]) => { const s = [...xs].sort((a, b) => a - b); return s.length ? s[(s.length - 1) >> 1]! : NaN; };

export async function runVirtioBench(): Promise<void> {
  requireQemu();
  const blkbench = join(mkdtempSync(join(tmpdir(), "tsb-bench-")), "blkbench");
  const cc = spawnSync("gcc", ["-O2", "-static", "-pthread", "-o", blkbench, join(import.meta.dir, "blkbench.c")], { encoding: "utf8" });
  if (cc.status !== 0) throw new Error(`gcc blkbench.c: ${cc.stderr}`);
  const iperf = spawnSync("sh", ["-c", "command -v iperf3"], { encoding: "utf8" }).stdout.trim();
  if (!iperf) throw new Error("iperf3 not found: apt-get install iperf3");
  const g = await prepareGuest({
    init: L2_INIT,
    modules: ["virtio_pci", "virtio_blk", "virtio_net"],
    extraFiles: [{ path: "/bin/blkbench", hostPath: blkbench, mode: 0o755 }, ...hostBinaryFiles([iperf])],
  });
  console.log(`virtio benchmark: nested L1, guest ${VCPUS} vCPU(s) / 512 MiB, ${RUNS} run(s) each, ${SECS} s per workload`);
  const r = await runNested({ name: "bench-virtio", script: job(g), timeoutMs: 1_800_000, idleTimeoutMs: 400_000, keepJobDir: true });
  const out = join(r.jobDir, "out");
  const runs = { tsbhyve: [] as Figures[], qemu: [] as Figures[], pool: [] as Figures[] };
  for (const vmm of ["tsbhyve", "qemu", "pool"] as const) {
    for (let i = 1; i <= RUNS; i++) {
      try { runs[vmm].push(parseBenchLog(readFileSync(join(out, `${vmm}.${i}.log`), "utf8"))); } catch { /* missing log: reported below */ }
    }
  }
  const keys = [...BLK_RUNS.flatMap(([k]) => [`${k} MB/s`, `${k} IOPS`]), "net guest→host Gbit/s", "net host→guest Gbit/s"];
  console.log(`${"measure".padEnd(26)} ${"tsbhyve".padStart(10)} ${"qemu".padStart(10)}  ratio  ${"iothreads=8".padStart(11)}  ratio`);
  for (const k of keys) {
    if (k.endsWith("IOPS") && k.startsWith("seq")) continue;
    if (k.endsWith("MB/s") && k.startsWith("rand")) continue;
    const t = median(runs.tsbhyve.map((f) => f[k]!).filter((x) => x !== undefined));
    const q = median(runs.qemu.map((f) => f[k]!).filter((x) => x !== undefined));
    const i = median(runs.pool.map((f) => f[k]!).filter((x) => x !== undefined));
    const fmt = (x: number) => (Number.isNaN(x) ? "—" : x >= 100 ? x.toFixed(0) : x.toFixed(2)).padStart(10);
    const rat = (a: number) => (Number.isNaN(a / q) ? "—" : (a / q).toFixed(2)).padStart(5);
    console.log(`${k.padEnd(26)} ${fmt(t)} ${fmt(q)}  ${rat(t)}  ${fmt(i).padStart(11)}  ${rat(i)}`);
  }
  if (!runs.tsbhyve.length || !runs.qemu.length) console.log(describeResult(r));
  console.log(`logs: ${out}`);
  if (r.ok && Object.values(runs).every((x) => x.length === RUNS && x.every((f) => Object.keys(f).length === BLK_RUNS.length * 2 + 2))) rmSync(r.jobDir, { recursive: true, force: true });
}

if (import.meta.main) await runVirtioBench();
