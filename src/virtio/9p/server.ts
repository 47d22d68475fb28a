/**
 * The 9P2000.L file server of one share: takes one request chain (the T-message in its readable part),
 * runs it against the host folder and writes the R-message into its writable part; returns the bytes
 * written. Synchronous host calls, on the I/O Worker.
 *
 * Hostile input: the message header is read first and its size checked against the chain, the
 * negotiated msize and the message's own fields (codec.ts); anything malformed, any bad fid, name or
 * count becomes Rlerror with an errno. Only a chain without even room for an Rlerror gets 0 bytes.
 * An unexpected exception is counted (`internalErrors`, the fuzz test's finding) and answered with EIO.
 *
 * Confinement (see fids.ts and ffi/fs.c): every host object is an fd reached from the share root one
 * name at a time; names are one component (no '/', no NUL, not "" — "." and ".." only in Twalk, where
 * "." stays and ".." follows the fid tree and stops at the root); symlinks are never followed on the
 * host — walking through one fails (ENOTDIR), opening one fails (ELOOP), Treadlink returns the text for
 * the guest to resolve in its own namespace. `ro` answers EROFS to every change and to opens for writing.
 *
 * The operations themselves are in ops.ts, by T-message number.
 */
import { constants } from "node:os";
import type { GuestMemory } from "../../mem/guest-memory.ts";
import { fsHost, type FsStat } from "../../vmm/fs.ts";
import { host } from "../../vmm/index.ts";
import { readChain, writeChain, type Chain } from "../queue.ts";
import { decodeFields, decodeHeader, lerror, ProtocolError, type Qid } from "./codec.ts";
import { Fail, fail, ok } from "./errors.ts";
import { FidTable, type Fid, type Node } from "./fids.ts";
import { HANDLERS } from "./ops.ts";
import { HEADER_BYTES, NOFID, QT, T, TWRITE_HDR } from "./protocol.ts";

const E = constants.errno;
const S_IFMT = 0o170000, S_IFDIR = 0o040000, S_IFLNK = 0o120000;

export interface NinePLimits {
  /** largest msize offered (Rversion) */
  maxMsize: number;
  /** smallest msize accepted */
  minMsize: number;
  maxFids: number;
  /** host fds the session may hold (walked objects + open files); at most half of RLIMIT_NOFILE */
  maxHostFds: number;
  /** most bytes one Treaddir answers */
  maxReaddir: number;
}
export const NINEP_LIMITS: NinePLimits = { maxMsize: 512 * 1024, minMsize: 4096, maxFids: 65536, maxHostFds: 16384, maxReaddir: 128 * 1024 };

export interface NinePShare {
  /** host folder */
  path: string;
  ro: boolean;
}

/** One request being served. */
export interface Req { mem: GuestMemory; chain: Chain; tag: number; size: number }

export class NinePServer {
  readonly fids: FidTable;
  msize: number;
  internalErrors = 0;
  lastInternalError: unknown;
  private rootFd = -1;
  private root: Node | undefined;
  private readonly devIndex = new Map<bigint, bigint>();

  constructor(readonly share: NinePShare, readonly limits: NinePLimits = NINEP_LIMITS, private readonly log: (m: string) => void = () => {}) {
    // a share may hold at most half of the process's fds (the rest is for the VM's other devices)
    const lim = fsHost.fdLimit();
    this.fids = new FidTable(limits.maxFids, lim > 0 ? Math.min(limits.maxHostFds, Math.floor(lim / 2)) : limits.maxHostFds);
    this.msize = limits.maxMsize;
  }

  /** Forget the session (device reset, Tversion): every fid clunked. The root fd stays. */
  reset(): void {
    this.fids.clear();
    this.msize = this.limits.maxMsize;
  }

  /** Close everything, the root too (tests; device teardown). */
  close(): void {
    this.reset();
    if (this.rootFd >= 0) host.close(this.rootFd);
    this.rootFd = -1;
    this.root = undefined;
  }

  /** Serve one chain; returns the bytes written into its writable part. */
  handle(mem: GuestMemory, chain: Chain): number {
    let tag = 0xffff;
    const send = (b: Uint8Array): number => {
      if (b.length > chain.writableBytes || b.length > this.msize) b = lerror(tag, E.EMSGSIZE);
      if (b.length > chain.writableBytes) return 0;
      return writeChain(mem, chain, b);
    };
    try {
      if (chain.readableBytes < HEADER_BYTES) return send(lerror(tag, E.EPROTO));
      const h = decodeHeader(readChain(mem, chain, HEADER_BYTES));
      tag = h.tag;
      if (h.size < HEADER_BYTES || h.size > chain.readableBytes || h.size > this.msize) return send(lerror(tag, E.EPROTO));
      const spec = T[h.type];
      const handler = HANDLERS[h.type];
      if (!spec || !handler) return send(lerror(tag, E.EOPNOTSUPP));
      // Twrite: only its header is copied; the data goes from the chain to the file
      const msg = readChain(mem, chain, h.type === 118 ? Math.min(h.size, TWRITE_HDR) : h.size);
      const f = decodeFields(msg, spec.fields);
      const r = handler(this, f, { mem, chain, tag, size: h.size });
      return typeof r === "number" ? r : send(r);
    } catch (e) {
      if (e instanceof Fail || e instanceof ProtocolError) return send(lerror(tag, e.errno));
      this.internalErrors++;
      this.lastInternalError = e;
      if (this.internalErrors <= 10) this.log(`virtio-9p: internal error: ${(e as Error)?.stack ?? e}`);
      return send(lerror(tag, E.EIO));
    }
  }

  // ---------------------------------------------------------------------------------------------
  // helpers

  fid(n: number): Fid { return this.fids.get(n) ?? fail(E.EBADF); }
  writable(): void { if (this.share.ro) fail(E.EROFS); }

  rootNode(): Node {
    if (!this.root) {
      const fd = ok(fsHost.openRoot(this.share.path));
      const st = fsHost.stat(fd);
      if (typeof st === "number") { host.close(fd); fail(-st); }
      const s = st as FsStat;
      this.rootFd = fd;
      this.devIndex.set(s.dev, 0n);
      this.root = this.fids.rootNode(fd, s.dev, s.ino);
    }
    return this.root;
  }

  /** qid.path: the inode, its top byte mixed with a small number per host device (0 for the share's own). */
  qidPath(dev: bigint, ino: bigint): bigint {
    let idx = this.devIndex.get(dev);
    if (idx === undefined) { idx = BigInt(this.devIndex.size & 0xff); this.devIndex.set(dev, idx); }
    return ino ^ (idx << 56n);
  }

  /** qid of a host object: type from the file type, version from the mtime, path from dev + inode. */
  qid(st: FsStat): Qid {
    const fmt = st.mode & S_IFMT;
    return {
      type: fmt === S_IFDIR ? QT.DIR : fmt === S_IFLNK ? QT.SYMLINK : QT.FILE,
      version: Number(BigInt.asUintN(32, st.mtime[0] ^ st.mtime[1])),
      path: this.qidPath(st.dev, st.ino),
    };
  }

  statNode(n: Node): FsStat { return ok(fsHost.stat(n.fd)); }

  newFidOk(n: number): void {
    if (n === NOFID || this.fids.get(n)) fail(E.EBADF);
    if (!this.fids.roomForFid()) fail(E.EMFILE);
  }

  fdRoom(): void { if (!this.fids.roomForFd()) fail(E.EMFILE); }
}

