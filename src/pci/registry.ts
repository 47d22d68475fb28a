/**
 * The PCI emulations tsbhyve builds, as data: name (the `device` key of a pci.B.S.F table) → emulation.
 * Later issues add virtio-*, ahci, nvme, ... here.
 */
import { amdHostbridge, hostbridge } from "./devices/hostbridge.ts";
import { lpc } from "./devices/lpc.ts";
import type { PciEmulation } from "./registry-types.ts";
import { virtioRnd } from "../virtio/devices/rnd.ts";
import { virtioBlk } from "../virtio/devices/blk.ts";
import { virtioConsole } from "../virtio/devices/console.ts";
import { virtioInput } from "../virtio/devices/input.ts";
import { virtio9p } from "../virtio/devices/9p.ts";
import { virtioNet } from "../virtio/devices/net.ts";
import { virtioScsi } from "../virtio/devices/scsi.ts";

export const PCI_EMULATIONS: Readonly<Record<string, PciEmulation>> = {
  hostbridge,
  amd_hostbridge: amdHostbridge,
  lpc,
  "virtio-rnd": virtioRnd,
  "virtio-blk": virtioBlk,
  "virtio-console": virtioConsole,
  "virtio-input": virtioInput,
  "virtio-9p": virtio9p,
  "virtio-net": virtioNet,
  "virtio-scsi": virtioScsi,
};
