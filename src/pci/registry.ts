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

export const PCI_EMULATIONS: Readonly<Record<string, PciEmulation>> = {
  hostbridge,
  amd_hostbridge: amdHostbridge,
  lpc,
  "virtio-rnd": virtioRnd,
  "virtio-blk": virtioBlk,
  "virtio-console": virtioConsole,
  "virtio-input": virtioInput,
};
