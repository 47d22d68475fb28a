/**
 * guest/ — everything needed to boot Debian's stock kernel as a guest, built from apt packages without
 * installing them: kernel + modules (debian.ts), vmlinux for PVH (vmlinux.ts), a busybox initramfs with a
 * chosen /init (initramfs.ts, cpio.ts). Used by `tsbhyve demo` and by the nested test harness.
 */
import { fetchDebianKernel, type DebianKernel } from "./debian.ts";
import { buildInitramfsFile, type ExtraFile } from "./initramfs.ts";
import { extractVmlinux } from "./vmlinux.ts";

export { fetchDebianKernel, fetchBusybox, type DebianKernel, type DebianBusybox } from "./debian.ts";
export { buildInitramfs, buildInitramfsFile, type ExtraFile, type InitramfsOptions } from "./initramfs.ts";
export { extractVmlinux, findPayload, hasPvhNote } from "./vmlinux.ts";
export { CpioWriter, gzip, type CpioEntry } from "./cpio.ts";
export { resolveModules, parseModinfo, readModule, type ResolvedModule } from "./modules.ts";
export { cacheRoot } from "./cache.ts";
export { hostBinaryFiles } from "./host-binary.ts";

/** Printed by DEFAULT_GUEST_INIT once userspace runs; a test waits for it on the serial console. */
export const GUEST_UP_MARKER = "TSB-GUEST-UP";

/**
 * A minimal guest /init: mount the pseudo filesystems, load the initramfs's modules, print the marker
 * (with uptime), then run `tsb.cmd=<name>` from the kernel command line if given ("poweroff" powers off
 * at once; default: an interactive shell on the console, then poweroff when it exits).
 */
export const DEFAULT_GUEST_INIT = `#!/bin/sh
export PATH=/sbin:/bin:/usr/sbin:/usr/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
/sbin/tsb-load-modules
echo "${GUEST_UP_MARKER} $(cut -d' ' -f1 /proc/uptime)"
cmd=
for a in $(cat /proc/cmdline); do case "$a" in tsb.cmd=*) cmd="\${a#*=}" ;; esac; done
case "$cmd" in
  poweroff) ;;
  "") setsid cttyhack sh ;;
  *) sh -c "$cmd" ;;
esac
poweroff -f
`;

/** Modules a virtio guest of tsbhyve typically needs (all are modules in Debian's kernel). */
export const DEFAULT_GUEST_MODULES = ["virtio_pci", "virtio_blk", "virtio_net", "virtio_console", "virtio_rng"];

export interface GuestOptions {
  /** /init of the initramfs; default DEFAULT_GUEST_INIT. */
  init?: string;
  /** Default DEFAULT_GUEST_MODULES. */
  modules?: string[];
  extraFiles?: ExtraFile[];
  compress?: "gzip" | "none";
  /** Also recover the uncompressed vmlinux (PVH boot). */
  vmlinux?: boolean;
}

export interface GuestBundle {
  kernel: DebianKernel;
  /** bzImage. */
  bzImage: string;
  vmlinux?: string;
  initrd: string;
  /** A sensible default command line for a serial-console guest. */
  cmdline: string;
}

/** Kernel + initramfs ready to boot (all paths in the cache; built once, then reused). */
export async function prepareGuest(o: GuestOptions = {}): Promise<GuestBundle> {
  const kernel = await fetchDebianKernel();
  const [initrd, vmlinux] = await Promise.all([
    buildInitramfsFile({
      init: o.init ?? DEFAULT_GUEST_INIT,
      modules: o.modules ?? DEFAULT_GUEST_MODULES,
      extraFiles: o.extraFiles,
      compress: o.compress,
      kernel,
    }),
    o.vmlinux ? extractVmlinux(kernel.vmlinuz) : Promise.resolve(undefined),
  ]);
  return { kernel, bzImage: kernel.vmlinuz, vmlinux, initrd, cmdline: "console=ttyS0 quiet panic=-1" };
}
