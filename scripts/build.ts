/**
 * Build: compile the C shim with gcc into build/libtsbhyve.so, then `bun build --compile` the
 * program (with its Worker entry points and the embedded shim) into one executable, dist/tsbhyve.
 *   bun scripts/build.ts            shim + binary
 *   bun scripts/build.ts --shim     shim only (what tests run from source need)
 */
import { $ } from "bun";
import { mkdirSync, statSync, readdirSync, existsSync } from "node:fs";
import { join } from "node:path";

const root = join(import.meta.dir, "..");
export const SHIM = join(root, "build", "libtsbhyve.so");
export const BINARY = join(root, "dist", "tsbhyve");
/** Every file Bun must bundle as a separate entry point (Workers are loaded by URL). */
export const ENTRY_POINTS = ["src/main.ts", "src/vcpu/worker.ts", "src/vm/io-worker.ts", "src/virtio/blk/pool-worker.ts"];

function newest(dir: string, ext: string[]): number {
  let t = 0;
  for (const f of readdirSync(dir, { recursive: true }) as string[]) {
    if (ext.some((e) => f.endsWith(e))) t = Math.max(t, statSync(join(dir, f)).mtimeMs);
  }
  return t;
}

export async function buildShim(force = false): Promise<string> {
  mkdirSync(join(root, "build"), { recursive: true });
  if (!force && existsSync(SHIM) && statSync(SHIM).mtimeMs >= newest(join(root, "ffi"), [".c", ".h"])) return SHIM;
  const cc = process.env.CC ?? "gcc";
  // every ffi/*.c: kvm.c (the VM backend), host.c (memory, fds, disks), net.c (tap), fs.c (confined file access)
  const sources = (readdirSync(join(root, "ffi")) as string[]).filter((f) => f.endsWith(".c")).sort().map((f) => join(root, "ffi", f));
  await $`${cc} -O2 -g -Wall -Wextra -Werror -fPIC -shared -o ${SHIM}.tmp ${sources} -lpthread`.cwd(root);
  await $`mv ${SHIM}.tmp ${SHIM}`;
  return SHIM;
}

export async function buildBinary(): Promise<string> {
  await buildShim();
  mkdirSync(join(root, "dist"), { recursive: true });
  const t0 = performance.now();
  const r = await Bun.build({
    entrypoints: ENTRY_POINTS.map((e) => join(root, e)),
    compile: { outfile: BINARY },
    minify: { syntax: true, whitespace: true },
    sourcemap: "linked",
    define: { "process.env.TSBHYVE_COMPILED": '"1"' },
  });
  if (!r.success) {
    for (const l of r.logs) console.error(l);
    throw new Error("bun build failed");
  }
  console.error(`built ${BINARY} (${(statSync(BINARY).size / 2 ** 20).toFixed(1)} MiB) in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  return BINARY;
}

if (import.meta.main) {
  const shimOnly = process.argv.includes("--shim");
  await buildShim(process.argv.includes("--force"));
  if (!shimOnly) await buildBinary();
}
