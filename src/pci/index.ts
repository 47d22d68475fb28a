/**
 * The PCI hierarchy: functions with shared config space (function.ts), the PIRQ router (intx.ts),
 * configuration mechanisms, allocation and the device-table entry point (host.ts), the emulation
 * registry (registry.ts, devices/), and the plain-data description for ACPI/MP tables (topology.ts).
 */
export { createPciDevices, createConfigMechanism1, createEcam, allocateBars, describePci, pciWindows, PciFunctions, decodeConfigAddress, decodeEcam, MEM64_HIGH_THRESHOLD, type PciWindows } from "./host.ts";
export { PciFunction, pciName, bdf, type PciAddress, type PciFunctionSpec, type BarSpec, type MsiSpec, type MsixSpec, type PcieSpec, type ConfigReg } from "./function.ts";
export { PirqRouter, pirqRouteIrq, pirqRouteAcceptable, PIRQ_ROUTE } from "./intx.ts";
export { PCI_EMULATIONS } from "./registry.ts";
export type { PciEmulation, PciCreateInput, PciFunctionInfo } from "./registry-types.ts";
export { pciTopology, type PciTopology, type PciSlotTopology, type PciPinRoute } from "./topology.ts";
export { pciregOverrides, parseRegValue, type PciTable } from "./pcireg.ts";
export { PIIX3_ISA, PIIX4_PM, pirqRouteOffset } from "./devices/lpc.ts";
export { I440FX, BHYVE_HOSTBRIDGE, AMD_HOSTBRIDGE } from "./devices/hostbridge.ts";
