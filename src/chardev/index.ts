/**
 * Character-device backends (where a UART's bytes go): stdio, null, file, tcp, unix, pty, device.
 *
 * Two halves:
 *  - `openChardev(spec, name)` runs ONCE on the main thread. It opens the host side and returns a
 *    ChardevHandle: plain, structured-clone-safe data (fd numbers are process-wide, so every Worker
 *    can use them). `closeChardev(handle)` undoes it (closes fds, restores the terminal, removes a
 *    unix socket file).
 *  - `Chardev` is built from a handle in any thread and does the I/O: a never-blocking write, a read
 *    of what is available, accepting clients of a listening socket. It keeps no mutable state in JS
 *    fields: the connection state (the accepted client fd, end-of-input, dead output) lives in a
 *    `ChardevShared` the owner supplies — the UART passes its shared state block, so every thread
 *    sees the same client. Callers serialise calls with their device lock.
 *
 * Listening sockets (tcp, unix) serve ONE client at a time: a second client is accepted and closed
 * at once. With no client connected, output is dropped (as bhyve does).
 *
 * Never blocking: a vCPU thread writes guest output itself, so a write must not wait for a slow
 * terminal or a stalled pipe reader. Sockets are sent with MSG_DONTWAIT; the pty master and a device
 * are opened O_NONBLOCK here; regular files never block; and for stdio we open a private file
 * description of our fd 0/1 through /proc/self/fd (see `privateNonblocking`) and make THAT
 * non-blocking, which cannot change the shell's terminal or pipe. A write then takes what fits (a
 * partial count) or fails with EAGAIN, whatever its size.
 */
import { constants as osConstants } from "node:os";
import { closeSync, constants as fsConstants, fstatSync, lstatSync, openSync, unlinkSync } from "node:fs";
import type { ChardevSpec } from "../config/types.ts";
import { host, POLLERR, POLLHUP, POLLIN } from "../vmm/index.ts";

/** poll(2) POLLNVAL: the fd is not open. */
export const POLLNVAL = 32;

const E = osConstants.errno;
/** Linux O_CLOEXEC (node:fs does not export it). */
const O_CLOEXEC = 0o2000000;
/** Linux PIPE_BUF: a pipe that polls writable takes a write of at most this many bytes at once. */
export const PIPE_BUF = 4096;

export type ChardevKind = ChardevSpec["kind"];

/** The opened host side of a chardev: plain data, safe to post to Workers. */
export interface ChardevHandle {
  readonly kind: ChardevKind;
  /** The device it serves (e.g. "com1"), for messages. */
  readonly name: string;
  /** fd to read guest input from, or -1 (none, or: the accepted client of `listenFd`). */
  readonly inFd: number;
  /** fd to write guest output to, or -1 (none, or: the accepted client of `listenFd`). */
  readonly outFd: number;
  /** Listening socket (tcp, unix), or -1. */
  readonly listenFd: number;
  /** file path, unix socket path, pty slave path or device path. */
  readonly path?: string;
  /** tcp only. */
  readonly addr?: string;
  readonly port?: number;
  /** fds switched to raw mode here, restored by closeChardev (the shim also restores them at exit). */
  readonly rawTtys: readonly number[];
  /** fds this handle owns (closeChardev closes them; stdio's 0/1 are never closed). */
  readonly owned: readonly number[];
  /**
   * outFd is a pipe or terminal in blocking mode (stdio when no private description could be opened):
   * writes are cut to PIPE_BUF bytes so that the shim's poll-for-POLLOUT-then-write cannot block on
   * a pipe.
   */
  readonly outBlocking?: boolean;
}

/**
 * Connection state shared by every thread using one chardev (normally fields of the owning device's
 * state block). All-zero is the initial state, so a freshly allocated block needs no set-up.
 */
export interface ChardevShared {
  /** Accepted client fd + 1 (0 = no client). */
  cdClient: number;
  /** bit 0: input reached end of file / failed for good; bit 1: output failed for good; bit 2: the
   *  listening socket failed for good. */
  cdFlags: number;
}

/** State-layout fields for ChardevShared, to spread into a device's defineLayout spec. */
export const CHARDEV_STATE = { cdClient: "i32", cdFlags: "u8" } as const;

const FLAG_IN_DEAD = 1, FLAG_OUT_DEAD = 2, FLAG_LISTEN_DEAD = 4;

export class ChardevError extends Error {}

/** Open the host side of a chardev (main thread only). */
export function openChardev(spec: ChardevSpec, name: string): ChardevHandle {
  const base = { name, inFd: -1, outFd: -1, listenFd: -1, rawTtys: [] as number[], owned: [] as number[] };
  switch (spec.kind) {
    case "null":
      return { ...base, kind: "null" };
    case "stdio": {
      const raw: number[] = [];
      // Raw mode on the real terminal fd (termios belong to the terminal, not to a file description).
      if (host.isatty(0)) {
        host.ttyRaw(0, true);
        raw.push(0);
      }
      const owned: number[] = [];
      const inFd = privateNonblocking(0, fsConstants.O_RDONLY);
      if (inFd >= 0) owned.push(inFd);
      const outFd = privateNonblocking(1, fsConstants.O_WRONLY);
      if (outFd >= 0) owned.push(outFd);
      return {
        ...base, kind: "stdio", inFd: inFd >= 0 ? inFd : 0, outFd: outFd >= 0 ? outFd : 1, rawTtys: raw, owned,
        outBlocking: outFd < 0 && mayBlock(1),
      };
    }
    case "file": {
      let fd: number;
      try {
        fd = openSync(spec.path, fsConstants.O_WRONLY | fsConstants.O_APPEND | fsConstants.O_CREAT | O_CLOEXEC, 0o644);
      } catch (err) {
        throw new ChardevError(`${name}: cannot open ${spec.path}: ${(err as Error).message}`);
      }
      return { ...base, kind: "file", outFd: fd, path: spec.path, owned: [fd] };
    }
    case "tcp": {
      const addr = spec.addr || "127.0.0.1";
      let fd: number;
      try {
        fd = host.listenTcp(addr, spec.port);
      } catch (err) {
        throw new ChardevError(`${name}: ${(err as Error).message}`);
      }
      return { ...base, kind: "tcp", listenFd: fd, addr, port: spec.port, owned: [fd] };
    }
    case "unix": {
      // A socket file left behind by an earlier run would make bind fail: remove it (only a socket).
      try {
        if (lstatSync(spec.path).isSocket()) unlinkSync(spec.path);
      } catch { /* does not exist */ }
      let fd: number;
      try {
        fd = host.listenUnix(spec.path);
      } catch (err) {
        throw new ChardevError(`${name}: ${(err as Error).message}`);
      }
      return { ...base, kind: "unix", listenFd: fd, path: spec.path, owned: [fd] };
    }
    case "pty": {
      const p = host.openpty();
      process.stderr.write(`${name}: ${p.path}\n`);
      return { ...base, kind: "pty", inFd: p.fd, outFd: p.fd, path: p.path, owned: [p.fd] };
    }
    case "device": {
      let fd: number;
      try {
        // O_NONBLOCK: do not wait for carrier on open; reads and writes never block. This open is our
        // own file description, so the flag touches no one else's use of the device.
        fd = openSync(spec.path, fsConstants.O_RDWR | fsConstants.O_NOCTTY | fsConstants.O_NONBLOCK | O_CLOEXEC);
      } catch (err) {
        throw new ChardevError(`${name}: cannot open ${spec.path}: ${(err as Error).message}`);
      }
      const raw: number[] = [];
      if (host.isatty(fd)) {
        host.ttyRaw(fd, true);
        raw.push(fd);
      }
      return { ...base, kind: "device", inFd: fd, outFd: fd, path: spec.path, rawTtys: raw, owned: [fd] };
    }
  }
}

/** fd is a pipe/FIFO or character device (terminal...): the kinds a blocking write can wait on. */
function mayBlock(fd: number): boolean {
  try {
    const st = fstatSync(fd);
    return st.isFIFO() || st.isCharacterDevice();
  } catch {
    return false; // closed
  }
}

/**
 * A private, non-blocking open file description of our own `fd` (0 or 1), or -1 to use `fd` itself.
 *
 * Opening /proc/self/fd/N creates a NEW open file description of the same pipe or terminal (unlike
 * dup, which shares the description and with it the O_NONBLOCK flag), so the flag set here is ours
 * alone: the parent shell, and anything else sharing our fd 0/1, keeps its blocking fd.
 *
 * Only pipes and character devices are reopened. A regular file never blocks, and a reopen would
 * start at offset 0 without the shell's O_APPEND (overwriting what came before); a socket cannot be
 * opened through /proc, and is written with MSG_DONTWAIT anyway. When the open fails (no /proc, a
 * FIFO with no reader left, a terminal we may not open) we fall back to `fd` itself, as before: reads
 * are guarded by a zero-timeout poll and writes by the shim's poll for POLLOUT plus the PIPE_BUF cap
 * (`outBlocking`). That keeps a pipe from blocking; a terminal in that fallback can still hold a
 * write (e.g. output stopped with ^S), as it always could before.
 */
function privateNonblocking(fd: number, access: number): number {
  if (!mayBlock(fd)) return -1;
  try {
    return openSync(`/proc/self/fd/${fd}`, access | fsConstants.O_NONBLOCK | fsConstants.O_NOCTTY | O_CLOEXEC);
  } catch {
    return -1;
  }
}

/**
 * Release a handle (main thread, at VM exit): restore terminals, close owned fds (and a connected
 * client, if the shared state is given), remove a unix socket file.
 */
export function closeChardev(h: ChardevHandle, shared?: ChardevShared): void {
  for (const fd of h.rawTtys) {
    try { host.ttyRaw(fd, false); } catch { /* not a tty any more */ }
  }
  if (shared && shared.cdClient > 0) {
    host.close(shared.cdClient - 1);
    shared.cdClient = 0;
  }
  for (const fd of h.owned) {
    try { closeSync(fd); } catch { /* already closed */ }
  }
  if (h.kind === "unix" && h.path) {
    try {
      if (lstatSync(h.path).isSocket()) unlinkSync(h.path);
    } catch { /* gone */ }
  }
}

/** Result of Chardev.write when the output is gone (the caller drops the bytes). */
export const GONE = -1;

/**
 * Thread-side I/O on a chardev. Construct one per thread from the handle; pass the shared connection
 * state. Not re-entrant: the owner serialises calls (device lock).
 */
export class Chardev {
  // Scratch buffers for a zero-timeout poll: per-thread, carry no state between calls.
  private readonly pfd = new Int32Array(1);
  private readonly pev = new Int16Array(1);
  private readonly prev = new Int16Array(1);

  constructor(readonly handle: ChardevHandle, readonly st: ChardevShared = { cdClient: 0, cdFlags: 0 }) {}

  get listening(): boolean { return this.handle.listenFd >= 0; }

  /** A client is connected (tcp/unix) or the backend needs none. */
  get connected(): boolean { return this.listening ? this.st.cdClient > 0 : true; }

  /** The fd guest input comes from now, or -1. */
  inFd(): number {
    if (this.st.cdFlags & FLAG_IN_DEAD) return -1;
    return this.listening ? this.st.cdClient - 1 : this.handle.inFd;
  }

  /** The fd guest output goes to now, or -1 (output is then dropped). */
  outFd(): number {
    if (this.st.cdFlags & FLAG_OUT_DEAD) return -1;
    return this.listening ? this.st.cdClient - 1 : this.handle.outFd;
  }

  /**
   * Write without ever blocking. Returns the number of bytes taken (0 = no room now, try again when
   * the fd is writable; fewer than buf.length = the rest did not fit, likewise), or GONE when there is
   * nowhere to write (no backend, no client, or the output failed: a socket client that went away is
   * disconnected).
   */
  write(buf: Uint8Array): number {
    const fd = this.outFd();
    if (fd < 0) return GONE;
    if (buf.length === 0) return 0;
    if (this.handle.outBlocking && buf.length > PIPE_BUF) buf = buf.subarray(0, PIPE_BUF);
    for (;;) {
      const r = host.writeNb(fd, buf);
      if (r >= 0) return r;
      if (-r === E.EINTR) continue;
      if (-r === E.EAGAIN || -r === E.EWOULDBLOCK) return 0;
      if (this.listening) this.disconnect();
      else this.st.cdFlags |= FLAG_OUT_DEAD;
      return GONE;
    }
  }

  /**
   * Read what is available now, at most buf.length bytes, never blocking (a zero-timeout poll guards
   * fds that may be in blocking mode, like stdin). Returns the count (0 = nothing now), or GONE at end
   * of input (a socket client is then disconnected; other inputs are no longer read).
   */
  read(buf: Uint8Array): number {
    const fd = this.inFd();
    if (fd < 0) return GONE;
    if (buf.length === 0) return 0;
    this.pfd[0] = fd;
    this.pev[0] = POLLIN;
    host.poll(this.pfd, this.pev, this.prev, 0);
    const rev = this.prev[0]!;
    if (!(rev & (POLLIN | POLLHUP | POLLERR | POLLNVAL))) return 0;
    for (;;) {
      const r = host.read(fd, buf);
      if (r > 0) return r;
      if (r < 0 && -r === E.EINTR) continue;
      if (r < 0 && (-r === E.EAGAIN || -r === E.EWOULDBLOCK)) return 0;
      // r === 0 (EOF) or a hard error (ECONNRESET, EIO...)
      if (this.listening) this.disconnect();
      else this.st.cdFlags |= FLAG_IN_DEAD;
      return GONE;
    }
  }

  /**
   * Accept every pending client of the listening socket: the first becomes THE client if none is
   * connected; any other is closed at once (one client at a time). Returns true if a client was
   * connected by this call.
   */
  acceptPending(): boolean {
    if (!this.listening) return false;
    let connected = false;
    for (;;) {
      const fd = host.accept(this.handle.listenFd);
      if (fd < 0) return connected;
      if (this.st.cdClient === 0) {
        this.st.cdClient = fd + 1;
        connected = true;
      } else {
        host.close(fd);
      }
    }
  }

  /** The listening socket to watch for clients, or -1 (none, or it failed). */
  listenFd(): number {
    return this.st.cdFlags & FLAG_LISTEN_DEAD ? -1 : this.handle.listenFd;
  }

  /** Stop watching the listening socket (it reported POLLNVAL/POLLERR). */
  listenFailed(): void {
    this.st.cdFlags |= FLAG_LISTEN_DEAD;
  }

  /** Drop the connected client (tcp/unix). */
  disconnect(): void {
    const c = this.st.cdClient;
    if (c > 0) {
      this.st.cdClient = 0;
      host.close(c - 1);
    }
  }
}
