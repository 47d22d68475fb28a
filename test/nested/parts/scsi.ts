/**
 * Tier 3 part, virtio-scsi (booted together with other devices by runL2Parts, test/harness/l2.ts):
 * Debian's kernel with its own virtio_pci, virtio_scsi and sd_mod drivers. One adapter at pci 0:4.0
 * with two LUNs on target 0:
 * - LUN 0, lun0.img (64 MiB, read-write, ser TSB-SCSI-A): a known 1 MiB at 4 MiB, 16 MiB of data at
 *   16 MiB (allocated on the host), the rest sparse;
 * - LUN 1, lun1.img (8 MiB, ro): another known 1 MiB at 0.
 * The guest checks: the PCI function and its driver; /dev/sda and /dev/sdb with the right sizes, LUN
 * numbers, vendor/model, read-only flag ("Write Protect is on" from MODE SENSE) and cache type; the
 * serial through VPD 0x80 / 0x83 (wwid); the sha256 of a dd range; a 1 MiB O_DIRECT write (dd
 * oflag=direct) read back with iflag=direct; a refused write to the read-only LUN; blkdiscard of the 16
 * MiB. Afterwards L1 checks the image's allocated blocks dropped (hole punching) and the ro image is
 * unchanged, and the host reads the written megabyte back out of the image.
 * The images live on L1's /dev/shm (tmpfs punches holes; the 9p job dir would not).
 */
import { expect } from "bun:test";
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import type { L2Part } from "../../harness/l2.ts";

const MiB = 1 << 20;
const sha256 = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");
function pseudo(len: number, seed: number): Uint8Array {
  const b = new Uint8Array(len);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < len; i++) { x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0; b[i] = x & 0xff; }
  return b;
}
const KNOWN_A = pseudo(MiB, 0x9e3779b9);
const KNOWN_B = pseudo(MiB, 0x12345678);
/** lun0.img: sparse 64 MiB with KNOWN_A at 4 MiB and 16 MiB of data at 16 MiB. */
function lun0(): Uint8Array {
  const b = new Uint8Array(64 * MiB);
  b.set(KNOWN_A, 4 * MiB);
  for (let o = 16 * MiB; o < 32 * MiB; o += MiB) b.set(KNOWN_B, o);
  return b;
}
function lun1(): Uint8Array {
  const b = new Uint8Array(8 * MiB);
  b.set(KNOWN_B, 0);
  return b;
}

export const scsiPart = (): L2Part => ({
  modules: ["virtio_pci", "virtio_scsi", "sd_mod"],
  toml: `[pci.0.4.0]\ndevice = "virtio-scsi"\npath = "/dev/shm/lun0.img"\nser = "TSB-SCSI-A"\n` +
      `[pci.0.4.0.lun.1]\npath = "/dev/shm/lun1.img"\nro = true\n`,
  files: { "lun0.img": lun0(), "lun1.img": lun1() },
  checks: `
# the disks' names follow probe order, not LUN order: find each LUN's
lunDisk() { for x in /sys/bus/scsi/devices/*:0:0:$1/block/*; do [ -e "$x" ] && basename "$x"; done; }
i=0; while { [ -z "$(lunDisk 0)" ] || [ -z "$(lunDisk 1)" ] || [ ! -b "/dev/$(lunDisk 0)" ] || [ ! -b "/dev/$(lunDisk 1)" ]; } && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
A=$(lunDisk 0); B=$(lunDisk 1)
d=/sys/bus/pci/devices/0000:00:04.0
id="$(cat $d/vendor 2>/dev/null):$(cat $d/device 2>/dev/null)"
drv=$(basename "$(readlink $d/driver 2>/dev/null)")
[ "$id" = "0x1af4:0x1004" ] && [ "$drv" = virtio-pci ] && r scsi-pci pass "$id $drv" || r scsi-pci fail "id=$id driver=[$drv]"
a=$(cat /sys/block/$A/size 2>/dev/null); b=$(cat /sys/block/$B/size 2>/dev/null)
[ "$a" = 131072 ] && [ "$b" = 16384 ] && r scsi-disks pass "LUN 0 $A=$a, LUN 1 $B=$b sectors at $(up)s" || r scsi-disks fail "LUN 0 [$A]=[$a] LUN 1 [$B]=[$b]; $(ls /dev/sd* 2>&1 | tr '\\n' ' ') $(dmesg | grep -i -e scsi -e ' sd' | tail -8 | tr '\\n' ';')"
v=$(cat /sys/block/$A/device/vendor 2>/dev/null); m=$(cat /sys/block/$A/device/model 2>/dev/null); t=$(cat /sys/block/$A/device/type 2>/dev/null)
[ "$v" = "TSBHYVE" ] || [ "$v" = "TSBHYVE " ] && [ "$(echo $m)" = "VIRTUAL DISK" ] && [ "$t" = 0 ] && r scsi-ident pass "vendor=[$v] model=[$m] type=$t" || r scsi-ident fail "vendor=[$v] model=[$m] type=[$t]"
w=$(cat /sys/block/$A/device/wwid 2>/dev/null); s=$(tail -c +5 /sys/block/$A/device/vpd_pg80 2>/dev/null)
case "$w" in *TSB-SCSI-A*) [ "$s" = TSB-SCSI-A ] && r scsi-serial pass "wwid=[$w] vpd_pg80=[$s]" || r scsi-serial fail "vpd_pg80=[$s] wwid=[$w]" ;; *) r scsi-serial fail "wwid=[$w] vpd_pg80=[$s]" ;; esac
ra=$(cat /sys/block/$A/ro 2>/dev/null); rb=$(cat /sys/block/$B/ro 2>/dev/null)
wp=$(dmesg | grep -c "$B\\] Write Protect is on")
[ "$ra" = 0 ] && [ "$rb" = 1 ] && [ "$wp" -ge 1 ] && r scsi-ro-flag pass "$A ro=$ra, $B ro=$rb and Write Protect is on" || r scsi-ro-flag fail "$A ro=[$ra] $B ro=[$rb] wp=$wp"
ct=$(cat /sys/block/$A/device/scsi_disk/*/cache_type 2>/dev/null)
[ "$ct" = "write back" ] && r scsi-cache pass "cache_type=$ct" || r scsi-cache fail "cache_type=[$ct]"
h=$(dd if=/dev/$A bs=65536 skip=64 count=16 2>/dev/null | sha256sum | cut -d' ' -f1)
[ "$h" = "${sha256(KNOWN_A)}" ] && r scsi-read pass "sha256 of LUN 0 [4M,5M) ok" || r scsi-read fail "sha256=[$h]"
t0=$(up)
if dd if=/dev/$B of=/dev/$A bs=65536 count=16 seek=640 oflag=direct conv=fsync 2>/tmp/dd.err; then
  h=$(dd if=/dev/$A bs=65536 skip=640 count=16 iflag=direct 2>/dev/null | sha256sum | cut -d' ' -f1)
  [ "$h" = "${sha256(KNOWN_B)}" ] && r scsi-write pass "1 MiB O_DIRECT write at 40M read back in $(awk -v a=$t0 -v b=$(up) 'BEGIN { printf "%.3f", b - a }')s" || r scsi-write fail "read back sha256=[$h]"
else r scsi-write fail "$(tr '\\n' ' ' < /tmp/dd.err)"; fi
if dd if=/dev/zero of=/dev/$B bs=4096 count=1 oflag=direct 2>/tmp/ro.err; then r scsi-ro-write fail "dd write to /dev/$B succeeded"; else r scsi-ro-write pass "$(tr '\\n' ' ' < /tmp/ro.err)"; fi
dm=$(cat /sys/block/$A/queue/discard_max_bytes 2>/dev/null)
if blkdiscard -o 16777216 -l 16777216 /dev/$A 2>/tmp/bd.err; then
  z=$(dd if=/dev/$A bs=65536 skip=256 count=256 iflag=direct 2>/dev/null | tr -d '\\000' | wc -c)
  [ "$z" = 0 ] && r scsi-discard pass "blkdiscard 16 MiB ok (discard_max_bytes=$dm), reads back zeros" || r scsi-discard fail "blkdiscard ok but $z nonzero bytes remain"
else r scsi-discard fail "discard_max_bytes=[$dm] $(tr '\\n' ' ' < /tmp/bd.err)"; fi
`,
  before: `
cp --sparse=always "$TSB_JOB_DIR/lun0.img" /dev/shm/lun0.img
cp --sparse=always "$TSB_JOB_DIR/lun1.img" /dev/shm/lun1.img
b0=$(stat -c %b /dev/shm/lun0.img)
`,
  after: `
b1=$(stat -c %b /dev/shm/lun0.img)
# 16 MiB = 32768 512-byte blocks were allocated at 16 MiB; after blkdiscard they must be gone
[ $((b0 - b1)) -ge 30000 ] && tsb_result scsi-discard-host pass "allocated 512-byte blocks before=$b0 after=$b1" || tsb_result scsi-discard-host fail "allocated 512-byte blocks before=$b0 after=$b1"
cmp -s "$TSB_JOB_DIR/lun1.img" /dev/shm/lun1.img && tsb_result scsi-ro-unchanged pass "" || tsb_result scsi-ro-unchanged fail "lun1.img changed"
grep -a 'virtio-scsi' "$tsb_log" | head -5 | sed 's/^/[scsi-log] /'
cp --sparse=always /dev/shm/lun0.img "$TSB_OUT/lun0.img"
`,
  expect: ["scsi-pci", "scsi-disks", "scsi-ident", "scsi-serial", "scsi-ro-flag", "scsi-cache", "scsi-read", "scsi-write",
      "scsi-ro-write", "scsi-discard", "scsi-discard-host", "scsi-ro-unchanged"],
  verify(out) {
    const img = new Uint8Array(readFileSync(join(out, "lun0.img")));
    expect(img.length).toBe(64 * MiB);
    expect(sha256(img.subarray(40 * MiB, 41 * MiB))).toBe(sha256(KNOWN_B));
    expect(sha256(img.subarray(4 * MiB, 5 * MiB))).toBe(sha256(KNOWN_A));
    expect(img.subarray(16 * MiB, 32 * MiB).every((x) => x === 0)).toBe(true);
  },
});
