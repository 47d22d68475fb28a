/**
 * Guest memory set-up on the main thread (allocate, map into the VM) and in every Worker (views).
 */
import { GuestMemory, HIGHMEM_BASE, ramLayout, region } from "../mem/guest-memory.ts";
import { host, MEM_READONLY, type VmHandle } from "../vmm/index.ts";
import type { MemRegionInfo } from "./shared.ts";

/** Allocate guest RAM (demand-paged; locked when wired) and an optional boot ROM; map them into the VM. */
export function setupMemory(vm: VmHandle, size: number, wired: boolean, rom?: Uint8Array): MemRegionInfo[] {
  const out: MemRegionInfo[] = [];
  let slot = 0;
  for (const r of ramLayout(size)) {
    const p = host.memAlloc(r.size, wired);
    vm.mapMemory(slot++, r.gpa, r.size, p, 0);
    out.push({ gpa: r.gpa, size: r.size, host: p, kind: "ram" });
  }
  if (rom) {
    const p = host.memAlloc(rom.length, false);
    host.memView(p, rom.length).set(rom);
    const gpa = HIGHMEM_BASE - rom.length;
    vm.mapMemory(slot++, gpa, rom.length, p, MEM_READONLY);
    out.push({ gpa, size: rom.length, host: p, kind: "rom" });
  }
  return out;
}

/** This thread's views of guest memory. */
export function viewMemory(regions: MemRegionInfo[]): GuestMemory {
  return new GuestMemory(regions.map((r) => region(r.gpa, host.memView(r.host, r.size), r.host, r.kind)));
}
