/**
 * Tier 3, virtio-console and virtio-input in one boot: Debian's kernel with its own virtio_pci,
 * virtio_console, virtio_input and evdev drivers under dist/tsbhyve in the nested harness.
 *
 * virtio-input: pci 0:6.0 is a built-in tablet, 0:7.0 a built-in keyboard with the `hello` test aid (an LED
 * change from the guest is answered with a KEY_H press and release). The guest finds both in
 * /sys/class/input by their configured names and checks their capability bits (tablet: EV_ABS with
 * ABS_X/ABS_Y and BTN_LEFT; keyboard: EV_KEY with KEY_H, EV_LED); then reads the keyboard's
 * /dev/input/eventN in the background, writes a CAPSLOCK LED event to it (evdev → the driver → statusq),
 * and looks for the KEY_H press among the struct input_event records read back.
 *
 * virtio-console: pci 0:5.0 has two ports, one in each config form: `echo0 = "/tmp/vcon0.sock"` (bhyve's
 * NAME=PATH pair → port 0 named "echo0") and `[pci.0.5.0.port.1] name = "org.tsbhyve.test"`, path
 * /tmp/vcon1.sock. The guest checks /sys/class/virtio-ports/vport*p{0,1}/name, reads a line from port 1
 * and writes it back upper-cased, then powers off (exit 1). In L1 a tiny Bun client ($TSB_BUN) connects to
 * /tmp/vcon1.sock as soon as it exists (long before the guest opens the port: the bytes wait in the
 * socket), sends "hello tsbhyve\n" and waits for "HELLO TSBHYVE" (reconnecting if a boot is retried).
 */
import { expect, test } from "bun:test";
import { prepareGuest } from "../../src/guest/index.ts";
import { L2_DEVICE_CPUS, l2Init } from "../harness/l2.ts";
import { describeResult, requireQemu, runNested } from "../harness/nested.ts";

const NAME = "org.tsbhyve.test";

const L2_INIT = l2Init(`
# ---- virtio-input
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
# ---- virtio-console
i=0; while ! ls /dev/vport*p1 >/dev/null 2>&1 && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
d=/sys/bus/pci/devices/0000:00:05.0
id="$(cat $d/vendor 2>/dev/null):$(cat $d/device 2>/dev/null)"
drv=$(basename "$(readlink $d/driver 2>/dev/null)")
[ "$id" = "0x1af4:0x1003" ] && [ "$drv" = virtio-pci ] && r con-pci pass "$id $drv" || r con-pci fail "id=$id driver=[$drv]"
p1=$(ls /dev/vport*p1 2>/dev/null | head -n 1)
p0=$(ls /dev/vport*p0 2>/dev/null | head -n 1)
[ -c "$p1" ] && [ -c "$p0" ] && r con-ports pass "$p0 $p1 at $(up)s" || r con-ports fail "p0=[$p0] p1=[$p1]; $(ls /dev/vport* 2>&1 | tr '\\n' ' ') $(dmesg | grep -i virtio | tail -5 | tr '\\n' ';')"
n1=$(cat /sys/class/virtio-ports/$(basename "$p1")/name 2>/dev/null)
n0=$(cat /sys/class/virtio-ports/$(basename "$p0")/name 2>/dev/null)
[ "$n1" = "${NAME}" ] && [ "$n0" = echo0 ] && r con-names pass "p0=$n0 p1=$n1" || r con-names fail "p0=[$n0] p1=[$n1]"
t0=$(up)
if read -r l < "$p1"; then
  echo "$l" | tr a-z A-Z > "$p1"
  r con-echo pass "read [$l] at \${t0}s, answered at $(up)s"
else
  r con-echo fail "read from $p1 failed"
fi
sleep 1
`);

/** The host side: connect as soon as the socket exists, send a line, wait for it upper-cased; again if the VM went away. */
const CLIENT = `
import { existsSync } from "node:fs";
const path = process.argv[2]!;
const want = "HELLO TSBHYVE";
const t0 = Date.now(), deadline = t0 + 220_000;
let got = "", note = "", tc = 0;
while (Date.now() < deadline && !got.includes(want)) {
  while (Date.now() < deadline && !existsSync(path)) await Bun.sleep(50);
  got = "";
  const done = Promise.withResolvers<void>();
  let closed = false;
  try {
    const sock = await Bun.connect({
      unix: path,
      socket: {
        data(_s, d) { got += new TextDecoder().decode(d); if (got.includes(want)) done.resolve(); },
        close() { closed = true; done.resolve(); },
        error() {},
      },
    });
    tc = Date.now();
    sock.write("hello tsbhyve\\n");
    await Promise.race([done.promise, Bun.sleep(deadline - Date.now())]);
    sock.end();
  } catch (e) { closed = true; }
  if (closed && !got.includes(want)) { note += " (reconnected)"; await Bun.sleep(500); }
}
const ok = got.includes(want);
console.log(\`TSB-CLIENT \${ok ? "pass" : "fail"} connected after \${tc - t0}ms, answer \${Date.now() - tc}ms after sending; got \${JSON.stringify(got.trim())}\${note}\`);
process.exit(0);
`;

const JOB = `
rm -f /tmp/vcon0.sock /tmp/vcon1.sock
timeout -s KILL 460 "$TSB_BUN" "$TSB_JOB_DIR/client.ts" /tmp/vcon1.sock > "$TSB_OUT/client.log" 2>&1 &
cpid=$!
tsb_l2_boot devs 240 1 "$TSB_TSBHYVE" "$TSB_JOB_DIR/devs.toml"
[ ! -e /tmp/vcon1.sock ] && tsb_result con-socket-removed pass "" || tsb_result con-socket-removed fail "/tmp/vcon1.sock left behind"
[ "$tsb_rc" = 1 ] || kill $cpid 2>/dev/null
wait $cpid
c=$(grep -a '^TSB-CLIENT' "$TSB_OUT/client.log" | head -n 1)
case "$c" in "TSB-CLIENT pass "*) tsb_result con-client pass "\${c#TSB-CLIENT pass }" ;; *) tsb_result con-client fail "[$c] $(tail -n 5 "$TSB_OUT/client.log" | tr '\\n' ' ')" ;; esac
exit 0
`;

test(
  "virtio-console and virtio-input under a real kernel (nested): named ports and a line echoed through a socket; tablet and keyboard capabilities, one event read from evdev",
  async () => {
    requireQemu();
    const g = await prepareGuest({ init: L2_INIT, modules: ["virtio_pci", "virtio_console", "virtio_input", "evdev"] });
    const toml = `name = "virtio-devs"\ncpus = ${L2_DEVICE_CPUS}\n[memory]\nsize = "256M"\n[boot]\nkernel = "${g.bzImage}"\ninitrd = "${g.initrd}"\n` +
      `cmdline = "console=ttyS0 quiet"\n[lpc.com1]\npath = "stdio"\n` +
      `[pci.0.5.0]\ndevice = "virtio-console"\necho0 = "/tmp/vcon0.sock"\n[pci.0.5.0.port.1]\nname = "${NAME}"\npath = "/tmp/vcon1.sock"\n` +
      `[pci.0.6.0]\ndevice = "virtio-input"\nmodel = "tablet"\nname = "test tablet"\n` +
      `[pci.0.7.0]\ndevice = "virtio-input"\nmodel = "keyboard"\nname = "test keyboard"\nhello = true\n`;
    const r = await runNested({
      name: "virtio-devs", script: JOB, timeoutMs: 500_000, idleTimeoutMs: 300_000,
      files: { "devs.toml": toml, "client.ts": CLIENT },
    });
    const why = describeResult(r);
    console.log(why);
    for (const c of ["input-pci-06", "input-pci-07", "input-tablet", "input-keyboard", "input-event",
      "con-pci", "con-ports", "con-names", "con-echo", "con-client", "devs.exit", "con-socket-removed"]) {
      expect(r.results.get(c)?.status, `${c}\n${why}`).toBe("pass");
    }
  },
  600_000,
);
