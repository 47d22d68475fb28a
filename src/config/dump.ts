/**
 * `-o config.dump=1`: the resolved configuration as TOML in bhyve_config(5) key form. Loading the
 * output again gives the same VmConfig (paths are absolute, sizes exact).
 */
import { stringify } from "smol-toml";
import { formatChardev } from "./chardev.ts";
import { formatCpuList } from "./cpuset.ts";
import { formatSize } from "./size.ts";
import type { VmConfig } from "./types.ts";

export function configToTree(cfg: VmConfig): Record<string, unknown> {
  const lpc: Record<string, unknown> = {};
  if (cfg.bootrom) lpc.bootrom = cfg.bootrom;
  if (cfg.bootvars) lpc.bootvars = cfg.bootvars;
  if (cfg.pcTestdev) lpc["pc-testdev"] = true;
  cfg.com.forEach((c, i) => {
    if (c) lpc[`com${i + 1}`] = { path: formatChardev(c) };
  });
  const pci: Record<string, Record<string, Record<string, unknown>>> = {};
  for (const [id, table] of Object.entries(cfg.pci)) {
    const [b, s, f] = id.split(".") as [string, string, string];
    ((pci[b] ??= {})[s] ??= {} as Record<string, unknown>)[f] = table;
  }
  const tree: Record<string, unknown> = {
    name: cfg.name,
    cpus: cfg.cpus,
    sockets: cfg.sockets,
    cores: cfg.cores,
    threads: cfg.threads,
    acpi_tables: cfg.acpiTables,
    destroy_on_poweroff: cfg.destroyOnPoweroff,
    virtio_msix: cfg.virtioMsix,
  };
  tree.uuid = cfg.uuid;
  tree.memory = { size: formatSize(cfg.memory.size), wired: cfg.memory.wired };
  tree.rtc = { use_localtime: cfg.rtcLocaltime };
  tree.x86 = {
    strictio: cfg.x86.strictio,
    strictmsr: cfg.x86.strictmsr,
    mptable: cfg.x86.mptable,
    vmexit_on_hlt: cfg.x86.vmexitOnHlt,
    verbosemsr: cfg.x86.verbosemsr,
  };
  const vcpu = Object.entries(cfg.cpusets).map(([n, list]) => [n, { cpuset: formatCpuList(list) }]);
  if (vcpu.length) tree.vcpu = Object.fromEntries(vcpu);
  if (cfg.boot) tree.boot = { kernel: cfg.boot.kernel, ...(cfg.boot.initrd ? { initrd: cfg.boot.initrd } : {}), cmdline: cfg.boot.cmdline };
  if (Object.keys(lpc).length) tree.lpc = lpc;
  const sm = cfg.smbios;
  tree.bios = { vendor: sm.bios.vendor, version: sm.bios.version, release_date: sm.bios.releaseDate };
  tree.system = {
    manufacturer: sm.system.manufacturer, product_name: sm.system.productName, version: sm.system.version,
    serial_number: sm.system.serialNumber, sku: sm.system.sku, family_name: sm.system.familyName,
  };
  tree.board = {
    manufacturer: sm.board.manufacturer, product_name: sm.board.productName, version: sm.board.version,
    serial_number: sm.board.serialNumber, asset_tag: sm.board.assetTag, location: sm.board.location,
  };
  tree.chassis = {
    manufacturer: sm.chassis.manufacturer, version: sm.chassis.version, serial_number: sm.chassis.serialNumber,
    asset_tag: sm.chassis.assetTag, sku: sm.chassis.sku,
  };
  tree.pci = pci;
  if (cfg.fwcfg.length) tree.fw_cfg = cfg.fwcfg.map((f) => ({ ...f }));
  return tree;
}

export function dumpConfig(cfg: VmConfig): string {
  return `# resolved configuration (from ${cfg.source})\n${stringify(configToTree(cfg))}\n`;
}
