/**
 * Tier 3 part, virtio-net (booted together with other devices by runL2Parts, test/harness/l2.ts): Debian's
 * kernel with its own virtio_pci and virtio_net drivers, on a Linux tap inside a network namespace of L1.
 * - L1: namespace tsbnet; tsbhyve runs there (`ip netns exec`, the run's prefix) and creates the tap
 *   `tsbtap0` (backend, mtu = 4000: the created interface gets that MTU); `iperf3 -s -D` runs in the
 *   namespace and a background step gives each new tap (one per boot attempt) the host end 10.99.0.1/24.
 *   After the run the tap tsbhyve created must be gone.
 * - Guest (pci 0:3.0, no `mac`: bhyve's generated address is expected): the PCI identity, the MAC and MTU
 *   the kernel sees and the negotiated features (mergeable buffers, TSO both ways, checksum offloads);
 *   10.99.0.2/24 with busybox `ip`, ping 10.99.0.1, `iperf3 -c 10.99.0.1 -t 3` and `-R` (the host's iperf3
 *   and its shared libraries copied into the initramfs), reporting Gbit/s.
 */
import { hostBinaryFiles } from "../../../src/guest/index.ts";
import { formatMac, generateMac } from "../../../src/virtio/net/device.ts";
import type { L2Part } from "../../harness/l2.ts";

const MTU = 4000;
export const NET_NS = "tsbnet";

/** The part for a VM named `vm` (the generated MAC depends on the name). */
export const netPart = (vm: string): L2Part => {
  const MAC = formatMac(generateMac(vm, 3, 0));
  return {
    modules: ["virtio_pci", "virtio_net"],
    extraFiles: hostBinaryFiles(["/usr/bin/iperf3"]),
    toml: `[pci."0.3.0"]\ndevice = "virtio-net"\nbackend = "tsbtap0"\nmtu = ${MTU}\n`,
    checks: `
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
`,
    // tsbhyve creates the tap on each boot (tsb_l2_boot may boot twice): the helper gives every new
    // tsbtap0 the host address, reports the first, and stops when the job's after step says so.
    before: `
ip netns add ${NET_NS} && ip -n ${NET_NS} link set lo up
ip netns exec ${NET_NS} iperf3 -s -D -I /tmp/iperf3.pid --logfile "$TSB_OUT/iperf3-server.log"
rm -f /tmp/tsbnet-stop
(
  n=0
  while [ ! -e /tmp/tsbnet-stop ]; do
    if ip -n ${NET_NS} link show tsbtap0 >/dev/null 2>&1 && ! ip -n ${NET_NS} addr show tsbtap0 | grep -q 10.99.0.1/; then
      ip -n ${NET_NS} addr add 10.99.0.1/24 dev tsbtap0
      n=$((n + 1))
      if [ $n = 1 ]; then
        ip -n ${NET_NS} link show tsbtap0 | grep -q "mtu ${MTU}" && tsb_result net-host-tap pass "$(ip -n ${NET_NS} -br link show tsbtap0)" || tsb_result net-host-tap fail "$(ip -n ${NET_NS} link show 2>&1 | tr '\\n' ';')"
      fi
    fi
    sleep 0.1
  done
) &
`,
    after: `
touch /tmp/tsbnet-stop
ip -n ${NET_NS} link show tsbtap0 >/dev/null 2>&1 && tsb_result net-tap-gone fail "tsbtap0 still exists after tsbhyve exited" || tsb_result net-tap-gone pass "created tap removed at exit"
[ -s /tmp/iperf3.pid ] && kill "$(cat /tmp/iperf3.pid)" 2>/dev/null
wait
`,
    expect: ["net-host-tap", "net-pci", "net-mac", "net-mtu", "net-features", "net-link", "net-ping", "net-iperf-tx", "net-iperf-rx", "net-tap-gone"],
  };
};
