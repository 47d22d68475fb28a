/**
 * The fid table of one 9P session, and the tree of host objects the fids stand on.
 *
 * A Node is one host object reached from the share root: an O_PATH fd (opened beneath its parent's
 * fd, one name at a time, never through a symlink), its parent Node and its name there. The tree is
 * what makes ".." safe without ever resolving ".." on the host: a Node's parent is the Node it was
 * walked from, the root has none (".." at the root stays at the root). The name is only used to
 * re-open a regular file or unlink it beneath the parent's fd, and the C side checks the inode before
 * acting. Renames done through the session move the affected Nodes (`moved`).
 *
 * Nodes are reference counted (by fids, by child Nodes, by a walk in progress); the last release
 * closes the fd. A Fid is a Node plus, after Tlopen/Tlcreate, an open fd. Everything here lives in the
 * I/O Worker's memory (fds are process-wide but the table is not shared): a device reset bumps a
 * shared session counter and the I/O Worker drops the table when it sees it (devices/9p.ts).
 */
import { host } from "../../vmm/index.ts";

export interface Node {
  fd: number;
  parent: Node | undefined;
  name: Uint8Array;
  dev: bigint;
  ino: bigint;
  refs: number;
  root: boolean;
}

export interface Fid {
  node: Node;
  /** open fd after Tlopen/Tlcreate (-1: not open) */
  open: number;
  /** opened as a directory (Treaddir) */
  dir: boolean;
  /** an xattr fid from Txattrwalk: reads see an empty value */
  xattr: boolean;
}

const sameBytes = (a: Uint8Array, b: Uint8Array) => a.length === b.length && a.every((x, i) => x === b[i]);

export class FidTable {
  readonly fids = new Map<number, Fid>();
  private readonly nodes = new Set<Node>();
  /** host fds held (nodes other than the root, plus open fds) */
  hostFds = 0;

  constructor(readonly maxFids: number, readonly maxHostFds: number) {}

  /** The permanent root Node on a root fd (never closed here). */
  rootNode(fd: number, dev: bigint, ino: bigint): Node {
    return { fd, parent: undefined, name: new Uint8Array(0), dev, ino, refs: 1, root: true };
  }

  get(fid: number): Fid | undefined { return this.fids.get(fid); }
  get size(): number { return this.fids.size; }
  roomForFd(): boolean { return this.hostFds < this.maxHostFds; }
  roomForFid(): boolean { return this.fids.size < this.maxFids; }

  /** A new Node for an O_PATH fd just opened beneath `parent` (holds one reference for the caller). */
  child(parent: Node, fd: number, name: Uint8Array, dev: bigint, ino: bigint): Node {
    parent.refs++;
    const n: Node = { fd, parent, name, dev, ino, refs: 1, root: false };
    this.nodes.add(n);
    this.hostFds++;
    return n;
  }

  acquire(n: Node): Node { n.refs++; return n; }

  release(n: Node | undefined): void {
    while (n && !n.root && --n.refs === 0) {
      host.close(n.fd);
      this.hostFds--;
      this.nodes.delete(n);
      n = n.parent;
    }
  }

  /** Bind fid to node (taking over the caller's reference). */
  set(fid: number, node: Node): Fid {
    const f: Fid = { node, open: -1, dir: false, xattr: false };
    this.fids.set(fid, f);
    return f;
  }

  /** Point an existing fid at another node (taking over the caller's reference). */
  rebind(f: Fid, node: Node): void {
    const old = f.node;
    f.node = node;
    this.release(old);
  }

  setOpen(f: Fid, fd: number, dir: boolean): void {
    f.open = fd;
    f.dir = dir;
    this.hostFds++;
  }

  clunk(fid: number): boolean {
    const f = this.fids.get(fid);
    if (!f) return false;
    this.fids.delete(fid);
    if (f.open >= 0) { host.close(f.open); this.hostFds--; }
    this.release(f.node);
    return true;
  }

  clear(): void {
    for (const fid of [...this.fids.keys()]) this.clunk(fid);
  }

  /** A rename of `oldName` in directory (dev, ino) to `newName` beneath `to` happened: move the Nodes that named it. */
  moved(fromDev: bigint, fromIno: bigint, oldName: Uint8Array, to: Node, newName: Uint8Array): void {
    for (const n of this.nodes) {
      const p = n.parent;
      if (!p || p.dev !== fromDev || p.ino !== fromIno || !sameBytes(n.name, oldName)) continue;
      n.name = newName;
      if (p !== to) {
        to.refs++;
        n.parent = to;
        this.release(p);
      }
    }
  }
}
