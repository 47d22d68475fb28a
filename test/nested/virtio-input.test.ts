/**
 * Tier 3, virtio-input: Debian's kernel with its own virtio_pci, virtio_input and evdev drivers under
 * dist/tsbhyve in the nested harness. pci 0:6.0 is a built-in tablet, 0:7.0 a built-in keyboard with the
 * `hello` test aid (an LED change from the guest is answered with a KEY_H press and release).
 * - L2 /init: finds both devices in /sys/class/input by their configured names and checks their
 *   capability bits (tablet: EV_ABS with ABS_X/ABS_Y and BTN_LEFT; keyboard: EV_KEY with KEY_H, EV_LED);
 *   then reads the keyboard's /dev/input/eventN in the background, writes a CAPSLOCK LED event to it
 *   (evdev → the driver → statusq), and looks for the KEY_H press among the struct input_event records
 *   read back; powers off (exit 1).
 */
import { expect, test } from "bun:test";
import { prepareGuest } from "../../src/guest/index.ts";
import { describeResult, requireQemu, runNested } from "../harness/nested.ts";

const L2_INIT = `#!/bin/sh
export PATH=/sbin:/bin:/usr/sbin:/usr/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
/sbin/tsb-load-modules
echo "TSB-GUEST-UP $(cut -d' ' -f1 /proc/uptime)"
r() { n=$1; s=$2; shift 2; echo "TSB-L2 $n $s $*"; }
find_input() { for d in /sys/class/input/input*; do [ "$(cat $d/name 2>/dev/null)" = "$1" ] && { echo $d; return; }; done; }
i=0; while { [ -z "$(find_input 'test tablet')" ] || [ -z "$(find_input 'test keyboard')" ]; } && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
for s in 06 07; do
  d=/sys/bus/pci/devices/0000:00:$s.0
  id="$(cat $d/vendor 2>/dev/null):$(cat $d/device 2>/dev/null)"
  drv=$(basename "$(readlink $d/driver 2>/dev/null)")
  [ "$id" = "0x1af4:0x1052" ] && [ "$drv" = virtio-pci ] && r input-pci-$s pass "$id $drv" || r input-pci-$s fail "id=$id driver=[$drv]"
done
t=$(find_input 'test tablet'); k=$(find_input 'test keyboard')
names="$(cat /sys/class/input/input*/name 2>/dev/null | tr '\\n' ',')"
if [ -n "$t" ]; then
  ev=$(cat $t/capabilities/ev); abs=$(cat $t/capabilities/abs); key=$(cat $t/capabilities/key)
  # EV_ABS = bit 3, ABS_X|ABS_Y = 3, BTN_LEFT (0x110) = bit 16 of the fifth 64-bit word: "70000 0 0 0 0"
  [ $((0x$ev & 8)) -ne 0 ] && [ "$abs" = 3 ] && [ "$key" = "70000 0 0 0 0" ] && r input-tablet pass "$t ev=$ev abs=$abs key=[$key]" || r input-tablet fail "$t ev=$ev abs=$abs key=[$key]"
else r input-tablet fail "no 'test tablet' in [$names]"; fi
if [ -n "$k" ]; then
  ev=$(cat $k/capabilities/ev); led=$(cat $k/capabilities/led); key=$(cat $k/capabilities/key)
  [ $((0x$ev & 2)) -ne 0 ] && [ $((0x$ev & 0x20000)) -ne 0 ] && [ "$led" = 7 ] && [ -n "$key" ] && [ "$key" != 0 ] && r input-keyboard pass "$k ev=$ev led=$led key=[$key]" || r input-keyboard fail "$k ev=$ev led=$led key=[$key]"
  e=/dev/input/$(ls $k | grep '^event' | head -n 1)
  cat $e > /tmp/ev &
  pid=$!
  sleep 0.5
  # struct input_event: 16 bytes of time, le16 EV_LED (0x11), le16 LED_CAPSL (1), le32 1
  printf '\\000\\000\\000\\000\\000\\000\\000\\000\\000\\000\\000\\000\\000\\000\\000\\000\\021\\000\\001\\000\\001\\000\\000\\000' > $e
  sleep 1
  kill $pid 2>/dev/null
  recs=$(od -An -v -tu2 /tmp/ev | awk '{ for (i = 1; i <= NF; i++) a[n++] = $i } END { for (k = 0; k + 11 < n; k += 12) printf "%s:%s:%s ", a[k+8], a[k+9], a[k+10] + 65536 * a[k+11] }')
  case " $recs " in *" 1:35:1 "*) r input-event pass "$e: $recs" ;; *) r input-event fail "$e: [$recs] ($(wc -c < /tmp/ev) bytes)" ;; esac
else r input-keyboard fail "no 'test keyboard' in [$names]"; r input-event fail "no keyboard"; fi
echo "TSB-L2-DONE $(cut -d' ' -f1 /proc/uptime)"
poweroff -f
`;

const JOB = `
for try in 1 2; do
  log="$TSB_OUT/input.$try.log"
  t0=$(tsb_now_ms)
  timeout -s KILL 240 "$TSB_TSBHYVE" "$TSB_JOB_DIR/input.toml" > "$log" 2>&1 < /dev/null
  rc=$?
  t1=$(tsb_now_ms)
  if [ $try -eq 1 ] && { [ $rc -eq 137 ] || [ $rc -eq 3 ]; } && ! grep -q TSB-GUEST-UP "$log"; then echo "[input] attempt 1 ended rc=$rc before the marker; retrying"; continue; fi
  break
done
grep '^TSB-L2 ' "$log" | tr -d '\\r' | while read -r _ n s d; do tsb_result "$n" "$s" "$d"; done
[ $rc = 1 ] && tsb_result exit pass "rc=$rc run=$((t1 - t0))ms" || { tsb_result exit fail "rc=$rc"; tail -n 40 "$log" | sed 's/^/[input] /'; }
exit 0
`;

test(
  "virtio-input under a real kernel (nested): a tablet and a keyboard with their names and capabilities, one event read from evdev",
  async () => {
    requireQemu();
    const g = await prepareGuest({ init: L2_INIT, modules: ["virtio_pci", "virtio_input", "evdev"] });
    const toml = `name = "virtio-input"\ncpus = 2\n[memory]\nsize = "256M"\n[boot]\nkernel = "${g.bzImage}"\ninitrd = "${g.initrd}"\n` +
      `cmdline = "console=ttyS0 quiet"\n[lpc.com1]\npath = "stdio"\n` +
      `[pci.0.6.0]\ndevice = "virtio-input"\nmodel = "tablet"\nname = "test tablet"\n` +
      `[pci.0.7.0]\ndevice = "virtio-input"\nmodel = "keyboard"\nname = "test keyboard"\nhello = true\n`;
    const r = await runNested({ name: "virtio-input", script: JOB, timeoutMs: 500_000, idleTimeoutMs: 300_000, files: { "input.toml": toml } });
    const why = describeResult(r);
    console.log(why);
    for (const c of ["input-pci-06", "input-pci-07", "input-tablet", "input-keyboard", "input-event", "exit"]) {
      expect(r.results.get(c)?.status, `${c}\n${why}`).toBe("pass");
    }
  },
  600_000,
);
