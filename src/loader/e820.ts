/**
 * The guest physical memory map as the BIOS INT 15h/E820 call would report it. Built once from the
 * RAM size (bhyve's layout, see src/mem/guest-memory.ts) and handed to the Linux loader (zero page
 * e820_table) and, later, to firmware through fw_cfg "etc/e820" (same 20-byte entry format).
 *
 * What Linux wants from it:
 *  - Low RAM stops at the EBDA (0x9FC00); [0x9FC00, 1 MiB) is reserved (EBDA, VGA hole, option
 *    ROMs, the 0xF0000 BIOS area where the MP table and ACPI tables live).
 *  - The PCI hole [lowmem end, 4 GiB) must mostly be a *gap*, not reserved: Linux picks its PCI
 *    MMIO window from the largest e820 gap. Only the ECAM window (so the MCFG check
 *    `is_mmconf_reserved()` passes) and the IOAPIC/HPET/LAPIC/boot-ROM area at the top are reserved.
 *  - Entries sorted, non-overlapping.
 */
import { HIGHMEM_BASE, LOWMEM_LIMIT, MiB, GiB } from "../mem/guest-memory.ts";

export const E820_RAM = 1;
export const E820_RESERVED = 2;
export const E820_ACPI = 3;
export const E820_NVS = 4;
export const E820_UNUSABLE = 5;

export interface E820Entry {
  addr: number;
  size: number;
  type: number;
}

/** End of usable conventional memory (start of the EBDA). */
export const EBDA_BASE = 0x9fc00;
export const ONE_MIB = MiB;
/** PCIe ECAM (MMCONFIG) window: 256 buses x 1 MiB. */
export const ECAM_BASE = 0xe000_0000;
export const ECAM_SIZE = 0x1000_0000;
/** IOAPIC, HPET, LAPIC and the boot ROM all live in [FW_AREA_BASE, 4 GiB). */
export const FW_AREA_BASE = 0xfec0_0000;
export const IOAPIC_BASE = 0xfec0_0000;
export const LAPIC_BASE = 0xfee0_0000;
/** Bytes per entry in the zero page and in fw_cfg etc/e820. */
export const E820_ENTRY_BYTES = 20;

/** The e820 map for a guest with `ramSize` bytes of RAM laid out as ramLayout() does. */
export function buildE820(ramSize: number): E820Entry[] {
  if (!Number.isSafeInteger(ramSize) || ramSize < 2 * MiB) {
    throw new RangeError(`guest RAM size ${ramSize} is too small for an e820 map (need at least 2 MiB)`);
  }
  const low = Math.min(ramSize, LOWMEM_LIMIT);
  const high = ramSize - low;
  const map: E820Entry[] = [
    { addr: 0, size: EBDA_BASE, type: E820_RAM },
    { addr: EBDA_BASE, size: ONE_MIB - EBDA_BASE, type: E820_RESERVED },
    { addr: ONE_MIB, size: low - ONE_MIB, type: E820_RAM },
    { addr: ECAM_BASE, size: ECAM_SIZE, type: E820_RESERVED },
    { addr: FW_AREA_BASE, size: 4 * GiB - FW_AREA_BASE, type: E820_RESERVED },
  ];
  if (high > 0) map.push({ addr: HIGHMEM_BASE, size: high, type: E820_RAM });
  return map;
}

/** Encode entries as the packed struct boot_e820_entry array (u64 addr, u64 size, u32 type). */
export function encodeE820(entries: readonly E820Entry[]): Uint8Array {
  const out = new Uint8Array(entries.length * E820_ENTRY_BYTES);
  const dv = new DataView(out.buffer);
  entries.forEach((e, i) => {
    const o = i * E820_ENTRY_BYTES;
    dv.setBigUint64(o, BigInt(e.addr), true);
    dv.setBigUint64(o + 8, BigInt(e.size), true);
    dv.setUint32(o + 16, e.type, true);
  });
  return out;
}

/** The usable-RAM entry wholly containing [addr, addr+len), if any. */
export function e820FindRam(entries: readonly E820Entry[], addr: number, len: number): E820Entry | undefined {
  return entries.find((e) => e.type === E820_RAM && addr >= e.addr && addr + len <= e.addr + e.size);
}

/** Human-readable dump for logs. */
export function formatE820(entries: readonly E820Entry[]): string {
  const names: Record<number, string> = { 1: "usable", 2: "reserved", 3: "ACPI data", 4: "ACPI NVS", 5: "unusable" };
  const h = (n: number) => "0x" + n.toString(16).padStart(9, "0");
  return entries.map((e) => `[${h(e.addr)}-${h(e.addr + e.size - 1)}] ${names[e.type] ?? `type ${e.type}`}`).join("\n");
}
