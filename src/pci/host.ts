/**
 * The PCI host: configuration access (mechanism #1 and ECAM), the function table, BAR allocation at
 * power-on, and createPciDevices() which the device table calls.
 *
 * Configuration mechanism #1 (PCI Local Bus 3.0 §3.2.2.3.2):
 *   0xCF8  CONFIG_ADDRESS, dword accesses only: bit 31 enable, 23:16 bus, 15:11 device, 10:8 function,
 *          7:2 register. Other widths at 0xCF8-0xCFB are ordinary I/O (0xCF9 is the reset control
 *          byte, src/devices/reset.ts), so the claim is an exact dword (IoRangeEx.exact).
 *   0xCFC-0xCFF CONFIG_DATA: byte, word or dword; byte n of the selected dword at 0xCFC + n.
 * ECAM (PCI Express Base §7.2.2) at MEMMAP.ecam: address = base + (bus << 20 | dev << 15 | fn << 12 | reg),
 *   buses 0-255, the full 4 KiB space of each function.
 * A function that does not exist reads all-ones and ignores writes (a master abort).
 */
import type { VmConfig } from "../config/types.ts";
import { sharedMapGeneration, type IoRangeEx } from "../devices/bus.ts";
import type { AccessSize, Device, DeviceContext } from "../devices/device.ts";
import { defineLayout } from "../devices/state.ts";
import { MEMMAP, PORTS, pciMem64Base } from "../platform/map.ts";
import type { Prepared } from "../vm/prepare.ts";
import { bdf, type PciAddress, PciFunction } from "./function.ts";
import { PirqRouter } from "./intx.ts";
import type { PciTable } from "./pcireg.ts";
import { PCI_EMULATIONS } from "./registry.ts";
import type { PciFunctionInfo } from "./registry-types.ts";

const ONES = [0, 0xff, 0xffff, 0, 0xffffffff] as const;

export const CONFIG_ADDRESS = { ENABLE: 0x8000_0000, STORED: 0x80ff_fffc } as const;

/** Decode a mechanism #1 CONFIG_ADDRESS value. */
export function decodeConfigAddress(a: number): PciAddress & { reg: number; enabled: boolean } {
  return { enabled: (a & CONFIG_ADDRESS.ENABLE) !== 0, bus: (a >>> 16) & 0xff, slot: (a >>> 11) & 0x1f, fn: (a >>> 8) & 7, reg: a & 0xfc };
}

/** Decode an offset into the ECAM window. */
export function decodeEcam(off: number): PciAddress & { reg: number } {
  return { bus: (off >>> 20) & 0xff, slot: (off >>> 15) & 0x1f, fn: (off >>> 12) & 7, reg: off & 0xfff };
}

/** The populated functions, by bus << 8 | slot << 3 | fn. Plain per-thread data (identical everywhere). */
export class PciFunctions {
  private readonly byBdf = new Map<number, PciFunction>();
  add(f: PciFunction): void {
    const k = bdf(f.addr);
    if (this.byBdf.has(k)) throw new Error(`${f.name}: two PCI functions at the same address`);
    this.byBdf.set(k, f);
  }
  get(bus: number, slot: number, fn: number): PciFunction | undefined { return this.byBdf.get((bus << 8) | (slot << 3) | fn); }
  all(): PciFunction[] { return [...this.byBdf.values()]; }

  /** Config read through the function's lock; all-ones for an absent function. */
  read(a: PciAddress, reg: number, size: AccessSize): number {
    const f = this.get(a.bus, a.slot, a.fn);
    if (!f) return ONES[size];
    f.lock.acquire();
    try { return f.cfgRead(reg, size) >>> 0; } finally { f.lock.release(); }
  }
  write(a: PciAddress, reg: number, size: AccessSize, value: number): void {
    const f = this.get(a.bus, a.slot, a.fn);
    if (!f) return;
    f.lock.acquire();
    try { f.cfgWrite(reg, size, value); } finally { f.lock.release(); }
  }
}

export const pciConfigLayout = defineLayout("pci-config", 1, { address: "u32" });

/** Mechanism #1 at 0xCF8/0xCFC. Its powerOn also resets the PIRQ router (no Device of its own). */
export function createConfigMechanism1(ctx: DeviceContext, fns: PciFunctions, router?: PirqRouter): Device {
  const { s, lock } = ctx.arena.alloc(pciConfigLayout);
  const ranges: IoRangeEx[] = [
    { space: "pio", base: PORTS.pciConfigAddress, size: 4, exact: true },
    { space: "pio", base: PORTS.pciConfigData, size: 4 },
  ];
  return {
    name: "pci-config",
    ranges,
    lock,
    read(_space, base, offset, size) {
      if (base === PORTS.pciConfigAddress) return s.address;
      const a = decodeConfigAddress(s.address);
      if (!a.enabled) return ONES[size];
      return fns.read(a, a.reg + offset, size);
    },
    write(_space, base, offset, size, value) {
      if (base === PORTS.pciConfigAddress) { s.address = value & CONFIG_ADDRESS.STORED; return; }
      const a = decodeConfigAddress(s.address);
      if (a.enabled) fns.write(a, a.reg + offset, size, value);
    },
    powerOn() {
      s.address = 0;
      router?.powerOn();
    },
  };
}

/** ECAM: the whole window, no state of its own (each access takes the target function's lock). */
export function createEcam(fns: PciFunctions, window: { base: number; size: number } = MEMMAP.ecam): Device {
  return {
    name: "pci-ecam",
    ranges: [{ space: "mmio", base: window.base, size: window.size }],
    read(_space, _base, offset, size) { const a = decodeEcam(offset); return fns.read(a, a.reg, size); },
    write(_space, _base, offset, size, value) { const a = decodeEcam(offset); fns.write(a, a.reg, size, value); },
  };
}

// ------------------------------------------------------------------------------------------------
// windows and allocation

export interface PciWindows {
  /** I/O BARs: [base, limit) */
  io: { base: number; limit: number };
  mem32: { base: number; size: number };
  mem64: { base: number; size: number };
}

export function pciWindows(ramSize: number): PciWindows {
  const highmem = Math.max(0, ramSize - MEMMAP.lowmemLimit);
  return {
    io: { base: PORTS.pciIo.base, limit: PORTS.pciIo.limit },
    mem32: { ...MEMMAP.pciMem32 },
    mem64: { base: pciMem64Base(highmem), size: MEMMAP.pciMem64Size },
  };
}

/** 64-bit BARs larger than this go to the 64-bit window; smaller ones below 4 GiB (more guests cope). */
export const MEM64_HIGH_THRESHOLD = 128 * 2 ** 20;

/**
 * Assign every BAR and ROM an address in the windows (deterministic: largest first, then table order),
 * into each function's `assigned`/`romAssigned` for its powerOn. Returns what did not fit.
 */
export function allocateBars(fns: readonly PciFunction[], w: PciWindows): string[] {
  type Req = { fn: PciFunction; bar: number; size: number; kind: "io" | "mem32" | "mem64" | "rom"; seq: number };
  const reqs: Req[] = [];
  for (const fn of fns) {
    (fn.spec.bars ?? []).forEach((b, i) => { if (b) reqs.push({ fn, bar: i, size: b.size, kind: b.kind, seq: reqs.length }); });
    if (fn.spec.rom) reqs.push({ fn, bar: -1, size: fn.spec.rom.size, kind: "rom", seq: reqs.length });
  }
  reqs.sort((a, b) => b.size - a.size || a.seq - b.seq);
  const io = { next: w.io.base, end: w.io.limit };
  const m32 = { next: w.mem32.base, end: w.mem32.base + w.mem32.size };
  const m64 = { next: w.mem64.base, end: w.mem64.base + w.mem64.size };
  const take = (pool: { next: number; end: number }, size: number): number | undefined => {
    const a = Math.ceil(pool.next / size) * size;
    if (a + size > pool.end) return undefined;
    pool.next = a + size;
    return a;
  };
  const failed: string[] = [];
  for (const r of reqs) {
    let a: number | undefined;
    if (r.kind === "io") a = take(io, r.size);
    else if (r.kind === "mem64") a = r.size > MEM64_HIGH_THRESHOLD ? take(m64, r.size) : take(m32, r.size) ?? take(m64, r.size);
    else a = take(m32, r.size);
    if (a === undefined) failed.push(`${r.fn.name} ${r.bar < 0 ? "ROM" : `BAR${r.bar}`} (${r.kind}, ${r.size} bytes)`);
    if (r.bar < 0) r.fn.romAssigned = a;
    else r.fn.assigned[r.bar] = a;
  }
  return failed;
}

// ------------------------------------------------------------------------------------------------
// the configuration's functions

function parseAddr(key: string): PciAddress {
  const [bus, slot, fn] = key.split(".").map(Number) as [number, number, number];
  return { bus, slot, fn };
}

/** Every function the configuration's pci tables create, in table order, checked for clashes. */
export function describePci(cfg: Pick<VmConfig, "pci">): (PciFunctionInfo & { key: string; device: string })[] {
  const out: (PciFunctionInfo & { key: string; device: string })[] = [];
  const seen = new Map<number, string>();
  for (const [key, table] of Object.entries(cfg.pci)) {
    const emu = PCI_EMULATIONS[table.device];
    if (!emu) throw new Error(`pci.${key}: "${table.device}" has no emulation in this build (available: ${Object.keys(PCI_EMULATIONS).join(", ")})`);
    for (const info of emu.describe(parseAddr(key), table as PciTable)) {
      const k = bdf(info.addr);
      const other = seen.get(k);
      const at = `pci.${info.addr.bus}.${info.addr.slot}.${info.addr.fn}`;
      if (other) throw new Error(`${at}: ${info.model} of pci.${key} clashes with ${other}`);
      seen.set(k, `${info.model} of pci.${key}`);
      out.push({ ...info, key, device: table.device });
    }
  }
  return out;
}

/**
 * The PCI part of the device table: the mechanism #1 device, the ECAM device, then every function of
 * the configuration's pci tables (in address order). Identical in every thread. BARs are assigned here
 * (pure function of the configuration) and written into config space by each function's powerOn.
 */
export function createPciDevices(ctx: DeviceContext, cfg: VmConfig, prepared: Prepared): Device[] {
  describePci(cfg); // validation before anything is allocated
  const gen = sharedMapGeneration(ctx.arena);
  const router = new PirqRouter(ctx);
  const fns = new PciFunctions();
  const config = createConfigMechanism1(ctx, fns, router);
  const ecam = createEcam(fns);
  const list: PciFunction[] = [];
  for (const [key, table] of Object.entries(cfg.pci)) {
    const emu = PCI_EMULATIONS[table.device]!;
    for (const f of emu.create({ ctx, cfg, prepared, addr: parseAddr(key), table: table as PciTable, gen, router })) {
      fns.add(f);
      list.push(f);
    }
  }
  for (const f of list) {
    f.multiFunction = list.some((o) => o !== f && o.addr.bus === f.addr.bus && o.addr.slot === f.addr.slot);
  }
  const failed = allocateBars(list, pciWindows(cfg.memory.size));
  if (failed.length && ctx.role === "main") ctx.platform.log(`pci: no room in the PCI windows for ${failed.join(", ")}; left unassigned`);
  list.sort((a, b) => bdf(a.addr) - bdf(b.addr));
  return [config, ecam, ...list];
}
