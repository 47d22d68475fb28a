/**
 * fw_cfg through a real Bus over a shared state arena and fake guest memory: port streaming, the file
 * directory, DMA read/skip/select/write, hostile DMA descriptors, the signatures, and a fuzz of random
 * port/DMA traffic. Plus the item builder, bootorder and the config-derived file set.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync, truncateSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Bus } from "../../src/devices/bus.ts";
import type { DeviceContext } from "../../src/devices/device.ts";
import { StateArena } from "../../src/devices/state.ts";
import { GuestMemory, region } from "../../src/mem/guest-memory.ts";
import { createFwCfg, DMA_CTL, fwcfgLayout, isGuestRam } from "../../src/fwcfg/device.ts";
import { findItem, FW_CFG, fwcfgForConfig, fwcfgItems, hwNcpu, parseFileDir, type FwCfgItems } from "../../src/fwcfg/items.ts";
import { buildBootorder } from "../../src/fwcfg/bootorder.ts";
import { buildE820, encodeE820 } from "../../src/loader/e820.ts";
import { loadConfigText } from "../../src/config/load.ts";
import { parseSmbiosTable } from "../../src/smbios/smbios.ts";
import { PORTS } from "../../src/platform/map.ts";
import { RecordingPlatform } from "./fake-platform.ts";

const MiB = 1 << 20;


const enc = new TextEncoder();
const FILES = [
  { name: "opt/zeta", data: enc.encode("last file") },
  { name: "etc/acpi/tables", data: Uint8Array.from({ length: 3000 }, (_, i) => (i * 7 + 3) & 0xff) },
  { name: "opt/empty", data: new Uint8Array(0) },
  { name: "bootorder", data: enc.encode("/pci@i0cf8/pci@3,0\0") },
];
const E820 = encodeE820(buildE820(64 * MiB));

function setup(items: FwCfgItems = fwcfgItems({ cpus: 3, e820: E820, files: FILES }), opts?: { withRom?: boolean }) {
  const regions = GuestMemory.fake(64 * MiB).regions.slice();
  if (opts?.withRom) regions.push(region(0xffff_0000, new Uint8Array(0x10000), 0, "rom"));
  const mem = new GuestMemory(regions);
  const platform = new RecordingPlatform();
  const ctx: DeviceContext = { mem, arena: new StateArena(new SharedArrayBuffer(StateArena.sizeFor([fwcfgLayout]))), platform, role: "vcpu" };
  const dev = createFwCfg(ctx, items);
  dev.lock!.acquire();
  dev.powerOn!();
  dev.lock!.release();
  const bus = new Bus();
  bus.register(dev);
  const io = {
    select: (k: number) => bus.write("pio", PORTS.fwcfg, 2, k),
    readBytes: (n: number) => Uint8Array.from({ length: n }, () => bus.read("pio", PORTS.fwcfg + 1, 1)),
    /** DMA the way OVMF/Linux do it: descriptor at `desc`, high half then low half, each byte-swapped. */
    dma: (desc: number, control: number, length: number, address: number) => {
      const dv = new DataView(mem.view(desc, 16).buffer, mem.view(desc, 16).byteOffset, 16);
      dv.setUint32(0, control >>> 0, false);
      dv.setUint32(4, length >>> 0, false);
      dv.setBigUint64(8, BigInt(address), false);
      dmaAt(desc);
      return new DataView(mem.view(desc, 4).slice().buffer).getUint32(0, false);
    },
  };
  const swap = (v: number) => (((v & 0xff) << 24) | ((v & 0xff00) << 8) | ((v >>> 8) & 0xff00) | (v >>> 24)) >>> 0;
  const dmaAt = (addr: number) => {
    bus.write("pio", PORTS.fwcfgDma, 4, swap(Math.floor(addr / 2 ** 32)));
    bus.write("pio", PORTS.fwcfgDma + 4, 4, swap(addr >>> 0));
  };
  return { mem, bus, dev, items, platform, ...io, dmaAt, swap };
}

const item = (items: FwCfgItems, key: number) => findItem(items, key)!.data;

describe("fw_cfg items", () => {
  test("fixed items, directory sorted by name, files from 0x20", () => {
    const items = fwcfgItems({ cpus: 3, e820: E820, files: FILES });
    expect(new TextDecoder().decode(item(items, FW_CFG.SIGNATURE))).toBe("QEMU");
    expect([...item(items, FW_CFG.ID)]).toEqual([3, 0, 0, 0]);
    expect([...item(items, FW_CFG.NB_CPUS)]).toEqual([3, 0]);
    expect([...item(items, FW_CFG.MAX_CPUS)]).toEqual([3, 0]);
    const dir = parseFileDir(item(items, FW_CFG.FILE_DIR));
    expect(dir.map((d) => d.name)).toEqual(["bootorder", "etc/acpi/tables", "etc/e820", "opt/empty", "opt/zeta"]);
    expect(dir.map((d) => d.select)).toEqual([0x20, 0x21, 0x22, 0x23, 0x24]);
    expect(dir.map((d) => d.size)).toEqual([19, 3000, E820.length, 0, 9]);
    expect(item(items, 0x22)).toEqual(E820);
    expect(item(items, FW_CFG.FILE_DIR).length).toBe(4 + 5 * 64);
    // one shared buffer for all bytes
    const bufs = new Set(items.items.map((i) => i.data.buffer));
    expect(bufs.size).toBe(1);
    expect([...bufs][0]).toBeInstanceOf(SharedArrayBuffer);
    expect(structuredClone(items).items.map((i) => i.key)).toEqual(items.items.map((i) => i.key));
  });
  test("bad names", () => {
    const f = (name: string) => () => fwcfgItems({ cpus: 1, files: [{ name, data: new Uint8Array(1) }] });
    expect(f("")).toThrow(RangeError);
    expect(f("x".repeat(56))).toThrow(RangeError);
    expect(f("x".repeat(55))).not.toThrow();
    expect(() => fwcfgItems({ cpus: 1, files: [FILES[0]!, FILES[0]!] })).toThrow("given twice");
    expect(() => fwcfgItems({ cpus: 1, e820: E820, files: [{ name: "etc/e820", data: E820 }] })).toThrow("given twice");
  });
  test("hw.ncpu and bootorder", () => {
    expect([...hwNcpu(6)]).toEqual([6, 0, 0, 0]);
    expect(buildBootorder({ "0.0.0": { device: "hostbridge" } }).length).toBe(0);
    const b = buildBootorder({
      "0.4.0": { device: "virtio-blk", bootindex: 2 }, "0.3.1": { device: "virtio-net", bootindex: 1 },
      "0.16.0": { device: "nvme", bootindex: 0 }, "1.2.0": { device: "nvme", bootindex: 3 },
    });
    expect(new TextDecoder().decode(b)).toBe("/pci@i0cf8/pci@10,0\n/pci@i0cf8/pci@3,1\n/pci@i0cf8/pci@4,0\0");
  });
});

describe("fw_cfg port interface", () => {
  test("signature, ID, streaming, reads past the end and unknown items return 0", () => {
    const t = setup();
    t.select(FW_CFG.SIGNATURE);
    expect(new TextDecoder().decode(t.readBytes(4))).toBe("QEMU");
    expect([...t.readBytes(3)]).toEqual([0, 0, 0]);
    t.select(FW_CFG.ID);
    expect(t.readBytes(4)[0]).toBe(3);
    t.select(0x21);
    const first = t.readBytes(10);
    expect(first).toEqual(FILES[1]!.data.subarray(0, 10));
    expect(t.readBytes(2990)).toEqual(FILES[1]!.data.subarray(10));
    expect([...t.readBytes(4)]).toEqual([0, 0, 0, 0]);
    t.select(0x21); // re-select resets the offset
    expect(t.readBytes(10)).toEqual(first);
    t.select(0x1234);
    expect([...t.readBytes(4)]).toEqual([0, 0, 0, 0]);
    t.select(0x4000 | FW_CFG.SIGNATURE); // write-mode bit: still readable
    expect(new TextDecoder().decode(t.readBytes(4))).toBe("QEMU");
    expect(t.bus.read("pio", PORTS.fwcfg, 2)).toBe(0); // selector reads 0
    t.bus.write("pio", PORTS.fwcfg + 1, 1, 0x55); // data writes are ignored
  });
  test("directory read through the port describes every file", () => {
    const t = setup();
    t.select(FW_CFG.FILE_DIR);
    const count = new DataView(t.readBytes(4).buffer).getUint32(0, false);
    expect(count).toBe(5);
    const rest = t.readBytes(count * 64);
    const dir = parseFileDir(Uint8Array.from([0, 0, 0, count, ...rest]));
    for (const d of dir) {
      t.select(d.select);
      expect(t.readBytes(d.size)).toEqual(new Uint8Array(findItem(t.items, d.select)!.data));
    }
  });
  test("DMA signature register reads 'QEMU CFG' big-endian", () => {
    const t = setup();
    const lo = t.bus.read("pio", PORTS.fwcfgDma, 4), hi = t.bus.read("pio", PORTS.fwcfgDma + 4, 4);
    expect((BigInt(t.swap(lo)) << 32n) | BigInt(t.swap(hi))).toBe(0x51454d5520434647n);
    expect(String.fromCharCode(...Array.from({ length: 8 }, (_, i) => t.bus.read("pio", PORTS.fwcfgDma + i, 1)))).toBe("QEMU CFG");
    expect(t.bus.read("pio", PORTS.fwcfgDma + 2, 2)).toBe(0x554d); // "MU"
  });
});

describe("fw_cfg DMA", () => {
  const DESC = 0x1000, BUF = 0x20000;
  test("select + read, then read continues at the offset, past the end is zero-filled", () => {
    const t = setup();
    expect(t.dma(DESC, (0x21 << 16) | DMA_CTL.SELECT | DMA_CTL.READ, 1000, BUF)).toBe(0);
    expect(t.mem.readBytes(BUF, 1000)).toEqual(FILES[1]!.data.subarray(0, 1000));
    t.mem.fill(BUF, 4096, 0xaa);
    expect(t.dma(DESC, DMA_CTL.READ, 2100, BUF)).toBe(0);
    expect(t.mem.readBytes(BUF, 2000)).toEqual(FILES[1]!.data.subarray(1000));
    expect([...t.mem.readBytes(BUF + 2000, 100)].every((b) => b === 0)).toBe(true);
    expect(t.mem.read8(BUF + 2100)).toBe(0xaa); // nothing beyond length
    // port reads now see the end too
    expect([...t.readBytes(2)]).toEqual([0, 0]);
  });
  test("skip, select only, unknown item reads zeros, length 0", () => {
    const t = setup();
    expect(t.dma(DESC, (0x24 << 16) | DMA_CTL.SELECT | DMA_CTL.SKIP, 5, 0)).toBe(0);
    expect(new TextDecoder().decode(t.readBytes(4))).toBe("file");
    expect(t.dma(DESC, (FW_CFG.SIGNATURE << 16) | DMA_CTL.SELECT, 0, 0)).toBe(0);
    expect(new TextDecoder().decode(t.readBytes(4))).toBe("QEMU");
    t.mem.fill(BUF, 16, 0xff);
    expect(t.dma(DESC, (0x3333 << 16) | DMA_CTL.SELECT | DMA_CTL.READ, 16, BUF)).toBe(0);
    expect([...t.mem.readBytes(BUF, 16)]).toEqual(new Array(16).fill(0));
    expect(t.dma(DESC, DMA_CTL.READ, 0, 0xdead_0000_0000)).toBe(0);
  });
  test("writes are refused with ERROR", () => {
    const t = setup();
    expect(t.dma(DESC, (0x20 << 16) | DMA_CTL.SELECT | DMA_CTL.WRITE, 4, BUF)).toBe(DMA_CTL.ERROR);
    t.select(0x20);
    expect(t.readBytes(4)).toEqual(FILES[3]!.data.subarray(0, 4));
  });
  test("bad target addresses and lengths: ERROR, nothing written, offset unchanged, no throw", () => {
    const t = setup(undefined, { withRom: true });
    const sel = (0x21 << 16) | DMA_CTL.SELECT | DMA_CTL.READ;
    expect(t.dma(DESC, sel, 16, 64 * MiB - 8)).toBe(DMA_CTL.ERROR); // runs off the end of RAM
    expect(t.dma(DESC, sel, 16, 0x1_0000_0000_0000)).toBe(DMA_CTL.ERROR); // far above RAM
    expect(t.dma(DESC, sel, 16, 0xc000_0000)).toBe(DMA_CTL.ERROR); // PCI hole
    expect(t.dma(DESC, sel, 16, 0xffff_0000)).toBe(DMA_CTL.ERROR); // the ROM is not writable
    expect(t.mem.readBytes(0xffff_0000, 16).every((b) => b === 0)).toBe(true);
    expect(t.dma(DESC, sel, 0xffff_ffff, BUF)).toBe(DMA_CTL.ERROR); // 4 GiB into 64 MiB
    expect(t.dma(DESC, DMA_CTL.READ, 4, 2 ** 63)).toBe(DMA_CTL.ERROR); // not even a safe integer
    // the item is still at offset 0
    expect(t.readBytes(4)).toEqual(FILES[1]!.data.subarray(0, 4));
  });
  test("descriptor outside RAM is ignored; DMA works right up to the end of RAM", () => {
    const t = setup();
    t.dmaAt(0xc000_0000);
    t.dmaAt(64 * MiB - 8); // descriptor straddles the end
    t.dmaAt(2 ** 52);
    expect(t.platform.logs.length).toBe(3);
    expect(t.dma(64 * MiB - 16, (0x24 << 16) | DMA_CTL.SELECT | DMA_CTL.READ, 9, 64 * MiB - 32)).toBe(0);
    expect(new TextDecoder().decode(t.mem.readBytes(64 * MiB - 32, 9))).toBe("last file");
  });
  test("isGuestRam spans contiguous regions, refuses holes and ROM", () => {
    const mem = new GuestMemory([region(0, new Uint8Array(0x1000)), region(0x1000, new Uint8Array(0x1000)), region(0x3000, new Uint8Array(0x1000), 0, "rom")]);
    expect(isGuestRam(mem, 0x800, 0x1000)).toBe(true);
    expect(isGuestRam(mem, 0x1800, 0x1000)).toBe(false);
    expect(isGuestRam(mem, 0x3000, 1)).toBe(false);
    expect(isGuestRam(mem, -1, 1)).toBe(false);
    expect(isGuestRam(mem, 0x500, 0)).toBe(true);
  });
  test("without a DMA port the ID says so", () => {
    const items = fwcfgItems({ cpus: 1, files: [] });
    const mem = GuestMemory.fake(64 * MiB);
    const ctx: DeviceContext = { mem, arena: new StateArena(new SharedArrayBuffer(StateArena.sizeFor([fwcfgLayout]))), platform: new RecordingPlatform(), role: "vcpu" };
    const dev = createFwCfg(ctx, items, { dmaPort: null });
    expect(dev.ranges.length).toBe(1);
    dev.write("pio", 0x510, 0, 2, FW_CFG.ID);
    expect(dev.read("pio", 0x510, 1, 1)).toBe(1);
  });
  test("state is shared: a second instance on the same buffer continues the stream", () => {
    const items = fwcfgItems({ cpus: 1, files: FILES });
    const mem = GuestMemory.fake(64 * MiB);
    const buf = new SharedArrayBuffer(StateArena.sizeFor([fwcfgLayout]));
    const mk = () => createFwCfg({ mem, arena: new StateArena(buf), platform: new RecordingPlatform(), role: "vcpu" }, items);
    const a = mk(), b = mk();
    a.write("pio", 0x510, 0, 2, FW_CFG.SIGNATURE);
    expect([a.read("pio", 0x510, 1, 1), b.read("pio", 0x510, 1, 1)]).toEqual([0x51, 0x45]);
  });
});

describe("fw_cfg fuzz", () => {
  test("random port and DMA traffic never throws", () => {
    const t = setup(undefined, { withRom: true });
    let x = 0x9e3779b9;
    const rnd = () => { x ^= x << 13; x ^= x >>> 17; x ^= x << 5; return x >>> 0; };
    const ports = [0x510, 0x511, 0x512, 0x513, 0x514, 0x515, 0x516, 0x517, 0x518, 0x519, 0x51a, 0x51b];
    const addrs = () => [rnd() % (64 * MiB), rnd(), 64 * MiB - (rnd() % 64), 0xffff_0000 + (rnd() & 0xffff), rnd() * 2 ** 20][rnd() % 5]!;
    for (let i = 0; i < 20000; i++) {
      const r = rnd() % 8;
      if (r < 3) {
        const p = ports[rnd() % ports.length]!, size = [1, 2, 4][rnd() % 3]!;
        if (rnd() & 1) t.bus.read("pio", p, size); else t.bus.write("pio", p, size, rnd());
      } else if (r < 6) {
        const desc = rnd() % (64 * MiB - 16);
        const ctl = ((rnd() % 0x30) << 16) | (rnd() & 0x1f);
        const len = [rnd() % 5000, rnd(), 0][rnd() % 3]!;
        const st = t.dma(desc, ctl, len, addrs());
        expect(st === 0 || st === DMA_CTL.ERROR).toBe(true);
      } else {
        t.dmaAt(addrs());
      }
    }
    // still works afterwards
    t.select(FW_CFG.SIGNATURE);
    expect(new TextDecoder().decode(t.readBytes(4))).toBe("QEMU");
  });
});

describe("fw_cfg from the config", () => {
  const dir = mkdtempSync(join(tmpdir(), "tsbhyve-fwcfg-"));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const rom = join(dir, "rom.fd");
  writeFileSync(rom, "");
  truncateSync(rom, 2 * MiB);
  writeFileSync(join(dir, "blob.bin"), Uint8Array.from([1, 2, 3, 4, 5]));

  test("built-in and user files", () => {
    const cfg = loadConfigText(`cpus = 4\nsockets = 2\ncores = 2\n[memory]\nsize = "512M"\n[lpc]\nbootrom = "rom.fd"\n` +
      `[pci.0.5.0]\ndevice = "hostbridge"\nbootindex = 1\n` +
      `[[fw_cfg]]\nname = "opt/org.example/blob"\nfile = "blob.bin"\n[[fw_cfg]]\nname = "opt/greeting"\nstring = "hi, there"\n`, join(dir, "g.toml"));
    const items = fwcfgForConfig(cfg, { extraFiles: [{ name: "etc/acpi/rsdp", data: new Uint8Array(36) }] });
    const files = parseFileDir(item(items, FW_CFG.FILE_DIR));
    expect(files.map((f) => f.name)).toEqual(["bootorder", "etc/acpi/rsdp", "etc/e820", "etc/smbios/smbios-anchor",
      "etc/smbios/smbios-tables", "opt/bhyve/hw.ncpu", "opt/greeting", "opt/org.example/blob"]);
    const byName = (n: string) => item(items, files.find((f) => f.name === n)!.select);
    expect(new TextDecoder().decode(byName("bootorder"))).toBe("/pci@i0cf8/pci@5,0\0");
    expect(byName("etc/e820")).toEqual(encodeE820(buildE820(512 * MiB)));
    expect([...byName("opt/bhyve/hw.ncpu")]).toEqual([4, 0, 0, 0]);
    expect([...byName("opt/org.example/blob")]).toEqual([1, 2, 3, 4, 5]);
    expect(new TextDecoder().decode(byName("opt/greeting"))).toBe("hi, there");
    const anchor = byName("etc/smbios/smbios-anchor"), tables = byName("etc/smbios/smbios-tables");
    expect(new DataView(anchor.buffer, anchor.byteOffset).getUint32(0x0c, true)).toBe(tables.length);
    const types = parseSmbiosTable(tables).map((s) => s.type);
    expect(types.filter((t) => t === 4).length).toBe(2);
    const t0 = parseSmbiosTable(tables)[0]!;
    expect(t0.area[0x09]).toBe(31); // 2 MiB ROM = 32 x 64K
    expect([...item(items, FW_CFG.NB_CPUS)]).toEqual([4, 0]);
  });
});
