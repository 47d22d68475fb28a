/**
 * L2 guests of the nested tests: the /init every one starts with, and the shape of its checks.
 *
 *   const init = l2Init(`
 *     [ -b /dev/vda ] && r blk-present pass "" || r blk-present fail "no /dev/vda"
 *   `);
 *   // the L1 job: tsb_l2_boot blk 240 1 "$TSB_TSBHYVE" "$TSB_JOB_DIR/blk.toml"
 *
 * The prelude mounts /proc, /sys and /dev, loads the initramfs's modules, prints TSB-GUEST-UP with the
 * uptime, and defines `r NAME pass|fail DETAIL…` (one "TSB-L2" result line) and `up` (uptime in seconds).
 * After the checks: TSB-L2-DONE with the uptime, then `poweroff -f` (tsbhyve exits 1). The job side is
 * the L1 prelude's `tsb_l2_boot` (src/guest/nested/l1-init.ts).
 */
export const L2_PRELUDE = `#!/bin/sh
export PATH=/sbin:/bin:/usr/sbin:/usr/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
/sbin/tsb-load-modules
echo "TSB-GUEST-UP $(cut -d' ' -f1 /proc/uptime)"
r() { n=$1; s=$2; shift 2; echo "TSB-L2 $n $s $*"; }
up() { cut -d' ' -f1 /proc/uptime; }
`;

/** A whole L2 /init: the prelude, `checks` (shell), then TSB-L2-DONE and power-off. */
export function l2Init(checks: string): string {
  return `${L2_PRELUDE}${checks.replace(/^\n/, "")}\necho "TSB-L2-DONE $(up)"\npoweroff -f\n`;
}
