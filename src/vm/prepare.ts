/**
 * Host resources opened once, on the main thread, before any Worker starts: the host ends of the
 * serial ports, the virtio notification eventfds, the disks of virtio-blk functions. They reach the
 * Workers as plain data (fd numbers are process-wide).
 */
import { closeChardev, openChardev, type ChardevHandle } from "../chardev/index.ts";
import type { VmConfig } from "../config/types.ts";
import { fwcfgForConfig, type FwCfgItems } from "../fwcfg/items.ts";
import { acpiFwCfgFiles } from "./describe.ts";
import { closeVirtioNotifiers, openVirtioNotifiers } from "../virtio/notify.ts";
import { closeBlock, openBlock, type BlockDisk } from "../block/backend.ts";

export interface Prepared {
  /** lpc.com1..com4 host ends (undefined where the port is absent) */
  com: (ChardevHandle | undefined)[];
  /** fw_cfg items (built once; their bytes live in a SharedArrayBuffer, shared with every Worker) */
  fwcfg: FwCfgItems;
  /** per virtio function ("B.S.F"): one eventfd per queue, attached as ioeventfds on its notify addresses */
  virtioNotify: Record<string, number[]>;
  /** per virtio-blk function ("B.S.F"): its open disk (plain data, fd included) */
  disks: Record<string, BlockDisk>;
}

export function prepare(cfg: VmConfig): Prepared {
  const p: Prepared = { com: [], fwcfg: fwcfgForConfig(cfg, { extraFiles: cfg.acpiTables ? acpiFwCfgFiles(cfg) : [] }), virtioNotify: {}, disks: {} };
  try {
    p.virtioNotify = openVirtioNotifiers(cfg);
    p.disks = openDisks(cfg, p.disks);
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
  for (const d of Object.values(p.disks)) closeBlock(d);
}

/** Open every virtio-blk disk into `out` (so release() closes what was opened if a later one fails); warnings go to stderr once. */
function openDisks(cfg: VmConfig, out: Record<string, BlockDisk>): Record<string, BlockDisk> {
  for (const [key, t] of Object.entries(cfg.pci)) {
    if (t.device !== "virtio-blk") continue;
    const opt = <T>(k: string) => t[k] as T | undefined;
    const disk = openBlock({
      path: t.path as string, ro: opt("ro"), nocache: opt("nocache"), direct: opt("direct"), sync: opt("sync"),
      sectorsize: opt("sectorsize"), nodelete: opt("nodelete"), ser: opt("ser"),
    });
    out[key] = disk;
    for (const w of disk.warnings) process.stderr.write(`tsbhyve: pci.${key} (virtio-blk): ${w}\n`);
  }
  return out;
}
