/**
 * Device-specific configuration space accesses for the virtio models: little-endian 1/2/4-byte reads and
 * writes of a model's config bytes. Bytes past the end read as 0 and ignore writes (a driver probing a
 * wider field than the model has, or a hostile one, gets zeros, never an exception).
 */
import type { AccessSize } from "../devices/device.ts";

export function configRead(c: DataView, off: number, size: AccessSize): number {
  if (off >= 0 && off + size <= c.byteLength) {
    return size === 1 ? c.getUint8(off) : size === 2 ? c.getUint16(off, true) : c.getUint32(off, true);
  }
  let v = 0;
  for (let i = size - 1; i >= 0; i--) v = v * 256 + (off + i >= 0 && off + i < c.byteLength ? c.getUint8(off + i) : 0);
  return v;
}

export function configWrite(c: DataView, off: number, size: AccessSize, value: number): void {
  if (off < 0 || off + size > c.byteLength) return;
  if (size === 1) c.setUint8(off, value);
  else if (size === 2) c.setUint16(off, value, true);
  else c.setUint32(off, value, true);
}
