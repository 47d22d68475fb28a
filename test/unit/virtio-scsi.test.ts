/**
 * virtio-scsi as a device: the model (src/virtio/devices/scsi.ts) behind the real virtio-pci transport,
 * driven through a Bus by the fake driver over fake guest memory, with real disk files (view-copy
 * engine). Identity and config space as a driver reads them; the driver-writable sense_size / cdb_size
 * honoured within limits and reset; command requests end to end (INQUIRY, READ, WRITE, CHECK CONDITION
 * with sense and residual, OVERRUN, BAD_TARGET, missing and flat-addressed LUNs, short headers, chains
 * without room for a response); the control queue (TMF, AN); the event queue holding its buffers;
 * several request queues; prepare-side eventfd counts.
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
import { OP, parseSense, scsiLun, scsiTarget, SENSE } from "../../src/scsi/index.ts";
import { scsiModel } from "../../src/virtio/devices/scsi.ts";
import { openVirtioNotifiers, virtioQueueCount } from "../../src/virtio/notify.ts";
import { COMMON, createVirtioPci, VIRTIO_F, VIRTIO_STATUS } from "../../src/virtio/pci.ts";
import { CTRL_T, SCSI_CFG, SCSI_S, scsiDeviceInfo, TMF } from "../../src/virtio/scsi/index.ts";
import type { FakeDriver } from "./virtio-driver.ts";
import { virtioPciRig } from "./virtio-pci-rig.ts";

const dir = mkdtempSync(join(tmpdir(), "tsb-vscsi-"));
const disks: BlockDisk[] = [];
afterAll(() => {
  for (const d of disks) closeBlock(d);
  rmSync(dir, { recursive: true, force: true });
});

const SLOT = 6;
let nDisk = 0;

function image(bytes: number): { path: string; img: Uint8Array<ArrayBuffer> } {
  const path = join(dir, `d${nDisk++}.img`);
  const img = new Uint8Array(bytes);
  for (let i = 0; i < img.length; i++) img[i] = (i * 7 + (i >> 9)) & 0xff;
  writeFileSync(path, img);
  return { path, img };
}

function rig(o: { luns?: [number, Partial<BlockOptions>][]; queues?: number; queueSize?: number } = {}) {
  const specs = o.luns ?? [[0, {}]];
  const files = specs.map(([lun, opts]) => {
    const { path, img } = image(1 * MiB);
    const disk = openBlock({ path, ...opts });
    disks.push(disk);
    return { lun, path, img, disk };
  });
  const dev = scsiDeviceInfo(scsiTarget(files.map((f) => scsiLun(f.lun, f.disk))), { numQueues: o.queues ?? 1, queueSize: o.queueSize ?? 16 });
  const nq = 2 + dev.numQueues;
  const r = virtioPciRig({
    mem: GuestMemory.fake(64 * MiB), queues: nq, slot: SLOT,
    build: (inp, ctx, platform) => createVirtioPci(inp, scsiModel(ctx, dev, { engine: viewCopyEngine, log: (m) => platform.log(m) })),
  });
  const bringUp = (before?: () => void) => r.bringUp(0n, { afterFeatures: before }).drivers;
  return { files, platform: r.platform, mem: r.mem, cr: r.cr, cfg: r.cfg, cfgWrite: r.cfgWrite, features: r.features, bringUp, kick: r.kick, status: r.status, w8: r.w8 };
}
type Rig = ReturnType<typeof rig>;

const lun8 = (lun: number, target = 0, first = 1, flat = false) =>
  [first, target, flat ? 0x40 | (lun >> 8) : lun >> 8, lun & 0xff, 0, 0, 0, 0];
function cmdReq(cdb: number[], o: { lun?: number[]; cdbSize?: number } = {}): Uint8Array {
  const size = o.cdbSize ?? 32;
  const b = new Uint8Array(19 + size);
  b.set(o.lun ?? lun8(0), 0);
  b.set(cdb.slice(0, size), 19);
  return b;
}
const be = (v: number, bytes: number) => Array.from({ length: bytes }, (_, i) => (v / 2 ** (8 * (bytes - 1 - i))) & 0xff);

interface Resp { senseLen: number; resid: number; status: number; response: number; sense: Uint8Array; data: Uint8Array; len: number }
/** One command through request queue q (default 2): request header, data-out, response (12 + senseSize), data-in. */
function command(r: Rig, drv: FakeDriver, cdb: number[], o: { q?: number; out?: Uint8Array; inLen?: number; lun?: number[]; cdbSize?: number; senseSize?: number; respLen?: number; indirect?: boolean } = {}): Resp {
  const senseSize = o.senseSize ?? 96;
  const bufs: { len: number; write?: boolean; data?: Uint8Array }[] = [{ len: 19 + (o.cdbSize ?? 32), data: cmdReq(cdb, o) }];
  if (o.out) bufs.push({ len: o.out.length, data: o.out });
  const respLen = o.respLen ?? 12 + senseSize;
  bufs.push({ len: respLen, write: true, data: new Uint8Array(respLen).fill(0xcc) });
  if (o.inLen) bufs.push({ len: o.inLen, write: true, data: new Uint8Array(o.inLen).fill(0xee) });
  const { head, addrs } = drv.add(bufs, { indirect: o.indirect });
  drv.publish();
  r.kick(o.q ?? 2);
  const used = drv.collect();
  expect(used.length).toBe(1);
  expect(used[0]!.id).toBe(head);
  const ra = addrs[o.out ? 2 : 1]!;
  const m = r.mem;
  return {
    senseLen: m.read32(ra), resid: m.read32(ra + 4), status: m.read8(ra + 10), response: m.read8(ra + 11),
    sense: m.readBytes(ra + 12, Math.max(0, respLen - 12)), data: o.inLen ? m.readBytes(addrs.at(-1)!, o.inLen) : new Uint8Array(0), len: used[0]!.len,
  };
}

describe("virtio-scsi device", () => {
  test("identity, features and config space as the driver sees them", () => {
    const r = rig({ luns: [[0, {}], [2, {}]], queues: 2, queueSize: 32 });
    expect(r.cr(CFG.VENDOR, 2)).toBe(0x1af4);
    expect(r.cr(CFG.DEVICE, 2)).toBe(0x1004);
    expect(r.cr(CFG.SUBDEVICE, 2)).toBe(8);
    expect(r.cr(CFG.REVISION, 4) >>> 8).toBe(0x010000);
    const f = r.features();
    expect(f & 0xffffffn).toBe(0n); // no device feature bits
    expect(f & VIRTIO_F.VERSION_1).toBe(VIRTIO_F.VERSION_1);
    const c = (k: keyof typeof SCSI_CFG, s: 1 | 2 | 4 = 4) => r.cfg(SCSI_CFG[k], s);
    expect([c("num_queues"), c("seg_max"), c("max_sectors"), c("cmd_per_lun"), c("event_info_size"), c("sense_size"), c("cdb_size")])
      .toEqual([2, 30, 8192, 32, 16, 96, 32]);
    expect([c("max_channel", 2), c("max_target", 2), c("max_lun")]).toEqual([0, 0, 2]);
    const drivers = r.bringUp();
    expect(drivers.map((d) => d.size)).toEqual([64, 64, 32, 32]);
  });

  test("sense_size and cdb_size: driver writes honoured within limits, others ignored, reset restores 96 / 32", () => {
    const r = rig();
    r.cfgWrite(SCSI_CFG.sense_size, 4, 32);
    r.cfgWrite(SCSI_CFG.cdb_size, 4, 16);
    expect([r.cfg(SCSI_CFG.sense_size, 4), r.cfg(SCSI_CFG.cdb_size, 4)]).toEqual([32, 16]);
    r.cfgWrite(SCSI_CFG.sense_size, 4, 100000);
    r.cfgWrite(SCSI_CFG.cdb_size, 4, 2);
    expect([r.cfg(SCSI_CFG.sense_size, 4), r.cfg(SCSI_CFG.cdb_size, 4)]).toEqual([32, 16]);
    expect(r.platform.logs.filter((l) => l.includes("ignored")).length).toBe(2);
    r.cfgWrite(SCSI_CFG.cdb_size, 1, 20); // a byte write merges into the field
    expect(r.cfg(SCSI_CFG.cdb_size, 4)).toBe(20);
    r.cfgWrite(SCSI_CFG.num_queues, 4, 9); // read-only field
    expect(r.cfg(SCSI_CFG.num_queues, 4)).toBe(1);
    r.w8(COMMON.STATUS, 0);
    expect([r.cfg(SCSI_CFG.sense_size, 4), r.cfg(SCSI_CFG.cdb_size, 4)]).toEqual([96, 32]);
  });

  test("INQUIRY, WRITE(10), READ(10): response fields, residual, used length; the file holds the data", () => {
    const r = rig();
    const [, , drv] = r.bringUp();
    const inq = command(r, drv!, [OP.INQUIRY, 0, 0, 0, 96, 0], { inLen: 96 });
    expect([inq.response, inq.status, inq.senseLen, inq.resid]).toEqual([SCSI_S.OK, 0, 0, 96 - 74]);
    expect(inq.len).toBe(108 + 74);
    expect(new TextDecoder().decode(inq.data.subarray(8, 16))).toBe("TSBHYVE ");
    const data = Uint8Array.from({ length: 4096 }, (_, i) => (i * 29 + 1) & 0xff);
    const wr = command(r, drv!, [OP.WRITE_10, 0, ...be(16, 4), 0, ...be(8, 2), 0], { out: data, indirect: true });
    expect([wr.response, wr.status, wr.resid, wr.len]).toEqual([SCSI_S.OK, 0, 0, 108]);
    expect(new Uint8Array(readFileSync(r.files[0]!.path)).subarray(16 * 512, 24 * 512)).toEqual(data);
    const rd = command(r, drv!, [OP.READ_10, 0, ...be(16, 4), 0, ...be(8, 2), 0], { inLen: 8192 });
    expect([rd.response, rd.status, rd.resid, rd.len]).toEqual([SCSI_S.OK, 0, 4096, 108 + 4096]);
    expect(rd.data.subarray(0, 4096)).toEqual(data);
    expect(r.platform.msis.at(-1)).toEqual([0xfee00000, 0x43]); // request queue 2 → vector 3
  });

  test("CHECK CONDITION carries fixed sense (sense_len 18, the rest of sense_size zero) and the whole buffer as residual", () => {
    const r = rig();
    const [, , drv] = r.bringUp();
    const x = command(r, drv!, [OP.READ_10, 0, ...be(2048, 4), 0, ...be(1, 2), 0], { inLen: 512 });
    expect([x.response, x.status, x.senseLen, x.resid, x.len]).toEqual([SCSI_S.OK, 2, 18, 512, 108]);
    const s = parseSense(x.sense);
    expect([s.key, s.asc, s.ascq]).toEqual([SENSE.LBA_OUT_OF_RANGE.key, 0x21, 0]);
    expect([...x.sense.subarray(18)].every((b) => b === 0)).toBe(true);
    const bad = command(r, drv!, [0xc0, 0, 0, 0, 0, 0]);
    expect([bad.status, bad.sense[12]]).toEqual([2, 0x20]);
  });

  test("targets and LUNs: BAD_TARGET for target ≠ 0 or lun[0] ≠ 1; missing LUN; LUN 1 in flat addressing", () => {
    const r = rig({ luns: [[0, {}], [1, { ro: true }]] });
    const [, , drv] = r.bringUp();
    const tur = [OP.TEST_UNIT_READY, 0, 0, 0, 0, 0];
    expect(command(r, drv!, tur, { lun: lun8(0, 1) }).response).toBe(SCSI_S.BAD_TARGET);
    expect(command(r, drv!, tur, { lun: lun8(0, 0, 2) }).response).toBe(SCSI_S.BAD_TARGET);
    const missing = command(r, drv!, tur, { lun: lun8(5) });
    expect([missing.response, missing.status, missing.sense[12]]).toEqual([SCSI_S.OK, 2, 0x25]);
    expect(command(r, drv!, [OP.INQUIRY, 0, 0, 0, 36, 0], { lun: lun8(5), inLen: 36 }).data[0]).toBe(0x7f);
    expect(command(r, drv!, tur, { lun: [1, 0, 0, 1, 0, 0, 0, 1] }).sense[12]).toBe(0x25); // bytes 4-7 not zero
    // LUN 1 (read-only) addressed with flat addressing: writes refused with DATA PROTECT
    const w = command(r, drv!, [OP.WRITE_10, 0, 0, 0, 0, 0, 0, 0, 1, 0], { lun: lun8(1, 0, 1, true), out: new Uint8Array(512) });
    expect([w.status, w.sense[2]! & 0xf, w.sense[12]]).toEqual([2, 7, 0x27]);
    expect(new Uint8Array(readFileSync(r.files[1]!.path))).toEqual(r.files[1]!.img);
    const rl = command(r, drv!, [OP.REPORT_LUNS, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0], { inLen: 256 });
    expect([rl.data[3], rl.data[9], rl.data[17]]).toEqual([16, 0, 1]);
  });

  test("OVERRUN when the CDB wants more than the buffers hold; FAILURE for a short header; no room for a response → used 0", () => {
    const r = rig();
    const [, , drv] = r.bringUp();
    const o = command(r, drv!, [OP.READ_10, 0, 0, 0, 0, 0, 0, 0, 8, 0], { inLen: 1024 });
    expect(o.response).toBe(SCSI_S.OVERRUN);
    const short = command(r, drv!, [OP.TEST_UNIT_READY, 0, 0, 0, 0, 0], { cdbSize: 10 });
    expect(short.response).toBe(SCSI_S.FAILURE);
    expect(r.platform.logs.some((l) => l.includes("request header of 29 bytes, expected 51"))).toBe(true);
    // a response buffer of 8 bytes: nothing can be written, the chain still comes back
    const { head } = drv!.add([{ len: 51, data: cmdReq([0, 0, 0, 0, 0, 0]) }, { len: 8, write: true }]);
    drv!.publish();
    r.kick(2);
    expect(drv!.collect()).toEqual([{ id: head, len: 0 }]);
    // a response buffer of 20 bytes (sense truncated to 8)
    const t = command(r, drv!, [0xc0, 0, 0, 0, 0, 0], { respLen: 20 });
    expect([t.status, t.senseLen, t.len]).toEqual([2, 8, 20]);
  });

  test("honoured cdb_size 16 and sense_size 8: the header and data-out move, sense is cut to 8 bytes", () => {
    const r = rig();
    const [, , drv] = r.bringUp(() => {
      r.cfgWrite(SCSI_CFG.cdb_size, 4, 16);
      r.cfgWrite(SCSI_CFG.sense_size, 4, 8);
    });
    const data = new Uint8Array(512).fill(0x3c);
    const w = command(r, drv!, [OP.WRITE_16, 0, ...be(0, 8), ...be(1, 4), 0, 0], { cdbSize: 16, senseSize: 8, out: data });
    expect([w.response, w.status]).toEqual([SCSI_S.OK, 0]);
    expect(new Uint8Array(readFileSync(r.files[0]!.path)).subarray(0, 512)).toEqual(data);
    const e = command(r, drv!, [OP.READ_16, 0, ...be(4096, 8), ...be(1, 4), 0, 0], { cdbSize: 16, senseSize: 8, inLen: 512 });
    expect([e.status, e.senseLen, e.sense.length, e.sense[2]]).toEqual([2, 8, 8, 5]);
  });

  test("control queue: TMFs complete, unknown subtypes are rejected, AN answers no events; event buffers are held", () => {
    const r = rig();
    const [ctl, evt] = r.bringUp();
    const tmf = (sub: number, lun = lun8(0)) => {
      const b = new Uint8Array(24), v = new DataView(b.buffer);
      v.setUint32(0, CTRL_T.TMF, true); v.setUint32(4, sub, true); b.set(lun, 8);
      const { addrs } = ctl!.add([{ len: 24, data: b }, { len: 1, write: true, data: Uint8Array.of(0xcc) }]);
      ctl!.publish();
      r.kick(0);
      const u = ctl!.collect();
      expect(u.length).toBe(1);
      expect(u[0]!.len).toBe(1);
      return r.mem.read8(addrs[1]!);
    };
    expect(tmf(TMF.LOGICAL_UNIT_RESET)).toBe(SCSI_S.FUNCTION_COMPLETE);
    expect(tmf(TMF.ABORT_TASK)).toBe(SCSI_S.FUNCTION_COMPLETE);
    expect(tmf(TMF.I_T_NEXUS_RESET)).toBe(SCSI_S.FUNCTION_COMPLETE);
    expect(tmf(TMF.QUERY_TASK)).toBe(SCSI_S.FUNCTION_COMPLETE);
    expect(tmf(99)).toBe(SCSI_S.FUNCTION_REJECTED);
    expect(tmf(TMF.ABORT_TASK, lun8(0, 3))).toBe(SCSI_S.BAD_TARGET);
    for (const type of [CTRL_T.AN_QUERY, CTRL_T.AN_SUBSCRIBE]) {
      const b = new Uint8Array(16), v = new DataView(b.buffer);
      v.setUint32(0, type, true); b.set(lun8(0), 4); v.setUint32(12, 0x7e, true);
      const { addrs } = ctl!.add([{ len: 16, data: b }, { len: 5, write: true, data: new Uint8Array(5).fill(0xcc) }]);
      ctl!.publish();
      r.kick(0);
      expect(ctl!.collect()[0]!.len).toBe(5);
      expect([...r.mem.readBytes(addrs[1]!, 5)]).toEqual([0, 0, 0, 0, SCSI_S.OK]);
    }
    const u = new Uint8Array(4); new DataView(u.buffer).setUint32(0, 42, true);
    const { addrs } = ctl!.add([{ len: 4, data: u }, { len: 1, write: true }]);
    ctl!.publish();
    r.kick(0);
    expect(ctl!.collect().length).toBe(1);
    expect(r.mem.read8(addrs[1]!)).toBe(SCSI_S.FAILURE);
    // event queue: buffers stay with the device
    for (let i = 0; i < 4; i++) evt!.add([{ len: 16, write: true }]);
    evt!.publish();
    r.kick(1);
    expect(evt!.collect()).toEqual([]);
    expect(r.status() & VIRTIO_STATUS.NEEDS_RESET).toBe(0);
  });

  test("several request queues each run on their own eventfd and vector", () => {
    const r = rig({ queues: 3 });
    const drivers = r.bringUp();
    for (const q of [2, 3, 4]) {
      const x = command(r, drivers[q]!, [OP.READ_10, 0, 0, 0, 0, 1, 0, 0, 1, 0], { q, inLen: 512 });
      expect(x.data).toEqual(r.files[0]!.img.subarray(512, 1024));
      expect(r.platform.msis.at(-1)).toEqual([0xfee00000, 0x40 + q + 1]);
    }
  });

  test("registry and prepare: control + event + request queues get eventfds; the emulation needs prepared LUNs", () => {
    expect(virtioQueueCount({ device: "virtio-scsi" })).toBe(3);
    expect(virtioQueueCount({ device: "virtio-scsi", queues: 4 })).toBe(6);
    let next = 10;
    expect(openVirtioNotifiers({ pci: { "0.6.0": { device: "virtio-scsi", queues: 2 } } }, () => next++)).toEqual({ "0.6.0": [10, 11, 12, 13] });
    const emu = PCI_EMULATIONS["virtio-scsi"]!;
    expect(emu.describe({ bus: 0, slot: 6, fn: 0 }, { device: "virtio-scsi" })).toEqual([{ addr: { bus: 0, slot: 6, fn: 0 }, intPin: 1, model: "virtio-scsi" }]);
    expect(() => emu.create({ addr: { bus: 0, slot: 6, fn: 0 }, table: { device: "virtio-scsi" }, prepared: {} } as never)).toThrow("virtio-scsi disks were not opened");
  });
});
