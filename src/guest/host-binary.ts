/**
 * Host programs inside a guest initramfs: the binary plus every shared library `ldd` lists and the
 * dynamic loader, at their host paths (so the loader finds them without configuration). Used for tools
 * busybox lacks (iperf3 for the network checks and benchmarks).
 */
import { spawnSync } from "node:child_process";
import { realpathSync } from "node:fs";
import type { ExtraFile } from "./initramfs.ts";

/** ExtraFiles for `binaries` (absolute host paths) and their libraries, each file once. */
export function hostBinaryFiles(binaries: readonly string[]): ExtraFile[] {
  const files = new Map<string, ExtraFile>();
  const add = (path: string, mode?: number) => {
    if (files.has(path)) return;
    files.set(path, { path, hostPath: realpathSync(path), ...(mode === undefined ? {} : { mode }) });
  };
  for (const bin of binaries) {
    add(bin, 0o755);
    const r = spawnSync("ldd", [bin], { encoding: "utf8" });
    if (r.status !== 0) throw new Error(`ldd ${bin} failed (${r.status}): ${r.stderr || r.stdout}`);
    for (const line of r.stdout.split("\n")) {
      // "libx.so.1 => /lib/x86_64-linux-gnu/libx.so.1 (0x...)" or "/lib64/ld-linux-x86-64.so.2 (0x...)"
      const m = /=>\s*(\/\S+)/.exec(line) ?? /^\s*(\/\S+)\s+\(/.exec(line);
      if (m) add(m[1]!, 0o755);
    }
  }
  return [...files.values()];
}
