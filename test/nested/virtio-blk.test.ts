/**
 * Tier 3, virtio-blk (and virtio-rnd, sharing the boot): Debian's kernel with its own virtio_pci, virtio_blk and ext4 drivers under
 * dist/tsbhyve in the nested harness, on two disk images built here with e2fsprogs (`mkfs.ext4 -d`, no
 * mount needed):
 * - pci 0:4.0, disk.img (64 MiB, read-write, iothreads = 4: its requests run on a pool of block Workers): mounted, a known file's sha256 checked, a new file written,
 *   synced, unmounted; then 16 MiB written, deleted, and `fstrim` run (discard → punch holes in the
 *   image). After the run the host reads the new file back with `debugfs -R "cat /newfile"` and the job
 *   compares the image's allocated blocks before and after (the 16 MiB must not stay allocated).
 * - pci 0:5.0, ro.img (ro): the kernel sees it read-only, `mount -o ro` works and serves the known file,
 *   a raw `dd` write to /dev/vdb fails, and the image is bit-for-bit unchanged afterwards.
 * - pci 0:6.0, virtio-rnd: virtio IDs, virtio-pci binds over MSI-X, /dev/hwrng gives non-zero bytes and the
 *   function's vectors take interrupts.
 * The images live on L1's /dev/shm (tmpfs: hole punching works; the 9p job dir would not punch).
 */
import { expect, test } from "bun:test";
import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { prepareGuest } from "../../src/guest/index.ts";
import { describeResult, requireQemu, runNested } from "../harness/nested.ts";
import { L2_DEVICE_CPUS, l2Init } from "../harness/l2.ts";

const sha256 = (b: Uint8Array | string) => createHash("sha256").update(b).digest("hex");

/** Known content: 96 KiB of deterministic pseudo-random bytes (several segments per request). */
const KNOWN = (() => {
  const b = new Uint8Array(96 * 1024);
  let x = 0x9e3779b9;
  for (let i = 0; i < b.length; i++) { x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0; b[i] = x & 0xff; }
  return b;
})();
const NEW_PREFIX = "tsbhyve virtio-blk was here\n";
const NEW_CONTENT = new Uint8Array([...new TextEncoder().encode(NEW_PREFIX), ...KNOWN]);

function need(tool: string): string {
  const r = spawnSync("sh", ["-c", `command -v ${tool} || ls /sbin/${tool} /usr/sbin/${tool} 2>/dev/null`], { encoding: "utf8" });
  const p = r.stdout.trim().split("\n")[0];
  if (!p) throw new Error(`${tool} not found: install e2fsprogs (apt-get install e2fsprogs)`);
  return p;
}

function mkfs(img: string, sizeMiB: number, content: string): void {
  writeFileSync(img, "");
  spawnSync("truncate", ["-s", `${sizeMiB}M`, img]);
  const r = spawnSync(need("mkfs.ext4"), ["-q", "-F", "-L", "tsbdisk", "-d", content, img, `${sizeMiB}M`], { encoding: "utf8" });
  if (r.status !== 0) throw new Error(`mkfs.ext4 -d failed (${r.status}): ${r.stderr}`);
}

const L2_INIT = l2Init(`
# virtio-rnd at 00:06.0 (shares this boot): IDs, driver, /dev/hwrng bytes, MSI-X interrupts taken
d=/sys/bus/pci/devices/0000:00:06.0
id="$(cat $d/vendor 2>/dev/null):$(cat $d/device 2>/dev/null)"; drv=$(basename "$(readlink $d/driver 2>/dev/null)")
[ "$id" = "0x1af4:0x1005" ] && [ "$drv" = virtio-pci ] && r rnd-pci pass "$id $drv" || r rnd-pci fail "id=$id driver=[$drv]"
cur=$(cat /sys/class/misc/hw_random/rng_current 2>/dev/null)
case "$cur" in virtio_rng*) r rnd-current pass "$cur" ;; *) r rnd-current fail "[$cur]" ;; esac
n=$(head -c 4096 /dev/hwrng | wc -c)
z=$(head -c 4096 /dev/hwrng | od -An -v -tx1 | tr -s ' ' '\\n' | grep -c '^00$')
[ "$n" = 4096 ] && [ "$z" -lt 100 ] && r rnd-bytes pass "$n bytes; $z zero bytes in another 4096" || r rnd-bytes fail "$n bytes, $z zeros"
# hwrng reads wait for the request queue's interrupt: the function's MSI-X vectors must have taken some
vecs=$(ls $d/msi_irqs 2>/dev/null | tr '\\n' ' ')
sum=0; for v in $vecs; do c=$(awk -v irq="$v:" '$1 == irq { s = 0; for (i = 2; i <= NF && $i ~ /^[0-9]+$/; i++) s += $i; print s }' /proc/interrupts); sum=$((sum + \${c:-0})); done
[ "$(echo $vecs | wc -w)" -ge 2 ] && [ "$sum" -gt 0 ] && r rnd-msix pass "vectors=[$vecs] interrupts=$sum" || r rnd-msix fail "vectors=[$vecs] interrupts=$sum"
i=0; while [ ! -b /dev/vdb ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
d=/sys/bus/pci/devices/0000:00:04.0
id="$(cat $d/vendor 2>/dev/null):$(cat $d/device 2>/dev/null)"
drv=$(basename "$(readlink $d/driver 2>/dev/null)")
[ "$id" = "0x1af4:0x1001" ] && [ "$drv" = virtio-pci ] && r blk-pci pass "$id $drv" || r blk-pci fail "id=$id driver=[$drv]"
sz=$(cat /sys/block/vda/size 2>/dev/null); ro_a=$(cat /sys/block/vda/ro 2>/dev/null); ro_b=$(cat /sys/block/vdb/ro 2>/dev/null)
[ "$sz" = 131072 ] && [ "$ro_a" = 0 ] && [ "$ro_b" = 1 ] && r blk-disks pass "vda=$sz sectors ro=$ro_a vdb ro=$ro_b at $(up)s" || r blk-disks fail "vda size=[$sz] ro=[$ro_a] vdb ro=[$ro_b]; $(ls /dev/vd* 2>&1 | tr '\\n' ' ')"
ser=$(cat /sys/block/vda/serial 2>/dev/null)
[ "$ser" = TSB-DISK-A ] && r blk-serial pass "$ser" || r blk-serial fail "[$ser]"
mkdir -p /mnt /ro
t0=$(up)
if mount -t ext4 /dev/vda /mnt 2>/tmp/mnt.err; then r blk-mount pass "mounted at \${t0}s, took $(awk -v a=$t0 -v b=$(up) 'BEGIN { printf "%.3f", b - a }')s"; else r blk-mount fail "$(cat /tmp/mnt.err) $(dmesg | tail -5 | tr '\\n' ';')"; fi
h=$(sha256sum /mnt/known.bin 2>&1 | cut -d' ' -f1)
[ "$h" = "${sha256(KNOWN)}" ] && r blk-read pass "sha256 ok" || r blk-read fail "sha256=[$h]"
t0=$(up)
{ printf '${NEW_PREFIX.replace("\n", "\\n")}'; cat /mnt/known.bin; } > /mnt/newfile && sync
h=$(sha256sum /mnt/newfile 2>&1 | cut -d' ' -f1)
[ "$h" = "${sha256(NEW_CONTENT)}" ] && r blk-write pass "written+synced in $(awk -v a=$t0 -v b=$(up) 'BEGIN { printf "%.3f", b - a }')s" || r blk-write fail "sha256=[$h]"
# discard: 16 MiB written, deleted, trimmed
t0=$(up)
dd if=/dev/zero of=/mnt/big bs=1M count=16 2>/dev/null; sync; rm -f /mnt/big; sync
tr=$(fstrim -v /mnt 2>&1)
case "$tr" in *"trimmed"*) r blk-fstrim pass "$tr (16 MiB cycle $(awk -v a=$t0 -v b=$(up) 'BEGIN { printf "%.3f", b - a }')s)" ;; *) r blk-fstrim fail "[$tr]" ;; esac
umount /mnt && r blk-umount pass "" || r blk-umount fail "$(umount /mnt 2>&1)"
# read-only disk
if mount -t ext4 -o ro /dev/vdb /ro 2>/tmp/ro.err; then
  h=$(sha256sum /ro/known.bin 2>&1 | cut -d' ' -f1)
  [ "$h" = "${sha256(KNOWN)}" ] && r blk-ro-mount pass "mount -o ro, sha256 ok" || r blk-ro-mount fail "sha256=[$h]"
  umount /ro
else r blk-ro-mount fail "$(cat /tmp/ro.err)"; fi
if dd if=/dev/zero of=/dev/vdb bs=4096 count=1 conv=fsync 2>/tmp/dd.err; then r blk-ro-write fail "dd write to /dev/vdb succeeded"; else r blk-ro-write pass "$(tr '\\n' ' ' < /tmp/dd.err)"; fi
`);

const JOB = `
cp --sparse=always "$TSB_JOB_DIR/disk.img" /dev/shm/disk.img
cp --sparse=always "$TSB_JOB_DIR/ro.img" /dev/shm/ro.img
b0=$(stat -c %b /dev/shm/disk.img)
tsb_l2_boot blk 240 1 "$TSB_TSBHYVE" "$TSB_JOB_DIR/blk.toml"
b1=$(stat -c %b /dev/shm/disk.img)
# 16 MiB = 32768 sectors were written and deleted; after fstrim they must not stay allocated
[ $((b1 - b0)) -lt 16384 ] && tsb_result blk-discard-host pass "allocated 512-byte blocks before=$b0 after=$b1" || tsb_result blk-discard-host fail "allocated 512-byte blocks before=$b0 after=$b1"
cmp -s "$TSB_JOB_DIR/ro.img" /dev/shm/ro.img && tsb_result blk-ro-unchanged pass "" || tsb_result blk-ro-unchanged fail "ro.img changed"
cp --sparse=always /dev/shm/disk.img "$TSB_OUT/disk.img"
exit 0
`;

test(
  "virtio-blk under a real kernel (nested): ext4 on /dev/vda read/write/fstrim, read-only /dev/vdb, image checked on the host",
  async () => {
    requireQemu();
    need("debugfs");
    const work = mkdtempSync(join(tmpdir(), "tsb-blk-nested-"));
    try {
      const content = join(work, "content");
      mkdirSync(content);
      writeFileSync(join(content, "known.bin"), KNOWN);
      mkfs(join(work, "disk.img"), 64, content);
      mkfs(join(work, "ro.img"), 8, content);
      const g = await prepareGuest({
        init: L2_INIT,
        modules: ["virtio_pci", "virtio_blk", "crc32c_generic", "ext4", "virtio_rng", "rng_core"],
      });
      const toml = `name = "virtio-blk"\ncpus = ${L2_DEVICE_CPUS}\n[memory]\nsize = "256M"\n[boot]\nkernel = "${g.bzImage}"\ninitrd = "${g.initrd}"\n` +
        `cmdline = "console=ttyS0 quiet"\n[lpc.com1]\npath = "stdio"\n` +
        `[pci.0.4.0]\ndevice = "virtio-blk"\npath = "/dev/shm/disk.img"\nser = "TSB-DISK-A"\niothreads = 4\n` +
        `[pci.0.5.0]\ndevice = "virtio-blk"\npath = "/dev/shm/ro.img"\nro = true\n` +
        `[pci.0.6.0]\ndevice = "virtio-rnd"\n`;
      const r = await runNested({
        name: "virtio-blk", script: JOB, timeoutMs: 500_000, idleTimeoutMs: 300_000, keepJobDir: true,
        files: { "blk.toml": toml, "disk.img": readFileSync(join(work, "disk.img")), "ro.img": readFileSync(join(work, "ro.img")) },
      });
      const why = describeResult(r);
      console.log(why);
      for (const c of ["blk-pci", "blk-disks", "blk-serial", "blk-mount", "blk-read", "blk-write", "blk-fstrim", "blk-umount",
        "blk-ro-mount", "blk-ro-write", "blk.exit", "rnd-pci", "rnd-current", "rnd-bytes", "rnd-msix", "blk-discard-host", "blk-ro-unchanged"]) {
        expect(r.results.get(c)?.status, `${c}\n${why}`).toBe("pass");
      }
      // the host reads the guest's new file out of the image
      const out = join(r.jobDir, "out", "disk.img");
      const cat = spawnSync(need("debugfs"), ["-R", "cat /newfile", out], { maxBuffer: 16 << 20 });
      expect(cat.status, String(cat.stderr)).toBe(0);
      expect(sha256(new Uint8Array(cat.stdout))).toBe(sha256(NEW_CONTENT));
      const fsck = spawnSync(need("e2fsck"), ["-fn", out], { encoding: "utf8" });
      expect(fsck.status, `${fsck.stdout}${fsck.stderr}`).toBe(0);
      if (r.ok) rmSync(r.jobDir, { recursive: true, force: true });
    } finally {
      rmSync(work, { recursive: true, force: true });
    }
  },
  600_000,
);
