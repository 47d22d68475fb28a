/**
 * virtio-input as a device: the model (src/virtio/devices/input.ts) behind the real virtio-pci
 * transport, driven through a Bus by the fake driver over fake guest memory; the vCPU side and the I/O
 * Worker side are two builds over one state arena, as in the VM. Covers identity (modern-only 1af4:1052),
 * the select/subsel configuration protocol for both built-in models, injected events delivered as
 * 8-byte records, events kept while the guest has no buffers, the bounded ring dropping the oldest, the
 * statusq (and the `hello` test aid), reset emptying the ring, and probeEvdev over a fake ioctl.
 */
import { describe, expect, test } from "bun:test";
import { GuestMemory, MiB } from "../../src/mem/guest-memory.ts";
import { CFG } from "../../src/pci/regs.ts";
import { POLLIN } from "../../src/vmm/index.ts";
import {
  ABS_X, ABS_Y, BTN_LEFT, BTN_MIDDLE, BTN_RIGHT, BUS_VIRTUAL, createInput, EV, EVENTQ, EVIOCGABS, EVIOCGBIT, EVIOCGID, EVIOCGNAME, INPUT_CFG,
  inputModelIdentity, injectInputEvents, KEY_H, LED_CAPSL, probeEvdev, RING_EVENTS, STATUSQ, SYN_REPORT, TABLET_MAX, type InputDevice, type InputDeviceOptions, type InputModel,
} from "../../src/virtio/devices/input.ts";
import { COMMON, VIRTIO_F, type VirtioPciFunction } from "../../src/virtio/pci.ts";
import type { FakeDriver } from "./virtio-driver.ts";
import { virtioPciRig } from "./virtio-pci-rig.ts";

const SLOT = 6;

function rig(model: InputModel, extra: Partial<InputDeviceOptions> = {}) {
  const nq = 2;
  const r = virtioPciRig<{ input: InputDevice }>({
    mem: GuestMemory.fake(128 * MiB), queues: nq, slot: SLOT,
    build: (inp) => createInput({ ...inp, device: { identity: inputModelIdentity(model), ...extra } }),
  });
  const { platform, mem, cr, bus, device } = r;
  const vcpu = r.vcpu as { fn: VirtioPciFunction; input: InputDevice }, io = r.io as { fn: VirtioPciFunction; input: InputDevice };
  /** The driver's query: write select and subsel, read size and the payload bytes. */
  const query = (select: number, subsel = 0): number[] => {
    bus.write("mmio", device, 1, select);
    bus.write("mmio", device + 1, 1, subsel);
    const size = bus.read("mmio", device + 2, 1);
    return Array.from({ length: size }, (_, i) => bus.read("mmio", device + 8 + i, 1));
  };
  const cfg32 = (off: number) => bus.read("mmio", device + off, 4) >>> 0;
  const text = (b: number[]) => new TextDecoder().decode(new Uint8Array(b));

  /** Bring-up with VERSION_1 only (the device offers no feature bits of its own). */
  const bringUp = (beforeOk?: () => void) => {
    expect(r.features() & ~(VIRTIO_F.INDIRECT_DESC | VIRTIO_F.EVENT_IDX)).toBe(VIRTIO_F.VERSION_1);
    return r.bringUp(0n, { eventIdx: false, indirect: false, heapSize: 2 * MiB, beforeDriverOk: beforeOk }).drivers;
  };
  /** Notify queue q and run what the I/O Worker runs when its eventfd fires. */
  const kick = (q: number) => {
    r.w16(COMMON.Q_SELECT, q);
    bus.write("mmio", r.notify + 4 * r.c16(COMMON.Q_NOFF), 2, q);
    expect(r.signals.splice(0)).toEqual([100 + q]);
    io.fn.pollSources()[q]!.ready(POLLIN);
  };
  /** The I/O Worker's deadline pass (rescheduled queues). */
  const expire = () => { for (let i = 0; i < 4 && io.fn.deadline() === 0; i++) io.fn.expire(); };
  const reset = () => r.w8(COMMON.STATUS, 0);
  return { platform, mem, cr, query, cfg32, text, bringUp, kick, expire, reset, vcpu, io };
}
type Rig = ReturnType<typeof rig>;

/** The guest's eventq: posts 8-byte buffers, collects records. */
function eventq(r: Rig, d: FakeDriver) {
  const bufs = new Map<number, number>();
  const post = (n: number) => {
    for (let i = 0; i < n; i++) { const { head, addrs } = d.add([{ len: 8, write: true }]); bufs.set(head, addrs[0]!); }
    d.publish();
    r.kick(EVENTQ);
  };
  const received = (): [number, number, number][] => d.collect().map(({ id, len }) => {
    expect(len).toBe(8);
    const b = r.mem.readBytes(bufs.get(id)!, 8), v = new DataView(b.buffer, b.byteOffset);
    return [v.getUint16(0, true), v.getUint16(2, true), v.getInt32(4, true)];
  });
  return { post, received };
}

const bits = (b: number[]): number[] => b.flatMap((x, i) => Array.from({ length: 8 }, (_, k) => (x >> k) & 1 ? 8 * i + k : -1)).filter((x) => x >= 0);

describe("virtio-input identity and configuration", () => {
  test("modern-only PCI function 1af4:1052, class 09 80, two queues, no device features", () => {
    const r = rig("keyboard");
    expect(r.cr(CFG.VENDOR, 2)).toBe(0x1af4);
    expect(r.cr(CFG.DEVICE, 2)).toBe(0x1052);
    expect(r.cr(CFG.REVISION, 1)).toBe(1);
    expect(r.cr(CFG.REVISION) >>> 8).toBe(0x098000);
    expect(r.cr(CFG.SUBDEVICE, 2)).toBe(0x1100);
  });

  test("keyboard: name, serial, devids, props, EV_KEY / EV_LED / EV_REP bitmaps, nothing else", () => {
    const r = rig("keyboard");
    expect(r.text(r.query(INPUT_CFG.ID_NAME))).toBe("tsbhyve virtio keyboard");
    expect(r.query(INPUT_CFG.ID_SERIAL)).toEqual([]);
    expect(r.query(INPUT_CFG.ID_DEVIDS)).toEqual([BUS_VIRTUAL, 0, 0xf4, 0x1a, 1, 0, 1, 0]);
    expect(r.query(INPUT_CFG.PROP_BITS)).toEqual([]);
    const keys = bits(r.query(INPUT_CFG.EV_BITS, EV.KEY));
    expect(keys[0]).toBe(1);
    expect(keys.at(-1)).toBe(127);
    expect(keys).toContain(KEY_H);
    expect(r.query(INPUT_CFG.EV_BITS, EV.KEY).length).toBe(16);
    expect(bits(r.query(INPUT_CFG.EV_BITS, EV.LED))).toEqual([0, 1, 2]);
    expect(r.query(INPUT_CFG.EV_BITS, EV.REP).length).toBeGreaterThan(0);
    for (const t of [EV.SYN, EV.REL, EV.ABS, EV.MSC, EV.SW, EV.SND]) expect(r.query(INPUT_CFG.EV_BITS, t)).toEqual([]);
    expect(r.query(INPUT_CFG.ABS_INFO, ABS_X)).toEqual([]);
    expect(r.query(INPUT_CFG.UNSET)).toEqual([]);
    expect(r.query(0x7f)).toEqual([]);
    expect(r.query(INPUT_CFG.ID_NAME, 1)).toEqual([]);
  });

  test("tablet: EV_ABS X/Y 0..32767, BTN_LEFT/RIGHT/MIDDLE, no EV_REL", () => {
    const r = rig("tablet");
    expect(r.text(r.query(INPUT_CFG.ID_NAME))).toBe("tsbhyve virtio tablet");
    expect(bits(r.query(INPUT_CFG.EV_BITS, EV.KEY))).toEqual([BTN_LEFT, BTN_RIGHT, BTN_MIDDLE]);
    expect(bits(r.query(INPUT_CFG.EV_BITS, EV.ABS))).toEqual([ABS_X, ABS_Y]);
    expect(r.query(INPUT_CFG.EV_BITS, EV.REL)).toEqual([]);
    for (const axis of [ABS_X, ABS_Y]) {
      const b = new Uint8Array(r.query(INPUT_CFG.ABS_INFO, axis)), v = new DataView(b.buffer);
      expect(b.length).toBe(20);
      expect([0, 4, 8, 12, 16].map((o) => v.getInt32(o, true))).toEqual([0, TABLET_MAX, 0, 0, 0]);
    }
    expect(r.query(INPUT_CFG.ABS_INFO, 2)).toEqual([]);
  });

  test("configured name and serial; wider reads; a reset clears select", () => {
    const r = rig("tablet", { identity: inputModelIdentity("tablet", "pointer one", "SER-1") });
    expect(r.text(r.query(INPUT_CFG.ID_SERIAL))).toBe("SER-1");
    r.query(INPUT_CFG.ID_DEVIDS);
    expect(r.cfg32(8)).toBe(0x1af4_0006);
    expect(r.cfg32(12)).toBe(0x0001_0003);
    expect(r.cfg32(0) & 0xffffff).toBe((8 << 16) | INPUT_CFG.ID_DEVIDS);
    r.query(INPUT_CFG.ID_NAME);
    r.reset();
    expect(r.query(INPUT_CFG.UNSET)).toEqual([]);
    expect(r.text(r.query(INPUT_CFG.ID_NAME))).toBe("pointer one");
  });
});

describe("virtio-input events", () => {
  test("injected events reach the guest as 8-byte records, in order, with an interrupt", () => {
    const r = rig("tablet");
    const d = r.bringUp();
    const q = eventq(r, d[EVENTQ]!);
    q.post(8);
    expect(injectInputEvents({ bus: 0, slot: SLOT, fn: 0 }, [
      { type: EV.ABS, code: ABS_X, value: 100 }, { type: EV.ABS, code: ABS_Y, value: 32767 },
      { type: EV.KEY, code: BTN_LEFT, value: 1 }, { type: EV.SYN, code: SYN_REPORT, value: 0 },
    ])).toBe(true);
    expect(r.platform.wakes).toBeGreaterThan(0);
    r.expire();
    expect(q.received()).toEqual([[EV.ABS, ABS_X, 100], [EV.ABS, ABS_Y, 32767], [EV.KEY, BTN_LEFT, 1], [EV.SYN, 0, 0]]);
    r.io.input.inject([{ type: EV.REL, code: 0, value: -5 }]);
    r.expire();
    expect(q.received()).toEqual([[EV.REL, 0, -5]]);
    expect(injectInputEvents("0.31.0", [])).toBe(false);
  });

  test("back-pressure: events wait for buffers, then a full ring drops the oldest and counts", () => {
    const r = rig("keyboard");
    const d = r.bringUp();
    const q = eventq(r, d[EVENTQ]!);
    const ev = (i: number) => ({ type: EV.KEY, code: 1 + (i % 100), value: i });
    r.vcpu.input.inject(Array.from({ length: 10 }, (_, i) => ev(i)));
    r.expire();
    expect(q.received()).toEqual([]);
    expect(r.io.input.queued).toBe(10);
    q.post(4);
    expect(q.received().map((e) => e[2])).toEqual([0, 1, 2, 3]);
    q.post(6);
    expect(q.received().map((e) => e[2])).toEqual([4, 5, 6, 7, 8, 9]);
    expect(r.io.input.dropped).toBe(0);
    // overflow: RING_EVENTS + 5 with no buffers → the first 5 go
    r.vcpu.input.inject(Array.from({ length: RING_EVENTS + 5 }, (_, i) => ev(i)));
    r.expire();
    expect(r.io.input.queued).toBe(RING_EVENTS);
    expect(r.io.input.dropped).toBe(5);
    expect(r.platform.logs.some((l) => l.includes("dropping the oldest"))).toBe(true);
    const got: number[] = [];
    for (let i = 0; i < RING_EVENTS / 32; i++) { q.post(32); got.push(...q.received().map((e) => e[2])); }
    expect(got).toEqual(Array.from({ length: RING_EVENTS }, (_, i) => i + 5));
    expect(r.io.input.queued).toBe(0);
  });

  test("a device reset empties the ring; events before DRIVER_OK wait for it", () => {
    const r = rig("keyboard");
    r.vcpu.input.inject([{ type: EV.KEY, code: 30, value: 1 }]);
    r.expire();
    r.reset();
    expect(r.io.input.queued).toBe(0);
    const d = r.bringUp(() => { r.vcpu.input.inject([{ type: EV.KEY, code: 31, value: 1 }]); r.expire(); }); // before DRIVER_OK
    const q = eventq(r, d[EVENTQ]!);
    q.post(4);
    expect(q.received()).toEqual([[EV.KEY, 31, 1]]);
  });

  test("statusq: LED events are taken and returned; with hello, one answers with KEY_H press/release", () => {
    for (const hello of [false, true]) {
      const r = rig("keyboard", { hello });
      const d = r.bringUp();
      const q = eventq(r, d[EVENTQ]!);
      q.post(8);
      const s = d[STATUSQ]!;
      const rec = new Uint8Array(8), v = new DataView(rec.buffer);
      v.setUint16(0, EV.LED, true); v.setUint16(2, LED_CAPSL, true); v.setInt32(4, 1, true);
      s.add([{ len: 8, data: rec }]);
      s.publish();
      r.kick(STATUSQ);
      expect(s.collect().length).toBe(1);
      r.expire();
      expect(q.received()).toEqual(hello ? [[EV.KEY, KEY_H, 1], [EV.SYN, 0, 0], [EV.KEY, KEY_H, 0], [EV.SYN, 0, 0]] : []);
    }
  });
});

describe("probeEvdev", () => {
  test("mirrors name, ids, EV bits and ABS ranges from the EVIOCG* answers", () => {
    const answers = new Map<number, (b: Uint8Array) => number>([
      [EVIOCGNAME(129), (b) => { b.set(new TextEncoder().encode("Host Pad\0")); return 9; }],
      [EVIOCGID, (b) => { new DataView(b.buffer).setUint16(0, 3, true); new DataView(b.buffer).setUint16(2, 0x46d, true); return 0; }],
      [EVIOCGBIT(0, 4), (b) => { b[0] = (1 << EV.SYN) | (1 << EV.KEY) | (1 << EV.ABS); return 4; }],
      [EVIOCGBIT(EV.KEY, 128), (b) => { b[BTN_LEFT >> 3] = 1 << (BTN_LEFT & 7); return 128; }],
      [EVIOCGBIT(EV.ABS, 128), (b) => { b[0] = 1 << ABS_Y; return 128; }],
      [EVIOCGABS(ABS_Y), (b) => { const v = new DataView(b.buffer); v.setInt32(4, -10, true); v.setInt32(8, 10, true); v.setInt32(20, 3, true); return 0; }],
    ]);
    const id = probeEvdev(7, (fd, req, b) => { expect(fd).toBe(7); const f = answers.get(req); return f ? f(b) : -25; });
    expect(id.name).toBe("Host Pad");
    expect(id.serial).toBe("");
    expect(id.ids).toEqual({ bustype: 3, vendor: 0x46d, product: 0, version: 0 });
    expect(Object.keys(id.ev).map(Number)).toEqual([EV.KEY, EV.ABS]);
    expect(bits(id.ev[EV.KEY]!)).toEqual([BTN_LEFT]);
    expect(id.abs).toEqual({ [ABS_Y]: { min: -10, max: 10, fuzz: 0, flat: 0, res: 3 } });
    expect(EVIOCGNAME(256) >>> 0).toBe(0x81004506);
    expect(EVIOCGABS(0) >>> 0).toBe(0x80184540);
  });
});
