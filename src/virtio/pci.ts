/**
 * virtio over PCI (virtio 1.2 §4.1), one transport for every virtio device model.
 *
 * A transitional function (default, for device types that have a transitional ID) serves both
 * interfaces; a modern-only one drops the legacy BAR:
 *
 *   BAR0  I/O, legacy register block (§4.1.4.10): host features 0, guest features 4, queue PFN 8,
 *         queue size 12, queue select 14, queue notify 16, status 18, ISR 19, then (MSI-X enabled)
 *         config vector 20, queue vector 22; device config at 24 (MSI-X enabled) or 20.
 *   BAR1  32-bit memory, MSI-X table at 0 and PBA at 0x800 (vectors: one per queue + config).
 *   BAR4  64-bit memory, the modern structures, each found through a vendor capability (0x09):
 *         0x0000 common configuration, 0x1000 ISR, 0x2000 device configuration, 0x3000 notifications
 *         (queue q at 0x3000 + 4·q: queue_notify_off = q, notify_off_multiplier = 4).
 *   config space: the virtio capabilities from 0x40 (common, notify, ISR, device, PCI cfg access),
 *         then MSI-X.
 *
 * IDs: vendor 0x1AF4; transitional device 0x1000+, revision 0, subsystem device = virtio type;
 * modern-only device 0x1040 + type, revision 1, subsystem device 0x1100.
 *
 * Features: 64 bits (bigint) offered through 32-bit windows; the transport adds VERSION_1,
 * RING_INDIRECT_DESC and RING_EVENT_IDX to the model's. FEATURES_OK is refused (stays clear) when the
 * driver accepted a bit we did not offer or, on the modern interface, did not accept VERSION_1. The
 * legacy interface sees and sets bits 0-31 only.
 *
 * Status: the driver can only add bits (ACKNOWLEDGE, DRIVER, FEATURES_OK, DRIVER_OK, FAILED); writing 0
 * resets the device (queues disabled, features, vectors, ISR cleared, INTx deasserted). A broken queue
 * sets DEVICE_NEEDS_RESET and sends a configuration-change interrupt.
 *
 * Notifications (driver → device): each queue may have an eventfd, opened on the main thread
 * (src/virtio/notify.ts) and passed in by fd number. The transport asks the platform to attach them as
 * ioeventfds on the queue's notify addresses (modern: 2-byte MMIO write at its notify address; legacy:
 * 2-byte port write of the queue index at BAR0 + 16, by datamatch), so notifications never leave the
 * kernel. Attachment follows the BARs: it is (re)done when the guest's config writes move them, and on
 * any notification that still reaches us (the fallback: the vCPU signals the eventfd). Without an
 * eventfd (or before wiring), a trapped notification sets a pending bit in shared state and wakes the
 * I/O Worker, whose `deadline()`/`expire()` pass runs the queue. Either way queues are processed on the
 * I/O Worker, under the device lock.
 *
 * Interrupts (device → driver): MSI-X when enabled (queue or config vector through
 * PciFunction.signalMsi, which honours the function mask, per-vector masks and pending bits;
 * VIRTIO_MSI_NO_VECTOR = none); else the ISR (bit 0 queue, bit 1 config; reading it clears it and
 * deasserts) with INTx, or with the single MSI message of a function built without MSI-X (bhyve's
 * virtio_msix = false) once the driver enabled MSI. Platform.msi is a VM-wide call, legal from the I/O Worker. (Later: one irqfd per
 * vector with an MSI route, signalled without a syscall into KVM's MSI path from userspace.)
 */
import type { MapGeneration } from "../devices/bus.ts";
import type { AccessSize, DeviceContext, PollSource, Space } from "../devices/device.ts";
import { defineLayout, type StateBlock } from "../devices/state.ts";
import { PciFunction, type BarSpec, type ConfigReg, type PciAddress, type PciFunctionSpec } from "../pci/function.ts";
import type { PirqRouter } from "../pci/intx.ts";
import { CFG, STATUS as PCI_STATUS } from "../pci/regs.ts";
import { host, POLLIN } from "../vmm/index.ts";
import { Virtqueue, virtqueueLayout } from "./queue.ts";

export const VIRTIO_VENDOR = 0x1af4;
export const VIRTIO_MSI_NO_VECTOR = 0xffff;

/** Device status bits (§2.1). */
export const VIRTIO_STATUS = {
  ACKNOWLEDGE: 1, DRIVER: 2, DRIVER_OK: 4, FEATURES_OK: 8, NEEDS_RESET: 64, FAILED: 128,
} as const;
const DRIVER_SETTABLE = VIRTIO_STATUS.ACKNOWLEDGE | VIRTIO_STATUS.DRIVER | VIRTIO_STATUS.DRIVER_OK | VIRTIO_STATUS.FEATURES_OK | VIRTIO_STATUS.FAILED;

/** Reserved feature bits (§6), as bigint masks. */
export const VIRTIO_F = {
  INDIRECT_DESC: 1n << 28n,
  EVENT_IDX: 1n << 29n,
  VERSION_1: 1n << 32n,
} as const;
const TRANSPORT_FEATURES = VIRTIO_F.INDIRECT_DESC | VIRTIO_F.EVENT_IDX | VIRTIO_F.VERSION_1;

/** Transitional PCI device IDs by virtio device type (§4.1.2). */
export const TRANSITIONAL_ID: Readonly<Record<number, number>> = { 1: 0x1000, 2: 0x1001, 5: 0x1002, 3: 0x1003, 8: 0x1004, 4: 0x1005, 9: 0x1009 };

/** struct virtio_pci_common_cfg offsets (§4.1.4.3). */
export const COMMON = {
  DFSELECT: 0x00, DF: 0x04, GFSELECT: 0x08, GF: 0x0c, MSIX: 0x10, NUMQ: 0x12, STATUS: 0x14, CFGGEN: 0x15,
  Q_SELECT: 0x16, Q_SIZE: 0x18, Q_MSIX: 0x1a, Q_ENABLE: 0x1c, Q_NOFF: 0x1e,
  Q_DESCLO: 0x20, Q_DESCHI: 0x24, Q_AVAILLO: 0x28, Q_AVAILHI: 0x2c, Q_USEDLO: 0x30, Q_USEDHI: 0x34,
  Q_NDATA: 0x38, Q_RESET: 0x3a, SIZE: 0x40,
} as const;

/** Legacy register block in BAR0 (§4.1.4.10). */
export const LEGACY = {
  HOST_FEATURES: 0, GUEST_FEATURES: 4, QUEUE_PFN: 8, QUEUE_NUM: 12, QUEUE_SEL: 14, QUEUE_NOTIFY: 16,
  STATUS: 18, ISR: 19, CONFIG_VECTOR: 20, QUEUE_VECTOR: 22,
  /** device config offset without / with MSI-X enabled */
  CONFIG: 20, CONFIG_MSIX: 24,
  PFN_SHIFT: 12, ALIGN: 4096,
} as const;

/** The modern BAR's layout. */
export const MODERN = { BAR: 4, SIZE: 0x4000, COMMON: 0x0000, ISR: 0x1000, DEVICE: 0x2000, NOTIFY: 0x3000, NOTIFY_MULT: 4 } as const;
export const MSIX_BAR = 1;
export const LEGACY_BAR = 0;

/** virtio_pci_cap cfg_type values */
export const CAP_TYPE = { COMMON: 1, NOTIFY: 2, ISR: 3, DEVICE: 4, PCI_CFG: 5 } as const;
/** where the virtio capabilities start in config space */
export const VIRTIO_CAP_BASE = 0x40;

/** What a device type supplies to the transport. */
export interface VirtioDeviceModel {
  /** virtio device type (§5): 1 net, 2 block, 4 entropy, ... */
  readonly type: number;
  /** persona for messages */
  readonly model: string;
  /** base class << 16 | subclass << 8 | prog-if */
  readonly classCode: number;
  /** maximum size of each queue (powers of two) */
  readonly queueSizes: readonly number[];
  /** device-specific feature bits offered */
  readonly features: bigint;
  /** bytes of device-specific configuration */
  readonly configSize: number;
  configRead?(offset: number, size: AccessSize): number;
  configWrite?(offset: number, size: AccessSize, value: number): void;
  /** Process queue `q` (I/O Worker, device lock held, DRIVER_OK set). Pop and push through t.queue(q). */
  processQueue(q: number, t: VirtioTransport): void;
  /** Device reset (also at power-on; lock held; no Platform calls). */
  reset?(): void;
  /** Host fds the device itself wants watched on the I/O Worker (sockets, evdev), besides its queues. */
  pollSources?(): PollSource[];
}

/** Attach an eventfd as the kernel's handler of guest writes (KVM ioeventfd); VmHandle.ioeventfd. */
export interface IoEventFdAttach {
  ioeventfd(space: Space, addr: number, len: number, datamatch: number | null, fd: number, detach: boolean): void;
}

export interface VirtioPciInput {
  ctx: DeviceContext;
  addr: PciAddress;
  gen: MapGeneration;
  router?: PirqRouter;
  /** one eventfd per queue (opened on the main thread); missing → the pending-bit fallback */
  notifyFds?: readonly number[];
  /** the platform's ioeventfd service (missing → notifications always trap, then the eventfd/fallback) */
  attach?: IoEventFdAttach;
  /** eventfd signal/drain (default: the shim's host helpers) */
  eventfd?: { signal(fd: number): void; drain(fd: number): void };
  /** serve the legacy interface too (default: when the type has a transitional ID) */
  transitional?: boolean;
  /** MSI-X capability (default true) */
  msix?: boolean;
  /** identity overrides (pcireg.*) */
  overrides?: Partial<PciFunctionSpec>;
}

/** Most virtqueues a function may have (bhyve's virtio-console needs 34: 16 ports). */
export const MAX_QUEUES = 64;
const PENDING_WORDS = MAX_QUEUES / 32;

const transportLayout = defineLayout("virtio-pci", 2, {
  drvFeatures: { type: "u32", count: 2 },
  devFeatSel: "u32",
  drvFeatSel: "u32",
  /** queues notified while no eventfd carried it (queue q: bit q % 32 of word q / 32) */
  pending: { type: "u32", count: PENDING_WORDS },
  /** where the ioeventfds are attached (0 = not) */
  attachedMem: "f64",
  attachedPio: "u32",
  queueSel: "u16",
  configVector: "u16",
  status: "u8",
  generation: "u8",
  isr: "u8",
  /** the driver used the legacy interface since the last reset */
  legacy: "u8",
});

const ONES = [0, 0xff, 0xffff, 0, 0xffffffff] as const;
const lo32 = (b: bigint) => Number(b & 0xffffffffn);
const hi32 = (b: bigint) => Number((b >> 32n) & 0xffffffffn);

/** The PCI function of a virtio device: a PciFunction that also has I/O Worker hooks. */
export class VirtioPciFunction extends PciFunction {
  transport!: VirtioTransport;
  pollSources(): PollSource[] { return this.transport.pollSources(); }
  deadline(): number { return this.transport.deadline(); }
  expire(): void { this.transport.expire(); }
}

export class VirtioTransport {
  readonly fn: VirtioPciFunction;
  readonly queues: Virtqueue[];
  readonly mem: DeviceContext["mem"];
  readonly transitional: boolean;
  readonly msixVectors: number;
  readonly offered: bigint;
  private readonly st: StateBlock<typeof transportLayout.spec>["s"];
  private readonly ctx: DeviceContext;
  private readonly notifyFds: readonly number[];
  private readonly attach: IoEventFdAttach | undefined;
  private readonly efd: { signal(fd: number): void; drain(fd: number): void };
  private readonly caps: { common: number; notify: number; isr: number; device: number; pciCfg: number; end: number };
  private attachWarned = false;

  constructor(inp: VirtioPciInput, readonly model: VirtioDeviceModel) {
    const nq = model.queueSizes.length;
    if (nq < 1 || nq > MAX_QUEUES) throw new Error(`${model.model}: 1-${MAX_QUEUES} queues supported, got ${nq}`);
    this.ctx = inp.ctx;
    this.mem = inp.ctx.mem;
    const tid = TRANSITIONAL_ID[model.type];
    this.transitional = (inp.transitional ?? tid !== undefined) && tid !== undefined;
    const msix = inp.msix ?? true;
    this.msixVectors = msix ? nq + 1 : 0;
    this.offered = model.features | TRANSPORT_FEATURES;
    this.notifyFds = inp.notifyFds ?? [];
    if (this.notifyFds.length && this.notifyFds.length !== nq) throw new Error(`${model.model}: ${nq} queues but ${this.notifyFds.length} notify eventfds`);
    this.attach = inp.attach;
    this.efd = inp.eventfd ?? { signal: (fd) => host.signal(fd), drain: (fd) => { host.drain(fd); } };

    // vendor capabilities, laid out from 0x40
    let at = VIRTIO_CAP_BASE;
    const take = (len: number) => { const o = at; at += len; return o; };
    this.caps = {
      common: take(16), notify: take(20), isr: take(16), device: model.configSize ? take(16) : 0, pciCfg: take(20), end: 0,
    };
    this.caps.end = at;
    const regs = this.capRegs();

    const legacySize = Math.max(32, 2 ** Math.ceil(Math.log2(LEGACY.CONFIG_MSIX + model.configSize)));
    const bars: (BarSpec | undefined)[] = [];
    if (this.transitional) bars[LEGACY_BAR] = { kind: "io", size: legacySize, read: (o, s) => this.legacyRead(o, s), write: (o, s, v) => this.legacyWrite(o, s, v) };
    if (msix) bars[MSIX_BAR] = { kind: "mem32", size: 0x1000 };
    bars[MODERN.BAR] = { kind: "mem64", size: MODERN.SIZE, read: (o, s) => this.modernRead(o, s), write: (o, s, v) => this.modernWrite(o, s, v) };
    const spec: PciFunctionSpec = {
      model: model.model,
      vendor: VIRTIO_VENDOR,
      device: this.transitional ? tid! : 0x1040 + model.type,
      revision: this.transitional ? 0 : 1,
      classCode: model.classCode,
      subVendor: VIRTIO_VENDOR,
      subDevice: this.transitional ? model.type : 0x1100,
      intPin: 1,
      bars,
      msix: msix ? { vectors: this.msixVectors, bar: MSIX_BAR, tableOffset: 0, pbaOffset: 0x800 } : undefined,
      // without MSI-X (bhyve's virtio_msix = false): one MSI message for everything, the ISR says why
      msi: msix ? undefined : { vectors: 1, addr64: true },
      capBase: this.caps.end,
      regs,
      configWritten: (_fn, offset, size) => this.configWritten(offset, size),
      powerOn: () => this.powerOn(),
      ...inp.overrides,
    };
    this.fn = new VirtioPciFunction(inp.ctx, inp.addr, spec, { gen: inp.gen, router: inp.router });
    this.fn.transport = this;
    this.st = inp.ctx.arena.alloc(transportLayout).s;
    this.queues = model.queueSizes.map((size, q) => new Virtqueue(this.mem, inp.ctx.arena.alloc(virtqueueLayout), q, size, {
      onBroken: (i, reason) => this.queueBroken(i, reason),
    }));
  }

  // ---------------------------------------------------------------------------------------------
  // capabilities

  private capRegs(): ConfigReg[] {
    const regs: ConfigReg[] = [];
    const m = this.model;
    const cap = (o: number, type: number, len: number, offset: number, length: number) => {
      // cap_vndr, cap_next (linked at power-on), cap_len, cfg_type | bar, id, pad | offset | length
      regs.push({ offset: o, size: 4, value: 0x09 | (len << 16) | (type << 24) });
      regs.push({ offset: o + 4, size: 4, value: type === CAP_TYPE.PCI_CFG ? 0 : MODERN.BAR, wmask: type === CAP_TYPE.PCI_CFG ? 0xff : 0 });
      regs.push({ offset: o + 8, size: 4, value: offset, wmask: type === CAP_TYPE.PCI_CFG ? 0xffffffff : 0 });
      regs.push({ offset: o + 12, size: 4, value: length, wmask: type === CAP_TYPE.PCI_CFG ? 0xffffffff : 0 });
    };
    const c = this.caps;
    cap(c.common, CAP_TYPE.COMMON, 16, MODERN.COMMON, COMMON.SIZE);
    cap(c.notify, CAP_TYPE.NOTIFY, 20, MODERN.NOTIFY, MODERN.NOTIFY_MULT * m.queueSizes.length);
    regs.push({ offset: c.notify + 16, size: 4, value: MODERN.NOTIFY_MULT });
    cap(c.isr, CAP_TYPE.ISR, 16, MODERN.ISR, 1);
    if (c.device) cap(c.device, CAP_TYPE.DEVICE, 16, MODERN.DEVICE, m.configSize);
    cap(c.pciCfg, CAP_TYPE.PCI_CFG, 20, 0, 0);
    regs.push({ offset: c.pciCfg + 16, size: 4, value: 0, wmask: 0xffffffff });
    return regs;
  }

  /** Link the virtio capabilities in front of the generic ones (called from the function's powerOn). */
  private linkCaps(): void {
    const fn = this.fn, c = this.caps;
    const list = [c.common, c.notify, c.isr, c.device, c.pciCfg].filter((o) => o);
    const rest = fn.c8(CFG.CAP_PTR);
    list.forEach((o, i) => fn.set8(o + 1, list[i + 1] ?? rest));
    fn.set8(CFG.CAP_PTR, list[0]!);
    fn.set16(CFG.STATUS, fn.c16(CFG.STATUS) | PCI_STATUS.CAP_LIST);
  }

  // ---------------------------------------------------------------------------------------------
  // reset and status

  private powerOn(): void {
    this.linkCaps();
    this.st.attachedMem = 0;
    this.st.attachedPio = 0;
    this.st.generation = 0;
    this.resetState();
  }

  /** Device reset: everything the driver set up is forgotten (lock held). */
  private resetState(): void {
    const s = this.st;
    s.status = 0;
    s.drvFeatures[0] = s.drvFeatures[1] = 0;
    s.devFeatSel = s.drvFeatSel = 0;
    s.queueSel = 0;
    s.configVector = VIRTIO_MSI_NO_VECTOR;
    s.isr = 0;
    s.pending.fill(0);
    s.legacy = 0;
    for (const q of this.queues) q.reset(VIRTIO_MSI_NO_VECTOR);
    this.model.reset?.();
  }

  private reset(): void {
    this.resetState();
    this.fn.deassertIntx();
  }

  get status(): number { return this.st.status; }
  /** Features both sides agreed on. */
  get negotiated(): bigint {
    return ((BigInt(this.st.drvFeatures[1]!) << 32n) | BigInt(this.st.drvFeatures[0]!)) & this.offered;
  }

  private writeStatus(v: number, legacy: boolean): void {
    v &= 0xff;
    if (v === 0) { this.reset(); return; }
    const s = this.st, old = s.status;
    let next = old | (v & DRIVER_SETTABLE);
    if ((next & VIRTIO_STATUS.FEATURES_OK) && !(old & VIRTIO_STATUS.FEATURES_OK) && !this.featuresAcceptable(legacy)) {
      next &= ~VIRTIO_STATUS.FEATURES_OK;
    }
    s.status = next;
    if ((next & VIRTIO_STATUS.DRIVER_OK) && !(old & VIRTIO_STATUS.DRIVER_OK)) {
      // buffers made available before DRIVER_OK were not processed: look at every queue now
      for (let q = 0; q < this.queues.length; q++) if (this.queues[q]!.ready) this.kick(q);
    }
  }

  private featuresAcceptable(legacy: boolean): boolean {
    const s = this.st;
    const drv = (BigInt(s.drvFeatures[1]!) << 32n) | BigInt(s.drvFeatures[0]!);
    if (drv & ~this.offered) return false;
    if (!legacy && !(drv & VIRTIO_F.VERSION_1)) return false;
    return true;
  }

  private featuresLocked(): boolean { return (this.st.status & VIRTIO_STATUS.FEATURES_OK) !== 0; }

  // ---------------------------------------------------------------------------------------------
  // interrupts

  /** Queue interrupt (lock held): MSI-X vector, or ISR bit 0 + the MSI message (or INTx). */
  interruptQueue(q: number): void {
    if (this.fn.msixEnabled()) {
      const v = this.queues[q]!.s.vector;
      if (v !== VIRTIO_MSI_NO_VECTOR) this.fn.signalMsi(v);
      return;
    }
    this.st.isr |= 1;
    this.raiseShared();
  }

  /** The one interrupt without MSI-X: the MSI message when the driver enabled MSI, else INTx (ISR set). */
  private raiseShared(): void {
    if (this.fn.msiEnabled()) this.fn.signalMsi(0);
    else this.fn.assertIntx();
  }

  /** Configuration-change interrupt (lock held). */
  interruptConfig(): void {
    this.st.isr |= 2;
    if (this.fn.msixEnabled()) {
      const v = this.st.configVector;
      if (v !== VIRTIO_MSI_NO_VECTOR) this.fn.signalMsi(v);
      return;
    }
    this.raiseShared();
  }

  /** The device changed its configuration (lock held): new generation, interrupt once the driver is up. */
  configChanged(): void {
    this.st.generation = (this.st.generation + 1) & 0xff;
    if (this.st.status & VIRTIO_STATUS.DRIVER_OK) this.interruptConfig();
  }

  private queueBroken(q: number, reason: string): void {
    const s = this.st;
    if (s.status & VIRTIO_STATUS.NEEDS_RESET) return;
    s.status |= VIRTIO_STATUS.NEEDS_RESET;
    this.ctx.platform.log(`${this.fn.name} (${this.model.model}): queue ${q} broken by the driver: ${reason}; device needs reset`);
    if (s.status & VIRTIO_STATUS.DRIVER_OK) this.interruptConfig();
  }

  private readIsr(peek = false): number {
    const v = this.st.isr;
    if (peek) return v;
    this.st.isr = 0;
    this.fn.deassertIntx();
    return v;
  }

  // ---------------------------------------------------------------------------------------------
  // notifications

  queue(q: number): Virtqueue { return this.queues[q]!; }

  /** A notification for queue q reached userspace (vCPU thread, lock held). */
  kick(q: number): void {
    if (!(q >= 0 && q < this.queues.length)) return;
    this.syncNotifiers();
    const fd = this.notifyFds[q];
    if (fd !== undefined) { this.efd.signal(fd); return; }
    this.markPending(q);
    this.ctx.platform.wakeIo();
  }

  /** Run queue q again soon on the I/O Worker (a model that stopped early; lock held). */
  reschedule(q: number): void {
    this.markPending(q);
  }

  private markPending(q: number): void {
    const p = this.st.pending;
    p[q >>> 5] = (p[q >>> 5]! | (1 << (q & 31))) >>> 0;
  }

  /** Attach the eventfds where the BARs are now (lock held; any thread). */
  syncNotifiers(): void {
    const at = this.attach;
    if (!at || !this.notifyFds.length) return;
    const s = this.st;
    const nq = this.queues.length;
    const mem = this.fn.barAddress(MODERN.BAR) ?? 0;
    if (mem !== s.attachedMem) {
      const move = (base: number, detach: boolean) => {
        for (let q = 0; q < nq; q++) this.attachOne("mmio", base + MODERN.NOTIFY + MODERN.NOTIFY_MULT * q, null, this.notifyFds[q]!, detach);
      };
      if (s.attachedMem) move(s.attachedMem, true);
      if (mem) move(mem, false);
      s.attachedMem = mem;
    }
    const pio = this.transitional ? this.fn.barAddress(LEGACY_BAR) ?? 0 : 0;
    if (pio !== s.attachedPio) {
      const move = (base: number, detach: boolean) => {
        for (let q = 0; q < nq; q++) this.attachOne("pio", base + LEGACY.QUEUE_NOTIFY, q, this.notifyFds[q]!, detach);
      };
      if (s.attachedPio) move(s.attachedPio, true);
      if (pio) move(pio, false);
      s.attachedPio = pio;
    }
  }

  private attachOne(space: Space, addr: number, datamatch: number | null, fd: number, detach: boolean): void {
    try {
      this.attach!.ioeventfd(space, addr, 2, datamatch, fd, detach);
    } catch (e) {
      // not fatal: the notification then traps and takes the fallback path
      if (!this.attachWarned) this.ctx.platform.log(`${this.fn.name}: ioeventfd ${detach ? "detach" : "attach"} at ${space} 0x${addr.toString(16)}: ${(e as Error).message}`);
      this.attachWarned = true;
    }
  }

  /** Run queue q (I/O Worker, lock held). */
  process(q: number): void {
    const s = this.st;
    if ((s.status & (VIRTIO_STATUS.DRIVER_OK | VIRTIO_STATUS.NEEDS_RESET)) !== VIRTIO_STATUS.DRIVER_OK) return;
    const vq = this.queues[q];
    if (!vq?.ready) return;
    this.model.processQueue(q, this);
    if (vq.needsInterrupt()) this.interruptQueue(q);
  }

  pollSources(): PollSource[] {
    const queues: PollSource[] = this.notifyFds.map((fd, q) => ({
      fd, events: POLLIN,
      ready: () => {
        this.efd.drain(fd);
        this.fn.lock.acquire();
        try { this.process(q); } finally { this.fn.lock.release(); }
      },
    }));
    return this.model.pollSources ? [...queues, ...this.model.pollSources()] : queues;
  }

  deadline(): number {
    const p = this.st.pending;
    for (let i = 0; i < PENDING_WORDS; i++) if (p[i] !== 0) return 0;
    return Infinity;
  }

  expire(): void {
    this.fn.lock.acquire();
    try {
      const p = this.st.pending;
      const bits = Array.from(p);
      p.fill(0);
      for (let q = 0; q < this.queues.length; q++) if ((bits[q >>> 5]! >>> (q & 31)) & 1) this.process(q);
    } finally { this.fn.lock.release(); }
  }

  // ---------------------------------------------------------------------------------------------
  // config space hooks

  private configWritten(offset: number, size: number): void {
    const touches = (lo: number, len: number) => offset < lo + len && lo < offset + size;
    if (touches(CFG.COMMAND, 2) || touches(CFG.BAR0, 24)) this.syncNotifiers();
    const c = this.caps.pciCfg;
    if (touches(c + 16, 4)) this.pciCfgAccess(true);
    else if (touches(c + 4, 12)) this.pciCfgAccess(false);
  }

  /**
   * VIRTIO_PCI_CAP_PCI_CFG (§4.1.4.9): a write of pci_cfg_data writes the BAR; reads cannot be trapped
   * here (config reads come from config space), so the window is read when the driver sets it up
   * (bar/offset/length), ISR peeked without clearing.
   */
  private pciCfgAccess(write: boolean): void {
    const fn = this.fn, c = this.caps.pciCfg;
    const bar = fn.c8(c + 4), off = fn.c32(c + 8), len = fn.c32(c + 12);
    if (bar !== MODERN.BAR || !(len === 1 || len === 2 || len === 4) || off % len || off + len > MODERN.SIZE) return;
    if (write) { this.modernWrite(off, len as AccessSize, fn.c32(c + 16) & ONES[len as AccessSize]); return; }
    fn.set32(c + 16, this.modernRead(off, len as AccessSize, true));
  }

  // ---------------------------------------------------------------------------------------------
  // modern BAR

  modernRead(off: number, size: AccessSize, peek = false): number {
    if (off < MODERN.COMMON + COMMON.SIZE) return this.commonRead(off - MODERN.COMMON, size);
    if (off === MODERN.ISR) return this.readIsr(peek);
    if (off >= MODERN.DEVICE && off < MODERN.DEVICE + this.model.configSize) return this.deviceConfigRead(off - MODERN.DEVICE, size);
    return 0;
  }

  modernWrite(off: number, size: AccessSize, v: number): void {
    if (off < MODERN.COMMON + COMMON.SIZE) return this.commonWrite(off - MODERN.COMMON, size, v);
    if (off >= MODERN.DEVICE && off < MODERN.DEVICE + this.model.configSize) return this.model.configWrite?.(off - MODERN.DEVICE, size, v);
    if (off >= MODERN.NOTIFY && off < MODERN.NOTIFY + MODERN.NOTIFY_MULT * this.queues.length) this.kick(Math.floor((off - MODERN.NOTIFY) / MODERN.NOTIFY_MULT));
  }

  private deviceConfigRead(off: number, size: AccessSize): number {
    if (!this.model.configRead || off + size > this.model.configSize) return 0;
    return this.model.configRead(off, size) >>> 0;
  }

  private selected(): Virtqueue | undefined { return this.queues[this.st.queueSel]; }

  /** The common configuration as bytes (reads are rare: build, then extract). */
  private commonImage(): DataView {
    const s = this.st, dv = new DataView(new ArrayBuffer(COMMON.SIZE));
    const f = this.offered;
    dv.setUint32(COMMON.DFSELECT, s.devFeatSel, true);
    dv.setUint32(COMMON.DF, s.devFeatSel === 0 ? lo32(f) : s.devFeatSel === 1 ? hi32(f) : 0, true);
    dv.setUint32(COMMON.GFSELECT, s.drvFeatSel, true);
    dv.setUint32(COMMON.GF, s.drvFeatSel < 2 ? s.drvFeatures[s.drvFeatSel]! : 0, true);
    dv.setUint16(COMMON.MSIX, s.configVector, true);
    dv.setUint16(COMMON.NUMQ, this.queues.length, true);
    dv.setUint8(COMMON.STATUS, s.status);
    dv.setUint8(COMMON.CFGGEN, s.generation);
    dv.setUint16(COMMON.Q_SELECT, s.queueSel, true);
    const q = this.selected();
    if (q) {
      const qs = q.s;
      dv.setUint16(COMMON.Q_SIZE, qs.size, true);
      dv.setUint16(COMMON.Q_MSIX, qs.vector, true);
      dv.setUint16(COMMON.Q_ENABLE, qs.ready, true);
      dv.setUint16(COMMON.Q_NOFF, q.index, true);
      dv.setUint32(COMMON.Q_DESCLO, qs.desc[0]!, true); dv.setUint32(COMMON.Q_DESCHI, qs.desc[1]!, true);
      dv.setUint32(COMMON.Q_AVAILLO, qs.avail[0]!, true); dv.setUint32(COMMON.Q_AVAILHI, qs.avail[1]!, true);
      dv.setUint32(COMMON.Q_USEDLO, qs.used[0]!, true); dv.setUint32(COMMON.Q_USEDHI, qs.used[1]!, true);
    }
    return dv;
  }

  private commonRead(off: number, size: AccessSize): number {
    if (off + size > COMMON.SIZE) return 0;
    const dv = this.commonImage();
    return size === 1 ? dv.getUint8(off) : size === 2 ? dv.getUint16(off, true) : dv.getUint32(off, true);
  }

  private commonWrite(off: number, size: AccessSize, v: number): void {
    const s = this.st;
    const q = this.selected();
    const w16 = size === 2, w32 = size === 4;
    switch (off) {
      case COMMON.DFSELECT: if (w32) s.devFeatSel = v; return;
      case COMMON.GFSELECT: if (w32) s.drvFeatSel = v; return;
      case COMMON.GF:
        if (w32 && s.drvFeatSel < 2 && !this.featuresLocked()) s.drvFeatures[s.drvFeatSel] = v >>> 0;
        return;
      case COMMON.MSIX: if (w16) s.configVector = this.vectorOrNone(v); return;
      case COMMON.STATUS: if (size === 1) this.writeStatus(v, false); return;
      case COMMON.Q_SELECT: if (w16) s.queueSel = v; return;
    }
    if (!q) return;
    const qs = q.s;
    switch (off) {
      case COMMON.Q_SIZE:
        if (w16 && !qs.ready && v > 0 && (v & (v - 1)) === 0 && v <= q.maxSize) qs.size = v;
        return;
      case COMMON.Q_MSIX: if (w16) qs.vector = this.vectorOrNone(v); return;
      case COMMON.Q_ENABLE:
        if (w16 && v === 1 && !qs.ready) {
          const f = this.negotiated;
          q.enable({ eventIdx: (f & VIRTIO_F.EVENT_IDX) !== 0n, indirect: (f & VIRTIO_F.INDIRECT_DESC) !== 0n });
        }
        return;
    }
    if (!w32 || qs.ready) return;
    switch (off) {
      case COMMON.Q_DESCLO: qs.desc[0] = v; return;
      case COMMON.Q_DESCHI: qs.desc[1] = v; return;
      case COMMON.Q_AVAILLO: qs.avail[0] = v; return;
      case COMMON.Q_AVAILHI: qs.avail[1] = v; return;
      case COMMON.Q_USEDLO: qs.used[0] = v; return;
      case COMMON.Q_USEDHI: qs.used[1] = v; return;
    }
  }

  /** A vector the driver may map, or NO_VECTOR (how a mapping failure is reported). */
  private vectorOrNone(v: number): number {
    return v < this.msixVectors ? v : VIRTIO_MSI_NO_VECTOR;
  }

  // ---------------------------------------------------------------------------------------------
  // legacy BAR

  private legacyConfigBase(): number { return this.fn.msixEnabled() ? LEGACY.CONFIG_MSIX : LEGACY.CONFIG; }

  legacyRead(off: number, size: AccessSize): number {
    const base = this.legacyConfigBase();
    if (off >= base) return this.deviceConfigRead(off - base, size);
    if (off === LEGACY.ISR) return this.readIsr();
    const s = this.st, q = this.selected();
    const dv = new DataView(new ArrayBuffer(24));
    dv.setUint32(LEGACY.HOST_FEATURES, lo32(this.offered), true);
    dv.setUint32(LEGACY.GUEST_FEATURES, s.drvFeatures[0]!, true);
    dv.setUint32(LEGACY.QUEUE_PFN, q?.ready ? Math.floor(q.descAddr / LEGACY.ALIGN) >>> 0 : 0, true);
    dv.setUint16(LEGACY.QUEUE_NUM, q ? q.maxSize : 0, true);
    dv.setUint16(LEGACY.QUEUE_SEL, s.queueSel, true);
    dv.setUint8(LEGACY.STATUS, s.status);
    dv.setUint16(LEGACY.CONFIG_VECTOR, s.configVector, true);
    dv.setUint16(LEGACY.QUEUE_VECTOR, q ? q.s.vector : VIRTIO_MSI_NO_VECTOR, true);
    if (off + size > base) return 0; // straddles into the device config
    return size === 1 ? dv.getUint8(off) : size === 2 ? dv.getUint16(off, true) : dv.getUint32(off, true);
  }

  legacyWrite(off: number, size: AccessSize, v: number): void {
    const base = this.legacyConfigBase();
    if (off >= base) { this.model.configWrite?.(off - base, size, v); return; }
    const s = this.st, q = this.selected();
    switch (off) {
      case LEGACY.GUEST_FEATURES:
        if (size === 4) { s.legacy = 1; s.drvFeatures[0] = v >>> 0; s.drvFeatures[1] = 0; }
        return;
      case LEGACY.QUEUE_PFN:
        if (size !== 4 || !q) return;
        s.legacy = 1;
        if (v === 0) { q.reset(q.s.vector); return; }
        {
          const n = q.maxSize;
          const desc = (v >>> 0) * LEGACY.ALIGN;
          const avail = desc + 16 * n;
          const used = Math.ceil((avail + 6 + 2 * n) / LEGACY.ALIGN) * LEGACY.ALIGN;
          const f = this.negotiated;
          q.configure({ size: n, desc, avail, used, eventIdx: (f & VIRTIO_F.EVENT_IDX) !== 0n, indirect: (f & VIRTIO_F.INDIRECT_DESC) !== 0n });
        }
        return;
      case LEGACY.QUEUE_SEL: if (size === 2) s.queueSel = v; return;
      case LEGACY.QUEUE_NOTIFY: if (size === 2) this.kick(v); return;
      case LEGACY.STATUS: if (size === 1) { s.legacy = 1; this.writeStatus(v, true); } return;
      case LEGACY.CONFIG_VECTOR: if (size === 2 && this.fn.msixEnabled()) s.configVector = this.vectorOrNone(v); return;
      case LEGACY.QUEUE_VECTOR: if (size === 2 && this.fn.msixEnabled() && q) q.s.vector = this.vectorOrNone(v); return;
    }
  }
}

/** Build the PCI function of a virtio device. */
export function createVirtioPci(inp: VirtioPciInput, model: VirtioDeviceModel): VirtioPciFunction {
  return new VirtioTransport(inp, model).fn;
}
