/**
 * The block Worker pool (src/block/pool.ts + src/virtio/blk/pool-worker.ts) with real Workers, a real disk
 * file and guest memory on host mappings: hundreds of reads and writes submitted from this thread, run in
 * parallel by the pool, reaped through the completion eventfd, checked byte for byte against the file;
 * the slot limit holds; chains too long for a slot are refused (they run inline); a reset's epoch drops
 * old completions; the pool stops promptly. And which disks get a pool by default.
 */
import { afterAll, expect, test } from "bun:test";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { closeBlock, openBlock } from "../../src/block/backend.ts";
import { BlockPool, makePoolInfo, type PoolRequest } from "../../src/block/pool.ts";
import { viewCopyEngine } from "../../src/block/io.ts";
import { sharedMapGeneration } from "../../src/devices/bus.ts";
import type { DeviceContext } from "../../src/devices/device.ts";
import { StateArena } from "../../src/devices/state.ts";
import { powerOnMachine } from "../../src/vm/machine.ts";
import { blkDeviceInfo } from "../../src/virtio/blk/index.ts";
import { blkModel } from "../../src/virtio/devices/blk.ts";
import { defaultIothreads, prepare, release } from "../../src/vm/prepare.ts";
import { loadConfigText } from "../../src/config/load.ts";
import { createVirtioPci, MODERN } from "../../src/virtio/pci.ts";
import { bringUp } from "./virtio-fuzz-rig.ts";
import { GuestMemory, region } from "../../src/mem/guest-memory.ts";
import { BLK_S, BLK_T } from "../../src/virtio/blk/index.ts";
import { startBlkPools } from "../../src/vm/blk-pools.ts";
import type { Prepared } from "../../src/vm/prepare.ts";
import type { VmConfig } from "../../src/config/types.ts";
import type { WorkerMsg } from "../../src/vm/shared.ts";
import { host, POLLIN } from "../../src/vmm/index.ts";

const dir = mkdtempSync(join(tmpdir(), "tsb-pool-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const MEM = 8 << 20, DISK = 4 << 20;

function setup(threads: number, slots: number) {
  const path = join(dir, `d${threads}-${slots}.img`);
  const img = new Uint8Array(DISK);
  for (let i = 0; i < img.length; i++) img[i] = (i * 11 + (i >> 12) * 5) & 0xff;
  writeFileSync(path, img);
  const disk = openBlock({ path });
  const p = host.memAlloc(MEM, false);
  const regions = [{ gpa: 0, size: MEM, host: p, kind: "ram" as const }];
  const mem = new GuestMemory([region(0, host.memView(p, MEM), p)]);
  const info = makePoolInfo(threads, host.eventfd(), slots);
  const cfg = { pci: { "0.4.0": { device: "virtio-blk", path } } } as unknown as VmConfig;
  const prepared = { disks: { "0.4.0": disk }, blkPools: { "0.4.0": info } } as unknown as Prepared;
  const msgs: WorkerMsg[] = [];
  const pools = startBlkPools(cfg, prepared, regions, (m) => msgs.push(m));
  const pool = new BlockPool(info);
  const cleanup = async () => {
    const t0 = performance.now();
    await pools.stop(3000);
    const ms = performance.now() - t0;
    host.close(info.fd);
    closeBlock(disk);
    return ms;
  };
  return { path, img, mem, pool, pools, info, msgs, cleanup };
}

/** Request i: header at 64 KiB·i, data (4 KiB) at 4 MiB + 4 KiB·(i mod 512)... kept apart per slot. */
function request(mem: GuestMemory, i: number, type: number, sector: number, dataAt: number) {
  const hdrAt = 0x1000 + 32 * i, statusAt = 0x30000 + i;
  const h = new DataView(new ArrayBuffer(16));
  h.setUint32(0, type, true);
  h.setBigUint64(8, BigInt(sector), true);
  mem.writeBytes(hdrAt, new Uint8Array(h.buffer));
  mem.write8(statusAt, 0xaa);
  const data = { gpa: dataAt, len: 4096 };
  const hdr = { gpa: hdrAt, len: 16 }, status = { gpa: statusAt, len: 1 };
  return type === BLK_T.OUT
    ? { queue: 0, head: i, readable: [hdr, data], writable: [status] }
    : { queue: 0, head: i, readable: [hdr], writable: [data, status] };
}

function waitCompletions(fd: number): void {
  const fds = Int32Array.of(fd), ev = Int16Array.of(POLLIN), rev = new Int16Array(1);
  expect(host.poll(fds, ev, rev, 5000)).toBe(1);
  host.drain(fd);
}

test("400 reads and writes through 4 block Workers: every byte right, never more than the slots in flight", async () => {
  const r = setup(4, 16);
  const N = 400;
  const done = new Map<number, number>();
  let next = 0, maxInFlight = 0;
  const t0 = performance.now();
  while (done.size < N) {
    while (next < N) {
      const i = next;
      // even: read sector 8i (4 KiB) into 4 MiB + 4 KiB·i; odd: write 4 KiB of (i & 0xff) to sector 8i
      const dataAt = 0x400000 + 4096 * i;
      if (i % 2) r.mem.fill(dataAt, 4096, i & 0xff);
      if (!r.pool.submit(request(r.mem, i, i % 2 ? BLK_T.OUT : BLK_T.IN, 8 * i, dataAt))) break;
      next++;
      maxInFlight = Math.max(maxInFlight, r.pool.inFlight());
    }
    waitCompletions(r.info.fd);
    r.pool.reap((_q, head, used) => { expect(done.has(head)).toBe(false); done.set(head, used); });
  }
  const ms = performance.now() - t0;
  expect(maxInFlight).toBe(16);
  for (let i = 0; i < N; i++) {
    expect(done.get(i)).toBe(i % 2 ? 1 : 4097);
    expect(r.mem.read8(0x30000 + i)).toBe(BLK_S.OK);
    if (i % 2 === 0) expect(r.mem.readBytes(0x400000 + 4096 * i, 4096)).toEqual(r.img.subarray(8 * i * 512, 8 * i * 512 + 4096));
  }
  const file = readFileSync(r.path);
  for (let i = 1; i < N; i += 2) expect(file.subarray(8 * i * 512, 8 * i * 512 + 4096).every((b) => b === (i & 0xff))).toBe(true);
  expect(r.msgs.filter((m) => m.type === "error")).toEqual([]);
  const stopMs = await r.cleanup();
  expect(stopMs).toBeLessThan(1500);
  console.log(`block pool: ${N} requests through 4 Workers in ${ms.toFixed(0)} ms; stopped in ${stopMs.toFixed(0)} ms`);
});

test("bad requests come back with their status; chains longer than a slot are refused; a reset drops old completions", async () => {
  const r = setup(2, 4);
  // beyond the capacity → IOERR, with the status byte written and used = 1
  expect(r.pool.submit(request(r.mem, 0, BLK_T.IN, DISK / 512, 0x400000))).toBe(true);
  // a status byte outside guest memory → dropped: used 0
  const bad = request(r.mem, 1, BLK_T.IN, 0, 0x401000);
  bad.writable[1] = { gpa: MEM + 4096, len: 1 };
  expect(r.pool.submit(bad)).toBe(true);
  const got = new Map<number, number>();
  while (got.size < 2) { waitCompletions(r.info.fd); r.pool.reap((_q, h, u) => got.set(h, u)); }
  expect(got.get(0)).toBe(1);
  expect(r.mem.read8(0x30000)).toBe(BLK_S.IOERR);
  expect(got.get(1)).toBe(0);
  // too many segments for a slot
  const long = { queue: 0, head: 9, readable: [{ gpa: 0x1000, len: 16 }], writable: Array.from({ length: r.pool.maxSegs }, (_, k) => ({ gpa: 0x400000 + 512 * k, len: 512 })) };
  expect(r.pool.submit(long)).toBe(false);
  expect(r.pool.inFlight()).toBe(0);
  // epoch: submitted before a reset → freed without a callback
  expect(r.pool.submit(request(r.mem, 2, BLK_T.IN, 0, 0x402000))).toBe(true);
  r.pool.newEpoch();
  let calls = 0;
  for (let tries = 0; r.pool.inFlight() > 0 && tries < 50; tries++) { waitCompletions(r.info.fd); r.pool.reap(() => calls++); }
  expect(r.pool.inFlight()).toBe(0);
  expect(calls).toBe(0);
  // both failures are logged by the Workers (messages arrive once this thread yields)
  for (let i = 0; i < 40 && r.msgs.length < 2; i++) await Bun.sleep(25);
  const texts = r.msgs.filter((m) => m.type === "log").map((m) => (m as { text: string }).text);
  expect(texts.length).toBe(2);
  expect(texts.some((t) => t.includes("beyond the capacity"))).toBe(true);
  expect(texts.some((t) => t.includes("not guest RAM"))).toBe(true);
  await r.cleanup();
});

test("virtio-blk's default pool: bhyve's 8 Workers for disks that wait on a device, none for page-cache files; iothreads overrides; the model submits every request to a pool it has", () => {
  const path = join(dir, "default.img");
  writeFileSync(path, new Uint8Array(1 << 20));
  const cached = openBlock({ path }), direct = openBlock({ path, nocache: true }), sync = openBlock({ path, sync: true });
  expect(defaultIothreads(cached)).toBe(0);
  expect(defaultIothreads(direct)).toBe(8);
  expect(defaultIothreads(sync)).toBe(8);
  for (const d of [cached, direct, sync]) closeBlock(d);
  // through prepare(): the pools it makes
  const cfgFor = (extra: string) => loadConfigText(`name = "p"\n[memory]\nsize = "64M"\n[lpc]\nbootrom = "${path}"\n` +
    `[pci.0.4.0]\ndevice = "virtio-blk"\npath = "${path}"\n${extra}`, join(dir, "p.toml"));
  const pools = (extra: string) => {
    const p = prepare(cfgFor(extra));
    try { return Object.values(p.blkPools ?? {}).map((x) => x.threads); } finally { release(p); }
  };
  expect(pools("")).toEqual([]);
  expect(pools("nocache = true\n")).toEqual([8]);
  expect(pools("iothreads = 3\n")).toEqual([3]);
  expect(pools("sync = true\niothreads = 0\n")).toEqual([]);

  // the model: with a pool, every request goes there (a stand-in records them)
  const disk = openBlock({ path });
  const submitted: PoolRequest[] = [];
  const fake = {
    fd: 77, inFlight: () => submitted.length, full: () => submitted.length >= 16,
    submit: (r: PoolRequest) => { submitted.push(r); return true; }, reap: () => 0, newEpoch: () => {},
  } as unknown as BlockPool;
  const mem = GuestMemory.fake(16 << 20);
  const ctx: DeviceContext = { mem, arena: new StateArena(new SharedArrayBuffer(1 << 20)), platform: { irqLine() {}, msi() {}, requestExit() {}, wakeIo() {}, log() {} }, role: "io" };
  const fn = createVirtioPci({ ctx, addr: { bus: 0, slot: 4, fn: 0 }, gen: sharedMapGeneration(ctx.arena), eventfd: { signal() {}, drain() {} } },
    blkModel(blkDeviceInfo(disk, { queueSize: 64 }), { queueSize: 64, engine: viewCopyEngine, pool: fake, drain: () => {} }));
  powerOnMachine({ devices: [fn] });
  const d = bringUp(fn.transport, mem, () => true, { ringBase: 0, ringBytes: 1 << 20, maxQueueSize: 64, heap: { base: 2 << 20, size: 8 << 20 } })!.drivers[0]!;
  const hdr = new Uint8Array(16);
  for (let i = 0; i < 20; i++) d.add([{ len: 16, data: hdr }, { len: 4096, write: true }, { len: 1, write: true }]);
  d.publish();
  fn.transport.modernWrite(MODERN.NOTIFY, 2, 0);
  fn.expire();
  expect(submitted.length).toBe(16); // the slot limit: the rest wait on the ring
  expect(d.collect().length).toBe(0);
  closeBlock(disk);
});
