/**
 * Types of the PCI emulation registry (src/pci/registry.ts): a PciEmulation turns one pci.B.S.F table
 * into one or more PciFunctions. Kept apart from the registry so device files can import them without a
 * cycle.
 */
import type { VmConfig } from "../config/types.ts";
import type { MapGeneration } from "../devices/bus.ts";
import type { DeviceContext } from "../devices/device.ts";
import type { Prepared } from "../vm/prepare.ts";
import type { PciAddress, PciFunction } from "./function.ts";
import type { PirqRouter } from "./intx.ts";
import type { PciTable } from "./pcireg.ts";

export interface PciCreateInput {
  ctx: DeviceContext;
  cfg: VmConfig;
  prepared: Prepared;
  /** the table's address */
  addr: PciAddress;
  table: PciTable;
  gen: MapGeneration;
  router: PirqRouter;
}

/** What a table will create, known without constructing anything (for validation and ACPI). */
export interface PciFunctionInfo {
  addr: PciAddress;
  /** INTx pin: 0 none, 1-4 INTA-INTD */
  intPin: number;
  model: string;
}

export interface PciEmulation {
  doc: string;
  describe(addr: PciAddress, table: PciTable): PciFunctionInfo[];
  /** Construct the functions (no side effects on shared state; power-on values come in powerOn). */
  create(inp: PciCreateInput): PciFunction[];
}
