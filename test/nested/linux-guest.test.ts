/**
 * Tier 3: Debian's stock kernel with its own drivers, booted by dist/tsbhyve as an L2 guest inside the
 * nested harness (QEMU TCG L1 with emulated SVM). Two guest boots check everything this issue promises:
 *   boot 1 (cpus = 2): the guest reaches its shell, sees 2 CPUs, its 8250 driver finds a 16550A on IRQ 4
 *                      and runs it interrupt-driven, ACPI tables are there; then `poweroff` → exit 1
 *   boot 2:            `reboot` → exit 0
 */
import { expect, test } from "bun:test";
import { prepareGuest } from "../../src/guest/index.ts";
import { describeResult, requireQemu, runNested } from "../harness/nested.ts";

/** The L2 guest's /init: one parseable line per check ("TSB-L2 <name> <pass|fail> <detail>"). */
const L2_INIT = `#!/bin/sh
export PATH=/sbin:/bin:/usr/sbin:/usr/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
echo "TSB-GUEST-UP $(cut -d' ' -f1 /proc/uptime)"
r() { n=$1; s=$2; shift 2; echo "TSB-L2 $n $s $*"; }
want() { if [ "$2" = "$3" ]; then r "$1" pass "$2"; else r "$1" fail "got=$2 want=$3"; fi; }
want shell "$(echo shell-ok)" shell-ok
want nproc "$(nproc)" 2
want cpus-online "$(cat /sys/devices/system/cpu/online)" 0-1
uart=$(grep '^0:' /proc/tty/driver/serial)
case "$uart" in *uart:16550A*port:000003F8*irq:4*) r uart-16550a pass "$uart" ;; *) r uart-16550a fail "$uart" ;; esac
irqs() { awk '/ttyS0/ { s = 0; for (i = 2; i <= NF && $i ~ /^[0-9]+$/; i++) s += $i; print s }' /proc/interrupts; }
a=$(irqs)
i=0; while [ $i -lt 20 ]; do echo "serial traffic line $i: the quick brown fox jumps over the lazy dog"; i=$((i+1)); done
b=$(irqs)
if [ -n "$a" ] && [ -n "$b" ] && [ "$b" -gt "$a" ]; then r uart-irq pass "ttyS0 interrupts $a -> $b ($(grep ttyS0 /proc/interrupts | tr -s ' '))"; else r uart-irq fail "ttyS0 interrupts '$a' -> '$b'"; fi
t=$(ls /sys/firmware/acpi/tables 2>/dev/null | tr '\\n' ' ')
case "$t" in *APIC*DSDT*FACP*) r acpi-tables pass "$t" ;; *) r acpi-tables fail "$t" ;; esac
grep -q 'IO-APIC' /proc/interrupts && r ioapic pass "" || r ioapic fail "$(head -5 /proc/interrupts)"
cmd=
for a in $(cat /proc/cmdline); do case "$a" in tsb.cmd=*) cmd="\${a#*=}" ;; esac; done
echo "TSB-L2-ACTION $cmd"
case "$cmd" in
  reboot) reboot -f ;;
  *) poweroff -f ;;
esac
sleep 30
echo "TSB-L2 action-ignored fail $cmd"
`;

const guestToml = (kernel: string, initrd: string, cmd: string) => `name = "l2-${cmd}"
cpus = 2
[memory]
size = "256M"
[boot]
kernel = "${kernel}"
initrd = "${initrd}"
cmdline = "console=ttyS0 quiet tsb.cmd=${cmd}"
[lpc.com1]
path = "stdio"
`;

/** Runs one L2 boot in L1 (retried after a triple fault or an early timeout, up to 3 boots), reports its checks. */
const JOB = `
l2() {
  name=$1; cfg=$2; want=$3; retried=
  for try in 1 2 3; do
    log="$TSB_OUT/$name.$try.log"
    t0=$(tsb_now_ms)
    timeout -s KILL 180 "$TSB_TSBHYVE" "$cfg" > "$log" 2>&1 < /dev/null; rc=$?
    ms=$(( $(tsb_now_ms) - t0 ))
    # A boot ended by a triple fault, or killed by the timeout before the guest's marker, is retried (up to
    # 3 boots) and reported: the emulated SVM under TCG hangs ~1 L2 boot in 33 (testing.md) and
    # triple-faults 2-vCPU guests now and then (test/harness/l2.ts, L2_DEVICE_CPUS).
    if tsb_l2_retry $try $rc "$log"; then echo "[$name] attempt $try ended rc=$rc; retrying"; retried="$retried retried(attempt-$try-rc=$rc)"; continue; fi
    break
  done
  up=$(grep -o 'TSB-GUEST-UP [0-9.]*' "$log" | head -1)
  if [ -n "$up" ]; then tsb_result "$name.boot" pass "ms=$ms try=$try uptime=\${up#TSB-GUEST-UP }$retried"; else tsb_result "$name.boot" fail "ms=$ms rc=$rc"; fi
  grep '^TSB-L2 ' "$log" | tr -d '\\r' | while read -r _ n s d; do tsb_result "$name.$n" "$s" "$d"; done
  if [ "$rc" = "$want" ]; then tsb_result "$name.exit" pass "rc=$rc"; else tsb_result "$name.exit" fail "rc=$rc want=$want"; tail -n 25 "$log" | sed "s/^/[$name] /"; fi
}
l2 poweroff "$TSB_JOB_DIR/poweroff.toml" 1
l2 reboot "$TSB_JOB_DIR/reboot.toml" 0
exit 0
`;

test(
  "Debian's stock kernel boots under tsbhyve (nested): SMP, 16550A on IRQ 4, ACPI; poweroff → 1, reboot → 0",
  async () => {
    requireQemu();
    const g = await prepareGuest({ init: L2_INIT, modules: [] });
    const r = await runNested({
      name: "linux-guest", script: JOB, timeoutMs: 600_000, idleTimeoutMs: 300_000,
      files: { "poweroff.toml": guestToml(g.bzImage, g.initrd, "poweroff"), "reboot.toml": guestToml(g.bzImage, g.initrd, "reboot") },
    });
    const why = describeResult(r);
    console.log(why);
    const res = (n: string) => r.results.get(n);
    for (const name of ["boot", "shell", "nproc", "cpus-online", "uart-16550a", "uart-irq", "acpi-tables", "ioapic", "exit"]) {
      expect(res(`poweroff.${name}`)?.status, `poweroff.${name}\n${why}`).toBe("pass");
    }
    expect(res("reboot.boot")?.status, why).toBe("pass");
    expect(res("reboot.exit")?.status, why).toBe("pass");
    expect(res("poweroff.action-ignored"), why).toBeUndefined();
  },
  900_000,
);
