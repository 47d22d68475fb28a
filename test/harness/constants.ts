/**
 * Tunables of the nested (tier 3) harness. The machine shape, timeouts, modules, 9p options and the L1
 * command line live in src/guest/nested/constants.ts (shared with `tsbhyve demo`) and are re-exported here;
 * this file adds what only tests need: the checkout's root, the real Bun binary, dist/tsbhyve.
 */
import { existsSync, realpathSync, readdirSync } from "node:fs";
import { join } from "node:path";

export {
  QEMU, QEMU_PACKAGE, L1_MEM_MIB, L1_SMP, TIMEOUTS, HANG_RETRIES, L1_MODULES, HOSTROOT_9P_OPTS, JOBDIR_9P_OPTS,
  L1_CMDLINE, JOB_ROOT,
} from "../../src/guest/nested/constants.ts";

export const REPO_ROOT = join(import.meta.dir, "..", "..");

/**
 * The real Bun binary (not the npm wrapper/symlink): node_modules/.bin/bun points at it, or it lives in
 * node_modules/@oven/bun-linux-x64*\/bin/bun.
 */
export function realBun(): string {
  const candidates: string[] = [];
  const oven = join(REPO_ROOT, "node_modules", "@oven");
  if (existsSync(oven)) {
    for (const d of readdirSync(oven).filter((d) => d.startsWith("bun-linux-x64")).sort()) {
      candidates.push(join(oven, d, "bin", "bun"));
    }
  }
  const wrapper = join(REPO_ROOT, "node_modules", ".bin", "bun");
  if (existsSync(wrapper)) candidates.unshift(realpathSync(wrapper));
  candidates.push(process.execPath);
  for (const c of candidates) if (existsSync(c) && !c.endsWith(".js")) return c;
  throw new Error(`no Bun binary found (looked at ${candidates.join(", ")})`);
}

/** The compiled tsbhyve binary (built by `bun run build`). */
export const TSBHYVE_BINARY = join(REPO_ROOT, "dist", "tsbhyve");
