/**
 * guest/initramfs — a busybox initramfs for Debian's stock kernel, with a caller-supplied /init.
 *
 * Layout of the archive:
 *   /init                                   the caller's script (busybox sh; "#!/bin/sh" added if missing)
 *   /bin/busybox + one symlink per applet   what `busybox --install -s` would create
 *   /dev/console, /dev/null, /dev/ttyS0     the kernel opens /dev/console before /init runs
 *   /lib/modules/<release>/kernel/…/*.ko     the requested modules and their dependencies, uncompressed
 *   /lib/modules/<release>/modules.dep      for busybox modprobe
 *   /lib/modules/<release>/tsb-load-order   the same modules, dependencies first
 *   /sbin/tsb-load-modules                  insmods everything in tsb-load-order; prints
 *                                           "TSB-MODULE-FAIL <name>" for a module that would not load
 *   extraFiles                              last, so they may replace any of the above
 *
 * Results are cached by a hash of every input under <cache>/initramfs/, so rebuilding is a file read.
 */
import { existsSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { cacheDir, sha256, writeAtomic } from "./cache.ts";
import { CpioWriter, gzip } from "./cpio.ts";
import { fetchBusybox, fetchDebianKernel, type DebianKernel } from "./debian.ts";
import { runText } from "./exec.ts";
import { modulesDep, readModule, resolveModules } from "./modules.ts";

export interface ExtraFile {
  /** Absolute path inside the initramfs. */
  path: string;
  /** Permission bits; default 0644 for files (0755 if hostPath is executable). */
  mode?: number;
  /** Exactly one of data, hostPath or symlink. */
  data?: string | Uint8Array;
  hostPath?: string;
  symlink?: string;
}

export interface InitramfsOptions {
  /** Contents of /init. */
  init: string;
  /** Kernel module names (e.g. "virtio_blk", "kvm_amd"); dependencies are added. Built-ins are skipped. */
  modules?: string[];
  extraFiles?: ExtraFile[];
  /** Default "gzip". "none" is a plain cpio: bigger, but nothing for a slow (emulated) guest to inflate. */
  compress?: "gzip" | "none";
  /** Default: fetchDebianKernel(). Modules come from this kernel. */
  kernel?: DebianKernel;
  /** Path of a static busybox; default: Debian's busybox-static (fetchBusybox()). */
  busybox?: string;
}

const FORMAT_VERSION = "tsb-initramfs-1";

const LOAD_MODULES = `#!/bin/sh
# Load the initramfs's kernel modules, dependencies first (written by tsbhyve src/guest/initramfs.ts).
d=/lib/modules/$(uname -r)
[ -f "$d/tsb-load-order" ] || exit 0
rc=0
while read -r rel; do
  [ -n "$rel" ] || continue
  name=\${rel##*/}; name=\${name%.ko}
  mod=$(echo "$name" | tr - _)
  [ -d "/sys/module/$mod" ] && continue
  if ! insmod "$d/$rel" 2>/tmp/insmod.err; then
    echo "TSB-MODULE-FAIL $mod $(cat /tmp/insmod.err)"
    rc=1
  fi
done < "$d/tsb-load-order"
exit $rc
`;

const appletCache = new Map<string, string[]>();
/** Full applet paths ("/bin/sh", "/sbin/insmod", …) as the binary itself reports them. */
async function busyboxApplets(busybox: string): Promise<string[]> {
  let list = appletCache.get(busybox);
  if (!list) {
    const text = await runText([busybox, "--list-full"]);
    list = text.split("\n").map((s) => s.trim()).filter((s) => s.length > 0 && s !== "bin/busybox");
    appletCache.set(busybox, list);
  }
  return list;
}

function fileStamp(p: string): string {
  const st = statSync(p);
  return `${p}:${st.size}:${st.mtimeMs}`;
}

function cacheKey(o: InitramfsOptions, kernel: DebianKernel, busybox: string): string {
  const parts: (string | Uint8Array)[] = [
    FORMAT_VERSION,
    o.init,
    (o.modules ?? []).join(","),
    `${kernel.package}=${kernel.packageVersion}:${kernel.release}`,
    fileStamp(busybox),
    o.compress ?? "gzip",
  ];
  for (const f of o.extraFiles ?? []) {
    parts.push(f.path, String(f.mode ?? ""));
    if (f.data !== undefined) parts.push("data", f.data);
    else if (f.hostPath) parts.push("host", fileStamp(f.hostPath));
    else parts.push("symlink", f.symlink ?? "");
  }
  return sha256(...parts);
}

async function assemble(o: InitramfsOptions, kernel: DebianKernel, busybox: string): Promise<Uint8Array> {
  const w = new CpioWriter();
  for (const d of ["bin", "sbin", "usr/bin", "usr/sbin", "etc", "proc", "sys", "run", "mnt", "root", "dev"]) w.dir(d);
  w.dir("tmp", 0o1777);
  w.charDev("dev/console", 5, 1, 0o600);
  w.charDev("dev/null", 1, 3, 0o666);
  w.charDev("dev/ttyS0", 4, 64, 0o660);

  w.file("bin/busybox", new Uint8Array(readFileSync(busybox)), 0o755);
  for (const a of await busyboxApplets(busybox)) if (!w.has(a)) w.symlink(a, "/bin/busybox");

  const modDir = `lib/modules/${kernel.release}`;
  w.dir(modDir);
  const mods = await resolveModules(kernel.modulesDir, o.modules ?? []);
  const bodies = await Promise.all(mods.map((m) => readModule(m.hostPath)));
  mods.forEach((m, i) => w.file(`${modDir}/${m.relPath}`, bodies[i], 0o644));
  w.file(`${modDir}/modules.dep`, modulesDep(mods));
  w.file(`${modDir}/tsb-load-order`, mods.map((m) => m.relPath + "\n").join(""));
  w.file("sbin/tsb-load-modules", LOAD_MODULES, 0o755);

  w.file("init", o.init.startsWith("#!") ? o.init : `#!/bin/sh\n${o.init}`, 0o755);

  for (const f of o.extraFiles ?? []) {
    if (f.symlink !== undefined) w.symlink(f.path, f.symlink);
    else if (f.hostPath !== undefined) {
      const exec = (statSync(f.hostPath).mode & 0o111) !== 0;
      w.file(f.path, new Uint8Array(readFileSync(f.hostPath)), f.mode ?? (exec ? 0o755 : 0o644));
    } else if (f.data !== undefined) w.file(f.path, f.data, f.mode ?? 0o644);
    else throw new Error(`extraFiles ${f.path}: give data, hostPath or symlink`);
  }
  const cpio = w.finish();
  return (o.compress ?? "gzip") === "gzip" ? gzip(cpio) : cpio;
}

const inflight = new Map<string, Promise<string>>();

/** Build (or find in the cache) the initramfs; returns the path of the cached archive. */
export async function buildInitramfsFile(o: InitramfsOptions): Promise<string> {
  const kernel = o.kernel ?? (await fetchDebianKernel());
  const busybox = o.busybox ?? (await fetchBusybox()).path;
  const key = cacheKey(o, kernel, busybox);
  const out = join(cacheDir("initramfs"), `${key.slice(0, 32)}.cpio${(o.compress ?? "gzip") === "gzip" ? ".gz" : ""}`);
  if (existsSync(out)) return out;
  let p = inflight.get(out);
  if (!p) {
    p = assemble(o, kernel, busybox).then((bytes) => {
      writeAtomic(out, bytes);
      return out;
    });
    p.finally(() => inflight.delete(out)).catch(() => {});
    inflight.set(out, p);
  }
  return p;
}

/** Build (or find in the cache) the initramfs and return its bytes. */
export async function buildInitramfs(o: InitramfsOptions): Promise<Uint8Array> {
  return new Uint8Array(readFileSync(await buildInitramfsFile(o)));
}
