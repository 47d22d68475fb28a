/**
 * virtio-rnd: the entropy device (virtio 1.2 §5.4), device type 4, transitional PCI ID 1AF4:1005.
 * One queue (requestq); no feature bits, no configuration. The driver posts device-writable buffers;
 * we fill them from the host's CSPRNG (crypto.getRandomValues straight into guest memory) and return
 * them with the number of bytes written — at most the chain's writable length, and at most
 * MAX_PER_REQUEST per chain (the spec lets the device use less than the whole buffer). Readable
 * buffers are ignored. A run handles at most BUDGET chains, then reschedules itself so a busy guest
 * cannot monopolise the I/O Worker.
 */
import type { PciEmulation } from "../../pci/registry-types.ts";
import { createVirtioPci, type VirtioDeviceModel } from "../pci.ts";
import { virtioPciInput } from "../emulation.ts";
import { segmentViews } from "../queue.ts";

export const VIRTIO_ID_ENTROPY = 4;
export const RND_QUEUE_SIZE = 64;
export const MAX_PER_REQUEST = 64 * 1024;
const BUDGET = 256;
/** crypto.getRandomValues fills at most 65536 bytes per call */
const CRYPTO_CHUNK = 65536;

export function fillRandom(v: Uint8Array): void {
  for (let o = 0; o < v.length; o += CRYPTO_CHUNK) crypto.getRandomValues(v.subarray(o, Math.min(v.length, o + CRYPTO_CHUNK)));
}

export function rndModel(): VirtioDeviceModel {
  return {
    type: VIRTIO_ID_ENTROPY,
    model: "virtio-rnd",
    classCode: 0x00_ff_00,
    queueSizes: [RND_QUEUE_SIZE],
    features: 0n,
    configSize: 0,
    processQueue(q, t) {
      const vq = t.queue(q);
      vq.disableNotify();
      for (let done = 0; ;) {
        const c = vq.pop();
        if (!c) {
          if (vq.enableNotify()) continue; // more arrived while notifications were off
          return;
        }
        let n = 0;
        for (const v of segmentViews(t.mem, c.writable, MAX_PER_REQUEST)) { fillRandom(v); n += v.length; }
        vq.push(c.head, n);
        if (++done >= BUDGET) { vq.enableNotify(); t.reschedule(q); return; }
      }
    },
  };
}

export const virtioRnd: PciEmulation = {
  doc: "virtio entropy device: transitional 1af4:1005 (modern + legacy), one queue filled from the host CSPRNG; pcireg.* overrides",
  describe: (addr) => [{ addr, intPin: 1, model: "virtio-rnd" }],
  create: (inp) => [createVirtioPci(virtioPciInput(inp), rndModel())],
};
