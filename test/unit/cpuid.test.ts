/**
 * Guest CPUID construction (src/vcpu/cpuid.ts) and initial MSRs (src/vcpu/msr.ts), from synthetic
 * Intel and AMD "supported" tables.
 */
import { describe, expect, test } from "bun:test";
import { apicId, bitsFor, buildCpuid, cpuVendor, KVM_SIGNATURE, type Topology } from "../../src/vcpu/cpuid.ts";
import { initialMsrs, MSR } from "../../src/vcpu/msr.ts";
import { CPUID_FLAG_INDEXED, type CpuidEntry } from "../../src/vmm/layout.ts";

const e = (fn: number, index: number, eax: number, ebx: number, ecx: number, edx: number, flags = 0): CpuidEntry =>
  ({ function: fn, index, flags, eax: eax >>> 0, ebx: ebx >>> 0, ecx: ecx >>> 0, edx: edx >>> 0 });
const I = CPUID_FLAG_INDEXED;

const X2APIC = 1 << 21, TSC_DEADLINE = 1 << 24, HV = 1 << 31, HTT = 1 << 28, CMP_LEGACY = 1 << 1;

/** An Intel host as KVM might report it (host topology values deliberately "wrong" for the guest). */
function intelTable(maxLeaf = 0x1f): CpuidEntry[] {
  const t = [
    e(0x0, 0, maxLeaf, 0x756e6547, 0x6c65746e, 0x49656e69),
    e(0x1, 0, 0x000906ea, 0x0d100800, 0x7ffa3223 | X2APIC | TSC_DEADLINE, 0x0f8bfbff | HTT),
    // leaf 4: L1d, L1i (level 1), L2 (level 2), L3 (level 3), null — host says 8 cores, 16 threads
    e(0x4, 0, 0x1c004121, 0x01c0003f, 0x3f, 0, I),
    e(0x4, 1, 0x1c004122, 0x01c0003f, 0x3f, 0, I),
    e(0x4, 2, 0x1c004143, 0x00c0003f, 0x3ff, 0, I),
    e(0x4, 3, 0x1c03c163, 0x03c0003f, 0x3fff, 6, I),
    e(0x4, 4, 0, 0, 0, 0, I),
    e(0x7, 0, 0, 0x029c6fbf, 0, 0, I),
    e(0xb, 0, 1, 2, 0x100, 0, I),
    e(0xb, 1, 4, 16, 0x201, 0, I),
    e(0xd, 0, 0x7, 0x340, 0x340, 0, I),
    e(0x40000000, 0, 0x40000001, 0x4b4d564b, 0x564b4d56, 0x4d),
    e(0x40000001, 0, 0x01007afb, 0, 0, 0),
    e(0x80000000, 0, 0x80000008, 0, 0, 0),
    e(0x80000001, 0, 0, 0, 0x121, 0x2c100800),
    e(0x80000008, 0, 0x3027, 0, 0, 0),
  ];
  if (maxLeaf >= 0x1f) t.push(e(0x1f, 0, 1, 2, 0x100, 0, I), e(0x1f, 1, 4, 16, 0x201, 0, I));
  return t;
}

/** An AMD host (Zen-like). */
function amdTable(): CpuidEntry[] {
  return [
    e(0x0, 0, 0x10, 0x68747541, 0x444d4163, 0x69746e65),
    e(0x1, 0, 0x00a20f10, 0x00100800, 0x7ed8320b | X2APIC | TSC_DEADLINE, 0x178bfbff),
    e(0x7, 0, 0, 0x219c97a9, 0, 0, I),
    e(0xd, 0, 0x7, 0x340, 0x340, 0, I),
    e(0x40000001, 0, 0x01007afb, 0, 0, 0),
    e(0x80000000, 0, 0x80000021, 0x68747541, 0x444d4163, 0x69746e65),
    e(0x80000001, 0, 0x00a20f10, 0x20000000, 0x75c237ff, 0x2fd3fbff),
    e(0x80000008, 0, 0x3030, 0x111ef657, 0x0001700f, 0),
    e(0x8000001d, 0, 0x00004121, 0x01c0003f, 0x3f, 0, I),
    e(0x8000001d, 1, 0x00004122, 0x01c0003f, 0x3f, 0, I),
    e(0x8000001d, 2, 0x00004143, 0x01c0003f, 0x3ff, 2, I),
    e(0x8000001d, 3, 0x0001c163, 0x03c0003f, 0x7fff, 1, I),
    e(0x8000001d, 4, 0, 0, 0, 0, I),
    e(0x8000001e, 0, 0x0c, 0x0106, 0x0300, 0),
  ];
}

const get = (t: CpuidEntry[], fn: number, index = 0) => {
  const r = t.filter((x) => x.function === fn && x.index === index);
  expect(r.length).toBe(1);
  return r[0]!;
};
const all = (t: CpuidEntry[], fn: number) => t.filter((x) => x.function === fn);
const field = (v: number, shift: number, width: number) => Math.floor(v / 2 ** shift) % 2 ** width;

const TOPOS: [string, Topology][] = [
  ["1x1x1", { sockets: 1, cores: 1, threads: 1 }],
  ["1x2x1", { sockets: 1, cores: 2, threads: 1 }],
  ["2x2x2", { sockets: 2, cores: 2, threads: 2 }],
  ["1x3x1", { sockets: 1, cores: 3, threads: 1 }],
];
const ncpu = (t: Topology) => t.sockets * t.cores * t.threads;

describe("apicId", () => {
  test("bitsFor is ceil(log2)", () => {
    expect([1, 2, 3, 4, 5, 8, 9, 16, 17].map(bitsFor)).toEqual([0, 1, 2, 2, 3, 3, 4, 4, 5]);
  });

  test("power-of-two topologies: id == vCPU index", () => {
    for (const t of [{ sockets: 1, cores: 1, threads: 1 }, { sockets: 1, cores: 2, threads: 1 }, { sockets: 2, cores: 2, threads: 2 }, { sockets: 4, cores: 8, threads: 2 }]) {
      for (let i = 0; i < ncpu(t); i++) expect(apicId(i, t)).toBe(i);
    }
  });

  test("non-power-of-two topologies leave gaps per field", () => {
    expect([0, 1, 2].map((i) => apicId(i, { sockets: 1, cores: 3, threads: 1 }))).toEqual([0, 1, 2]);
    expect([0, 1, 2, 3, 4, 5].map((i) => apicId(i, { sockets: 2, cores: 3, threads: 1 }))).toEqual([0, 1, 2, 4, 5, 6]);
    expect([0, 1, 2, 3, 4, 5].map((i) => apicId(i, { sockets: 1, cores: 2, threads: 3 }))).toEqual([0, 1, 2, 4, 5, 6]);
    expect([0, 1, 2, 3, 4, 5].map((i) => apicId(i, { sockets: 3, cores: 1, threads: 2 }))).toEqual([0, 1, 2, 3, 4, 5]);
  });

  test("bad topology is refused", () => {
    expect(() => apicId(0, { sockets: 1, cores: 0, threads: 1 })).toThrow();
  });
});

describe("vendor", () => {
  test("detects Intel and AMD", () => {
    expect(cpuVendor(intelTable())).toBe("intel");
    expect(cpuVendor(amdTable())).toBe("amd");
    expect(cpuVendor([])).toBe("other");
  });
});

describe.each(TOPOS)("topology %s", (_name, topo) => {
  const logical = topo.cores * topo.threads;
  const smt = bitsFor(topo.threads), pkgShift = bitsFor(topo.threads) + bitsFor(topo.cores);

  test("Intel leaf 1: APIC id, logical count, HTT, hypervisor bit, features kept", () => {
    const sup = intelTable();
    for (let i = 0; i < ncpu(topo); i++) {
      const l1 = get(buildCpuid(sup, i, topo), 1);
      expect(field(l1.ebx, 24, 8)).toBe(apicId(i, topo));
      expect(field(l1.ebx, 16, 8)).toBe(logical > 1 ? 2 ** pkgShift : 1);
      expect(field(l1.ebx, 0, 16)).toBe(0x0800); // brand index, CLFLUSH size untouched
      expect(!!(l1.edx & HTT)).toBe(logical > 1);
      expect(l1.ecx & HV).toBe(HV);
      expect(l1.ecx & X2APIC).toBe(X2APIC);
      expect(l1.ecx & TSC_DEADLINE).toBe(TSC_DEADLINE);
      expect(l1.eax).toBe(0x000906ea);
    }
  });

  test("Intel leaf 4: core ids and cache sharing consistent with the APIC id layout", () => {
    const t = buildCpuid(intelTable(), 0, topo);
    const l4 = all(t, 4);
    expect(l4.length).toBe(5);
    for (const c of l4.slice(0, 4)) {
      expect(field(c.eax, 26, 6) + 1).toBe(2 ** bitsFor(topo.cores));
      const level = field(c.eax, 5, 3);
      expect(field(c.eax, 14, 12) + 1).toBe(level <= 2 ? 2 ** smt : 2 ** pkgShift);
      expect(field(c.eax, 0, 14)).toBe(field(intelTable().find((x) => x.function === 4 && x.index === c.index)!.eax, 0, 14));
      expect(c.flags).toBe(I);
    }
    expect(l4[4]!.eax).toBe(0);
  });

  test("Intel leaf 0xB and 0x1F: SMT then core level, x2APIC id", () => {
    for (let i = 0; i < ncpu(topo); i++) {
      const t = buildCpuid(intelTable(), i, topo);
      for (const fn of [0xb, 0x1f]) {
        const sub = all(t, fn);
        expect(sub.map((x) => x.index)).toEqual([0, 1, 2]);
        const [s0, s1, s2] = sub as [CpuidEntry, CpuidEntry, CpuidEntry];
        expect([s0.eax & 0x1f, s0.ebx & 0xffff, s0.ecx]).toEqual([smt, topo.threads, 0x100]);
        expect([s1.eax & 0x1f, s1.ebx & 0xffff, s1.ecx]).toEqual([pkgShift, logical, 0x201]);
        expect([s2.eax, s2.ebx, s2.ecx]).toEqual([0, 0, 0x002]);
        for (const s of sub) { expect(s.edx).toBe(apicId(i, topo)); expect(s.flags).toBe(I); }
        // the id's package field is the socket number
        expect(s0.edx >>> s1.eax).toBe(Math.floor(i / logical));
      }
    }
  });

  test("x2APIC ids are unique across the VM", () => {
    const ids = Array.from({ length: ncpu(topo) }, (_, i) => get(buildCpuid(intelTable(), i, topo), 0xb, 0).edx);
    expect(new Set(ids).size).toBe(ncpu(topo));
  });

  test("Intel: AMD-only fields left alone", () => {
    const t = buildCpuid(intelTable(), 0, topo);
    expect(get(t, 0x80000001).ecx).toBe(0x121);
    expect(get(t, 0x80000008).ecx).toBe(0);
  });

  test("AMD: CmpLegacy, 0x80000008 NC / ApicIdSize, 0x8000001D sharing, 0x8000001E ids", () => {
    for (let i = 0; i < ncpu(topo); i++) {
      const t = buildCpuid(amdTable(), i, topo);
      const ext1 = get(t, 0x80000001);
      expect(!!(ext1.ecx & CMP_LEGACY)).toBe(logical > 1);
      expect(ext1.ecx & ~CMP_LEGACY).toBe(0x75c237ff & ~CMP_LEGACY);
      const l8 = get(t, 0x80000008);
      expect(field(l8.ecx, 0, 8)).toBe(logical - 1);
      expect(field(l8.ecx, 12, 4)).toBe(pkgShift);
      expect(field(l8.ecx, 16, 2)).toBe(1); // PerfTscSize etc. untouched
      expect(l8.eax).toBe(0x3030);
      for (const c of all(t, 0x8000001d).filter((x) => (x.eax & 0x1f) !== 0)) {
        const level = field(c.eax, 5, 3);
        expect(field(c.eax, 14, 12) + 1).toBe(level <= 2 ? 2 ** smt : 2 ** pkgShift);
      }
      const x1e = get(t, 0x8000001e);
      expect(x1e.eax).toBe(apicId(i, topo));
      expect(field(x1e.ebx, 8, 8)).toBe(topo.threads - 1);
      expect(field(x1e.ebx, 0, 8)).toBe(Math.floor(i / topo.threads) % topo.cores);
      expect(field(x1e.ecx, 0, 8)).toBe(Math.floor(i / logical));
      expect(field(x1e.ecx, 8, 3)).toBe(0);
      const l1 = get(t, 1);
      expect(field(l1.ebx, 24, 8)).toBe(apicId(i, topo));
      expect(!!(l1.edx & HTT)).toBe(logical > 1);
      expect(l1.ecx & HV).toBe(HV);
      // max basic leaf 0x10 ≥ 0xB: topology leaf generated; no 0x1F
      expect(all(t, 0xb).length).toBe(3);
      expect(all(t, 0x1f).length).toBe(0);
    }
  });
});

describe("hypervisor leaves", () => {
  test("KVM signature, max leaf 0x40000001, features passed through (Intel)", () => {
    const t = buildCpuid(intelTable(), 0, { sockets: 1, cores: 1, threads: 1 });
    const base = get(t, 0x40000000);
    expect([base.ebx, base.ecx, base.edx]).toEqual([...KVM_SIGNATURE]);
    const sig = new Uint8Array(new Uint32Array([base.ebx, base.ecx, base.edx]).buffer);
    expect(new TextDecoder().decode(sig)).toBe("KVMKVMKVM\0\0\0");
    expect(base.eax).toBe(0x40000001);
    expect(get(t, 0x40000001).eax).toBe(0x01007afb);
  });

  test("added when the backend lists only 0x40000001 (AMD table)", () => {
    const t = buildCpuid(amdTable(), 0, { sockets: 1, cores: 1, threads: 1 });
    expect(get(t, 0x40000000).eax).toBe(0x40000001);
    expect(get(t, 0x40000001).eax).toBe(0x01007afb);
  });

  test("without 0x40000001 the max hypervisor leaf is 0x40000000", () => {
    const sup = intelTable().filter((x) => x.function !== 0x40000001 && x.function !== 0x40000000);
    const t = buildCpuid(sup, 0, { sockets: 1, cores: 1, threads: 1 });
    expect(get(t, 0x40000000).eax).toBe(0x40000000);
    expect(all(t, 0x40000001).length).toBe(0);
  });
});

describe("table shape", () => {
  test("0x1F only when the backend has it; no 0xB below max leaf 0xB", () => {
    const topo = { sockets: 1, cores: 2, threads: 1 };
    expect(all(buildCpuid(intelTable(0xd), 0, topo), 0x1f).length).toBe(0);
    expect(all(buildCpuid(intelTable(0xd), 0, topo), 0xb).length).toBe(3);
    const old = intelTable(0xa).filter((x) => x.function !== 0xb);
    expect(all(buildCpuid(old, 0, topo), 0xb).length).toBe(0);
  });

  test("input not mutated; untouched leaves copied verbatim; no duplicates", () => {
    const sup = intelTable();
    const before = JSON.stringify(sup);
    const t = buildCpuid(sup, 3, { sockets: 2, cores: 2, threads: 2 });
    expect(JSON.stringify(sup)).toBe(before);
    expect(get(t, 7)).toEqual(get(sup, 7));
    expect(get(t, 0xd)).toEqual(get(sup, 0xd));
    expect(get(t, 0)).toEqual(get(sup, 0));
    const keys = t.map((x) => `${x.function}:${x.index}`);
    expect(new Set(keys).size).toBe(keys.length);
    for (const x of t) for (const r of [x.eax, x.ebx, x.ecx, x.edx]) expect(r >>> 0).toBe(r);
  });

  test("large vCPU index: leaf 1 carries the low 8 bits, 0xB the full x2APIC id", () => {
    const topo = { sockets: 2, cores: 128, threads: 2 };
    const t = buildCpuid(intelTable(), 300, topo);
    expect(get(t, 0xb, 0).edx).toBe(300);
    expect(field(get(t, 1).ebx, 24, 8)).toBe(300 & 0xff);
    expect(field(get(t, 1).ebx, 16, 8)).toBe(255);
  });
});

describe("initialMsrs", () => {
  test("MISC_ENABLE fast strings, MTRR default WB with fixed ranges", () => {
    const m = new Map(initialMsrs(0));
    expect(m.get(MSR.IA32_MISC_ENABLE)! & 1n).toBe(1n);
    expect(m.get(MSR.IA32_MTRR_DEF_TYPE)).toBe(0xc06n);
    expect(m.get(0x250)).toBe(0x0606060606060606n);
    expect(m.get(0x258)).toBe(0x0606060606060606n);
    expect(m.get(0x259)).toBe(0n);
    for (let i = 0x268; i <= 0x26f; i++) expect(m.get(i)).toBe(0x0606060606060606n);
    expect(m.has(0x1b)).toBe(false); // APIC base is the kernel's
    const list = initialMsrs(1);
    expect(list[list.length - 1]![0]).toBe(0x2ff); // enable last, after the ranges
    expect(list).toEqual(initialMsrs(0));
  });
});
