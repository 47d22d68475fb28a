/**
 * Network backends, host side: the Linux tap of each virtio-net function, opened once on the main thread
 * (src/vm/prepare.ts) and handed to every thread as plain data (`NetDeviceInfo`: fd, interface name, the
 * guest's MAC, mtu, queue size).
 *
 * `backend = "tap0"`: the interface is attached when it exists and created when it does not (then it
 * lives as long as tsbhyve's fd: the kernel removes it when the VM exits), opened with IFF_TAP |
 * IFF_NO_PI | IFF_VNET_HDR, non-blocking, a 12-byte virtio-net header and no offloads until a driver
 * negotiates them (the device sets both). The interface is brought up, like bhyve's tap with
 * net.link.tap.up_on_open; one tsbhyve created gets `mtu` as its MTU too. An existing interface with a
 * smaller MTU than `mtu` is reported (the guest would send frames the host drops).
 *
 * MAC: `mac` when given, else bhyve's stable address from the VM name and the PCI slot and function.
 */
import type { VmConfig } from "../config/types.ts";
import { generateMac, NET_DEFAULT_QUEUE_SIZE, NET_HDR_BYTES, parseMac, type NetDeviceInfo } from "../virtio/net/device.ts";
import { host, netHost } from "../vmm/index.ts";
import { TAP_NO_CREATE, TAP_VNET_HDR } from "../vmm/net.ts";

export interface TapOptions {
  /** interface name (bhyve's backend); a leading /dev/ is dropped */
  backend: string;
  mac?: string;
  mtu?: number;
  queueSize?: number;
  /** attach only, never create */
  noCreate?: boolean;
}

/** What opening reports besides the device data. */
export interface TapOpenResult { dev: NetDeviceInfo; created: boolean; warnings: string[] }

export const tapName = (backend: string): string => backend.replace(/^\/dev\//, "");

/** Open one tap. Throws with a message naming the interface. */
export function openTap(o: TapOptions, vm: { name: string; slot: number; fn: number }): TapOpenResult {
  const ifname = tapName(o.backend);
  const mac = o.mac === undefined ? generateMac(vm.name, vm.slot, vm.fn) : parseMac(o.mac);
  if (typeof mac === "string") throw new Error(mac);
  const t = netHost.tapOpen(ifname, TAP_VNET_HDR | (o.noCreate ? TAP_NO_CREATE : 0));
  if (typeof t === "number") {
    const hint = -t === 1 || -t === 13 ? " (needs CAP_NET_ADMIN: run as root)" : -t === 2 ? " (is the tun module loaded? /dev/net/tun missing)" : -t === 22 ? " (an existing interface that is not a tap?)" : -t === 16 ? " (another process has it open)" : "";
    throw new Error(`tap ${ifname}: ${host.errnoName(-t)}${hint}`);
  }
  const warnings: string[] = [];
  try {
    const steps: [string, number][] = [
      ["TUNSETVNETHDRSZ", netHost.tapSetVnetHdrSize(t.fd, NET_HDR_BYTES)],
      ["TUNSETOFFLOAD", netHost.tapSetOffload(t.fd, 0)],
      ["interface up", netHost.ifUp(t.name, t.created && o.mtu !== undefined ? o.mtu : 0)],
    ];
    for (const [what, r] of steps) if (r < 0) throw new Error(`tap ${t.name}: ${what}: ${host.errnoName(-r)}`);
  } catch (e) {
    host.close(t.fd);
    throw e;
  }
  if (!t.created && o.mtu !== undefined && t.mtu > 0 && t.mtu < o.mtu) warnings.push(`tap ${t.name} has MTU ${t.mtu}, smaller than mtu = ${o.mtu}: the host drops larger frames from the guest`);
  return { dev: { fd: t.fd, ifname: t.name, mac, mtu: o.mtu, queueSize: o.queueSize ?? NET_DEFAULT_QUEUE_SIZE }, created: t.created, warnings };
}

export function closeTap(dev: NetDeviceInfo): void { host.close(dev.fd); }

/** Main thread: open every virtio-net table's tap into `out` (so a later failure still closes the earlier ones). */
export function openNetBackends(cfg: Pick<VmConfig, "pci" | "name">, out: Record<string, NetDeviceInfo>): Record<string, NetDeviceInfo> {
  for (const [key, t] of Object.entries(cfg.pci)) {
    if (t.device !== "virtio-net") continue;
    const [, slot, fn] = key.split(".").map(Number);
    try {
      const r = openTap({ backend: t.backend as string, mac: t.mac as string | undefined, mtu: t.mtu as number | undefined, queueSize: t.queue_size as number | undefined }, { name: cfg.name, slot: slot!, fn: fn! });
      out[key] = r.dev;
      for (const w of r.warnings) process.stderr.write(`tsbhyve: pci.${key} (virtio-net): ${w}\n`);
    } catch (e) {
      throw new Error(`pci.${key} (virtio-net): ${(e as Error).message}`);
    }
  }
  return out;
}

export function closeNetBackends(m: Record<string, NetDeviceInfo>): void {
  for (const d of Object.values(m)) closeTap(d);
}
