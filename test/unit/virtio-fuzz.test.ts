/**
 * Every virtio device's request parser under the device-level fuzzer (test/unit/virtio-fuzz-rig.ts):
 * random and malformed descriptor chains through the real transport, with plausible request headers of
 * each device mixed in. Each target reports executions, chains and findings; any finding fails.
 * TSBHYVE_FUZZ_ITERS sets the iteration count (default 3000 per device).
 */
import { afterAll, expect, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { closeBlock, openBlock } from "../../src/block/backend.ts";
import { viewCopyEngine } from "../../src/block/io.ts";
import { blkDeviceInfo, BLK_T } from "../../src/virtio/blk/index.ts";
import { blkModel } from "../../src/virtio/devices/blk.ts";
import { createConsole } from "../../src/virtio/devices/console.ts";
import { createInput, inputModelIdentity } from "../../src/virtio/devices/input.ts";
import { rndModel } from "../../src/virtio/devices/rnd.ts";
import { createVirtioPci } from "../../src/virtio/pci.ts";
import { fuzzDevice, type FuzzTarget, type Rng } from "./virtio-fuzz-rig.ts";

const ITERS = Number(process.env.TSBHYVE_FUZZ_ITERS ?? 3000);
const dir = mkdtempSync(join(tmpdir(), "tsb-vfuzz-"));
const path = join(dir, "disk.img");
writeFileSync(path, new Uint8Array(1 << 20));
const disk = openBlock({ path });
const roDisk = openBlock({ path, ro: true });
afterAll(() => { closeBlock(disk); closeBlock(roDisk); rmSync(dir, { recursive: true, force: true }); });

const le = (...parts: [number, 2 | 4 | 8][]) => {
  const b = new Uint8Array(parts.reduce((a, [, n]) => a + n, 0)), v = new DataView(b.buffer);
  let o = 0;
  for (const [x, n] of parts) { if (n === 8) v.setBigUint64(o, BigInt(x), true); else if (n === 4) v.setUint32(o, x >>> 0, true); else v.setUint16(o, x & 0xffff, true); o += n; }
  return b;
};

const blkHeader = (r: Rng) => le(
  [r.pick([BLK_T.IN, BLK_T.OUT, BLK_T.FLUSH, BLK_T.GET_ID, BLK_T.DISCARD, BLK_T.WRITE_ZEROES, BLK_T.IN, BLK_T.OUT, r.u32()]), 4], [0, 4],
  [r.pick([0, 1, 2047, 2048, r.int(4096), 2 ** 52]), 8],
);

const TARGETS: (FuzzTarget & { iters?: number })[] = [
  { name: "virtio-rnd", build: (inp) => createVirtioPci(inp, rndModel()) },
  {
    name: "virtio-blk", header: blkHeader,
    build: (inp) => createVirtioPci(inp, blkModel(blkDeviceInfo(disk, { numQueues: 2, queueSize: 64 }), { queueSize: 64, engine: viewCopyEngine })),
  },
  {
    name: "virtio-blk (ro)", header: blkHeader,
    build: (inp) => createVirtioPci(inp, blkModel(blkDeviceInfo(roDisk, { queueSize: 64 }), { queueSize: 64, engine: viewCopyEngine })),
  },
  {
    // queues: port 0 rx/tx, control rx/tx, port 1 rx/tx, port 2 rx/tx; receive queues hold buffers
    name: "virtio-console", returns: (q) => q % 2 === 1,
    header: (r, q) => q === 3 ? le([r.pick([0, 1, 2, r.u32()]), 4], [r.int(9), 2], [r.int(2), 2]) : r.bytes(r.int(64)),
    build: (inp) => createConsole({ ...inp, ports: [{ id: 0 }, { id: 1, name: "org.fuzz" }, { id: 2 }] }).fn,
  },
  {
    // eventq holds buffers until there are events; statusq returns every chain
    name: "virtio-input (keyboard)", returns: (q) => q === 1,
    header: (r) => le([r.pick([0, 1, 17, 20, r.int(0x20)]), 2], [r.int(0x300), 2], [r.pick([0, 1, r.u32()]), 4]),
    build: (inp) => createInput({ ...inp, device: { identity: inputModelIdentity("keyboard") } }).fn,
  },
];

for (const t of TARGETS) {
  test(`fuzz ${t.name}: ${ITERS} iterations of hostile chains`, () => {
    const t0 = performance.now();
    const s = fuzzDevice(t, ITERS);
    console.log(`fuzz ${t.name}: ${s.executions} executions, ${s.chains} chains, ${s.returned} returned, ${s.resets} device resets needed, ${s.findings.length} findings (${(performance.now() - t0).toFixed(0)} ms)`);
    expect(s.findings).toEqual([]);
    expect(s.chains).toBeGreaterThan(ITERS);
    expect(s.returned).toBeGreaterThan(0);
  }, 120_000);
}

test("the fuzzer finds a device that writes a readable buffer, leaks chains or throws", () => {
  const bad = (what: "write" | "leak" | "throw"): FuzzTarget => ({
    name: `bad-${what}`,
    build: (inp) => createVirtioPci(inp, {
      type: 4, model: "bad", classCode: 0, queueSizes: [16], features: 0n, configSize: 0,
      processQueue(q, tr) {
        const vq = tr.queue(q);
        for (let c = vq.pop(); c; c = vq.pop()) {
          if (what === "throw") throw new Error("boom");
          if (what === "write" && c.readable[0]) tr.mem.write8(c.readable[0].gpa, 0xee);
          if (what !== "leak") vq.push(c.head, 0);
        }
      },
    }),
  });
  for (const w of ["write", "leak", "throw"] as const) {
    const s = fuzzDevice(bad(w), 50);
    expect(s.findings.length).toBeGreaterThan(0);
    expect(s.findings[0]).toContain(w === "write" ? "readable buffers" : w === "leak" ? "not returned" : "exception escaped");
  }
}, 60_000);
