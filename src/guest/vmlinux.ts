/**
 * guest/vmlinux — recover the uncompressed ELF vmlinux from a bzImage.
 *
 * Why: QEMU boots an ELF vmlinux carrying a PVH note (XEN_ELFNOTE_PHYS32_ENTRY) straight into 32-bit
 * protected mode, skipping real-mode setup and in-guest decompression; under TCG that is ≈ 4 s faster.
 *
 * How (Documentation/arch/x86/boot.rst): the protected-mode part starts at (setup_sects + 1) * 512
 * (setup_sects == 0 means 4). Boot protocol ≥ 2.08 gives payload_offset (0x248) and payload_length
 * (0x24c), relative to that start: the compressed vmlinux, followed by its uncompressed size as a
 * little-endian u32 (scripts/Makefile.lib "size_append"). The compressor is recognised by its magic and
 * the host tool (xz, zstd, gzip, lz4, bzip2, lzma) decompresses it; the length trailer double-checks.
 */
import { existsSync, readFileSync, statSync } from "node:fs";
import { join, dirname, basename } from "node:path";
import { run } from "./exec.ts";
import { writeAtomic } from "./cache.ts";

interface Codec {
  name: string;
  magic: number[];
  cmd: string[];
}
const CODECS: Codec[] = [
  { name: "xz", magic: [0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00], cmd: ["xz", "-dc", "--single-stream"] },
  { name: "zstd", magic: [0x28, 0xb5, 0x2f, 0xfd], cmd: ["zstd", "-dcq"] },
  { name: "gzip", magic: [0x1f, 0x8b], cmd: ["gzip", "-dc"] },
  { name: "lz4", magic: [0x02, 0x21, 0x4c, 0x18], cmd: ["lz4", "-dc"] },
  { name: "bzip2", magic: [0x42, 0x5a, 0x68], cmd: ["bzip2", "-dc"] },
  { name: "lzma", magic: [0x5d, 0x00, 0x00], cmd: ["xz", "--format=lzma", "-dc"] },
];

const matches = (b: Uint8Array, off: number, magic: number[]) => magic.every((m, i) => b[off + i] === m);

export interface BzImagePayload {
  codec: string;
  compressed: Uint8Array;
  /** Uncompressed size from the trailer. */
  size: number;
}

/** Locate and identify the compressed kernel inside a bzImage. */
export function findPayload(bz: Uint8Array): BzImagePayload {
  const dv = new DataView(bz.buffer, bz.byteOffset, bz.byteLength);
  if (dv.getUint32(0x202, true) !== 0x53726448 /* "HdrS" */) throw new Error("not a bzImage (no HdrS)");
  const version = dv.getUint16(0x206, true);
  let setupSects = bz[0x1f1];
  if (setupSects === 0) setupSects = 4;
  const pmStart = (setupSects + 1) * 512;
  if (version >= 0x208) {
    const off = pmStart + dv.getUint32(0x248, true);
    const len = dv.getUint32(0x24c, true);
    const codec = CODECS.find((c) => matches(bz, off, c.magic));
    if (codec && off + len <= bz.length && len > 4) {
      return {
        codec: codec.name,
        compressed: bz.subarray(off, off + len - 4),
        size: dv.getUint32(off + len - 4, true),
      };
    }
  }
  // Old boot protocol or an unexpected header: scan for a known magic after the setup code.
  for (let off = pmStart; off < bz.length - 8; off++) {
    for (const c of CODECS.slice(0, 2)) {
      if (matches(bz, off, c.magic)) return { codec: c.name, compressed: bz.subarray(off), size: 0 };
    }
  }
  throw new Error("no compressed payload found in bzImage");
}

/** Whether an ELF64 vmlinux has the PVH entry note (Xen note type 18), i.e. QEMU can boot it directly. */
export function hasPvhNote(elf: Uint8Array): boolean {
  const dv = new DataView(elf.buffer, elf.byteOffset, elf.byteLength);
  const phoff = Number(dv.getBigUint64(0x20, true));
  const phentsize = dv.getUint16(0x36, true);
  const phnum = dv.getUint16(0x38, true);
  for (let i = 0; i < phnum; i++) {
    const p = phoff + i * phentsize;
    if (dv.getUint32(p, true) !== 4 /* PT_NOTE */) continue;
    let o = Number(dv.getBigUint64(p + 8, true));
    const end = o + Number(dv.getBigUint64(p + 32, true));
    while (o + 12 <= end) {
      const namesz = dv.getUint32(o, true);
      const descsz = dv.getUint32(o + 4, true);
      const type = dv.getUint32(o + 8, true);
      const name = new TextDecoder().decode(elf.subarray(o + 12, o + 12 + namesz)).replace(/\0+$/, "");
      if (name === "Xen" && type === 18) return true;
      o += 12 + ((namesz + 3) & ~3) + ((descsz + 3) & ~3);
    }
  }
  return false;
}

/**
 * The vmlinux for a bzImage, decompressed once and cached next to it (`vmlinux-<release>` in the same
 * directory, or `outPath`). Returns the path.
 */
export async function extractVmlinux(bzImagePath: string, outPath?: string): Promise<string> {
  const out = outPath ?? join(dirname(bzImagePath), basename(bzImagePath).replace(/^vmlinuz/, "vmlinux"));
  if (out === bzImagePath) throw new Error(`extractVmlinux: output would overwrite ${bzImagePath}`);
  if (existsSync(out) && statSync(out).mtimeMs >= statSync(bzImagePath).mtimeMs) return out;
  const p = findPayload(new Uint8Array(readFileSync(bzImagePath)));
  const codec = CODECS.find((c) => c.name === p.codec)!;
  const r = await run(codec.cmd, { stdin: p.compressed });
  // A decompressor may complain about trailing data while having produced the whole image; the checks
  // below (ELF magic, exact size from the trailer) decide.
  const elf = r.stdout;
  if (elf.length < 64 || !matches(elf, 0, [0x7f, 0x45, 0x4c, 0x46])) {
    throw new Error(`decompressing the ${p.codec} payload of ${bzImagePath} gave no ELF (${codec.cmd[0]}: ${r.stderr.trim()})`);
  }
  if (p.size !== 0 && elf.length !== p.size) {
    throw new Error(`vmlinux from ${bzImagePath}: ${elf.length} bytes, trailer says ${p.size}`);
  }
  writeAtomic(out, elf);
  return out;
}
