/**
 * The virtio-pci transport through real Buses over one SharedArrayBuffer (a vCPU thread's bus and an
 * I/O Worker's copy of the devices): the driver's init sequence through the modern capabilities and
 * through the legacy BAR, feature negotiation, MSI-X vector programming and masking, INTx + ISR, reset,
 * notifications (ioeventfd attachment following the BARs, the trapped-write fallback, the no-eventfd
 * fallback), processing on the I/O side and the interrupt that follows; virtio-rnd end to end.
 */
import { describe, expect, test } from "bun:test";
import { Bus, sharedMapGeneration } from "../../src/devices/bus.ts";
import type { Device, DeviceContext, Space } from "../../src/devices/device.ts";
import { StateArena } from "../../src/devices/state.ts";
import { GuestMemory, MiB } from "../../src/mem/guest-memory.ts";
import { MEMMAP, pirqOf } from "../../src/platform/map.ts";
import { allocateBars, createConfigMechanism1, createEcam, PciFunctions, PirqRouter, pciWindows, PCI_EMULATIONS } from "../../src/pci/index.ts";
import { CAP_ID, CFG, COMMAND, MSIX } from "../../src/pci/regs.ts";
import { powerOnMachine } from "../../src/vm/machine.ts";
import { POLLIN } from "../../src/vmm/index.ts";
import { rndModel } from "../../src/virtio/devices/rnd.ts";
import { closeVirtioNotifiers, notifyFdsFor, openVirtioNotifiers } from "../../src/virtio/notify.ts";
import {
  CAP_TYPE, COMMON, createVirtioPci, LEGACY, VIRTIO_F, VIRTIO_MSI_NO_VECTOR, VIRTIO_STATUS, VirtioPciFunction, type IoEventFdAttach, type VirtioDeviceModel,
} from "../../src/virtio/pci.ts";
import { FakeDriver, legacyLayout, modernLayout } from "./virtio-driver.ts";
import { RecordingPlatform } from "./fake-platform.ts";


const SLOT = 4;
const ecam = (reg: number) => MEMMAP.ecam.base + ((SLOT << 15) | reg);

interface RigOpts { fds?: boolean; model?: () => VirtioDeviceModel; transitional?: boolean; msix?: boolean }

function rig(opts: RigOpts = {}) {
  const buf = new SharedArrayBuffer(1 << 20);
  const platform = new RecordingPlatform();
  const mem = GuestMemory.fake(64 * MiB);
  const signals: number[] = [];
  const drains: number[] = [];
  const attachCalls: [Space, number, number, number | null, number, boolean][] = [];
  const attach: IoEventFdAttach = { ioeventfd: (...a) => { attachCalls.push(a); } };
  const build = (role: DeviceContext["role"]) => {
    const ctx: DeviceContext = { mem, arena: new StateArena(buf), platform, role };
    const gen = sharedMapGeneration(ctx.arena);
    const router = new PirqRouter(ctx);
    const fns = new PciFunctions();
    const fn = createVirtioPci({
      ctx, addr: { bus: 0, slot: SLOT, fn: 0 }, gen, router,
      notifyFds: opts.fds === false ? undefined : [100],
      attach: opts.fds === false ? undefined : attach,
      eventfd: { signal: (fd) => signals.push(fd), drain: (fd) => drains.push(fd) },
      transitional: opts.transitional, msix: opts.msix,
    }, (opts.model ?? rndModel)());
    fns.add(fn);
    allocateBars([fn], pciWindows(64 * MiB));
    const devices: Device[] = [createConfigMechanism1(ctx, fns, router), createEcam(fns), fn];
    const bus = new Bus();
    for (const d of devices) bus.register(d);
    return { bus, devices, fn };
  };
  const vcpu = build("vcpu");
  powerOnMachine({ devices: vcpu.devices });
  const io = build("io");
  const bus = vcpu.bus;
  const cr = (reg: number, size: 1 | 2 | 4 = 4) => bus.read("mmio", ecam(reg), size);
  const cw = (reg: number, v: number, size: 1 | 2 | 4 = 4) => bus.write("mmio", ecam(reg), size, v);
  const bar = (i: number) => {
    const lo = cr(CFG.BAR0 + 4 * i);
    if (lo & 1) return (lo & ~3) >>> 0;
    return ((lo & ~0xf) >>> 0) + ((lo & 6) === 4 ? cr(CFG.BAR0 + 4 * i + 4) * 2 ** 32 : 0);
  };
  /** the virtio capabilities, as a driver finds them */
  const caps = () => {
    const out: Record<number, { at: number; bar: number; offset: number; length: number }> = {};
    let msix = 0;
    for (let p = cr(CFG.CAP_PTR, 1), guard = 0; p && guard < 48; p = cr(p + 1, 1), guard++) {
      const id = cr(p, 1);
      if (id === CAP_ID.MSIX) msix = p;
      if (id !== CAP_ID.VENDOR) continue;
      const type = cr(p + 3, 1);
      out[type] ??= { at: p, bar: cr(p + 4, 1), offset: cr(p + 8), length: cr(p + 12) };
    }
    return { virtio: out, msix };
  };
  return { platform, mem, vcpu, io, bus, cr, cw, bar, caps, signals, drains, attachCalls };
}

type Rig = ReturnType<typeof rig>;

/** Driver side of the modern interface. */
function modern(r: Rig) {
  const { virtio } = r.caps();
  const at = (t: number) => r.bar(virtio[t]!.bar) + virtio[t]!.offset;
  const common = at(CAP_TYPE.COMMON), isr = at(CAP_TYPE.ISR), notify = at(CAP_TYPE.NOTIFY);
  const mult = r.cr(virtio[CAP_TYPE.NOTIFY]!.at + 16);
  const c8 = (o: number) => r.bus.read("mmio", common + o, 1);
  const c16 = (o: number) => r.bus.read("mmio", common + o, 2);
  const c32 = (o: number) => r.bus.read("mmio", common + o, 4);
  const w8 = (o: number, v: number) => r.bus.write("mmio", common + o, 1, v);
  const w16 = (o: number, v: number) => r.bus.write("mmio", common + o, 2, v);
  const w32 = (o: number, v: number) => r.bus.write("mmio", common + o, 4, v);
  const features = (): bigint => {
    w32(COMMON.DFSELECT, 0); const lo = c32(COMMON.DF);
    w32(COMMON.DFSELECT, 1); const hi = c32(COMMON.DF);
    return (BigInt(hi) << 32n) | BigInt(lo);
  };
  const accept = (f: bigint) => {
    w32(COMMON.GFSELECT, 0); w32(COMMON.GF, Number(f & 0xffffffffn));
    w32(COMMON.GFSELECT, 1); w32(COMMON.GF, Number(f >> 32n));
  };
  const notifyQueue = (q: number) => {
    w16(COMMON.Q_SELECT, q);
    r.bus.write("mmio", notify + c16(COMMON.Q_NOFF) * mult, 2, q);
  };
  return { common, isr, notify, mult, c8, c16, c32, w8, w16, w32, features, accept, notifyQueue, readIsr: () => r.bus.read("mmio", isr, 1) };
}

/** Enable MSI-X and program vector v to (addr, data), unmasked. */
function programMsix(r: Rig, vectors: [number, number][]) {
  const { msix } = r.caps();
  const table = r.bar(r.cr(msix + MSIX.TABLE) & 7) + (r.cr(msix + MSIX.TABLE) & ~7);
  r.cw(msix + MSIX.CTRL, MSIX.CTRL_ENABLE, 2);
  vectors.forEach(([addr, data], v) => {
    r.bus.write("mmio", table + 16 * v, 4, addr);
    r.bus.write("mmio", table + 16 * v + 4, 4, 0);
    r.bus.write("mmio", table + 16 * v + 8, 4, data);
    r.bus.write("mmio", table + 16 * v + 12, 4, 0);
  });
  return { msix, table };
}

/** The whole modern bring-up (§3.1.1), returning the fake driver of queue 0. */
function bringUpModern(r: Rig, opts: { eventIdx?: boolean; size?: number; msix?: boolean; fds?: boolean } = {}) {
  const m = modern(r);
  m.w8(COMMON.STATUS, 0);
  expect(m.c8(COMMON.STATUS)).toBe(0);
  m.w8(COMMON.STATUS, VIRTIO_STATUS.ACKNOWLEDGE);
  m.w8(COMMON.STATUS, VIRTIO_STATUS.ACKNOWLEDGE | VIRTIO_STATUS.DRIVER);
  const offered = m.features();
  expect(offered & VIRTIO_F.VERSION_1).toBe(VIRTIO_F.VERSION_1);
  m.accept(VIRTIO_F.VERSION_1 | VIRTIO_F.INDIRECT_DESC | (opts.eventIdx ? VIRTIO_F.EVENT_IDX : 0n));
  m.w8(COMMON.STATUS, VIRTIO_STATUS.ACKNOWLEDGE | VIRTIO_STATUS.DRIVER | VIRTIO_STATUS.FEATURES_OK);
  expect(m.c8(COMMON.STATUS) & VIRTIO_STATUS.FEATURES_OK).toBe(VIRTIO_STATUS.FEATURES_OK);
  if (opts.msix !== false) {
    programMsix(r, [[0xfee00000, 0x40], [0xfee01000, 0x41]]);
    m.w16(COMMON.MSIX, 0);
    expect(m.c16(COMMON.MSIX)).toBe(0);
  }
  m.w16(COMMON.Q_SELECT, 0);
  expect(m.c16(COMMON.Q_SIZE)).toBe(64);
  const size = opts.size ?? 16;
  m.w16(COMMON.Q_SIZE, size);
  if (opts.msix !== false) { m.w16(COMMON.Q_MSIX, 1); expect(m.c16(COMMON.Q_MSIX)).toBe(1); }
  const layout = modernLayout(0x200000, size);
  const drv = new FakeDriver(r.mem, layout, { base: 0x400000, size: 8 * MiB }, !!opts.eventIdx);
  m.w32(COMMON.Q_DESCLO, layout.desc); m.w32(COMMON.Q_DESCHI, 0);
  m.w32(COMMON.Q_AVAILLO, layout.avail); m.w32(COMMON.Q_AVAILHI, 0);
  m.w32(COMMON.Q_USEDLO, layout.used); m.w32(COMMON.Q_USEDHI, 0);
  m.w16(COMMON.Q_ENABLE, 1);
  expect(m.c16(COMMON.Q_ENABLE)).toBe(1);
  m.w8(COMMON.STATUS, VIRTIO_STATUS.ACKNOWLEDGE | VIRTIO_STATUS.DRIVER | VIRTIO_STATUS.FEATURES_OK | VIRTIO_STATUS.DRIVER_OK);
  // DRIVER_OK looks at every enabled queue once (buffers may have been posted before it)
  expect(r.signals.splice(0)).toEqual(opts.fds === false ? [] : [100]);
  const io = r.io.fn as VirtioPciFunction;
  if (opts.fds === false) io.expire(); else ioReady(r);
  r.drains.length = 0;
  return { m, drv };
}

/** What the I/O Worker does when queue 0's eventfd fires. */
function ioReady(r: Rig) {
  const src = (r.io.fn as VirtioPciFunction).pollSources();
  expect(src.length).toBe(1);
  expect(src[0]!.fd).toBe(100);
  src[0]!.ready(POLLIN);
}

describe("virtio-pci: identity and capabilities", () => {
  test("transitional virtio-rnd: 1af4:1005 rev 0, subsystem 4, legacy I/O BAR0, MSI-X BAR1, modern BAR4", () => {
    const r = rig();
    expect(r.cr(CFG.VENDOR, 2)).toBe(0x1af4);
    expect(r.cr(CFG.DEVICE, 2)).toBe(0x1005);
    expect(r.cr(CFG.REVISION, 1)).toBe(0);
    expect(r.cr(CFG.SUBVENDOR, 2)).toBe(0x1af4);
    expect(r.cr(CFG.SUBDEVICE, 2)).toBe(4);
    expect(r.cr(CFG.INT_PIN, 1)).toBe(1);
    expect(r.cr(CFG.BAR0) & 1).toBe(1);
    expect(r.cr(CFG.BAR0 + 16) & 6).toBe(4); // 64-bit memory
    const { virtio, msix } = r.caps();
    expect(msix).toBeGreaterThan(0);
    expect(Object.keys(virtio).map(Number).sort()).toEqual([1, 2, 3, 5]); // no device config for rnd
    expect(virtio[CAP_TYPE.COMMON]).toMatchObject({ bar: 4, offset: 0, length: 0x40 });
    expect(virtio[CAP_TYPE.NOTIFY]!.bar).toBe(4);
    expect(r.cr(virtio[CAP_TYPE.NOTIFY]!.at + 16)).toBe(4);
    expect(r.cr(msix + MSIX.CTRL, 2) & 0x7ff).toBe(1); // 2 vectors: config + 1 queue
  });

  test("modern-only: 1af4:1044 rev 1, no I/O BAR", () => {
    const r = rig({ transitional: false });
    expect(r.cr(CFG.DEVICE, 2)).toBe(0x1044);
    expect(r.cr(CFG.REVISION, 1)).toBe(1);
    expect(r.cr(CFG.SUBDEVICE, 2)).toBeGreaterThanOrEqual(0x40);
    expect(r.cr(CFG.BAR0)).toBe(0);
  });
});

describe("virtio-pci: modern interface", () => {
  test("init sequence, MSI-X vectors, notification → ioeventfd attach + fallback signal → I/O processing → MSI", () => {
    const r = rig();
    const { m, drv } = bringUpModern(r);
    const { addrs } = drv.add([{ len: 32, write: true }]);
    expect(drv.publish()).toBe(true);
    m.notifyQueue(0); // trapped: attach the ioeventfds, then signal the eventfd ourselves
    expect(r.signals).toEqual([100]);
    const notifyAddr = m.notify;
    expect(r.attachCalls).toContainEqual(["mmio", notifyAddr, 2, null, 100, false]);
    expect(r.attachCalls).toContainEqual(["pio", r.bar(0) + LEGACY.QUEUE_NOTIFY, 2, 0, 100, false]);
    const before = r.attachCalls.length;
    m.notifyQueue(0);
    expect(r.attachCalls.length).toBe(before); // attached once
    ioReady(r);
    expect(r.drains).toEqual([100]);
    const used = drv.collect();
    expect(used.length).toBe(1);
    expect(used[0]!.len).toBe(32);
    expect(r.mem.readBytes(addrs[0]!, 32).some((b) => b !== 0)).toBe(true);
    expect(r.platform.msis).toEqual([[0xfee01000, 0x41]]);
    expect(r.platform.irqs).toEqual([]);
  });

  test("the ioeventfds follow a BAR the guest moves", () => {
    const r = rig();
    const { m } = bringUpModern(r);
    m.notifyQueue(0);
    const old = m.notify;
    r.attachCalls.length = 0;
    const newBase = 0xc800_0000;
    r.cw(CFG.BAR0 + 16, newBase);
    r.cw(CFG.BAR0 + 20, 0);
    expect(r.attachCalls).toEqual([["mmio", old, 2, null, 100, true], ["mmio", newBase + 0x3000, 2, null, 100, false]]);
    r.attachCalls.length = 0;
    r.cw(CFG.COMMAND, COMMAND.IO, 2); // memory decoding off
    expect(r.attachCalls).toEqual([["mmio", newBase + 0x3000, 2, null, 100, true]]);
  });

  test("without eventfds: the pending bit and the I/O Worker's deadline pass", () => {
    const r = rig({ fds: false });
    const { m, drv } = bringUpModern(r, { fds: false });
    drv.add([{ len: 8, write: true }]);
    drv.publish();
    const io = r.io.fn as VirtioPciFunction;
    expect(io.pollSources()).toEqual([]);
    expect(io.deadline()).toBe(Infinity);
    m.notifyQueue(0);
    expect(r.platform.wakes).toBe(2); // one at DRIVER_OK, one now
    expect(io.deadline()).toBe(0);
    io.expire();
    expect(io.deadline()).toBe(Infinity);
    expect(drv.collect()).toEqual([{ id: 0, len: 8 }]);
    expect(r.platform.msis.length).toBe(1);
  });

  test("feature negotiation: unoffered bits or a missing VERSION_1 refuse FEATURES_OK", () => {
    const r = rig();
    const m = modern(r);
    const S = VIRTIO_STATUS;
    for (const f of [VIRTIO_F.VERSION_1 | (1n << 40n), VIRTIO_F.VERSION_1 | 1n, VIRTIO_F.EVENT_IDX]) {
      m.w8(COMMON.STATUS, 0);
      m.w8(COMMON.STATUS, S.ACKNOWLEDGE | S.DRIVER);
      m.accept(f);
      m.w8(COMMON.STATUS, S.ACKNOWLEDGE | S.DRIVER | S.FEATURES_OK);
      expect(m.c8(COMMON.STATUS)).toBe(S.ACKNOWLEDGE | S.DRIVER);
    }
    m.accept(VIRTIO_F.VERSION_1);
    m.w8(COMMON.STATUS, S.ACKNOWLEDGE | S.DRIVER | S.FEATURES_OK);
    expect(m.c8(COMMON.STATUS)).toBe(S.ACKNOWLEDGE | S.DRIVER | S.FEATURES_OK);
    m.accept(VIRTIO_F.VERSION_1 | VIRTIO_F.EVENT_IDX); // after FEATURES_OK: ignored
    m.w32(COMMON.GFSELECT, 0);
    expect(m.c32(COMMON.GF)).toBe(0);
    // the device feature window beyond bit 63 reads 0
    m.w32(COMMON.DFSELECT, 2);
    expect(m.c32(COMMON.DF)).toBe(0);
  });

  test("queue registers: sizes must be powers of two ≤ max, bad vectors read NO_VECTOR, absent queues read 0", () => {
    const r = rig();
    const m = modern(r);
    expect(m.c16(COMMON.NUMQ)).toBe(1);
    m.w16(COMMON.Q_SELECT, 0);
    m.w16(COMMON.Q_SIZE, 48);
    expect(m.c16(COMMON.Q_SIZE)).toBe(64);
    m.w16(COMMON.Q_SIZE, 128);
    expect(m.c16(COMMON.Q_SIZE)).toBe(64);
    m.w16(COMMON.Q_SIZE, 8);
    expect(m.c16(COMMON.Q_SIZE)).toBe(8);
    m.w16(COMMON.Q_MSIX, 7);
    expect(m.c16(COMMON.Q_MSIX)).toBe(VIRTIO_MSI_NO_VECTOR);
    m.w16(COMMON.MSIX, 2);
    expect(m.c16(COMMON.MSIX)).toBe(VIRTIO_MSI_NO_VECTOR);
    expect(m.c16(COMMON.Q_NOFF)).toBe(0);
    m.w16(COMMON.Q_SELECT, 1);
    expect(m.c16(COMMON.Q_SIZE)).toBe(0);
    m.w16(COMMON.Q_ENABLE, 1);
    expect(m.c16(COMMON.Q_ENABLE)).toBe(0);
  });

  test("reset (status 0) disables queues and forgets features and vectors", () => {
    const r = rig();
    const { m } = bringUpModern(r);
    m.w8(COMMON.STATUS, 0);
    expect(m.c8(COMMON.STATUS)).toBe(0);
    m.w16(COMMON.Q_SELECT, 0);
    expect(m.c16(COMMON.Q_ENABLE)).toBe(0);
    expect(m.c16(COMMON.Q_SIZE)).toBe(64);
    expect(m.c16(COMMON.Q_MSIX)).toBe(VIRTIO_MSI_NO_VECTOR);
    expect(m.c16(COMMON.MSIX)).toBe(VIRTIO_MSI_NO_VECTOR);
    expect(m.c32(COMMON.Q_DESCLO)).toBe(0);
    m.w32(COMMON.GFSELECT, 0);
    expect(m.c32(COMMON.GF)).toBe(0);
  });

  test("buffers made available before DRIVER_OK are processed at DRIVER_OK, not before", () => {
    const r = rig();
    const m = modern(r);
    const S = VIRTIO_STATUS;
    m.w8(COMMON.STATUS, S.ACKNOWLEDGE | S.DRIVER);
    m.accept(VIRTIO_F.VERSION_1);
    m.w8(COMMON.STATUS, S.ACKNOWLEDGE | S.DRIVER | S.FEATURES_OK);
    const layout = modernLayout(0x200000, 8);
    const drv = new FakeDriver(r.mem, layout, { base: 0x400000, size: MiB });
    m.w16(COMMON.Q_SIZE, 8);
    m.w32(COMMON.Q_DESCLO, layout.desc); m.w32(COMMON.Q_AVAILLO, layout.avail); m.w32(COMMON.Q_USEDLO, layout.used);
    m.w16(COMMON.Q_ENABLE, 1);
    drv.add([{ len: 4, write: true }]);
    drv.publish();
    m.notifyQueue(0);
    ioReady(r);
    expect(drv.collect()).toEqual([]); // no DRIVER_OK yet
    r.signals.length = 0;
    m.w8(COMMON.STATUS, S.ACKNOWLEDGE | S.DRIVER | S.FEATURES_OK | S.DRIVER_OK);
    expect(r.signals).toEqual([100]);
    ioReady(r);
    expect(drv.collect()).toEqual([{ id: 0, len: 4 }]);
    // MSI-X disabled: INTx with ISR bit 0
    const gsi = 16 + pirqOf(SLOT, 1);
    expect(r.platform.irqs).toEqual([[gsi, 1]]);
    expect(m.readIsr()).toBe(1);
    expect(r.platform.irqs).toEqual([[gsi, 1], [gsi, 0]]);
    expect(m.readIsr()).toBe(0);
  });

  test("event idx: used_event suppresses the MSI; masked vectors go pending and fire on unmask", () => {
    const r = rig();
    const { m, drv } = bringUpModern(r, { eventIdx: true });
    drv.setUsedEvent(1); // interrupt once the 2nd buffer is used
    drv.add([{ len: 4, write: true }]);
    drv.publish();
    m.notifyQueue(0);
    ioReady(r);
    expect(drv.collect().length).toBe(1);
    expect(drv.availEvent()).toBe(1);
    expect(r.platform.msis).toEqual([]);
    drv.add([{ len: 4, write: true }]);
    expect(drv.publish()).toBe(true);
    ioReady(r);
    expect(r.platform.msis).toEqual([[0xfee01000, 0x41]]);
    // mask vector 1: the next interrupt is held in the PBA
    const { table } = programMsix(r, [[0xfee00000, 0x40], [0xfee01000, 0x41]]);
    r.bus.write("mmio", table + 16 + 12, 4, MSIX.VCTRL_MASK);
    drv.setUsedEvent(2);
    drv.add([{ len: 4, write: true }]);
    drv.publish();
    ioReady(r);
    expect(r.platform.msis.length).toBe(1);
    expect(r.vcpu.fn.msixPending(1)).toBe(true);
    r.bus.write("mmio", table + 16 + 12, 4, 0);
    expect(r.platform.msis.length).toBe(2);
  });

  test("a broken queue: DEVICE_NEEDS_RESET, config interrupt, no more processing until reset", () => {
    const r = rig();
    const { m, drv } = bringUpModern(r);
    drv.setAvailIdx(100); // far more than a queue ahead
    m.notifyQueue(0);
    expect(() => ioReady(r)).not.toThrow();
    expect(m.c8(COMMON.STATUS) & VIRTIO_STATUS.NEEDS_RESET).toBe(VIRTIO_STATUS.NEEDS_RESET);
    expect(r.platform.msis).toEqual([[0xfee00000, 0x40]]); // config vector
    expect(r.platform.logs.join("\n")).toMatch(/needs reset/);
    m.w8(COMMON.STATUS, 0);
    expect(m.c8(COMMON.STATUS)).toBe(0);
  });

  test("PCI configuration access capability reads and writes the modern BAR", () => {
    const r = rig();
    const m = modern(r);
    const { virtio } = r.caps();
    const c = virtio[CAP_TYPE.PCI_CFG]!.at;
    m.w8(COMMON.STATUS, VIRTIO_STATUS.ACKNOWLEDGE);
    r.cw(c + 4, 4, 1); // bar
    r.cw(c + 12, 1); // length
    r.cw(c + 8, COMMON.STATUS); // offset
    expect(r.cr(c + 16, 1)).toBe(VIRTIO_STATUS.ACKNOWLEDGE);
    r.cw(c + 16, VIRTIO_STATUS.ACKNOWLEDGE | VIRTIO_STATUS.DRIVER);
    expect(m.c8(COMMON.STATUS)).toBe(VIRTIO_STATUS.ACKNOWLEDGE | VIRTIO_STATUS.DRIVER);
    r.cw(c + 12, 2);
    r.cw(c + 8, COMMON.NUMQ);
    expect(r.cr(c + 16, 2)).toBe(1);
  });

  test("config changes bump config_generation and interrupt once the driver is up", () => {
    const r = rig();
    const { m } = bringUpModern(r);
    const t = (r.vcpu.fn as VirtioPciFunction).transport;
    const g = m.c8(COMMON.CFGGEN);
    r.vcpu.fn.lock.with(() => t.configChanged());
    expect(m.c8(COMMON.CFGGEN)).toBe((g + 1) & 0xff);
    expect(r.platform.msis).toEqual([[0xfee00000, 0x40]]);
  });
});

describe("virtio-pci: legacy interface", () => {
  test("legacy driver: features, PFN, status, notify through BAR0; INTx, then MSI-X with the moved config", () => {
    const r = rig();
    const io = r.bar(0);
    const inl = (o: number) => r.bus.read("pio", io + o, 4), inw = (o: number) => r.bus.read("pio", io + o, 2), inb = (o: number) => r.bus.read("pio", io + o, 1);
    const outl = (o: number, v: number) => r.bus.write("pio", io + o, 4, v), outw = (o: number, v: number) => r.bus.write("pio", io + o, 2, v), outb = (o: number, v: number) => r.bus.write("pio", io + o, 1, v);
    outb(LEGACY.STATUS, 0);
    outb(LEGACY.STATUS, VIRTIO_STATUS.ACKNOWLEDGE | VIRTIO_STATUS.DRIVER);
    const host = inl(LEGACY.HOST_FEATURES);
    expect(host & (1 << 28)).not.toBe(0); // indirect
    expect(host & (1 << 29)).not.toBe(0); // event idx
    outl(LEGACY.GUEST_FEATURES, 1 << 28);
    expect(inl(LEGACY.GUEST_FEATURES)).toBe(1 << 28);
    outw(LEGACY.QUEUE_SEL, 0);
    const n = inw(LEGACY.QUEUE_NUM);
    expect(n).toBe(64);
    const pfn = 0x300;
    const drv = new FakeDriver(r.mem, legacyLayout(pfn, n), { base: 0x400000, size: MiB });
    outl(LEGACY.QUEUE_PFN, pfn);
    expect(inl(LEGACY.QUEUE_PFN)).toBe(pfn);
    outb(LEGACY.STATUS, VIRTIO_STATUS.ACKNOWLEDGE | VIRTIO_STATUS.DRIVER | VIRTIO_STATUS.DRIVER_OK);
    expect(inb(LEGACY.STATUS)).toBe(7);
    expect(r.signals.splice(0)).toEqual([100]); // DRIVER_OK: look at the queue once
    drv.add([{ len: 16, write: true }], { indirect: true });
    drv.publish();
    outw(LEGACY.QUEUE_NOTIFY, 0);
    expect(r.signals).toEqual([100]);
    ioReady(r);
    expect(drv.collect()).toEqual([{ id: 0, len: 16 }]);
    const gsi = 16 + pirqOf(SLOT, 1);
    expect(r.platform.irqs).toEqual([[gsi, 1]]);
    expect(inb(LEGACY.ISR)).toBe(1);
    expect(r.platform.irqs).toEqual([[gsi, 1], [gsi, 0]]);
    // MSI-X on: vectors at 20/22, device config moves to 24
    programMsix(r, [[0xfee00000, 0x50], [0xfee00000, 0x51]]);
    outw(LEGACY.CONFIG_VECTOR, 0);
    outw(LEGACY.QUEUE_VECTOR, 1);
    expect(inw(LEGACY.CONFIG_VECTOR)).toBe(0);
    expect(inw(LEGACY.QUEUE_VECTOR)).toBe(1);
    outw(LEGACY.QUEUE_VECTOR, 9);
    expect(inw(LEGACY.QUEUE_VECTOR)).toBe(VIRTIO_MSI_NO_VECTOR);
    outw(LEGACY.QUEUE_VECTOR, 1);
    drv.add([{ len: 16, write: true }]);
    drv.publish();
    outw(LEGACY.QUEUE_NOTIFY, 0);
    ioReady(r);
    expect(drv.collect().length).toBe(1);
    expect(r.platform.msis).toEqual([[0xfee00000, 0x51]]);
    // PFN 0 disables the queue; status 0 resets
    outl(LEGACY.QUEUE_PFN, 0);
    expect(inl(LEGACY.QUEUE_PFN)).toBe(0);
    outb(LEGACY.STATUS, 0);
    expect(inb(LEGACY.STATUS)).toBe(0);
    expect(inl(LEGACY.GUEST_FEATURES)).toBe(0);
  });

  test("a notify for a queue that does not exist is ignored", () => {
    const r = rig();
    r.bus.write("pio", r.bar(0) + LEGACY.QUEUE_NOTIFY, 2, 5);
    expect(r.signals).toEqual([]);
  });
});

describe("virtio-rnd", () => {
  test("fills only the writable part, at most the writable length, with random bytes; readable buffers untouched", () => {
    const r = rig();
    const { m, drv } = bringUpModern(r);
    const ro = Uint8Array.from({ length: 16 }, (_, i) => i);
    const guard = 0x500000;
    r.mem.fill(guard, 4096, 0xee);
    const { addrs } = drv.add([{ len: 16, data: ro }, { len: 100, write: true, addr: guard + 8 }]);
    const { addrs: a2 } = drv.add([{ len: 3000, write: true }, { len: 5, write: true }], { indirect: true });
    drv.publish();
    m.notifyQueue(0);
    ioReady(r);
    const used = drv.collect();
    expect(used.map((u) => u.len)).toEqual([100, 3005]);
    expect(r.mem.readBytes(addrs[0]!, 16)).toEqual(ro);
    expect([...r.mem.readBytes(guard, 8)]).toEqual(Array(8).fill(0xee));
    expect([...r.mem.readBytes(guard + 108, 64)]).toEqual(Array(64).fill(0xee));
    const out = r.mem.readBytes(a2[0]!, 3000);
    // random: not constant, roughly uniform
    expect(new Set(out).size).toBeGreaterThan(200);
  });

  test("a request larger than the per-request cap gets the cap", () => {
    const r = rig();
    const { m, drv } = bringUpModern(r);
    drv.add([{ len: 100_000, write: true }]);
    drv.publish();
    m.notifyQueue(0);
    ioReady(r);
    expect(drv.collect()).toEqual([{ id: 0, len: 65536 }]);
  });

  test("through the registry: virtio-rnd builds one transitional function; prepare's eventfds reach it", () => {
    const emu = PCI_EMULATIONS["virtio-rnd"]!;
    expect(emu.describe({ bus: 0, slot: 5, fn: 0 }, { device: "virtio-rnd" })).toEqual([{ addr: { bus: 0, slot: 5, fn: 0 }, intPin: 1, model: "virtio-rnd" }]);
    let next = 40;
    const opened = openVirtioNotifiers({ pci: { "0.5.0": { device: "virtio-rnd" }, "0.0.0": { device: "hostbridge" } } }, () => next++);
    expect(opened).toEqual({ "0.5.0": [40] });
    expect(notifyFdsFor({ virtioNotify: opened }, { bus: 0, slot: 5, fn: 0 })).toEqual([40]);
    const closed: number[] = [];
    closeVirtioNotifiers(opened, (fd) => closed.push(fd));
    expect(closed).toEqual([40]);
  });
});

describe("virtio-pci: hostile register traffic", () => {
  test("20k random accesses to config space, every BAR and the notify area never throw; the device stays sane", () => {
    let x = 0x1234567;
    const rnd = () => { x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0; return x; };
    const r = rig();
    const { m, drv } = bringUpModern(r);
    drv.add([{ len: 8, write: true }]);
    drv.publish();
    const bars = [r.bar(0), r.bar(1), r.bar(4)];
    const sizes = [1, 2, 4] as const;
    let accesses = 0;
    for (let i = 0; i < 20_000; i++) {
      const size = sizes[rnd() % 3]!;
      const v = rnd();
      const kind = rnd() % 10;
      const write = rnd() % 2 === 0;
      try {
        if (kind === 0) {
          // config space, but leave the BARs and command alone so the rig keeps finding the device
          const reg = 0x40 + (rnd() % 0xc0);
          const a = reg - (reg % size);
          if (write) r.cw(a, v, size); else r.cr(a, size);
        } else if (kind <= 3) {
          const o = rnd() % 32, a = bars[0]! + o - (o % size);
          if (write) r.bus.write("pio", a, size, v); else r.bus.read("pio", a, size);
        } else if (kind <= 4) {
          const o = rnd() % 0x1000, a = bars[1]! + o - (o % size);
          if (write) r.bus.write("mmio", a, size, v); else r.bus.read("mmio", a, size);
        } else {
          const o = [0, 0x1000, 0x2000, 0x3000][rnd() % 4]! + (rnd() % 0x48), a = bars[2]! + o - (o % size);
          if (write) r.bus.write("mmio", a, size, v); else r.bus.read("mmio", a, size);
        }
        if (rnd() % 16 === 0) ioReady(r);
        if (rnd() % 64 === 0) (r.io.fn as VirtioPciFunction).expire();
        accesses++;
      } catch (e) {
        throw new Error(`access ${i} threw: ${(e as Error).stack}`);
      }
    }
    expect(accesses).toBe(20_000);
    // still a working device after a reset and a fresh bring-up
    r.bus.write("mmio", m.common + COMMON.STATUS, 1, 0);
    r.cw(CFG.COMMAND, COMMAND.IO | COMMAND.MEMORY | COMMAND.BUS_MASTER, 2);
    r.signals.length = 0;
    const again = bringUpModern(r);
    again.drv.add([{ len: 8, write: true }]);
    again.drv.publish();
    again.m.notifyQueue(0);
    ioReady(r);
    expect(again.drv.collect().map((u) => u.len)).toEqual([8]);
  });
});
