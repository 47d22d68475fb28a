/**
 * Character-device backends against real host objects: files, ptys, an existing tty, tcp and unix
 * listeners with real clients. Two Chardev instances share one state block (as two threads would).
 */
import { afterEach, describe, expect, test } from "bun:test";
import {
  closeSync, constants as fsc, existsSync, fstatSync, lstatSync, mkdtempSync, openSync, readFileSync,
  readSync, rmSync, writeFileSync, writeSync,
} from "node:fs";
import { createServer, Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  Chardev, CHARDEV_STATE, ChardevError, closeChardev, GONE, openChardev, type ChardevHandle,
} from "../../src/chardev/index.ts";
import { bindState, defineLayout } from "../../src/devices/state.ts";
import { host } from "../../src/vmm/index.ts";

const Layout = defineLayout("chardev-test", 1, CHARDEV_STATE);
/** Two views of one shared block, like two threads constructing the same device. */
function shared() {
  const buf = new SharedArrayBuffer(Layout.bytes);
  return [bindState(buf, 0, Layout).s, bindState(buf, 0, Layout).s] as const;
}

const dirs: string[] = [];
const handles: ChardevHandle[] = [];
function tmp(): string {
  const d = mkdtempSync(join(tmpdir(), "tsb-chardev-"));
  dirs.push(d);
  return d;
}
afterEach(() => {
  for (const h of handles.splice(0)) closeChardev(h);
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function quietly<T>(fn: () => T): { value: T; stderr: string } {
  const orig = process.stderr.write;
  let text = "";
  process.stderr.write = ((s: string | Uint8Array) => { text += String(s); return true; }) as typeof process.stderr.write;
  try { return { value: fn(), stderr: text }; } finally { process.stderr.write = orig; }
}

const enc = (s: string) => new TextEncoder().encode(s);
const isOpen = (fd: number) => { try { fstatSync(fd); return true; } catch { return false; } };
/** An fd's open-file-description flags (O_*), from /proc/self/fdinfo. */
const fdFlags = (fd: number) => parseInt(/^flags:\s*([0-7]+)$/m.exec(readFileSync(`/proc/self/fdinfo/${fd}`, "utf8"))![1]!, 8);

function readAll(fd: number, want: number, tries = 200): string {
  const b = Buffer.alloc(4096);
  let out = "";
  for (let i = 0; i < tries && out.length < want; i++) {
    try {
      const n = readSync(fd, b, 0, b.length, null);
      out += b.subarray(0, n).toString("latin1");
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "EAGAIN") throw e;
      Bun.sleepSync(2);
    }
  }
  return out;
}

function chardevRead(cd: Chardev, want: number, tries = 200): string {
  const b = new Uint8Array(256);
  let out = "";
  for (let i = 0; i < tries && out.length < want; i++) {
    const n = cd.read(b);
    if (n === GONE) throw new Error("input gone");
    if (n > 0) out += Buffer.from(b.subarray(0, n)).toString("latin1");
    else Bun.sleepSync(2);
  }
  return out;
}

async function freePort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((res) => srv.listen(0, "127.0.0.1", res));
  const port = (srv.address() as { port: number }).port;
  await new Promise<void>((res) => srv.close(() => res()));
  return port;
}

describe("openChardev", () => {
  test("handles are plain structured-clone-safe data", () => {
    const h = openChardev({ kind: "file", path: join(tmp(), "x") }, "com2");
    handles.push(h);
    expect(structuredClone(h)).toEqual(h);
    expect(h.name).toBe("com2");
  });

  test("null: nowhere to write, nothing to read", () => {
    const h = openChardev({ kind: "null" }, "com1");
    expect([h.inFd, h.outFd, h.listenFd]).toEqual([-1, -1, -1]);
    const cd = new Chardev(h);
    expect(cd.write(enc("x"))).toBe(GONE);
    expect(cd.read(new Uint8Array(4))).toBe(GONE);
    expect(cd.connected).toBe(true);
  });

  test("stdio: private non-blocking descriptions of pipes/ttys, raw mode on fd 0, 0/1 never closed", () => {
    const flags1 = fdFlags(1), flags0 = fdFlags(0);
    const h = openChardev({ kind: "stdio" }, "com1");
    expect(h.rawTtys).toEqual(host.isatty(0) ? [0] : []);
    for (const [fd, std] of [[h.inFd, 0], [h.outFd, 1]] as const) {
      const st = fstatSync(std);
      if (st.isFIFO() || st.isCharacterDevice()) {
        // reopened through /proc/self/fd: our own fd, non-blocking, owned
        expect(fd).not.toBe(std);
        expect(fdFlags(fd) & fsc.O_NONBLOCK).toBe(fsc.O_NONBLOCK);
        expect(h.owned).toContain(fd);
      } else {
        expect(fd).toBe(std); // a regular file or socket: used as it is
      }
    }
    // the shell's own fds are untouched
    expect(fdFlags(1)).toBe(flags1);
    expect(fdFlags(0)).toBe(flags0);
    expect(structuredClone(h)).toEqual(h);
    closeChardev(h);
    expect(isOpen(0) && isOpen(1)).toBe(true);
    for (const fd of h.owned) expect(isOpen(fd)).toBe(false);
  });

  test("file: append-only output, no input, closed by closeChardev", () => {
    const path = join(tmp(), "com1.log");
    writeFileSync(path, "earlier run\n");
    const h = openChardev({ kind: "file", path }, "com1");
    expect(h.inFd).toBe(-1);
    const cd = new Chardev(h);
    expect(cd.write(enc("booting\r\n"))).toBe(9);
    expect(cd.read(new Uint8Array(4))).toBe(GONE);
    expect(readFileSync(path, "utf8")).toBe("earlier run\nbooting\r\n");
    closeChardev(h);
    expect(isOpen(h.outFd)).toBe(false);
  });

  test("file: a path that cannot be opened is a clear error", () => {
    expect(() => openChardev({ kind: "file", path: "/nonexistent-dir/x" }, "com3")).toThrow(/com3: cannot open \/nonexistent-dir\/x/);
    expect(() => openChardev({ kind: "file", path: "/nonexistent-dir/x" }, "com3")).toThrow(ChardevError);
  });

  test("pty: prints the slave path and carries data both ways", () => {
    const { value: h, stderr } = quietly(() => openChardev({ kind: "pty" }, "com1"));
    handles.push(h);
    expect(h.path).toMatch(/^\/dev\/pts\/\d+$/);
    expect(stderr).toBe(`com1: ${h.path}\n`);
    expect(h.inFd).toBe(h.outFd);
    const slave = openSync(h.path!, fsc.O_RDWR | fsc.O_NOCTTY | fsc.O_NONBLOCK);
    try {
      const cd = new Chardev(h);
      expect(cd.read(new Uint8Array(8))).toBe(0); // nothing yet, and no blocking
      expect(cd.write(enc("guest says hi\n"))).toBe(14);
      expect(readAll(slave, 14)).toBe("guest says hi\n"); // raw: no \n → \r\n
      writeSync(slave, "user types\r");
      expect(chardevRead(cd, 11)).toBe("user types\r");
    } finally {
      closeSync(slave);
    }
  });

  test("device: an existing tty opened read-write, raw", () => {
    const master = host.openpty();
    try {
      const h = openChardev({ kind: "device", path: master.path }, "com1");
      handles.push(h);
      expect(h.inFd).toBe(h.outFd);
      expect(h.rawTtys).toEqual([h.inFd]);
      const cd = new Chardev(h);
      expect(cd.write(enc("to the other side\n"))).toBe(18);
      const b = new Uint8Array(64);
      let got = "";
      for (let i = 0; i < 100 && got.length < 18; i++) {
        const n = host.read(master.fd, b);
        if (n > 0) got += Buffer.from(b.subarray(0, n)).toString(); else Bun.sleepSync(2);
      }
      expect(got).toBe("to the other side\n");
      expect(host.write(master.fd, enc("abc\x03"))).toBe(4); // ^C is data in raw mode
      expect(chardevRead(cd, 4)).toBe("abc\x03");
    } finally {
      host.close(master.fd);
    }
  });

  test("device: a missing path is a clear error", () => {
    expect(() => openChardev({ kind: "device", path: "/dev/nonexistent-tty" }, "com4")).toThrow(/com4: cannot open/);
  });
});

describe("listening sockets", () => {
  test("tcp: one client at a time (in shared state), a second is refused, EOF disconnects", async () => {
    const port = await freePort();
    const h = openChardev({ kind: "tcp", addr: "127.0.0.1", port }, "com1");
    handles.push(h);
    expect(structuredClone(h)).toEqual(h);
    expect(h.listenFd).toBeGreaterThanOrEqual(0);
    expect([h.inFd, h.outFd]).toEqual([-1, -1]);
    const [s1, s2] = shared();
    const vcpu = new Chardev(h, s1), io = new Chardev(h, s2);
    expect(vcpu.connected).toBe(false);
    expect(vcpu.write(enc("dropped"))).toBe(GONE);
    expect(io.acceptPending()).toBe(false);

    const c1 = new Socket();
    let rx1 = "";
    c1.on("data", (d) => { rx1 += d.toString(); });
    await new Promise<void>((res) => c1.connect(port, "127.0.0.1", res));
    let accepted = false;
    for (let i = 0; i < 200 && !accepted; i++) { accepted = io.acceptPending(); if (!accepted) await Bun.sleep(2); }
    expect(accepted).toBe(true);
    // the other "thread" sees the client through the shared block
    expect(vcpu.connected).toBe(true);
    expect(vcpu.outFd()).toBe(io.inFd());
    expect(s1.cdClient).toBe(io.inFd() + 1);

    const c2 = new Socket();
    let c2closed = false;
    c2.on("close", () => { c2closed = true; });
    c2.on("error", () => {});
    c2.connect(port, "127.0.0.1");
    for (let i = 0; i < 500 && !c2closed; i++) { expect(io.acceptPending()).toBe(false); await Bun.sleep(2); }
    expect(c2closed).toBe(true);
    expect(vcpu.outFd()).toBe(io.inFd()); // still the first client

    expect(vcpu.write(enc("hello"))).toBe(5);
    for (let i = 0; i < 200 && rx1 !== "hello"; i++) await Bun.sleep(2);
    expect(rx1).toBe("hello");
    c1.write("typed");
    let got = "";
    const b = new Uint8Array(64);
    for (let i = 0; i < 200 && got.length < 5; i++) {
      const n = io.read(b);
      if (n > 0) got += Buffer.from(b.subarray(0, n)).toString(); else await Bun.sleep(2);
    }
    expect(got).toBe("typed");

    const clientFd = io.inFd();
    c1.end();
    let r = 0;
    for (let i = 0; i < 200 && r !== GONE; i++) { r = io.read(b); if (r !== GONE) await Bun.sleep(2); }
    expect(r).toBe(GONE);
    expect(vcpu.connected).toBe(false);
    expect(s2.cdClient).toBe(0);
    expect(isOpen(clientFd)).toBe(false);
    expect(vcpu.write(enc("x"))).toBe(GONE);
  });

  test("tcp: a port in use is a clear error", async () => {
    const srv = createServer();
    await new Promise<void>((res) => srv.listen(0, "127.0.0.1", res));
    const port = (srv.address() as { port: number }).port;
    try {
      expect(() => openChardev({ kind: "tcp", addr: "127.0.0.1", port }, "com2")).toThrow(/com2: listen on 127\.0\.0\.1:\d+: EADDRINUSE/);
    } finally {
      await new Promise<void>((res) => srv.close(() => res()));
    }
  });

  test("unix: replaces a stale socket file, serves a client, writes to a vanished client report GONE, unlinks on close", async () => {
    const path = join(tmp(), "com1.sock");
    const h1 = openChardev({ kind: "unix", path }, "com1");
    closeSync(h1.listenFd); // an earlier run that died: the socket file stays
    expect(lstatSync(path).isSocket()).toBe(true);
    const h = openChardev({ kind: "unix", path }, "com1");
    const [s] = shared();
    const cd = new Chardev(h, s);
    const c = new Socket();
    let rx = "";
    c.on("data", (d) => { rx += d.toString(); });
    await new Promise<void>((res) => c.connect(path, res));
    for (let i = 0; i < 200 && !cd.connected; i++) { cd.acceptPending(); if (!cd.connected) await Bun.sleep(2); }
    expect(cd.connected).toBe(true);
    expect(cd.write(enc("over unix"))).toBe(9);
    for (let i = 0; i < 200 && rx !== "over unix"; i++) await Bun.sleep(2);
    expect(rx).toBe("over unix");
    c.destroy();
    let r = 0;
    for (let i = 0; i < 200 && r !== GONE; i++) { r = cd.write(enc("y")); if (r !== GONE) await Bun.sleep(2); }
    expect(r).toBe(GONE); // EPIPE/ECONNRESET → disconnected, no SIGPIPE
    expect(cd.connected).toBe(false);
    closeChardev(h, s);
    expect(existsSync(path)).toBe(false);
    expect(isOpen(h.listenFd)).toBe(false);
  });

  test("closeChardev closes a connected client too", async () => {
    const port = await freePort();
    const h = openChardev({ kind: "tcp", addr: "127.0.0.1", port }, "com1");
    const [s] = shared();
    const cd = new Chardev(h, s);
    const c = new Socket();
    let closed = false;
    c.on("close", () => { closed = true; });
    c.on("error", () => {});
    await new Promise<void>((res) => c.connect(port, "127.0.0.1", res));
    for (let i = 0; i < 200 && !cd.connected; i++) { cd.acceptPending(); if (!cd.connected) await Bun.sleep(2); }
    const fd = cd.inFd();
    closeChardev(h, s);
    expect(isOpen(fd)).toBe(false);
    expect(s.cdClient).toBe(0);
    for (let i = 0; i < 200 && !closed; i++) await Bun.sleep(2);
    expect(closed).toBe(true);
  });
});

/**
 * A guest writing through a stdio chardev whose stdout is a pipe nobody reads: the write must come back
 * at once with what fit (then 0 = EAGAIN), never block the (vCPU) thread, and once the reader drains,
 * the rest must go through with no byte lost.
 *
 * It runs in a child process so its fd 1 can really be a pipe (Bun's own subprocess "pipes" are
 * sockets): `child | { wait for GO; exec cat; }`, built by sh. The child opens the chardev exactly as
 * the VM does (openChardev({kind: "stdio"})) and writes with Chardev.write, then, like the I/O Worker,
 * waits for POLLOUT and writes the rest. The "fallback" mode uses fd 1 itself in blocking mode with the
 * PIPE_BUF cap, as when /proc cannot be used.
 */
describe("stdio output to a stalled pipe", () => {
  const CHILD = `
    import { readFileSync, fstatSync, writeSync } from "node:fs";
    import { Chardev, closeChardev, GONE, openChardev, PIPE_BUF } from ${JSON.stringify(new URL("../../src/chardev/index.ts", import.meta.url).href)};
    import { host, POLLOUT } from ${JSON.stringify(new URL("../../src/vmm/index.ts", import.meta.url).href)};
    const flags = (fd) => parseInt(/^flags:\\s*([0-7]+)$/m.exec(readFileSync("/proc/self/fdinfo/" + fd, "utf8"))[1], 8);
    const report = (o) => writeSync(2, JSON.stringify(o) + "\\n");
    const mode = process.argv[2];
    const h = mode === "stdio" ? openChardev({ kind: "stdio" }, "com1")
      : { kind: "stdio", name: "com1", inFd: -1, outFd: 1, listenFd: -1, rawTtys: [], owned: [], outBlocking: true };
    const cd = new Chardev(h);
    const total = 1 << 20;
    const data = new Uint8Array(total);
    for (let i = 0; i < total; i++) data[i] = (i * 131 + (i >>> 11)) & 0xff;
    let off = 0;
    const calls = [];
    const t0 = performance.now();
    for (let i = 0; i < 64 && off < total; i++) {
      const n = cd.write(data.subarray(off));
      calls.push(n);
      if (n === GONE) break;
      off += n;
    }
    report({ phase: "stalled", ms: performance.now() - t0, calls, off, fifo: fstatSync(1).isFIFO(),
      outFd: h.outFd, owned: h.owned, outBlocking: !!h.outBlocking, flags1: flags(1), flagsOut: flags(h.outFd), pipeBuf: PIPE_BUF });
    const pfd = Int32Array.of(h.outFd), ev = Int16Array.of(POLLOUT), rev = new Int16Array(1);
    let writes = 0;
    while (off < total) {
      host.poll(pfd, ev, rev, 1000);
      const n = cd.write(data.subarray(off));
      if (n === GONE) { report({ phase: "gone", off }); process.exit(3); }
      off += n;
      writes++;
    }
    closeChardev(h);
    report({ phase: "done", off, writes });
  `;

  /** What the child reports once its writes come back with the pipe full. */
  interface Stalled {
    ms: number; calls: number[]; off: number; fifo: boolean; outFd: number; owned: number[];
    outBlocking: boolean; flags1: number; flagsOut: number; pipeBuf: number;
  }

  async function run(mode: "stdio" | "fallback") {
    const dir = tmp();
    const script = join(dir, "child.ts");
    writeFileSync(script, CHILD);
    const go = join(dir, "GO");
    const proc = Bun.spawn(
      ["sh", "-c", `"$0" "$1" "$2" | { while [ ! -e "$3" ]; do sleep 0.01; done; exec cat; }`, process.execPath, script, mode, go],
      { stdin: "ignore", stdout: "pipe", stderr: "pipe", cwd: new URL("../..", import.meta.url).pathname },
    );
    const lines: Record<string, unknown>[] = [];
    let errText = "";
    const errDone = (async () => {
      const dec = new TextDecoder();
      for await (const chunk of proc.stderr) {
        errText += dec.decode(chunk, { stream: true });
        let nl: number;
        while ((nl = errText.indexOf("\n")) >= 0) {
          const line = errText.slice(0, nl);
          errText = errText.slice(nl + 1);
          try { lines.push(JSON.parse(line)); } catch { lines.push({ text: line }); }
        }
      }
    })();
    // The stall report must come while nobody reads the pipe: a write that blocked would never send it.
    const deadline = Date.now() + 10_000;
    while (!lines.some((l) => l.phase === "stalled") && Date.now() < deadline) await Bun.sleep(10);
    const stalled = lines.find((l) => l.phase === "stalled");
    if (!stalled) {
      // Let the reader drain so the blocked child (and the sh pipeline) can finish instead of lingering.
      writeFileSync(go, "");
      await Promise.race([proc.exited, Bun.sleep(5000)]);
      throw new Error(`child never came back from writing to the stalled pipe: ${JSON.stringify(lines)} ${errText}`);
    }
    writeFileSync(go, ""); // now the reader drains
    const out = new Uint8Array(await new Response(proc.stdout).arrayBuffer());
    const code = await proc.exited;
    await errDone;
    return { stalled: stalled as unknown as Stalled, out, code, lines };
  }

  function expectAllBytes(out: Uint8Array) {
    const total = 1 << 20;
    expect(out.length).toBe(total);
    let bad = -1;
    for (let i = 0; i < total; i++) if (out[i] !== ((i * 131 + (i >>> 11)) & 0xff)) { bad = i; break; }
    expect(bad).toBe(-1);
  }

  test("stdio: 1 MiB write returns partial counts / EAGAIN at once; everything arrives after the drain", async () => {
    const { stalled, out, code, lines } = await run("stdio");
    expect(stalled.fifo).toBe(true); // fd 1 really is a pipe
    expect(stalled.outFd).not.toBe(1); // a private description...
    expect(stalled.owned).toContain(stalled.outFd); // (with stdin's: /dev/null is reopened too)
    expect(stalled.flagsOut & fsc.O_NONBLOCK).toBe(fsc.O_NONBLOCK); // ...that is non-blocking
    expect(stalled.flags1 & fsc.O_NONBLOCK).toBe(0); // while the shared fd 1 stays blocking
    expect(stalled.outBlocking).toBe(false);
    const { calls } = stalled;
    expect(calls[0]).toBeGreaterThan(0); // the first write takes what fits (a partial count)...
    expect(calls[0]).toBeLessThan(1 << 20);
    expect(calls.at(-1)).toBe(0); // ...then EAGAIN, reported as 0
    expect(stalled.off).toBeLessThan(1 << 20);
    expect(stalled.ms).toBeLessThan(1000);
    expect(code).toBe(0);
    expect(lines.find((l) => l.phase === "done")).toMatchObject({ off: 1 << 20 });
    expectAllBytes(out);
  }, 30_000);

  test("fallback (no private description): writes are cut to PIPE_BUF, so a blocking pipe fd never blocks", async () => {
    const { stalled, out, code, lines } = await run("fallback");
    expect(stalled.fifo).toBe(true);
    expect(stalled.outFd).toBe(1);
    expect(stalled.flags1 & fsc.O_NONBLOCK).toBe(0); // really a blocking fd
    const { calls } = stalled;
    expect(calls[0]).toBe(stalled.pipeBuf);
    expect(Math.max(...calls)).toBeLessThanOrEqual(stalled.pipeBuf);
    expect(calls.at(-1)).toBe(0);
    expect(stalled.ms).toBeLessThan(1000);
    expect(code).toBe(0);
    expect(lines.find((l) => l.phase === "done")).toMatchObject({ off: 1 << 20 });
    expectAllBytes(out);
  }, 30_000);
});
