/**
 * Block backend: opens a disk image or a host block device from bhyve's block options and describes it
 * as plain data (`BlockDisk`: structured-clone-safe, fd number included), shared by virtio-blk and, later,
 * AHCI and NVMe. The I/O itself is in ./io.ts and runs on any thread from that plain data.
 *
 * Options (bhyve's block keys): path, ro, nocache (O_DIRECT), direct / sync (O_SYNC),
 * sectorsize=logical[/physical], nodelete (no discard), ser= (virtio-blk serial).
 *
 * Decisions:
 * - Capacity: a regular file's size or a block device's size (BLKGETSIZE64), rounded DOWN to a whole
 *   number of logical sectors (and, with nocache, of the host's direct-I/O block); the tail that does not
 *   fill a sector is not visible to the guest and a warning says so. Nothing is ever resized.
 * - ro: opened O_RDONLY; every write-class request fails. A read-write open that the host refuses with
 *   EROFS or EACCES is retried read-only (as bhyve does), with a warning.
 * - nocache (O_DIRECT): the host requires buffer addresses aligned to `memAlign` and file offsets and
 *   lengths aligned to `offAlign` (statx STATX_DIOALIGN for files, the logical block size for block
 *   devices, 4096 when the host does not say). The guest is told a logical block size of at least
 *   `offAlign` (unless sectorsize= says otherwise), so a driver that honours blk_size issues aligned
 *   requests and they go straight to preadv/pwritev on guest memory. Anything still misaligned (a buffer
 *   at an odd address, or a driver that ignores blk_size) is moved by the shim through an aligned bounce
 *   buffer (tsb_blk_io), with read-modify-write of partial host blocks. That RMW is the only case where
 *   two concurrent requests to *different* guest sectors can interfere: `needsRmw(disk)` tells the I/O
 *   pool to serialize such a disk.
 * - Serial: ser= (printable ASCII, at most 20 characters) or bhyve's default, "BHYVE-XXXX-XXXX-XXXX" from
 *   the MD5 of the path, so a guest moved from bhyve keeps its /dev/disk/by-id names.
 */
import { createHash } from "node:crypto";
import { DISK_OPEN_DIRECT, DISK_OPEN_RDONLY, DISK_OPEN_SYNC, host } from "../vmm/index.ts";

export const SECTOR = 512;
/** Serial (virtio-blk GET_ID, ATA/NVMe serial) length limit. */
export const SERIAL_MAX = 20;
const MAX_SECTOR_SIZE = 65536;

export class BlockError extends Error {}

export interface BlockOptions {
  path: string;
  ro?: boolean;
  /** O_DIRECT: bypass the host page cache. */
  nocache?: boolean;
  /** O_SYNC (bhyve's `direct` and `sync` are the same key). */
  sync?: boolean;
  direct?: boolean;
  /** "logical[/physical]" or a number (logical). */
  sectorsize?: string | number;
  /** No discard (TRIM / DISCARD are not offered). */
  nodelete?: boolean;
  ser?: string;
}

/** An open disk. Plain data: post it to Workers as is; the fd is process-wide. */
export interface BlockDisk {
  path: string;
  fd: number;
  kind: "file" | "blockdev";
  readonly: boolean;
  /** Opened O_DIRECT. */
  direct: boolean;
  /** Opened O_SYNC. */
  sync: boolean;
  /** Sector sizes the guest is told, in bytes. */
  logical: number;
  physical: number;
  /** Guest-visible capacity in bytes: a multiple of `logical` (hence of 512). */
  size: number;
  /** Size of the file or device on the host. */
  hostSize: number;
  /** Discard is offered and executed (not nodelete, not read-only). */
  discard: boolean;
  serial: string;
  /** Direct-I/O alignment of buffer addresses and of offsets/lengths (1 when not O_DIRECT). */
  memAlign: number;
  offAlign: number;
  warnings: string[];
}

const pow2 = (n: number) => Number.isSafeInteger(n) && n > 0 && (n & (n - 1)) === 0;

/** bhyve's sectorsize=logical[/physical]: powers of two from 512, physical >= logical. */
export function parseSectorSize(spec: string | number): { logical: number; physical: number } {
  const s = String(spec).trim();
  const m = /^(\d+)(?:\/(\d+))?$/.exec(s);
  if (!m) throw new BlockError(`sectorsize=${s}: expected logical[/physical], e.g. 512 or 512/4096`);
  const logical = Number(m[1]), physical = m[2] === undefined ? logical : Number(m[2]);
  for (const [what, v] of [["logical", logical], ["physical", physical]] as const) {
    if (!pow2(v) || v < SECTOR || v > MAX_SECTOR_SIZE) {
      throw new BlockError(`sectorsize=${s}: ${what} size ${v} must be a power of two from 512 to ${MAX_SECTOR_SIZE}`);
    }
  }
  if (physical < logical) throw new BlockError(`sectorsize=${s}: physical size ${physical} is smaller than logical size ${logical}`);
  return { logical, physical };
}

/** bhyve's default serial: "BHYVE-" and the first six bytes of the MD5 of the path, as hex. */
export function defaultSerial(path: string): string {
  const d = createHash("md5").update(path).digest();
  const h = (i: number) => d[i]!.toString(16).toUpperCase().padStart(2, "0");
  return `BHYVE-${h(0)}${h(1)}-${h(2)}${h(3)}-${h(4)}${h(5)}`;
}

export function checkSerial(ser: string): string {
  if (ser.length > SERIAL_MAX) throw new BlockError(`ser=${ser}: at most ${SERIAL_MAX} characters`);
  if (!/^[\x20-\x7e]*$/.test(ser)) throw new BlockError(`ser=${JSON.stringify(ser)}: printable ASCII only`);
  return ser;
}

/** The I/O pool must not run two requests on this disk at once (direct I/O with read-modify-write). */
export function needsRmw(disk: BlockDisk): boolean {
  return disk.direct && disk.logical < disk.offAlign;
}

const EROFS = 30, EACCES = 13, EINVAL = 22;

/** Open a disk from its options. Throws BlockError with a message meant for the user. */
export function openBlock(opts: BlockOptions): BlockDisk {
  const path = opts.path;
  if (!path) throw new BlockError("block device: path is required");
  const warnings: string[] = [];
  const direct = !!opts.nocache, sync = !!(opts.sync || opts.direct);
  const ser = opts.ser === undefined ? defaultSerial(path) : checkSerial(opts.ser);
  const requested = opts.sectorsize === undefined ? undefined : parseSectorSize(opts.sectorsize);

  let readonly = !!opts.ro;
  const flags = (direct ? DISK_OPEN_DIRECT : 0) | (sync ? DISK_OPEN_SYNC : 0);
  let fd = host.openDisk(path, flags | (readonly ? DISK_OPEN_RDONLY : 0));
  if (fd === -EROFS || fd === -EACCES) {
    if (!readonly) {
      const again = host.openDisk(path, flags | DISK_OPEN_RDONLY);
      if (again >= 0) {
        warnings.push(`${path}: not writable (${host.errnoName(-fd)}), using it read-only`);
        fd = again;
        readonly = true;
      }
    }
  }
  if (fd < 0) {
    const why = fd === -EINVAL && direct ? "the host file system does not support O_DIRECT (nocache)" : host.errnoName(-fd);
    throw new BlockError(`cannot open disk ${path}: ${why}`);
  }
  try {
    const info = host.diskInfo(fd);
    if (typeof info === "number") throw new BlockError(`cannot stat disk ${path}: ${host.errnoName(-info)}`);
    if (info.kind === "other") throw new BlockError(`${path} is neither a regular file nor a block device`);
    const memAlign = direct ? info.dioMemAlign || 4096 : 1;
    const offAlign = direct ? info.dioOffsetAlign || 4096 : 1;

    let logical: number, physical: number;
    if (requested) {
      ({ logical, physical } = requested);
      if (info.kind === "blockdev" && logical < info.logical) {
        warnings.push(`${path}: sectorsize ${logical} is smaller than the device's ${info.logical}-byte sectors`);
      }
    } else if (info.kind === "blockdev") {
      logical = Math.max(SECTOR, info.logical);
      physical = Math.max(logical, info.physical);
    } else {
      logical = direct ? Math.min(4096, Math.max(SECTOR, offAlign)) : SECTOR;
      physical = logical;
    }
    if (direct && logical < offAlign) {
      warnings.push(`${path}: nocache with ${logical}-byte sectors on a host needing ${offAlign}-byte alignment: ` +
        "partial blocks are read-modified-written and requests on this disk are serialized");
    }
    const granule = Math.max(logical, direct ? offAlign : 1);
    const size = Math.floor(info.size / granule) * granule;
    if (size !== info.size) {
      warnings.push(`${path}: size ${info.size} is not a multiple of ${granule} bytes; the last ${info.size - size} bytes are not visible to the guest`);
    }
    if (size === 0) warnings.push(`${path}: the disk is empty`);
    return {
      path, fd, kind: info.kind, readonly, direct, sync, logical, physical, size, hostSize: info.size,
      discard: !opts.nodelete && !readonly, serial: ser, memAlign, offAlign, warnings,
    };
  } catch (e) {
    host.close(fd);
    throw e;
  }
}

export function closeBlock(disk: BlockDisk): void {
  if (disk.fd >= 0) host.close(disk.fd);
  disk.fd = -1;
}
