/**
 * vCPU pinning, bhyve's `vcpu.N.cpuset` (and `-p vcpu:hostcpu`, which adds one host CPU to that list):
 * the host CPUs vCPU N's thread may run on. A list is written like cpuset(1)'s: "0-3,6", or in TOML an
 * integer or an array of integers.
 */
import type { Origin, Setting } from "./errors.ts";

/** The key form, vcpu.N.cpuset. */
export const CPUSET_KEY = /^vcpu\.(\d+)\.cpuset$/;
export const CPUSET_EXPECTED = `a host CPU list like "0-3,6" (or an integer, or an array of integers)`;

/** Host CPU numbers from a list; a string describing the problem when it is not one. */
export function parseCpuList(v: unknown): number[] | string {
  const out = new Set<number>();
  const add = (n: number): string | undefined => {
    if (!Number.isSafeInteger(n) || n < 0 || n > 1023) return `expected host CPUs 0..1023, got ${n}`;
    out.add(n);
    return undefined;
  };
  if (typeof v === "number" || typeof v === "bigint") {
    const e = add(Number(v));
    if (e) return e;
  } else if (Array.isArray(v)) {
    for (const x of v) {
      const e = typeof x === "number" || typeof x === "bigint" ? add(Number(x)) : `expected ${CPUSET_EXPECTED}, got ${JSON.stringify(x)} in the array`;
      if (e) return e;
    }
  } else if (typeof v === "string") {
    for (const part of v.split(",")) {
      const m = /^\s*(\d+)\s*(?:-\s*(\d+)\s*)?$/.exec(part);
      if (!m) return `expected ${CPUSET_EXPECTED}, got "${v}"`;
      const lo = Number(m[1]), hi = m[2] === undefined ? lo : Number(m[2]);
      if (hi < lo) return `expected a range low-high, got "${part.trim()}"`;
      for (let n = lo; n <= Math.min(hi, 1024); n++) {
        const e = add(n);
        if (e) return e;
      }
    }
  } else {
    return `expected ${CPUSET_EXPECTED}, got ${JSON.stringify(v)}`;
  }
  if (out.size === 0) return `expected at least one host CPU`;
  return [...out].sort((a, b) => a - b);
}

/** "0-3,6" from [0, 1, 2, 3, 6]. */
export function formatCpuList(cpus: readonly number[]): string {
  const parts: string[] = [];
  for (let i = 0; i < cpus.length; ) {
    let j = i;
    while (j + 1 < cpus.length && cpus[j + 1] === cpus[j]! + 1) j++;
    parts.push(j === i ? `${cpus[i]}` : `${cpus[i]}-${cpus[j]}`);
    i = j + 1;
  }
  return parts.join(",");
}

/**
 * vcpu.* settings → vCPU index → host CPUs. Every problem goes to `report`: keys other than
 * vcpu.N.cpuset, a vCPU the topology does not have, a bad list, host CPUs the host does not have.
 */
export function resolveCpusets(
  settings: readonly Setting[], cpus: number, hostCpus: number,
  report: (origin: Origin, key: string, message: string) => void,
): Record<number, number[]> {
  const out: Record<number, number[]> = {};
  for (const s of settings) {
    const m = CPUSET_KEY.exec(s.key);
    if (!m) { report(s.origin, s.key, "unknown key (the vcpu table holds vcpu.N.cpuset)"); continue; }
    const n = Number(m[1]);
    if (n >= cpus) { report(s.origin, s.key, `expected a vCPU below ${cpus} (the guest has ${cpus}), got vCPU ${n}`); continue; }
    const list = parseCpuList(s.value);
    if (typeof list === "string") { report(s.origin, s.key, list); continue; }
    const missing = list.filter((c) => c >= hostCpus);
    if (missing.length) { report(s.origin, s.key, `expected host CPUs 0-${hostCpus - 1} (this host has ${hostCpus}), got ${formatCpuList(missing)}`); continue; }
    out[n] = list;
  }
  return out;
}
