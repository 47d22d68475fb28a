/**
 * virtio-console as a device: the model (src/virtio/devices/console.ts) behind the real virtio-pci
 * transport, driven through a Bus by the fake driver over fake guest memory, with real host ends (Unix
 * sockets opened by openChardev, real clients). The I/O Worker is played by `pump()`: poll the device's
 * sources with a zero timeout and run what is ready. Covers identity and config, the MULTIPORT control
 * handshake (DEVICE_READY → DEVICE_ADD, PORT_READY → PORT_NAME, PORT_OPEN on connect / disconnect), data
 * both ways, no loss while the guest has no receive buffers or the port closed, a client that does not
 * read (backlog, nothing lost, the I/O Worker never blocks), and output without a client being dropped.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { connect, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { closeChardev, openChardev, type ChardevHandle } from "../../src/chardev/index.ts";
import type { PollSource } from "../../src/devices/device.ts";
import { GuestMemory, MiB } from "../../src/mem/guest-memory.ts";
import { CFG } from "../../src/pci/regs.ts";
import { host, POLLIN } from "../../src/vmm/index.ts";
import {
  C_IVQ, C_OVQ, CONSOLE_CTRL, CONSOLE_F_MULTIPORT, consoleMaxNrPorts, consoleQueueCount, createConsole, rxQueue, txQueue, type ConsolePortInput,
} from "../../src/virtio/devices/console.ts";
import { COMMON, type VirtioPciFunction } from "../../src/virtio/pci.ts";
import type { FakeDriver } from "./virtio-driver.ts";
import { virtioPciRig } from "./virtio-pci-rig.ts";

const dir = mkdtempSync(join(tmpdir(), "tsb-vcon-"));
const handles: ChardevHandle[] = [];
const sockets: Socket[] = [];
afterAll(() => {
  for (const s of sockets) s.destroy();
  for (const h of handles) closeChardev(h);
  rmSync(dir, { recursive: true, force: true });
});

const SLOT = 5;
let nSock = 0;

function rig(portDefs: { id: number; name?: string }[]) {
  const ports: (ConsolePortInput & { path: string })[] = portDefs.map((p) => {
    const path = join(dir, `p${nSock++}.sock`);
    const handle = openChardev({ kind: "unix", path }, `port ${p.id}`);
    handles.push(handle);
    return { ...p, handle, path };
  });
  const nq = consoleQueueCount(Math.max(1, ...ports.map((p) => p.id + 1)));
  const r = virtioPciRig({
    mem: GuestMemory.fake(128 * MiB), queues: nq, slot: SLOT,
    build: (inp) => createConsole({ ...inp, ports }).fn,
  });
  const { platform, mem, cr, cfg, features } = r;
  const io = { fn: r.io as VirtioPciFunction };
  const bringUp = (multiport = true) =>
    r.bringUp(multiport ? CONSOLE_F_MULTIPORT : 0n, { indirect: false, heapSize: 2 * MiB }).drivers;
  /** Notify queue q and run what the I/O Worker runs when its eventfd fires. */
  const kick = (q: number) => {
    r.w16(COMMON.Q_SELECT, q);
    r.bus.write("mmio", r.notify + 4 * r.c16(COMMON.Q_NOFF), 2, q);
    expect(r.signals.splice(0)).toEqual([100 + q]);
    io.fn.pollSources()[q]!.ready(POLLIN);
  };
  /** One I/O Worker round over the device's host-end sources (and any rescheduled queue). */
  const round = () => {
    const src: PollSource[] = io.fn.pollSources().slice(nq);
    const f = new Int32Array(src.map((s) => s.fd)), e = new Int16Array(src.map((s) => s.events)), r = new Int16Array(src.length);
    if (src.length) host.poll(f, e, r, 0);
    src.forEach((s, i) => { if (r[i]) s.ready(r[i]!); });
    if (io.fn.deadline() === 0) io.fn.expire();
  };
  /** Rounds until `done` holds (the client's event loop runs in between). */
  const pump = async (done: () => boolean, what: string, ms = 3000) => {
    const end = Date.now() + ms;
    for (;;) {
      round();
      if (done()) return;
      if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
      await Bun.sleep(1);
    }
  };
  return { ports, platform, mem, cr, cfg, features, bringUp, kick, round, pump, nq, io: io.fn };
}

type Rig = ReturnType<typeof rig>;

function ctrlMsg(id: number, event: number, value: number): Uint8Array {
  const b = new Uint8Array(8), v = new DataView(b.buffer);
  v.setUint32(0, id, true); v.setUint16(4, event, true); v.setUint16(6, value, true);
  return b;
}

/** The guest side of the control queues. */
function controller(r: Rig, d: FakeDriver[]) {
  const ivq = d[C_IVQ]!, ovq = d[C_OVQ]!;
  const bufs = new Map<number, number>();
  const post = (n: number) => {
    for (let i = 0; i < n; i++) { const { head, addrs } = ivq.add([{ len: 256, write: true }]); bufs.set(head, addrs[0]!); }
    ivq.publish();
    r.kick(C_IVQ);
  };
  /** Messages the device sent: [id, event, value, name?]. */
  const received = (): [number, number, number, string?][] => ivq.collect().map(({ id, len }) => {
    const a = bufs.get(id)!;
    const b = r.mem.readBytes(a, len), v = new DataView(b.buffer, b.byteOffset);
    const m: [number, number, number, string?] = [v.getUint32(0, true), v.getUint16(4, true), v.getUint16(6, true)];
    if (len > 8) m.push(new TextDecoder().decode(b.subarray(8)));
    return m;
  });
  const send = (id: number, event: number, value: number) => {
    ovq.add([{ len: 8, data: ctrlMsg(id, event, value) }]);
    ovq.publish();
    r.kick(C_OVQ);
    expect(ovq.collect().length).toBe(1);
  };
  return { post, received, send };
}

async function client(path: string): Promise<{ sock: Socket; data: () => string; bytes: () => Uint8Array; closed: () => boolean }> {
  const chunks: Uint8Array[] = [];
  let closed = false;
  const sock = connect(path);
  sockets.push(sock);
  sock.on("data", (b) => chunks.push(new Uint8Array(b)));
  sock.on("close", () => { closed = true; });
  sock.on("error", () => {});
  await new Promise<void>((res) => sock.once("connect", () => res()));
  const bytes = () => { const all = new Uint8Array(chunks.reduce((a, c) => a + c.length, 0)); let o = 0; for (const c of chunks) { all.set(c, o); o += c.length; } return all; };
  return { sock, bytes, data: () => new TextDecoder().decode(bytes()), closed: () => closed };
}

/** Post `n` receive buffers of `len` bytes on port id; returns their addresses by head. */
function postRx(r: Rig, d: FakeDriver[], id: number, n: number, len: number, addrs: Map<number, number>): void {
  const drv = d[rxQueue(id)]!;
  for (let i = 0; i < n; i++) { const x = drv.add([{ len, write: true }]); addrs.set(x.head, x.addrs[0]!); }
  drv.publish();
  r.kick(rxQueue(id));
}

function takeRx(r: Rig, d: FakeDriver[], id: number, addrs: Map<number, number>): Uint8Array {
  const parts = d[rxQueue(id)]!.collect().map((u) => r.mem.readBytes(addrs.get(u.id)!, u.len));
  const out = new Uint8Array(parts.reduce((a, p) => a + p.length, 0));
  let o = 0;
  for (const p of parts) { out.set(p, o); o += p.length; }
  return out;
}

function sendTx(r: Rig, d: FakeDriver[], id: number, data: Uint8Array[]): void {
  const drv = d[txQueue(id)]!;
  for (const b of data) drv.add([{ len: b.length, data: b }]);
  drv.publish();
  r.kick(txQueue(id));
}

/** Two 64-byte receive buffers on port id, `text` written by the client: what the guest received. */
async function hostToGuest(r: Rig, d: FakeDriver[], sock: Socket, id: number, text: string): Promise<string> {
  const addrs = new Map<number, number>();
  postRx(r, d, id, 2, 64, addrs);
  sock.write(text);
  const got: Uint8Array[] = [];
  await r.pump(() => { got.push(takeRx(r, d, id, addrs)); return got.reduce((a, g) => a + g.length, 0) === text.length; }, `port ${id} input`);
  return new TextDecoder().decode(Buffer.concat(got));
}

const pattern = (n: number, seed: number) => Uint8Array.from({ length: n }, (_, i) => (i * 31 + seed + (i >> 8)) & 0xff);

describe("virtio-console device", () => {
  test("identity, features, config (max_nr_ports), queue count", () => {
    const r = rig([{ id: 0, name: "port1" }, { id: 2, name: "org.example.two" }]);
    expect(r.cr(CFG.VENDOR, 2)).toBe(0x1af4);
    expect(r.cr(CFG.DEVICE, 2)).toBe(0x1003);
    expect(r.cr(CFG.SUBDEVICE, 2)).toBe(3);
    expect(r.cr(CFG.REVISION, 4) >>> 8).toBe(0x078000);
    const f = r.features();
    expect(f & CONSOLE_F_MULTIPORT).toBe(CONSOLE_F_MULTIPORT);
    expect(f & 1n).toBe(0n); // no SIZE
    expect(f & 4n).toBe(0n); // no EMERG_WRITE
    expect(r.cfg(4, 4)).toBe(3);
    expect(r.cfg(0, 2)).toBe(0);
    expect(r.nq).toBe(8);
    expect(consoleMaxNrPorts({ port: { "0": { path: "/a" }, "4": { path: "/b" } } })).toBe(5);
    expect(consoleMaxNrPorts({})).toBe(1);
    expect([rxQueue(0), txQueue(0), rxQueue(1), txQueue(1), rxQueue(14), txQueue(14)]).toEqual([0, 1, 4, 5, 30, 31]);
  });

  test("handshake: DEVICE_ADD per port, PORT_NAME after PORT_READY, PORT_OPEN on connect and 0 on disconnect", async () => {
    const r = rig([{ id: 0, name: "port1" }, { id: 2, name: "org.example.two" }, { id: 3 }]);
    const d = r.bringUp();
    const c = controller(r, d);
    c.post(16);
    expect(c.received()).toEqual([]); // nothing before DEVICE_READY
    c.send(0, CONSOLE_CTRL.DEVICE_READY, 1);
    expect(c.received()).toEqual([[0, CONSOLE_CTRL.DEVICE_ADD, 1], [2, CONSOLE_CTRL.DEVICE_ADD, 1], [3, CONSOLE_CTRL.DEVICE_ADD, 1]]);
    c.send(2, CONSOLE_CTRL.PORT_READY, 1);
    expect(c.received()).toEqual([[2, CONSOLE_CTRL.PORT_NAME, 1, "org.example.two"]]); // no client: no PORT_OPEN
    c.send(0, CONSOLE_CTRL.PORT_READY, 1);
    c.send(3, CONSOLE_CTRL.PORT_READY, 1);
    expect(c.received()).toEqual([[0, CONSOLE_CTRL.PORT_NAME, 1, "port1"]]); // port 3 has no name
    c.send(9, CONSOLE_CTRL.PORT_READY, 1); // no such port: ignored
    expect(c.received()).toEqual([]);
    const k = await client(r.ports[1]!.path);
    await r.pump(() => c.received().some((m) => m[0] === 2 && m[1] === CONSOLE_CTRL.PORT_OPEN && m[2] === 1 && !!m), "PORT_OPEN 1");
    k.sock.destroy();
    const seen: [number, number, number, string?][] = [];
    await r.pump(() => { seen.push(...c.received()); return seen.length > 0; }, "PORT_OPEN 0");
    expect(seen).toEqual([[2, CONSOLE_CTRL.PORT_OPEN, 0]]);
    // a new client is announced again
    const k2 = await client(r.ports[1]!.path);
    await r.pump(() => { seen.push(...c.received()); return seen.length > 1; }, "PORT_OPEN 1 again");
    expect(seen[1]).toEqual([2, CONSOLE_CTRL.PORT_OPEN, 1]);
    k2.sock.destroy();
  });

  test("control messages wait for c_ivq buffers (one buffer at a time)", () => {
    const r = rig([{ id: 0, name: "a" }, { id: 1, name: "b" }]);
    const d = r.bringUp();
    const c = controller(r, d);
    c.send(0, CONSOLE_CTRL.DEVICE_READY, 1); // no buffers yet
    const got: [number, number, number, string?][] = [];
    for (let i = 0; i < 4; i++) { c.post(1); got.push(...c.received()); }
    expect(got).toEqual([[0, CONSOLE_CTRL.DEVICE_ADD, 1], [1, CONSOLE_CTRL.DEVICE_ADD, 1]]);
    c.send(1, CONSOLE_CTRL.PORT_READY, 1);
    expect(c.received()).toEqual([[1, CONSOLE_CTRL.PORT_NAME, 1, "b"]]);
  });

  test("data both ways through a real Unix socket client; input waits for guest buffers and an open port (no loss)", async () => {
    const r = rig([{ id: 1, name: "org.example.x" }]);
    const d = r.bringUp();
    const c = controller(r, d);
    c.post(16);
    c.send(0, CONSOLE_CTRL.DEVICE_READY, 1);
    c.send(1, CONSOLE_CTRL.PORT_READY, 1);
    const k = await client(r.ports[0]!.path);
    await r.pump(() => c.received().some((m) => m[1] === CONSOLE_CTRL.PORT_OPEN && m[2] === 1), "PORT_OPEN");
    // guest → host
    sendTx(r, d, 1, [new TextEncoder().encode("hello "), new TextEncoder().encode("host\n")]);
    expect(d[txQueue(1)]!.collect().map((u) => u.len)).toEqual([0, 0]);
    await r.pump(() => k.data() === "hello host\n", "guest output at the client");
    // host → guest: 10000 bytes sent before the guest opened the port or posted buffers
    const input = pattern(10000, 7);
    k.sock.write(input);
    const addrs = new Map<number, number>();
    for (let i = 0; i < 20; i++) { r.round(); await Bun.sleep(2); }
    expect(d[rxQueue(1)]!.usedIdx()).toBe(0);
    postRx(r, d, 1, 4, 1000, addrs); // buffers, but the port is not open in the guest
    for (let i = 0; i < 20; i++) { r.round(); await Bun.sleep(2); }
    expect(d[rxQueue(1)]!.usedIdx()).toBe(0);
    c.send(1, CONSOLE_CTRL.PORT_OPEN, 1);
    const got: Uint8Array[] = [];
    await r.pump(() => { got.push(takeRx(r, d, 1, addrs)); return got.reduce((a, g) => a + g.length, 0) === 4000; }, "4 buffers filled");
    for (let i = 0; i < 20; i++) { r.round(); await Bun.sleep(1); }
    expect(takeRx(r, d, 1, addrs).length).toBe(0); // no more buffers: nothing more read
    // the rest: one more buffer whenever the last one came back (a buffer may be filled only in part)
    let out = 0;
    await r.pump(() => {
      const g = takeRx(r, d, 1, addrs);
      if (g.length) { got.push(g); out = 0; }
      if (got.reduce((a, x) => a + x.length, 0) >= 10000) return true;
      if (out === 0) { postRx(r, d, 1, 1, 1500, addrs); out = 1; }
      return false;
    }, "the rest");
    const all = new Uint8Array(10000);
    let o = 0;
    for (const g of got) { all.set(g, o); o += g.length; }
    expect(o).toBe(10000);
    expect(Buffer.from(all).equals(Buffer.from(input))).toBe(true);
    k.sock.destroy();
    await r.pump(() => c.received().some((m) => m[0] === 1 && m[1] === CONSOLE_CTRL.PORT_OPEN && m[2] === 0), "PORT_OPEN 0");
  });

  test("a client that does not read: output backs up without blocking, nothing lost; without a client output is dropped", async () => {
    const r = rig([{ id: 0, name: "bulk" }]);
    const d = r.bringUp();
    const c = controller(r, d);
    c.post(8);
    c.send(0, CONSOLE_CTRL.DEVICE_READY, 1);
    c.send(0, CONSOLE_CTRL.PORT_READY, 1);
    // no client: output is dropped (and the chain returned)
    sendTx(r, d, 0, [new TextEncoder().encode("lost")]);
    expect(d[txQueue(0)]!.collect().length).toBe(1);
    expect(r.platform.logs.some((l) => l.includes("dropped"))).toBe(true);
    const k = await client(r.ports[0]!.path);
    k.sock.pause();
    await r.pump(() => c.received().some((m) => m[1] === CONSOLE_CTRL.PORT_OPEN && m[2] === 1), "PORT_OPEN");
    // 2 MiB in 32 KiB chains: more than the socket buffers hold
    const total = 2 * MiB, chunk = 32 * 1024;
    const data = pattern(total, 3);
    const tx = d[txQueue(0)]!;
    let queued = 0, returned = 0;
    const t0 = Date.now();
    const feed = () => {
      returned += tx.collect().length;
      let added = 0;
      while (queued < total && (queued / chunk) - returned < 32) {
        // 40 buffer slots at 64 MiB, reused (at most 32 chains are out at a time)
        tx.add([{ len: chunk, data: data.subarray(queued, queued + chunk), addr: 64 * MiB + ((queued / chunk) % 40) * chunk }]);
        queued += chunk;
        added++;
      }
      if (added && tx.publish()) r.kick(txQueue(0));
    };
    feed();
    for (let i = 0; i < 50; i++) { feed(); r.round(); }
    expect(Date.now() - t0).toBeLessThan(2000); // never waited on the socket
    expect(returned * chunk).toBeLessThan(total); // the guest is held up by its queue, not by us
    k.sock.resume();
    await r.pump(() => { feed(); return k.bytes().length >= total; }, "all output at the client", 10000);
    expect(k.bytes().length).toBe(total);
    expect(Buffer.from(k.bytes()).equals(Buffer.from(data))).toBe(true);
    k.sock.destroy();
  });

  test("bhyve's 16 ports: port 15 (virtqueues 32 and 33 of 34) carries data both ways; queues past 31 also run from pending bits", async () => {
    const r = rig([{ id: 0, name: "first" }, { id: 15, name: "last" }]);
    expect(r.nq).toBe(34);
    expect(r.cfg(4, 4)).toBe(16); // max_nr_ports
    const d = r.bringUp();
    const c = controller(r, d);
    c.post(16);
    c.send(0, CONSOLE_CTRL.DEVICE_READY, 1);
    expect(c.received()).toEqual([[0, CONSOLE_CTRL.DEVICE_ADD, 1], [15, CONSOLE_CTRL.DEVICE_ADD, 1]]);
    c.send(15, CONSOLE_CTRL.PORT_READY, 1);
    expect(c.received()).toEqual([[15, CONSOLE_CTRL.PORT_NAME, 1, "last"]]);
    const k = await client(r.ports[1]!.path);
    await r.pump(() => c.received().some((m) => m[0] === 15 && m[1] === CONSOLE_CTRL.PORT_OPEN && m[2] === 1), "PORT_OPEN 15");
    c.send(15, CONSOLE_CTRL.PORT_OPEN, 1);
    sendTx(r, d, 15, [new TextEncoder().encode("from port 15\n")]);
    await r.pump(() => k.data() === "from port 15\n", "port 15 output");
    // the transmit queue (33) notified without an eventfd: the transport's pending bit for queue 33
    const tx = d[txQueue(15)]!;
    tx.add([{ len: 5, data: new TextEncoder().encode("more\n") }]);
    tx.publish();
    const fn = r.io;
    expect(fn.deadline()).toBe(Infinity);
    fn.transport.reschedule(txQueue(15));
    expect(fn.deadline()).toBe(0);
    fn.expire();
    expect(fn.deadline()).toBe(Infinity);
    await r.pump(() => k.data() === "from port 15\nmore\n", "output through the pending bit");
    expect(await hostToGuest(r, d, k.sock, 15, "to 15\n")).toBe("to 15\n");
    k.sock.destroy();
  });

  test("without MULTIPORT: port 0 only, data both ways, no control queues", async () => {
    const r = rig([{ id: 0 }]);
    const d = r.bringUp(false);
    const k = await client(r.ports[0]!.path);
    await r.pump(() => { r.round(); return true; }, "accept");
    for (let i = 0; i < 5; i++) { r.round(); await Bun.sleep(2); }
    sendTx(r, d, 0, [new TextEncoder().encode("plain\n")]);
    await r.pump(() => k.data() === "plain\n", "output");
    expect(await hostToGuest(r, d, k.sock, 0, "in\n")).toBe("in\n");
    k.sock.destroy();
  });
});
