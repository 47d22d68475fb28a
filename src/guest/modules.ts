/**
 * guest/modules — kernel modules for a guest initramfs, with their dependencies.
 *
 * Debian's image package ships no modules.dep (depmod runs at install time, which we skip), so the
 * dependencies come from each module's own `.modinfo` ELF section (`depends=a,b`), which is what depmod
 * reads too. Only the modules actually needed are opened. Module names treat "-" and "_" alike, as the
 * kernel does. Compressed modules (.ko.xz/.ko.zst/.ko.gz) are decompressed at build time so the guest's
 * busybox insmod never has to.
 */
import { readdirSync, readFileSync, existsSync } from "node:fs";
import { join } from "node:path";
import { gunzipSync } from "node:zlib";
import { runOk } from "./exec.ts";

export interface ResolvedModule {
  /** Canonical name (underscores), e.g. kvm_amd. */
  name: string;
  /** Path relative to the modules dir, always ending in plain ".ko", e.g. kernel/arch/x86/kvm/kvm-amd.ko. */
  relPath: string;
  /** Host path of the (possibly compressed) file. */
  hostPath: string;
  /** Canonical names of direct dependencies. */
  depends: string[];
}

const MOD_RE = /\.ko(\.xz|\.zst|\.gz)?$/;
export const canonicalModuleName = (n: string) => n.replace(/-/g, "_").replace(MOD_RE, "");

interface ModuleIndex {
  files: Map<string, string>; // canonical name → path relative to modulesDir (as shipped)
  builtin: Set<string>;
}
const indexes = new Map<string, ModuleIndex>();

function indexOf(modulesDir: string): ModuleIndex {
  let idx = indexes.get(modulesDir);
  if (idx) return idx;
  const files = new Map<string, string>();
  const walk = (rel: string) => {
    for (const e of readdirSync(join(modulesDir, rel), { withFileTypes: true })) {
      const r = rel ? `${rel}/${e.name}` : e.name;
      if (e.isDirectory()) walk(r);
      else if (MOD_RE.test(e.name)) files.set(canonicalModuleName(e.name), r);
    }
  };
  walk("kernel");
  if (existsSync(join(modulesDir, "updates"))) walk("updates");
  const builtin = new Set<string>();
  const bpath = join(modulesDir, "modules.builtin");
  if (existsSync(bpath)) {
    for (const line of readFileSync(bpath, "utf8").split("\n")) {
      const base = line.split("/").pop();
      if (base) builtin.add(canonicalModuleName(base));
    }
  }
  idx = { files, builtin };
  indexes.set(modulesDir, idx);
  return idx;
}

/** The plain ELF bytes of a module, decompressing .xz/.zst/.gz with Bun or the host tool. */
export async function readModule(hostPath: string): Promise<Uint8Array> {
  const raw = readFileSync(hostPath);
  if (hostPath.endsWith(".ko")) return new Uint8Array(raw);
  if (hostPath.endsWith(".zst")) return new Uint8Array(Bun.zstdDecompressSync(raw));
  if (hostPath.endsWith(".gz")) return new Uint8Array(gunzipSync(raw));
  if (hostPath.endsWith(".xz")) return runOk(["xz", "-dc", hostPath]);
  throw new Error(`unknown module format: ${hostPath}`);
}

/** Key/value strings of an ELF64 object's .modinfo section (NUL-separated "key=value"). */
export function parseModinfo(elf: Uint8Array): Map<string, string[]> {
  const dv = new DataView(elf.buffer, elf.byteOffset, elf.byteLength);
  if (dv.getUint32(0, false) !== 0x7f454c46 || elf[4] !== 2) throw new Error("not an ELF64 object");
  const shoff = Number(dv.getBigUint64(0x28, true));
  const shentsize = dv.getUint16(0x3a, true);
  const shnum = dv.getUint16(0x3c, true);
  const shstrndx = dv.getUint16(0x3e, true);
  const sh = (i: number) => {
    const o = shoff + i * shentsize;
    return {
      name: dv.getUint32(o, true),
      offset: Number(dv.getBigUint64(o + 0x18, true)),
      size: Number(dv.getBigUint64(o + 0x20, true)),
    };
  };
  const strtab = sh(shstrndx);
  const dec = new TextDecoder();
  const cstr = (off: number) => {
    let end = off;
    while (end < elf.length && elf[end] !== 0) end++;
    return dec.decode(elf.subarray(off, end));
  };
  const out = new Map<string, string[]>();
  for (let i = 0; i < shnum; i++) {
    const s = sh(i);
    if (cstr(strtab.offset + s.name) !== ".modinfo") continue;
    for (const kv of dec.decode(elf.subarray(s.offset, s.offset + s.size)).split("\0")) {
      const eq = kv.indexOf("=");
      if (eq <= 0) continue;
      const k = kv.slice(0, eq);
      const list = out.get(k) ?? [];
      list.push(kv.slice(eq + 1));
      out.set(k, list);
    }
  }
  return out;
}

const infoCache = new Map<string, string[]>(); // hostPath → depends

async function dependsOf(hostPath: string): Promise<string[]> {
  let d = infoCache.get(hostPath);
  if (!d) {
    const info = parseModinfo(await readModule(hostPath));
    d = (info.get("depends") ?? []).flatMap((s) => s.split(",")).filter((s) => s.length > 0).map(canonicalModuleName);
    infoCache.set(hostPath, d);
  }
  return d;
}

/**
 * The named modules and everything they depend on, in a load order (dependencies first). Names built into
 * the kernel are skipped silently; unknown names throw.
 */
export async function resolveModules(modulesDir: string, names: string[]): Promise<ResolvedModule[]> {
  const idx = indexOf(modulesDir);
  const order: ResolvedModule[] = [];
  const state = new Map<string, "visiting" | "done">();
  const visit = async (raw: string, from?: string): Promise<void> => {
    const name = canonicalModuleName(raw);
    if (state.get(name) === "done" || state.get(name) === "visiting") return; // cycles cannot load anyway
    const rel = idx.files.get(name);
    if (!rel) {
      if (idx.builtin.has(name)) return;
      throw new Error(`kernel module ${raw} not found in ${modulesDir}${from ? ` (needed by ${from})` : ""}`);
    }
    state.set(name, "visiting");
    const hostPath = join(modulesDir, rel);
    const depends = await dependsOf(hostPath);
    for (const d of depends) await visit(d, name);
    state.set(name, "done");
    order.push({ name, relPath: rel.replace(MOD_RE, ".ko"), hostPath, depends });
  };
  for (const n of names) await visit(n);
  return order;
}

/** A modules.dep for just these modules, so busybox `modprobe` works in the guest too. */
export function modulesDep(mods: ResolvedModule[]): string {
  const byName = new Map(mods.map((m) => [m.name, m]));
  const closure = (m: ResolvedModule, acc: string[], seen: Set<string>) => {
    for (const d of m.depends) {
      const dm = byName.get(d);
      if (!dm || seen.has(d)) continue;
      seen.add(d);
      acc.push(dm.relPath);
      closure(dm, acc, seen);
    }
    return acc;
  };
  return mods.map((m) => `${m.relPath}: ${closure(m, [], new Set()).join(" ")}`.trimEnd() + "\n").join("");
}
