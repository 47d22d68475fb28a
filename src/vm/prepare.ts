/**
 * Host resources opened once, on the main thread, before any Worker starts: the host ends of the
 * serial ports. They reach the Workers as plain data (fd numbers are process-wide).
 */
import { closeChardev, openChardev, type ChardevHandle } from "../chardev/index.ts";
import type { VmConfig } from "../config/types.ts";
import { buildTableLoader, FW_CFG_ACPI_RSDP, FW_CFG_ACPI_TABLES, FW_CFG_TABLE_LOADER } from "../acpi/loader.ts";
import { fwcfgForConfig, type FwCfgItems } from "../fwcfg/items.ts";
import { acpiFor } from "./describe.ts";
import { closeVirtioNotifiers, openVirtioNotifiers } from "../virtio/notify.ts";

export interface Prepared {
  /** lpc.com1..com4 host ends (undefined where the port is absent) */
  com: (ChardevHandle | undefined)[];
  /** fw_cfg items (built once; their bytes live in a SharedArrayBuffer, shared with every Worker) */
  fwcfg: FwCfgItems;
  /** per virtio function ("B.S.F"): one eventfd per queue, attached as ioeventfds on its notify addresses */
  virtioNotify: Record<string, number[]>;
}

export function prepare(cfg: VmConfig): Prepared {
  const p: Prepared = { com: [], fwcfg: fwcfgForConfig(cfg, { extraFiles: acpiFiles(cfg) }), virtioNotify: {} };
  try {
    p.virtioNotify = openVirtioNotifiers(cfg);
    cfg.com.forEach((spec, i) => { p.com[i] = spec ? openChardev(spec, `com${i + 1}`) : undefined; });
  } catch (e) {
    release(p);
    throw e;
  }
  return p;
}

export function release(p: Prepared): void {
  for (const h of p.com) if (h) closeChardev(h);
  closeVirtioNotifiers(p.virtioNotify);
}

/** ACPI for firmware: QEMU's table-loader files (the same tables a directly booted kernel gets). */
function acpiFiles(cfg: VmConfig): { name: string; data: Uint8Array }[] {
  if (!cfg.acpiTables) return [];
  const l = buildTableLoader(acpiFor(cfg).set);
  return [{ name: FW_CFG_ACPI_TABLES, data: l.tables }, { name: FW_CFG_ACPI_RSDP, data: l.rsdp }, { name: FW_CFG_TABLE_LOADER, data: l.loader }];
}
