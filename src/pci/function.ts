/**
 * One PCI function: its configuration space in shared state, what the guest may write declared as data
 * (per-byte write masks and write-1-to-clear masks), BARs, expansion ROM, the capability list (PM, MSI,
 * MSI-X, PCI Express), INTx through the PIRQ router, and the bus Device that decodes its BARs.
 *
 * Config space: 4096 bytes per function in the function's state block (the first 256 are what
 * mechanism #1 reaches; ECAM reaches all). A guest write of byte b at offset o stores
 *   (old & ~wmask[o]) | (b & wmask[o]), then clears (b & w1c[o]).
 * Read-only, read-write and write-1-to-clear registers are therefore nothing but mask bytes, built once
 * per thread from the spec (identical in every thread). BAR sizing falls out of the masks: a BAR's
 * writable bits are its address bits above its size, so writing all-ones reads back the size mask.
 *
 * BAR decoding (PCI 3.0 §6.2.5): an I/O BAR decodes while COMMAND.IO is set, a memory BAR (and the ROM
 * BAR with its enable bit) while COMMAND.MEMORY is set. A BAR at address 0 does not decode (the usual
 * "unassigned" convention). The function is a RelocatableDevice: `ranges` is computed from config space,
 * and every config write that changes the decoded ranges bumps the arena's MapGeneration so each
 * thread's bus follows.
 *
 * Locking: everything here runs under the function's lock (`lock`): the bus takes it around BAR
 * accesses, the configuration mechanisms around config accesses; device models call assertIntx(),
 * signalMsi() etc. with it held. Device models built on a PciFunction use `fn.lock` as their lock.
 */
import { type MapGeneration, type RelocatableDevice } from "../devices/bus.ts";
import type { AccessSize, DeviceContext, IoRange, Platform, Space } from "../devices/device.ts";
import { defineLayout, type DeviceLock } from "../devices/state.ts";
import { pirqOf, ioapicPinOfPirq } from "../platform/map.ts";
import type { PirqRouter } from "./intx.ts";
import { BAR, CAP_ID, CFG, COMMAND, HEADER_MULTIFUNCTION, MSI, MSIX, PCIE, PMCAP, ROM_ADDR_MASK, ROM_ENABLE, STATUS } from "./regs.ts";

export interface PciAddress { bus: number; slot: number; fn: number }

export const pciName = (a: PciAddress): string => `pci.${a.bus}.${a.slot}.${a.fn}`;
/** bus << 8 | slot << 3 | fn */
export const bdf = (a: PciAddress): number => (a.bus << 8) | (a.slot << 3) | a.fn;

export type BarKind = "io" | "mem32" | "mem64";

export interface BarSpec {
  kind: BarKind;
  /** bytes, a power of two: I/O ≥ 4, memory ≥ 16 */
  size: number;
  prefetchable?: boolean;
  /** Guest access at `offset` into the BAR (function lock held). Default: reads all-ones, writes ignored. */
  read?(offset: number, size: AccessSize): number;
  write?(offset: number, size: AccessSize, value: number): void;
}

export interface MsiSpec {
  /** vectors requested (Multiple Message Capable): 1, 2, 4, 8, 16 or 32 */
  vectors: number;
  /** 64-bit message address (default true) */
  addr64?: boolean;
  /** per-vector masking with mask and pending bits (default false) */
  perVectorMask?: boolean;
}

export interface MsixSpec {
  /** table size, 1-2048 */
  vectors: number;
  /** BAR holding the table and the PBA (both may be the same BAR) */
  bar: number;
  tableOffset: number;
  pbaBar?: number;
  pbaOffset: number;
}

export interface PcieSpec {
  /** device/port type (PCIE.TYPE_*) */
  type: number;
}

/** A device-specific config register: power-on value and masks (each `size` bytes, little-endian). */
export interface ConfigReg {
  offset: number;
  size: 1 | 2 | 4;
  value: number;
  wmask?: number;
  w1c?: number;
}

export interface PciFunctionSpec {
  /** persona, for messages ("i440FX", "PIIX3 ISA", ...) */
  model: string;
  vendor: number;
  device: number;
  revision?: number;
  /** base class << 16 | subclass << 8 | programming interface */
  classCode: number;
  subVendor?: number;
  subDevice?: number;
  /** INTx pin: 0 none, 1 INTA .. 4 INTD */
  intPin?: number;
  /** BARs by index 0-5 (a mem64 BAR takes index i and i+1) */
  bars?: readonly (BarSpec | undefined)[];
  /** expansion ROM: size (power of two ≥ 2 KiB) and optional contents (missing bytes read 0xFF) */
  rom?: { size: number; data?: Uint8Array };
  pm?: boolean;
  msi?: MsiSpec;
  msix?: MsixSpec;
  pcie?: PcieSpec;
  /** where the capability list starts (default 0x40); device registers must not overlap it */
  capBase?: number;
  regs?: readonly ConfigReg[];
  /** After a guest config write of `size` bytes at `offset` whose previous value was `old` (lock held). */
  configWritten?(fn: PciFunction, offset: number, size: number, old: number): void;
  /** Device-specific power-on after the generic one (lock held; no Platform calls). */
  powerOn?(fn: PciFunction): void;
}

/** Where each capability landed (offsets in config space; 0 = absent). */
export interface CapOffsets { pm: number; msi: number; msix: number; pcie: number }

const MAX_PHYS = 2 ** 52;
const isPow2 = (n: number): boolean => Number.isSafeInteger(n) && n > 0 && 2 ** Math.round(Math.log2(n)) === n;

export class PciFunction implements RelocatableDevice {
  readonly name: string;
  readonly lock: DeviceLock;
  readonly mapGeneration: MapGeneration;
  readonly addr: PciAddress;
  readonly spec: PciFunctionSpec;
  readonly caps: CapOffsets = { pm: 0, msi: 0, msix: 0, pcie: 0 };
  readonly pirq: number;
  /** the shared config space (4096 bytes) */
  readonly cfg: Uint8Array;
  /** per-byte masks: writable bits, write-1-to-clear bits */
  readonly wmask = new Uint8Array(CFG.EXT_SIZE);
  readonly w1c = new Uint8Array(CFG.EXT_SIZE);
  /** Set by the registry before power-on: other functions exist in this slot. */
  multiFunction = false;
  /** Set by the allocator before power-on: BAR addresses (undefined = leave unassigned), ROM address. */
  readonly assigned: (number | undefined)[] = [];
  romAssigned: number | undefined;

  private readonly st: { intx: number; intxOn: number };
  private readonly msixTable: Uint32Array;
  private readonly msixPba: Uint32Array;
  private readonly platform: Platform;
  private readonly router: PirqRouter | undefined;
  private readonly dv: DataView;

  constructor(ctx: DeviceContext, addr: PciAddress, spec: PciFunctionSpec, deps: { gen: MapGeneration; router?: PirqRouter }) {
    this.addr = addr;
    this.spec = spec;
    this.name = pciName(addr);
    this.platform = ctx.platform;
    this.router = deps.router;
    this.mapGeneration = deps.gen;
    const nx = spec.msix?.vectors ?? 0;
    const layout = defineLayout(`pci-fn ${spec.model}`, 1, {
      cfg: { type: "u8", count: CFG.EXT_SIZE },
      intx: "u8",
      intxOn: "u8",
      msixTable: { type: "u32", count: Math.max(1, 4 * nx) },
      msixPba: { type: "u32", count: Math.max(2, 2 * Math.ceil(nx / 64)) },
    });
    const b = ctx.arena.alloc(layout);
    this.lock = b.lock;
    this.cfg = b.s.cfg;
    this.st = b.s;
    this.msixTable = b.s.msixTable;
    this.msixPba = b.s.msixPba;
    this.dv = new DataView(this.cfg.buffer, this.cfg.byteOffset, CFG.EXT_SIZE);
    this.pirq = spec.intPin ? pirqOf(addr.slot, spec.intPin) : -1;
    this.buildMasks();
  }

  // ---------------------------------------------------------------------------------------------
  // construction: masks and capability layout

  private setMask(off: number, size: number, wmask: number, w1c = 0): void {
    for (let i = 0; i < size; i++) {
      this.wmask[off + i] = (wmask >>> (8 * i)) & 0xff;
      this.w1c[off + i] = (w1c >>> (8 * i)) & 0xff;
    }
  }

  private buildMasks(): void {
    const sp = this.spec;
    const where = `${this.name} (${sp.model})`;
    this.setMask(CFG.COMMAND, 2, COMMAND.WRITABLE);
    this.setMask(CFG.STATUS, 2, 0, STATUS.W1C);
    this.setMask(CFG.CACHE_LINE, 1, 0xff);
    this.setMask(CFG.INT_LINE, 1, 0xff);
    const bars = sp.bars ?? [];
    if (bars.length > 6) throw new Error(`${where}: at most 6 BARs`);
    for (let i = 0; i < bars.length; i++) {
      const bar = bars[i];
      if (!bar) continue;
      const off = CFG.BAR0 + 4 * i;
      if (!isPow2(bar.size) || bar.size < (bar.kind === "io" ? 4 : 16)) throw new Error(`${where}: BAR${i} size ${bar.size} must be a power of two ≥ ${bar.kind === "io" ? 4 : 16}`);
      if (bar.kind === "io") {
        if (bar.size > 256) throw new Error(`${where}: I/O BAR${i} larger than 256 bytes`);
        this.setMask(off, 4, (~(bar.size - 1) & BAR.IO_ADDR_MASK) >>> 0);
      } else if (bar.kind === "mem32") {
        if (bar.size > 2 ** 31) throw new Error(`${where}: 32-bit BAR${i} too large`);
        this.setMask(off, 4, (~(bar.size - 1) & BAR.MEM_ADDR_MASK) >>> 0);
      } else {
        if (i === 5 || bars[i + 1]) throw new Error(`${where}: 64-bit BAR${i} needs index ${i + 1} free`);
        const lo = bar.size >= 2 ** 32 ? 0 : (~(bar.size - 1) & BAR.MEM_ADDR_MASK) >>> 0;
        const hi = bar.size > 2 ** 32 ? (~(bar.size / 2 ** 32 - 1)) >>> 0 : 0xffffffff;
        this.setMask(off, 4, lo);
        this.setMask(off + 4, 4, hi);
        i++;
      }
    }
    if (sp.rom) {
      if (!isPow2(sp.rom.size) || sp.rom.size < 2048) throw new Error(`${where}: ROM size must be a power of two ≥ 2 KiB`);
      this.setMask(CFG.ROM, 4, ((~(sp.rom.size - 1) & ROM_ADDR_MASK) | ROM_ENABLE) >>> 0);
    }
    // capabilities, laid out in order from capBase, dword aligned
    let at = sp.capBase ?? CFG.DEVICE_SPECIFIC;
    const place = (len: number): number => { const o = at; at = (at + len + 3) & ~3; if (at > CFG.SIZE) throw new Error(`${where}: capabilities do not fit`); return o; };
    if (sp.pm) {
      this.caps.pm = place(8);
      this.setMask(this.caps.pm + PMCAP.PMCSR, 2, PMCAP.PMCSR_STATE_MASK);
    }
    if (sp.msi) {
      const m = sp.msi;
      if (!isPow2(m.vectors) || m.vectors > 32) throw new Error(`${where}: MSI vectors must be 1, 2, 4, 8, 16 or 32`);
      const a64 = m.addr64 ?? true;
      const len = 10 + (a64 ? 4 : 0) + (m.perVectorMask ? 10 : 0);
      const o = this.caps.msi = place(len);
      this.setMask(o + MSI.CTRL, 2, MSI.CTRL_ENABLE | (7 << MSI.CTRL_MME_SHIFT));
      this.setMask(o + MSI.ADDR, 4, 0xfffffffc);
      if (a64) this.setMask(o + 8, 4, 0xffffffff);
      this.setMask(this.msiDataOff(), 2, 0xffff);
      if (m.perVectorMask) this.setMask(this.msiMaskOff(), 4, m.vectors === 32 ? 0xffffffff : (1 << m.vectors) - 1);
    }
    if (sp.msix) {
      const x = sp.msix;
      if (!Number.isInteger(x.vectors) || x.vectors < 1 || x.vectors > 2048) throw new Error(`${where}: MSI-X table size must be 1-2048`);
      for (const [bi, off, len] of [[x.bar, x.tableOffset, 16 * x.vectors], [x.pbaBar ?? x.bar, x.pbaOffset, 8 * Math.ceil(x.vectors / 64)]] as const) {
        const bar = bars[bi];
        if (!bar || bar.kind === "io") throw new Error(`${where}: MSI-X structure in BAR${bi}, which is not a memory BAR`);
        if (off % 8 || off + len > bar.size) throw new Error(`${where}: MSI-X structure at 0x${off.toString(16)}+${len} does not fit BAR${bi}`);
      }
      this.caps.msix = place(12);
      this.setMask(this.caps.msix + MSIX.CTRL, 2, MSIX.CTRL_ENABLE | MSIX.CTRL_FMASK);
    }
    if (sp.pcie) {
      const o = this.caps.pcie = place(PCIE.SIZE);
      this.setMask(o + PCIE.DEVCTL, 2, 0x7fff);
      this.setMask(o + PCIE.DEVSTA, 2, 0, 0x000f);
      this.setMask(o + PCIE.DEVCTL2, 2, 0x001f);
    }
    const capEnd = at;
    for (const r of sp.regs ?? []) {
      const capStart = sp.capBase ?? CFG.DEVICE_SPECIFIC;
      const hasCaps = capEnd > capStart;
      if (r.offset < CFG.DEVICE_SPECIFIC || r.offset + r.size > CFG.EXT_SIZE) throw new Error(`${where}: register 0x${r.offset.toString(16)} outside the device-specific space`);
      if (hasCaps && r.offset < capEnd && capStart < r.offset + r.size) throw new Error(`${where}: register 0x${r.offset.toString(16)} overlaps the capability list`);
      this.setMask(r.offset, r.size, r.wmask ?? 0, r.w1c ?? 0);
    }
  }

  private msiDataOff(): number { return this.caps.msi + ((this.spec.msi!.addr64 ?? true) ? 0xc : 8); }
  private msiMaskOff(): number { return this.caps.msi + ((this.spec.msi!.addr64 ?? true) ? 0x10 : 0xc); }

  // ---------------------------------------------------------------------------------------------
  // config space accessors (little-endian, shared bytes)

  c8(o: number): number { return this.cfg[o]!; }
  c16(o: number): number { return this.dv.getUint16(o, true); }
  c32(o: number): number { return this.dv.getUint32(o, true); }
  set8(o: number, v: number): void { this.cfg[o] = v; }
  set16(o: number, v: number): void { this.dv.setUint16(o, v & 0xffff, true); }
  set32(o: number, v: number): void { this.dv.setUint32(o, v >>> 0, true); }

  // ---------------------------------------------------------------------------------------------
  // power-on

  powerOn(): void {
    const sp = this.spec;
    this.cfg.fill(0);
    this.set16(CFG.VENDOR, sp.vendor);
    this.set16(CFG.DEVICE, sp.device);
    this.set8(CFG.REVISION, sp.revision ?? 0);
    this.set8(CFG.CLASS, sp.classCode & 0xff);
    this.set16(CFG.CLASS + 1, (sp.classCode >>> 8) & 0xffff);
    this.set8(CFG.HEADER_TYPE, this.multiFunction ? HEADER_MULTIFUNCTION : 0);
    this.set16(CFG.SUBVENDOR, sp.subVendor ?? 0);
    this.set16(CFG.SUBDEVICE, sp.subDevice ?? 0);
    let command = 0;
    const bars = sp.bars ?? [];
    for (let i = 0; i < bars.length; i++) {
      const bar = bars[i];
      if (!bar) continue;
      const off = CFG.BAR0 + 4 * i;
      const a = this.assigned[i] ?? 0;
      if (bar.kind === "io") {
        this.set32(off, (a & BAR.IO_ADDR_MASK) | BAR.IO);
        if (a) command |= COMMAND.IO;
      } else {
        const type = (bar.kind === "mem64" ? BAR.MEM64 : 0) | (bar.prefetchable ? BAR.PREFETCH : 0);
        this.set32(off, ((a % 2 ** 32) & BAR.MEM_ADDR_MASK) | type);
        if (bar.kind === "mem64") { this.set32(off + 4, Math.floor(a / 2 ** 32)); i++; }
        if (a) command |= COMMAND.MEMORY;
      }
    }
    if (sp.rom) this.set32(CFG.ROM, (this.romAssigned ?? 0) & ROM_ADDR_MASK);
    this.set16(CFG.COMMAND, command);
    this.set8(CFG.INT_PIN, sp.intPin ?? 0);
    // Interrupt Line: the GSI the pin raises in APIC mode; firmware rewrites it with its PIC IRQ.
    this.set8(CFG.INT_LINE, sp.intPin ? ioapicPinOfPirq(this.pirq) : 0xff);
    // capability list
    const chain: [number, number][] = [];
    if (this.caps.pm) chain.push([this.caps.pm, CAP_ID.PM]);
    if (this.caps.msi) chain.push([this.caps.msi, CAP_ID.MSI]);
    if (this.caps.msix) chain.push([this.caps.msix, CAP_ID.MSIX]);
    if (this.caps.pcie) chain.push([this.caps.pcie, CAP_ID.PCIE]);
    chain.forEach(([o, id], i) => { this.set8(o, id); this.set8(o + 1, chain[i + 1]?.[0] ?? 0); });
    let status = 0;
    if (chain.length) { status |= STATUS.CAP_LIST; this.set8(CFG.CAP_PTR, chain[0]![0]); }
    this.set16(CFG.STATUS, status);
    if (this.caps.pm) {
      this.set16(this.caps.pm + PMCAP.PMC, PMCAP.VERSION_1_2);
      this.set16(this.caps.pm + PMCAP.PMCSR, PMCAP.PMCSR_NO_SOFT_RESET);
    }
    if (this.caps.msi) {
      const m = sp.msi!;
      this.set16(this.caps.msi + MSI.CTRL, (Math.log2(m.vectors) << MSI.CTRL_MMC_SHIFT) |
        ((m.addr64 ?? true) ? MSI.CTRL_64BIT : 0) | (m.perVectorMask ? MSI.CTRL_PVM : 0));
    }
    if (this.caps.msix) {
      const x = sp.msix!;
      this.set16(this.caps.msix + MSIX.CTRL, x.vectors - 1);
      this.set32(this.caps.msix + MSIX.TABLE, x.tableOffset | x.bar);
      this.set32(this.caps.msix + MSIX.PBA, x.pbaOffset | (x.pbaBar ?? x.bar));
      this.msixTable.fill(0);
      for (let v = 0; v < x.vectors; v++) this.msixTable[4 * v + MSIX.VCTRL] = MSIX.VCTRL_MASK;
      this.msixPba.fill(0);
    }
    if (this.caps.pcie) {
      const o = this.caps.pcie;
      this.set16(o + PCIE.CAPS, 2 | (sp.pcie!.type << 4));
      this.set32(o + PCIE.DEVCAP, 1 << 15); // role-based error reporting; 128-byte max payload
      this.set16(o + PCIE.DEVCTL, 0x2810); // 512-byte max read request, no snoop, relaxed ordering
    }
    for (const r of sp.regs ?? []) {
      for (let i = 0; i < r.size; i++) this.cfg[r.offset + i] = (r.value >>> (8 * i)) & 0xff;
    }
    this.st.intx = 0;
    this.st.intxOn = 0;
    sp.powerOn?.(this);
    this.mapGeneration.bump();
  }

  // ---------------------------------------------------------------------------------------------
  // configuration access (lock held)

  /** Read `size` bytes at `reg` (naturally aligned, inside the 4 KiB space). */
  cfgRead(reg: number, size: AccessSize): number {
    if (size === 1) return this.cfg[reg]!;
    if (size === 2) return this.c16(reg);
    return this.c32(reg);
  }

  /** Guest write of `size` bytes at `reg`, through the masks, then the side effects. */
  cfgWrite(reg: number, size: AccessSize, value: number): void {
    const old = this.cfgRead(reg, size);
    const oldRanges = this.rangesKey();
    const oldMsiCtrl = this.caps.msi ? this.c16(this.caps.msi + MSI.CTRL) : 0;
    const oldPmcsr = this.caps.pm ? this.c16(this.caps.pm + PMCAP.PMCSR) : 0;
    for (let i = 0; i < size; i++) {
      const o = reg + i;
      const b = (value >>> (8 * i)) & 0xff;
      const w = this.wmask[o]!, c = this.w1c[o]!;
      if (!w && !c) continue;
      this.cfg[o] = ((this.cfg[o]! & ~w) | (b & w)) & ~(b & c);
    }
    const touches = (lo: number, len: number): boolean => reg < lo + len && lo < reg + size;
    // PM: D1/D2 are not supported; writes of them are discarded (PCI PM 1.2 §5.4.2)
    if (this.caps.pm && touches(this.caps.pm + PMCAP.PMCSR, 1)) {
      const st = this.c8(this.caps.pm + PMCAP.PMCSR) & 3;
      if (st === 1 || st === 2) this.set16(this.caps.pm + PMCAP.PMCSR, oldPmcsr);
    }
    if (this.rangesKey() !== oldRanges) this.mapGeneration.bump();
    let intx = touches(CFG.COMMAND + 1, 1);
    if (this.caps.msi && touches(this.caps.msi, 24)) {
      if (touches(this.caps.msi + MSI.CTRL, 1)) intx = true;
      // enabling, or unmasking: deliver what is pending
      if (this.spec.msi!.perVectorMask && (touches(this.msiMaskOff(), 4) || !(oldMsiCtrl & MSI.CTRL_ENABLE))) this.msiReplay();
    }
    if (this.caps.msix && touches(this.caps.msix + MSIX.CTRL, 2)) { intx = true; this.msixReplay(); }
    if (intx) this.updateIntx();
    this.spec.configWritten?.(this, reg, size, old);
  }

  // ---------------------------------------------------------------------------------------------
  // decoding

  /** Current decoded address of BAR i (undefined: not decoding). */
  barAddress(i: number): number | undefined {
    const bar = this.spec.bars?.[i];
    if (!bar) return undefined;
    const cmd = this.c16(CFG.COMMAND);
    const v = this.c32(CFG.BAR0 + 4 * i);
    if (bar.kind === "io") {
      if (!(cmd & COMMAND.IO)) return undefined;
      const a = (v & BAR.IO_ADDR_MASK) >>> 0;
      return a && a + bar.size <= 0x10000 ? a : undefined;
    }
    if (!(cmd & COMMAND.MEMORY)) return undefined;
    let a = (v & BAR.MEM_ADDR_MASK) >>> 0;
    if (bar.kind === "mem64") a += this.c32(CFG.BAR0 + 4 * i + 4) * 2 ** 32;
    return a && a + bar.size <= MAX_PHYS ? a : undefined;
  }

  romAddress(): number | undefined {
    if (!this.spec.rom) return undefined;
    const v = this.c32(CFG.ROM);
    if (!(v & ROM_ENABLE) || !(this.c16(CFG.COMMAND) & COMMAND.MEMORY)) return undefined;
    const a = (v & ROM_ADDR_MASK) >>> 0;
    return a || undefined;
  }

  get ranges(): IoRange[] {
    const out: IoRange[] = [];
    const bars = this.spec.bars ?? [];
    for (let i = 0; i < bars.length; i++) {
      const bar = bars[i];
      if (!bar) continue;
      const a = this.barAddress(i);
      if (a !== undefined) out.push({ space: bar.kind === "io" ? "pio" : "mmio", base: a, size: bar.size });
    }
    const r = this.romAddress();
    if (r !== undefined) out.push({ space: "mmio", base: r, size: this.spec.rom!.size });
    return out;
  }

  private rangesKey(): string {
    return this.ranges.map((r) => `${r.space}${r.base}+${r.size}`).join(",");
  }

  read(space: Space, base: number, offset: number, size: AccessSize): number {
    const bars = this.spec.bars ?? [];
    for (let i = 0; i < bars.length; i++) {
      const bar = bars[i];
      if (!bar || (bar.kind === "io") !== (space === "pio") || this.barAddress(i) !== base) continue;
      const mx = this.msixRegion(i, offset);
      if (mx) return this.msixRead(mx, offset, size);
      return bar.read ? bar.read(offset, size) >>> 0 : ONES[size];
    }
    if (space === "mmio" && this.romAddress() === base) {
      const data = this.spec.rom!.data;
      let v = 0;
      for (let k = size - 1; k >= 0; k--) v = (v << 8) | (data && offset + k < data.length ? data[offset + k]! : 0xff);
      return v >>> 0;
    }
    return ONES[size]; // moved away under us (a guest race): nothing here any more
  }

  write(space: Space, base: number, offset: number, size: AccessSize, value: number): void {
    const bars = this.spec.bars ?? [];
    for (let i = 0; i < bars.length; i++) {
      const bar = bars[i];
      if (!bar || (bar.kind === "io") !== (space === "pio") || this.barAddress(i) !== base) continue;
      const mx = this.msixRegion(i, offset);
      if (mx) return this.msixWrite(mx, offset, size, value);
      bar.write?.(offset, size, value);
      return;
    }
  }

  // ---------------------------------------------------------------------------------------------
  // INTx

  /** Drive this function's INTx pin (level; lock held). */
  setIntx(level: boolean): void {
    if (!this.spec.intPin) return;
    const l = level ? 1 : 0;
    if (this.st.intx === l) return;
    this.st.intx = l;
    this.updateIntx();
  }
  assertIntx(): void { this.setIntx(true); }
  deassertIntx(): void { this.setIntx(false); }

  /** Whether INTx is currently masked (INTx disable, MSI or MSI-X enabled). */
  intxSuppressed(): boolean {
    return (this.c16(CFG.COMMAND) & COMMAND.INTX_DISABLE) !== 0 || this.msiEnabled() || this.msixEnabled();
  }

  private updateIntx(): void {
    const status = this.c16(CFG.STATUS);
    this.set16(CFG.STATUS, this.st.intx ? status | STATUS.INTERRUPT : status & ~STATUS.INTERRUPT);
    const on = this.st.intx && !this.intxSuppressed() ? 1 : 0;
    if (on === this.st.intxOn) return;
    this.st.intxOn = on;
    this.router?.level(this.pirq, on ? 1 : -1);
  }

  // ---------------------------------------------------------------------------------------------
  // MSI

  msiEnabled(): boolean { return this.caps.msi !== 0 && (this.c16(this.caps.msi + MSI.CTRL) & MSI.CTRL_ENABLE) !== 0; }
  /** vectors the guest allocated (Multiple Message Enable, capped at Multiple Message Capable) */
  msiAllocated(): number {
    if (!this.caps.msi) return 0;
    const ctrl = this.c16(this.caps.msi + MSI.CTRL);
    const mmc = (ctrl >> MSI.CTRL_MMC_SHIFT) & 7, mme = (ctrl >> MSI.CTRL_MME_SHIFT) & 7;
    return 1 << Math.min(mmc, mme);
  }

  private msiSend(vector: number): void {
    const o = this.caps.msi;
    const a64 = this.spec.msi!.addr64 ?? true;
    const addr = this.c32(o + MSI.ADDR) + (a64 ? this.c32(o + 8) * 2 ** 32 : 0);
    const n = this.msiAllocated();
    const data = (this.c16(this.msiDataOff()) & ~(n - 1)) | vector;
    this.platform.msi(addr, data);
  }

  private msiReplay(): void {
    if (!this.msiEnabled()) return;
    const mo = this.msiMaskOff();
    let pend = this.c32(mo + 4);
    const mask = this.c32(mo);
    const deliver = pend & ~mask;
    if (!deliver) return;
    for (let v = 0; v < 32; v++) if ((deliver >>> v) & 1) this.msiSend(v);
    pend &= ~deliver;
    this.set32(mo + 4, pend);
  }

  // ---------------------------------------------------------------------------------------------
  // MSI-X

  msixEnabled(): boolean { return this.caps.msix !== 0 && (this.c16(this.caps.msix + MSIX.CTRL) & MSIX.CTRL_ENABLE) !== 0; }
  private msixFunctionMasked(): boolean { return (this.c16(this.caps.msix + MSIX.CTRL) & MSIX.CTRL_FMASK) !== 0; }

  private msixRegion(bar: number, offset: number): "table" | "pba" | undefined {
    const x = this.spec.msix;
    if (!x) return undefined;
    if (bar === x.bar && offset >= x.tableOffset && offset < x.tableOffset + 16 * x.vectors) return "table";
    if (bar === (x.pbaBar ?? x.bar) && offset >= x.pbaOffset && offset < x.pbaOffset + 8 * Math.ceil(x.vectors / 64)) return "pba";
    return undefined;
  }

  private msixRead(region: "table" | "pba", offset: number, size: AccessSize): number {
    const x = this.spec.msix!;
    const rel = offset - (region === "table" ? x.tableOffset : x.pbaOffset);
    const words = region === "table" ? this.msixTable : this.msixPba;
    const w = words[rel >> 2]!;
    return ((w >>> (8 * (rel & 3))) & ONES[size]) >>> 0;
  }

  private msixWrite(region: "table" | "pba", offset: number, size: AccessSize, value: number): void {
    if (region === "pba") return; // read-only
    const x = this.spec.msix!;
    const rel = offset - x.tableOffset;
    const wi = rel >> 2, shift = 8 * (rel & 3);
    const mask = (ONES[size] << shift) >>> 0;
    const field = wi & 3;
    const writable = field === MSIX.ADDR_LO ? 0xfffffffc : field === MSIX.VCTRL ? MSIX.VCTRL_MASK : 0xffffffff;
    const m = mask & writable;
    this.msixTable[wi] = ((this.msixTable[wi]! & ~m) | ((value << shift) & m)) >>> 0;
    if (field === MSIX.VCTRL) this.msixReplay();
  }

  private msixSend(v: number): void {
    const t = this.msixTable;
    this.platform.msi(t[4 * v + MSIX.ADDR_LO]! + t[4 * v + MSIX.ADDR_HI]! * 2 ** 32, t[4 * v + MSIX.DATA]!);
  }

  private msixReplay(): void {
    if (!this.msixEnabled() || this.msixFunctionMasked()) return;
    const n = this.spec.msix!.vectors;
    for (let w = 0; w * 32 < n; w++) {
      let bits = this.msixPba[w]!;
      if (!bits) continue;
      for (let b = 0; b < 32; b++) {
        const v = w * 32 + b;
        if (!((bits >>> b) & 1) || (this.msixTable[4 * v + MSIX.VCTRL]! & MSIX.VCTRL_MASK)) continue;
        bits &= ~(1 << b);
        this.msixPba[w] = bits >>> 0;
        this.msixSend(v);
      }
    }
  }

  /** Diagnostics/tests: MSI-X pending bit of a vector. */
  msixPending(v: number): boolean { return ((this.msixPba[v >> 5]! >>> (v & 31)) & 1) === 1; }

  // ---------------------------------------------------------------------------------------------
  // message signalling for device models

  /**
   * Signal interrupt `vector` by MSI-X (when enabled) or MSI (when enabled). A masked vector becomes
   * pending and is delivered on unmask. Returns false when neither is enabled (use INTx then), or the
   * vector is beyond what the guest allocated.
   */
  signalMsi(vector: number): boolean {
    if (this.msixEnabled()) {
      if (vector < 0 || vector >= this.spec.msix!.vectors) return false;
      if (this.msixFunctionMasked() || (this.msixTable[4 * vector + MSIX.VCTRL]! & MSIX.VCTRL_MASK)) {
        this.msixPba[vector >> 5] = (this.msixPba[vector >> 5]! | (1 << (vector & 31))) >>> 0;
      } else this.msixSend(vector);
      return true;
    }
    if (this.msiEnabled()) {
      if (vector < 0 || vector >= this.msiAllocated()) return false;
      if (this.spec.msi!.perVectorMask && (this.c32(this.msiMaskOff()) >>> vector) & 1) {
        const po = this.msiMaskOff() + 4;
        this.set32(po, this.c32(po) | (1 << vector));
      } else this.msiSend(vector);
      return true;
    }
    return false;
  }
}

const ONES = [0, 0xff, 0xffff, 0, 0xffffffff] as const;
