/**
 * virtio-console (virtio 1.2 §5.3), device type 3, transitional PCI ID 1AF4:1003, class "other simple
 * communications" (07 80). bhyve's device: ports with a name and a host end (a Unix socket tsbhyve creates
 * and listens on, one client at a time; tsbhyve also takes any chardev: pty, tcp=..., a tty), at most 16
 * as in bhyve (see CONSOLE_MAX_PORTS), VIRTIO_CONSOLE_F_MULTIPORT only: no CONSOLE_PORT (no hvc console), no
 * SIZE/resize, no EMERG_WRITE.
 *
 * Queues (§5.3.2): port 0 receiveq 0 / transmitq 1, control receiveq (c_ivq) 2 / control transmitq
 * (c_ovq) 3, port N ≥ 1 at 2N+2 / 2N+3. max_nr_ports (config offset 4) = highest port number + 1, so
 * numbers may be sparse. Without MULTIPORT negotiated only port 0 works (no control queues).
 *
 * Control protocol (§5.3.6.2), struct virtio_console_control { le32 id; le16 event; le16 value; }:
 *   driver DEVICE_READY(1) → device DEVICE_ADD(id) for every port;
 *   driver PORT_READY(id, 1) → device PORT_NAME(id) + name bytes (when the port has a name), then
 *   PORT_OPEN(id, 1) while a host client is connected (always, for a backend that needs no client);
 *   a client that connects / goes away later → PORT_OPEN(id, 1 / 0);
 *   driver PORT_OPEN(id, 0/1): the guest closed / opened its end (we deliver input only while open:
 *   Linux discards data arriving at a port nobody has open).
 * Control messages are not queued as bytes: each port's protocol state (added, ready, name sent, open
 * value sent) lives in shared state and the next due message is generated whenever c_ivq has a buffer.
 *
 * Data:
 * - guest → host (transmitq): each chain's bytes go to the host end with Chardev.write (never blocks).
 *   What the socket does not take now is copied into the port's backlog (shared state, TX_BACKLOG bytes)
 *   and the chain is returned; no further chain is taken until the backlog has drained (POLLOUT), so a
 *   slow client holds the guest up by its own queue filling, not by the I/O Worker waiting. Bytes of one
 *   chain beyond the backlog's room (a chain > 32 KiB arriving at a full socket; Linux sends ≤ 32 KiB
 *   per write) are dropped and counted. With no client connected, output is dropped, as bhyve does.
 * - host → guest (receiveq): the client socket is read only when the guest has posted receive buffers
 *   and has the port open; what one read brings (≤ RX_HOLD bytes) and does not fit the chain at hand is
 *   held in shared state for the next buffer. Nothing read is lost; unread input waits in the socket.
 * - a client hang-up seen while the guest is not reading: if the guest has the port closed, disconnect
 *   at once; if open, the socket's unread bytes go to the guest first (up to RX_HOLD are read into the
 *   hold buffer at once, so a hang-up with nothing unread disconnects at once; more waits for buffers).
 *
 * Threads: the queues run on the I/O Worker (queue eventfds, through the transport); the host ends are
 * polled there too (`pollSources`: listening socket, client input while the guest can take it, client
 * output while a backlog waits). Everything mutable is in shared state blocks, guarded by the function's
 * lock; device reset keeps the host connections and undelivered host input.
 */
import type { ChardevHandle } from "../../chardev/index.ts";
import { Chardev, CHARDEV_STATE, GONE, POLLNVAL } from "../../chardev/index.ts";
import type { AccessSize, DeviceContext, PollSource } from "../../devices/device.ts";
import { defineLayout, type StateBlock } from "../../devices/state.ts";
import type { PciEmulation } from "../../pci/registry-types.ts";
import { POLLERR, POLLHUP, POLLIN, POLLOUT } from "../../vmm/index.ts";
import { notifyKey } from "../notify.ts";
import { createVirtioPci, VIRTIO_STATUS, type VirtioDeviceModel, type VirtioPciFunction, type VirtioPciInput, type VirtioTransport } from "../pci.ts";
import { pciWhere, virtioPciInput } from "../emulation.ts";
import { readChain, segmentViews, writeChain } from "../queue.ts";
import { configRead, configWrite } from "../config-space.ts";

export const VIRTIO_ID_CONSOLE = 3;
/** VIRTIO_CONSOLE_F_MULTIPORT (bit 1) */
export const CONSOLE_F_MULTIPORT = 1n << 1n;
/** Control events (§5.3.6.2). */
export const CONSOLE_CTRL = {
  DEVICE_READY: 0, DEVICE_ADD: 1, DEVICE_REMOVE: 2, PORT_READY: 3, CONSOLE_PORT: 4, RESIZE: 5, PORT_OPEN: 6, PORT_NAME: 7,
} as const;
export const CONSOLE_CONFIG_BYTES = 12;
export const CONSOLE_QUEUE_SIZE = 64;
export const C_IVQ = 2, C_OVQ = 3;
/** Guest output held for a slow client, per port. */
export const TX_BACKLOG = 32 * 1024;
/** Largest host read (and so the most input held for the next receive buffer), per port. */
export const RX_HOLD = 4096;
/** Chains one run handles before it reschedules itself. */
const BUDGET = 256;

export const rxQueue = (id: number): number => (id === 0 ? 0 : 2 * id + 2);
export const txQueue = (id: number): number => rxQueue(id) + 1;
/** Queues for max_nr_ports ports (with MULTIPORT: receive/transmit per port plus the control pair). */
export const consoleQueueCount = (maxNrPorts: number): number => 2 * maxNrPorts + 2;

export interface ConsolePortTable { name?: string; path: string }
/** The port.N tables of a resolved virtio-console table, by number. */
export function consolePorts(table: Record<string, unknown>): [number, ConsolePortTable][] {
  const ports = (table.port ?? {}) as Record<string, ConsolePortTable>;
  return Object.entries(ports).map(([n, p]) => [Number(n), p] as [number, ConsolePortTable]).sort((a, b) => a[0] - b[0]);
}
/** max_nr_ports for a table: highest port number + 1 (at least 1). */
export function consoleMaxNrPorts(table: Record<string, unknown>): number {
  return Math.max(1, ...consolePorts(table).map(([n]) => n + 1));
}

const deviceLayout = defineLayout("virtio-console", 1, {
  /** the driver sent DEVICE_READY(1) */
  deviceReady: "u8",
});

const portLayout = defineLayout("virtio-console-port", 1, {
  ...CHARDEV_STATE,
  /** DEVICE_ADD sent */
  added: "u8",
  /** PORT_READY(1) received */
  ready: "u8",
  nameSent: "u8",
  /** the PORT_OPEN value last sent (0 before any) */
  openSent: "u8",
  /** the guest has the port open (its PORT_OPEN) */
  guestOpen: "u8",
  /** the client hung up while the guest was not reading: disconnect once its input is read */
  hup: "u8",
  /** the client's input / output is in the I/O Worker's poll set */
  rxWatched: "u8",
  txWatched: "u8",
  /** host input read but not yet delivered: rx[0, rxLen) */
  rxLen: "u32",
  /** guest output not yet written: tx[txOff, txLen) */
  txOff: "u32",
  txLen: "u32",
  /** guest output bytes dropped (no client, or beyond the backlog) */
  dropped: "f64",
  rx: { type: "u8", count: RX_HOLD },
  tx: { type: "u8", count: TX_BACKLOG },
});
type PortState = StateBlock<typeof portLayout.spec>["s"];

export interface ConsolePortInput {
  id: number;
  name?: string;
  /** the host end opened on the main thread (undefined: no host end, output dropped) */
  handle?: ChardevHandle;
}

interface Port {
  id: number;
  name?: Uint8Array;
  cd?: Chardev;
  s: PortState;
}

export class ConsoleDevice {
  t!: VirtioTransport;
  readonly ports: Port[];
  readonly maxNrPorts: number;
  private readonly dev: StateBlock<typeof deviceLayout.spec>["s"];
  private readonly byId = new Map<number, Port>();
  /** per-thread scratch (holds nothing between calls) */
  private readonly scratch = new Uint8Array(Math.max(RX_HOLD, TX_BACKLOG));
  private readonly touched = new Set<number>();
  private readonly config = new DataView(new ArrayBuffer(CONSOLE_CONFIG_BYTES));

  constructor(private readonly ctx: DeviceContext, ports: readonly ConsolePortInput[], private readonly log: (msg: string) => void = (m) => ctx.platform.log(m)) {
    this.maxNrPorts = Math.max(1, ...ports.map((p) => p.id + 1));
    this.dev = ctx.arena.alloc(deviceLayout).s;
    this.ports = [...ports].sort((a, b) => a.id - b.id).map((p) => {
      const s = ctx.arena.alloc(portLayout).s;
      const port: Port = { id: p.id, s, name: p.name === undefined ? undefined : new TextEncoder().encode(p.name), cd: p.handle ? new Chardev(p.handle, s) : undefined };
      this.byId.set(p.id, port);
      return port;
    });
    this.config.setUint32(4, this.maxNrPorts, true);
  }

  model(): VirtioDeviceModel {
    return {
      type: VIRTIO_ID_CONSOLE,
      model: "virtio-console",
      classCode: 0x07_80_00,
      queueSizes: Array.from({ length: consoleQueueCount(this.maxNrPorts) }, () => CONSOLE_QUEUE_SIZE),
      features: CONSOLE_F_MULTIPORT,
      configSize: CONSOLE_CONFIG_BYTES,
      configRead: (off, size: AccessSize) => configRead(this.config, off, size),
      configWrite: () => {}, // emerg_wr: EMERG_WRITE is not offered
      processQueue: (q, t) => { this.t = t; this.run(q); },
      reset: () => this.reset(),
      pollSources: () => this.pollSources(),
    };
  }

  // ---------------------------------------------------------------------------------------------
  // state

  /** Device reset (lock held): the driver's view is forgotten; connections and held input stay. */
  private reset(): void {
    this.dev.deviceReady = 0;
    for (const p of this.ports) {
      const s = p.s;
      s.added = s.ready = s.nameSent = s.openSent = s.guestOpen = 0;
    }
  }

  private get live(): boolean {
    return !!this.t && (this.t.status & (VIRTIO_STATUS.DRIVER_OK | VIRTIO_STATUS.NEEDS_RESET)) === VIRTIO_STATUS.DRIVER_OK;
  }

  private get multiport(): boolean { return (this.t.negotiated & CONSOLE_F_MULTIPORT) !== 0n; }

  /** The guest takes input on this port now. */
  private receiving(p: Port): boolean {
    if (!this.live) return false;
    return this.multiport ? p.s.ready === 1 && p.s.guestOpen === 1 : p.id === 0;
  }

  /** Host end connected (a listening socket's client; other backends always). */
  private hostOpen(p: Port): number { return p.cd?.connected ? 1 : 0; }

  /** The I/O Worker should watch the client's input: the guest can take some and none is held. */
  private canRead(p: Port): boolean {
    if (!p.cd || p.cd.inFd() < 0 || p.s.rxLen > 0 || !this.receiving(p)) return false;
    return this.t.queue(rxQueue(p.id)).pending() > 0;
  }

  private wake(): void { this.ctx.platform.wakeIo(); }

  // ---------------------------------------------------------------------------------------------
  // queues (lock held)

  private run(q: number): void {
    if (q === C_IVQ) { if (this.multiport) this.flushControl(); }
    else if (q === C_OVQ) { if (this.multiport) this.readControl(); else this.discardTx(q); } // no MULTIPORT: the queue does not exist; give buffers back
    else {
      const id = q < 2 ? 0 : (q - 2) >> 1;
      const p = this.byId.get(id);
      if (p && (id === 0 || this.multiport)) {
        if (q === rxQueue(id)) { this.deliverRx(p); this.watchRx(p); } else this.sendTx(p);
      } else if (q !== rxQueue(id)) {
        this.discardTx(q);
      }
    }
    this.finish();
  }

  /** Interrupt for every queue used in this run. */
  private finish(): void {
    if (!this.live) { this.touched.clear(); return; }
    for (const q of this.touched) if (this.t.queue(q).needsInterrupt()) this.t.interruptQueue(q);
    this.touched.clear();
  }

  /** A transmit queue of a port that does not exist: return its chains. */
  private discardTx(q: number): void {
    const vq = this.t.queue(q);
    for (let c = vq.pop(), n = 0; c && n < BUDGET; c = vq.pop(), n++) { vq.push(c.head, 0); this.touched.add(q); }
  }

  /** Send the control messages that are due, while c_ivq has buffers. */
  private flushControl(): void {
    if (!this.live || !this.multiport) return;
    const vq = this.t.queue(C_IVQ);
    const send = (id: number, event: number, value: number, extra?: Uint8Array): boolean => {
      const c = vq.pop();
      if (!c) return false;
      const msg = new Uint8Array(8 + (extra?.length ?? 0));
      const dv = new DataView(msg.buffer);
      dv.setUint32(0, id, true);
      dv.setUint16(4, event, true);
      dv.setUint16(6, value, true);
      if (extra) msg.set(extra, 8);
      if (c.writableBytes < msg.length) this.log(`virtio-console: control buffer of ${c.writableBytes} bytes too small for event ${event} (${msg.length} bytes)`);
      vq.push(c.head, writeChain(this.t.mem, c, msg));
      this.touched.add(C_IVQ);
      return true;
    };
    for (const p of this.ports) {
      const s = p.s;
      if (this.dev.deviceReady && !s.added) {
        if (!send(p.id, CONSOLE_CTRL.DEVICE_ADD, 1)) return;
        s.added = 1;
      }
      if (!s.ready) continue;
      if (p.name && !s.nameSent) {
        if (!send(p.id, CONSOLE_CTRL.PORT_NAME, 1, p.name)) return;
        s.nameSent = 1;
      }
      const open = this.hostOpen(p);
      if (open !== s.openSent) {
        if (!send(p.id, CONSOLE_CTRL.PORT_OPEN, open)) return;
        s.openSent = open;
      }
    }
  }

  /** Messages from the driver on c_ovq. */
  private readControl(): void {
    const vq = this.t.queue(C_OVQ);
    for (let done = 0; done < BUDGET; done++) {
      const c = vq.pop();
      if (!c) break;
      const m = readChain(this.t.mem, c, 8);
      vq.push(c.head, 0);
      this.touched.add(C_OVQ);
      if (m.length < 8) continue;
      const dv = new DataView(m.buffer);
      this.control(dv.getUint32(0, true), dv.getUint16(4, true), dv.getUint16(6, true));
    }
    this.flushControl();
  }

  private control(id: number, event: number, value: number): void {
    if (event === CONSOLE_CTRL.DEVICE_READY) {
      if (value === 1) this.dev.deviceReady = 1;
      else this.log("virtio-console: the driver failed to set up the device (DEVICE_READY 0)");
      return;
    }
    const p = this.byId.get(id);
    if (!p) return; // a port we never added
    if (event === CONSOLE_CTRL.PORT_READY) {
      if (value === 1 && p.s.added) p.s.ready = 1;
      else if (value !== 1) this.log(`virtio-console: the driver failed to add port ${id} (PORT_READY 0)`);
    } else if (event === CONSOLE_CTRL.PORT_OPEN) {
      p.s.guestOpen = value ? 1 : 0;
      if (value) { this.deliverRx(p); this.watchRx(p); }
    }
  }

  /** Host input into the port's receive buffers (held bytes first, then reads, while buffers last). */
  private deliverRx(p: Port): void {
    if (!this.receiving(p)) return;
    const s = p.s, q = rxQueue(p.id), vq = this.t.queue(q);
    for (let done = 0; ; done++) {
      if (done >= BUDGET) { this.t.reschedule(q); return; }
      let data: Uint8Array;
      const held = s.rxLen > 0;
      if (held) data = s.rx.subarray(0, s.rxLen);
      else {
        if (!p.cd || p.cd.inFd() < 0 || vq.pending() === 0) return;
        const n = p.cd.read(this.scratch.subarray(0, RX_HOLD));
        if (n === GONE) { this.disconnected(p); return; }
        if (n === 0) return;
        data = this.scratch.subarray(0, n);
      }
      const c = vq.pop();
      if (!c) {
        if (!held) { s.rx.set(data, 0); s.rxLen = data.length; }
        return;
      }
      const w = writeChain(this.t.mem, c, data);
      vq.push(c.head, w);
      this.touched.add(q);
      if (held) { s.rx.copyWithin(0, w, s.rxLen); s.rxLen -= w; }
      else if (w < data.length) { s.rx.set(data.subarray(w), 0); s.rxLen = data.length - w; }
    }
  }

  /** Guest output: flush the backlog, then take chains while the host end keeps up. */
  private sendTx(p: Port): void {
    if (!this.live) return;
    const s = p.s, q = txQueue(p.id), vq = this.t.queue(q);
    if (!this.flushTx(p)) { vq.disableNotify(); this.watchTx(p); return; }
    vq.disableNotify();
    for (let done = 0; ;) {
      const c = vq.pop();
      if (!c) {
        if (vq.enableNotify()) continue; // more arrived while notifications were off
        return;
      }
      this.touched.add(q);
      let written = 0;
      if (p.cd && p.cd.outFd() >= 0) {
        const views = segmentViews(this.t.mem, c.readable);
        let i = 0, off = 0;
        for (; i < views.length; i++, off = 0) {
          const v = views[i]!;
          while (off < v.length) {
            const n = p.cd.write(v.subarray(off));
            if (n === GONE || n === 0) break;
            off += n;
            written += n;
          }
          if (off < v.length) break;
        }
        if (i < views.length && p.cd.outFd() >= 0) {
          // blocked: keep the rest (the backlog is empty here)
          let room = TX_BACKLOG, at = 0;
          for (; i < views.length && room > 0; i++, off = 0) {
            const part = views[i]!.subarray(off, off + room);
            s.tx.set(part, at);
            at += part.length;
            room -= part.length;
          }
          s.txOff = 0;
          s.txLen = at;
          written += at;
        } else if (i < views.length) {
          this.disconnected(p);
        }
      }
      if (written < c.readableBytes) this.drop(p, c.readableBytes - written);
      vq.push(c.head, 0);
      if (s.txLen > s.txOff) { this.watchTx(p); return; } // wait for POLLOUT (notifications stay off)
      if (++done >= BUDGET) { vq.enableNotify(); this.t.reschedule(q); return; }
    }
  }

  /** Write the backlog; true when it is empty. */
  private flushTx(p: Port): boolean {
    const s = p.s;
    while (s.txOff < s.txLen) {
      if (!p.cd || p.cd.outFd() < 0) { this.drop(p, s.txLen - s.txOff); s.txOff = s.txLen = 0; break; }
      const n = s.txLen - s.txOff;
      this.scratch.set(s.tx.subarray(s.txOff, s.txLen), 0); // write from private memory, not the shared buffer
      const w = p.cd.write(this.scratch.subarray(0, n));
      if (w === GONE) { this.disconnected(p); break; }
      if (w === 0) return false;
      s.txOff += w;
    }
    s.txOff = s.txLen = 0;
    return true;
  }

  private drop(p: Port, n: number): void {
    if (p.s.dropped === 0) this.log(`virtio-console: port ${p.id}: guest output dropped (${p.cd ? "no client connected" : "no host end"}); counting from here`);
    p.s.dropped += n;
  }

  /** The client went away (or the output failed): unsent output goes, the guest is told. */
  private disconnected(p: Port): void {
    if (p.cd?.listening) p.cd.disconnect();
    p.s.txOff = p.s.txLen = 0;
    p.s.hup = 0;
    this.flushControl();
    this.wake();
  }

  /** Make sure the I/O Worker watches the client's input when the guest can take some. */
  private watchRx(p: Port): void {
    if (!p.s.rxWatched && this.canRead(p)) this.wake();
  }

  private watchTx(p: Port): void {
    if (!p.s.txWatched) this.wake();
  }

  // ---------------------------------------------------------------------------------------------
  // I/O Worker

  pollSources(): PollSource[] {
    const out: PollSource[] = [];
    const lock = this.t.fn.lock;
    lock.acquire();
    try {
      for (const p of this.ports) {
        const cd = p.cd, s = p.s;
        if (!cd) continue;
        const lfd = cd.listenFd();
        if (lfd >= 0) out.push({ fd: lfd, events: POLLIN, ready: (r) => this.locked(() => this.onListen(p, r)) });
        const ifd = cd.inFd();
        s.rxWatched = 0;
        if (ifd >= 0 && this.canRead(p)) {
          s.rxWatched = 1;
          out.push({ fd: ifd, events: POLLIN, ready: () => this.locked(() => this.onInput(p, ifd)) });
        } else if (ifd >= 0 && cd.listening && !s.hup) {
          out.push({ fd: ifd, events: 0, ready: (r) => this.locked(() => this.onIdle(p, ifd, r)) });
        }
        const ofd = cd.outFd();
        s.txWatched = 0;
        if (ofd >= 0 && s.txLen > s.txOff) {
          s.txWatched = 1;
          out.push({ fd: ofd, events: POLLOUT, ready: () => this.locked(() => this.onWritable(p, ofd)) });
        }
      }
    } finally { lock.release(); }
    return out;
  }

  private locked(fn: () => boolean): boolean {
    const lock = this.t.fn.lock;
    lock.acquire();
    try { return fn(); } finally { this.finish(); lock.release(); }
  }

  private onListen(p: Port, revents: number): boolean {
    const cd = p.cd!;
    if (revents & (POLLNVAL | POLLERR)) { cd.listenFailed(); return false; }
    if (cd.acceptPending()) {
      p.s.hup = 0;
      this.flushControl();
      this.wake(); // watch the new client
    }
    return true;
  }

  private onInput(p: Port, fd: number): boolean {
    if (p.cd!.inFd() !== fd) return false;
    this.deliverRx(p);
    return this.canRead(p);
  }

  /** The client while the guest is not reading: only a hang-up matters. */
  private onIdle(p: Port, fd: number, revents: number): boolean {
    if (p.cd!.inFd() !== fd) return false;
    if (!(revents & (POLLHUP | POLLERR | POLLNVAL))) return true;
    const s = p.s;
    if (!this.live || !(this.multiport ? s.guestOpen === 1 : p.id === 0)) { this.disconnected(p); return false; }
    // The guest has the port open but no buffers: its unread input goes first. Take what fits the hold
    // buffer now (end of input → disconnect at once); the rest waits for buffers (then POLLIN, then EOF).
    if (s.rxLen === 0) {
      const n = p.cd!.read(this.scratch.subarray(0, RX_HOLD));
      if (n === GONE) { this.disconnected(p); return false; }
      s.rx.set(this.scratch.subarray(0, n), 0);
      s.rxLen = n;
    }
    s.hup = 1;
    return false;
  }

  private onWritable(p: Port, fd: number): boolean {
    if (p.cd!.outFd() !== fd) return false;
    if (!this.flushTx(p)) return true;
    this.sendTx(p);
    return p.s.txLen > p.s.txOff;
  }
}

/** The transport's input plus the device's own. */
export interface ConsoleInput extends VirtioPciInput {
  ports: readonly ConsolePortInput[];
  log?: (msg: string) => void;
}

/** The PCI function of a virtio-console (its socket sources reach the I/O Worker through the model). */
export function createConsole(inp: ConsoleInput): { fn: VirtioPciFunction; console: ConsoleDevice } {
  const con = new ConsoleDevice(inp.ctx, inp.ports, inp.log);
  const fn = createVirtioPci(inp, con.model());
  con.t = fn.transport;
  return { fn, console: con };
}

export const virtioConsole: PciEmulation = {
  doc: "virtio console: transitional 1af4:1003 (modern + legacy), MULTIPORT, ports 0-14 (port.N.name, port.N.path: a Unix socket tsbhyve listens on, or a chardev); pcireg.* overrides",
  describe: (addr) => [{ addr, intPin: 1, model: "virtio-console" }],
  create(inp) {
    const where = pciWhere(inp);
    const handles = inp.prepared.consolePorts?.[notifyKey(inp.addr)] ?? [];
    const ports = consolePorts(inp.table).map(([id, p]) => ({ id, name: p.name, handle: handles[id] }));
    return [createConsole({
      ...virtioPciInput(inp),
      ports,
      log: (m) => inp.ctx.platform.log(`${where}: ${m}`),
    }).fn];
  },
};
