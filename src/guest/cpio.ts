/**
 * guest/cpio — a writer for the "newc" cpio format (magic 070701), the format Linux unpacks as an
 * initramfs (Documentation/driver-api/early-userspace/buffer-format.rst).
 *
 * Each member is a 110-byte ASCII header (magic + 13 fields of 8 hex digits), the NUL-terminated name,
 * padding to a multiple of 4, the data, padding to a multiple of 4. The archive ends with a member
 * named "TRAILER!!!". Names are stored without a leading "/".
 *
 * The kernel does not create missing parent directories while unpacking, so the writer adds them
 * (mode 0755) before their first child. Adding a path twice replaces the earlier member in place, which
 * lets callers override defaults (an extra file over a generated one). mtime is 0 unless given, so the
 * same input always yields the same bytes (initramfs.ts caches by content hash).
 */
import { gzipSync } from "node:zlib";

export const S_IFMT = 0o170000;
export const S_IFDIR = 0o040000;
export const S_IFREG = 0o100000;
export const S_IFLNK = 0o120000;
export const S_IFCHR = 0o020000;
export const S_IFBLK = 0o060000;

export type CpioEntry =
  | { type: "file"; path: string; data: Uint8Array; mode?: number }
  | { type: "dir"; path: string; mode?: number }
  | { type: "symlink"; path: string; target: string }
  | { type: "chardev" | "blockdev"; path: string; major: number; minor: number; mode?: number };

interface Member {
  name: string;
  mode: number; // including the S_IF* type bits
  data: Uint8Array;
  rdevMajor: number;
  rdevMinor: number;
}

const HEADER_BYTES = 110;
const enc = new TextEncoder();

/** "/a//b/" → "a/b"; rejects ".." so an archive can never point outside its root. */
export function normalizeCpioPath(p: string): string {
  const parts = p.split("/").filter((s) => s !== "" && s !== ".");
  if (parts.some((s) => s === "..")) throw new Error(`cpio: path with "..": ${p}`);
  if (parts.length === 0) throw new Error(`cpio: empty path`);
  return parts.join("/");
}

const pad4 = (n: number) => (4 - (n & 3)) & 3;

function hex8(n: number): string {
  if (!Number.isInteger(n) || n < 0 || n > 0xffffffff) throw new Error(`cpio: field out of range: ${n}`);
  return n.toString(16).padStart(8, "0");
}

export class CpioWriter {
  private readonly members = new Map<string, Member>();
  constructor(private readonly mtime = 0) {}

  has(path: string): boolean {
    return this.members.has(normalizeCpioPath(path));
  }

  add(e: CpioEntry): this {
    switch (e.type) {
      case "file":
        return this.put(e.path, S_IFREG | (e.mode ?? 0o644), e.data);
      case "dir":
        return this.put(e.path, S_IFDIR | (e.mode ?? 0o755), new Uint8Array(0));
      case "symlink":
        // A symlink's data is its target, without a terminating NUL.
        return this.put(e.path, S_IFLNK | 0o777, enc.encode(e.target));
      case "chardev":
      case "blockdev":
        return this.put(e.path, (e.type === "chardev" ? S_IFCHR : S_IFBLK) | (e.mode ?? 0o600), new Uint8Array(0), e.major, e.minor);
    }
  }

  file(path: string, data: Uint8Array | string, mode = 0o644): this {
    return this.add({ type: "file", path, data: typeof data === "string" ? enc.encode(data) : data, mode });
  }
  dir(path: string, mode = 0o755): this {
    return this.add({ type: "dir", path, mode });
  }
  symlink(path: string, target: string): this {
    return this.add({ type: "symlink", path, target });
  }
  charDev(path: string, major: number, minor: number, mode = 0o600): this {
    return this.add({ type: "chardev", path, major, minor, mode });
  }

  private put(path: string, mode: number, data: Uint8Array, rdevMajor = 0, rdevMinor = 0): this {
    const name = normalizeCpioPath(path);
    const slash = name.lastIndexOf("/");
    if (slash > 0) this.ensureDir(name.slice(0, slash));
    const prev = this.members.get(name);
    if (prev && (prev.mode & S_IFMT) === S_IFDIR && (mode & S_IFMT) === S_IFDIR) {
      prev.mode = mode; // re-adding a directory only changes its mode
      return this;
    }
    this.members.set(name, { name, mode, data, rdevMajor, rdevMinor });
    return this;
  }

  private ensureDir(name: string): void {
    const m = this.members.get(name);
    if (m) {
      if ((m.mode & S_IFMT) !== S_IFDIR) throw new Error(`cpio: ${name} is not a directory`);
      return;
    }
    const slash = name.lastIndexOf("/");
    if (slash > 0) this.ensureDir(name.slice(0, slash));
    this.members.set(name, { name, mode: S_IFDIR | 0o755, data: new Uint8Array(0), rdevMajor: 0, rdevMinor: 0 });
  }

  /** The uncompressed archive. */
  finish(): Uint8Array {
    const chunks: Uint8Array[] = [];
    let ino = 1;
    for (const m of this.members.values()) chunks.push(...this.encode(m, ino++));
    chunks.push(...this.encode({ name: "TRAILER!!!", mode: 0, data: new Uint8Array(0), rdevMajor: 0, rdevMinor: 0 }, 0));
    let total = 0;
    for (const c of chunks) total += c.length;
    const out = new Uint8Array(total);
    let off = 0;
    for (const c of chunks) {
      out.set(c, off);
      off += c.length;
    }
    return out;
  }

  private encode(m: Member, ino: number): Uint8Array[] {
    const name = enc.encode(m.name + "\0");
    const isDir = (m.mode & S_IFMT) === S_IFDIR;
    const fields = [
      ino,
      m.mode,
      0, // uid
      0, // gid
      m.name === "TRAILER!!!" ? 1 : isDir ? 2 : 1, // nlink
      m.name === "TRAILER!!!" ? 0 : this.mtime,
      m.data.length,
      0, // devmajor (of the filesystem the file came from)
      0, // devminor
      m.rdevMajor,
      m.rdevMinor,
      name.length,
      0, // check: only used by the "070702" crc format
    ];
    const header = enc.encode("070701" + fields.map(hex8).join(""));
    const out: Uint8Array[] = [header, name, new Uint8Array(pad4(HEADER_BYTES + name.length))];
    if (m.data.length > 0) out.push(m.data, new Uint8Array(pad4(m.data.length)));
    return out;
  }
}

/** gzip for an initramfs (every Linux kernel with CONFIG_RD_GZIP, i.e. all of Debian's, can unpack it). */
export function gzip(data: Uint8Array, level = 6): Uint8Array {
  return new Uint8Array(gzipSync(data, { level }));
}
