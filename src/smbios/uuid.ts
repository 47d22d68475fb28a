/**
 * UUIDs for SMBIOS: the default system UUID of a VM and the SMBIOS wire order.
 *
 * Default (config key `uuid` unset): a name-based version-5 UUID (RFC 9562 §5.5, SHA-1) of the VM name,
 * in the tsbhyve namespace — itself the version-5 UUID of the name "tsbhyve:vm" in the RFC's URL
 * namespace. The same name always gives the same UUID (so a guest sees a stable machine id across runs),
 * different names give different ones. Unlike bhyve (which hashes hostname + name) the host is not part
 * of it, so a VM keeps its UUID when moved to another host; two VMs with the same name on different hosts
 * share it — set `uuid` explicitly where that matters.
 */
import { createHash } from "node:crypto";

/** RFC 9562 namespace for URLs. */
export const URL_NAMESPACE = "6ba7b811-9dad-11d1-80b4-00c04fd430c8";

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** The 16 bytes of a textual UUID in RFC (big-endian, network) order. */
export function uuidBytes(uuid: string): Uint8Array {
  if (!UUID_RE.test(uuid)) throw new RangeError(`not a UUID: ${uuid}`);
  const hex = uuid.replaceAll("-", "");
  return Uint8Array.from({ length: 16 }, (_, i) => parseInt(hex.slice(2 * i, 2 * i + 2), 16));
}

export function formatUuid(b: Uint8Array): string {
  const h = Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

/** Name-based UUID, version 5 (SHA-1). */
export function uuidV5(namespace: string, name: string): string {
  const h = createHash("sha1").update(uuidBytes(namespace)).update(new TextEncoder().encode(name)).digest();
  const b = new Uint8Array(h.subarray(0, 16));
  b[6] = (b[6]! & 0x0f) | 0x50; // version 5
  b[8] = (b[8]! & 0x3f) | 0x80; // RFC variant
  return formatUuid(b);
}

/** The tsbhyve namespace for VM-name UUIDs. */
export const TSBHYVE_NAMESPACE = uuidV5(URL_NAMESPACE, "tsbhyve:vm");

/** Default system UUID of a VM with this name (lower case). */
export function defaultVmUuid(name: string): string {
  return uuidV5(TSBHYVE_NAMESPACE, name);
}

/**
 * SMBIOS (2.6+) byte order of a UUID: the first three fields (time_low, time_mid,
 * time_hi_and_version) little-endian, the remaining 8 bytes as in the RFC.
 */
export function uuidSmbiosBytes(uuid: string): Uint8Array {
  const b = uuidBytes(uuid);
  return Uint8Array.from([b[3]!, b[2]!, b[1]!, b[0]!, b[5]!, b[4]!, b[7]!, b[6]!, ...b.subarray(8)]);
}
