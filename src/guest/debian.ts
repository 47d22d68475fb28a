/**
 * guest/debian — Debian's stock kernel and busybox-static, fetched with apt but never installed.
 *
 * `apt-get download` puts the .deb in a scratch directory, `dpkg-deb -x` unpacks it into the cache under
 * `debian/<package>_<version>/`, and the result is reused until apt's candidate version changes. The
 * metapackage `linux-image-amd64` only depends on the real image package (`linux-image-<abi>-amd64`, the
 * signed build, which carries /boot/vmlinuz-*); we resolve that dependency with apt-cache.
 *
 * Environment:
 *   TSBHYVE_CACHE        cache root (see cache.ts)
 *   TSBHYVE_KERNEL_PKG   pin the image package (e.g. linux-image-6.1.0-56-amd64) instead of resolving the metapackage
 */
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { cacheDir, publishDir, tempName, writeAtomic } from "./cache.ts";
import { run, runOk } from "./exec.ts";

export interface DebianKernel {
  /** Package it came from, e.g. linux-image-6.1.0-56-amd64. */
  package: string;
  /** Debian package version, e.g. 6.1.192-2. */
  packageVersion: string;
  /** Kernel release (`uname -r`), e.g. 6.1.0-56-amd64. */
  release: string;
  /** Root of the unpacked package. */
  root: string;
  /** The bzImage. */
  vmlinuz: string;
  /** lib/modules/<release> inside root. */
  modulesDir: string;
  /** The kernel's .config. */
  config: string;
  systemMap: string;
}

export interface DebianBusybox {
  package: string;
  packageVersion: string;
  /** The static busybox binary. */
  path: string;
}

const META_KERNEL = "linux-image-amd64";
const BUSYBOX = "busybox-static";
const MARKER = ".tsbhyve-complete.json";

/** apt options: as root, apt drops to user _apt for downloads, which cannot write our scratch dir. */
function aptOpts(): string[] {
  return process.getuid?.() === 0 ? ["-o", "APT::Sandbox::User=root"] : [];
}

let updated = false;
/** `apt-get update`, at most once per process, and only after a lookup or a download failed. */
async function aptUpdate(): Promise<void> {
  if (updated) return;
  updated = true;
  const r = await run(["apt-get", ...aptOpts(), "-q", "update"]);
  if (r.code !== 0) throw new Error(`apt-get update failed (${r.code}): ${r.stderr.trim()}`);
}

/** Run an apt query; if it fails (no lists yet, or stale ones), update the lists once and retry. */
async function withAptRetry<T>(what: string, f: () => Promise<T | undefined>): Promise<T> {
  let first: unknown;
  try {
    const v = await f();
    if (v !== undefined) return v;
  } catch (e) {
    first = e;
  }
  await aptUpdate();
  const v = await f();
  if (v === undefined) throw new Error(`${what}: not found even after apt-get update${first ? ` (${first})` : ""}`);
  return v;
}

async function candidateVersion(pkg: string): Promise<string | undefined> {
  const r = await run(["apt-cache", "policy", pkg]);
  if (r.code !== 0) return undefined;
  const m = /Candidate:\s*(\S+)/.exec(new TextDecoder().decode(r.stdout));
  return m && m[1] !== "(none)" ? m[1] : undefined;
}

/** linux-image-amd64 → linux-image-<abi>-amd64 (the package holding the image and modules). */
async function resolveKernelPackage(): Promise<string> {
  const pinned = process.env.TSBHYVE_KERNEL_PKG;
  if (pinned) return pinned;
  return withAptRetry(`resolving ${META_KERNEL}`, async () => {
    const r = await run(["apt-cache", "depends", META_KERNEL]);
    if (r.code !== 0) return undefined;
    for (const line of new TextDecoder().decode(r.stdout).split("\n")) {
      const m = /^\s*\|?Depends:\s*(linux-image-\d\S*)/.exec(line);
      if (m) return m[1];
    }
    return undefined;
  });
}

/** Download and unpack one package into the cache (once per version); returns its root. */
async function unpackPackage(pkg: string, version: string): Promise<string> {
  const base = cacheDir("debian");
  const final = join(base, `${pkg}_${version.replace(/[:/]/g, "_")}`);
  if (existsSync(join(final, MARKER))) return final;

  const tmp = tempName(final);
  const dl = join(tmp, ".deb");
  mkdirSync(dl, { recursive: true });
  try {
    await withAptRetry(`apt-get download ${pkg}=${version}`, async () => {
      const r = await run(["apt-get", ...aptOpts(), "-q", "download", `${pkg}=${version}`], { cwd: dl });
      if (r.code !== 0) throw new Error(r.stderr.trim());
      return true;
    });
    const debs = readdirSync(dl).filter((f) => f.endsWith(".deb"));
    if (debs.length !== 1) throw new Error(`apt-get download ${pkg}: expected one .deb, got ${debs.join(", ")}`);
    await runOk(["dpkg-deb", "-x", join(dl, debs[0]), tmp]);
    rmSync(dl, { recursive: true, force: true });
    writeFileSync(join(tmp, MARKER), JSON.stringify({ package: pkg, version, fetched: new Date().toISOString() }));
    publishDir(tmp, final);
  } catch (e) {
    rmSync(tmp, { recursive: true, force: true });
    throw e;
  }
  return final;
}

/** Newest complete cache entry for a package name prefix: the offline fallback when apt cannot answer. */
function cachedFallback(prefix: string): { root: string; pkg: string; version: string } | undefined {
  const base = cacheDir("debian");
  const hits = readdirSync(base)
    .filter((d) => d.startsWith(prefix) && !d.includes(".tmp-") && existsSync(join(base, d, MARKER)))
    .map((d) => {
      const m = JSON.parse(readFileSync(join(base, d, MARKER), "utf8")) as { package: string; version: string };
      return { root: join(base, d), pkg: m.package, version: m.version };
    })
    .sort((a, b) => (a.root < b.root ? 1 : -1));
  return hits[0];
}

/**
 * apt-cache is slow here (≈ 0.5 s a query: container images disable apt's binary cache), so a resolution
 * (query → package, version) is remembered until the package lists change (their directory's mtime moves on
 * every `apt-get update`). Not used with a custom APT_CONFIG.
 */
const APT_LISTS = "/var/lib/apt/lists";
function listsStamp(): string | undefined {
  if (process.env.APT_CONFIG) return undefined;
  try {
    return `${statSync(APT_LISTS).mtimeMs}:${process.env.TSBHYVE_KERNEL_PKG ?? ""}`;
  } catch {
    return undefined;
  }
}
type Resolved = { pkg: string; version: string; stamp: string };
function resolvedMemoPath(): string {
  return join(cacheDir("debian"), "resolved.json");
}
function readResolved(query: string): Resolved | undefined {
  const stamp = listsStamp();
  if (!stamp) return undefined;
  try {
    const all = JSON.parse(readFileSync(resolvedMemoPath(), "utf8")) as Record<string, Resolved>;
    const r = all[query];
    return r && r.stamp === stamp ? r : undefined;
  } catch {
    return undefined;
  }
}
function writeResolved(query: string, pkg: string, version: string): void {
  const stamp = listsStamp();
  if (!stamp) return;
  let all: Record<string, Resolved> = {};
  try {
    all = JSON.parse(readFileSync(resolvedMemoPath(), "utf8"));
  } catch {}
  all[query] = { pkg, version, stamp };
  writeAtomic(resolvedMemoPath(), JSON.stringify(all, null, 1));
}

async function fetchPackage(query: string, resolve: () => Promise<string>, fallbackPrefix: string) {
  const memo = readResolved(query);
  if (memo) return { root: await unpackPackage(memo.pkg, memo.version), pkg: memo.pkg, version: memo.version };
  let pkg: string;
  let version: string | undefined;
  try {
    pkg = await resolve();
    version = await withAptRetry(`apt-cache policy ${pkg}`, () => candidateVersion(pkg));
    writeResolved(query, pkg, version);
  } catch (e) {
    const fb = cachedFallback(fallbackPrefix);
    if (fb) return fb;
    throw e;
  }
  return { root: await unpackPackage(pkg, version), pkg, version };
}

const memo = new Map<string, Promise<unknown>>();
function once<T>(key: string, f: () => Promise<T>): Promise<T> {
  let p = memo.get(key) as Promise<T> | undefined;
  if (!p) {
    p = f();
    p.catch(() => memo.delete(key));
    memo.set(key, p);
  }
  return p;
}

/** Debian's stock amd64 kernel (image, modules, config), fetched once and cached. */
export function fetchDebianKernel(): Promise<DebianKernel> {
  return once("kernel", async () => {
    const { root, pkg, version } = await fetchPackage("kernel", resolveKernelPackage, "linux-image-");
    const boot = join(root, "boot");
    const vmlinuz = existsSync(boot) ? readdirSync(boot).find((f) => f.startsWith("vmlinuz-")) : undefined;
    if (!vmlinuz) throw new Error(`${pkg} ${version} has no /boot/vmlinuz-* (set TSBHYVE_KERNEL_PKG to an image package)`);
    const release = vmlinuz.slice("vmlinuz-".length);
    const modulesDir = join(root, "lib", "modules", release);
    if (!existsSync(modulesDir)) throw new Error(`${pkg}: no lib/modules/${release}`);
    return {
      package: pkg,
      packageVersion: version,
      release,
      root,
      vmlinuz: join(boot, vmlinuz),
      modulesDir,
      config: join(boot, `config-${release}`),
      systemMap: join(boot, `System.map-${release}`),
    };
  });
}

/** Debian's busybox-static, fetched once and cached (not the host's copy: the guest gets a known build). */
export function fetchBusybox(): Promise<DebianBusybox> {
  return once("busybox", async () => {
    const { root, pkg, version } = await fetchPackage("busybox", async () => BUSYBOX, `${BUSYBOX}_`);
    const path = join(root, "bin", "busybox");
    if (!existsSync(path)) throw new Error(`${pkg} ${version}: no bin/busybox`);
    return { package: pkg, packageVersion: version, path };
  });
}
