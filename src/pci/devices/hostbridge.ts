/**
 * Host bridges (class 06/00) at 00:00.0.
 *
 * - `hostbridge`, persona "i440fx" (default): Intel 82441FX PMC, 8086:1237 rev 02. Stock OVMF and SeaBIOS
 *   key their whole platform setup on device ID 0x1237 at 00:00.0 (shared/research/uefi.md §2.1). From
 *   the 82441FX datasheet we keep the registers firmware writes: PAM0-PAM6 (0x59-0x5F; read/write enable
 *   bits 1:0 and 5:4, PAM0 only its high nibble) and SMRAM (0x72; bits 6:3 writable, C_BASE_SEG fixed at
 *   010b). They are stored and read back; they change no mapping (the BIOS area is plain RAM here).
 * - `hostbridge` with `persona = "bhyve"`: bhyve's 1275:1275 with a PCI Express capability (root port
 *   type), for guests and firmware built for bhyve (BhyveX64 OVMF accepts it; stock OVMF hangs).
 * - `amd_hostbridge`: as the bhyve persona with AMD's 1022:7432.
 *
 * `pcireg.*` overrides apply on top of each (src/pci/pcireg.ts).
 */
import { PciFunction, type PciFunctionSpec } from "../function.ts";
import { pciregOverrides } from "../pcireg.ts";
import { PCIE } from "../regs.ts";
import type { PciCreateInput, PciEmulation } from "../registry-types.ts";

const CLASS_HOST_BRIDGE = 0x06_00_00;

export const I440FX = {
  vendor: 0x8086, device: 0x1237, revision: 0x02,
  /** Programmable Attribute Map registers */
  PAM0: 0x59, PAM_COUNT: 7,
  SMRAM: 0x72, SMRAM_POWER_ON: 0x02, SMRAM_WRITABLE: 0x78,
} as const;

export const BHYVE_HOSTBRIDGE = { vendor: 0x1275, device: 0x1275 } as const;
export const AMD_HOSTBRIDGE = { vendor: 0x1022, device: 0x7432 } as const;

function i440fxSpec(): PciFunctionSpec {
  const regs = [];
  for (let i = 0; i < I440FX.PAM_COUNT; i++) regs.push({ offset: I440FX.PAM0 + i, size: 1 as const, value: 0, wmask: i === 0 ? 0x30 : 0x33 });
  regs.push({ offset: I440FX.SMRAM, size: 1 as const, value: I440FX.SMRAM_POWER_ON, wmask: I440FX.SMRAM_WRITABLE });
  return { model: "i440FX", vendor: I440FX.vendor, device: I440FX.device, revision: I440FX.revision, classCode: CLASS_HOST_BRIDGE, regs };
}

function bhyveSpec(ids: { vendor: number; device: number }): PciFunctionSpec {
  return { model: "bhyve hostbridge", ...ids, classCode: CLASS_HOST_BRIDGE, pcie: { type: PCIE.TYPE_ROOT_PORT } };
}

const PERSONAS = ["i440fx", "bhyve"] as const;

function persona(inp: PciCreateInput | { table: Record<string, unknown> }, where: string): (typeof PERSONAS)[number] {
  const p = inp.table.persona ?? "i440fx";
  if (typeof p !== "string" || !(PERSONAS as readonly string[]).includes(p.toLowerCase())) {
    throw new Error(`${where}.persona: expected one of ${PERSONAS.join(", ")}, got ${JSON.stringify(p)}`);
  }
  return p.toLowerCase() as (typeof PERSONAS)[number];
}

export const hostbridge: PciEmulation = {
  doc: "host bridge: i440FX 8086:1237 (default) or persona = \"bhyve\" 1275:1275; pcireg.* overrides",
  describe: (addr, table) => [{ addr, intPin: 0, model: persona({ table }, `pci.${addr.bus}.${addr.slot}.${addr.fn}`) === "bhyve" ? "bhyve hostbridge" : "i440FX" }],
  create(inp) {
    const where = `pci.${inp.addr.bus}.${inp.addr.slot}.${inp.addr.fn}`;
    const base = persona(inp, where) === "bhyve" ? bhyveSpec(BHYVE_HOSTBRIDGE) : i440fxSpec();
    return [new PciFunction(inp.ctx, inp.addr, { ...base, ...pciregOverrides(where, inp.table) }, inp)];
  },
};

export const amdHostbridge: PciEmulation = {
  doc: "AMD host bridge 1022:7432 (bhyve's amd_hostbridge); pcireg.* overrides",
  describe: (addr) => [{ addr, intPin: 0, model: "AMD hostbridge" }],
  create(inp) {
    const where = `pci.${inp.addr.bus}.${inp.addr.slot}.${inp.addr.fn}`;
    return [new PciFunction(inp.ctx, inp.addr, { ...bhyveSpec(AMD_HOSTBRIDGE), model: "AMD hostbridge", ...pciregOverrides(where, inp.table) }, inp)];
  },
};
