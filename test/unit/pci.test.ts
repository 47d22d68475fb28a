/**
 * The PCI hierarchy through real Buses over one SharedArrayBuffer: config mechanism #1 and ECAM, BARs
 * (sizing, decoding, moving — seen by a second bus, i.e. another thread), ROM, capabilities, MSI, MSI-X,
 * INTx through the PIRQ router, the chipset personas and the PIIX4 PM base moving the ACPI PM block.
 */
import { describe, expect, test } from "bun:test";
import { Bus, sharedMapGeneration } from "../../src/devices/bus.ts";
import type { Device, DeviceContext, Platform } from "../../src/devices/device.ts";
import { StateArena } from "../../src/devices/state.ts";
import { createAcpiPm, sharedPmBase } from "../../src/devices/acpi-pm.ts";
import { createReset } from "../../src/devices/reset.ts";
import type { GuestMemory } from "../../src/mem/guest-memory.ts";
import type { VmConfig } from "../../src/config/types.ts";
import type { Prepared } from "../../src/vm/prepare.ts";
import { powerOnMachine } from "../../src/vm/machine.ts";
import { MEMMAP, PORTS, pirqOf, pciMem64Base } from "../../src/platform/map.ts";
import {
  allocateBars, createConfigMechanism1, createEcam, createPciDevices, PciFunction, PciFunctions, PirqRouter, pciTopology, pciWindows,
  type PciFunctionSpec,
} from "../../src/pci/index.ts";
import { CFG, COMMAND, MSI, MSIX, STATUS } from "../../src/pci/regs.ts";
import { RecordingPlatform } from "./fake-platform.ts";


const cfgAddr = (bus: number, slot: number, fn: number, reg: number) => (0x8000_0000 | (bus << 16) | (slot << 11) | (fn << 8) | (reg & 0xfc)) >>> 0;
const ecamAddr = (bus: number, slot: number, fn: number, reg: number) => MEMMAP.ecam.base + ((bus << 20) | (slot << 15) | (fn << 12) | reg);

/** A thread's view: devices built over the shared buffer and registered on its own bus. */
function thread(buf: SharedArrayBuffer, platform: Platform, build: (ctx: DeviceContext) => Device[]) {
  const ctx: DeviceContext = { mem: {} as GuestMemory, arena: new StateArena(buf), platform, role: "vcpu" };
  const bus = new Bus();
  const devices = build(ctx);
  for (const d of devices) bus.register(d);
  const io = {
    bus, devices,
    inb: (p: number) => bus.read("pio", p, 1), inw: (p: number) => bus.read("pio", p, 2), inl: (p: number) => bus.read("pio", p, 4),
    outb: (p: number, v: number) => bus.write("pio", p, 1, v), outw: (p: number, v: number) => bus.write("pio", p, 2, v), outl: (p: number, v: number) => bus.write("pio", p, 4, v),
    /** mechanism #1 */
    cr: (b: number, s: number, f: number, reg: number, size: 1 | 2 | 4 = 4) => { bus.write("pio", 0xcf8, 4, cfgAddr(b, s, f, reg)); return bus.read("pio", 0xcfc + (reg & 3), size); },
    cw: (b: number, s: number, f: number, reg: number, v: number, size: 1 | 2 | 4 = 4) => { bus.write("pio", 0xcf8, 4, cfgAddr(b, s, f, reg)); bus.write("pio", 0xcfc + (reg & 3), size, v); },
    /** ECAM */
    er: (b: number, s: number, f: number, reg: number, size: 1 | 2 | 4 = 4) => bus.read("mmio", ecamAddr(b, s, f, reg), size),
    ew: (b: number, s: number, f: number, reg: number, v: number, size: 1 | 2 | 4 = 4) => bus.write("mmio", ecamAddr(b, s, f, reg), size, v),
    mr: (a: number, size: 1 | 2 | 4 = 4) => bus.read("mmio", a, size),
    mw: (a: number, v: number, size: 1 | 2 | 4 = 4) => bus.write("mmio", a, size, v),
  };
  return io;
}

/** Hand-built functions at given addresses behind both mechanisms, on two "threads". */
function rig(specs: [addr: [number, number, number], spec: PciFunctionSpec][], opts: { ramSize?: number; withPm?: boolean } = {}) {
  const buf = new SharedArrayBuffer(1 << 20);
  const platform = new RecordingPlatform();
  const build = (ctx: DeviceContext): Device[] => {
    const gen = sharedMapGeneration(ctx.arena);
    const router = new PirqRouter(ctx);
    const fns = new PciFunctions();
    const list = specs.map(([[bus, slot, fn], spec]) => new PciFunction(ctx, { bus, slot, fn }, spec, { gen, router }));
    for (const f of list) fns.add(f);
    for (const f of list) f.multiFunction = list.some((o) => o !== f && o.addr.slot === f.addr.slot && o.addr.bus === f.addr.bus);
    allocateBars(list, pciWindows(opts.ramSize ?? 2 ** 30));
    const extra: Device[] = opts.withPm ? [createAcpiPm(ctx, { follow: sharedPmBase(ctx.arena, PORTS.pmBase) })] : [];
    return [createReset(ctx), createConfigMechanism1(ctx, fns, router), createEcam(fns), ...list, ...extra];
  };
  const a = thread(buf, platform, build);
  powerOnMachine({ devices: a.devices });
  const b = thread(buf, platform, build);
  const fn = (i: number) => a.devices[3 + i] as PciFunction;
  return { a, b, platform, fn, buf };
}

const ids = { vendor: 0x1af4, device: 0x1000, classCode: 0x020000 };

// ------------------------------------------------------------------------------------------------
describe("configuration access", () => {
  test("mechanism #1 and ECAM return the same bytes; absent functions read all-ones", () => {
    const { a } = rig([[[0, 0, 0], { model: "t", ...ids, revision: 7, subVendor: 0x1af4, subDevice: 1 }], [[0, 3, 0], { model: "u", vendor: 0x8086, device: 0x1234, classCode: 0x010601 }]]);
    for (const [s, f] of [[0, 0], [3, 0], [3, 1], [5, 0], [0, 7]] as const) {
      for (let reg = 0; reg < 0x40; reg += 4) {
        expect(a.cr(0, s, f, reg)).toBe(a.er(0, s, f, reg));
        expect(a.cr(0, s, f, reg + 2, 2)).toBe(a.er(0, s, f, reg + 2, 2));
        expect(a.cr(0, s, f, reg + 1, 1)).toBe(a.er(0, s, f, reg + 1, 1));
      }
    }
    expect(a.cr(0, 0, 0, 0)).toBe(0x1000_1af4);
    expect(a.cr(0, 0, 0, 8)).toBe(0x0200_0007);
    expect(a.cr(0, 0, 0, 0x2c)).toBe(0x0001_1af4);
    expect(a.cr(0, 5, 0, 0)).toBe(0xffffffff);
    expect(a.cr(7, 0, 0, 0)).toBe(0xffffffff); // bus 7 is addressable, nothing there
    expect(a.er(255, 31, 7, 0xffc)).toBe(0xffffffff);
    expect(a.er(0, 3, 0, 0x100)).toBe(0); // extended space of a present function
  });

  test("CONFIG_ADDRESS is dword-only and coexists with the reset byte at 0xCF9", () => {
    const { a, platform } = rig([[[0, 0, 0], { model: "t", ...ids }]]);
    a.outl(0xcf8, 0x80000000);
    expect(a.inl(0xcf8)).toBe(0x80000000);
    a.outl(0xcf8, 0x7f000401); // reserved bits 30:24 and 1:0 drop, enable clear
    expect(a.inl(0xcf8)).toBe(0x00000400);
    expect(a.inb(0xcf8)).toBe(0xff); // byte access to 0xCF8: not CONFIG_ADDRESS
    expect(a.inb(0xcf9)).toBe(0); // the reset control register
    a.outl(0xcf8, 0x80000400); // bit 10 is RST_CPU in 0xCF9: a dword write must not reach it
    expect(platform.exits).toEqual([]);
    a.outb(0xcf9, 0x06);
    expect(platform.exits.map((e) => e.code)).toEqual([0]);
    a.outl(0xcf8, 0x00000000);
    expect(a.inl(0xcfc)).toBe(0xffffffff); // enable bit clear: data port reads all-ones
  });

  test("multi-function bit in function 0's header type when the slot has other functions", () => {
    const { a } = rig([[[0, 1, 0], { model: "x", ...ids }], [[0, 1, 3], { model: "y", ...ids }], [[0, 2, 0], { model: "z", ...ids }]]);
    expect(a.cr(0, 1, 0, CFG.HEADER_TYPE, 1)).toBe(0x80);
    expect(a.cr(0, 2, 0, CFG.HEADER_TYPE, 1)).toBe(0x00);
  });

  test("read-only, read-write and write-1-to-clear registers", () => {
    const { a, fn } = rig([[[0, 4, 0], { model: "t", ...ids, intPin: 1 }]]);
    a.cw(0, 4, 0, 0, 0xffffffff);
    expect(a.cr(0, 4, 0, 0)).toBe(0x1000_1af4);
    a.cw(0, 4, 0, CFG.COMMAND, 0xffff, 2);
    expect(a.cr(0, 4, 0, CFG.COMMAND, 2)).toBe(COMMAND.WRITABLE);
    fn(0).set16(CFG.STATUS, STATUS.W1C | STATUS.CAP_LIST);
    a.cw(0, 4, 0, CFG.STATUS, 1 << 13, 2);
    expect(a.cr(0, 4, 0, CFG.STATUS, 2)).toBe((STATUS.W1C & ~(1 << 13)) | STATUS.CAP_LIST);
    a.cw(0, 4, 0, CFG.INT_LINE, 0xffff, 2);
    expect(a.cr(0, 4, 0, CFG.INT_LINE, 2)).toBe(0x01ff); // line RW, pin RO
  });
});

// ------------------------------------------------------------------------------------------------
describe("BARs", () => {
  const spec: PciFunctionSpec = {
    model: "bars", ...ids,
    bars: [
      { kind: "io", size: 32, read: (o, s) => 0x1000 + o + s, write: () => {} },
      { kind: "mem32", size: 0x1000, read: (o) => 0xabc00000 + o },
      { kind: "mem64", size: 0x4000, prefetchable: true, read: (o) => 0x64000000 + o },
      undefined,
      { kind: "mem64", size: 2 ** 30, read: (o) => o },
    ],
    rom: { size: 0x800, data: new Uint8Array([0x55, 0xaa, 0x04]) },
  };

  test("power-on allocation in the map.ts windows, decode enabled", () => {
    const ram = 6 * 2 ** 30;
    const { a } = rig([[[0, 2, 0], spec]], { ramSize: ram });
    const io = a.cr(0, 2, 0, 0x10);
    expect(io & 1).toBe(1);
    expect(io & ~3).toBeGreaterThanOrEqual(PORTS.pciIo.base);
    const m32 = a.cr(0, 2, 0, 0x14);
    expect(m32 >>> 0).toBeGreaterThanOrEqual(MEMMAP.pciMem32.base);
    expect(m32 & 0xf).toBe(0);
    expect(a.cr(0, 2, 0, 0x18) & 0xf).toBe(0xc); // 64-bit prefetchable
    expect(a.cr(0, 2, 0, 0x1c)).toBe(0); // small 64-bit BAR below 4 GiB
    const big = a.cr(0, 2, 0, 0x20) + a.cr(0, 2, 0, 0x24) * 2 ** 32 - 4;
    expect(big).toBe(pciMem64Base(ram - MEMMAP.lowmemLimit)); // large 64-bit BAR in the 64-bit window
    expect(a.cr(0, 2, 0, CFG.COMMAND, 2) & 3).toBe(3);
    expect(a.inw(io & ~3)).toBe(0x1002);
    expect(a.mr(m32 + 8)).toBe(0xabc00008);
    expect(a.bus.read("mmio", big + 0x10, 4)).toBe(0x10);
  });

  test("sizing: all-ones reads back the size mask with the type bits, for each kind", () => {
    const { a } = rig([[[0, 2, 0], spec]]);
    a.cw(0, 2, 0, CFG.COMMAND, 0, 2);
    const size = (reg: number) => { const old = a.cr(0, 2, 0, reg); a.cw(0, 2, 0, reg, 0xffffffff); const v = a.cr(0, 2, 0, reg); a.cw(0, 2, 0, reg, old); return v >>> 0; };
    expect(size(0x10)).toBe(0xffffffe1);
    expect(size(0x14)).toBe(0xfffff000);
    expect(size(0x18)).toBe(0xffffc00c);
    expect(size(0x1c)).toBe(0xffffffff);
    expect(size(0x20)).toBe(0xc0000004);
    expect(size(0x24)).toBe(0xffffffff);
    expect(size(0x28)).toBe(0); // CardBus CIS pointer: read-only 0
    expect(size(0x30)).toBe(0xfffff801);
  });

  test("COMMAND gates decoding; a BAR move through one bus is seen by the other", () => {
    const { a, b } = rig([[[0, 2, 0], spec]]);
    const m32 = a.cr(0, 2, 0, 0x14);
    expect(b.mr(m32)).toBe(0xabc00000);
    a.cw(0, 2, 0, CFG.COMMAND, COMMAND.IO, 2); // memory decode off
    expect(b.mr(m32)).toBe(0xffffffff);
    a.cw(0, 2, 0, CFG.COMMAND, COMMAND.IO | COMMAND.MEMORY, 2);
    a.cw(0, 2, 0, 0x14, 0xd0000000); // move (outside the window is fine for the guest)
    expect(b.mr(m32)).toBe(0xffffffff);
    expect(b.mr(0xd0000004)).toBe(0xabc00004);
    // 64-bit BAR: the high dword moves it above 4 GiB
    const lo = (a.cr(0, 2, 0, 0x18) & ~0xf) >>> 0;
    a.cw(0, 2, 0, 0x1c, 0x12);
    expect(b.bus.read("mmio", 0x12_0000_0000 + lo + 4, 4)).toBe(0x64000004);
    expect(b.mr(lo + 4)).toBe(0xffffffff);
    // I/O move
    a.cw(0, 2, 0, 0x10, 0x3000);
    expect(b.inw(0x3004)).toBe(0x1006);
    // the bus lists agree
    expect(b.bus.list()).toEqual(a.bus.list());
  });

  test("expansion ROM decodes with its enable bit and COMMAND.MEMORY; missing bytes read 0xFF", () => {
    const { a, b } = rig([[[0, 2, 0], spec]]);
    const rom = a.cr(0, 2, 0, 0x30);
    expect(rom & 1).toBe(0);
    expect(b.mr(rom)).toBe(0xffffffff);
    a.cw(0, 2, 0, 0x30, rom | 1);
    expect(b.mr(rom)).toBe(0xff04aa55);
    expect(b.mr(rom + 0x7fc)).toBe(0xffffffff);
    a.cw(0, 2, 0, CFG.COMMAND, 0, 2);
    expect(b.mr(rom, 2)).toBe(0xffff);
  });

  test("guest-made overlaps keep working: fixed devices and earlier functions win", () => {
    const one: PciFunctionSpec = { model: "one", ...ids, bars: [{ kind: "io", size: 16, read: () => 1 }, { kind: "mem32", size: 0x1000, read: () => 1 }] };
    const two: PciFunctionSpec = { model: "two", ...ids, bars: [{ kind: "io", size: 32, read: () => 2 }, { kind: "mem32", size: 0x1000, read: () => 2 }] };
    const { a, b } = rig([[[0, 2, 0], one], [[0, 3, 0], two]]);
    a.cw(0, 2, 0, 0x10, 0x3010);
    a.cw(0, 3, 0, 0x10, 0x3000); // two's upper half lies under one
    a.cw(0, 3, 0, 0x14, a.cr(0, 2, 0, 0x14));
    expect(b.inb(0x3019)).toBe(1); // one (earlier) wins where they overlap
    expect(b.inb(0x3008)).toBe(2); // two keeps its non-overlapping half
    expect(b.inw(0x300f)).toBe(0x0102); // straddles the two owners: split into bytes
    expect(b.mr(a.cr(0, 2, 0, 0x14))).toBe(1);
    a.cw(0, 3, 0, 0x10, 0xcf8); // over the config mechanism: fixed devices win
    expect(b.inl(0xcf8)).not.toBe(2);
    expect(b.inb(0xcf9)).toBe(0);
    expect(b.inb(0xcfb)).toBe(2); // unclaimed byte of two's range
  });
});

// ------------------------------------------------------------------------------------------------
describe("capabilities", () => {
  const full: PciFunctionSpec = {
    model: "caps", ...ids, intPin: 1,
    bars: [{ kind: "mem32", size: 0x2000 }],
    pm: true,
    msi: { vectors: 8, perVectorMask: true },
    msix: { vectors: 40, bar: 0, tableOffset: 0, pbaOffset: 0x1000 },
    pcie: { type: 9 },
  };

  test("the list walks PM → MSI → MSI-X → PCIe from 0x34, STATUS.CAP_LIST set", () => {
    const { a } = rig([[[0, 6, 0], full]]);
    expect(a.cr(0, 6, 0, CFG.STATUS, 2) & STATUS.CAP_LIST).toBe(STATUS.CAP_LIST);
    const found: [number, number][] = [];
    for (let p = a.cr(0, 6, 0, CFG.CAP_PTR, 1); p; p = a.cr(0, 6, 0, p + 1, 1)) found.push([a.cr(0, 6, 0, p, 1), p]);
    expect(found.map((x) => x[0])).toEqual([0x01, 0x05, 0x11, 0x10]);
    expect(found.every(([, p]) => p >= 0x40 && p % 4 === 0)).toBe(true);
    const [, pm] = found[0]!, [, msi] = found[1]!, [, msix] = found[2]!, [, pcie] = found[3]!;
    expect(a.cr(0, 6, 0, pm + 2, 2)).toBe(3);
    a.cw(0, 6, 0, pm + 4, 1, 2); // D1: not supported, discarded
    expect(a.cr(0, 6, 0, pm + 4, 2) & 3).toBe(0);
    a.cw(0, 6, 0, pm + 4, 3, 2);
    expect(a.cr(0, 6, 0, pm + 4, 2) & 3).toBe(3);
    expect(a.cr(0, 6, 0, msi + 2, 2)).toBe((3 << 1) | MSI.CTRL_64BIT | MSI.CTRL_PVM);
    expect(a.cr(0, 6, 0, msix + 2, 2)).toBe(39);
    expect(a.cr(0, 6, 0, msix + 8)).toBe(0x1000);
    expect(a.cr(0, 6, 0, pcie + 2, 2)).toBe(0x92);
    expect(a.er(0, 6, 0, pcie + 2, 2)).toBe(0x92);
    // no capabilities: bit clear, pointer 0
    const { a: a2 } = rig([[[0, 6, 0], { model: "plain", ...ids }]]);
    expect(a2.cr(0, 6, 0, CFG.STATUS, 2) & STATUS.CAP_LIST).toBe(0);
    expect(a2.cr(0, 6, 0, CFG.CAP_PTR, 1)).toBe(0);
  });

  test("MSI: multi-message data, 64-bit address, per-vector mask with pending delivered on unmask", () => {
    const { a, fn, platform } = rig([[[0, 6, 0], { model: "msi", ...ids, intPin: 1, msi: { vectors: 8, perVectorMask: true } }]]);
    const f = fn(0);
    const o = f.caps.msi;
    expect(f.signalMsi(0)).toBe(false); // disabled
    a.cw(0, 6, 0, o + 4, 0xfee01004); // low bits read-only 0
    a.cw(0, 6, 0, o + 8, 0x1);
    a.cw(0, 6, 0, o + 12, 0x4045, 2);
    a.cw(0, 6, 0, o + 2, MSI.CTRL_ENABLE | (2 << MSI.CTRL_MME_SHIFT), 2); // 4 vectors
    expect(a.cr(0, 6, 0, o + 4)).toBe(0xfee01004);
    f.lock.with(() => { expect(f.signalMsi(3)).toBe(true); expect(f.signalMsi(4)).toBe(false); });
    expect(platform.msis).toEqual([[0x1_fee01004, 0x4047]]);
    a.cw(0, 6, 0, o + 0x10, 0b0110); // mask vectors 1, 2
    f.lock.with(() => { f.signalMsi(1); f.signalMsi(2); f.signalMsi(0); });
    expect(platform.msis.length).toBe(2);
    expect(a.cr(0, 6, 0, o + 0x14)).toBe(0b0110); // pending
    a.cw(0, 6, 0, o + 0x14, 0); // pending is read-only
    expect(a.cr(0, 6, 0, o + 0x14)).toBe(0b0110);
    a.cw(0, 6, 0, o + 0x10, 0b0100); // unmask 1
    expect(platform.msis.at(-1)).toEqual([0x1_fee01004, 0x4045]);
    expect(a.cr(0, 6, 0, o + 0x14)).toBe(0b0100);
    a.cw(0, 6, 0, o + 0x10, 0);
    expect(platform.msis.at(-1)).toEqual([0x1_fee01004, 0x4046]);
    expect(a.cr(0, 6, 0, o + 0x14)).toBe(0);
  });

  test("MSI-X: table writes, function mask, per-vector mask, PBA pending then delivery on unmask", () => {
    const { a, b, fn, platform } = rig([[[0, 6, 0], full]]);
    const f = fn(0);
    const bar = (a.cr(0, 6, 0, 0x10) & ~0xf) >>> 0;
    const o = f.caps.msix;
    expect(a.mr(bar + 12)).toBe(1); // vector control masked at power-on
    for (let v = 0; v < 40; v++) {
      a.mw(bar + 16 * v, 0xfee00000 + v * 0x1000 + 3); // low bits read-only
      a.mw(bar + 16 * v + 4, 0);
      a.mw(bar + 16 * v + 8, 0x30 + v);
    }
    expect(b.mr(bar + 16 * 5)).toBe(0xfee05000);
    expect(b.mr(bar + 16 * 5 + 8)).toBe(0x35);
    a.cw(0, 6, 0, o + 2, MSIX.CTRL_ENABLE | MSIX.CTRL_FMASK, 2);
    a.mw(bar + 16 * 33 + 12, 0); // unmask 33 while the function is masked
    f.lock.with(() => f.signalMsi(33));
    expect(platform.msis).toEqual([]);
    expect(b.mr(bar + 0x1000 + 4)).toBe(1 << 1); // PBA bit 33
    a.cw(0, 6, 0, o + 2, MSIX.CTRL_ENABLE, 2); // function unmask → delivered
    expect(platform.msis).toEqual([[0xfee21000, 0x51]]);
    expect(f.msixPending(33)).toBe(false);
    f.lock.with(() => f.signalMsi(7)); // vector-masked
    expect(f.msixPending(7)).toBe(true);
    expect(platform.msis.length).toBe(1);
    b.bus.writeWide("mmio", bar + 16 * 7 + 8, 8, 0x99, 0); // qword: data + vector control (unmask)
    expect(platform.msis.at(-1)).toEqual([0xfee07000, 0x99]);
    expect(f.msixPending(7)).toBe(false);
    a.mw(bar + 0x1000, 0xffffffff); // PBA read-only
    expect(a.mr(bar + 0x1000)).toBe(0);
    expect(a.mr(bar + 16 * 7 + 12, 1)).toBe(0);
  });

  test("INTx: level sharing across two functions on one PIRQ, INTx disable, MSI suppresses INTx", () => {
    // slot 2 INTB and slot 3 INTA share a PIRQ
    expect(pirqOf(2, 2)).toBe(pirqOf(3, 1));
    const p = pirqOf(3, 1), gsi = 16 + p;
    const { a, fn, platform } = rig([
      [[0, 2, 0], { model: "a", ...ids, intPin: 2, msi: { vectors: 1 } }],
      [[0, 3, 0], { model: "b", ...ids, intPin: 1 }],
    ]);
    expect(a.cr(0, 2, 0, CFG.INT_LINE, 2)).toBe(0x0200 | gsi);
    const f0 = fn(0), f1 = fn(1);
    f0.lock.with(() => f0.assertIntx());
    f1.lock.with(() => f1.assertIntx());
    expect(platform.irqs).toEqual([[gsi, 1]]); // driven once
    expect(a.cr(0, 2, 0, CFG.STATUS, 2) & STATUS.INTERRUPT).toBe(STATUS.INTERRUPT);
    f0.lock.with(() => f0.deassertIntx());
    expect(platform.irqs).toEqual([[gsi, 1]]); // still held by the other
    f1.lock.with(() => f1.deassertIntx());
    expect(platform.irqs).toEqual([[gsi, 1], [gsi, 0]]);
    // INTx disable masks a pending assertion; re-enable replays it; STATUS still shows it
    platform.irqs.length = 0;
    a.cw(0, 3, 0, CFG.COMMAND, COMMAND.INTX_DISABLE, 2);
    f1.lock.with(() => f1.assertIntx());
    expect(platform.irqs).toEqual([]);
    expect(a.cr(0, 3, 0, CFG.STATUS, 2) & STATUS.INTERRUPT).toBe(STATUS.INTERRUPT);
    a.cw(0, 3, 0, CFG.COMMAND, 0, 2);
    expect(platform.irqs).toEqual([[gsi, 1]]);
    f1.lock.with(() => f1.deassertIntx());
    // MSI enabled suppresses INTx (and lowers a line it was holding)
    platform.irqs.length = 0;
    f0.lock.with(() => f0.assertIntx());
    expect(platform.irqs).toEqual([[gsi, 1]]);
    a.cw(0, 2, 0, f0.caps.msi + 2, MSI.CTRL_ENABLE, 2);
    expect(platform.irqs).toEqual([[gsi, 1], [gsi, 0]]);
    a.cw(0, 2, 0, f0.caps.msi + 2, 0, 2);
    expect(platform.irqs.at(-1)).toEqual([gsi, 1]);
  });
});

// ------------------------------------------------------------------------------------------------
const baseCfg = (pci: VmConfig["pci"], extra: Partial<VmConfig> = {}): VmConfig => ({
  name: "t", cpus: 1, sockets: 1, cores: 1, threads: 1, cpusets: {}, memory: { size: 2 ** 30, wired: false }, com: [], pci,
  acpiTables: true, destroyOnPoweroff: false, pcTestdev: false, rtcLocaltime: false,
  x86: { strictio: false, strictmsr: false, mptable: true, vmexitOnHlt: false, verbosemsr: false }, source: "test", ...extra,
}) as unknown as VmConfig;

function chipset(cfg: VmConfig) {
  const buf = new SharedArrayBuffer(1 << 20);
  const platform = new RecordingPlatform();
  const build = (ctx: DeviceContext): Device[] => [
    createReset(ctx),
    createAcpiPm(ctx, { follow: sharedPmBase(ctx.arena, PORTS.pmBase) }),
    ...createPciDevices(ctx, cfg, {} as Prepared),
  ];
  const a = thread(buf, platform, build);
  powerOnMachine({ devices: a.devices });
  const b = thread(buf, platform, build);
  return { a, b, platform };
}

describe("chipset personas", () => {
  const std = { "0.0.0": { device: "hostbridge" }, "0.1.0": { device: "lpc" } };

  test("i440FX + PIIX3 + PIIX4 PM: the IDs OVMF and SeaBIOS probe", () => {
    const { a } = chipset(baseCfg(std));
    expect(a.cr(0, 0, 0, 0)).toBe(0x1237_8086);
    expect(a.cr(0, 0, 0, 8)).toBe(0x0600_0002);
    expect(a.cr(0, 1, 0, 0)).toBe(0x7000_8086);
    expect(a.cr(0, 1, 0, 8) >>> 8).toBe(0x060100);
    expect(a.cr(0, 1, 0, CFG.HEADER_TYPE, 1)).toBe(0x80);
    expect(a.cr(0, 1, 3, 0)).toBe(0x7113_8086);
    expect(a.cr(0, 1, 3, 8) >>> 8).toBe(0x068000);
    for (const f of [1, 2, 4, 5, 6, 7]) expect(a.cr(0, 1, f, 0)).toBe(0xffffffff);
    // PAM and SMRAM store what firmware writes
    a.cw(0, 0, 0, 0x5a, 0x33, 1);
    expect(a.cr(0, 0, 0, 0x5a, 1)).toBe(0x33);
    expect(a.cr(0, 0, 0, 0x72, 1)).toBe(0x02);
    a.cw(0, 0, 0, 0x72, 0xff, 1);
    expect(a.cr(0, 0, 0, 0x72, 1)).toBe(0x7a);
  });

  test("bhyve and AMD personas; pcireg overrides (tables and strings)", () => {
    const { a } = chipset(baseCfg({
      "0.0.0": { device: "hostbridge", persona: "bhyve" },
      "0.2.0": { device: "amd_hostbridge", pcireg: { revid: 5 } },
      "0.3.0": { device: "hostbridge", pcireg: { vendor: 0x1234, device: "0x5678", subvendor: "4660", subdevice: 0x11, class: 0x060400 } },
      "0.1.0": { device: "lpc", pcireg: { device: 0x7110 } },
    }));
    expect(a.cr(0, 0, 0, 0)).toBe(0x1275_1275);
    expect(a.cr(0, 0, 0, CFG.STATUS, 2) & STATUS.CAP_LIST).toBe(STATUS.CAP_LIST); // PCIe capability
    expect(a.cr(0, 2, 0, 0)).toBe(0x7432_1022);
    expect(a.cr(0, 2, 0, 8, 1)).toBe(5);
    expect(a.cr(0, 3, 0, 0)).toBe(0x5678_1234);
    expect(a.cr(0, 3, 0, 0x2c)).toBe(0x0011_1234);
    expect(a.cr(0, 3, 0, 8) >>> 8).toBe(0x060400);
    expect(a.cr(0, 1, 0, 0)).toBe(0x7110_8086);
    expect(() => chipset(baseCfg({ "0.0.0": { device: "hostbridge", pcireg: { vendor: "host" } } }))).toThrow(/pcireg.vendor: expected an integer/);
    expect(() => chipset(baseCfg({ "0.0.0": { device: "hostbridge", pcireg: { colour: 1 } } }))).toThrow(/unknown register/);
    expect(() => chipset(baseCfg({ "0.0.0": { device: "hostbridge", persona: "q35" } }))).toThrow(/persona/);
    expect(() => chipset(baseCfg({ "0.1.0": { device: "lpc" }, "0.1.3": { device: "hostbridge" } }))).toThrow(/clashes/);
  });

  test("PIRQ route registers: 8 links, only permitted IRQs, re-steer an asserted line", () => {
    const { a, b, platform } = chipset(baseCfg(std));
    const regs = [0x60, 0x61, 0x62, 0x63, 0x68, 0x69, 0x6a, 0x6b];
    for (const r of regs) expect(a.cr(0, 1, 0, r, 1)).toBe(0x80);
    a.cw(0, 1, 0, 0x60, 0x0b0a0a0b); // OVMF-style dword write: A=11 B=10 C=10 D=11
    expect(b.cr(0, 1, 0, 0x60)).toBe(0x0b0a0a0b);
    a.cw(0, 1, 0, 0x68, 0x08, 1); // IRQ 8 (RTC) is not permitted: ignored
    expect(a.cr(0, 1, 0, 0x68, 1)).toBe(0x80);
    a.cw(0, 1, 0, 0x68, 0x8f, 1); // disabled with junk IRQ bits: accepted
    expect(a.cr(0, 1, 0, 0x68, 1)).toBe(0x8f);
    expect(platform.irqs).toEqual([]);
  });

  test("INTx follows the route register into the PIC (ISA IRQ) as well as the IOAPIC", () => {
    const buf = new SharedArrayBuffer(1 << 20);
    const platform = new RecordingPlatform();
    const cfg = baseCfg({ "0.0.0": { device: "hostbridge" }, "0.1.0": { device: "lpc" } });
    const extraSpec: PciFunctionSpec = { model: "nic", ...ids, intPin: 1 };
    let nic!: PciFunction;
    const t = thread(buf, platform, (ctx) => {
      const devs = createPciDevices(ctx, cfg, {} as Prepared);
      // a function wired to the same router: reuse the lpc's router through its slot rule
      const lpc = devs.find((d) => d.name === "pci.0.1.0") as PciFunction;
      nic = new PciFunction(ctx, { bus: 0, slot: 5, fn: 0 }, extraSpec, { gen: sharedMapGeneration(ctx.arena), router: (lpc as unknown as { router: PirqRouter }).router });
      return [...devs, nic];
    });
    powerOnMachine({ devices: t.devices });
    const p = pirqOf(5, 1);
    t.cw(0, 1, 0, p < 4 ? 0x60 + p : 0x64 + p, 0x0b, 1);
    nic.lock.with(() => nic.assertIntx());
    expect(platform.irqs).toEqual([[16 + p, 1], [11, 1]]);
    t.cw(0, 1, 0, p < 4 ? 0x60 + p : 0x64 + p, 0x05, 1); // re-route while asserted
    expect(platform.irqs.slice(2)).toEqual([[11, 0], [5, 1]]);
    nic.lock.with(() => nic.deassertIntx());
    expect(platform.irqs.slice(4)).toEqual([[16 + p, 0], [5, 0]]);
  });

  test("PIIX4 PMBA/PMREGMISC move the ACPI PM block on every bus", () => {
    const { a, b, platform } = chipset(baseCfg({ "0.0.0": { device: "hostbridge" }, "0.1.0": { device: "lpc" } }));
    // direct boot (no boot ROM): pre-programmed at PORTS.pmBase
    expect(a.cr(0, 1, 3, 0x40)).toBe(PORTS.pmBase | 1);
    expect(a.cr(0, 1, 3, 0x80, 1)).toBe(1);
    expect(b.inw(PORTS.pmBase + 4) & 1).toBe(1); // PM1_CNT.SCI_EN
    // firmware-style: program 0xB000, then enable
    a.cw(0, 1, 3, 0x80, 0, 1);
    expect(b.inw(PORTS.pmBase + 4)).toBe(0xffff);
    a.cw(0, 1, 3, 0x40, 0xb001);
    expect(a.cr(0, 1, 3, 0x40)).toBe(0xb001);
    expect(b.inw(0xb004)).toBe(0xffff); // not yet enabled
    a.cw(0, 1, 3, 0x80, 1, 1);
    expect(b.inw(0xb004) & 1).toBe(1);
    expect(b.inw(PORTS.pmBase + 4)).toBe(0xffff);
    b.outw(0xb004, (5 << 10) | (1 << 13)); // S5 through the moved block, from the other thread
    expect(platform.exits.map((e) => e.code)).toEqual([1]);
    // PMBA bits below 6 are not writable
    a.cw(0, 1, 3, 0x40, 0xc03f);
    expect(a.cr(0, 1, 3, 0x40)).toBe(0xc001);
    expect(a.inw(0xc004) & 1).toBe(1);
  });

  test("with a boot ROM the PM function powers on unprogrammed (firmware moves it)", () => {
    const { a } = chipset(baseCfg({ "0.0.0": { device: "hostbridge" }, "0.1.0": { device: "lpc" } }, { bootrom: "/x.fd" }));
    expect(a.cr(0, 1, 3, 0x40)).toBe(1);
    expect(a.cr(0, 1, 3, 0x80, 1)).toBe(0);
    expect(a.inw(PORTS.pmBase + 4)).toBe(0xffff);
  });

  test("no PM function (lpc absent): the PM block stays at the default base", () => {
    const { a } = chipset(baseCfg({ "0.0.0": { device: "hostbridge" } }));
    expect(a.inw(PORTS.pmBase + 4) & 1).toBe(1);
  });
});

// ------------------------------------------------------------------------------------------------
describe("topology", () => {
  test("windows, ECAM, slots with their pin → PIRQ → IOAPIC routing, ISA and PM locations", () => {
    const t = pciTopology(baseCfg({ "0.0.0": { device: "hostbridge" }, "0.31.0": { device: "lpc" } }), 5 * 2 ** 30);
    expect(t.windows).toEqual({ io: { base: 0x2000, limit: 0x10000 }, mem32: { base: 0xc0000000, size: 0x20000000 }, mem64: { base: 32 * 2 ** 30, size: 32 * 2 ** 30 } });
    expect(t.ecam).toEqual({ base: 0xe0000000, size: 0x10000000, busStart: 0, busEnd: 255 });
    expect(t.slots.map((s) => s.slot)).toEqual([0, 31]);
    expect(t.slots[1]!.functions.map((f) => [f.fn, f.model])).toEqual([[0, "PIIX3 ISA"], [3, "PIIX4 PM"]]);
    expect(t.slots[1]!.routes[0]).toEqual({ pin: 1, pirq: pirqOf(31, 1), ioapicPin: 16 + pirqOf(31, 1) });
    expect(t.isa).toEqual({ slot: 31, fn: 0 });
    expect(t.pm).toEqual({ slot: 31, fn: 3 });
    expect(() => pciTopology(baseCfg({ "0.0.0": { device: "nope" } }), 2 ** 30)).toThrow(/no emulation/);
  });
});

// ------------------------------------------------------------------------------------------------
describe("fuzz", () => {
  test("100k random config/BAR accesses through both mechanisms: no exception, both buses agree", () => {
    const spec: PciFunctionSpec = {
      model: "fz", ...ids, intPin: 1,
      bars: [{ kind: "io", size: 64, read: (o) => o }, { kind: "mem32", size: 0x4000 }, { kind: "mem64", size: 0x10000 }],
      rom: { size: 0x1000 },
      pm: true, msi: { vectors: 4, perVectorMask: true }, msix: { vectors: 8, bar: 1, tableOffset: 0, pbaOffset: 0x800 },
    };
    const { a, b, fn } = rig([[[0, 2, 0], spec], [[0, 2, 1], { ...spec, model: "fz2" }], [[0, 3, 0], { ...spec, model: "fz3", pcie: { type: 0 } }]], { withPm: true });
    let x = 0x2545f491;
    const rnd = () => { x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0; return x; };
    const sizes = [1, 2, 4] as const;
    const interesting = [0x04, 0x06, 0x10, 0x14, 0x18, 0x1c, 0x30, 0x3c, 0x40, 0x44, 0x48, 0x50, 0x54, 0x58, 0x60, 0x64];
    for (let i = 0; i < 100_000; i++) {
      const t = rnd() & 1 ? a : b;
      const size = sizes[rnd() % 3]!;
      const slot = rnd() % 3 === 0 ? rnd() & 31 : 2 + (rnd() & 1);
      const f = rnd() % 4 === 0 ? rnd() & 7 : (rnd() & 1);
      const reg = (rnd() & 1 ? interesting[rnd() % interesting.length]! + (rnd() & 3) : rnd() & 0xfff) & ~(size - 1);
      const v = rnd() % 5 === 0 ? 0xffffffff : rnd();
      switch (rnd() % 8) {
        case 0: t.cr(0, slot, f, reg & 0xff, size); break;
        case 1: t.cw(0, slot, f, reg & 0xff, v, size); break;
        case 2: t.er(0, slot, f, reg, size); break;
        case 3: t.ew(0, slot, f, reg, v, size); break;
        case 4: { // random BAR move with decode on
          const k = [0x10, 0x14, 0x18][rnd() % 3]!;
          t.cw(0, 2 + (rnd() & 1), 0, k, k === 0x10 ? 0x2000 + (rnd() & 0xdfc0) : 0xc0000000 + (rnd() & 0x1fffc000));
          t.cw(0, 2 + (rnd() & 1), 0, 4, 7, 2);
          break;
        }
        case 5: { const r = t.bus.list(); const m = r[rnd() % r.length]!; const addr = m.base + (rnd() % (m.size + 4)); t.bus.read(m.space, addr, size); break; }
        case 6: { const r = t.bus.list(); const m = r[rnd() % r.length]!; t.bus.write(m.space, m.base + (rnd() % (m.size + 4)), size, v); break; }
        case 7: { const fx = fn(rnd() % 3); fx.lock.with(() => { if (rnd() & 1) fx.signalMsi(rnd() & 7); else fx.setIntx(!!(rnd() & 1)); }); break; }
      }
      if (i % 997 === 0) expect(b.bus.list()).toEqual(a.bus.list());
    }
    expect(b.bus.list()).toEqual(a.bus.list());
  });
});
