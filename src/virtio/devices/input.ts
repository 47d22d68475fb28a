/**
 * virtio-input (virtio 1.2 §5.8), device type 18, modern-only PCI ID 1AF4:1052, class "input device,
 * other" (09 80). bhyve's device mirrors a host evdev device (`path = "/dev/input/eventN"`); tsbhyve
 * also has built-in models with no host device (`model = "keyboard"` or `"tablet"`), whose events come
 * from inside tsbhyve (injectInputEvents: the VNC server of a later issue).
 *
 * Queues: eventq 0 (device → driver: one struct virtio_input_event {le16 type; le16 code; le32 value}
 * per device-writable buffer) and statusq 1 (driver → device, same record: LED changes and the like).
 *
 * Configuration (struct virtio_input_config, 136 bytes): the driver writes select (offset 0) and subsel
 * (offset 1), then reads size (offset 2) and the union at offset 8 (at most 128 bytes):
 *   ID_NAME 0x01 / ID_SERIAL 0x02: a string (no NUL); ID_DEVIDS 0x03: le16 bustype, vendor, product,
 *   version; PROP_BITS 0x10: the INPUT_PROP_* bitmap; EV_BITS 0x11 with subsel = an event type: the code
 *   bitmap of that type (size 0 = type not supported); ABS_INFO 0x12 with subsel = an axis: le32 min,
 *   max, fuzz, flat, res. Anything else: size 0. A bitmap's size is up to its last non-zero byte.
 *
 * Identity: for a host device, taken on the main thread with the EVIOCG* ioctls (probeEvdev) and passed
 * to the Workers as plain data; for a model, fixed here (inputModelIdentity).
 *
 * Events: every event, host or injected, goes through a ring of RING_EVENTS records in shared state;
 * the ring drains into eventq buffers while the driver has posted some, so nothing is lost while the
 * guest is slow. A full ring drops its oldest record (counted). A device reset empties it (the events
 * were for a driver that is gone). The host device is read on the I/O Worker (its fd in the poll set)
 * as struct input_event records (x86-64: 16 bytes of timeval, then le16 type, le16 code, le32 value).
 * statusq events are written back to a host device opened read-write (LED state), else ignored.
 *
 * Threads: queues and the host fd run on the I/O Worker; injectInputEvents may be called from any
 * thread that built the device (it takes the function's lock, queues, and asks the I/O Worker to run
 * eventq). Everything mutable is in one shared state block guarded by the function's lock.
 */
import type { AccessSize, DeviceContext, PollSource } from "../../devices/device.ts";
import { defineLayout, type StateBlock } from "../../devices/state.ts";
import type { PciAddress } from "../../pci/function.ts";
import type { PciEmulation } from "../../pci/registry-types.ts";
import { DISK_OPEN_RDONLY, host, POLLERR, POLLHUP, POLLIN } from "../../vmm/index.ts";
import { notifyKey } from "../notify.ts";
import { createVirtioPci, VIRTIO_STATUS, type VirtioDeviceModel, type VirtioPciFunction, type VirtioPciInput, type VirtioTransport } from "../pci.ts";
import { pciWhere, virtioPciInput } from "../emulation.ts";
import { readChain, writeChain } from "../queue.ts";
import { configRead, configWrite } from "../config-space.ts";

export const VIRTIO_ID_INPUT = 18;
export const EVENTQ = 0, STATUSQ = 1;
export const INPUT_QUEUE_SIZE = 64;
/** Records the ring holds while the guest has no buffers. */
export const RING_EVENTS = 256;
/** struct virtio_input_config: select, subsel, size, reserved[5], union u[128]. */
export const INPUT_CONFIG_BYTES = 136;
export const INPUT_CFG_PAYLOAD = 128;
export const INPUT_CFG = { UNSET: 0x00, ID_NAME: 0x01, ID_SERIAL: 0x02, ID_DEVIDS: 0x03, PROP_BITS: 0x10, EV_BITS: 0x11, ABS_INFO: 0x12 } as const;
/** Event types (linux/input-event-codes.h). */
export const EV = { SYN: 0x00, KEY: 0x01, REL: 0x02, ABS: 0x03, MSC: 0x04, SW: 0x05, LED: 0x11, SND: 0x12, REP: 0x14, FF: 0x15, PWR: 0x16, FF_STATUS: 0x17, MAX: 0x1f } as const;
export const SYN_REPORT = 0;
export const KEY_H = 35;
export const BTN_LEFT = 0x110, BTN_RIGHT = 0x111, BTN_MIDDLE = 0x112;
export const ABS_X = 0x00, ABS_Y = 0x01;
export const LED_NUML = 0, LED_CAPSL = 1, LED_SCROLLL = 2;
export const BUS_VIRTUAL = 0x06;
/** Built-in tablet axis range. */
export const TABLET_MAX = 32767;
/** sizeof(struct input_event) on x86-64 */
export const HOST_EVENT_BYTES = 24;
const BUDGET = 256;

export interface AbsInfo { min: number; max: number; fuzz: number; flat: number; res: number }
export interface InputIds { bustype: number; vendor: number; product: number; version: number }
/** What the device says about itself (plain data: crosses to the Workers through Prepared). */
export interface InputIdentity {
  name: string;
  serial: string;
  ids: InputIds;
  /** INPUT_PROP_* bitmap bytes */
  props: number[];
  /** event type → code bitmap bytes */
  ev: Record<number, number[]>;
  /** axis → its range */
  abs: Record<number, AbsInfo>;
}
export type InputModel = "keyboard" | "tablet";
export const INPUT_MODELS: readonly InputModel[] = ["keyboard", "tablet"];
export interface InputEvent { type: number; code: number; value: number }

/** A bitmap (bytes) with the given bits set. */
export function bitmap(bits: Iterable<number>): number[] {
  const out: number[] = [];
  for (const b of bits) {
    const i = b >> 3;
    while (out.length <= i) out.push(0);
    out[i]! |= 1 << (b & 7);
  }
  return out;
}
const range = (a: number, b: number): number[] => Array.from({ length: b - a + 1 }, (_, i) => a + i);

/** The fixed identity of a built-in model. */
export function inputModelIdentity(model: InputModel, name?: string, serial?: string): InputIdentity {
  if (model === "keyboard") {
    return {
      name: name ?? "tsbhyve virtio keyboard", serial: serial ?? "",
      ids: { bustype: BUS_VIRTUAL, vendor: 0x1af4, product: 0x0001, version: 1 },
      props: [],
      // KEY_ESC (1) .. KEY_COMPOSE (127): a PC keyboard with the keypad and the extra keys
      ev: { [EV.KEY]: bitmap(range(1, 127)), [EV.LED]: bitmap([LED_NUML, LED_CAPSL, LED_SCROLLL]), [EV.REP]: bitmap([0, 1]) },
      abs: {},
    };
  }
  const axis: AbsInfo = { min: 0, max: TABLET_MAX, fuzz: 0, flat: 0, res: 0 };
  return {
    name: name ?? "tsbhyve virtio tablet", serial: serial ?? "",
    ids: { bustype: BUS_VIRTUAL, vendor: 0x1af4, product: 0x0003, version: 1 },
    props: [],
    ev: { [EV.KEY]: bitmap([BTN_LEFT, BTN_RIGHT, BTN_MIDDLE]), [EV.ABS]: bitmap([ABS_X, ABS_Y]) },
    abs: { [ABS_X]: axis, [ABS_Y]: { ...axis } },
  };
}

// -------------------------------------------------------------------------------------------------
// host evdev (main thread)

/** _IOC(dir, 'E', nr, size) */
const eviocg = (nr: number, size: number): number => ((2 << 30) >>> 0) + ((size & 0x3fff) << 16) + (0x45 << 8) + nr;
export const EVIOCGID = eviocg(0x02, 8);
export const EVIOCGNAME = (len: number): number => eviocg(0x06, len);
export const EVIOCGUNIQ = (len: number): number => eviocg(0x08, len);
export const EVIOCGPROP = (len: number): number => eviocg(0x09, len);
export const EVIOCGBIT = (ev: number, len: number): number => eviocg(0x20 + ev, len);
export const EVIOCGABS = (axis: number): number => eviocg(0x40 + axis, 24);

const trimBits = (b: Uint8Array): number[] => {
  let n = b.length;
  while (n > 0 && b[n - 1] === 0) n--;
  return [...b.subarray(0, n)];
};

/** Ask an open evdev fd who it is (EVIOCGNAME/UNIQ/ID/PROP/BIT/ABS). `ioctl` returns < 0 on failure. */
export function probeEvdev(fd: number, ioctl: (fd: number, req: number, buf: Uint8Array) => number = (f, r, b) => host.ioctlBuf(f, r, b)): InputIdentity {
  const str = (req: (n: number) => number): string => {
    const b = new Uint8Array(INPUT_CFG_PAYLOAD + 1);
    const n = ioctl(fd, req(b.length), b);
    if (n <= 0) return "";
    const end = b.indexOf(0);
    return new TextDecoder().decode(b.subarray(0, Math.min(end < 0 ? n : end, INPUT_CFG_PAYLOAD)));
  };
  const idb = new Uint8Array(8);
  const ids: InputIds = { bustype: 0, vendor: 0, product: 0, version: 0 };
  if (ioctl(fd, EVIOCGID, idb) >= 0) {
    const d = new DataView(idb.buffer);
    Object.assign(ids, { bustype: d.getUint16(0, true), vendor: d.getUint16(2, true), product: d.getUint16(4, true), version: d.getUint16(6, true) });
  }
  const bits = (req: number, b: Uint8Array): number[] => (ioctl(fd, req, b) < 0 ? [] : trimBits(b));
  const ev: Record<number, number[]> = {};
  const types = bits(EVIOCGBIT(0, 4), new Uint8Array(4));
  for (let t = 1; t <= EV.MAX; t++) {
    if (!((types[t >> 3] ?? 0) & (1 << (t & 7)))) continue;
    // EV_REP has no code bitmap in evdev: say "supported" with the REP_DELAY/REP_PERIOD bits
    ev[t] = t === EV.REP ? bitmap([0, 1]) : bits(EVIOCGBIT(t, INPUT_CFG_PAYLOAD), new Uint8Array(INPUT_CFG_PAYLOAD));
  }
  const abs: Record<number, AbsInfo> = {};
  const axes = ev[EV.ABS] ?? [];
  for (let a = 0; a < axes.length * 8; a++) {
    if (!(axes[a >> 3]! & (1 << (a & 7)))) continue;
    const b = new Uint8Array(24);
    if (ioctl(fd, EVIOCGABS(a), b) < 0) continue;
    const d = new DataView(b.buffer);
    abs[a] = { min: d.getInt32(4, true), max: d.getInt32(8, true), fuzz: d.getInt32(12, true), flat: d.getInt32(16, true), res: d.getInt32(20, true) };
  }
  return {
    name: str(EVIOCGNAME), serial: str(EVIOCGUNIQ), ids,
    props: bits(EVIOCGPROP(INPUT_CFG_PAYLOAD), new Uint8Array(INPUT_CFG_PAYLOAD)), ev, abs,
  };
}

/** A host evdev device opened for a function (plain data). */
export interface InputHost { fd: number; writable: boolean; identity: InputIdentity }

/** Main thread: open a host evdev device (read-write for LED write-back when allowed, else read-only, non-blocking) and probe it. */
export function openEvdev(path: string): InputHost {
  let fd = host.openDisk(path, 0), writable = true;
  if (fd < 0) { fd = host.openDisk(path, DISK_OPEN_RDONLY); writable = false; }
  if (fd < 0) throw new Error(`cannot open ${path}: ${host.errnoName(-fd)}`);
  try {
    host.setNonblock(fd, true);
    const identity = probeEvdev(fd);
    if (!Object.keys(identity.ev).length) throw new Error(`${path} does not look like an evdev device (EVIOCGBIT failed)`);
    return { fd, writable, identity };
  } catch (e) {
    host.close(fd);
    throw e;
  }
}

// -------------------------------------------------------------------------------------------------
// the device

const stateLayout = defineLayout("virtio-input", 1, {
  select: "u8",
  subsel: "u8",
  /** the host fd stopped working (unplugged): no longer polled */
  hostGone: "u8",
  /** ring[head .. head + count) (mod RING_EVENTS), two u32 per record: type | code << 16, value */
  head: "u32",
  count: "u32",
  /** records dropped because the ring was full */
  dropped: "f64",
  ring: { type: "u32", count: 2 * RING_EVENTS },
});
type InputState = StateBlock<typeof stateLayout.spec>["s"];

export interface InputDeviceOptions {
  identity: InputIdentity;
  /** host evdev device (undefined: a built-in model) */
  host?: { fd: number; writable: boolean };
  /** test aid: answer every EV_LED status event with a KEY_H press and release */
  hello?: boolean;
}

export class InputDevice {
  t!: VirtioTransport;
  readonly identity: InputIdentity;
  private readonly s: InputState;
  private readonly cfg = new Uint8Array(INPUT_CONFIG_BYTES);
  private readonly cfgView = new DataView(this.cfg.buffer);
  /** (select, subsel) the cfg scratch was built for (-1: none) */
  private cfgFor = -1;
  private readonly readBuf = new Uint8Array(HOST_EVENT_BYTES * 64);

  constructor(private readonly ctx: DeviceContext, private readonly opts: InputDeviceOptions, private readonly log: (msg: string) => void = (m) => ctx.platform.log(m)) {
    this.identity = opts.identity;
    this.s = ctx.arena.alloc(stateLayout).s;
  }

  model(): VirtioDeviceModel {
    return {
      type: VIRTIO_ID_INPUT,
      model: "virtio-input",
      classCode: 0x09_80_00,
      queueSizes: [INPUT_QUEUE_SIZE, INPUT_QUEUE_SIZE],
      features: 0n,
      configSize: INPUT_CONFIG_BYTES,
      configRead: (off, size) => this.configRead(off, size),
      configWrite: (off, size, v) => this.configWrite(off, size, v),
      processQueue: (q, t) => { this.t = t; if (q === EVENTQ) this.deliver(); else if (q === STATUSQ) this.status(); },
      reset: () => { const s = this.s; s.select = s.subsel = 0; s.head = s.count = 0; },
      pollSources: () => this.pollSources(),
    };
  }

  // ---------------------------------------------------------------------------------------------
  // configuration (vCPU, lock held)

  private configWrite(off: number, size: AccessSize, v: number): void {
    for (let i = 0; i < size; i++) {
      const b = (v >>> (8 * i)) & 0xff;
      if (off + i === 0) this.s.select = b;
      else if (off + i === 1) this.s.subsel = b;
    }
  }

  private configRead(off: number, size: AccessSize): number {
    const key = (this.s.select << 8) | this.s.subsel;
    if (key !== this.cfgFor) { this.fillConfig(this.s.select, this.s.subsel); this.cfgFor = key; }
    return configRead(this.cfgView, off, size);
  }

  /** The configuration the driver sees for (select, subsel). */
  configFor(select: number, subsel: number): { size: number; data: Uint8Array } {
    this.fillConfig(select, subsel);
    this.cfgFor = -1;
    return { size: this.cfg[2]!, data: this.cfg.slice(8, 8 + this.cfg[2]!) };
  }

  private fillConfig(select: number, subsel: number): void {
    const c = this.cfg, d = this.cfgView, id = this.identity;
    c.fill(0);
    c[0] = select;
    c[1] = subsel;
    let size = 0;
    const bytes = (b: ArrayLike<number>) => { size = Math.min(b.length, INPUT_CFG_PAYLOAD); for (let i = 0; i < size; i++) c[8 + i] = b[i]!; };
    switch (select) {
      case INPUT_CFG.ID_NAME: if (subsel === 0) bytes(new TextEncoder().encode(id.name)); break;
      case INPUT_CFG.ID_SERIAL: if (subsel === 0) bytes(new TextEncoder().encode(id.serial)); break;
      case INPUT_CFG.ID_DEVIDS:
        if (subsel !== 0) break;
        d.setUint16(8, id.ids.bustype, true); d.setUint16(10, id.ids.vendor, true);
        d.setUint16(12, id.ids.product, true); d.setUint16(14, id.ids.version, true);
        size = 8;
        break;
      case INPUT_CFG.PROP_BITS: if (subsel === 0) bytes(trimmed(id.props)); break;
      case INPUT_CFG.EV_BITS: bytes(trimmed(id.ev[subsel] ?? [])); break;
      case INPUT_CFG.ABS_INFO: {
        const a = id.abs[subsel];
        if (!a || !(((id.ev[EV.ABS] ?? [])[subsel >> 3] ?? 0) & (1 << (subsel & 7)))) break;
        [a.min, a.max, a.fuzz, a.flat, a.res].forEach((v, i) => d.setInt32(8 + 4 * i, v, true));
        size = 20;
        break;
      }
    }
    c[2] = size;
  }

  // ---------------------------------------------------------------------------------------------
  // events (lock held)

  private get live(): boolean {
    return !!this.t && (this.t.status & (VIRTIO_STATUS.DRIVER_OK | VIRTIO_STATUS.NEEDS_RESET)) === VIRTIO_STATUS.DRIVER_OK;
  }

  /** Records waiting for eventq buffers. */
  get queued(): number { return this.s.count; }
  /** Records dropped because the ring was full. */
  get dropped(): number { return this.s.dropped; }

  /** Put one record in the ring (the oldest goes when it is full). */
  private enqueue(type: number, code: number, value: number): void {
    const s = this.s;
    if (s.count === RING_EVENTS) {
      if (s.dropped === 0) this.log(`virtio-input: the guest is not taking events; dropping the oldest (counting from here)`);
      s.head = (s.head + 1) % RING_EVENTS;
      s.count--;
      s.dropped++;
    }
    const i = (s.head + s.count) % RING_EVENTS;
    s.ring[2 * i] = ((type & 0xffff) | ((code & 0xffff) << 16)) >>> 0;
    s.ring[2 * i + 1] = value >>> 0;
    s.count++;
  }

  /** Ring → eventq, while both last. */
  private deliver(): void {
    if (!this.live) return;
    const s = this.s, vq = this.t.queue(EVENTQ), rec = new Uint8Array(8), dv = new DataView(rec.buffer);
    for (let done = 0; s.count > 0; done++) {
      if (done >= BUDGET) { this.t.reschedule(EVENTQ); this.ctx.platform.wakeIo(); return; }
      const c = vq.pop();
      if (!c) return;
      const w0 = s.ring[2 * s.head]!, w1 = s.ring[2 * s.head + 1]!;
      dv.setUint16(0, w0 & 0xffff, true);
      dv.setUint16(2, w0 >>> 16, true);
      dv.setUint32(4, w1, true);
      if (c.writableBytes < 8) this.log(`virtio-input: event buffer of ${c.writableBytes} bytes (need 8)`);
      vq.push(c.head, writeChain(this.t.mem, c, rec));
      s.head = (s.head + 1) % RING_EVENTS;
      s.count--;
    }
  }

  /** statusq: the driver's events (LEDs); written back to a writable host device. */
  private status(): void {
    const vq = this.t.queue(STATUSQ);
    for (let done = 0; done < BUDGET; done++) {
      const c = vq.pop();
      if (!c) return;
      const m = readChain(this.t.mem, c, 8);
      vq.push(c.head, 0);
      if (m.length < 8) continue;
      const dv = new DataView(m.buffer, m.byteOffset);
      const type = dv.getUint16(0, true), code = dv.getUint16(2, true), value = dv.getInt32(4, true);
      if (this.opts.host?.writable && !this.s.hostGone) {
        const ev = new Uint8Array(HOST_EVENT_BYTES), ed = new DataView(ev.buffer);
        ed.setUint16(16, type, true); ed.setUint16(18, code, true); ed.setInt32(20, value, true);
        host.write(this.opts.host.fd, ev);
      }
      if (this.opts.hello && type === EV.LED) {
        const code = (this.identity.ev[EV.KEY]?.[KEY_H >> 3] ?? 0) & (1 << (KEY_H & 7)) ? KEY_H : BTN_LEFT;
        for (const v of [1, 0]) { this.enqueue(EV.KEY, code, v); this.enqueue(EV.SYN, SYN_REPORT, 0); }
        this.t.reschedule(EVENTQ);
        this.ctx.platform.wakeIo();
      }
    }
    this.t.reschedule(STATUSQ); // budget used up: the rest on the next pass
    this.ctx.platform.wakeIo();
  }

  /** Queue events for the guest (any thread that built the device); the I/O Worker delivers them. */
  inject(events: readonly InputEvent[]): void {
    const lock = this.t.fn.lock;
    lock.acquire();
    try {
      for (const e of events) this.enqueue(e.type, e.code, e.value);
      this.t.reschedule(EVENTQ);
    } finally { lock.release(); }
    this.ctx.platform.wakeIo();
  }

  // ---------------------------------------------------------------------------------------------
  // I/O Worker: the host device

  pollSources(): PollSource[] {
    const h = this.opts.host;
    if (!h || this.s.hostGone) return [];
    return [{ fd: h.fd, events: POLLIN, ready: (r) => this.onHost(r) }];
  }

  private onHost(revents: number): boolean {
    const lock = this.t.fn.lock, fd = this.opts.host!.fd;
    lock.acquire();
    try {
      for (let round = 0; round < 16; round++) {
        const n = host.read(fd, this.readBuf);
        if ((n < 0 && n !== -11 /* EAGAIN */ && n !== -4 /* EINTR */) || (n === 0 && (revents & (POLLHUP | POLLERR)))) {
          this.log(`virtio-input: host device read failed (${n < 0 ? host.errnoName(-n) : "end of file"}); no more host events`);
          this.s.hostGone = 1;
          return false;
        }
        if (n <= 0) break;
        const d = new DataView(this.readBuf.buffer, 0, n);
        for (let o = 0; o + HOST_EVENT_BYTES <= n; o += HOST_EVENT_BYTES) this.enqueue(d.getUint16(o + 16, true), d.getUint16(o + 18, true), d.getInt32(o + 20, true));
        if (n < this.readBuf.length) break;
      }
      if (this.live) {
        this.deliver();
        if (this.t.queue(EVENTQ).needsInterrupt()) this.t.interruptQueue(EVENTQ);
      }
    } finally { lock.release(); }
    return true;
  }
}

const trimmed = (b: readonly number[]): number[] => {
  let n = Math.min(b.length, INPUT_CFG_PAYLOAD);
  while (n > 0 && b[n - 1] === 0) n--;
  return b.slice(0, n);
};

/** The transport's input plus the device's own. */
export interface InputInput extends VirtioPciInput {
  device: InputDeviceOptions;
  log?: (msg: string) => void;
}

/** Devices built in this thread, by function address ("B.S.F"), for injectInputEvents. */
const built = new Map<string, InputDevice>();

/** The PCI function of a virtio-input (its host evdev source reaches the I/O Worker through the model). */
export function createInput(inp: InputInput): { fn: VirtioPciFunction; input: InputDevice } {
  const dev = new InputDevice(inp.ctx, inp.device, inp.log);
  const fn = createVirtioPci(inp, dev.model());
  dev.t = fn.transport;
  built.set(notifyKey(inp.addr), dev);
  return { fn, input: dev };
}

/**
 * Queue events into the virtio-input function at `addr` (built in this thread); false when there is
 * none. The I/O Worker is woken to deliver them. For input sources inside tsbhyve (the VNC server).
 */
export function injectInputEvents(addr: PciAddress | string, events: readonly InputEvent[]): boolean {
  const dev = built.get(typeof addr === "string" ? addr : notifyKey(addr));
  if (!dev) return false;
  dev.inject(events);
  return true;
}

/** The plain-data description of a virtio-input table's source (host device from prepare(), or a model). */
export interface InputPrepared { inputs?: Record<string, InputHost> }

export const virtioInput: PciEmulation = {
  doc: "virtio input device: modern 1af4:1052; path = a host /dev/input/eventN (identity mirrored, events forwarded, LEDs written back) or model = keyboard | tablet (built-in, events injected by tsbhyve); name, serial; pcireg.* overrides",
  describe: (addr) => [{ addr, intPin: 1, model: "virtio-input" }],
  create(inp) {
    const where = pciWhere(inp);
    const t = inp.table as Record<string, unknown>;
    const h = (inp.prepared as InputPrepared).inputs?.[notifyKey(inp.addr)];
    const identity = h ? { ...h.identity } : inputModelIdentity((t.model as InputModel | undefined) ?? "keyboard", t.name as string | undefined, t.serial as string | undefined);
    if (h && typeof t.name === "string") identity.name = t.name;
    if (h && typeof t.serial === "string") identity.serial = t.serial;
    return [createInput({
      ...virtioPciInput(inp),
      device: { identity, host: h ? { fd: h.fd, writable: h.writable } : undefined, hello: t.hello === true },
      log: (m) => inp.ctx.platform.log(`${where}: ${m}`),
    }).fn];
  },
};
