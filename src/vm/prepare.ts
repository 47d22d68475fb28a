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
import { closeBlock, needsRmw, openBlock, type BlockDisk } from "../block/backend.ts";
import { consolePortSpec } from "../config/schema.ts";
import { consolePorts } from "../virtio/devices/console.ts";
import { openEvdev, type InputHost } from "../virtio/devices/input.ts";
import { host } from "../vmm/index.ts";
import { closeNetBackends, openNetBackends } from "../net/tap.ts";
import type { NetDeviceInfo } from "../virtio/net/device.ts";
import { makePoolInfo, type BlockPoolInfo } from "../block/pool.ts";

export interface Prepared {
  /** lpc.com1..com4 host ends (undefined where the port is absent) */
  com: (ChardevHandle | undefined)[];
  /** fw_cfg items (built once; their bytes live in a SharedArrayBuffer, shared with every Worker) */
  fwcfg: FwCfgItems;
  /** per virtio function ("B.S.F"): one eventfd per queue, attached as ioeventfds on its notify addresses */
  virtioNotify: Record<string, number[]>;
  /** per virtio-blk function ("B.S.F"): its open disk (plain data, fd included) */
  disks: Record<string, BlockDisk>;
  /** per virtio-blk function with block Workers ("B.S.F"): the pool's shared ring and completion eventfd */
  blkPools?: Record<string, BlockPoolInfo>;
  /** per virtio-console function ("B.S.F"): the host end of each port, by port number */
  consolePorts?: Record<string, (ChardevHandle | undefined)[]>;
  /** per virtio-scsi function ("B.S.F"): its LUNs' open disks (plain data, fds included), LUN 0 first */
  scsiLuns?: Record<string, { lun: number; disk: BlockDisk }[]>;
  /** per virtio-input function with a host device ("B.S.F"): its open evdev fd and identity */
  inputs?: Record<string, InputHost>;
  /** per virtio-net function ("B.S.F"): its open tap (plain data, fd included) and the guest MAC */
  nets?: Record<string, NetDeviceInfo>;
}

export function prepare(cfg: VmConfig): Prepared {
  const p: Prepared = { com: [], fwcfg: fwcfgForConfig(cfg, { extraFiles: cfg.acpiTables ? acpiFwCfgFiles(cfg) : [] }), virtioNotify: {}, disks: {} };
  try {
    p.virtioNotify = openVirtioNotifiers(cfg);
    p.disks = openDisks(cfg, p.disks);
    makeBlkPools(cfg, p);
    cfg.com.forEach((spec, i) => { p.com[i] = spec ? openChardev(spec, `com${i + 1}`) : undefined; });
    openConsoles(cfg, p);
    openInputs(cfg, p);
    openNetBackends(cfg, (p.nets ??= {}));
    openScsiLuns(cfg, p);
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
  for (const pool of Object.values(p.blkPools ?? {})) host.close(pool.fd);
  for (const ports of Object.values(p.consolePorts ?? {})) for (const h of ports) if (h) closeChardev(h);
  for (const h of Object.values(p.inputs ?? {})) host.close(h.fd);
  closeNetBackends(p.nets ?? {});
  for (const luns of Object.values(p.scsiLuns ?? {})) for (const l of luns) closeBlock(l.disk);
}

/**
 * virtio-scsi functions: every LUN's disk (LUN 0 from the table's own block options, LUN N from lun.N),
 * opened into `p` as it goes so release() closes what was opened if a later one fails.
 */
function openScsiLuns(cfg: VmConfig, p: Prepared): void {
  for (const [key, t] of Object.entries(cfg.pci)) {
    if (t.device !== "virtio-scsi") continue;
    const list: { lun: number; disk: BlockDisk }[] = (p.scsiLuns ??= {})[key] = [];
    const lunTables = (t.lun ?? {}) as Record<string, Record<string, unknown>>;
    const specs: [number, Record<string, unknown>][] = [[0, t], ...Object.entries(lunTables).map(([n, l]) => [Number(n), l] as [number, Record<string, unknown>])];
    for (const [lun, o] of specs.sort((a, b) => a[0] - b[0])) {
      const opt = <T>(k: string) => o[k] as T | undefined;
      let disk: BlockDisk;
      try {
        disk = openBlock({
          path: o.path as string, ro: opt("ro"), nocache: opt("nocache"), direct: opt("direct"), sync: opt("sync"),
          sectorsize: opt("sectorsize"), nodelete: opt("nodelete"), ser: opt("ser"),
        });
      } catch (e) { throw new Error(`pci.${key}${lun ? `.lun.${lun}` : ""}.path (virtio-scsi): ${(e as Error).message}`); }
      list.push({ lun, disk });
      for (const w of disk.warnings) process.stderr.write(`tsbhyve: pci.${key} (virtio-scsi LUN ${lun}): ${w}\n`);
    }
  }
}

/**
 * virtio-input functions with `path`: the host evdev device, opened and probed (EVIOCG*) here.
 */
function openInputs(cfg: VmConfig, p: Prepared): void {
  for (const [key, t] of Object.entries(cfg.pci)) {
    if (t.device !== "virtio-input") continue;
    if (typeof t.path === "string") {
      try { (p.inputs ??= {})[key] = openEvdev(t.path); } catch (e) { throw new Error(`pci.${key}.path (virtio-input): ${(e as Error).message}`); }
    }
  }
}

/**
 * virtio-console functions: each port's host end (a listening Unix socket, or the chardev given).
 * Everything goes into `p` as it is opened.
 */
function openConsoles(cfg: VmConfig, p: Prepared): void {
  for (const [key, t] of Object.entries(cfg.pci)) {
    if (t.device !== "virtio-console") continue;
    const handles: (ChardevHandle | undefined)[] = (p.consolePorts ??= {})[key] = [];
    for (const [id, port] of consolePorts(t)) {
      const spec = consolePortSpec(port.path, "/");
      if (!spec.ok) throw new Error(`pci.${key}.port.${id}.path: ${spec.error}`);
      handles[id] = openChardev(spec.value, `pci.${key} (virtio-console) port ${id}${port.name ? ` "${port.name}"` : ""}`);
    }
  }
}

/**
 * virtio-blk disks with `iothreads` > 0 get a block Worker pool (src/block/pool.ts): its shared ring and
 * completion eventfd are made here, the Workers started by runVm. Without `iothreads`, disks that wait on
 * a device (O_DIRECT or O_SYNC files, block devices) get bhyve's 8 and page-cache files none (see
 * src/virtio/devices/blk.ts). O_DIRECT disks with sub-block sectors (read-modify-write) keep running
 * inline, one request at a time.
 */
function makeBlkPools(cfg: VmConfig, p: Prepared): void {
  for (const [key, t] of Object.entries(cfg.pci)) {
    const disk = p.disks[key];
    if (t.device !== "virtio-blk" || !disk) continue;
    const threads = typeof t.iothreads === "number" ? t.iothreads : defaultIothreads(disk);
    if (threads < 1 || needsRmw(disk)) continue;
    (p.blkPools ??= {})[key] = makePoolInfo(threads, host.eventfd());
  }
}

/** Block Workers of a disk without `iothreads`: bhyve's 8 when requests wait on a device, else none. */
export function defaultIothreads(disk: BlockDisk): number {
  return disk.direct || disk.sync || disk.kind === "blockdev" ? 8 : 0;
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
