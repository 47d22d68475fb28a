/**
 * Guest scatter-gather lists of storage requests (virtio-blk, the SCSI target): lengths, prefixes and
 * suffixes, checks against guest memory, and the small copies a device does make — headers and parameter
 * lists gathered from device-readable buffers, short replies (GET_ID, INQUIRY, MODE SENSE...) scattered
 * into device-writable ones. Disk data never goes through here: it goes to the block engine
 * (preadv/pwritev straight into guest RAM).
 */
import type { Seg } from "./io.ts";
import type { GuestMemory } from "../mem/guest-memory.ts";

export type { Seg };

export const segBytes = (segs: readonly Seg[]): number => segs.reduce((a, s) => a + s.len, 0);

/** The first `n` bytes of `segs` (n <= their total). */
export function takeSegs(segs: readonly Seg[], n: number): Seg[] {
  const out: Seg[] = [];
  for (const s of segs) {
    if (n <= 0) break;
    const k = Math.min(n, s.len);
    if (k > 0) out.push(k === s.len ? s : { gpa: s.gpa, len: k });
    n -= k;
  }
  return out;
}

/** `segs` without their first `n` bytes. */
export function skipSegs(segs: readonly Seg[], n: number): Seg[] {
  if (segs.length && segs[0]!.len === n) return segs.slice(1); // the usual case: a header descriptor of its own
  const out: Seg[] = [];
  for (const s of segs) {
    if (n >= s.len) { n -= s.len; continue; }
    out.push(n ? { gpa: s.gpa + n, len: s.len - n } : s);
    n = 0;
  }
  return out;
}

/** `segs` without their last `n` bytes. */
export function trimSegs(segs: readonly Seg[], n: number): Seg[] {
  if (segs.length && segs[segs.length - 1]!.len === n) return segs.slice(0, -1); // the usual case: a status descriptor of its own
  const out = segs.slice();
  for (let i = out.length - 1; i >= 0 && n > 0; i--) {
    const s = out[i]!;
    const k = Math.min(n, s.len);
    out[i] = { gpa: s.gpa, len: s.len - k };
    n -= k;
  }
  return out.filter((s) => s.len > 0);
}

/**
 * True if every segment lies in guest memory (RAM only when `ram`, i.e. the device writes it), across
 * adjacent regions if need be. Lengths and addresses must be safe non-negative integers.
 */
export function segsOk(mem: GuestMemory, segs: readonly Seg[], ram: boolean): boolean {
  for (const s of segs) if (!segOk(mem, s, ram)) return false;
  return true;
}

/** segsOk for one segment. */
export function segOk(mem: GuestMemory, s: Seg, ram: boolean): boolean {
  if (!Number.isSafeInteger(s.len) || s.len < 0 || !Number.isSafeInteger(s.gpa) || s.gpa < 0) return false;
  let gpa = s.gpa, left = s.len;
  while (left > 0) {
    if (!mem.valid(gpa, 1)) return false;
    const r = mem.find(gpa, 1);
    if (ram && r.kind !== "ram") return false;
    const n = Math.min(left, r.gpa + r.size - gpa);
    gpa += n;
    left -= n;
  }
  return true;
}

/** Copy the first `n` bytes of segments (n <= their total). */
export function gather(mem: GuestMemory, segs: readonly Seg[], n: number): Uint8Array {
  const out = new Uint8Array(n);
  let done = 0;
  for (const s of segs) {
    if (done >= n) break;
    const k = Math.min(n - done, s.len);
    if (k > 0) out.set(mem.readBytes(s.gpa, k), done);
    done += k;
  }
  return out;
}

/** Copy `data` into segments (as much as fits); returns the bytes copied. */
export function scatter(mem: GuestMemory, segs: readonly Seg[], data: Uint8Array): number {
  let done = 0;
  for (const s of segs) {
    if (done >= data.length) break;
    const k = Math.min(data.length - done, s.len);
    if (k > 0) mem.writeBytes(s.gpa, data.subarray(done, done + k));
    done += k;
  }
  return done;
}
