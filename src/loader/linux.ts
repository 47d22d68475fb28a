/**
 * Direct Linux boot (Documentation/arch/x86/boot.rst, zero-page.rst): parse a bzImage setup header,
 * place the protected-mode kernel, initrd, command line and zero page (struct boot_params) in guest
 * RAM, and produce the vCPU state for the 64-bit boot protocol (or the 32-bit one for kernels that do
 * not advertise a 64-bit entry point).
 *
 * Low-memory layout used (all inside the usable [0, 0x9FC00) e820 range):
 *   0x00500  GDT (null, null, code 0x10, data 0x18)
 *   0x07000  top of a small boot stack (grows down)
 *   0x07000  zero page (4 KiB)
 *   0x09000  PML4, 0x0A000 PDPT, 0x0B000-0x0EFFF four page directories (2 MiB pages, 0-4 GiB)
 *   0x20000  command line (up to cmdline_size + NUL)
 * The kernel goes at pref_address (or 1 MiB), the initrd as high as initrd_addr_max/lowmem allow.
 */
import type { GuestMemory } from "../mem/guest-memory.ts";
import type { Regs, Segment, Sregs } from "../vmm/layout.ts";
import { E820_RAM, encodeE820, e820FindRam, type E820Entry } from "./e820.ts";

export class LinuxLoaderError extends Error {
  override name = "LinuxLoaderError";
}

// ---- Setup header offsets (within the image and within the zero page) -------------------------
const H = {
  SETUP_SECTS: 0x1f1, ROOT_FLAGS: 0x1f2, SYSSIZE: 0x1f4, VID_MODE: 0x1fa, BOOT_FLAG: 0x1fe, JUMP: 0x200,
  HEADER: 0x202, VERSION: 0x206, KERNEL_VERSION: 0x20e, TYPE_OF_LOADER: 0x210, LOADFLAGS: 0x211,
  CODE32_START: 0x214, RAMDISK_IMAGE: 0x218, RAMDISK_SIZE: 0x21c, HEAP_END_PTR: 0x224, CMD_LINE_PTR: 0x228,
  INITRD_ADDR_MAX: 0x22c, KERNEL_ALIGNMENT: 0x230, RELOCATABLE_KERNEL: 0x234, MIN_ALIGNMENT: 0x235,
  XLOADFLAGS: 0x236, CMDLINE_SIZE: 0x238, HARDWARE_SUBARCH: 0x23c, PAYLOAD_OFFSET: 0x248,
  PAYLOAD_LENGTH: 0x24c, SETUP_DATA: 0x250, PREF_ADDRESS: 0x258, INIT_SIZE: 0x260, HANDOVER_OFFSET: 0x264,
} as const;
// ---- Zero-page fields outside the setup header ---------------------------------------------------
const ZP = { ACPI_RSDP_ADDR: 0x070, EXT_RAMDISK_IMAGE: 0x0c0, EXT_RAMDISK_SIZE: 0x0c4, EXT_CMD_LINE_PTR: 0x0c8, E820_ENTRIES: 0x1e8, E820_TABLE: 0x2d0 } as const;
export const E820_MAX_ZEROPAGE = 128;

const HDRS_MAGIC = 0x53726448; // "HdrS"
const LOADED_HIGH = 1 << 0;
const XLF_KERNEL_64 = 1 << 0;
const XLF_CAN_BE_LOADED_ABOVE_4G = 1 << 1;
const MIN_PROTOCOL = 0x206;

const KiB = 1024, MiB = 1024 * KiB, GiB = 1024 * MiB;
const PAGE = 4096;

// ---- Guest layout --------------------------------------------------------------------------------
export const BOOT_GDT = 0x500;
export const BOOT_STACK_TOP = 0x7000;
export const ZERO_PAGE = 0x7000;
export const PML4 = 0x9000;
export const PDPT = 0xa000;
export const PD = 0xb000; // four 4 KiB page directories: 0xB000-0xEFFF
export const CMDLINE_ADDR = 0x20000;
const CMDLINE_LIMIT = 0x9f000;
export const BOOT_CS = 0x10;
export const BOOT_DS = 0x18;
const IDENTITY_MAP_BYTES = 4 * GiB;

/** The parsed setup header (fields that the loader needs; absent ones are 0). */
export interface SetupHeader {
  /** Protocol version as 0xMMmm, e.g. 0x20f. */
  version: number;
  setupSects: number;
  /** Size of the real-mode setup (boot sector + setup sectors): the protected-mode kernel starts here. */
  setupBytes: number;
  syssize: number;
  loadflags: number;
  xloadflags: number;
  code32Start: number;
  initrdAddrMax: number;
  kernelAlignment: number;
  relocatable: boolean;
  minAlignment: number;
  cmdlineSize: number;
  prefAddress: number;
  initSize: number;
  /** First byte after the setup header (0x202 + the jump's displacement byte). */
  headerEnd: number;
  kernelVersion?: string;
}

export interface LinuxBootSummary {
  protocol: string;
  mode: "64-bit" | "32-bit";
  kernelVersion?: string;
  kernelAddr: number;
  kernelSize: number;
  /** Memory reserved for the kernel to decompress in place (max(init_size, kernelSize)). */
  kernelSpan: number;
  entry: number;
  zeroPage: number;
  cmdlineAddr: number;
  cmdlineLen: number;
  initrdAddr?: number;
  initrdSize?: number;
  rsdp?: number;
  e820Entries: number;
  pageTables?: number;
  gdt: number;
}

export interface LinuxBoot {
  regs: Partial<Regs>;
  /** Applies the boot segment/control-register state on top of the vCPU's current sregs. */
  sregs: (base: Sregs) => Sregs;
  summary: LinuxBootSummary;
  header: SetupHeader;
}

export interface LinuxLoadOptions {
  e820: readonly E820Entry[];
  /** Address of the ACPI RSDP, written to boot_params.acpi_rsdp_addr. */
  rsdp?: number;
}

const hex = (n: number) => "0x" + n.toString(16);
const alignUp = (n: number, a: number) => Math.ceil(n / a) * a;
const alignDown = (n: number, a: number) => Math.floor(n / a) * a;
const isPow2 = (n: number) => n > 0 && Number.isSafeInteger(n) && (n & (n - 1)) === 0 && n <= 2 ** 30;

/** Parse and validate a bzImage's setup header. Throws LinuxLoaderError on anything unusable. */
export function parseBzImage(image: Uint8Array): SetupHeader {
  if (!(image instanceof Uint8Array)) throw new LinuxLoaderError("kernel image must be bytes");
  const dv = new DataView(image.buffer, image.byteOffset, image.byteLength);
  const need = (end: number, what: string) => {
    if (image.length < end) throw new LinuxLoaderError(`kernel image is truncated (${image.length} bytes): no room for ${what}`);
  };
  if (image.length >= 4 && image[0] === 0x7f && image[1] === 0x45 && image[2] === 0x4c && image[3] === 0x46) {
    throw new LinuxLoaderError("kernel is an ELF file (vmlinux); direct boot needs a bzImage (arch/x86/boot/bzImage, /boot/vmlinuz-*)");
  }
  if (image.length >= 2 && image[0] === 0x1f && image[1] === 0x8b) {
    throw new LinuxLoaderError("kernel is gzip-compressed data, not a bzImage; decompress it first or use the bzImage");
  }
  need(H.HEADER + 4 + 2, "the setup header");
  if (dv.getUint32(H.HEADER, true) !== HDRS_MAGIC) {
    throw new LinuxLoaderError("not a Linux bzImage: no \"HdrS\" setup header magic at 0x202");
  }
  if (dv.getUint16(H.BOOT_FLAG, true) !== 0xaa55) throw new LinuxLoaderError("not a Linux bzImage: boot_flag at 0x1FE is not 0xAA55");
  const version = dv.getUint16(H.VERSION, true);
  const vstr = `${version >> 8}.${(version & 0xff).toString().padStart(2, "0")}`;
  if (version < MIN_PROTOCOL) {
    throw new LinuxLoaderError(`kernel uses boot protocol ${vstr}; tsbhyve needs 2.06 or newer (Linux 2.6.22+)`);
  }
  let setupSects = image[H.SETUP_SECTS]!;
  if (setupSects === 0) setupSects = 4;
  const setupBytes = (setupSects + 1) * 512;
  need(setupBytes, `${setupSects} setup sectors`);
  const headerEnd = Math.min(0x202 + image[H.JUMP + 1]!, setupBytes);
  const field = (off: number, bytes: 1 | 2 | 4, minVersion = 0): number => {
    if (version < minVersion) return 0;
    if (off + bytes > headerEnd) throw new LinuxLoaderError(`setup header ends at ${hex(headerEnd)}, before field at ${hex(off)} that protocol ${vstr} promises`);
    return bytes === 1 ? image[off]! : bytes === 2 ? dv.getUint16(off, true) : dv.getUint32(off, true);
  };
  const loadflags = field(H.LOADFLAGS, 1);
  if (!(loadflags & LOADED_HIGH)) throw new LinuxLoaderError("kernel is a zImage (loadflags LOADED_HIGH clear); only bzImage kernels are supported");
  const syssize = field(H.SYSSIZE, 4);
  let prefAddress = 0;
  if (version >= 0x20a) {
    if (H.PREF_ADDRESS + 8 > headerEnd) throw new LinuxLoaderError(`setup header ends at ${hex(headerEnd)}, before pref_address at ${hex(H.PREF_ADDRESS)} that protocol ${vstr} promises`);
    const p = dv.getBigUint64(H.PREF_ADDRESS, true);
    prefAddress = p > BigInt(Number.MAX_SAFE_INTEGER) ? -1 : Number(p);
  }
  const hdr: SetupHeader = {
    version,
    setupSects,
    setupBytes,
    syssize,
    loadflags,
    xloadflags: field(H.XLOADFLAGS, 2, 0x20c),
    code32Start: field(H.CODE32_START, 4),
    initrdAddrMax: field(H.INITRD_ADDR_MAX, 4, 0x203) || 0x37ffffff,
    kernelAlignment: field(H.KERNEL_ALIGNMENT, 4, 0x205),
    relocatable: field(H.RELOCATABLE_KERNEL, 1, 0x205) !== 0,
    minAlignment: field(H.MIN_ALIGNMENT, 1, 0x20a),
    cmdlineSize: field(H.CMDLINE_SIZE, 4, 0x206),
    prefAddress,
    initSize: field(H.INIT_SIZE, 4, 0x20a),
    headerEnd,
  };
  const kernelSize = image.length - setupBytes;
  if (kernelSize <= 0) throw new LinuxLoaderError("kernel image has no protected-mode part after the setup sectors");
  if (syssize > 0 && syssize * 16 > kernelSize) {
    throw new LinuxLoaderError(`kernel image is truncated: header says ${syssize * 16} bytes of kernel, file has ${kernelSize}`);
  }
  if (hdr.relocatable && !isPow2(hdr.kernelAlignment)) {
    throw new LinuxLoaderError(`relocatable kernel with bad kernel_alignment ${hex(hdr.kernelAlignment)}`);
  }
  hdr.kernelVersion = readKernelVersion(image, field(H.KERNEL_VERSION, 2), setupBytes);
  return hdr;
}

/** The kernel_version string (offset is relative to 0x200), if it is sane printable ASCII. */
function readKernelVersion(image: Uint8Array, ptr: number, setupBytes: number): string | undefined {
  if (!ptr) return undefined;
  const start = ptr + 0x200;
  let s = "";
  for (let i = start; i < Math.min(setupBytes, start + 256); i++) {
    const c = image[i]!;
    if (c === 0) return s || undefined;
    if (c < 0x20 || c > 0x7e) return undefined;
    s += String.fromCharCode(c);
  }
  return undefined;
}

/** Highest `align`-aligned address a with [a, a+size) inside usable RAM, a >= min, a+size <= top. */
function placeHigh(e820: readonly E820Entry[], mem: GuestMemory, size: number, min: number, top: number, align: number): number | undefined {
  let best: number | undefined;
  for (const e of e820) {
    if (e.type !== E820_RAM) continue;
    const hi = Math.min(e.addr + e.size, top);
    const a = alignDown(hi - size, align);
    if (a < e.addr || a < min) continue;
    if (!mem.valid(a, size)) continue;
    if (best === undefined || a > best) best = a;
  }
  return best;
}

function checkRam(e820: readonly E820Entry[], mem: GuestMemory, addr: number, len: number, what: string): void {
  if (!e820FindRam(e820, addr, len) || !mem.valid(addr, len)) {
    throw new LinuxLoaderError(`${what} at ${hex(addr)}-${hex(addr + len)} is not in usable guest RAM`);
  }
}

/**
 * Load a bzImage (plus optional initrd) for direct boot. Every write goes through GuestMemory after
 * the target range was checked against the e820 map, so an image that does not fit is a clean
 * LinuxLoaderError, never a partial write or an out-of-bounds access.
 */
export function loadLinux(
  mem: GuestMemory, kernel: Uint8Array, initrd: Uint8Array | undefined, cmdline: string, opts: LinuxLoadOptions,
): LinuxBoot {
  const hdr = parseBzImage(kernel);
  const e820 = opts.e820;
  if (e820.length === 0) throw new LinuxLoaderError("empty e820 map");
  if (e820.length > E820_MAX_ZEROPAGE) throw new LinuxLoaderError(`e820 map has ${e820.length} entries; the zero page holds ${E820_MAX_ZEROPAGE}`);
  const long = (hdr.xloadflags & XLF_KERNEL_64) !== 0;
  const kernelSize = kernel.length - hdr.setupBytes;

  // Fixed low-memory structures.
  checkRam(e820, mem, BOOT_GDT, 32, "boot GDT");
  checkRam(e820, mem, ZERO_PAGE, PAGE, "zero page");
  checkRam(e820, mem, BOOT_STACK_TOP - PAGE, PAGE, "boot stack");
  if (long) checkRam(e820, mem, PML4, 6 * PAGE, "page tables");

  // Command line.
  const cmdBytes = new TextEncoder().encode(cmdline);
  if (cmdBytes.includes(0)) throw new LinuxLoaderError("kernel command line contains a NUL byte");
  const cmdMax = hdr.cmdlineSize || 255;
  if (cmdBytes.length > cmdMax) throw new LinuxLoaderError(`kernel command line is ${cmdBytes.length} bytes; this kernel accepts at most ${cmdMax}`);
  if (CMDLINE_ADDR + cmdBytes.length + 1 > CMDLINE_LIMIT) throw new LinuxLoaderError(`kernel command line is ${cmdBytes.length} bytes; tsbhyve places at most ${CMDLINE_LIMIT - CMDLINE_ADDR - 1}`);
  checkRam(e820, mem, CMDLINE_ADDR, cmdBytes.length + 1, "command line");

  // Protected-mode kernel: pref_address (must for non-relocatable kernels), else 1 MiB aligned.
  const kernelSpan = alignUp(Math.max(hdr.initSize, kernelSize), PAGE);
  const fits = (a: number) => a >= MiB && a + kernelSpan <= IDENTITY_MAP_BYTES && !!e820FindRam(e820, a, kernelSpan) && mem.valid(a, kernelSpan);
  const candidates: number[] = [];
  const pref = hdr.version >= 0x20a && hdr.prefAddress > 0 ? hdr.prefAddress : MiB;
  candidates.push(pref);
  if (hdr.relocatable) candidates.push(alignUp(MiB, hdr.kernelAlignment));
  const kernelAddr = candidates.find((a) => a >= 0 && fits(a));
  if (kernelAddr === undefined) {
    const lowEnd = e820.filter((e) => e.type === E820_RAM && e.addr <= MiB).map((e) => e.addr + e.size).reduce((a, b) => Math.max(a, b), 0);
    throw new LinuxLoaderError(
      `kernel needs ${(kernelSpan / MiB).toFixed(1)} MiB at ${hex(pref)}${hdr.relocatable ? "" : " (not relocatable)"} ` +
      `but usable RAM ends at ${hex(lowEnd)}; give the VM more memory`,
    );
  }
  const kernelEnd = kernelAddr + kernelSpan;

  // Initrd: as high as allowed below min(initrd_addr_max + 1, lowmem end), page aligned, above the
  // kernel's init_size area; above 4 GiB only when the kernel says it can take that.
  let initrdAddr: number | undefined;
  if (initrd && initrd.length > 0) {
    const top = Math.min(hdr.initrdAddrMax + 1, IDENTITY_MAP_BYTES);
    initrdAddr = placeHigh(e820, mem, initrd.length, kernelEnd, top, PAGE);
    if (initrdAddr === undefined && (hdr.xloadflags & XLF_CAN_BE_LOADED_ABOVE_4G)) {
      initrdAddr = placeHigh(e820, mem, initrd.length, IDENTITY_MAP_BYTES, Number.MAX_SAFE_INTEGER, PAGE);
    }
    if (initrdAddr === undefined) {
      throw new LinuxLoaderError(
        `initrd (${(initrd.length / MiB).toFixed(1)} MiB) does not fit in guest RAM between the kernel end ${hex(kernelEnd)} ` +
        `and ${hex(top)} (initrd_addr_max ${hex(hdr.initrdAddrMax)}); give the VM more memory`,
      );
    }
  }

  // ---- All placement decided and checked: write. ----
  mem.writeBytes(kernelAddr, kernel.subarray(hdr.setupBytes));
  if (initrd && initrdAddr !== undefined) mem.writeBytes(initrdAddr, initrd);
  mem.writeBytes(CMDLINE_ADDR, cmdBytes);
  mem.write8(CMDLINE_ADDR + cmdBytes.length, 0);

  // Zero page: zeroed, setup header copied in, loader fields filled.
  const zp = new Uint8Array(PAGE);
  const zdv = new DataView(zp.buffer);
  zp.set(kernel.subarray(H.SETUP_SECTS, hdr.headerEnd), H.SETUP_SECTS);
  zp[H.TYPE_OF_LOADER] = 0xff; // undefined boot loader
  zdv.setUint32(H.CODE32_START, kernelAddr, true);
  zdv.setUint32(H.CMD_LINE_PTR, CMDLINE_ADDR, true);
  zdv.setUint32(ZP.EXT_CMD_LINE_PTR, 0, true);
  if (initrd && initrdAddr !== undefined) {
    zdv.setUint32(H.RAMDISK_IMAGE, initrdAddr >>> 0, true);
    zdv.setUint32(H.RAMDISK_SIZE, initrd.length >>> 0, true);
    zdv.setUint32(ZP.EXT_RAMDISK_IMAGE, Math.floor(initrdAddr / 2 ** 32), true);
    zdv.setUint32(ZP.EXT_RAMDISK_SIZE, Math.floor(initrd.length / 2 ** 32), true);
  } else {
    zdv.setUint32(H.RAMDISK_IMAGE, 0, true);
    zdv.setUint32(H.RAMDISK_SIZE, 0, true);
  }
  if (hdr.headerEnd >= H.HEAP_END_PTR + 2) zdv.setUint16(H.HEAP_END_PTR, 0, true);
  if (opts.rsdp !== undefined) zdv.setBigUint64(ZP.ACPI_RSDP_ADDR, BigInt(opts.rsdp), true);
  zp[ZP.E820_ENTRIES] = e820.length;
  zp.set(encodeE820(e820), ZP.E820_TABLE);
  mem.writeBytes(ZERO_PAGE, zp);

  // GDT: null, null, code (0x10), data (0x18).
  const gdt = new Uint8Array(32);
  const gdv = new DataView(gdt.buffer);
  gdv.setBigUint64(16, long ? 0x00af9b000000ffffn : 0x00cf9b000000ffffn, true);
  gdv.setBigUint64(24, 0x00cf93000000ffffn, true);
  mem.writeBytes(BOOT_GDT, gdt);

  if (long) writeIdentityMap(mem);

  const entry = long ? kernelAddr + 0x200 : kernelAddr;
  const regs: Partial<Regs> = {
    rip: BigInt(entry), rsi: BigInt(ZERO_PAGE), rsp: BigInt(BOOT_STACK_TOP), rflags: 2n,
    rax: 0n, rbx: 0n, rcx: 0n, rdx: 0n, rdi: 0n, rbp: 0n,
  };
  const sregs = (base: Sregs): Sregs => bootSregs(base, long);

  return {
    regs, sregs, header: hdr,
    summary: {
      protocol: `${hdr.version >> 8}.${(hdr.version & 0xff).toString().padStart(2, "0")}`,
      mode: long ? "64-bit" : "32-bit",
      kernelVersion: hdr.kernelVersion,
      kernelAddr, kernelSize, kernelSpan, entry,
      zeroPage: ZERO_PAGE,
      cmdlineAddr: CMDLINE_ADDR, cmdlineLen: cmdBytes.length,
      initrdAddr, initrdSize: initrd && initrd.length > 0 ? initrd.length : undefined,
      rsdp: opts.rsdp,
      e820Entries: e820.length,
      pageTables: long ? PML4 : undefined,
      gdt: BOOT_GDT,
    },
  };
}

/** PML4[0] -> PDPT, PDPT[0..3] -> four PDs of 512 2 MiB pages: identity map of 0-4 GiB. */
function writeIdentityMap(mem: GuestMemory): void {
  const P = 1n, RW = 2n, PS = 0x80n;
  const pt = new Uint8Array(6 * PAGE);
  const dv = new DataView(pt.buffer);
  dv.setBigUint64(0, BigInt(PDPT) | P | RW, true);
  for (let i = 0; i < 4; i++) dv.setBigUint64(PAGE + 8 * i, BigInt(PD + i * PAGE) | P | RW, true);
  for (let i = 0; i < 4 * 512; i++) dv.setBigUint64(2 * PAGE + 8 * i, (BigInt(i) << 21n) | P | RW | PS, true);
  mem.writeBytes(PML4, pt);
}

function flatSeg(selector: number, code: boolean, long: boolean): Segment {
  return {
    base: 0n, limit: 0xffffffff, selector, type: code ? 0xb : 0x3, present: 1, dpl: 0,
    db: code && long ? 0 : 1, s: 1, l: code && long ? 1 : 0, g: 1, avl: 0, unusable: 0,
  };
}

const CR0_PE = 1n, CR0_ET = 0x10n, CR0_NE = 0x20n, CR0_PG = 0x8000_0000n;
const CR4_PAE = 0x20n;
const EFER_LME = 0x100n, EFER_LMA = 0x400n;

function bootSregs(base: Sregs, long: boolean): Sregs {
  const data = flatSeg(BOOT_DS, false, long);
  const cr0Keep = base.cr0 & ~(0x6000_0000n); // clear CD/NW left over from reset
  return {
    ...base,
    cs: flatSeg(BOOT_CS, true, long),
    ds: { ...data }, es: { ...data }, fs: { ...data }, gs: { ...data }, ss: { ...data },
    tr: { ...base.tr, type: 0xb, present: 1, s: 0, unusable: 0 },
    gdt: { base: BigInt(BOOT_GDT), limit: 31 },
    idt: { base: 0n, limit: 0 },
    cr0: cr0Keep | CR0_PE | CR0_ET | CR0_NE | (long ? CR0_PG : 0n),
    cr3: long ? BigInt(PML4) : 0n,
    cr4: long ? (base.cr4 | CR4_PAE) : base.cr4 & ~CR4_PAE,
    efer: long ? (base.efer | EFER_LME | EFER_LMA) : base.efer & ~(EFER_LME | EFER_LMA),
  };
}

/** One-line-per-item description for logs. */
export function formatLinuxBoot(s: LinuxBootSummary): string {
  const mib = (n: number) => (n / MiB).toFixed(1) + " MiB";
  const lines = [
    `linux: boot protocol ${s.protocol}, ${s.mode} entry at ${hex(s.entry)}${s.kernelVersion ? `, ${s.kernelVersion}` : ""}`,
    `linux: kernel ${hex(s.kernelAddr)} (${mib(s.kernelSize)}, init_size span ${mib(s.kernelSpan)})`,
    s.initrdAddr !== undefined ? `linux: initrd ${hex(s.initrdAddr)} (${mib(s.initrdSize ?? 0)})` : "linux: no initrd",
    `linux: zero page ${hex(s.zeroPage)}, cmdline ${hex(s.cmdlineAddr)} (${s.cmdlineLen} bytes), e820 ${s.e820Entries} entries` +
      (s.rsdp !== undefined ? `, RSDP ${hex(s.rsdp)}` : ""),
  ];
  return lines.join("\n");
}
