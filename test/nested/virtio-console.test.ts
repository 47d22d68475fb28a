/**
 * Tier 3, virtio-console: Debian's kernel with its own virtio_pci and virtio_console drivers under
 * dist/tsbhyve in the nested harness. pci 0:5.0 is a virtio-console with two ports, one in each config
 * form: `echo0 = "/tmp/vcon0.sock"` (bhyve's NAME=PATH pair → port 0 named "echo0") and
 * `[pci.0.5.0.port.1] name = "org.tsbhyve.test"`, path /tmp/vcon1.sock.
 * - L2 /init: finds /dev/vport*p1 and checks /sys/class/virtio-ports/vport*p{0,1}/name, then reads a line
 *   from the port and writes it back upper-cased, and powers off (exit 1).
 * - L1 job: starts tsbhyve in the background and, with a tiny Bun client ($TSB_BUN), connects to
 *   /tmp/vcon1.sock at once (long before the guest opens the port: the bytes wait in the socket), sends
 *   "hello tsbhyve\n" and waits for "HELLO TSBHYVE".
 */
import { expect, test } from "bun:test";
import { prepareGuest } from "../../src/guest/index.ts";
import { describeResult, requireQemu, runNested } from "../harness/nested.ts";

const NAME = "org.tsbhyve.test";

const L2_INIT = `#!/bin/sh
export PATH=/sbin:/bin:/usr/sbin:/usr/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
/sbin/tsb-load-modules
echo "TSB-GUEST-UP $(cut -d' ' -f1 /proc/uptime)"
r() { n=$1; s=$2; shift 2; echo "TSB-L2 $n $s $*"; }
up() { cut -d' ' -f1 /proc/uptime; }
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
echo "TSB-L2-DONE $(up)"
poweroff -f
`;

/** The host side: connect at once, send a line, wait for it upper-cased. */
const CLIENT = `
import { existsSync } from "node:fs";
const path = process.argv[2]!;
const want = "HELLO TSBHYVE";
const t0 = Date.now();
for (let i = 0; i < 1200 && !existsSync(path); i++) await Bun.sleep(50);
let got = "";
let closed = false;
const done = Promise.withResolvers<void>();
const sock = await Bun.connect({
  unix: path,
  socket: {
    data(_s, d) { got += new TextDecoder().decode(d); if (got.includes(want)) done.resolve(); },
    close() { closed = true; done.resolve(); },
    error() {},
  },
});
const tc = Date.now();
sock.write("hello tsbhyve\\n");
await Promise.race([done.promise, Bun.sleep(200_000)]);
const ok = got.includes(want);
console.log(\`TSB-CLIENT \${ok ? "pass" : "fail"} connected after \${tc - t0}ms, answer \${Date.now() - tc}ms after sending; got \${JSON.stringify(got.trim())}\${closed ? " (closed)" : ""}\`);
sock.end();
process.exit(0);
`;

const JOB = `
for try in 1 2; do
  log="$TSB_OUT/con.$try.log"; clog="$TSB_OUT/client.$try.log"
  rm -f /tmp/vcon0.sock /tmp/vcon1.sock
  t0=$(tsb_now_ms)
  timeout -s KILL 240 "$TSB_TSBHYVE" "$TSB_JOB_DIR/con.toml" > "$log" 2>&1 < /dev/null &
  pid=$!
  timeout -s KILL 230 "$TSB_BUN" "$TSB_JOB_DIR/client.ts" /tmp/vcon1.sock > "$clog" 2>&1
  wait $pid; rc=$?
  t1=$(tsb_now_ms)
  if [ $try -eq 1 ] && { [ $rc -eq 137 ] || [ $rc -eq 3 ]; } && ! grep -q TSB-GUEST-UP "$log"; then echo "[con] attempt 1 ended rc=$rc before the marker; retrying"; continue; fi
  break
done
grep '^TSB-L2 ' "$log" | tr -d '\\r' | while read -r _ n s d; do tsb_result "$n" "$s" "$d"; done
c=$(grep -a '^TSB-CLIENT' "$clog" | head -n 1)
case "$c" in "TSB-CLIENT pass "*) tsb_result con-client pass "\${c#TSB-CLIENT pass }" ;; *) tsb_result con-client fail "[$c] $(tail -n 5 "$clog" | tr '\\n' ' ')" ;; esac
up=$(grep -a '^TSB-GUEST-UP' "$log" | tr -d '\\r' | cut -d' ' -f2); done_=$(grep -a '^TSB-L2-DONE' "$log" | tr -d '\\r' | cut -d' ' -f2)
[ $rc = 1 ] && tsb_result exit pass "rc=$rc run=$((t1 - t0))ms guest-up=\${up}s guest-done=\${done_}s" || { tsb_result exit fail "rc=$rc"; tail -n 40 "$log" | sed 's/^/[con] /'; }
[ ! -e /tmp/vcon1.sock ] && tsb_result con-socket-removed pass "" || tsb_result con-socket-removed fail "/tmp/vcon1.sock left behind"
exit 0
`;

test(
  "virtio-console under a real kernel (nested): named ports, a line echoed upper-cased through a Unix socket client",
  async () => {
    requireQemu();
    const g = await prepareGuest({ init: L2_INIT, modules: ["virtio_pci", "virtio_console"] });
    const toml = `name = "virtio-console"\ncpus = 2\n[memory]\nsize = "256M"\n[boot]\nkernel = "${g.bzImage}"\ninitrd = "${g.initrd}"\n` +
      `cmdline = "console=ttyS0 quiet"\n[lpc.com1]\npath = "stdio"\n` +
      `[pci.0.5.0]\ndevice = "virtio-console"\necho0 = "/tmp/vcon0.sock"\n[pci.0.5.0.port.1]\nname = "${NAME}"\npath = "/tmp/vcon1.sock"\n`;
    const r = await runNested({
      name: "virtio-console", script: JOB, timeoutMs: 500_000, idleTimeoutMs: 300_000,
      files: { "con.toml": toml, "client.ts": CLIENT },
    });
    const why = describeResult(r);
    console.log(why);
    for (const c of ["con-pci", "con-ports", "con-names", "con-echo", "con-client", "exit", "con-socket-removed"]) {
      expect(r.results.get(c)?.status, `${c}\n${why}`).toBe("pass");
    }
  },
  600_000,
);
