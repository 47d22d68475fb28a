/**
 * Device description tables: HPET (IA-PC HPET specification 1.0a, §3.2.4 "The ACPI 2.0 HPET
 * Description Table"), MCFG (PCI Firmware Specification 3.x, §4.1.2) and SPCR (Microsoft "Serial
 * Port Console Redirection Table", revision 2).
 */
import { AccessSize, AddressSpace, gas, sdt } from "./sdt.ts";

export interface HpetOptions {
  /** General Capabilities and ID register bits 31:0 (vendor id, legacy-replacement capable, counter
   * size, number of timers - 1, revision): the table's Event Timer Block ID. */
  capabilities: number;
  base: number;
  /** HPET sequence number (0 for the first block). */
  number?: number;
  /** Main counter minimum clock tick in periodic mode. */
  minTick: number;
}

/** HPET table, revision 1, 56 bytes. */
export function hpetTable(o: HpetOptions): Uint8Array {
  const b = new Uint8Array(20);
  const dv = new DataView(b.buffer);
  dv.setUint32(0, o.capabilities >>> 0, true);
  b.set(gas({ space: AddressSpace.SYSTEM_MEMORY, bitWidth: 64, accessSize: AccessSize.UNDEFINED, address: o.base }), 4);
  b[16] = o.number ?? 0;
  dv.setUint16(17, o.minTick, true);
  b[19] = 0; // page protection: none (the block is not alone in a 4 KiB page we own)
  return sdt("HPET", 1, b);
}

export interface McfgEntry { base: number | bigint; segment?: number; busStart: number; busEnd: number }

/** MCFG table, revision 1: 8 reserved bytes, then one 16-byte entry per ECAM region. */
export function mcfgTable(entries: readonly McfgEntry[]): Uint8Array {
  const b = new Uint8Array(8 + 16 * entries.length);
  const dv = new DataView(b.buffer);
  entries.forEach((e, i) => {
    const o = 8 + 16 * i;
    if (e.busStart < 0 || e.busEnd > 255 || e.busEnd < e.busStart) throw new RangeError(`MCFG: bad bus range ${e.busStart}-${e.busEnd}`);
    dv.setBigUint64(o, BigInt(e.base), true);
    dv.setUint16(o + 8, e.segment ?? 0, true);
    b[o + 10] = e.busStart;
    b[o + 11] = e.busEnd;
  });
  return sdt("MCFG", 1, b);
}

/** SPCR baud-rate codes. */
export const SpcrBaud = { 9600: 3, 19200: 4, 57600: 6, 115200: 7 } as const;
export const SPCR_BYTES = 80;

export interface SpcrOptions {
  /** 16550-compatible UART I/O base. */
  port: number;
  irq: number;
  /** GSI the UART's interrupt reaches on the IOAPIC (ISA IRQ n is GSI n here). */
  gsi?: number;
  baud?: keyof typeof SpcrBaud;
}

/** SPCR revision 2: a full 16550 on I/O ports, 8N1, no flow control, VT100+ terminal. */
export function spcrTable(o: SpcrOptions): Uint8Array {
  const b = new Uint8Array(SPCR_BYTES - 36);
  const dv = new DataView(b.buffer);
  const at = (off: number) => off - 36;
  b[at(36)] = 0; // interface type: full 16550
  b.set(gas({ space: AddressSpace.SYSTEM_IO, bitWidth: 8, accessSize: AccessSize.BYTE, address: o.port }), at(40));
  b[at(52)] = 0x01 | 0x02; // interrupt type: 8259 IRQ and I/O APIC interrupt
  b[at(53)] = o.irq;
  dv.setUint32(at(54), o.gsi ?? o.irq, true);
  b[at(58)] = SpcrBaud[o.baud ?? 115200];
  b[at(59)] = 0; // no parity
  b[at(60)] = 1; // 1 stop bit
  b[at(61)] = 0; // no flow control
  b[at(62)] = 1; // terminal type: VT100+
  dv.setUint16(at(64), 0xffff, true); // PCI device id: not a PCI device
  dv.setUint16(at(66), 0xffff, true); // PCI vendor id
  return sdt("SPCR", 2, b);
}
