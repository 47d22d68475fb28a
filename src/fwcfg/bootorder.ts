/**
 * The fw_cfg "bootorder" file: which devices firmware should try first.
 *
 * Format (as QEMU writes it): ASCII OpenFirmware device paths, most preferred first, separated by "\n",
 * the whole ended by one NUL (OVMF's QemuBootOrderLib refuses a file whose last byte is not NUL;
 * SeaBIOS splits on "\n"). A PCI device on the root bus of an i440FX-style machine (host bridge
 * reached through config ports 0xCF8) is
 *     /pci@i0cf8/pci@SLOT,FUNC
 * with SLOT and FUNC in hexadecimal (OpenFirmware unit addresses are hex; OVMF's QemuBootOrderLib
 * parses them so). bhyve writes the same generic "pci" node for every device; OVMF matches such a path
 * to the boot options of that PCI function, whatever the device class. Only bus 0 exists as a root
 * bus, so devices on other buses are left out.
 *
 * Source: `bootindex = N` on a pci.B.S.F table (bhyve's key; validated in config/resolve.ts: integer
 * >= 0, unique), ordered by N. No device with a bootindex → empty (and the file is omitted, as bhyve
 * does; firmware then keeps its own order).
 */
import type { VmConfig } from "../config/types.ts";
import { parseInteger } from "../config/size.ts";

export function bootorderPaths(pci: VmConfig["pci"]): string[] {
  const list: { index: number; path: string }[] = [];
  for (const [id, table] of Object.entries(pci)) {
    if (table.bootindex === undefined) continue;
    const index = parseInteger(table.bootindex);
    const [bus, slot, func] = id.split(".").map(Number) as [number, number, number];
    if (index === undefined || index < 0 || bus !== 0) continue;
    list.push({ index, path: `/pci@i0cf8/pci@${slot.toString(16)},${func.toString(16)}` });
  }
  return list.sort((a, b) => a.index - b.index).map((e) => e.path);
}

/** The file's bytes (empty when no device has a bootindex). */
export function buildBootorder(pci: VmConfig["pci"]): Uint8Array {
  const paths = bootorderPaths(pci);
  return paths.length ? new TextEncoder().encode(`${paths.join("\n")}\0`) : new Uint8Array(0);
}
