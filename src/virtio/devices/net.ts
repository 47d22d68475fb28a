/**
 * virtio-net: the network device (virtio 1.2 §5.1), device type 1, transitional PCI ID 1AF4:1000, class
 * network controller (02 00). The network side (features, config, header, the receive and transmit paths)
 * is in src/virtio/net/; the backend is a Linux tap opened on the main thread (src/net/tap.ts,
 * `Prepared.nets`) that reaches every thread as plain data with its fd number.
 *
 * Queues: receiveq 0 and transmitq 1, `queue_size` descriptors each (no control queue, no multiqueue).
 * Features: MAC, STATUS (link up), MTU when `mtu` is set, MRG_RXBUF, CSUM / HOST_TSO4/6 / HOST_ECN /
 * HOST_UFO (the guest may send partial checksums and 64 KiB segments: the tap takes them as they are),
 * GUEST_CSUM / GUEST_TSO4/6 / GUEST_ECN / GUEST_UFO (the tap is told with TUNSETOFFLOAD which of those the
 * guest accepted, so the host stack hands it unsegmented frames with partial checksums).
 *
 * Threads: everything runs on the I/O Worker under the function's lock. The transmitq's and receiveq's
 * notifications arrive there as eventfds (through the transport); the tap fd is watched there too
 * (`pollSources`): POLLIN while the guest has room for a frame, POLLOUT while a frame waits for room in
 * the tap. The set of watched events is recomputed after every run and the I/O Worker woken when it
 * changes. Before the first frame moves after DRIVER_OK (the transport runs every ready queue then), the
 * tap's header size and offloads are brought in line with what the driver negotiated.
 *
 * Back-pressure: with no room in the receiveq the tap is not read, so frames wait in the kernel (and the
 * host stack slows down) instead of being dropped here; a receiveq notification resumes reading. A
 * backend that fails for good (interface deleted) takes the link down (config status, configuration
 * change interrupt); later transmissions are returned unsent and counted.
 */
import type { AccessSize, DeviceContext, PollSource } from "../../devices/device.ts";
import { defineLayout, type StateBlock } from "../../devices/state.ts";
import type { PciEmulation } from "../../pci/registry-types.ts";
import { host, netHost, POLLERR, POLLHUP, POLLIN, POLLOUT } from "../../vmm/index.ts";
import { notifyKey } from "../notify.ts";
import { createVirtioPci, VIRTIO_STATUS, type VirtioDeviceModel, type VirtioPciInput, type VirtioPciFunction, type VirtioTransport } from "../pci.ts";
import { pciWhere, virtioPciInput } from "../emulation.ts";
import {
  clearRxPool, NET_CONFIG_BYTES, NET_DEFAULT_QUEUE_SIZE, netConfig, RX_POOL_FIELDS, netFeatures, netHdrLen, receiveFrames, tapOffloads, transmitFrames, VIRTIO_ID_NET,
  type FrameIo, type NetCounters, type NetDeviceInfo,
} from "../net/index.ts";
import { configRead, configWrite } from "../config-space.ts";

export { NET_DEFAULT_QUEUE_SIZE };
export const RXQ = 0, TXQ = 1;
export const NET_QUEUE_COUNT = 2;
/** Frames one run moves before it lets the I/O Worker serve others. */
const BUDGET = 256;
const POLLNVAL = 32;

const netLayout = defineLayout("virtio-net", 1, {
  /** events of the tap fd in the I/O Worker's current poll set */
  pollEvents: "u16",
  /** the receive path has room and the tap may have frames: watch POLLIN */
  rxReady: "u8",
  /** a frame waits for room in the tap: watch POLLOUT */
  txBlocked: "u8",
  linkUp: "u8",
  /** the backend failed for good */
  failed: "u8",
  /** header size and offloads set on the tap (-1: to be set) */
  tapHdr: "i32",
  tapOffloads: "i32",
  rxFrames: "f64", rxBytes: "f64", rxDropped: "f64", rxErrors: "f64",
  txFrames: "f64", txBytes: "f64", txDropped: "f64", txErrors: "f64",
  /** receive chains gathered and held between runs (src/virtio/net/rx.ts) */
  ...RX_POOL_FIELDS,
});
type NetState = StateBlock<typeof netLayout.spec>["s"];

/** The tap's frame I/O through the shim (readv/writev straight into / out of guest RAM). */
export const tapFrameIo = (fd: number): FrameIo => ({
  readv: (iov) => netHost.readFrame(fd, iov),
  writev: (iov) => netHost.writev(fd, iov),
});

export interface NetBackendOps {
  io: FrameIo;
  /** set the tap's header size / offloads; 0 or -errno */
  setHdr(size: number): number;
  setOffload(bits: number): number;
}

export const tapOps = (fd: number): NetBackendOps => ({
  io: tapFrameIo(fd),
  setHdr: (n) => netHost.tapSetVnetHdrSize(fd, n),
  setOffload: (b) => netHost.tapSetOffload(fd, b),
});

export class NetDevice {
  t!: VirtioTransport;
  readonly s: NetState;
  private readonly ops: NetBackendOps;

  constructor(private readonly ctx: DeviceContext, readonly dev: NetDeviceInfo, o: { ops?: NetBackendOps; log?: (msg: string) => void } = {}) {
    this.s = ctx.arena.alloc(netLayout).s;
    this.ops = o.ops ?? tapOps(dev.fd);
    this.log = o.log ?? ((m) => ctx.platform.log(m));
  }

  private readonly log: (msg: string) => void;

  model(): VirtioDeviceModel {
    return {
      type: VIRTIO_ID_NET,
      model: "virtio-net",
      classCode: 0x02_00_00,
      queueSizes: [this.dev.queueSize, this.dev.queueSize],
      features: netFeatures(this.dev),
      configSize: NET_CONFIG_BYTES,
      configRead: (off, size: AccessSize) => configRead(new DataView(netConfig(this.dev, this.s.linkUp === 1).buffer), off, size),
      configWrite: () => {}, // the MAC is read-only: VIRTIO_NET_F_CTRL_MAC_ADDR is not offered
      processQueue: (q, t) => { this.t = t; this.run(q === RXQ ? "rx" : "tx"); },
      reset: () => this.reset(),
      pollSources: () => this.pollSources(),
    };
  }

  /** Counters (rx/tx frames, bytes, drops, errors) — a snapshot. */
  counters(): NetCounters {
    const s = this.s;
    return { rxFrames: s.rxFrames, rxBytes: s.rxBytes, rxDropped: s.rxDropped, rxErrors: s.rxErrors, txFrames: s.txFrames, txBytes: s.txBytes, txDropped: s.txDropped, txErrors: s.txErrors };
  }

  private reset(): void {
    const s = this.s;
    s.rxReady = s.txBlocked = 0;
    s.tapHdr = s.tapOffloads = -1;
    clearRxPool(s);
    s.linkUp = s.failed ? 0 : 1;
  }

  private get live(): boolean {
    return !!this.t && (this.t.status & (VIRTIO_STATUS.DRIVER_OK | VIRTIO_STATUS.NEEDS_RESET)) === VIRTIO_STATUS.DRIVER_OK;
  }

  /** The tap's header size and offloads as the driver negotiated them (I/O Worker, before frames move). */
  private syncTap(): boolean {
    const s = this.s, f = this.t.negotiated;
    const hdr = netHdrLen(f), off = tapOffloads(f);
    if (s.tapHdr !== hdr) {
      const r = this.ops.setHdr(hdr);
      if (r < 0) { this.fail("TUNSETVNETHDRSZ", -r); return false; }
      s.tapHdr = hdr;
    }
    if (s.tapOffloads !== off) {
      const r = this.ops.setOffload(off);
      if (r < 0) { this.fail("TUNSETOFFLOAD", -r); return false; }
      s.tapOffloads = off;
    }
    return true;
  }

  /** The backend is gone: link down, configuration-change interrupt, stop watching it (lock held). */
  private fail(what: string, errno: number): void {
    const s = this.s;
    if (s.failed) return;
    s.failed = 1;
    s.linkUp = 0;
    s.rxReady = s.txBlocked = 0;
    this.log(`virtio-net ${this.dev.ifname}: ${what}: ${host.errnoName(errno)}; backend failed, link down`);
    this.t.configChanged();
  }

  /** Run one direction (lock held, I/O Worker), interrupt as the driver wants, fix the watched events. */
  private run(dir: "rx" | "tx" | "both"): void {
    if (!this.live) return;
    const s = this.s, t = this.t;
    const counters = s as unknown as NetCounters;
    const log = (m: string) => this.log(`virtio-net ${this.dev.ifname}: ${m}`);
    if (!s.failed) this.syncTap(); // on failure: transmissions below are discarded, nothing is read
    if (dir !== "rx") {
      const r = transmitFrames({ vq: t.queue(TXQ), mem: t.mem, io: this.ops.io, negotiated: t.negotiated, counters, log, discard: s.failed === 1 }, BUDGET);
      s.txBlocked = r.kind === "blocked" ? 1 : 0;
      if (r.kind === "budget") t.reschedule(TXQ);
      if (r.kind === "failed") this.fail("write", r.errno);
      if (t.queue(TXQ).needsInterrupt()) t.interruptQueue(TXQ);
    }
    if (dir !== "tx" && !s.failed) {
      const r = receiveFrames({ vq: t.queue(RXQ), mem: t.mem, io: this.ops.io, negotiated: t.negotiated, mtu: this.dev.mtu, counters, pool: s, log }, BUDGET);
      s.rxReady = r.kind === "drained" || r.kind === "budget" ? 1 : 0;
      if (r.kind === "failed") this.fail("read", r.errno);
      if (t.queue(RXQ).needsInterrupt()) t.interruptQueue(RXQ);
    }
    if (this.wantedEvents() !== s.pollEvents) this.ctx.platform.wakeIo();
  }

  private wantedEvents(): number {
    const s = this.s;
    if (!this.live || s.failed) return 0;
    return (s.rxReady ? POLLIN : 0) | (s.txBlocked ? POLLOUT : 0);
  }

  /** I/O Worker: the tap fd with the events wanted now (nothing while idle). */
  pollSources(): PollSource[] {
    if (!this.t) return [];
    const lock = this.t.fn.lock;
    lock.acquire();
    try {
      const ev = this.wantedEvents();
      this.s.pollEvents = ev;
      if (!ev) return [];
      return [{
        fd: this.dev.fd, events: ev,
        ready: (revents) => {
          lock.acquire();
          try {
            if (revents & (POLLERR | POLLHUP | POLLNVAL)) {
              if (this.live) this.fail("poll", revents & POLLNVAL ? 9 : 77);
            } else {
              this.run(revents & POLLOUT ? (revents & POLLIN ? "both" : "tx") : "rx");
            }
            return this.wantedEvents() === this.s.pollEvents;
          } finally { lock.release(); }
        },
      }];
    } finally { lock.release(); }
  }
}

export interface NetInput extends VirtioPciInput {
  dev: NetDeviceInfo;
  ops?: NetBackendOps;
  log?: (msg: string) => void;
}

/** The PCI function of a virtio-net device (its tap reaches the I/O Worker through the model). */
export function createNet(inp: NetInput): { fn: VirtioPciFunction; net: NetDevice } {
  const net = new NetDevice(inp.ctx, inp.dev, { ops: inp.ops, log: inp.log });
  const fn = createVirtioPci(inp, net.model());
  net.t = fn.transport;
  return { fn, net };
}

export const virtioNet: PciEmulation = {
  doc: "virtio network device: transitional 1af4:1000 (modern + legacy), Linux tap backend (backend = tapN, created if missing), mac, mtu, queue_size; mergeable buffers, checksum/TSO/UFO offloads; pcireg.* overrides",
  describe: (addr) => [{ addr, intPin: 1, model: "virtio-net" }],
  create(inp) {
    const where = pciWhere(inp);
    const dev = inp.prepared.nets?.[notifyKey(inp.addr)];
    if (!dev) throw new Error(`${where}: virtio-net backend was not opened`);
    return [createNet({
      ...virtioPciInput(inp),
      dev,
      log: (m) => inp.ctx.platform.log(`${where}: ${m}`),
    }).fn];
  },
};
