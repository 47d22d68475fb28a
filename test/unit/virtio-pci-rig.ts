/**
 * One virtio function behind the real PCI plumbing for unit tests: config mechanism #1 + ECAM, BARs
 * allocated, the function built twice from the same shared state (as the vCPU thread and the I/O Worker
 * would build it), and a driver's-eye view of it: config space, the virtio capabilities found by walking
 * the capability list, the common configuration, device configuration and notify addresses, and the §3.1.1
 * bring-up with MSI-X (config vector 0, queue q → vector q + 1) that lays out every queue with a FakeDriver.
 * Notifications go to fake eventfds (100 + q) that `kick` serves as the I/O Worker would.
 *
 *   const r = virtioPciRig({ mem, queues: 2, build: (inp) => createVirtioPci(inp, model) });
 *   const [d0] = r.bringUp(wantedFeatures);
 *   d0.add([...]); d0.publish(); r.kick(0); d0.collect();
 */
import { expect } from "bun:test";
import { Bus, sharedMapGeneration } from "../../src/devices/bus.ts";
import type { Device, DeviceContext } from "../../src/devices/device.ts";
import { StateArena } from "../../src/devices/state.ts";
import type { GuestMemory } from "../../src/mem/guest-memory.ts";
import { MEMMAP } from "../../src/platform/map.ts";
import { allocateBars, createConfigMechanism1, createEcam, PciFunctions, PirqRouter, pciWindows } from "../../src/pci/index.ts";
import { CAP_ID, CFG, MSIX } from "../../src/pci/regs.ts";
import { powerOnMachine } from "../../src/vm/machine.ts";
import { POLLIN } from "../../src/vmm/index.ts";
import { CAP_TYPE, COMMON, VIRTIO_F, VIRTIO_STATUS, type VirtioPciFunction, type VirtioPciInput } from "../../src/virtio/pci.ts";
import { FakeDriver, modernLayout } from "./virtio-driver.ts";
import { RecordingPlatform } from "./fake-platform.ts";


/** What `build` may return: the function, or the function with device objects a test wants to reach. */
export type Built<X> = VirtioPciFunction | ({ fn: VirtioPciFunction } & X);

export interface PciRigOptions<X> {
  mem: GuestMemory;
  /** queues of the device (one fake eventfd each: 100 + q) */
  queues: number;
  build(inp: VirtioPciInput, ctx: DeviceContext, platform: RecordingPlatform): Built<X>;
  slot?: number;
  /** size of RAM below the PCI hole for the BAR windows (default 64 MiB) */
  ramBytes?: number;
}

export interface BringUpOptions {
  /** negotiate EVENT_IDX and INDIRECT_DESC (default true) */
  eventIdx?: boolean;
  indirect?: boolean;
  /** where queue q's rings go: base + q · ringStride (default 0x200000, 0x10000) */
  base?: number;
  ringStride?: number;
  /** each queue's FakeDriver buffer area: heapBase + q · heapSize (default 0x1000000, 4 MiB) */
  heapBase?: number;
  heapSize?: number;
  /** sizes to set (default: the device's maximum per queue) */
  queueSize?: number;
  /** called once FEATURES_OK is set, before the queues (e.g. to write device configuration) */
  afterFeatures?: () => void;
  /** called with the queues set up, before DRIVER_OK */
  beforeDriverOk?: () => void;
  /** program and enable MSI-X (default true; false: no vectors, the ISR path) */
  msix?: boolean;
}

export function virtioPciRig<X = object>(o: PciRigOptions<X>) {
  const mem = o.mem, slot = o.slot ?? 4;
  const ecam = (reg: number) => MEMMAP.ecam.base + ((slot << 15) | reg);
  const buf = new SharedArrayBuffer(1 << 20);
  const platform = new RecordingPlatform();
  const signals: number[] = [];
  const notifyFds = Array.from({ length: o.queues }, (_, q) => 100 + q);
  const build = (role: DeviceContext["role"]) => {
    const ctx: DeviceContext = { mem, arena: new StateArena(buf), platform, role };
    const fns = new PciFunctions();
    const router = new PirqRouter(ctx);
    const b = o.build({
      ctx, addr: { bus: 0, slot, fn: 0 }, gen: sharedMapGeneration(ctx.arena), router, notifyFds,
      attach: { ioeventfd: () => {} }, eventfd: { signal: (fd) => signals.push(fd), drain: () => {} },
    }, ctx, platform);
    const fn = "fn" in b ? b.fn : b;
    fns.add(fn);
    allocateBars([fn], pciWindows(o.ramBytes ?? 64 << 20));
    const devices: Device[] = [createConfigMechanism1(ctx, fns, router), createEcam(fns), fn];
    const bus = new Bus();
    for (const d of devices) bus.register(d);
    return { bus, devices, fn, built: b };
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
  const caps: Record<number, { at: number; bar: number; offset: number }> = {};
  let msixCap = 0, msiCap = 0;
  for (let p = cr(CFG.CAP_PTR, 1), g = 0; p && g < 48; p = cr(p + 1, 1), g++) {
    if (cr(p, 1) === CAP_ID.MSIX) msixCap = p;
    if (cr(p, 1) === CAP_ID.MSI) msiCap = p;
    if (cr(p, 1) === CAP_ID.VENDOR) caps[cr(p + 3, 1)] ??= { at: p, bar: cr(p + 4, 1), offset: cr(p + 8) };
  }
  const at = (t: number) => (caps[t] ? bar(caps[t]!.bar) + caps[t]!.offset : 0);
  const common = at(CAP_TYPE.COMMON), device = at(CAP_TYPE.DEVICE), notify = at(CAP_TYPE.NOTIFY), isr = at(CAP_TYPE.ISR);
  const c8 = (off: number) => bus.read("mmio", common + off, 1);
  const c16 = (off: number) => bus.read("mmio", common + off, 2);
  const c32 = (off: number) => bus.read("mmio", common + off, 4);
  const w8 = (off: number, v: number) => bus.write("mmio", common + off, 1, v);
  const w16 = (off: number, v: number) => bus.write("mmio", common + off, 2, v);
  const w32 = (off: number, v: number) => bus.write("mmio", common + off, 4, v);
  const features = (): bigint => {
    w32(COMMON.DFSELECT, 0); const lo = c32(COMMON.DF);
    w32(COMMON.DFSELECT, 1); const hi = c32(COMMON.DF);
    return (BigInt(hi >>> 0) << 32n) | BigInt(lo >>> 0);
  };
  const cfg = (off: number, size: 1 | 2 | 4) => bus.read("mmio", device + off, size);
  const cfgWrite = (off: number, size: 1 | 2 | 4, v: number) => bus.write("mmio", device + off, size, v);
  const status = () => c8(COMMON.STATUS);
  const configGeneration = () => c8(COMMON.CFGGEN);
  const sources = () => (io.fn as VirtioPciFunction).pollSources();
  /** Run what the I/O Worker runs for every eventfd signalled so far. */
  const serveSignals = () => { for (const fd of signals.splice(0)) sources()[fd - 100]!.ready(POLLIN); };

  /**
   * §3.1.1 bring-up: the offered features masked by `want` (plus VERSION_1 and, unless told otherwise,
   * INDIRECT_DESC and EVENT_IDX), MSI-X on, every queue laid out by a FakeDriver, DRIVER_OK; then the
   * notifications DRIVER_OK caused are served. Returns one FakeDriver per queue and the features.
   */
  const bringUp = (want: bigint, b: BringUpOptions = {}) => {
    w8(COMMON.STATUS, 0);
    w8(COMMON.STATUS, VIRTIO_STATUS.ACKNOWLEDGE | VIRTIO_STATUS.DRIVER);
    const eventIdx = b.eventIdx ?? true;
    const f = features() & (want | VIRTIO_F.VERSION_1 | (b.indirect ?? true ? VIRTIO_F.INDIRECT_DESC : 0n) | (eventIdx ? VIRTIO_F.EVENT_IDX : 0n));
    w32(COMMON.GFSELECT, 0); w32(COMMON.GF, Number(f & 0xffffffffn));
    w32(COMMON.GFSELECT, 1); w32(COMMON.GF, Number(f >> 32n));
    w8(COMMON.STATUS, VIRTIO_STATUS.ACKNOWLEDGE | VIRTIO_STATUS.DRIVER | VIRTIO_STATUS.FEATURES_OK);
    expect(status() & VIRTIO_STATUS.FEATURES_OK).toBe(VIRTIO_STATUS.FEATURES_OK);
    b.afterFeatures?.();
    const msix = b.msix ?? true;
    if (msix) {
      const table = bar(cr(msixCap + MSIX.TABLE) & 7) + (cr(msixCap + MSIX.TABLE) & ~7);
      cw(msixCap + MSIX.CTRL, MSIX.CTRL_ENABLE, 2);
      for (let v = 0; v <= o.queues; v++) {
        bus.write("mmio", table + 16 * v, 4, 0xfee00000);
        bus.write("mmio", table + 16 * v + 8, 4, 0x40 + v);
        bus.write("mmio", table + 16 * v + 12, 4, 0);
      }
      w16(COMMON.MSIX, 0);
    }
    const drivers: FakeDriver[] = [];
    const base = b.base ?? 0x200000, stride = b.ringStride ?? 0x10000;
    const heapBase = b.heapBase ?? 0x1000000, heapSize = b.heapSize ?? 4 << 20;
    for (let q = 0; q < o.queues; q++) {
      w16(COMMON.Q_SELECT, q);
      if (b.queueSize) w16(COMMON.Q_SIZE, b.queueSize);
      const size = c16(COMMON.Q_SIZE);
      if (msix) w16(COMMON.Q_MSIX, q + 1);
      const layout = modernLayout(base + q * stride, size);
      drivers.push(new FakeDriver(mem, layout, { base: heapBase + q * heapSize, size: heapSize }, eventIdx));
      w32(COMMON.Q_DESCLO, layout.desc); w32(COMMON.Q_DESCHI, 0);
      w32(COMMON.Q_AVAILLO, layout.avail); w32(COMMON.Q_AVAILHI, 0);
      w32(COMMON.Q_USEDLO, layout.used); w32(COMMON.Q_USEDHI, 0);
      w16(COMMON.Q_ENABLE, 1);
    }
    b.beforeDriverOk?.();
    w8(COMMON.STATUS, VIRTIO_STATUS.ACKNOWLEDGE | VIRTIO_STATUS.DRIVER | VIRTIO_STATUS.FEATURES_OK | VIRTIO_STATUS.DRIVER_OK);
    expect(status() & VIRTIO_STATUS.DRIVER_OK).toBe(VIRTIO_STATUS.DRIVER_OK);
    serveSignals();
    return { drivers, features: f };
  };
  /** Notify queue q (through its notify address) and run what the I/O Worker runs. */
  const kick = (q: number) => {
    w16(COMMON.Q_SELECT, q);
    bus.write("mmio", notify + 4 * c16(COMMON.Q_NOFF), 2, q);
    serveSignals();
  };
  return {
    mem, platform, signals, bus, cr, cw, bar, caps, msixCap, msiCap, common, device, notify, isr,
    c8, c16, c32, w8, w16, w32, features, cfg, cfgWrite, status, configGeneration, sources, serveSignals, bringUp, kick,
    /** what build returned on the vCPU thread and on the I/O Worker */
    vcpu: vcpu.built, io: io.built,
  };
}

export type PciRig<X = object> = ReturnType<typeof virtioPciRig<X>>;
