/**
 * The split virtqueue against a fake driver in fake guest memory: normal and indirect chains,
 * notification suppression both ways (flags and event idx), 16-bit index wrap-around, and every broken
 * case the spec forbids — the queue breaks (onBroken, DEVICE_NEEDS_RESET upstream), throws nothing and
 * writes nothing outside guest memory.
 */
import { describe, expect, test } from "bun:test";
import { StateArena } from "../../src/devices/state.ts";
import { GuestMemory, GiB, MiB, region } from "../../src/mem/guest-memory.ts";
import {
  readChain, segmentIovecs, segmentViews, Virtqueue, virtqueueLayout, writeChain, VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE,
} from "../../src/virtio/queue.ts";
import { FakeDriver, modernLayout } from "./virtio-driver.ts";

function rig(opts: { size?: number; eventIdx?: boolean; indirect?: boolean; mem?: GuestMemory; maxChainBytes?: number } = {}) {
  const mem = opts.mem ?? GuestMemory.fake(16 * MiB);
  const size = opts.size ?? 8;
  const arena = new StateArena(new SharedArrayBuffer(4096));
  const broken: string[] = [];
  const q = new Virtqueue(mem, arena.alloc(virtqueueLayout), 0, 256, { onBroken: (_i, r) => broken.push(r), maxChainBytes: opts.maxChainBytes });
  q.reset();
  const layout = modernLayout(0x10000, size);
  const drv = new FakeDriver(mem, layout, { base: 0x100000, size: 8 * MiB }, !!opts.eventIdx);
  q.configure({ ...layout, eventIdx: opts.eventIdx, indirect: opts.indirect ?? true });
  return { mem, q, drv, broken };
}

const bytes = (n: number, seed = 1) => Uint8Array.from({ length: n }, (_, i) => (i * 7 + seed) & 0xff);

describe("virtqueue: chains", () => {
  test("a readable + writable chain pops with its segments, pushes back through the used ring", () => {
    const { mem, q, drv, broken } = rig();
    const { head, addrs } = drv.add([{ len: 12, data: bytes(12) }, { len: 100, data: bytes(100, 3) }, { len: 64, write: true }]);
    expect(q.pop()).toBeUndefined(); // not yet published
    drv.publish();
    expect(q.pending()).toBe(1);
    const c = q.pop()!;
    expect(c.head).toBe(head);
    expect(c.readable).toEqual([{ gpa: addrs[0]!, len: 12 }, { gpa: addrs[1]!, len: 100 }]);
    expect(c.writable).toEqual([{ gpa: addrs[2]!, len: 64 }]);
    expect(c.readableBytes).toBe(112);
    expect(c.writableBytes).toBe(64);
    expect(readChain(mem, c)).toEqual(new Uint8Array([...bytes(12), ...bytes(100, 3)]));
    expect(readChain(mem, c, 20).length).toBe(20);
    expect(writeChain(mem, c, bytes(80, 9))).toBe(64); // never more than the writable length
    expect(mem.readBytes(addrs[2]!, 64)).toEqual(bytes(80, 9).subarray(0, 64));
    expect(q.pop()).toBeUndefined();
    q.push(c.head, 64);
    expect(drv.collect()).toEqual([{ id: head, len: 64 }]);
    expect(broken).toEqual([]);
  });

  test("writeChain honours an offset across segments", () => {
    const { mem, q, drv } = rig();
    const { addrs } = drv.add([{ len: 4, write: true }, { len: 4, write: true }]);
    drv.publish();
    const c = q.pop()!;
    expect(writeChain(mem, c, Uint8Array.of(1, 2, 3, 4), 2)).toBe(4);
    expect([...mem.readBytes(addrs[0]!, 4), ...mem.readBytes(addrs[1]!, 4)]).toEqual([0, 0, 1, 2, 3, 4, 0, 0]);
  });

  test("indirect tables, alone and after direct descriptors", () => {
    const { mem, q, drv, broken } = rig();
    const { head, addrs } = drv.add([{ len: 8, data: bytes(8) }, { len: 32, write: true }, { len: 16, write: true }], { indirect: true });
    drv.publish();
    const c = q.pop()!;
    expect(c.head).toBe(head);
    expect(c.readable).toEqual([{ gpa: addrs[0]!, len: 8 }]);
    expect(c.writable).toEqual([{ gpa: addrs[1]!, len: 32 }, { gpa: addrs[2]!, len: 16 }]);
    // hand-made: direct readable descriptor 5 → indirect descriptor 6 → table of one writable buffer
    const table = drv.alloc(16);
    const rd = drv.alloc(4), wr = drv.alloc(4);
    drv.writeDesc(drv.desc, 5, rd, 4, VIRTQ_DESC_F_NEXT, 6);
    drv.writeDesc(drv.desc, 6, table, 16, VIRTQ_DESC_F_INDIRECT | VIRTQ_DESC_F_WRITE, 0); // WRITE on it is ignored
    drv.writeDesc(table, 0, wr, 4, VIRTQ_DESC_F_WRITE, 0);
    drv.pushHead(5);
    drv.publish();
    const c2 = q.pop()!;
    expect(c2.readable).toEqual([{ gpa: rd, len: 4 }]);
    expect(c2.writable).toEqual([{ gpa: wr, len: 4 }]);
    expect(broken).toEqual([]);
    expect(mem.valid(table, 16)).toBe(true);
  });

  test("zero-length descriptors are accepted and carry no segment", () => {
    const { q, drv, broken } = rig();
    drv.add([{ len: 0 }, { len: 4, write: true }]);
    drv.publish();
    const c = q.pop()!;
    expect(c.readable).toEqual([]);
    expect(c.writable.length).toBe(1);
    expect(broken).toEqual([]);
  });

  test("16-bit indices wrap: avail and used idx run past 65535", () => {
    const { q, drv, broken } = rig({ size: 4 });
    drv.startAt(65534);
    q.s.lastAvail = 65534; q.s.usedIdx = 65534; q.s.signalled = 65534;
    const seen: number[] = [];
    for (let round = 0; round < 5; round++) {
      drv.add([{ len: 4, write: true }]);
      drv.add([{ len: 4, write: true }]);
      drv.publish();
      for (let c = q.pop(); c; c = q.pop()) { q.push(c.head, round); seen.push(round); }
      expect(drv.collect().map((e) => e.len)).toEqual([round, round]);
    }
    expect(seen.length).toBe(10);
    expect(drv.usedIdx()).toBe((65534 + 10) & 0xffff);
    expect(broken).toEqual([]);
  });

  test("a full ring (queue size outstanding) is fine", () => {
    const { q, drv, broken } = rig({ size: 4 });
    for (let i = 0; i < 4; i++) drv.add([{ len: 1, write: true }]);
    drv.publish();
    expect(q.pending()).toBe(4);
    let n = 0;
    for (let c = q.pop(); c; c = q.pop()) { q.push(c.head, 1); n++; }
    expect(n).toBe(4);
    expect(broken).toEqual([]);
  });

  test("segments may span contiguous RAM regions; views split at the boundary", () => {
    const a = new Uint8Array(MiB), b = new Uint8Array(MiB);
    const mem = new GuestMemory([region(0, a), region(MiB, b)]);
    const { q, drv, broken } = rig({ mem });
    const { addrs } = drv.add([{ len: 64, write: true, addr: MiB - 32 }]);
    drv.publish();
    const c = q.pop()!;
    expect(c.writable).toEqual([{ gpa: addrs[0]!, len: 64 }]);
    const v = segmentViews(mem, c.writable);
    expect(v.map((x) => x.length)).toEqual([32, 32]);
    expect(writeChain(mem, c, bytes(64))).toBe(64);
    expect(mem.readBytes(MiB - 32, 64)).toEqual(bytes(64));
    expect(broken).toEqual([]);
  });
});

test("unpop: the last chains popped come back in order; avail_event stays; more than outstanding throws", () => {
  const { q, drv, broken } = rig({ eventIdx: true });
  const heads = [0, 1, 2, 3].map((k) => drv.add([{ len: 32 + k, write: true }]).head);
  drv.publish();
  const popped = [q.pop()!, q.pop()!, q.pop()!];
  expect(popped.map((c) => c.head)).toEqual(heads.slice(0, 3));
  q.push(popped[0]!.head, 10);
  expect(drv.availEvent()).toBe(3);
  q.unpop(2);
  expect(drv.availEvent()).toBe(3); // the driver still notifies only for buffers after the ones we saw
  expect(q.pending()).toBe(3);
  const again = [q.pop()!, q.pop()!, q.pop()!];
  expect(again.map((c) => [c.head, c.writableBytes])).toEqual([[heads[1], 33], [heads[2], 34], [heads[3], 35]]);
  expect(q.pop()).toBeUndefined();
  expect(() => q.unpop(4)).toThrow(/unpop\(4\) with 3 chains outstanding/);
  q.unpop(0);
  for (const c of again) q.push(c.head, 0);
  expect(drv.collect().map((e) => e.id)).toEqual(heads);
  expect(broken).toEqual([]);
});

test("segmentIovecs: host (address, length) pairs split where regions meet, capped", () => {
  const mem = new GuestMemory([region(0, new Uint8Array(MiB), 0x7000_0000), region(MiB, new Uint8Array(MiB), 0x9000_0000)]);
  const iov = segmentIovecs(mem, [{ gpa: 0x1000, len: 16 }, { gpa: MiB - 8, len: 24 }], 30);
  expect([...iov]).toEqual([0x7000_1000n, 16n, BigInt(0x7000_0000 + MiB - 8), 8n, 0x9000_0000n, 6n]);
  expect(() => segmentIovecs(GuestMemory.fake(MiB), [{ gpa: 0, len: 4 }])).toThrow(/no host address/);
});

describe("virtqueue: notification suppression", () => {
  test("without event idx: VIRTQ_AVAIL_F_NO_INTERRUPT and VIRTQ_USED_F_NO_NOTIFY", () => {
    const { q, drv } = rig();
    drv.add([{ len: 1, write: true }]);
    expect(drv.publish()).toBe(true); // device wants notifications by default
    let c = q.pop()!;
    q.push(c.head, 1);
    expect(q.needsInterrupt()).toBe(true);
    expect(q.needsInterrupt()).toBe(false); // nothing new since
    drv.setAvailFlags(1);
    drv.add([{ len: 1, write: true }]);
    drv.publish();
    c = q.pop()!;
    q.push(c.head, 1);
    expect(q.needsInterrupt()).toBe(false);
    q.disableNotify();
    expect(drv.usedFlags()).toBe(1);
    drv.add([{ len: 1, write: true }]);
    expect(drv.publish()).toBe(false);
    expect(q.enableNotify()).toBe(true); // arrived while disabled
    expect(drv.usedFlags()).toBe(0);
    q.pop();
    expect(q.enableNotify()).toBe(false);
  });

  test("event idx, device → driver: interrupt only when used idx passes used_event", () => {
    const { q, drv } = rig({ eventIdx: true, size: 16 });
    drv.setAvailFlags(1); // must be ignored with event idx
    const run = (n: number) => {
      for (let i = 0; i < n; i++) drv.add([{ len: 1, write: true }]);
      drv.publish();
      for (let c = q.pop(); c; c = q.pop()) q.push(c.head, 1);
      drv.collect();
      return q.needsInterrupt();
    };
    drv.setUsedEvent(0);
    expect(run(1)).toBe(true); // used idx 0 → 1 crosses used_event 0 (and first decision)
    drv.setUsedEvent(5);
    expect(run(2)).toBe(false); // 1 → 3
    expect(run(2)).toBe(false); // 3 → 5
    expect(run(1)).toBe(true); // 5 → 6 writes entry 5
    drv.setUsedEvent(6);
    expect(run(3)).toBe(true); // 6 → 9 passes 6 in the batch
    drv.setUsedEvent(100);
    expect(run(4)).toBe(false);
  });

  test("event idx, driver → device: avail_event follows the device's cursor", () => {
    const { q, drv } = rig({ eventIdx: true });
    drv.add([{ len: 1, write: true }]);
    expect(drv.publish()).toBe(true); // avail_event 0: the first buffer notifies
    q.pop();
    expect(drv.availEvent()).toBe(1);
    q.disableNotify(); // with event idx: stop moving avail_event
    drv.add([{ len: 1, write: true }]);
    expect(drv.publish()).toBe(true); // entry 1 == avail_event 1: still one notification
    q.pop();
    drv.add([{ len: 1, write: true }]);
    expect(drv.publish()).toBe(false); // avail_event stayed at 1
    expect(q.enableNotify()).toBe(true); // and we must look again
    expect(drv.availEvent()).toBe(2);
    q.pop();
    expect(q.enableNotify()).toBe(false);
    drv.add([{ len: 1, write: true }]);
    expect(drv.publish()).toBe(true);
    expect(drv.usedFlags()).toBe(0); // flags stay 0 with event idx
  });
});

describe("virtqueue: broken drivers", () => {
  const outsideRam = 64 * GiB;
  /** Each case builds something forbidden; the queue must break without throwing or writing. */
  const cases: [string, (d: FakeDriver) => void, RegExp][] = [
    ["descriptor loop", (d) => { d.writeDesc(d.desc, 0, d.alloc(8), 8, VIRTQ_DESC_F_NEXT, 1); d.writeDesc(d.desc, 1, d.alloc(8), 8, VIRTQ_DESC_F_NEXT, 0); d.pushHead(0); }, /longer than|loop/],
    ["self loop", (d) => { d.writeDesc(d.desc, 3, d.alloc(8), 8, VIRTQ_DESC_F_NEXT, 3); d.pushHead(3); }, /loop/],
    ["next outside the table", (d) => { d.writeDesc(d.desc, 0, d.alloc(8), 8, VIRTQ_DESC_F_NEXT, 200); d.pushHead(0); }, /outside the table/],
    ["head outside the table", (d) => d.pushHead(9), /outside the table/],
    ["lengths overflowing 2^32", (d) => {
      d.writeDesc(d.desc, 0, 0x100000, 0x20, VIRTQ_DESC_F_NEXT, 1); d.writeDesc(d.desc, 1, 0x100000, 0xffff_fff0, 0, 0); d.pushHead(0);
    }, /longer than 4294967295 bytes/],
    ["buffer outside RAM", (d) => { d.writeDesc(d.desc, 0, outsideRam, 16, VIRTQ_DESC_F_WRITE, 0); d.pushHead(0); }, /outside RAM/],
    ["buffer running off the end of RAM", (d) => { d.writeDesc(d.desc, 0, 16 * MiB - 8, 16, VIRTQ_DESC_F_WRITE, 0); d.pushHead(0); }, /outside RAM/],
    ["address beyond 2^53", (d) => { d.writeDesc(d.desc, 0, 0xffff_ffff_ffff_f000n, 16, 0, 0); d.pushHead(0); }, /outside RAM/],
    ["readable after writable", (d) => {
      d.writeDesc(d.desc, 0, d.alloc(8), 8, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 1); d.writeDesc(d.desc, 1, d.alloc(8), 8, 0, 0); d.pushHead(0);
    }, /readable descriptor after/],
    ["indirect inside indirect", (d) => {
      const t1 = d.alloc(32), t2 = d.alloc(16);
      d.writeDesc(t2, 0, d.alloc(8), 8, VIRTQ_DESC_F_WRITE, 0);
      d.writeDesc(t1, 0, t2, 16, VIRTQ_DESC_F_INDIRECT, 0);
      d.writeDesc(d.desc, 0, t1, 32, VIRTQ_DESC_F_INDIRECT, 0); d.pushHead(0);
    }, /inside an indirect/],
    ["indirect with NEXT", (d) => { const t = d.alloc(16); d.writeDesc(t, 0, d.alloc(8), 8, 0, 0); d.writeDesc(d.desc, 0, t, 16, VIRTQ_DESC_F_INDIRECT | VIRTQ_DESC_F_NEXT, 1); d.pushHead(0); }, /NEXT/],
    ["indirect table of bad length", (d) => { d.writeDesc(d.desc, 0, d.alloc(24), 24, VIRTQ_DESC_F_INDIRECT, 0); d.pushHead(0); }, /multiple of 16/],
    ["indirect table outside RAM", (d) => { d.writeDesc(d.desc, 0, outsideRam, 32, VIRTQ_DESC_F_INDIRECT, 0); d.pushHead(0); }, /outside RAM/],
    ["loop inside an indirect table", (d) => {
      const t = d.alloc(32); d.writeDesc(t, 0, d.alloc(8), 8, VIRTQ_DESC_F_NEXT, 1); d.writeDesc(t, 1, d.alloc(8), 8, VIRTQ_DESC_F_NEXT, 0);
      d.writeDesc(d.desc, 0, t, 32, VIRTQ_DESC_F_INDIRECT, 0); d.pushHead(0);
    }, /loop/],
    ["avail idx jumps more than a queue ahead", (d) => { d.setAvailIdx(9); }, /ahead/],
  ];

  for (const [name, build, why] of cases) {
    test(name, () => {
      const { mem, q, drv, broken } = rig();
      build(drv);
      if (name !== "avail idx jumps more than a queue ahead") drv.publish();
      const before = mem.readBytes(drv.used, 6 + 8 * drv.size);
      expect(() => q.pop()).not.toThrow();
      expect(broken.length).toBe(1);
      expect(broken[0]).toMatch(why);
      expect(q.broken).toBe(true);
      // dead from now on: nothing popped, nothing pushed, no interrupt, onBroken only once
      drv.add([{ len: 4, write: true }]);
      drv.publish();
      expect(q.pop()).toBeUndefined();
      q.push(0, 4);
      expect(q.needsInterrupt()).toBe(false);
      expect(mem.readBytes(drv.used, 6 + 8 * drv.size)).toEqual(before);
      expect(broken.length).toBe(1);
      // a reset and re-enable brings it back
      q.configure({ size: drv.size, desc: drv.desc, avail: drv.avail, used: drv.used, indirect: true });
      expect(q.broken).toBe(false);
    });
  }

  test("indirect without VIRTIO_F_INDIRECT_DESC negotiated", () => {
    const { q, drv, broken } = rig({ indirect: false });
    drv.add([{ len: 4, write: true }], { indirect: true });
    drv.publish();
    expect(q.pop()).toBeUndefined();
    expect(broken[0]).toMatch(/INDIRECT_DESC/);
  });

  test("a device cap on chain bytes", () => {
    const { q, drv, broken } = rig({ maxChainBytes: 1000 });
    drv.add([{ len: 600, write: true }, { len: 600, write: true }]);
    drv.publish();
    expect(q.pop()).toBeUndefined();
    expect(broken[0]).toMatch(/1000 bytes/);
  });

  test("rings outside RAM or misaligned break the queue on first use", () => {
    for (const [desc, avail, used, why] of [
      [64 * GiB, 0x2000, 0x3000, /descriptor table/],
      [0x1000, 64 * GiB, 0x3000, /available ring/],
      [0x1000, 0x2000, 16 * MiB - 8, /used ring/],
      [0x1008, 0x2000, 0x3000, /misaligned/],
      [0x1000, 0x2001, 0x3000, /misaligned/],
      [0x1000, 0x2000, 0x3002, /misaligned/],
    ] as const) {
      const mem = GuestMemory.fake(16 * MiB);
      const arena = new StateArena(new SharedArrayBuffer(4096));
      const broken: string[] = [];
      const q = new Virtqueue(mem, arena.alloc(virtqueueLayout), 0, 256, { onBroken: (_i, r) => broken.push(r) });
      q.configure({ size: 8, desc, avail, used });
      expect(q.pop()).toBeUndefined();
      expect(broken[0]).toMatch(why);
    }
  });
});
