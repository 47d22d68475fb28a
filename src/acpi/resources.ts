/**
 * Resource data encoders for ResourceTemplate() buffers (_CRS, _PRS): ACPI 6.x §6.4 "Resource Data
 * Types for ACPI". Small items have a one-byte tag (bit 7 = 0, item name in bits 6:3, length in
 * bits 2:0); large items a tag byte with bit 7 set followed by a 16-bit length. A template ends with
 * the End Tag (small item 0xF, one checksum byte).
 */
import { AmlError, buffer, cat } from "./aml.ts";

const u16 = (v: number) => [v & 0xff, (v >> 8) & 0xff];
const u32 = (v: number) => [v & 0xff, (v >>> 8) & 0xff, (v >>> 16) & 0xff, (v >>> 24) & 0xff];
const u64 = (v: number | bigint) => {
  const n = BigInt(v);
  return Array.from({ length: 8 }, (_, i) => Number((n >> BigInt(8 * i)) & 0xffn));
};

function checkRange(what: string, v: number | bigint, max: bigint): void {
  const n = BigInt(v);
  if (n < 0n || n > max) throw new AmlError(`${what} 0x${n.toString(16)} out of range`);
}

/** End Tag (§6.4.2.9). A zero checksum means "treat as valid" (what iasl emits). */
export function endTag(checksum = 0): Uint8Array {
  return Uint8Array.of(0x79, checksum & 0xff);
}

/**
 * ResourceTemplate(){descriptors}: a Buffer of the descriptors plus an End Tag. With
 * `checksum: true` the End Tag carries the two's-complement sum of the whole template; the default
 * (0, like iasl) is right for templates that methods patch at run time (a _CRS built from a
 * register would otherwise carry a stale checksum).
 */
export function resourceTemplate(descriptors: readonly Uint8Array[], o: { checksum?: boolean } = {}): Uint8Array {
  return buffer(resourceData(descriptors, o));
}

/** The raw bytes of a template (descriptors + End Tag), without the Buffer wrapper. */
export function resourceData(descriptors: readonly Uint8Array[], o: { checksum?: boolean } = {}): Uint8Array {
  const body = cat(...descriptors, [0x79]);
  if (!o.checksum) return cat(body, [0]);
  let s = 0;
  for (const b of body) s = (s + b) & 0xff;
  return cat(body, [(0x100 - s) & 0xff]);
}

/** IO(Decode16|Decode10, min, max, alignment, length) (§6.4.2.5). */
export function io(min: number, max: number, align: number, length: number, decode16 = true): Uint8Array {
  checkRange("IO min", min, 0xffffn); checkRange("IO max", max, 0xffffn);
  checkRange("IO alignment", align, 0xffn); checkRange("IO length", length, 0xffn);
  return Uint8Array.of(0x47, decode16 ? 1 : 0, ...u16(min), ...u16(max), align, length);
}

/** FixedIO(base, length) (§6.4.2.6): 10-bit decode. */
export function fixedIo(base: number, length: number): Uint8Array {
  checkRange("FixedIO base", base, 0x3ffn); checkRange("FixedIO length", length, 0xffn);
  return Uint8Array.of(0x4b, ...u16(base), length);
}

export interface IrqFlags {
  /** Edge (default) or level triggered. */
  level?: boolean;
  /** Active low (default high). */
  activeLow?: boolean;
  shared?: boolean;
  wake?: boolean;
}

function irqMask(irqs: readonly number[]): number {
  let mask = 0;
  for (const i of irqs) {
    if (!Number.isInteger(i) || i < 0 || i > 15) throw new AmlError(`IRQ ${i} is not an ISA IRQ`);
    mask |= 1 << i;
  }
  return mask;
}

/** IRQNoFlags(){irqs}: 2-byte IRQ descriptor, edge triggered, active high, exclusive (§6.4.2.1). */
export function irqNoFlags(irqs: readonly number[]): Uint8Array {
  return Uint8Array.of(0x22, ...u16(irqMask(irqs)));
}

/** IRQ(Edge|Level, ActiveHigh|ActiveLow, Exclusive|Shared){irqs}: 3-byte form with the info byte. */
export function irq(flags: IrqFlags, irqs: readonly number[]): Uint8Array {
  const info = (flags.level ? 0 : 0x01) | (flags.activeLow ? 0x08 : 0) | (flags.shared ? 0x10 : 0) | (flags.wake ? 0x20 : 0);
  return Uint8Array.of(0x23, ...u16(irqMask(irqs)), info);
}

/** The ISA IRQs set in a 16-bit mask, lowest first. */
export function irqsOfMask(mask: number): number[] {
  return Array.from({ length: 16 }, (_, i) => i).filter((i) => mask & (1 << i));
}

/**
 * Interrupt(ResourceConsumer, Level|Edge, ActiveHigh|ActiveLow, Exclusive|Shared){GSIs}: the
 * Extended Interrupt Descriptor (§6.4.3.6), large item 0x09.
 */
export function interrupt(flags: IrqFlags & { producer?: boolean }, gsis: readonly number[]): Uint8Array {
  if (gsis.length < 1 || gsis.length > 255) throw new AmlError("Interrupt(): 1-255 interrupts");
  for (const g of gsis) checkRange("GSI", g, 0xffff_ffffn);
  const f = (flags.producer ? 0 : 0x01) | (flags.level ? 0 : 0x02) | (flags.activeLow ? 0x04 : 0) | (flags.shared ? 0x08 : 0) | (flags.wake ? 0x10 : 0);
  const len = 2 + 4 * gsis.length;
  return Uint8Array.of(0x89, ...u16(len), f, gsis.length, ...gsis.flatMap(u32));
}

/** Memory32Fixed(ReadWrite|ReadOnly, base, length) (§6.4.3.4). */
export function memory32Fixed(base: number, length: number, writable = true): Uint8Array {
  checkRange("Memory32Fixed base", base, 0xffff_ffffn); checkRange("Memory32Fixed length", length, 0xffff_ffffn);
  return Uint8Array.of(0x86, ...u16(9), writable ? 1 : 0, ...u32(base), ...u32(length));
}

/** Address-space resource type (byte 3 of the address descriptors). */
export const AddrType = { Memory: 0, IO: 1, BusNumber: 2 } as const;
/** _MEM cacheability of memory ranges (type-specific flags bits 2:1). */
export const Cache = { NonCacheable: 0, Cacheable: 1, WriteCombining: 2, Prefetchable: 3 } as const;

export interface AddressOptions {
  /** ResourceConsumer (default: ResourceProducer, as a root bridge's windows are). */
  consumer?: boolean;
  /** MinFixed / MaxFixed (default both true). */
  minFixed?: boolean;
  maxFixed?: boolean;
  /** SubDecode (default PosDecode). */
  subtractive?: boolean;
  granularity?: number | bigint;
  translation?: number | bigint;
}

function generalFlags(o: AddressOptions): number {
  return (o.consumer ? 1 : 0) | (o.subtractive ? 2 : 0) | ((o.minFixed ?? true) ? 4 : 0) | ((o.maxFixed ?? true) ? 8 : 0);
}

/** Range of an address descriptor: [min, max] inclusive; length = max - min + 1. */
function addressSpace(tag: number, width: 2 | 4 | 8, type: number, typeFlags: number, min: number | bigint, max: number | bigint, o: AddressOptions): Uint8Array {
  const lim = (1n << BigInt(8 * width)) - 1n;
  const lo = BigInt(min), hi = BigInt(max);
  if (hi < lo) throw new AmlError(`address range max < min`);
  checkRange("range min", lo, lim); checkRange("range max", hi, lim);
  const enc = (v: number | bigint) => (width === 2 ? u16(Number(v)) : width === 4 ? u32(Number(v)) : u64(v));
  const fields = [o.granularity ?? 0, lo, hi, o.translation ?? 0, hi - lo + 1n].flatMap(enc);
  return Uint8Array.of(tag, ...u16(3 + fields.length), type, generalFlags(o), typeFlags, ...fields);
}

export interface MemoryOptions extends AddressOptions {
  cache?: number;
  /** ReadWrite (default) or ReadOnly. */
  readOnly?: boolean;
}
const memFlags = (o: MemoryOptions) => (o.readOnly ? 0 : 1) | ((o.cache ?? Cache.Cacheable) << 1);
/** IO ranges: _RNG = EntireRange (3). */
const IO_FLAGS = 3;

/** WordBusNumber(ResourceProducer, MinFixed, MaxFixed, PosDecode, 0, min, max, 0, len) (§6.4.3.5.3). */
export const wordBusNumber = (min: number, max: number, o: AddressOptions = {}) => addressSpace(0x88, 2, AddrType.BusNumber, 0, min, max, o);
/** WordIO(..., EntireRange). */
export const wordIo = (min: number, max: number, o: AddressOptions = {}) => addressSpace(0x88, 2, AddrType.IO, IO_FLAGS, min, max, o);
/** DWordIO(..., EntireRange) (§6.4.3.5.2). */
export const dwordIo = (min: number, max: number, o: AddressOptions = {}) => addressSpace(0x87, 4, AddrType.IO, IO_FLAGS, min, max, o);
/** DWordMemory(...) (§6.4.3.5.2). */
export const dwordMemory = (min: number, max: number, o: MemoryOptions = {}) => addressSpace(0x87, 4, AddrType.Memory, memFlags(o), min, max, o);
/** QWordMemory(...) (§6.4.3.5.1). */
export const qwordMemory = (min: number | bigint, max: number | bigint, o: MemoryOptions = {}) => addressSpace(0x8a, 8, AddrType.Memory, memFlags(o), min, max, o);
