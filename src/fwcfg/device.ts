/**
 * QEMU fw_cfg, x86 I/O-port flavour (QEMU docs/specs/fw_cfg.rst), the channel firmware (OVMF, SeaBIOS)
 * reads the e820 map, ACPI and SMBIOS tables, CPU count and boot order through.
 *
 * Ports:
 *   0x510  selector, 16-bit write: selects an item (bit 14, "write mode", is ignored for lookup) and
 *          resets the data offset. Reads return 0.
 *   0x511  data, byte reads stream the selected item; past its end, or for an unknown item, reads
 *          return 0. Writes are ignored (as QEMU >= 2.4 does).
 *   0x514  DMA address, 8 bytes, big-endian: the guest writes the high half to 0x514 then the low half
 *          to 0x518 (each a 32-bit `out` of the byte-swapped value); the write that reaches the last
 *          byte (0x51B) starts the transfer. A 4-byte write at 0x514 clears the low half. Byte and word
 *          writes store their bytes. Reads return the DMA signature "QEMU CFG" (big-endian as a 64-bit
 *          value, so byte 0x514 = 'Q').
 *
 * DMA: the address points at { be32 control; be32 length; be64 address } in guest RAM. control bits:
 * 0x01 ERROR, 0x02 READ, 0x04 SKIP, 0x08 SELECT (item in bits 31..16, applied first), 0x10 WRITE.
 * READ copies `length` bytes from the current offset to guest RAM (zeros past the item's end), SKIP
 * advances the offset, WRITE is refused (no writable items) with ERROR. Then control is written back:
 * 0 (done) or ERROR. Every guest range is checked through GuestMemory and must be RAM (never the
 * read-only boot ROM); a bad one sets ERROR and changes nothing — nothing a guest writes can throw.
 * A descriptor that is not itself in RAM is ignored (there is nowhere to report the error).
 *
 * State (shared, per ARCHITECTURE.md): selector, offset and the 8 DMA register bytes. The item bytes
 * are read-only data built on the main thread (items.ts) and passed to every thread.
 */
import type { Device, DeviceContext, Space } from "../devices/device.ts";
import { defineLayout } from "../devices/state.ts";
import type { GuestMemory } from "../mem/guest-memory.ts";
import { FW_CFG_WRITE_BIT, type FwCfgItems } from "./items.ts";

export const FWCFG_PORT = 0x510;
export const FWCFG_DMA_PORT = 0x514;
export const FWCFG_DMA_SIGNATURE = "QEMU CFG";

export const DMA_CTL = { ERROR: 0x01, READ: 0x02, SKIP: 0x04, SELECT: 0x08, WRITE: 0x10 } as const;

export const fwcfgLayout = defineLayout("fwcfg", 1, {
  selector: "u16",
  offset: "u32",
  dma: { type: "u8", count: 8 },
});

const SIG = new TextEncoder().encode(FWCFG_DMA_SIGNATURE);
const DESC_BYTES = 16;

/** True if [gpa, gpa+len) is guest RAM (contiguous regions allowed, no ROM). */
export function isGuestRam(mem: GuestMemory, gpa: number, len: number): boolean {
  if (!Number.isSafeInteger(gpa) || !Number.isSafeInteger(len) || gpa < 0 || len < 0 || !Number.isSafeInteger(gpa + len)) return false;
  if (len === 0) return true; // nothing is touched
  let done = 0;
  try {
    while (done < len) {
      const r = mem.find(gpa + done, 1);
      if (r.kind !== "ram") return false;
      done += Math.min(len - done, r.size - (gpa + done - r.gpa));
    }
  } catch {
    return false;
  }
  return true;
}

export interface FwCfgOptions {
  /** selector/data base port (default 0x510) */
  port?: number;
  /** DMA register port (default 0x514); null = no DMA (ID then says so) */
  dmaPort?: number | null;
  /**
   * Called with the device lock held when the guest selects a file, before any byte is read: it may
   * rewrite `data` in place (same length; the bytes are shared by every thread). Used for contents that
   * depend on what firmware programmed first, e.g. the ACPI tables' PM base.
   */
  onSelect?: (name: string, data: Uint8Array) => void;
}

export function createFwCfg(ctx: DeviceContext, items: FwCfgItems, opts: FwCfgOptions = {}): Device {
  const { s, lock } = ctx.arena.alloc(fwcfgLayout);
  const mem = ctx.mem;
  const port = opts.port ?? FWCFG_PORT;
  const dmaPort = opts.dmaPort === undefined ? FWCFG_DMA_PORT : opts.dmaPort;
  const byKey = new Map<number, Uint8Array>();
  const nameOf = new Map<number, string>();
  for (const it of items.items) {
    byKey.set(it.key, it.data);
    if (it.name !== undefined) nameOf.set(it.key, it.name);
  }
  if (dmaPort === null) {
    // no DMA register: the ID item must not announce it
    const id = byKey.get(1);
    if (id && id.length >= 1) byKey.set(1, Uint8Array.from(id, (b, i) => (i === 0 ? b & ~2 : b)));
  }
  const current = (): Uint8Array | undefined => byKey.get(s.selector & ~FW_CFG_WRITE_BIT);

  const select = (key: number): void => {
    s.selector = key & 0xffff;
    s.offset = 0;
    const k = s.selector & ~FW_CFG_WRITE_BIT;
    const name = nameOf.get(k);
    if (name !== undefined && opts.onSelect) opts.onSelect(name, byKey.get(k)!);
  };

  /** One DMA operation; returns the control value to write back. */
  const transfer = (control: number, length: number, target: number): number => {
    if (control & DMA_CTL.SELECT) select(control >>> 16);
    const data = current();
    const size = data?.length ?? 0;
    const off = Math.min(s.offset, size);
    if (control & DMA_CTL.READ) {
      if (!isGuestRam(mem, target, length)) return DMA_CTL.ERROR;
      const n = Math.min(length, size - off);
      if (n > 0) mem.writeBytes(target, data!.subarray(off, off + n));
      if (length > n) mem.fill(target + n, length - n, 0);
      s.offset = Math.min(size, off + length);
      return 0;
    }
    if (control & DMA_CTL.WRITE) return DMA_CTL.ERROR; // no writable items
    if (control & DMA_CTL.SKIP) {
      s.offset = Math.min(size, off + length);
      return 0;
    }
    return 0;
  };

  const runDma = (): void => {
    let addr = 0;
    for (let i = 0; i < 8; i++) addr = addr * 256 + s.dma[i]!;
    s.dma.fill(0);
    if (!isGuestRam(mem, addr, DESC_BYTES)) {
      ctx.platform.log(`fw_cfg: DMA descriptor at 0x${addr.toString(16)} is not in guest RAM; ignored`);
      return;
    }
    const d = mem.readBytes(addr, DESC_BYTES);
    const dv = new DataView(d.buffer);
    const control = dv.getUint32(0, false);
    const length = dv.getUint32(4, false);
    const target = Number(dv.getBigUint64(8, false));
    let result: number;
    try {
      result = transfer(control, length, target);
    } catch {
      result = DMA_CTL.ERROR; // GuestMemoryError from a range that changed under us: report, never throw
    }
    const back = new Uint8Array(4);
    new DataView(back.buffer).setUint32(0, result, false);
    mem.writeBytes(addr, back);
  };

  const ranges = [{ space: "pio" as Space, base: port, size: 2 }];
  if (dmaPort !== null) ranges.push({ space: "pio", base: dmaPort, size: 8 });

  return {
    name: "fwcfg",
    ranges,
    lock,
    powerOn() {
      s.selector = 0;
      s.offset = 0;
      s.dma.fill(0);
    },
    read(_space, base, offset, size) {
      if (base === dmaPort) {
        let v = 0;
        for (let i = size - 1; i >= 0; i--) v = v * 256 + SIG[offset + i]!;
        return v;
      }
      if (offset === 0) return 0; // selector (write-only)
      // data port: stream bytes (the bus hands us 1-byte accesses here: 0x511 is odd)
      const data = current();
      let v = 0;
      for (let i = 0; i < size; i++) {
        let b = 0;
        if (data && s.offset < data.length) { b = data[s.offset]!; s.offset = s.offset + 1; }
        v |= b << (8 * i);
      }
      return v >>> 0;
    },
    write(_space, base, offset, size, value) {
      if (base === dmaPort) {
        for (let i = 0; i < size; i++) s.dma[offset + i] = (value >>> (8 * i)) & 0xff;
        if (offset === 0 && size === 4) s.dma.fill(0, 4);
        if (offset + size === 8) runDma();
        return;
      }
      if (offset === 0) select(size === 1 ? value & 0xff : value & 0xffff);
      // data port writes: ignored
    },
  };
}
