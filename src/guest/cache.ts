/**
 * guest/cache — where fetched Debian packages and built guest artefacts live on the host.
 *
 * Default `$XDG_CACHE_HOME/tsbhyve` or `~/.cache/tsbhyve`; `TSBHYVE_CACHE` overrides it. Everything in it is
 * keyed by content (package version, input hash), so it is safe to share between concurrent test processes:
 * writers build under a temporary name and rename into place.
 *
 * Keep the cache outside /tmp when running nested tests: L1 sees the host's root read-only, and its /tmp
 * is a fresh, writable layer (see test/harness/nested.ts), but a cache under /tmp is still visible there.
 */
import { mkdirSync, renameSync, rmSync, writeFileSync, existsSync } from "node:fs";
import { homedir } from "node:os";
import { dirname, join } from "node:path";
import { createHash } from "node:crypto";

export function cacheRoot(): string {
  const env = process.env.TSBHYVE_CACHE;
  if (env) return env;
  const xdg = process.env.XDG_CACHE_HOME;
  return join(xdg && xdg.length > 0 ? xdg : join(homedir(), ".cache"), "tsbhyve");
}

/** A subdirectory of the cache, created on demand. */
export function cacheDir(...parts: string[]): string {
  const d = join(cacheRoot(), ...parts);
  mkdirSync(d, { recursive: true });
  return d;
}

/** A name unique to this process and call, for build-then-rename. */
export function tempName(path: string): string {
  return `${path}.tmp-${process.pid}-${Math.random().toString(36).slice(2, 10)}`;
}

/** Write a file atomically (temp file + rename), creating its directory. */
export function writeAtomic(path: string, data: Uint8Array | string): void {
  mkdirSync(dirname(path), { recursive: true });
  const tmp = tempName(path);
  writeFileSync(tmp, data);
  renameSync(tmp, path);
}

/**
 * Move a freshly built directory into place. If another process won the race, keep theirs and drop ours
 * (both are built from the same key, so they are equivalent).
 */
export function publishDir(tmp: string, final: string): void {
  try {
    renameSync(tmp, final);
  } catch (e) {
    if (existsSync(final)) rmSync(tmp, { recursive: true, force: true });
    else throw e;
  }
}

export function sha256(...parts: (string | Uint8Array)[]): string {
  const h = createHash("sha256");
  for (const p of parts) {
    h.update(p);
    h.update("\0");
  }
  return h.digest("hex");
}
