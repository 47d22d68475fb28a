/**
 * vmm/fs — file access confined beneath a shared directory, for virtio-9p (ffi/fs.c, ffi/fs.h).
 *
 * Every call returns a negative errno on failure (never throws on host errors). Names are one path
 * component as raw bytes (9P names need not be UTF-8); the caller has already refused "", ".", "..",
 * '/' and NUL, and the C side checks again. Objects are O_PATH fds: `walk` opens one name beneath a
 * directory fd without following symlinks (openat2 RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS); `reopen`
 * turns one into an open file, checked to be the same inode.
 */
import { shim } from "./ffi.ts";

/** lstat of a host object (ffi/fs.h TSB_FS_STAT_WORDS). Times as [seconds, nanoseconds]. */
export interface FsStat {
  dev: bigint; ino: bigint; mode: number; nlink: bigint; uid: number; gid: number; rdev: bigint;
  size: bigint; blksize: bigint; blocks: bigint;
  atime: [bigint, bigint]; mtime: [bigint, bigint]; ctime: [bigint, bigint];
}
export interface FsStatfs { type: bigint; bsize: bigint; blocks: bigint; bfree: bigint; bavail: bigint; files: bigint; ffree: bigint; fsid: bigint; namelen: bigint }

/** utimensat's special nanosecond values */
export const UTIME_NOW = (1 << 30) - 1, UTIME_OMIT = (1 << 30) - 2;

const enc = new TextEncoder();
/** A NUL-terminated copy of a name (bytes or text). */
function cz(name: Uint8Array | string): Uint8Array {
  const b = typeof name === "string" ? enc.encode(name) : name;
  const out = new Uint8Array(b.length + 1);
  out.set(b);
  return out;
}

const statBuf = new BigUint64Array(16);
function toStat(b: BigUint64Array): FsStat {
  return {
    dev: b[0]!, ino: b[1]!, mode: Number(b[2]!), nlink: b[3]!, uid: Number(b[4]!), gid: Number(b[5]!), rdev: b[6]!,
    size: b[7]!, blksize: b[8]!, blocks: b[9]!, atime: [b[10]!, b[11]!], mtime: [b[12]!, b[13]!], ctime: [b[14]!, b[15]!],
  };
}

export const fsHost = {
  /** O_PATH directory fd of a share (the configured path may itself go through symlinks). */
  openRoot(path: string): number { return shim().tsb_fs_open_root(cz(path)); },
  walk(dirfd: number, name: Uint8Array | string): number { return shim().tsb_fs_walk(dirfd, cz(name)); },
  stat(fd: number): FsStat | number {
    const r = shim().tsb_fs_stat(fd, statBuf);
    return r < 0 ? r : toStat(statBuf);
  },
  statAt(dirfd: number, name: Uint8Array | string): FsStat | number {
    const r = shim().tsb_fs_statat(dirfd, cz(name), statBuf);
    return r < 0 ? r : toStat(statBuf);
  },
  /** Open the object of O_PATH `fd` (a regular file through `name` beneath `dirfd`; -1 for none). */
  reopen(fd: number, dirfd: number, name: Uint8Array | string, flags: number): number {
    return shim().tsb_fs_reopen(fd, dirfd, cz(name), flags);
  },
  /** Create-or-open a regular file: [open fd, O_PATH fd] or -errno. */
  create(dirfd: number, name: Uint8Array | string, flags: number, mode: number): [number, number] | number {
    const out = new Int32Array(2);
    const r = shim().tsb_fs_create(dirfd, cz(name), flags, mode, out);
    return r < 0 ? r : [out[0]!, out[1]!];
  },
  mkdir(dirfd: number, name: Uint8Array | string, mode: number): number { return shim().tsb_fs_mkdir(dirfd, cz(name), mode); },
  symlink(dirfd: number, name: Uint8Array | string, target: Uint8Array | string): number { return shim().tsb_fs_symlink(dirfd, cz(name), cz(target)); },
  mknod(dirfd: number, name: Uint8Array | string, mode: number): number { return shim().tsb_fs_mknod(dirfd, cz(name), mode); },
  link(fd: number, olddirfd: number, oldname: Uint8Array | string, newdirfd: number, newname: Uint8Array | string): number {
    return shim().tsb_fs_link(fd, olddirfd, cz(oldname), newdirfd, cz(newname));
  },
  rename(olddirfd: number, oldname: Uint8Array | string, newdirfd: number, newname: Uint8Array | string): number {
    return shim().tsb_fs_rename(olddirfd, cz(oldname), newdirfd, cz(newname));
  },
  unlink(dirfd: number, name: Uint8Array | string, rmdir: boolean): number { return shim().tsb_fs_unlink(dirfd, cz(name), rmdir ? 1 : 0); },
  /** Unlink `name` beneath `dirfd` only if it still is the object of `fd`. */
  remove(fd: number, dirfd: number, name: Uint8Array | string): number { return shim().tsb_fs_remove(fd, dirfd, cz(name)); },
  /** Symlink text (bytes) or -errno. */
  readlink(fd: number, max = 4096): Uint8Array | number {
    const b = new Uint8Array(max);
    const n = shim().tsb_fs_readlink(fd, b, max);
    return n < 0 ? n : b.slice(0, n);
  },
  chmod(fd: number, dirfd: number, name: Uint8Array | string, mode: number): number { return shim().tsb_fs_chmod(fd, dirfd, cz(name), mode); },
  /** -1 keeps the id */
  chown(fd: number, uid: number, gid: number): number { return shim().tsb_fs_chown(fd, uid | 0, gid | 0); },
  truncate(fd: number, dirfd: number, name: Uint8Array | string, size: number): number { return shim().tsb_fs_truncate(fd, dirfd, cz(name), size); },
  /** nanoseconds may be UTIME_NOW / UTIME_OMIT */
  utimes(fd: number, asec: number, ansec: number, msec: number, mnsec: number): number { return shim().tsb_fs_utimes(fd, asec, ansec, msec, mnsec); },
  statfs(fd: number): FsStatfs | number {
    const b = new BigUint64Array(9);
    const r = shim().tsb_fs_statfs(fd, b);
    if (r < 0) return r;
    return { type: b[0]!, bsize: b[1]!, blocks: b[2]!, bfree: b[3]!, bavail: b[4]!, files: b[5]!, ffree: b[6]!, fsid: b[7]!, namelen: b[8]! };
  },
  /** linux_dirent64 records from directory cookie `off` (a signed 64-bit cookie) into buf: bytes, 0 at the end, or -errno. */
  getdents(fd: number, off: bigint, buf: Uint8Array): number { return shim().tsb_fs_getdents(fd, off, buf, buf.length); },
  fsync(fd: number, datasync: boolean): number { return shim().tsb_fs_fsync(fd, datasync ? 1 : 0); },
  /** The process's open-file limit (RLIMIT_NOFILE soft), or -errno. */
  fdLimit(): number { return Number(shim().tsb_fs_fd_limit()); },
};
