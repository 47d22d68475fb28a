/**
 * The guest's CPUID table: the backend's supported entries (KVM_GET_SUPPORTED_CPUID or the vmm.ko
 * equivalent) with the topology, APIC ids and hypervisor leaves rewritten for one vCPU.
 *
 * References: Intel SDM vol. 2A "CPUID" (leaves 01H, 04H, 0BH, 1FH) and vol. 3A §10.12.8 / §9.9
 * ("Programming considerations for hardware multi-threading": APIC id sub-fields); AMD APM vol. 3
 * appendix E (Fn8000_0001, Fn8000_0008, Fn8000_001D, Fn8000_001E) and the Linux KVM ABI
 * (Documentation/virt/kvm/x86/cpuid.rst) for the 0x4000_00xx leaves.
 *
 * APIC ids. An APIC id is three bit fields, packed low to high: SMT (thread within core), core
 * within package, package; each field is ceil(log2(count)) bits wide. A vCPU index i is split as
 *   thread = i % threads,  core = (i / threads) % cores,  package = i / (threads * cores)
 * and the fields are packed into the id. For power-of-two thread and core counts the id equals i.
 * Otherwise ids are sparse — e.g. 1 socket × 3 cores × 1 thread gives 0, 1, 2 and a second socket
 * would start at 4; 1 socket × 2 cores × 3 threads gives 0, 1, 2, 4, 5, 6 — the way real hardware
 * numbers them. The MADT / MP table must use apicId() too.
 *
 * Counts of "addressable IDs" (leaf 1 EBX[23:16], leaf 4 EAX[31:26] and EAX[25:14]) are powers of two
 * covering those fields, as the SDM defines them, so every leaf agrees with the id layout; for
 * power-of-two topologies they equal the plain counts.
 *
 * Everything not listed here passes through unchanged: we advertise what the backend says it can
 * virtualize (x2APIC, TSC-deadline and the rest included) plus the hypervisor bit.
 */
import { CPUID_FLAG_INDEXED, type CpuidEntry } from "../vmm/layout.ts";

export interface Topology { sockets: number; cores: number; threads: number }

/** Leaves and bits this module writes. */
export const LEAF = {
  VENDOR: 0x0,
  FEATURES: 0x1,
  CACHE_PARAMS: 0x4,
  EXT_TOPOLOGY: 0xb,
  EXT_TOPOLOGY_V2: 0x1f,
  HV_BASE: 0x40000000,
  HV_FEATURES: 0x40000001,
  EXT_FEATURES: 0x80000001,
  AMD_ADDR_SIZES: 0x80000008,
  AMD_CACHE_TOPOLOGY: 0x8000001d,
  AMD_EXT_APIC: 0x8000001e,
} as const;

export const BIT = {
  /** 01H:EDX[28] Hyper-Threading: more than one logical processor per package (EBX[23:16] valid). */
  HTT: 1 << 28,
  /** 01H:ECX[31] reserved for hypervisor use: "running under a hypervisor". */
  HYPERVISOR: 1 << 31,
  /** 8000_0001H:ECX[1] CmpLegacy (AMD): HTT counts cores, not SMT siblings. */
  CMP_LEGACY: 1 << 1,
} as const;

/** 0BH/1FH ECX[15:8] level types. */
export const LEVEL_TYPE = { INVALID: 0, SMT: 1, CORE: 2 } as const;

/** "KVMKVMKVM\0\0\0" as EBX, ECX, EDX: lets Linux find kvm-clock and other paravirt features. */
export const KVM_SIGNATURE = [0x4b4d564b, 0x564b4d56, 0x0000004d] as const;

/** Vendor strings in leaf 0 EBX, EDX, ECX order. */
const VENDORS = {
  intel: [0x756e6547, 0x49656e69, 0x6c65746e], // "GenuineIntel"
  amd: [0x68747541, 0x69746e65, 0x444d4163],   // "AuthenticAMD"
  hygon: [0x6f677948, 0x656e6975, 0x6e65476e], // "HygonGenuine" (AMD's topology leaves)
} as const;

export type Vendor = "intel" | "amd" | "other";

export function cpuVendor(supported: readonly CpuidEntry[]): Vendor {
  const l0 = supported.find((e) => e.function === 0);
  if (!l0) return "other";
  const is = (v: readonly number[]) => l0.ebx === v[0] && l0.edx === v[1] && l0.ecx === v[2];
  if (is(VENDORS.intel)) return "intel";
  if (is(VENDORS.amd) || is(VENDORS.hygon)) return "amd";
  return "other";
}

/** ceil(log2(n)) for n ≥ 1: the bits needed to number n things (0 for 1). */
export function bitsFor(n: number): number {
  let b = 0;
  while (1 << b < n) b++;
  return b;
}

function check(topo: Topology): void {
  for (const k of ["sockets", "cores", "threads"] as const) {
    if (!Number.isInteger(topo[k]) || topo[k] < 1) throw new Error(`cpuid: topology ${k} must be a positive integer`);
  }
}

/** Widths of the APIC id fields. */
export function apicIdLayout(topo: Topology): { smtBits: number; coreBits: number; pkgShift: number } {
  check(topo);
  const smtBits = bitsFor(topo.threads);
  const coreBits = bitsFor(topo.cores);
  return { smtBits, coreBits, pkgShift: smtBits + coreBits };
}

/** The (x2)APIC id of vCPU `vcpu` (see the module comment). */
export function apicId(vcpu: number, topo: Topology): number {
  const { smtBits, pkgShift } = apicIdLayout(topo);
  const thread = vcpu % topo.threads;
  const core = Math.floor(vcpu / topo.threads) % topo.cores;
  const pkg = Math.floor(vcpu / (topo.threads * topo.cores));
  return (pkg * 2 ** pkgShift + core * 2 ** smtBits + thread) >>> 0;
}

function setField(v: number, shift: number, width: number, field: number): number {
  const mask = ((2 ** width - 1) * 2 ** shift) >>> 0;
  return ((v & ~mask) | ((field * 2 ** shift) & mask)) >>> 0;
}

/** Leaf 0BH/1FH subleaves for one vCPU: SMT level, core level, then the invalid terminator. */
function topologyLeaf(fn: number, x2apicId: number, topo: Topology): CpuidEntry[] {
  const { smtBits, pkgShift } = apicIdLayout(topo);
  const levels = [
    // EAX[4:0]: shift right of the x2APIC id to get the next level's id; EBX[15:0]: logical
    // processors at this level; ECX[7:0]: level number (= subleaf), ECX[15:8]: level type.
    { eax: smtBits, ebx: topo.threads, type: LEVEL_TYPE.SMT },
    { eax: pkgShift, ebx: topo.threads * topo.cores, type: LEVEL_TYPE.CORE },
    { eax: 0, ebx: 0, type: LEVEL_TYPE.INVALID },
  ];
  return levels.map((l, i) => ({
    function: fn, index: i, flags: CPUID_FLAG_INDEXED,
    eax: l.eax, ebx: l.ebx & 0xffff, ecx: (i & 0xff) | (l.type << 8), edx: x2apicId >>> 0,
  }));
}

/**
 * Build the CPUID table of vCPU `vcpu` (0-based) for a `sockets × cores × threads` machine from the
 * backend's supported entries. The input is not modified.
 */
export function buildCpuid(supported: readonly CpuidEntry[], vcpu: number, topo: Topology): CpuidEntry[] {
  const { smtBits, coreBits, pkgShift } = apicIdLayout(topo);
  const vendor = cpuVendor(supported);
  const id = apicId(vcpu, topo);
  const logicalPerPkg = topo.threads * topo.cores;
  const maxBasic = supported.find((e) => e.function === 0)?.eax ?? 0;
  const has = (fn: number) => supported.some((e) => e.function === fn);

  /** "Maximum addressable IDs" (power of two) minus 1 for a cache shared by `bits` of id. */
  const sharingMinus1 = (bits: number) => 2 ** bits - 1;
  /** Caches at level 1–2 are per core, level 3+ per package. */
  const cacheSharing = (eax: number) => (((eax >>> 5) & 7) <= 2 ? smtBits : pkgShift);

  const out: CpuidEntry[] = [];
  for (const src of supported) {
    const e = { ...src };
    switch (e.function) {
      case LEAF.FEATURES:
        // EBX[31:24] initial APIC id (low 8 bits; the full id is in 0BH EDX),
        // EBX[23:16] addressable logical processor ids per package (valid when HTT).
        e.ebx = setField(e.ebx, 24, 8, id & 0xff);
        e.ebx = setField(e.ebx, 16, 8, Math.min(logicalPerPkg > 1 ? 2 ** pkgShift : 1, 0xff));
        e.edx = logicalPerPkg > 1 ? (e.edx | BIT.HTT) >>> 0 : (e.edx & ~BIT.HTT) >>> 0;
        e.ecx = (e.ecx | BIT.HYPERVISOR) >>> 0;
        break;
      case LEAF.CACHE_PARAMS:
        if ((e.eax & 0x1f) === 0) break; // null descriptor: no more caches
        // EAX[31:26] addressable core ids per package - 1; EAX[25:14] ids sharing this cache - 1.
        e.eax = setField(e.eax, 26, 6, Math.min(sharingMinus1(coreBits), 0x3f));
        e.eax = setField(e.eax, 14, 12, Math.min(sharingMinus1(cacheSharing(e.eax)), 0xfff));
        break;
      case LEAF.EXT_TOPOLOGY:
      case LEAF.EXT_TOPOLOGY_V2:
        continue; // regenerated below
      case LEAF.HV_BASE:
        continue; // regenerated below
      case LEAF.EXT_FEATURES:
        if (vendor === "amd") {
          e.ecx = logicalPerPkg > 1 ? (e.ecx | BIT.CMP_LEGACY) >>> 0 : (e.ecx & ~BIT.CMP_LEGACY) >>> 0;
        }
        break;
      case LEAF.AMD_ADDR_SIZES:
        if (vendor === "amd") {
          // ECX[7:0] NC: logical processors per package - 1; ECX[15:12] ApicIdSize: id bits below the package.
          e.ecx = setField(e.ecx, 0, 8, Math.min(logicalPerPkg - 1, 0xff));
          e.ecx = setField(e.ecx, 12, 4, pkgShift);
        }
        break;
      case LEAF.AMD_CACHE_TOPOLOGY:
        if (vendor === "amd" && (e.eax & 0x1f) !== 0) {
          // EAX[25:14] NumSharingCache - 1.
          e.eax = setField(e.eax, 14, 12, Math.min(sharingMinus1(cacheSharing(e.eax)), 0xfff));
        }
        break;
      case LEAF.AMD_EXT_APIC:
        if (vendor === "amd") {
          // EAX extended APIC id; EBX[7:0] core id, EBX[15:8] threads per core - 1;
          // ECX[7:0] node id (one node per package), ECX[10:8] nodes per package - 1.
          const core = Math.floor(vcpu / topo.threads) % topo.cores;
          const pkg = Math.floor(vcpu / logicalPerPkg);
          e.eax = id;
          e.ebx = setField(setField(e.ebx, 0, 8, core & 0xff), 8, 8, topo.threads - 1);
          e.ecx = setField(setField(e.ecx, 0, 8, pkg & 0xff), 8, 3, 0);
        }
        break;
    }
    out.push(e);
  }

  if (maxBasic >= LEAF.EXT_TOPOLOGY) out.push(...topologyLeaf(LEAF.EXT_TOPOLOGY, id, topo));
  if (maxBasic >= LEAF.EXT_TOPOLOGY_V2 && has(LEAF.EXT_TOPOLOGY_V2)) out.push(...topologyLeaf(LEAF.EXT_TOPOLOGY_V2, id, topo));

  // Hypervisor leaves: our signature; 0x40000001 (paravirt features, e.g. kvm-clock) as the backend reports.
  const hasHvFeatures = out.some((e) => e.function === LEAF.HV_FEATURES);
  out.push({
    function: LEAF.HV_BASE, index: 0, flags: 0,
    eax: hasHvFeatures ? LEAF.HV_FEATURES : LEAF.HV_BASE,
    ebx: KVM_SIGNATURE[0], ecx: KVM_SIGNATURE[1], edx: KVM_SIGNATURE[2],
  });
  return out;
}
