/**
 * Tier 3 part, virtio-9p (booted together with other devices by runL2Parts, test/harness/l2.ts): Debian's
 * kernel with its own virtio_pci, 9pnet_virtio and 9p drivers, sharing two folders on L1's /dev/shm:
 * - pci 0:6.0 (TOML config tree: sharename "hostshare", path .../share, read-write): mounted with
 *   trans=virtio,version=9p2000.L (cache=none, then again with cache=loose); a known file's sha256 read,
 *   a new file written (the host checks its bytes afterwards), 4 MiB written and read back, mkdir /
 *   rename / rm / ln -s / ls -la / find;
 * - pci 0:7.0 (bhyve's command-line pair form `-s 7,virtio-9p,roshare=/path,ro`): read-only; reads
 *   work, every kind of write fails, and the folder is unchanged afterwards.
 * Escape attempts from the guest: host-made symlinks in the share to an absolute host path holding a
 * secret, to "../../outside/secret.txt" and to the outside folder; reading and writing through them,
 * `aname=/` and `aname=/etc` attaches, the guest's own symlink to "/" and a hard link to it, a rename of
 * the mount root. The guest resolves symlinks in its own namespace: the secret text must never appear
 * in the guest, and the host checks that the outside folder and the secret are untouched.
 */
import { expect } from "bun:test";
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import type { L2Part } from "../../harness/l2.ts";

const sha256 = (b: Uint8Array | string) => createHash("sha256").update(b).digest("hex");

/** Known content: 300 KiB of deterministic pseudo-random bytes (more than one msize). */
const KNOWN = (() => {
  const b = new Uint8Array(300 * 1024);
  let x = 0x2545f491;
  for (let i = 0; i < b.length; i++) { x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0; b[i] = x & 0xff; }
  return b;
})();
const NEW_PREFIX = "tsbhyve virtio-9p was here\n";
const NEW_CONTENT = new Uint8Array([...new TextEncoder().encode(NEW_PREFIX), ...KNOWN]);
const SECRET = "TSB-9P-HOST-SECRET-c0ffee";
/** Where the job puts things on L1 */
const ROOT = "/dev/shm/tsb9p";

export const ninepPart = (): L2Part => ({
  modules: ["virtio_pci", "9pnet_virtio", "9p"],
  toml: `[pci."0.6.0"]\ndevice = "virtio-9p"\nsharename = "hostshare"\npath = "${ROOT}/share"\n`,
  args: `-s 7,virtio-9p,roshare=${ROOT}/ro,ro`,
  files: { "known.bin": KNOWN },
  checks: `
secret() { grep -c '${SECRET.slice(0, 12)}' "$1" 2>/dev/null || echo 0; }
tags() { for f in /sys/bus/virtio/devices/*/mount_tag; do [ -e "$f" ] && { tr -d '\\0' < "$f"; echo; }; done; }
i=0; while [ "$(tags | wc -w)" -lt 2 ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
d=/sys/bus/pci/devices/0000:00:06.0
id="$(cat $d/vendor 2>/dev/null):$(cat $d/device 2>/dev/null)"
tags=$(tags | tr '\\n' ' ')
case "$tags" in *hostshare*roshare*|*roshare*hostshare*) [ "$id" = "0x1af4:0x1009" ] && r 9p-pci pass "$id tags: $tags" || r 9p-pci fail "id=$id tags=[$tags]";; *) r 9p-pci fail "id=$id tags=[$tags] $(dmesg | grep -i 9p | tail -3 | tr '\\n' ';')";; esac
mkdir -p /mnt /ro /loose /other
t0=$(up)
if mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 hostshare /mnt 2>/tmp/m.err; then r 9p-mount pass "at \${t0}s"; else r 9p-mount fail "$(cat /tmp/m.err) $(dmesg | tail -5 | tr '\\n' ';')"; fi
h=$(sha256sum /mnt/known.bin 2>&1 | cut -d' ' -f1)
[ "$h" = "${sha256(KNOWN)}" ] && r 9p-read pass "sha256 ok" || r 9p-read fail "sha256=[$h]"
t0=$(up)
mkdir -p /mnt/out && { printf '${NEW_PREFIX.replace("\n", "\\n")}'; cat /mnt/known.bin; } > /mnt/out/newfile && sync
h=$(sha256sum /mnt/out/newfile 2>&1 | cut -d' ' -f1)
[ "$h" = "${sha256(NEW_CONTENT)}" ] && r 9p-write pass "in $(awk -v a=$t0 -v b=$(up) 'BEGIN { printf "%.3f", b - a }')s" || r 9p-write fail "sha256=[$h]"
t0=$(up)
dd if=/dev/urandom of=/mnt/big.bin bs=64k count=64 2>/dev/null; sync
bh=$(sha256sum /mnt/big.bin | cut -d' ' -f1); bs=$(stat -c %s /mnt/big.bin)
[ "$bs" = 4194304 ] && r 9p-bigwrite pass "$bh $(awk -v a=$t0 -v b=$(up) 'BEGIN { printf "%.3f", b - a }')s" || r 9p-bigwrite fail "size=$bs"
# directory operations (a boot retried after a fault finds the first attempt's leftovers: clear them)
rm -rf /mnt/d1 /mnt/d2 /mnt/evil_root /mnt/evil_up /mnt/hard_link_abs
ok=1; log=""
mkdir /mnt/d1 || { ok=0; log="$log mkdir"; }
echo one > /mnt/d1/a.txt || { ok=0; log="$log create"; }
mv /mnt/d1/a.txt /mnt/d1/b.txt || { ok=0; log="$log mv"; }
[ "$(cat /mnt/d1/b.txt)" = one ] || { ok=0; log="$log cat"; }
mv /mnt/d1 /mnt/d2 || { ok=0; log="$log mvdir"; }
ln -s b.txt /mnt/d2/lnk && [ "$(cat /mnt/d2/lnk)" = one ] || { ok=0; log="$log symlink"; }
ln /mnt/d2/b.txt /mnt/d2/hard && [ "$(stat -c %h /mnt/d2/b.txt)" = 2 ] || { ok=0; log="$log hardlink"; }
chmod 600 /mnt/d2/b.txt && [ "$(stat -c %a /mnt/d2/b.txt)" = 600 ] || { ok=0; log="$log chmod"; }
truncate -s 1 /mnt/d2/b.txt 2>/dev/null || : > /mnt/d2/b.txt
touch -d '2001-02-03 04:05:06' /mnt/d2/b.txt && [ "$(stat -c %Y /mnt/d2/b.txt)" = 981173106 ] || { ok=0; log="$log touch($(stat -c %Y /mnt/d2/b.txt))"; }
for i in $(seq 1 150); do : > /mnt/d2/f$i; done
n=$(ls /mnt/d2 | wc -l); [ "$n" = 153 ] || { ok=0; log="$log ls=$n"; }
mkfifo /mnt/d2/fifo 2>/dev/null && [ -p /mnt/d2/fifo ] || { ok=0; log="$log mkfifo"; }
rm -r /mnt/d2 && [ ! -e /mnt/d2 ] || { ok=0; log="$log rm"; }
df /mnt >/dev/null 2>&1 || { ok=0; log="$log statfs"; }
[ $ok = 1 ] && r 9p-dirops pass "mkdir mv ln ln-s chmod touch 150-entry ls mkfifo rm df" || r 9p-dirops fail "$log"
ls -la /mnt > /tmp/ls.txt 2>&1
grep -q known.bin /tmp/ls.txt && grep -q 'link_abs -> ' /tmp/ls.txt && r 9p-ls pass "$(wc -l < /tmp/ls.txt) lines" || r 9p-ls fail "$(tr '\\n' '|' < /tmp/ls.txt)"
# ---- escape attempts: the guest resolves symlinks in its own namespace
leak=0; what=""
for f in /mnt/link_abs /mnt/link_up /mnt/link_dir/secret.txt /mnt/sub/link_upup /mnt/../outside/secret.txt ${ROOT}/outside/secret.txt; do
  c=$(cat "$f" 2>&1 | grep -c '${SECRET.slice(0, 12)}'); [ "$c" != 0 ] && { leak=1; what="$what $f"; }
done
[ "$(readlink /mnt/link_abs)" = "${ROOT}/outside/secret.txt" ] || { leak=1; what="$what readlink=$(readlink /mnt/link_abs)"; }
c=$(grep -rs '${SECRET.slice(0, 12)}' /mnt /ro 2>/dev/null | wc -l); [ "$c" != 0 ] && { leak=1; what="$what grep-r"; }
[ $leak = 0 ] && r 9p-escape-read pass "no secret through link_abs, link_up, link_dir, sub/link_upup, .." || r 9p-escape-read fail "$what"
# writing through host-made links and creating through a linked directory
echo planted > /mnt/link_dir/planted 2>/dev/null
echo planted > /mnt/link_abs 2>/dev/null
echo planted >> /mnt/link_up 2>/dev/null
# the guest's own symlinks to / and up, used from the guest and left for the host to (not) follow
ln -s / /mnt/evil_root; ln -s ../../.. /mnt/evil_up; ln /mnt/link_abs /mnt/hard_link_abs 2>/dev/null
[ -d /mnt/evil_root/proc ] && r 9p-guest-symlink pass "evil_root resolves in the guest" || r 9p-guest-symlink fail "$(ls -la /mnt/evil_root 2>&1 | head -2)"
mv /mnt /mnt-renamed 2>/dev/null && mv /mnt-renamed /mnt
r 9p-escape-tries pass "wrote through links, made evil_root/evil_up, renamed the mount point (the host checks the result)"
umount /mnt && r 9p-umount pass "" || r 9p-umount fail "$(umount /mnt 2>&1)"
# attaching somewhere else than the share root (one mount per channel at a time: after the umount)
res=""
for a in / /etc ../ ..; do
  if mount -t 9p -o trans=virtio,version=9p2000.L,aname=$a hostshare /other 2>/dev/null; then
    [ -e /other/known.bin ] && [ ! -e /other/passwd ] && res="$res $a:root" || res="$res $a:LEAK($(ls /other | head -3 | tr '\\n' ' '))"; umount /other
  else res="$res $a:refused"; fi
done
case "$res" in *LEAK*|*" /:refused"*) r 9p-escape-aname fail "$res";; *) r 9p-escape-aname pass "$res";; esac
# only 9P2000.L is spoken
v=""; for p in 9p2000.u 9p2000; do mount -t 9p -o trans=virtio,version=$p hostshare /other 2>/dev/null && { v="$v $p:mounted"; umount /other; } || v="$v $p:refused"; done
case "$v" in *mounted*) r 9p-version fail "$v";; *) r 9p-version pass "$v";; esac
# cache=loose
if mount -t 9p -o trans=virtio,version=9p2000.L,cache=loose hostshare /loose 2>/tmp/l.err; then
  h=$(sha256sum /loose/known.bin | cut -d' ' -f1); echo loose > /loose/out/loose.txt; sync
  h2=$(cat /loose/out/loose.txt); n=$(ls /loose/out | wc -l)
  [ "$h" = "${sha256(KNOWN)}" ] && [ "$h2" = loose ] && [ "$n" = 2 ] && r 9p-cache-loose pass "read, write, ls" || r 9p-cache-loose fail "sha=$h content=$h2 n=$n"
  umount /loose
else r 9p-cache-loose fail "$(cat /tmp/l.err)"; fi
# read-only share
if mount -t 9p -o trans=virtio,version=9p2000.L roshare /ro 2>/tmp/ro.err; then
  h=$(sha256sum /ro/known.bin | cut -d' ' -f1)
  [ "$h" = "${sha256(KNOWN)}" ] && r 9p-ro-read pass "sha256 ok" || r 9p-ro-read fail "sha256=[$h]"
  bad=""
  touch /ro/new 2>/dev/null && bad="$bad touch"
  mkdir /ro/d 2>/dev/null && bad="$bad mkdir"
  rm /ro/known.bin 2>/dev/null && bad="$bad rm"
  echo x >> /ro/known.bin 2>/dev/null && bad="$bad append"
  mv /ro/known.bin /ro/k2 2>/dev/null && bad="$bad mv"
  ln -s x /ro/l 2>/dev/null && bad="$bad symlink"
  chmod 777 /ro/known.bin 2>/dev/null && bad="$bad chmod"
  err=$(touch /ro/new 2>&1)
  [ -z "$bad" ] && r 9p-ro-write pass "every write refused: $err" || r 9p-ro-write fail "succeeded:$bad"
  umount /ro
else r 9p-ro-read fail "$(cat /tmp/ro.err)"; fi
`,
  before: `
R=${ROOT}
rm -rf $R; mkdir -p $R/share/sub $R/ro $R/outside
cp "$TSB_JOB_DIR/known.bin" $R/share/known.bin; cp "$TSB_JOB_DIR/known.bin" $R/ro/known.bin
printf '%s' '${SECRET}' > $R/outside/secret.txt
ln -s $R/outside/secret.txt $R/share/link_abs
ln -s ../../outside/secret.txt $R/share/link_up
ln -s $R/outside $R/share/link_dir
ln -s ../../../outside/secret.txt $R/share/sub/link_upup
ln -s $R/outside $R/ro/link_dir
ro0=$(cd $R/ro && find . | sort | xargs ls -ld --time-style=+%s 2>&1 | md5sum)
out0=$(ls -la --time-style=+%s $R/outside | md5sum; md5sum < $R/outside/secret.txt)
`,
  after: `
grep -a 'TSB-GUEST-UP\\|TSB-L2' "$tsb_log" >/dev/null && grep -ac '${SECRET.slice(0, 12)}' "$tsb_log" | grep -qx 0 && tsb_result 9p-secret-console pass "the secret never appeared on the guest console" || tsb_result 9p-secret-console fail "secret on the console: $(grep -a '${SECRET.slice(0, 12)}' "$tsb_log" | head -2)"
out1=$(ls -la --time-style=+%s $R/outside | md5sum; md5sum < $R/outside/secret.txt)
[ "$out0" = "$out1" ] && [ "$(cat $R/outside/secret.txt)" = '${SECRET}' ] && tsb_result 9p-outside-unchanged pass "$(ls $R/outside | tr '\\n' ' ')" || tsb_result 9p-outside-unchanged fail "$(ls -la $R/outside | tr '\\n' '|')"
[ -L $R/share/link_abs ] && [ "$(readlink $R/share/link_abs)" = "$R/outside/secret.txt" ] && [ -L $R/share/evil_root ] && [ "$(readlink $R/share/evil_root)" = / ] && tsb_result 9p-host-links pass "host links intact; the guest's evil_root is a plain symlink on the host" || tsb_result 9p-host-links fail "$(ls -la $R/share | tr '\\n' '|')"
ro1=$(cd $R/ro && find . | sort | xargs ls -ld --time-style=+%s 2>&1 | md5sum)
[ "$ro0" = "$ro1" ] && tsb_result 9p-ro-unchanged pass "" || tsb_result 9p-ro-unchanged fail "$(ls -la $R/ro | tr '\\n' '|')"
gh=$(grep -a '^TSB-L2 9p-bigwrite pass' "$tsb_log" | tr -d '\\r' | cut -d' ' -f4); hh=$(sha256sum $R/share/big.bin 2>/dev/null | cut -d' ' -f1)
[ -n "$gh" ] && [ "$gh" = "$hh" ] && tsb_result 9p-bigwrite-host pass "host sha256 = guest sha256" || tsb_result 9p-bigwrite-host fail "guest=$gh host=$hh"
cp $R/share/out/newfile "$TSB_OUT/newfile" 2>/dev/null
ls -la $R/share > "$TSB_OUT/share.ls" 2>&1
`,
  expect: ["9p-pci", "9p-mount", "9p-read", "9p-write", "9p-bigwrite", "9p-dirops", "9p-ls", "9p-escape-read", "9p-guest-symlink",
      "9p-escape-aname", "9p-version", "9p-escape-tries", "9p-umount", "9p-cache-loose", "9p-ro-read", "9p-ro-write", "9p-secret-console",
      "9p-outside-unchanged", "9p-host-links", "9p-ro-unchanged", "9p-bigwrite-host"],
  verify(out) {
    expect(sha256(new Uint8Array(readFileSync(join(out, "newfile"))))).toBe(sha256(NEW_CONTENT));
  },
});
