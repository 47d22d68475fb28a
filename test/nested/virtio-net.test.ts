/**
 * Tier 3, virtio-net: Debian's kernel with its own virtio_pci and virtio_net drivers under dist/tsbhyve in
 * the nested harness, on a Linux tap inside a network namespace of L1.
 * - L1 job: creates namespace tsbnet and runs tsbhyve there (`ip netns exec`); tsbhyve creates the tap
 *   `tsbtap0` (backend, mtu = 4000: the created interface gets that MTU); the job gives the host end
 *   10.99.0.1/24 and starts `iperf3 -s -D` in the namespace.
 * - L2 /init (pci 0:3.0, no `mac`: bhyve's generated address is expected): checks the PCI identity, the
 *   MAC and MTU the kernel sees and the negotiated features (mergeable buffers, TSO both ways, checksum
 *   offloads), configures 10.99.0.2/24 with busybox `ip`, pings 10.99.0.1, and runs `iperf3 -c 10.99.0.1
 *   -t 3` and `-R` (the host's iperf3 and its shared libraries copied into the initramfs), reporting Gbit/s.
 */
import { expect, test } from "bun:test";
import { spawnSync } from "node:child_process";
import { existsSync, realpathSync, rmSync } from "node:fs";
import { prepareGuest, type ExtraFile } from "../../src/guest/index.ts";
import { formatMac, generateMac } from "../../src/virtio/net/device.ts";
import { describeResult, requireQemu, runNested } from "../harness/nested.ts";

const VM = "virtio-net";
const MAC = formatMac(generateMac(VM, 3, 0));
const MTU = 4000;

/** /usr/bin/iperf3 with every library ldd names and the dynamic loader, at their paths. */
function iperf3Files(): ExtraFile[] {
  const bin = "/usr/bin/iperf3";
  if (!existsSync(bin)) throw new Error("iperf3 not found: apt-get install iperf3");
  const ldd = spawnSync("ldd", [bin], { encoding: "utf8" });
  if (ldd.status !== 0) throw new Error(`ldd ${bin}: ${ldd.stderr}`);
  const files: ExtraFile[] = [{ path: bin, hostPath: bin, mode: 0o755 }];
  for (const line of ldd.stdout.split("\n")) {
    const m = /(?:=>\s*)?(\/\S+)\s+\(0x/.exec(line);
    if (m) files.push({ path: m[1]!, hostPath: realpathSync(m[1]!), mode: 0o755 });
  }
  return files;
}

const L2_INIT = `#!/bin/sh
export PATH=/sbin:/bin:/usr/sbin:/usr/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
/sbin/tsb-load-modules
echo "TSB-GUEST-UP $(cut -d' ' -f1 /proc/uptime)"
r() { n=$1; s=$2; shift 2; echo "TSB-L2 $n $s $*"; }
up() { cut -d' ' -f1 /proc/uptime; }
i=0; while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
d=/sys/bus/pci/devices/0000:00:03.0
id="$(cat $d/vendor 2>/dev/null):$(cat $d/device 2>/dev/null)"
drv=$(basename "$(readlink $d/driver 2>/dev/null)")
[ "$id" = "0x1af4:0x1000" ] && [ "$drv" = virtio-pci ] && r net-pci pass "$id $drv" || r net-pci fail "id=$id driver=[$drv]"
mac=$(cat /sys/class/net/eth0/address 2>/dev/null); mtu=$(cat /sys/class/net/eth0/mtu 2>/dev/null)
[ "$mac" = "${MAC}" ] && r net-mac pass "$mac" || r net-mac fail "[$mac] expected ${MAC}; $(ls /sys/class/net | tr '\\n' ' ')"
[ "$mtu" = "${MTU}" ] && r net-mtu pass "$mtu" || r net-mtu fail "[$mtu]"
f=$(cat /sys/bus/virtio/devices/virtio0/features 2>/dev/null)
# negotiated bits: 0 CSUM, 1 GUEST_CSUM, 3 MTU, 5 MAC, 7 GUEST_TSO4, 11 HOST_TSO4, 15 MRG_RXBUF, 16 STATUS, 32 VERSION_1
ok=1; for b in 0 1 3 5 7 11 15 16 32; do [ "$(echo "$f" | cut -c$((b + 1)))" = 1 ] || ok=0; done
[ $ok = 1 ] && r net-features pass "$f" || r net-features fail "[$f]"
ip addr add 10.99.0.2/24 dev eth0 && ip link set eth0 up
i=0; while ! grep -q up /sys/class/net/eth0/operstate && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
[ "$(cat /sys/class/net/eth0/carrier 2>/dev/null)" = 1 ] && r net-link pass "carrier 1, operstate $(cat /sys/class/net/eth0/operstate)" || r net-link fail "carrier=[$(cat /sys/class/net/eth0/carrier 2>&1)]"
p=$(ping -c 3 -W 10 10.99.0.1 2>&1)
case "$p" in *" 0% packet loss"*) r net-ping pass "$(echo "$p" | tail -n 1)" ;; *) r net-ping fail "$(echo "$p" | tr '\\n' ';')" ;; esac
rate() { awk '/receiver/ { for (i = 1; i <= NF; i++) if ($i ~ /bits\\/sec$/) { v = $(i - 1); u = $i } } END { if (u == "") exit 1; if (u ~ /^K/) v /= 1e6; else if (u ~ /^M/) v /= 1e3; else if (u !~ /^G/) v /= 1e9; printf "%.3f", v }'; }
for dir in tx rx; do
  opt=; [ $dir = rx ] && opt=-R
  t0=$(up)
  out=$(iperf3 -c 10.99.0.1 -t 3 $opt 2>&1)
  g=$(echo "$out" | rate)
  if [ -n "$g" ]; then r net-iperf-$dir pass "$g Gbit/s (guest $( [ $dir = tx ] && echo sends || echo receives ); $(awk -v a=$t0 -v b=$(up) 'BEGIN { printf "%.1f", b - a }')s)"; else r net-iperf-$dir fail "$(echo "$out" | tail -n 4 | tr '\\n' ';')"; fi
done
echo "TSB-L2-DONE $(up)"
poweroff -f
`;

const JOB = `
ip netns add tsbnet && ip -n tsbnet link set lo up
log="$TSB_OUT/net.log"
t0=$(tsb_now_ms)
( timeout -s KILL 300 ip netns exec tsbnet "$TSB_TSBHYVE" "$TSB_JOB_DIR/net.toml" > "$log" 2>&1 < /dev/null; echo $? > "$TSB_OUT/rc" ) &
i=0; while ! ip -n tsbnet link show tsbtap0 >/dev/null 2>&1 && [ $i -lt 600 ]; do sleep 0.1; i=$((i + 1)); done
ip -n tsbnet addr add 10.99.0.1/24 dev tsbtap0
ip -n tsbnet link show tsbtap0 | grep -q "mtu ${MTU}" && tsb_result net-host-tap pass "$(ip -n tsbnet -br link show tsbtap0)" || tsb_result net-host-tap fail "$(ip -n tsbnet link show 2>&1 | tr '\\n' ';')"
ip netns exec tsbnet iperf3 -s -D -I /tmp/iperf3.pid --logfile "$TSB_OUT/iperf3-server.log"
wait
t1=$(tsb_now_ms)
rc=$(cat "$TSB_OUT/rc")
grep -a '^TSB-L2 ' "$log" | tr -d '\\r' | while read -r _ n s d; do tsb_result "$n" "$s" "$d"; done
up=$(grep -a '^TSB-GUEST-UP' "$log" | tr -d '\\r' | cut -d' ' -f2); done_=$(grep -a '^TSB-L2-DONE' "$log" | tr -d '\\r' | cut -d' ' -f2)
[ "$rc" = 1 ] && tsb_result exit pass "rc=$rc run=$((t1 - t0))ms guest-up=\${up}s guest-done=\${done_}s" || { tsb_result exit fail "rc=$rc"; tail -n 40 "$log" | sed 's/^/[net] /'; }
ip -n tsbnet link show tsbtap0 >/dev/null 2>&1 && tsb_result net-tap-gone fail "tsbtap0 still exists after tsbhyve exited" || tsb_result net-tap-gone pass "created tap removed at exit"
[ -s /tmp/iperf3.pid ] && kill "$(cat /tmp/iperf3.pid)" 2>/dev/null
exit 0
`;

test(
  "virtio-net under a real kernel (nested): tap in a netns, MAC/MTU/features, ping and iperf3 both ways",
  async () => {
    requireQemu();
    const g = await prepareGuest({ init: L2_INIT, modules: ["virtio_pci", "virtio_net"], extraFiles: iperf3Files() });
    const toml = `name = "${VM}"\ncpus = 2\n[memory]\nsize = "512M"\n[boot]\nkernel = "${g.bzImage}"\ninitrd = "${g.initrd}"\n` +
      `cmdline = "console=ttyS0 quiet"\n[lpc.com1]\npath = "stdio"\n` +
      `[pci."0.3.0"]\ndevice = "virtio-net"\nbackend = "tsbtap0"\nmtu = ${MTU}\n`;
    const r = await runNested({ name: "virtio-net", script: JOB, timeoutMs: 500_000, idleTimeoutMs: 300_000, keepJobDir: true, files: { "net.toml": toml } });
    const why = describeResult(r);
    console.log(why);
    for (const c of ["net-host-tap", "net-pci", "net-mac", "net-mtu", "net-features", "net-link", "net-ping", "net-iperf-tx", "net-iperf-rx", "exit", "net-tap-gone"]) {
      expect(r.results.get(c)?.status, `${c}\n${why}`).toBe("pass");
    }
    if (r.ok) rmSync(r.jobDir, { recursive: true, force: true });
  },
  600_000,
);
