/**
 * The L1 guest's /init (busybox sh) and the shell prelude every test job script starts with.
 *
 * Two modes, chosen by tsb.mode= on L1's kernel command line:
 *   batch (default, the test harness): the job runs with stdin /dev/null under `timeout -s KILL`, and
 *     reports over the line protocol below.
 *   interactive (`tsbhyve demo`): the job runs in a new session with L1's console (ttyS0) as its
 *     controlling terminal and stdin/stdout/stderr (busybox `setsid cttyhack`), with no timeout; init prints
 *     nothing but errors. The job leaves its result in the job directory (the demo: exit-status).
 *
 * Serial line protocol (everything the host parses; all other output is just log):
 *   TSB-L1-UP <uptime-s>                 init started
 *   TSB-MODULE-FAIL <module> <error>     a module would not load (from /sbin/tsb-load-modules)
 *   TSB-L1-ERROR <text>                  init could not set up the job (the job does not run)
 *   TSB-RESULT <name> <pass|fail|skip> [detail…]   one check; name has no spaces
 *   TSB-JOB-START <uptime-s>             about to chroot and run the job
 *   TSB-JOB-EXIT-<nonce> <status>        the job finished (status 137 = killed by the in-L1 timeout);
 *                                        the nonce makes the end marker impossible to fake by accident
 *
 * Filesystem seen by the job (chroot): the host's root, read-only over 9p, under a tmpfs overlay, so
 * everything looks writable (writes stay in L1's RAM and vanish at poweroff) — /tmp in particular, which
 * the compiled tsbhyve needs to unpack its embedded shim. If overlayfs refuses the 9p lower layer, the
 * fallback is the bare 9p root with tmpfs on /tmp, /run, /var/tmp and /root. proc, sys, dev (devtmpfs,
 * with /dev/kvm), dev/pts and dev/shm are mounted. The job directory (a host temp dir) is a second,
 * writable 9p share mounted at the same path as on the host: what the job writes there, the host reads
 * after the run (results.txt, large outputs).
 */
import { HOSTROOT_9P_OPTS, JOBDIR_9P_OPTS } from "./constants.ts";

export const MARK = {
  up: "TSB-L1-UP",
  moduleFail: "TSB-MODULE-FAIL",
  error: "TSB-L1-ERROR",
  result: "TSB-RESULT",
  start: "TSB-JOB-START",
  exit: "TSB-JOB-EXIT",
} as const;

/** Kernel cmdline keys the init script reads. */
export const CMDLINE_KEYS = { jobDir: "tsb.jobdir", timeout: "tsb.timeout", nonce: "tsb.nonce", mode: "tsb.mode" } as const;

/** Values of tsb.mode= (see above). */
export type L1Mode = "batch" | "interactive";

export const L1_INIT = `#!/bin/sh
export PATH=/sbin:/bin:/usr/sbin:/usr/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev

jobdir= ; tmo=600 ; nonce=0 ; mode=batch
for a in $(cat /proc/cmdline); do
  case "$a" in
    ${CMDLINE_KEYS.mode}=*) mode="\${a#*=}" ;;
    ${CMDLINE_KEYS.jobDir}=*) jobdir="\${a#*=}" ;;
    ${CMDLINE_KEYS.timeout}=*) tmo="\${a#*=}" ;;
    ${CMDLINE_KEYS.nonce}=*) nonce="\${a#*=}" ;;
  esac
done
# say: protocol lines for the batch harness (an interactive user sees only errors)
say() { [ "$mode" = interactive ] || echo "$*"; }
say "${MARK.up} $(cut -d' ' -f1 /proc/uptime)"

finish() {
  say "${MARK.exit}-$nonce $1"
  sync
  [ -n "$jobdir" ] && umount /newroot"$jobdir" 2>/dev/null
  poweroff -f
  sleep 5
  echo o > /proc/sysrq-trigger
}
die() { echo "${MARK.error} $*"; finish 255; }

/sbin/tsb-load-modules
if [ -c /dev/kvm ]; then
  say "${MARK.result} l1.dev-kvm pass npt=$(cat /sys/module/kvm_amd/parameters/npt 2>/dev/null) nested=$(cat /sys/module/kvm_amd/parameters/nested 2>/dev/null)"
else
  echo "${MARK.result} l1.dev-kvm fail no /dev/kvm after loading kvm_amd"
fi

mkdir -p /mnt/host /mnt/rw /newroot
mount -t 9p -o ${HOSTROOT_9P_OPTS} hostroot /mnt/host || die "cannot mount the host root (9p)"
mount -t tmpfs -o mode=0755 tmpfs /mnt/rw
mkdir -p /mnt/rw/upper /mnt/rw/work
if mount -t overlay -o lowerdir=/mnt/host,upperdir=/mnt/rw/upper,workdir=/mnt/rw/work overlay /newroot 2>/tmp/ovl.err; then
  say "${MARK.result} l1.root pass overlay"
else
  say "${MARK.result} l1.root skip bind+tmpfs ($(cat /tmp/ovl.err))"
  mount -o bind /mnt/host /newroot || die "cannot bind the host root"
  for d in /tmp /var/tmp /root; do mount -t tmpfs -o mode=1777 tmpfs /newroot$d; done
fi
mount -t proc proc /newroot/proc
mount -t sysfs sysfs /newroot/sys
mount -o bind /dev /newroot/dev
mkdir -p /newroot/dev/pts /newroot/dev/shm
mount -t devpts -o newinstance,ptmxmode=0666 devpts /newroot/dev/pts
mount -t tmpfs -o mode=1777 tmpfs /newroot/dev/shm
mount -t tmpfs -o mode=0755 tmpfs /newroot/run
[ -n "$jobdir" ] || die "no ${CMDLINE_KEYS.jobDir}= on the kernel command line"
mkdir -p /newroot"$jobdir"
mount -t 9p -o ${JOBDIR_9P_OPTS} tsbjob /newroot"$jobdir" || die "cannot mount the job directory (9p)"
[ -f /newroot"$jobdir"/job.sh ] || die "no job.sh in $jobdir"

say "${MARK.start} $(cut -d' ' -f1 /proc/uptime)"
if [ "$mode" = interactive ]; then
  # A new session whose controlling terminal is the console: the job can be typed into (and ^C reaches it).
  setsid cttyhack chroot /newroot /bin/sh -c 'cd "$0" && exec /bin/sh ./job.sh' "$jobdir"
else
  timeout -s KILL "$tmo" chroot /newroot /bin/sh -c 'cd "$0" && exec /bin/sh ./job.sh' "$jobdir" </dev/null
fi
finish $?
`;

/** POSIX-sh prelude put in front of every job script (runs under the host's /bin/sh in the chroot). */
export function jobPrelude(env: Record<string, string>): string {
  const q = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;
  const exports = Object.entries(env)
    .map(([k, v]) => `export ${k}=${q(v)}`)
    .join("\n");
  return `#!/bin/sh
# Generated by the nested test harness (test/harness/nested.ts). Helpers:
#   tsb_result NAME pass|fail|skip [DETAIL…]   report one check
#   tsb_check NAME CMD [ARGS…]                run CMD; pass iff it exits 0; detail "ms=<n> <last output line>"
#   tsb_guest_check NAME SECS MARKER CMD…     run a guest (CMD, e.g. tsbhyve or qemu) under timeout -s KILL SECS,
#                                             console to $TSB_OUT/NAME.<try>.log; pass iff MARKER appears;
#                                             an attempt killed by the timeout without MARKER is retried once
#                                             (testing.md: ~1 L2 boot in 33 hangs) and "retried" is reported
#   tsb_l2_boot TAG SECS EXPECT CMD…          boot an L2 guest (CMD, e.g. "$TSB_TSBHYVE" x.toml) whose /init prints
#                                             "TSB-L2 <name> pass|fail <detail>" lines (test/harness/l2.ts): console
#                                             to $TSB_OUT/TAG.<try>.log (path in $tsb_log, status in $tsb_rc) and,
#                                             as it comes, to L1's console as "[TAG.<try>] <line>"; an
#                                             attempt that triple-faulted (rc 3), or was killed (rc 137) before
#                                             TSB-GUEST-UP, is retried, up to 3 boots (the nested SVM's own
#                                             faults, test/harness/l2.ts), and the exit result says "retried";
#                                             each TSB-L2 line becomes a result, and TAG.exit passes iff the status
#                                             is EXPECT (detail: run ms, guest uptimes at up and at TSB-L2-DONE)
#   tsb_l2_retry TRY RC LOG                   true when boot TRY (1-3) of an L2 guest that ended with RC should be
#                                             retried: a triple fault (3), or a kill (137) before TSB-GUEST-UP in LOG
#                                             (the nested SVM's own faults and hangs); tsb_l2_boot's rule
#   tsb_now_ms                                milliseconds since the epoch
# The job's exit status is the script's own: end with "exit 0" or a command that succeeds.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root TMPDIR=/tmp TERM=dumb LANG=C.UTF-8
${exports}
mkdir -p "$TSB_OUT"
tsb_now_ms() { date +%s%3N; }
tsb_result() {
  _n=$1; _s=$2; shift 2
  echo "${MARK.result} $_n $_s $*"
  echo "$_n $_s $*" >> "$TSB_JOB_DIR/results.txt"
}
tsb_check() {
  _cn=$1; shift
  _t0=$(tsb_now_ms)
  _out=$("$@" 2>&1); _rc=$?
  _ms=$(( $(tsb_now_ms) - _t0 ))
  _last=$(printf '%s\\n' "$_out" | tr -d '\\r' | grep -v '^$' | tail -n 1 | cut -c1-300)
  if [ "$_rc" -eq 0 ]; then
    tsb_result "$_cn" pass "ms=$_ms $_last"
  else
    printf '%s\\n' "$_out" | tail -n 40 | sed "s/^/[$_cn] /"
    tsb_result "$_cn" fail "ms=$_ms rc=$_rc $_last"
  fi
  return $_rc
}
tsb_guest_check() {
  _gn=$1; _gt=$2; _gm=$3; shift 3
  _try=1; _note=
  while :; do
    _t0=$(tsb_now_ms)
    timeout -s KILL "$_gt" "$@" > "$TSB_OUT/$_gn.$_try.log" 2>&1 < /dev/null; _rc=$?
    _ms=$(( $(tsb_now_ms) - _t0 ))
    if grep -q -- "$_gm" "$TSB_OUT/$_gn.$_try.log"; then
      tsb_result "$_gn" pass "ms=$_ms$_note"
      return 0
    fi
    if [ "$_rc" -eq 137 ] && [ "$_try" -eq 1 ]; then
      _note=" retried(attempt-1-killed-after-\${_gt}s)"
      _try=2
      continue
    fi
    tail -n 30 "$TSB_OUT/$_gn.$_try.log" | sed "s/^/[$_gn] /"
    tsb_result "$_gn" fail "ms=$_ms rc=$_rc$_note marker-not-seen: $_gm"
    return 1
  done
}
tsb_l2_retry() {
  [ "$1" -lt 3 ] && { [ "$2" -eq 3 ] || { [ "$2" -eq 137 ] && ! grep -q TSB-GUEST-UP "$3"; }; }
}
tsb_l2_boot() {
  _tag=$1; _secs=$2; _want=$3; shift 3
  _note=
  for _try in 1 2 3; do
    tsb_log="$TSB_OUT/$_tag.$_try.log"
    _t0=$(tsb_now_ms)
    timeout -s KILL "$_secs" "$@" > "$tsb_log" 2>&1 < /dev/null &
    _pid=$!
    tail -n +1 -f --pid=$_pid "$tsb_log" 2>/dev/null | sed -u "s/^/[$_tag.$_try] /" &
    _tail=$!
    wait $_pid; tsb_rc=$?
    wait $_tail
    _ms=$(( $(tsb_now_ms) - _t0 ))
    if tsb_l2_retry "$_try" "$tsb_rc" "$tsb_log"; then
      echo "[$_tag] attempt $_try ended rc=$tsb_rc; retrying"
      _note="$_note retried(attempt-$_try-rc=$tsb_rc)"
      continue
    fi
    break
  done
  grep -a '^TSB-L2 ' "$tsb_log" | tr -d '\r' | while read -r _ _n _s _d; do tsb_result "$_n" "$_s" "$_d"; done
  _up=$(grep -a '^TSB-GUEST-UP' "$tsb_log" | tr -d '\r' | head -n 1 | cut -d' ' -f2)
  _done=$(grep -a '^TSB-L2-DONE' "$tsb_log" | tr -d '\r' | head -n 1 | cut -d' ' -f2)
  if [ "$tsb_rc" = "$_want" ]; then
    tsb_result "$_tag.exit" pass "rc=$tsb_rc ms=$_ms guest-up=\${_up}s guest-done=\${_done}s$_note"
  else
    tsb_result "$_tag.exit" fail "rc=$tsb_rc ms=$_ms$_note"
  fi
}
# ---- job ----
`;
}
