/**
 * What every virtio PCI emulation hands the transport, from the registry's create input: the function's
 * context and address, its queue eventfds (opened by prepare), the platform's ioeventfd service, the
 * table's pcireg.* identity overrides, and MSI-X or MSI (bhyve's global `virtio_msix`).
 */
import type { PciCreateInput } from "../pci/registry-types.ts";
import { pciregOverrides } from "../pci/pcireg.ts";
import { attachService, notifyFdsFor } from "./notify.ts";
import type { VirtioPciInput } from "./pci.ts";

/** "pci.B.S.F", for messages. */
export const pciWhere = (inp: Pick<PciCreateInput, "addr">): string => `pci.${inp.addr.bus}.${inp.addr.slot}.${inp.addr.fn}`;

export function virtioPciInput(inp: PciCreateInput): VirtioPciInput {
  return {
    ctx: inp.ctx, addr: inp.addr, gen: inp.gen, router: inp.router,
    notifyFds: notifyFdsFor(inp.prepared, inp.addr),
    attach: attachService(inp.ctx),
    overrides: pciregOverrides(pciWhere(inp), inp.table),
    msix: inp.cfg.virtioMsix ?? true,
  };
}
