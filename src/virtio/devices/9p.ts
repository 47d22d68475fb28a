/**
 * virtio-9p: a host folder shared with the guest over 9P2000.L (virtio 1.2 §5.? "9P transport", the
 * device Linux's 9pnet_virtio drives), device type 9, transitional PCI ID 1AF4:1009, class storage/other.
 *
 * Feature VIRTIO_9P_MOUNT_TAG (bit 0); configuration = le16 tag_len + the tag's bytes (what the guest
 * names in `mount -t 9p -o trans=virtio TAG /mnt`). One request queue: each chain carries one
 * T-message in its readable part and gets the R-message in its writable part; the server
 * (src/virtio/9p/server.ts) answers it synchronously with host calls on the I/O Worker, under the
 * device lock, and the chain goes back with the reply's length.
 *
 * Session state (fids and the host fds behind them) is per-process JS memory of the I/O Worker, the
 * only thread that runs queues. A device reset can come from a vCPU (status 0), so it only bumps
 * `session` in the shared state block; the I/O Worker compares it before each run and drops every fid
 * when it moved. The share's root is opened on first Tattach (the path was checked by the config).
 */
import type { PciEmulation } from "../../pci/registry-types.ts";
import { defineLayout } from "../../devices/state.ts";
import type { DeviceContext } from "../../devices/device.ts";
import { createVirtioPci, type VirtioDeviceModel, type VirtioPciFunction, type VirtioPciInput } from "../pci.ts";
import { pciWhere, virtioPciInput } from "../emulation.ts";
import { NINEP_LIMITS, NinePServer, type NinePLimits } from "../9p/server.ts";
import { configRead, configWrite } from "../config-space.ts";

export const VIRTIO_ID_9P = 9;
export const VIRTIO_9P_F_MOUNT_TAG = 0;
export const NINEP_QUEUE_SIZE = 128;
/** Chains one run serves before it reschedules itself (other devices on the I/O Worker get a turn). */
const BUDGET = 64;

const stateLayout = defineLayout("virtio-9p", 1, {
  /** bumped by every device reset; the I/O Worker drops its fid table when it changes */
  session: "u32",
});

export interface NinePOptions {
  /** mount tag (1-255 bytes) */
  tag: string;
  /** host folder */
  path: string;
  ro: boolean;
  limits?: NinePLimits;
  log?: (msg: string) => void;
}

export interface NinePDevice {
  model: VirtioDeviceModel;
  /** this thread's server (tests look at its fid table and internal-error count) */
  server: NinePServer;
}

/** The model, with its shared state block taken from ctx's arena (call in the same order in every thread). */
export function ninePModel(ctx: DeviceContext, o: NinePOptions): NinePDevice {
  const st = ctx.arena.alloc(stateLayout).s;
  const tag = new TextEncoder().encode(o.tag);
  if (tag.length < 1 || tag.length > 0xffff) throw new Error(`virtio-9p: mount tag of ${tag.length} bytes`);
  const config = new Uint8Array(2 + tag.length);
  new DataView(config.buffer).setUint16(0, tag.length, true);
  config.set(tag, 2);
  const configView = new DataView(config.buffer);
  const server = new NinePServer({ path: o.path, ro: o.ro }, o.limits ?? NINEP_LIMITS, o.log);
  let session = -1;
  const model: VirtioDeviceModel = {
    type: VIRTIO_ID_9P,
    model: "virtio-9p",
    classCode: 0x01_80_00,
    queueSizes: [NINEP_QUEUE_SIZE],
    features: 1n << BigInt(VIRTIO_9P_F_MOUNT_TAG),
    configSize: config.length,
    configRead: (offset, size) => configRead(configView, offset, size),
    configWrite() {},
    reset() { st.session = (st.session + 1) >>> 0; },
    processQueue(q, t) {
      if (session !== st.session) { server.reset(); session = st.session; }
      const vq = t.queue(q);
      vq.disableNotify();
      for (let done = 0; ;) {
        const c = vq.pop();
        if (!c) {
          if (vq.enableNotify()) continue;
          return;
        }
        vq.push(c.head, server.handle(t.mem, c));
        if (++done >= BUDGET) { vq.enableNotify(); t.reschedule(q); return; }
      }
    },
  };
  return { model, server };
}

/** The PCI function for a share (tests pass their own transport input). */
export function createNineP(inp: VirtioPciInput, o: NinePOptions): { fn: VirtioPciFunction; server: NinePServer } {
  const d = ninePModel(inp.ctx, o);
  return { fn: createVirtioPci(inp, d.model), server: d.server };
}

export const virtio9p: PciEmulation = {
  doc: "virtio 9P (9P2000.L) file sharing: transitional 1af4:1009; sharename (mount tag), path (host folder), ro; pcireg.* overrides",
  describe: (addr) => [{ addr, intPin: 1, model: "virtio-9p" }],
  create(inp) {
    const where = pciWhere(inp);
    const t = inp.table;
    if (typeof t.sharename !== "string" || typeof t.path !== "string") throw new Error(`${where}: virtio-9p needs sharename and path`);
    return [createNineP({
      ...virtioPciInput(inp),
    }, { tag: t.sharename, path: t.path, ro: t.ro === true, log: (m) => inp.ctx.platform.log(`${where}: ${m}`) }).fn];
  },
};
