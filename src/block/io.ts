/**
 * Block I/O on guest memory: the operations every storage front end (virtio-blk, AHCI, NVMe) needs, as
 * plain functions of (BlockDisk, GuestMemory, guest segments). No state: usable from any thread that has
 * its own GuestMemory views and the disk's plain data.
 *
 * Production path (`hostEngine`): guest segments → host iovecs (GuestMemory.hostAddr, split where a
 * segment crosses from one host mapping to the next) → one tsb_blk_io call (preadv/pwritev straight into
 * guest RAM: no copy through JS, short transfers retried in C, unaligned direct I/O bounced in C).
 *
 * `viewCopyEngine` is for tests on GuestMemory.fake, which has no host addresses: it passes each guest
 * view to pread/pwrite. Never use it for a real VM.
 */
import type { GuestMemory } from "../mem/guest-memory.ts";
import { FALLOC_PUNCH, host, WZ_MAY_UNMAP } from "../vmm/index.ts";
import type { BlockDisk } from "./backend.ts";

/** A guest-physical buffer. */
export interface Seg {
  gpa: number;
  len: number;
}

/** Every operation returns the bytes moved / 0 on success, or a negative errno. Never throws for I/O
 *  errors; a GuestMemoryError for a bad segment is the caller's to catch (validate segments first). */
export interface BlockEngine {
  read(disk: BlockDisk, mem: GuestMemory, segs: readonly Seg[], off: number): number;
  write(disk: BlockDisk, mem: GuestMemory, segs: readonly Seg[], off: number): number;
  flush(disk: BlockDisk): number;
  /** Deallocate [off, off+len) if the host can (advisory: unsupported → 0). */
  discard(disk: BlockDisk, off: number, len: number): number;
  /** Make [off, off+len) read back zeros; `unmap`: it may be deallocated. */
  writeZeroes(disk: BlockDisk, off: number, len: number, unmap: boolean): number;
}

const EOPNOTSUPP = 95;

/** Host iovec (pointer, length) pairs for guest segments, split at host-mapping boundaries. */
export function hostIov(mem: GuestMemory, segs: readonly Seg[]): BigUint64Array {
  const pairs: number[] = [];
  for (const s of segs) {
    let gpa = s.gpa, left = s.len;
    while (left > 0) {
      const r = mem.find(gpa, 1);
      const n = Math.min(left, r.gpa + r.size - gpa);
      pairs.push(mem.hostAddr(gpa, n), n);
      gpa += n;
      left -= n;
    }
  }
  const iov = new BigUint64Array(pairs.length);
  for (let i = 0; i < pairs.length; i++) iov[i] = BigInt(pairs[i]!);
  return iov;
}

function discard(disk: BlockDisk, off: number, len: number): number {
  if (!disk.discard) return -EOPNOTSUPP;
  // Only whole logical sectors: block devices refuse anything else, and a file gains nothing from
  // zeroing a partial sector.
  const a = disk.logical;
  const lo = Math.ceil(off / a) * a, hi = Math.floor((off + len) / a) * a;
  if (hi <= lo) return 0;
  const r = host.fallocate(disk.fd, FALLOC_PUNCH, lo, hi - lo);
  return r === -EOPNOTSUPP ? 0 : r;
}

function writeZeroes(disk: BlockDisk, off: number, len: number, unmap: boolean): number {
  const r = host.writeZeroes(disk.fd, off, len, unmap && disk.discard ? WZ_MAY_UNMAP : 0, disk.memAlign, disk.offAlign);
  return r < 0 ? r : 0;
}

export const hostEngine: BlockEngine = {
  read: (disk, mem, segs, off) => host.blkIo(disk.fd, hostIov(mem, segs), off, false, disk.memAlign, disk.offAlign),
  write: (disk, mem, segs, off) => host.blkIo(disk.fd, hostIov(mem, segs), off, true, disk.memAlign, disk.offAlign),
  flush: (disk) => host.fdatasync(disk.fd),
  discard,
  writeZeroes,
};

/** TESTS ONLY (fake guest memory without host addresses): pread/pwrite on each guest view. */
export const viewCopyEngine: BlockEngine = {
  read: (disk, mem, segs, off) => viewIo(disk, mem, segs, off, false),
  write: (disk, mem, segs, off) => viewIo(disk, mem, segs, off, true),
  flush: hostEngine.flush,
  discard,
  writeZeroes,
};

function viewIo(disk: BlockDisk, mem: GuestMemory, segs: readonly Seg[], off: number, write: boolean): number {
  let done = 0;
  for (const s of segs) {
    let gpa = s.gpa, left = s.len;
    while (left > 0) {
      const r = mem.find(gpa, 1);
      const n = Math.min(left, r.gpa + r.size - gpa);
      const v = mem.view(gpa, n);
      let k = 0;
      while (k < n) {
        const part = v.subarray(k);
        const got = write ? host.pwrite(disk.fd, part, off + done) : host.pread(disk.fd, part, off + done);
        if (got < 0) return got;
        if (got === 0) return done;
        k += got;
        done += got;
      }
      gpa += n;
      left -= n;
    }
  }
  return done;
}
