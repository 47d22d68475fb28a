/**
 * virtio-blk as a device: the model (src/virtio/devices/blk.ts) behind the real virtio-pci transport, driven
 * through a Bus by the fake driver over fake guest memory, with a real disk file (I/O through the
 * view-copy engine, since fake memory has no host addresses). Identity, features and config space as a
 * driver reads them; read / write / flush / GET_ID round trips; a read-only disk refuses writes; the
 * used-ring lengths; interrupts follow EVENT_IDX; multiple queues; prepare-side eventfd counts.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { closeBlock, openBlock, type BlockDisk, type BlockOptions } from "../../src/block/backend.ts";
import { viewCopyEngine } from "../../src/block/io.ts";
import { GuestMemory, MiB } from "../../src/mem/guest-memory.ts";
import { PCI_EMULATIONS } from "../../src/pci/index.ts";
import { CFG } from "../../src/pci/regs.ts";
import { POLLIN } from "../../src/vmm/index.ts";
import { BLK_CFG, BLK_F, BLK_S, BLK_T, blkDeviceInfo } from "../../src/virtio/blk/index.ts";
import { blkModel } from "../../src/virtio/devices/blk.ts";
import { openVirtioNotifiers, virtioQueueCount } from "../../src/virtio/notify.ts";
import { COMMON, createVirtioPci, VIRTIO_F } from "../../src/virtio/pci.ts";
import type { FakeDriver } from "./virtio-driver.ts";
import { virtioPciRig } from "./virtio-pci-rig.ts";

const dir = mkdtempSync(join(tmpdir(), "tsb-vblkdev-"));
const disks: BlockDisk[] = [];
afterAll(() => {
  for (const d of disks) closeBlock(d);
  rmSync(dir, { recursive: true, force: true });
});

const SLOT = 4;
let nDisk = 0;

function rig(o: { bytes?: number; disk?: Partial<BlockOptions>; queues?: number; queueSize?: number } = {}) {
  const path = join(dir, `d${nDisk++}.img`);
  const img = new Uint8Array(o.bytes ?? 1 * MiB);
  for (let i = 0; i < img.length; i++) img[i] = (i * 7 + (i >> 9)) & 0xff;
  writeFileSync(path, img);
  const disk = openBlock({ path, ...o.disk });
  disks.push(disk);
  const dev = blkDeviceInfo(disk, { numQueues: o.queues ?? 1, queueSize: o.queueSize ?? 16 });
  const nq = dev.numQueues;
  const r = virtioPciRig({
    mem: GuestMemory.fake(64 * MiB), queues: nq, slot: SLOT,
    build: (inp, _ctx, platform) => createVirtioPci(inp, blkModel(dev, { queueSize: o.queueSize ?? 16, engine: viewCopyEngine, log: (m) => platform.log(m) })),
  });
  /** §3.1.1 bring-up with MSI-X (config vector 0, queue q vector q + 1), EVENT_IDX, FLUSH and MQ. */
  const bringUp = () => r.bringUp((1n << BigInt(BLK_F.FLUSH)) | (1n << BigInt(BLK_F.MQ))).drivers;
  /** Notify queue q and run what the I/O Worker runs when its eventfd fires. */
  const kick = (q: number) => {
    r.w16(COMMON.Q_SELECT, q);
    r.bus.write("mmio", r.notify + 4 * r.c16(COMMON.Q_NOFF), 2, q);
    expect(r.signals.splice(0)).toEqual([100 + q]);
    r.sources()[q]!.ready(POLLIN);
  };
  return { path, img, disk, platform: r.platform, mem: r.mem, cr: r.cr, cfg: r.cfg, features: r.features, bringUp, kick };
}

type Rig = ReturnType<typeof rig>;

function hdr(type: number, sector: number): Uint8Array {
  const b = new Uint8Array(16), v = new DataView(b.buffer);
  v.setUint32(0, type, true);
  v.setBigUint64(8, BigInt(sector), true);
  return b;
}

/** One request: header, data out (readable) or data in (writable), status; returns status and used entry. */
function request(r: Rig, drv: FakeDriver, q: number, type: number, sector: number, o: { out?: Uint8Array; inLen?: number; indirect?: boolean } = {}) {
  const bufs = [{ len: 16, data: hdr(type, sector) }];
  if (o.out) bufs.push({ len: o.out.length, data: o.out });
  if (o.inLen) bufs.push({ len: o.inLen, write: true } as never);
  bufs.push({ len: 1, write: true, data: Uint8Array.of(0xaa) } as never);
  const { head, addrs } = drv.add(bufs, { indirect: o.indirect });
  drv.publish();
  r.kick(q);
  const used = drv.collect();
  expect(used.length).toBe(1);
  expect(used[0]!.id).toBe(head);
  const status = r.mem.read8(addrs.at(-1)!);
  const data = o.inLen ? r.mem.readBytes(addrs[1]!, o.inLen) : undefined;
  return { status, len: used[0]!.len, data };
}

describe("virtio-blk device", () => {
  test("identity, features and config space as the driver sees them", () => {
    const r = rig({ bytes: 2 * MiB, disk: { sectorsize: "512/4096" }, queues: 2, queueSize: 32 });
    expect(r.cr(CFG.VENDOR, 2)).toBe(0x1af4);
    expect(r.cr(CFG.DEVICE, 2)).toBe(0x1001);
    expect(r.cr(CFG.SUBDEVICE, 2)).toBe(2);
    expect(r.cr(CFG.REVISION, 4) >>> 8).toBe(0x010000); // mass storage
    const f = r.features();
    for (const b of [BLK_F.SEG_MAX, BLK_F.BLK_SIZE, BLK_F.FLUSH, BLK_F.TOPOLOGY, BLK_F.MQ, BLK_F.DISCARD, BLK_F.WRITE_ZEROES]) expect((f >> BigInt(b)) & 1n).toBe(1n);
    expect((f >> BigInt(BLK_F.RO)) & 1n).toBe(0n);
    expect(f & VIRTIO_F.VERSION_1).toBe(VIRTIO_F.VERSION_1);
    expect(f & VIRTIO_F.EVENT_IDX).toBe(VIRTIO_F.EVENT_IDX);
    expect(r.cfg(BLK_CFG.capacity, 4)).toBe((2 * MiB) / 512);
    expect(r.cfg(BLK_CFG.capacity + 4, 4)).toBe(0);
    expect(r.cfg(BLK_CFG.seg_max, 4)).toBe(30);
    expect(r.cfg(BLK_CFG.blk_size, 4)).toBe(512);
    expect(r.cfg(BLK_CFG.physical_block_exp, 1)).toBe(3);
    expect(r.cfg(BLK_CFG.num_queues, 2)).toBe(2);
    const drivers = r.bringUp();
    expect(drivers.map((d) => d.size)).toEqual([32, 32]);
  });

  test("read, write, flush and GET_ID round trips; used lengths; MSI per queue vector with EVENT_IDX", () => {
    const r = rig({ disk: { ser: "TSB-SERIAL-1" } });
    const [drv] = r.bringUp();
    // read sectors 2-3: the file's bytes
    const rd = request(r, drv!, 0, BLK_T.IN, 2, { inLen: 1024 });
    expect([rd.status, rd.len]).toEqual([BLK_S.OK, 1025]);
    expect(rd.data).toEqual(r.img.subarray(1024, 2048));
    expect(r.platform.msis).toEqual([[0xfee00000, 0x41]]);
    // write sector 10 through an indirect table, read it back, and find it in the file
    const data = Uint8Array.from({ length: 512 }, (_, i) => (i * 31 + 5) & 0xff);
    const wr = request(r, drv!, 0, BLK_T.OUT, 10, { out: data, indirect: true });
    expect([wr.status, wr.len]).toEqual([BLK_S.OK, 1]);
    expect(request(r, drv!, 0, BLK_T.IN, 10, { inLen: 512 }).data).toEqual(data);
    expect(new Uint8Array(readFileSync(r.path)).subarray(5120, 5632)).toEqual(data);
    const fl = request(r, drv!, 0, BLK_T.FLUSH, 0);
    expect([fl.status, fl.len]).toEqual([BLK_S.OK, 1]);
    const id = request(r, drv!, 0, BLK_T.GET_ID, 0, { inLen: 20 });
    expect([id.status, id.len]).toEqual([BLK_S.OK, 21]);
    expect(new TextDecoder().decode(id.data!.subarray(0, 12))).toBe("TSB-SERIAL-1");
    expect([...id.data!.subarray(12)]).toEqual(Array(8).fill(0));
    // one interrupt per completed batch so far (used_event left at 0 by the driver → only the first)
    expect(r.platform.msis.length).toBeGreaterThanOrEqual(1);
    // errors: beyond capacity → IOERR; unknown type → UNSUPP; both still returned on the used ring
    expect(request(r, drv!, 0, BLK_T.IN, 1 * MiB / 512, { inLen: 512 }).status).toBe(BLK_S.IOERR);
    expect(request(r, drv!, 0, 99, 0).status).toBe(BLK_S.UNSUPP);
    expect(r.platform.logs.some((l) => l.includes("beyond the capacity"))).toBe(true);
  });

  test("interrupts follow used_event: suppressed until the driver moves it", () => {
    const r = rig();
    const [drv] = r.bringUp();
    drv!.setUsedEvent(0);
    request(r, drv!, 0, BLK_T.IN, 0, { inLen: 512 }); // used idx 0 → 1 passes used_event 0: interrupt
    expect(r.platform.msis.length).toBe(1);
    request(r, drv!, 0, BLK_T.IN, 0, { inLen: 512 }); // used_event still 0: none
    expect(r.platform.msis.length).toBe(1);
    drv!.setUsedEvent(2);
    request(r, drv!, 0, BLK_T.IN, 0, { inLen: 512 }); // 2 → 3 passes 2: interrupt
    expect(r.platform.msis.length).toBe(2);
  });

  test("a chain without a status byte is still returned (used 0) and logged", () => {
    const r = rig();
    const [drv] = r.bringUp();
    const { head } = drv!.add([{ len: 16, data: hdr(BLK_T.IN, 0) }]);
    drv!.publish();
    r.kick(0);
    expect(drv!.collect()).toEqual([{ id: head, len: 0 }]);
    expect(r.platform.logs.some((l) => l.includes("no device-writable status byte"))).toBe(true);
  });

  test("read-only disk: RO offered, writes refused with IOERR and the file untouched; reads and flush work", () => {
    const r = rig({ disk: { ro: true } });
    expect((r.features() >> BigInt(BLK_F.RO)) & 1n).toBe(1n);
    expect((r.features() >> BigInt(BLK_F.DISCARD)) & 1n).toBe(0n);
    const [drv] = r.bringUp();
    const wr = request(r, drv!, 0, BLK_T.OUT, 0, { out: new Uint8Array(512).fill(0x55) });
    expect([wr.status, wr.len]).toEqual([BLK_S.IOERR, 1]);
    expect(new Uint8Array(readFileSync(r.path))).toEqual(r.img);
    expect(request(r, drv!, 0, BLK_T.IN, 1, { inLen: 512 }).data).toEqual(r.img.subarray(512, 1024));
    expect(request(r, drv!, 0, BLK_T.FLUSH, 0).status).toBe(BLK_S.OK);
  });

  test("two queues: each runs on its own eventfd and signals its own vector", () => {
    const r = rig({ queues: 2 });
    const [d0, d1] = r.bringUp();
    expect(request(r, d1!, 1, BLK_T.IN, 4, { inLen: 512 }).data).toEqual(r.img.subarray(2048, 2560));
    expect(r.platform.msis.at(-1)).toEqual([0xfee00000, 0x42]);
    expect(request(r, d0!, 0, BLK_T.IN, 4, { inLen: 512 }).data).toEqual(r.img.subarray(2048, 2560));
    expect(r.platform.msis.at(-1)).toEqual([0xfee00000, 0x41]);
  });

  test("registry and prepare: eventfds per configured queue; the emulation needs the prepared disk", () => {
    expect(virtioQueueCount({ device: "virtio-blk" })).toBe(1);
    expect(virtioQueueCount({ device: "virtio-blk", queues: 4 })).toBe(4);
    expect(virtioQueueCount({ device: "hostbridge" })).toBe(0);
    let next = 50;
    expect(openVirtioNotifiers({ pci: { "0.4.0": { device: "virtio-blk", queues: 3 }, "0.5.0": { device: "virtio-rnd" } } }, () => next++))
      .toEqual({ "0.4.0": [50, 51, 52], "0.5.0": [53] });
    const emu = PCI_EMULATIONS["virtio-blk"]!;
    expect(emu.describe({ bus: 0, slot: 4, fn: 0 }, { device: "virtio-blk" })).toEqual([{ addr: { bus: 0, slot: 4, fn: 0 }, intPin: 1, model: "virtio-blk" }]);
  });
});
