/**
 * The 9P2000.L operations, one handler per T-message number, each taking the decoded fields and
 * returning the encoded R-message (or, for Tread/Treaddir, writing it and returning its length).
 * Failures throw Fail(errno) (errors.ts), which the server answers with Rlerror.
 *
 * Names: one component (no '/', no NUL, not ""; "." and ".." only in Twalk, where "." stays and ".."
 * follows the fid tree and stops at the share root). Every host call is an fd-relative one of
 * vmm/fs.ts, which never follows a symlink; `ro` shares answer EROFS to every change and to opens for
 * writing. File data moves between the file and guest memory with preadv/pwritev on iovecs of the
 * chain's segments (after the 11-byte Rread / 23-byte Twrite headers), never through a JS buffer.
 */
import { constants } from "node:os";
import { fsHost, UTIME_NOW, UTIME_OMIT, type FsStat } from "../../vmm/fs.ts";
import { host } from "../../vmm/index.ts";
import { segmentIovecs, writeChain, type Segment } from "../queue.ts";
import { encode, putQid, type Fields, type Qid } from "./codec.ts";
import { fail, Fail, ok } from "./errors.ts";
import type { Fid, Node } from "./fids.ts";
import { AT_REMOVEDIR, DOTL, GETATTR_BASIC, LOCK, QID_BYTES, QT, RREAD_HDR, SETATTR, TWRITE_HDR, VERSION_9P2000_L } from "./protocol.ts";
import type { NinePServer, Req } from "./server.ts";

const E = constants.errno;
const S_IFMT = 0o170000, S_IFDIR = 0o040000;
const NAME_MAX = 255;
/** offsets and sizes beyond this are refused (a JS number holds them exactly) */
const MAX_OFFSET = 2 ** 53;

type Handler = (s: NinePServer, f: Fields, r: Req) => Uint8Array | number;

/** `segs` without its first `skip` bytes, at most `max` bytes. */
export function sliceSegments(segs: readonly Segment[], skip: number, max: number): Segment[] {
  const out: Segment[] = [];
  for (const s of segs) {
    if (max <= 0) break;
    if (skip >= s.len) { skip -= s.len; continue; }
    const len = Math.min(s.len - skip, max);
    out.push({ gpa: s.gpa + skip, len });
    max -= len;
    skip = 0;
  }
  return out;
}

/** A name for a lookup (entry = false) or a new / removed entry (true): one component, no NUL. */
function checkName(b: Uint8Array, entry: boolean): Uint8Array {
  if (b.length === 0) fail(entry ? E.EINVAL : E.ENOENT);
  if (b.length > NAME_MAX) fail(E.ENAMETOOLONG);
  if (b.includes(0x2f) || b.includes(0)) fail(E.EINVAL);
  if (entry && b[0] === 0x2e && (b.length === 1 || (b.length === 2 && b[1] === 0x2e))) fail(E.EINVAL);
  return b;
}

/** Parent fd and name of a node, for re-opening beneath the parent (-1 and "" for the root). */
function where(n: Node): [number, Uint8Array] { return n.parent ? [n.parent.fd, n.name] : [-1, new Uint8Array(0)]; }

/** Tread: `count` bytes at `offset` of fd straight into the chain after the Rread header. */
function readInto(s: NinePServer, r: Req, fd: number, offset: bigint, count: number, xattr: boolean): number {
  const { chain, mem } = r;
  if (chain.writableBytes < RREAD_HDR) return 0;
  if (offset >= BigInt(MAX_OFFSET)) fail(E.EINVAL);
  const n = Math.min(count, s.msize - RREAD_HDR, chain.writableBytes - RREAD_HDR);
  let got = 0;
  if (!xattr && n > 0) {
    const iov = segmentIovecs(mem, sliceSegments(chain.writable, RREAD_HDR, n));
    got = ok(host.preadv(fd, iov, Number(offset)));
  }
  return writeChain(mem, chain, encode("Rread", r.tag, { count: got }, got)) + got;
}

const u32 = (f: Fields, k: string) => f[k] as number;
const u64 = (f: Fields, k: string) => f[k] as bigint;
const bytes = (f: Fields, k: string) => f[k] as Uint8Array;
const isDir = (st: FsStat) => (st.mode & S_IFMT) === S_IFDIR;
const te = new TextEncoder(), td = new TextDecoder();

/** dotl open flags → host open flags (the same values on Linux x86; only these pass). */
function openFlags(fl: number): number {
  if ((fl & DOTL.ACCMODE) === 3) fail(E.EINVAL);
  return fl & (DOTL.ACCMODE | DOTL.TRUNC | DOTL.APPEND | DOTL.DSYNC | DOTL.SYNC | DOTL.DIRECTORY | DOTL.EXCL);
}
const wantsWrite = (fl: number) => (fl & DOTL.ACCMODE) !== 0 || (fl & (DOTL.TRUNC | DOTL.APPEND | DOTL.CREATE)) !== 0;

function renameDone(s: NinePServer, from: Node, oldName: Uint8Array, to: Node, newName: Uint8Array): void {
  s.fids.moved(from.dev, from.ino, oldName, to, newName);
}

/** qid of `name` just made beneath dir */
function qidAt(s: NinePServer, dir: Node, name: Uint8Array): Qid {
  return s.qid(ok(fsHost.statAt(dir.fd, name)));
}

export const HANDLERS: Readonly<Record<number, Handler>> = {
  // Tversion: msize negotiation; any version but 9P2000.L is "unknown"; a new session
  100: (s, f, r) => {
    const want = u32(f, "msize");
    const v = td.decode(bytes(f, "version"));
    s.reset();
    if (want < s.limits.minMsize) fail(E.EINVAL);
    s.msize = Math.min(want, s.limits.maxMsize);
    const good = v === VERSION_9P2000_L || v.startsWith(VERSION_9P2000_L + ".");
    return encode("Rversion", r.tag, { msize: s.msize, version: te.encode(good ? VERSION_9P2000_L : "unknown") });
  },
  102: () => fail(E.EOPNOTSUPP), // Tauth: no authentication
  104: (s, f, r) => { // Tattach
    const fid = u32(f, "fid");
    s.newFidOk(fid);
    const aname = td.decode(bytes(f, "aname"));
    if (aname !== "" && aname !== "/") fail(E.ENOENT);
    const root = s.rootNode();
    s.fids.set(fid, s.fids.acquire(root));
    return encode("Rattach", r.tag, { qid: s.qid(s.statNode(root)) });
  },
  108: (_s, _f, r) => encode("Rflush", r.tag, {}), // every earlier request has completed
  110: (s, f, r) => { // Twalk
    const fid = s.fid(u32(f, "fid"));
    const newfid = u32(f, "newfid");
    const names = f.wnames as Uint8Array[];
    if (newfid !== u32(f, "fid")) s.newFidOk(newfid);
    let cur = s.fids.acquire(fid.node);
    let held = true;
    const qids: Qid[] = [];
    try {
      for (let i = 0; i < names.length; i++) {
        let next: Node;
        let st: FsStat;
        try {
          const nm = checkName(names[i]!, false);
          const dot = nm.length === 1 && nm[0] === 0x2e, dotdot = nm.length === 2 && nm[0] === 0x2e && nm[1] === 0x2e;
          if (dot || dotdot) {
            if (!isDir(s.statNode(cur))) fail(E.ENOTDIR);
            next = s.fids.acquire(dotdot ? cur.parent ?? cur : cur);
            st = s.statNode(next);
          } else {
            s.fdRoom();
            const fd = ok(fsHost.walk(cur.fd, nm));
            const x = fsHost.stat(fd);
            if (typeof x === "number") { host.close(fd); fail(-x); }
            st = x as FsStat;
            next = s.fids.child(cur, fd, nm.slice(), st.dev, st.ino);
          }
        } catch (e) {
          if (i === 0 || !(e instanceof Fail)) throw e;
          break; // partial walk: the qids so far, newfid untouched
        }
        s.fids.release(cur);
        cur = next;
        qids.push(s.qid(st));
      }
      if (qids.length === names.length) {
        if (newfid === u32(f, "fid")) s.fids.rebind(fid, cur);
        else s.fids.set(newfid, cur);
        held = false; // the fid took the reference
      }
    } finally {
      if (held) s.fids.release(cur);
    }
    return encode("Rwalk", r.tag, { wqids: qids });
  },
  116: (s, f, r) => { // Tread
    const fid = s.fid(u32(f, "fid"));
    if (fid.open < 0 && !fid.xattr) fail(E.EBADF);
    if (fid.dir) fail(E.EISDIR);
    return readInto(s, r, fid.open, u64(f, "offset"), u32(f, "count"), fid.xattr);
  },
  118: (s, f, r) => { // Twrite
    s.writable();
    const fid = s.fid(u32(f, "fid"));
    const count = u32(f, "count");
    if (r.size !== TWRITE_HDR + count) fail(E.EPROTO);
    if (fid.open < 0 || fid.dir) fail(E.EBADF);
    const off = u64(f, "offset");
    if (off >= BigInt(MAX_OFFSET)) fail(E.EFBIG);
    let n = 0;
    if (count > 0) n = ok(host.pwritev(fid.open, segmentIovecs(r.mem, sliceSegments(r.chain.readable, TWRITE_HDR, count)), Number(off)));
    return encode("Rwrite", r.tag, { count: n });
  },
  120: (s, f, r) => { // Tclunk
    if (!s.fids.clunk(u32(f, "fid"))) fail(E.EBADF);
    return encode("Rclunk", r.tag, {});
  },
  122: (s, f, r) => { // Tremove: the fid is clunked whatever happens
    const n = u32(f, "fid");
    const fid = s.fid(n);
    try {
      s.writable();
      const node = fid.node;
      if (!node.parent) fail(E.EBUSY);
      ok(fsHost.remove(node.fd, node.parent!.fd, node.name));
    } finally {
      s.fids.clunk(n);
    }
    return encode("Rremove", r.tag, {});
  },
  8: (s, f, r) => { // Tstatfs
    const st = ok(fsHost.statfs(s.fid(u32(f, "fid")).node.fd));
    return encode("Rstatfs", r.tag, { ...st, type: Number(st.type & 0xffffffffn), bsize: Number(st.bsize), namelen: Number(st.namelen) });
  },
  12: (s, f, r) => { // Tlopen
    const fid = s.fid(u32(f, "fid"));
    const fl = u32(f, "flags");
    if (fid.open >= 0 || fid.xattr) fail(E.EBADF);
    if (wantsWrite(fl)) s.writable();
    const st = s.statNode(fid.node);
    s.fdRoom();
    const [dirfd, name] = where(fid.node);
    const fd = ok(fsHost.reopen(fid.node.fd, dirfd, name, openFlags(fl)));
    s.fids.setOpen(fid, fd, isDir(st));
    return encode("Rlopen", r.tag, { qid: s.qid(st), iounit: 0 });
  },
  14: (s, f, r) => { // Tlcreate: the fid (a directory) becomes the new open file
    s.writable();
    const fid = s.fid(u32(f, "fid"));
    if (fid.open >= 0 || fid.xattr) fail(E.EBADF);
    const name = checkName(bytes(f, "name"), true);
    s.fdRoom();
    const [fd, pfd] = ok(fsHost.create(fid.node.fd, name, openFlags(u32(f, "flags")), u32(f, "mode") & 0o7777));
    const st = fsHost.stat(pfd);
    if (typeof st === "number") { host.close(fd); host.close(pfd); fail(-st); }
    const node = s.fids.child(fid.node, pfd, name.slice(), (st as FsStat).dev, (st as FsStat).ino);
    s.fids.rebind(fid, node);
    s.fids.setOpen(fid, fd, false);
    return encode("Rlcreate", r.tag, { qid: s.qid(st as FsStat), iounit: 0 });
  },
  16: (s, f, r) => { // Tsymlink: the target is text for the guest; it is never resolved here
    s.writable();
    const dir = s.fid(u32(f, "fid")).node;
    const name = checkName(bytes(f, "name"), true);
    const tgt = bytes(f, "symtgt");
    if (tgt.length === 0 || tgt.includes(0)) fail(E.EINVAL);
    ok(fsHost.symlink(dir.fd, name, tgt));
    return encode("Rsymlink", r.tag, { qid: qidAt(s, dir, name) });
  },
  18: (s, f, r) => { // Tmknod: regular files, fifos, sockets (device nodes EPERM, in ffi/fs.c)
    s.writable();
    const dir = s.fid(u32(f, "dfid")).node;
    const name = checkName(bytes(f, "name"), true);
    ok(fsHost.mknod(dir.fd, name, u32(f, "mode")));
    return encode("Rmknod", r.tag, { qid: qidAt(s, dir, name) });
  },
  20: (s, f, r) => { // Trename
    s.writable();
    const node = s.fid(u32(f, "fid")).node;
    const to = s.fid(u32(f, "dfid")).node;
    const name = checkName(bytes(f, "name"), true);
    if (!node.parent) fail(E.EBUSY);
    const from = node.parent!, old = node.name;
    ok(fsHost.rename(from.fd, old, to.fd, name));
    renameDone(s, from, old, to, name.slice());
    return encode("Rrename", r.tag, {});
  },
  22: (s, f, r) => { // Treadlink
    const target = ok(fsHost.readlink(s.fid(u32(f, "fid")).node.fd));
    return encode("Rreadlink", r.tag, { target });
  },
  24: (s, f, r) => { // Tgetattr
    const st = s.statNode(s.fid(u32(f, "fid")).node);
    return encode("Rgetattr", r.tag, {
      valid: GETATTR_BASIC, qid: s.qid(st), mode: st.mode, uid: st.uid, gid: st.gid, nlink: st.nlink, rdev: st.rdev,
      size: st.size, blksize: st.blksize, blocks: st.blocks, atime_sec: st.atime[0], atime_nsec: st.atime[1],
      mtime_sec: st.mtime[0], mtime_nsec: st.mtime[1], ctime_sec: st.ctime[0], ctime_nsec: st.ctime[1],
      btime_sec: 0n, btime_nsec: 0n, gen: 0n, data_version: 0n,
    });
  },
  26: (s, f, r) => { // Tsetattr: mode, owner, size, times (given or "now")
    s.writable();
    const node = s.fid(u32(f, "fid")).node;
    const v = u32(f, "valid");
    const [dirfd, name] = where(node);
    if (v & SETATTR.MODE) ok(fsHost.chmod(node.fd, dirfd, name, u32(f, "mode") & 0o7777));
    if (v & (SETATTR.UID | SETATTR.GID)) ok(fsHost.chown(node.fd, v & SETATTR.UID ? u32(f, "uid") : -1, v & SETATTR.GID ? u32(f, "gid") : -1));
    if (v & SETATTR.SIZE) {
      const size = u64(f, "size");
      if (size >= BigInt(MAX_OFFSET)) fail(E.EFBIG);
      ok(fsHost.truncate(node.fd, dirfd, name, Number(size)));
    }
    if (v & (SETATTR.ATIME | SETATTR.MTIME)) {
      const t = (bit: number, set: number, sec: bigint, nsec: bigint): [number, number] => {
        if (!(v & bit)) return [0, UTIME_OMIT];
        if (!(v & set)) return [0, UTIME_NOW];
        if (sec >= BigInt(MAX_OFFSET) || nsec >= 1_000_000_000n) fail(E.EINVAL);
        return [Number(sec), Number(nsec)];
      };
      const a = t(SETATTR.ATIME, SETATTR.ATIME_SET, u64(f, "atime_sec"), u64(f, "atime_nsec"));
      const m = t(SETATTR.MTIME, SETATTR.MTIME_SET, u64(f, "mtime_sec"), u64(f, "mtime_nsec"));
      ok(fsHost.utimes(node.fd, a[0], a[1], m[0], m[1]));
    }
    return encode("Rsetattr", r.tag, {});
  },
  30: (s, f, r) => { // Txattrwalk: no extended attributes are exported; the list is empty
    const fid = s.fid(u32(f, "fid"));
    const newfid = u32(f, "newfid");
    if (bytes(f, "name").length !== 0) fail(E.ENODATA);
    if (newfid !== u32(f, "fid")) s.newFidOk(newfid);
    else fail(E.EINVAL);
    s.fids.set(newfid, s.fids.acquire(fid.node)).xattr = true;
    return encode("Rxattrwalk", r.tag, { size: 0n });
  },
  32: (s) => { s.writable(); return fail(E.EOPNOTSUPP); }, // Txattrcreate
  40: (s, f, r) => readdir(s, s.fid(u32(f, "fid")), u64(f, "offset"), u32(f, "count"), r),
  50: (s, f, r) => { // Tfsync
    const fid = s.fid(u32(f, "fid"));
    if (fid.open < 0) fail(E.EBADF);
    ok(fsHost.fsync(fid.open, u32(f, "datasync") !== 0));
    return encode("Rfsync", r.tag, {});
  },
  52: (s, f, r) => { // Tlock: the guest's own locks are the ones that matter; granted
    s.fid(u32(f, "fid"));
    return encode("Rlock", r.tag, { status: LOCK.SUCCESS });
  },
  54: (s, f, r) => { // Tgetlock: nobody else holds a lock
    s.fid(u32(f, "fid"));
    return encode("Rgetlock", r.tag, { type: LOCK.F_UNLCK, start: f.start!, length: f.length!, proc_id: f.proc_id!, client_id: f.client_id! });
  },
  70: (s, f, r) => { // Tlink
    s.writable();
    const dir = s.fid(u32(f, "dfid")).node;
    const node = s.fid(u32(f, "fid")).node;
    const name = checkName(bytes(f, "name"), true);
    const [odir, oname] = where(node);
    ok(fsHost.link(node.fd, odir, oname, dir.fd, name));
    return encode("Rlink", r.tag, {});
  },
  72: (s, f, r) => { // Tmkdir
    s.writable();
    const dir = s.fid(u32(f, "dfid")).node;
    const name = checkName(bytes(f, "name"), true);
    ok(fsHost.mkdir(dir.fd, name, u32(f, "mode") & 0o7777));
    return encode("Rmkdir", r.tag, { qid: qidAt(s, dir, name) });
  },
  74: (s, f, r) => { // Trenameat
    s.writable();
    const from = s.fid(u32(f, "olddirfid")).node;
    const to = s.fid(u32(f, "newdirfid")).node;
    const oldName = checkName(bytes(f, "oldname"), true);
    const newName = checkName(bytes(f, "newname"), true);
    ok(fsHost.rename(from.fd, oldName, to.fd, newName));
    renameDone(s, from, oldName, to, newName.slice());
    return encode("Rrenameat", r.tag, {});
  },
  76: (s, f, r) => { // Tunlinkat
    s.writable();
    const dir = s.fid(u32(f, "dirfid")).node;
    const name = checkName(bytes(f, "name"), true);
    const fl = u32(f, "flags");
    if (fl & ~AT_REMOVEDIR) fail(E.EINVAL);
    ok(fsHost.unlink(dir.fd, name, (fl & AT_REMOVEDIR) !== 0));
    return encode("Runlinkat", r.tag, {});
  },
};

/** d_type → qid type */
const DT_DIR = 4, DT_LNK = 10;

/**
 * Treaddir: entries qid[13] offset[8] type[1] name[s] from the directory's own cookies (getdents64
 * d_off), so an offset the guest got back resumes exactly there. Whole entries only; ".." of the
 * share root shows the root itself.
 */
function readdir(s: NinePServer, fid: Fid, offset: bigint, count: number, r: Req): number {
  if (fid.open < 0) fail(E.EBADF);
  if (!fid.dir) fail(E.ENOTDIR);
  const { chain, mem } = r;
  if (chain.writableBytes < RREAD_HDR) return 0;
  const room = Math.min(count, s.msize - RREAD_HDR, chain.writableBytes - RREAD_HDR, s.limits.maxReaddir);
  if (room <= 0) return writeChain(mem, chain, encode("Rreaddir", r.tag, { count: 0 }));
  const dirents = new Uint8Array(Math.max(room, 512));
  const n = ok(fsHost.getdents(fid.open, BigInt.asIntN(64, offset), dirents));
  const dv = new DataView(dirents.buffer);
  const out = new Uint8Array(room);
  const ov = new DataView(out.buffer);
  const node = fid.node;
  const rootQid = node.root ? s.qid(s.statNode(node)) : undefined;
  let used = 0;
  for (let o = 0; o + 19 <= n;) {
    const ino = dv.getBigUint64(o, true);
    const off = dv.getBigInt64(o + 8, true);
    const reclen = dv.getUint16(o + 16, true);
    const type = dv.getUint8(o + 18);
    if (reclen < 19 || o + reclen > n) break;
    let end = o + 19;
    while (end < o + reclen && dirents[end] !== 0) end++;
    const name = dirents.subarray(o + 19, end);
    const size = QID_BYTES + 8 + 1 + 2 + name.length;
    if (used + size > room) {
      if (used === 0) fail(E.EINVAL); // not even one entry fits the count
      break;
    }
    const isDotDot = name.length === 2 && name[0] === 0x2e && name[1] === 0x2e;
    const qid: Qid = isDotDot && rootQid ? rootQid : {
      type: type === DT_DIR ? QT.DIR : type === DT_LNK ? QT.SYMLINK : QT.FILE, version: 0,
      path: s.qidPath(node.dev, ino),
    };
    putQid(ov, used, qid);
    ov.setBigUint64(used + QID_BYTES, BigInt.asUintN(64, off), true);
    ov.setUint8(used + QID_BYTES + 8, type);
    ov.setUint16(used + QID_BYTES + 9, name.length, true);
    out.set(name, used + QID_BYTES + 11);
    used += size;
    o += reclen;
  }
  const hdr = encode("Rreaddir", r.tag, { count: used }, used);
  writeChain(mem, chain, hdr);
  writeChain(mem, chain, out.subarray(0, used), RREAD_HDR);
  return RREAD_HDR + used;
}
