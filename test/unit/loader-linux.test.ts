import { describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { fetchDebianKernel } from "../../src/guest/index.ts";
import {
  loadLinux, parseBzImage, formatLinuxBoot, LinuxLoaderError, ZERO_PAGE, CMDLINE_ADDR, PML4, BOOT_GDT,
} from "../../src/loader/linux.ts";
import { buildE820, E820_RAM, type E820Entry } from "../../src/loader/e820.ts";
import { GuestMemory, region, GiB, MiB } from "../../src/mem/guest-memory.ts";
import type { Segment, Sregs } from "../../src/vmm/layout.ts";

interface Fixture {
  version?: number; setupSects?: number; payload?: Uint8Array; initSize?: number; prefAddress?: bigint;
  xloadflags?: number; relocatable?: number; kernelAlignment?: number; cmdlineSize?: number;
  initrdAddrMax?: number; loadflags?: number; syssize?: number; magic?: number; bootFlag?: number;
  jump?: number; kernelVersion?: string;
}

/** A synthetic bzImage: boot sector + setup sectors holding a valid setup header, then a payload. */
function bzImage(f: Fixture = {}): Uint8Array {
  const sects = f.setupSects ?? 4;
  const setup = ((sects || 4) + 1) * 512;
  const payload = f.payload ?? Uint8Array.from({ length: 64 * 1024 }, (_, i) => (i * 7 + 3) & 0xff);
  const img = new Uint8Array(setup + payload.length);
  const dv = new DataView(img.buffer);
  img[0x1f1] = sects;
  dv.setUint32(0x1f4, f.syssize ?? Math.ceil(payload.length / 16), true);
  dv.setUint16(0x1fa, 0xffff, true);
  dv.setUint16(0x1fe, f.bootFlag ?? 0xaa55, true);
  img[0x200] = 0xeb;
  img[0x201] = f.jump ?? 0x6a; // header ends at 0x26C (protocol 2.15)
  dv.setUint32(0x202, f.magic ?? 0x53726448, true);
  dv.setUint16(0x206, f.version ?? 0x20f, true);
  const kv = f.kernelVersion ?? "6.1.0-test (tsbhyve@fixture) #1 SMP";
  dv.setUint16(0x20e, 0x400 - 0x200, true);
  for (let i = 0; i < kv.length; i++) img[0x400 + i] = kv.charCodeAt(i);
  img[0x211] = f.loadflags ?? 0x01;
  dv.setUint32(0x214, 0x100000, true);
  dv.setUint32(0x22c, f.initrdAddrMax ?? 0x7fffffff, true);
  dv.setUint32(0x230, f.kernelAlignment ?? 0x200000, true);
  img[0x234] = f.relocatable ?? 1;
  img[0x235] = 21;
  dv.setUint16(0x236, f.xloadflags ?? 0x7f, true);
  dv.setUint32(0x238, f.cmdlineSize ?? 2047, true);
  dv.setBigUint64(0x258, f.prefAddress ?? 0x1000000n, true);
  dv.setUint32(0x260, f.initSize ?? 8 * MiB, true);
  img.set(payload, setup);
  return img;
}

function resetSregs(): Sregs {
  const seg = (type: number, s = 1): Segment => ({ base: 0n, limit: 0xffff, selector: 0, type, present: 1, dpl: 0, db: 0, s, l: 0, g: 0, avl: 0, unusable: 0 });
  return {
    cs: { ...seg(0xb), selector: 0xf000, base: 0xffff0000n }, ds: seg(3), es: seg(3), fs: seg(3), gs: seg(3), ss: seg(3),
    tr: seg(0xb, 0), ldt: seg(2, 0), gdt: { base: 0n, limit: 0xffff }, idt: { base: 0n, limit: 0xffff },
    cr0: 0x60000010n, cr2: 0n, cr3: 0n, cr4: 0n, cr8: 0n, efer: 0n, apicBase: 0xfee00900n,
  };
}

const mem256 = () => GuestMemory.fake(256 * MiB);
const e256 = buildE820(256 * MiB);
const LOW_END_256 = 256 * MiB;

/** Walk the 4-level page tables like the MMU (2 MiB or 1 GiB leaves). */
function translate(m: GuestMemory, cr3: number, va: number): number | undefined {
  const v = BigInt(va);
  const idx = (shift: bigint) => Number((v >> shift) & 0x1ffn);
  const pml4e = m.read64(cr3 + 8 * idx(39n));
  if (!(pml4e & 1n)) return undefined;
  const pdpte = m.read64(Number(pml4e & 0xffffffffff000n) + 8 * idx(30n));
  if (!(pdpte & 1n)) return undefined;
  if (pdpte & 0x80n) return Number((pdpte & 0xfffffc0000000n) | (v & 0x3fffffffn));
  const pde = m.read64(Number(pdpte & 0xffffffffff000n) + 8 * idx(21n));
  if (!(pde & 1n) || !(pde & 0x80n)) return undefined;
  return Number((pde & 0xfffffffe00000n) | (v & 0x1fffffn));
}

describe("bzImage parsing", () => {
  test("reads the header fields", () => {
    const h = parseBzImage(bzImage());
    expect(h.version).toBe(0x20f);
    expect(h.setupBytes).toBe(5 * 512);
    expect(h.relocatable).toBe(true);
    expect(h.kernelAlignment).toBe(0x200000);
    expect(h.prefAddress).toBe(0x1000000);
    expect(h.initSize).toBe(8 * MiB);
    expect(h.cmdlineSize).toBe(2047);
    expect(h.headerEnd).toBe(0x26c);
    expect(h.kernelVersion).toBe("6.1.0-test (tsbhyve@fixture) #1 SMP");
  });

  test("setup_sects 0 means 4", () => {
    const img = bzImage({ setupSects: 0 });
    expect(parseBzImage(img).setupBytes).toBe(5 * 512);
  });

  test("rejects what it cannot boot, with clear messages", () => {
    const bad = (f: Fixture, re: RegExp) => {
      const img = bzImage(f);
      expect(() => parseBzImage(img)).toThrow(re);
      expect(() => parseBzImage(img)).toThrow(LinuxLoaderError);
    };
    bad({ magic: 0x12345678 }, /HdrS/);
    bad({ bootFlag: 0 }, /0xAA55/);
    bad({ version: 0x205 }, /2\.05.*2\.06 or newer/);
    bad({ loadflags: 0 }, /zImage/);
    bad({ syssize: 1 << 20 }, /truncated/);
    bad({ relocatable: 1, kernelAlignment: 3 }, /kernel_alignment/);
    bad({ jump: 0x10 }, /setup header ends/);
    expect(() => parseBzImage(new Uint8Array(100))).toThrow(/truncated/);
    expect(() => parseBzImage(Uint8Array.of(0x7f, 0x45, 0x4c, 0x46, 2, 1, 1))).toThrow(/ELF/);
    expect(() => parseBzImage(Uint8Array.of(0x1f, 0x8b, 8, 0))).toThrow(/gzip/);
    expect(() => parseBzImage(bzImage().subarray(0, 0x300))).toThrow(/truncated/);
    expect(() => parseBzImage(bzImage().subarray(0, 5 * 512))).toThrow(/no protected-mode part/);
  });
});

describe("loadLinux (64-bit boot protocol)", () => {
  const img = bzImage();
  const initrd = Uint8Array.from({ length: 3 * MiB + 123 }, (_, i) => (i * 13) & 0xff);

  test("places kernel, initrd, cmdline and zero page", () => {
    const m = mem256();
    const boot = loadLinux(m, img, initrd, "console=ttyS0 root=/dev/vda", { e820: e256, rsdp: 0xf2400 });
    const s = boot.summary;
    expect(s.mode).toBe("64-bit");
    expect(s.protocol).toBe("2.15");
    expect(s.kernelAddr).toBe(0x1000000);
    expect(m.readBytes(0x1000000, img.length - 2560)).toEqual(img.subarray(2560));
    // initrd: page aligned, as high as possible under lowmem end, above the kernel's init_size
    expect(s.initrdAddr! % 4096).toBe(0);
    expect(s.initrdAddr!).toBe(Math.floor((LOW_END_256 - initrd.length) / 4096) * 4096);
    expect(s.initrdAddr!).toBeGreaterThanOrEqual(0x1000000 + 8 * MiB);
    expect(m.readBytes(s.initrdAddr!, initrd.length)).toEqual(initrd);
    // command line
    expect(new TextDecoder().decode(m.readBytes(CMDLINE_ADDR, 27))).toBe("console=ttyS0 root=/dev/vda");
    expect(m.read8(CMDLINE_ADDR + 27)).toBe(0);
    // zero page
    const zp = ZERO_PAGE;
    expect(m.read32(zp + 0x202)).toBe(0x53726448);
    expect(m.read16(zp + 0x1fe)).toBe(0xaa55);
    expect(m.read16(zp + 0x206)).toBe(0x20f);
    expect(m.read8(zp + 0x210)).toBe(0xff);
    expect(m.read8(zp + 0x211) & 1).toBe(1);
    expect(m.read32(zp + 0x228)).toBe(CMDLINE_ADDR);
    expect(m.read32(zp + 0x218)).toBe(s.initrdAddr!);
    expect(m.read32(zp + 0x21c)).toBe(initrd.length);
    expect(m.read32(zp + 0x0c0)).toBe(0);
    expect(m.read32(zp + 0x0c4)).toBe(0);
    expect(m.read64(zp + 0x070)).toBe(0xf2400n);
    expect(m.read8(zp + 0x1ef)).toBe(0); // sentinel
    expect(m.read8(zp + 0x1e8)).toBe(e256.length);
    e256.forEach((e, i) => {
      const o = zp + 0x2d0 + 20 * i;
      expect([Number(m.read64(o)), Number(m.read64(o + 8)), m.read32(o + 16)]).toEqual([e.addr, e.size, e.type]);
    });
    expect(m.read32(zp + 0x2d0 + 20 * e256.length + 16)).toBe(0);
    expect(formatLinuxBoot(s)).toContain("initrd 0x");
  });

  test("64-bit CPU state per boot.rst", () => {
    const m = mem256();
    const boot = loadLinux(m, img, undefined, "", { e820: e256 });
    expect(boot.regs.rip).toBe(0x1000200n);
    expect(boot.regs.rsi).toBe(BigInt(ZERO_PAGE));
    expect(boot.regs.rflags).toBe(2n);
    expect(boot.summary.initrdAddr).toBeUndefined();
    expect(m.read32(ZERO_PAGE + 0x218)).toBe(0);
    expect(m.read64(ZERO_PAGE + 0x070)).toBe(0n);
    const base = resetSregs();
    const sr = boot.sregs(base);
    expect(base.cr0).toBe(0x60000010n); // not mutated
    expect(sr.cr0 & 1n).toBe(1n);
    expect(sr.cr0 & 0x80000000n).toBe(0x80000000n);
    expect(sr.cr0 & 0x60000000n).toBe(0n);
    expect(sr.cr4 & 0x20n).toBe(0x20n);
    expect(sr.efer & 0x500n).toBe(0x500n);
    expect(sr.cr3).toBe(BigInt(PML4));
    expect(sr.cs).toMatchObject({ selector: 0x10, l: 1, db: 0, type: 0xb, s: 1, present: 1, g: 1, base: 0n, limit: 0xffffffff });
    for (const r of ["ds", "es", "ss", "fs", "gs"] as const) expect(sr[r]).toMatchObject({ selector: 0x18, type: 3, db: 1, l: 0, present: 1 });
    expect(sr.tr).toMatchObject({ type: 0xb, present: 1, s: 0 });
    expect(sr.gdt).toEqual({ base: BigInt(BOOT_GDT), limit: 31 });
    expect(sr.apicBase).toBe(base.apicBase);
    // GDT descriptors agree with the cached segment state
    const desc = (sel: number) => m.read64(sr.gdt.base === BigInt(BOOT_GDT) ? BOOT_GDT + sel : 0);
    const d = desc(0x10);
    expect(Number((d >> 40n) & 0xfn)).toBe(sr.cs.type);
    expect(Number((d >> 53n) & 1n)).toBe(sr.cs.l);
    expect(Number((d >> 54n) & 1n)).toBe(sr.cs.db);
    expect(Number((d >> 47n) & 1n)).toBe(1);
    const dd = desc(0x18);
    expect(Number((dd >> 40n) & 0xfn)).toBe(3);
    expect(Number((dd >> 54n) & 1n)).toBe(1);
    expect(Number((dd >> 55n) & 1n)).toBe(1);
  });

  test("identity map covers 0-4 GiB", () => {
    const m = mem256();
    const boot = loadLinux(m, img, undefined, "", { e820: e256 });
    const cr3 = Number(boot.sregs(resetSregs()).cr3);
    for (const va of [0, ZERO_PAGE, 0x1000200, 0x1000000 + 8 * MiB - 1, 255 * MiB, 0xc0000000, 0xfee00000, 4 * GiB - 1]) {
      expect(translate(m, cr3, va)).toBe(va);
    }
    expect(translate(m, cr3, 4 * GiB)).toBeUndefined();
  });

  test("initrd_addr_max is respected", () => {
    const m = mem256();
    const boot = loadLinux(m, bzImage({ initrdAddrMax: 0x3ffffff }), initrd, "", { e820: e256 });
    expect(boot.summary.initrdAddr! + initrd.length).toBeLessThanOrEqual(0x4000000);
    expect(boot.summary.initrdAddr!).toBe(Math.floor((0x4000000 - initrd.length) / 4096) * 4096);
  });

  test("initrd goes above 4 GiB only when the kernel allows it", () => {
    // 64 MiB low + 64 MiB high, built by hand to keep the test small.
    const mk = () => new GuestMemory([region(0, new Uint8Array(64 * MiB)), region(4 * GiB, new Uint8Array(64 * MiB))]);
    const e820: E820Entry[] = [
      { addr: 0, size: 0x9fc00, type: E820_RAM }, { addr: 0x9fc00, size: 0x60400, type: 2 },
      { addr: MiB, size: 63 * MiB, type: E820_RAM }, { addr: 4 * GiB, size: 64 * MiB, type: E820_RAM },
    ];
    const big = new Uint8Array(48 * MiB).fill(0x5a);
    const m = mk();
    const boot = loadLinux(m, img, big, "", { e820 });
    const a = boot.summary.initrdAddr!;
    expect(a).toBe(4 * GiB + 16 * MiB);
    expect(m.read32(ZERO_PAGE + 0x218)).toBe(16 * MiB);
    expect(m.read32(ZERO_PAGE + 0x0c0)).toBe(1);
    expect(m.read32(ZERO_PAGE + 0x21c)).toBe(48 * MiB);
    expect(m.read8(a)).toBe(0x5a);
    expect(() => loadLinux(mk(), bzImage({ xloadflags: 0x1 }), big, "", { e820 })).toThrow(/initrd .* does not fit/);
  });

  test("kernel or initrd that do not fit are clean errors", () => {
    const m = GuestMemory.fake(32 * MiB);
    const e = buildE820(32 * MiB);
    expect(() => loadLinux(m, bzImage({ initSize: 64 * MiB }), undefined, "", { e820: e })).toThrow(/kernel needs .* give the VM more memory/);
    expect(() => loadLinux(m, img, new Uint8Array(24 * MiB), "", { e820: e })).toThrow(LinuxLoaderError);
    // e820 claiming RAM that guest memory does not have
    const lie = buildE820(512 * MiB);
    expect(() => loadLinux(m, img, undefined, "", { e820: lie })).not.toThrow(); // kernel fits in the real 32 MiB
    expect(() => loadLinux(m, img, new Uint8Array(30 * MiB), "", { e820: lie })).toThrow(LinuxLoaderError);
  });

  test("relocatable kernel falls back below pref_address; fixed kernel does not", () => {
    const e = buildE820(16 * MiB);
    const m = GuestMemory.fake(16 * MiB);
    const boot = loadLinux(m, bzImage({ initSize: 4 * MiB }), undefined, "", { e820: e });
    expect(boot.summary.kernelAddr).toBe(2 * MiB);
    expect(boot.regs.rip).toBe(BigInt(2 * MiB + 0x200));
    expect(m.read32(ZERO_PAGE + 0x214)).toBe(2 * MiB);
    expect(() => loadLinux(m, bzImage({ initSize: 4 * MiB, relocatable: 0 }), undefined, "", { e820: e })).toThrow(/not relocatable/);
  });

  test("command line limits", () => {
    const m = mem256();
    expect(() => loadLinux(m, bzImage({ cmdlineSize: 10 }), undefined, "x".repeat(11), { e820: e256 })).toThrow(/at most 10/);
    expect(() => loadLinux(m, img, undefined, "a\0b", { e820: e256 })).toThrow(/NUL/);
    const boot = loadLinux(m, bzImage({ cmdlineSize: 10 }), undefined, "x".repeat(10), { e820: e256 });
    expect(boot.summary.cmdlineLen).toBe(10);
  });

  test("kernel without XLF_KERNEL_64 uses the 32-bit protocol", () => {
    const m = mem256();
    const boot = loadLinux(m, bzImage({ xloadflags: 0, version: 0x20a }), undefined, "", { e820: e256 });
    expect(boot.summary.mode).toBe("32-bit");
    expect(boot.regs.rip).toBe(0x1000000n);
    const sr = boot.sregs(resetSregs());
    expect(sr.cr0 & 0x80000001n).toBe(1n);
    expect(sr.efer & 0x500n).toBe(0n);
    expect(sr.cs).toMatchObject({ selector: 0x10, l: 0, db: 1 });
  });

  test("2.06 kernel (no pref_address/init_size) loads at 1 MiB", () => {
    const m = mem256();
    const boot = loadLinux(m, bzImage({ version: 0x206, xloadflags: 0, jump: 0x3a }), undefined, "", { e820: e256 });
    expect(boot.summary.kernelAddr).toBe(MiB);
  });
});

/** Small deterministic PRNG (xorshift32) so fuzz failures reproduce. */
function rng(seed: number) {
  let x = seed >>> 0 || 1;
  return () => { x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0; return x / 2 ** 32; };
}

describe("loader fuzz", () => {
  const m = mem256();
  const check = (img: Uint8Array, initrd?: Uint8Array) => {
    try {
      loadLinux(m, img, initrd, "console=ttyS0", { e820: e256 });
      return true;
    } catch (e) {
      if (!(e instanceof LinuxLoaderError)) throw new Error(`unexpected ${(e as Error)?.constructor?.name}: ${(e as Error)?.message}`);
      return false;
    }
  };

  test("random bytes only ever raise LinuxLoaderError", () => {
    const r = rng(0x7eb1);
    for (let i = 0; i < 500; i++) {
      const len = Math.floor(r() * 9000);
      const img = Uint8Array.from({ length: len }, () => Math.floor(r() * 256));
      if (r() < 0.5 && len > 0x210) { // make the magic checks pass half the time
        img[0x1fe] = 0x55; img[0x1ff] = 0xaa; img.set([0x48, 0x64, 0x72, 0x53], 0x202);
      }
      check(img);
    }
  });

  test("mutated valid headers only ever raise LinuxLoaderError", () => {
    const r = rng(0xbeef);
    const base = bzImage({ payload: new Uint8Array(8192) });
    let ok = 0;
    for (let i = 0; i < 1500; i++) {
      const img = base.slice();
      const n = 1 + Math.floor(r() * 6);
      for (let k = 0; k < n; k++) img[0x1f1 + Math.floor(r() * 0x80)] = Math.floor(r() * 256);
      const cut = r() < 0.2 ? Math.floor(r() * img.length) : img.length;
      if (check(img.subarray(0, cut), r() < 0.3 ? new Uint8Array(Math.floor(r() * 4 * MiB)) : undefined)) ok++;
    }
    expect(ok).toBeGreaterThan(0); // the fuzzer also reaches the writing paths
  });
});

describe("real kernel: Debian's stock bzImage (fetched with apt-get download, cached like the nested tests')", () => {
  test("Debian's bzImage parses and loads", async () => {
    const found = (await fetchDebianKernel()).vmlinuz;
    const img = new Uint8Array(readFileSync(found));
    const h = parseBzImage(img);
    expect(h.version).toBeGreaterThanOrEqual(0x20c);
    expect(h.xloadflags & 1).toBe(1);
    expect(h.relocatable).toBe(true);
    expect(h.kernelVersion).toMatch(/^\d+\.\d+/);
    const m = GuestMemory.fake(512 * MiB);
    const boot = loadLinux(m, img, new Uint8Array(16 * MiB), "console=ttyS0", { e820: buildE820(512 * MiB), rsdp: 0xf2400 });
    expect(boot.summary.mode).toBe("64-bit");
    expect(boot.regs.rip).toBe(BigInt(boot.summary.kernelAddr + 0x200));
    expect(boot.summary.initrdAddr!).toBeGreaterThanOrEqual(boot.summary.kernelAddr + h.initSize);
    expect(m.readBytes(boot.summary.kernelAddr, 4096)).toEqual(img.subarray(h.setupBytes, h.setupBytes + 4096));
    console.log(formatLinuxBoot(boot.summary));
  }, 300_000);
});
