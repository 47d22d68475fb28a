/**
 * The device table: every device tsbhyve can build, with the rule that decides (from the config)
 * whether and how it exists. Read top to bottom, this is the machine's inventory.
 */
import type { VmConfig } from "../config/types.ts";
import type { Device, DeviceContext } from "../devices/device.ts";
import type { Prepared } from "./prepare.ts";

export interface DeviceEntry {
  readonly name: string;
  readonly doc: string;
  create(ctx: DeviceContext, cfg: VmConfig, prepared: Prepared): Device[];
}

export const DEVICE_TABLE: readonly DeviceEntry[] = [];
