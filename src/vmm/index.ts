/**
 * vmm/ — the only door to the kernel. A `VmHandle` wraps one VM of the shim by its number, so any
 * thread (main, vCPU Worker, I/O Worker) can make VM-wide calls (interrupts, MSIs) on the same VM.
 */
import { constants } from "node:os";
import { ptr as ptrOf, toArrayBuffer, type Pointer } from "bun:ffi";
import { shim, cstr } from "./ffi.ts";
import {
  CPUID_ENTRY_BYTES, CPUID_FLAG_INDEXED, decodeSregs, encodeSregs, EXIT, GPR_NAMES, SREGS_BYTES,
  type CpuidEntry, type Regs, type Sregs,
} from "./layout.ts";

export * from "./layout.ts";
export { netHost } from "./net.ts";
export { fsHost } from "./fs.ts";

const ERRNO_NAMES: Record<number, string> = Object.fromEntries(
  Object.entries(constants.errno).map(([k, v]) => [v, k]),
);

export class VmmError extends Error {
  constructor(readonly op: string, readonly errno: number) {
    super(`${op}: ${ERRNO_NAMES[errno] ?? "errno " + errno}`);
  }
}

/** Throws VmmError for a negative return, else returns it. */
export function check(op: string, r: number): number {
  if (r < 0) throw new VmmError(op, -r);
  return r;
}

export function available(): { ok: true } | { ok: false; why: string } {
  const r = shim().tsb_available();
  return r === 0 ? { ok: true } : { ok: false, why: `cannot use /dev/kvm: ${ERRNO_NAMES[-r] ?? r}` };
}

/** A handle on a VM another thread created (handles are process-wide). */
export function createVmFromHandle(id: number): VmHandle {
  return new VmHandle(id);
}

export function createVm(): VmHandle {
  return new VmHandle(check("create VM", shim().tsb_vm_create()));
}

export class VmHandle {
  private readonly s = shim();
  constructor(readonly id: number) {}

  caps(): number { return check("caps", this.s.tsb_vm_caps(this.id)); }
  maxVcpus(): number { return check("max vcpus", this.s.tsb_vm_max_vcpus(this.id)); }
  destroy(): void { check("destroy VM", this.s.tsb_vm_destroy(this.id)); }

  mapMemory(slot: number, gpa: number, size: number, host: number, flags: number): void {
    check(`map memory slot ${slot} at 0x${gpa.toString(16)}`, this.s.tsb_mem_map(this.id, slot, gpa, size, host as Pointer, flags));
  }

  createVcpu(index: number): void { check(`create vcpu ${index}`, this.s.tsb_vcpu_create(this.id, index)); }
  vcpu(index: number): VcpuHandle { return new VcpuHandle(this, index); }

  /** Drive an interrupt line (GSI) of the in-kernel IOAPIC/PIC to a level. */
  irqLine(gsi: number, level: 0 | 1): void { check(`irq line ${gsi}`, this.s.tsb_irq_line(this.id, gsi, level)); }
  msi(addr: number, data: number): void { check("msi", this.s.tsb_msi(this.id, addr, data >>> 0)); }
  ioeventfd(addr: number, len: number, pio: boolean, datamatch: number | null, fd: number, deassign = false): void {
    check("ioeventfd", this.s.tsb_ioeventfd(this.id, addr, len, pio ? 1 : 0, datamatch ?? -1, fd, deassign ? 1 : 0));
  }
  irqfd(gsi: number, fd: number, resampleFd = -1, deassign = false): void {
    check("irqfd", this.s.tsb_irqfd(this.id, gsi, fd, resampleFd, deassign ? 1 : 0));
  }
  msiRoute(gsi: number, addr: number, data: number): void { check("msi route", this.s.tsb_msi_route(this.id, gsi, addr, data >>> 0)); }

  supportedCpuid(): CpuidEntry[] {
    const max = 256;
    const b = new Uint8Array(max * CPUID_ENTRY_BYTES);
    const n = check("supported cpuid", this.s.tsb_supported_cpuid(this.id, b, max));
    const v = new DataView(b.buffer);
    const out: CpuidEntry[] = [];
    for (let i = 0; i < n; i++) {
      const o = i * CPUID_ENTRY_BYTES;
      out.push({
        function: v.getUint32(o, true), index: v.getUint32(o + 4, true), flags: v.getUint32(o + 8, true),
        eax: v.getUint32(o + 12, true), ebx: v.getUint32(o + 16, true), ecx: v.getUint32(o + 20, true), edx: v.getUint32(o + 24, true),
      });
    }
    return out;
  }
}

export class VcpuHandle {
  private readonly s = shim();
  private readonly vmId: number;
  constructor(readonly vm: VmHandle, readonly index: number) { this.vmId = vm.id; }

  /** The exit page, read in place after every run(). */
  exitPage(): DataView {
    const p = this.s.tsb_vcpu_exit_page(this.vmId, this.index);
    if (!p) throw new VmmError(`exit page of vcpu ${this.index}`, constants.errno.EBADF);
    return new DataView(toArrayBuffer(p, 0, EXIT.bytes));
  }
  /** Record the calling thread as this vCPU's (for kicks) and name it. */
  bindThread(name: string): void { check("bind thread", this.s.tsb_vcpu_bind_thread(this.vmId, this.index, cstr(name))); }
  /** Enter the guest; returns an ExitReason (details on the exit page). */
  run(): number { return this.s.tsb_vcpu_run(this.vmId, this.index); }
  kick(): void { this.s.tsb_vcpu_kick(this.vmId, this.index); }
  /** Halted with interrupts disabled, or never started. Call on this vCPU's thread between runs. */
  stopped(): boolean { return check("mp state", this.s.tsb_vcpu_stopped(this.vmId, this.index)) === 1; }
  setRunnable(runnable: boolean): void { check("set mp state", this.s.tsb_vcpu_set_runnable(this.vmId, this.index, runnable ? 1 : 0)); }

  getRegs(): Regs {
    const b = new BigUint64Array(18);
    check("get regs", this.s.tsb_vcpu_get_regs(this.vmId, this.index, b));
    return Object.fromEntries(GPR_NAMES.map((n, i) => [n, b[i]!])) as Regs;
  }
  setRegs(r: Partial<Regs>): void {
    const cur = this.getRegs();
    const b = new BigUint64Array(GPR_NAMES.map((n) => r[n] ?? cur[n]));
    check("set regs", this.s.tsb_vcpu_set_regs(this.vmId, this.index, b));
  }
  getSregs(): Sregs {
    const b = new Uint8Array(SREGS_BYTES);
    check("get sregs", this.s.tsb_vcpu_get_sregs(this.vmId, this.index, b));
    return decodeSregs(b);
  }
  setSregs(s: Sregs): void { check("set sregs", this.s.tsb_vcpu_set_sregs(this.vmId, this.index, encodeSregs(s))); }

  setCpuid(entries: CpuidEntry[]): void {
    const b = new Uint8Array(entries.length * CPUID_ENTRY_BYTES);
    const v = new DataView(b.buffer);
    entries.forEach((e, i) => {
      const o = i * CPUID_ENTRY_BYTES;
      v.setUint32(o, e.function, true); v.setUint32(o + 4, e.index, true);
      v.setUint32(o + 8, e.flags & CPUID_FLAG_INDEXED, true);
      v.setUint32(o + 12, e.eax >>> 0, true); v.setUint32(o + 16, e.ebx >>> 0, true);
      v.setUint32(o + 20, e.ecx >>> 0, true); v.setUint32(o + 24, e.edx >>> 0, true);
    });
    check("set cpuid", this.s.tsb_vcpu_set_cpuid(this.vmId, this.index, b, entries.length));
  }
  setMsrs(msrs: [number, bigint][]): void {
    const idx = new Uint32Array(msrs.map(([i]) => i));
    const val = new BigUint64Array(msrs.map(([, v]) => v));
    const n = check("set msrs", this.s.tsb_vcpu_set_msrs(this.vmId, this.index, idx, val, msrs.length));
    if (n !== msrs.length) throw new Error(`set msrs: MSR 0x${msrs[n]![0].toString(16)} refused`);
  }
  getMsrs(indices: number[]): bigint[] {
    const idx = new Uint32Array(indices);
    const val = new BigUint64Array(indices.length);
    check("get msrs", this.s.tsb_vcpu_get_msrs(this.vmId, this.index, idx, val, indices.length));
    return [...val];
  }
}

/** Host-side helpers of the shim (fds, polling, memory) for the rest of the program. */
export const host = {
  memAlloc(size: number, wired: boolean): number {
    const p = shim().tsb_mem_alloc(size, wired ? 2 : 0);
    if (!p) throw new Error(`cannot allocate ${size} bytes of guest memory${wired ? " (wired: check ulimit -l)" : ""}`);
    return p as number;
  },
  memView(p: number, size: number): Uint8Array { return new Uint8Array(toArrayBuffer(p as Pointer, 0, size)); },
  setThreadName(name: string): void { shim().tsb_set_thread_name(cstr(name)); },
  /** Run the calling thread only on these host CPUs (throws, e.g. EINVAL when none of them is usable). */
  setThreadAffinity(cpus: readonly number[]): void {
    check(`pin thread to host CPUs ${cpus.join(",")}`, shim().tsb_thread_affinity(new Int32Array(cpus), cpus.length));
  },
  gettid(): number { return shim().tsb_gettid(); },
  eventfd(): number { return check("eventfd", shim().tsb_eventfd(0)); },
  signal(fd: number): void { shim().tsb_eventfd_signal(fd); },
  drain(fd: number): number { return shim().tsb_eventfd_drain(fd) as number; },
  /** poll(2): returns revents per fd (0 = nothing), or throws. */
  poll(fds: Int32Array, events: Int16Array, revents: Int16Array, timeoutMs: number): number {
    const r = shim().tsb_poll(fds, events, revents, fds.length, timeoutMs);
    if (r < 0 && -r !== constants.errno.EINTR) throw new VmmError("poll", -r);
    return r < 0 ? 0 : r;
  },
  /** ppoll(2) with a nanosecond timeout (-1: forever). */
  ppoll(fds: Int32Array, events: Int16Array, revents: Int16Array, timeoutNs: number): number {
    const r = shim().tsb_ppoll(fds, events, revents, fds.length, Math.round(timeoutNs));
    if (r < 0 && -r !== constants.errno.EINTR) throw new VmmError("ppoll", -r);
    return r < 0 ? 0 : r;
  },
  read(fd: number, buf: Uint8Array): number { return shim().tsb_read(fd, buf, buf.length) as number; },
  write(fd: number, buf: Uint8Array): number { return shim().tsb_write(fd, buf, buf.length) as number; },
  /** Write without ever blocking: -EAGAIN (negative errno) when there is no room. */
  writeNb(fd: number, buf: Uint8Array): number { return shim().tsb_write_nb(fd, buf, buf.length) as number; },
  pread(fd: number, buf: Uint8Array, off: number): number { return shim().tsb_pread(fd, buf, buf.length, off) as number; },
  pwrite(fd: number, buf: Uint8Array, off: number): number { return shim().tsb_pwrite(fd, buf, buf.length, off) as number; },
  /** iov: BigUint64Array of (host pointer, length) pairs. */
  preadv(fd: number, iov: BigUint64Array, off: number): number { return shim().tsb_preadv(fd, iov, iov.length / 2, off) as number; },
  pwritev(fd: number, iov: BigUint64Array, off: number): number { return shim().tsb_pwritev(fd, iov, iov.length / 2, off) as number; },
  close(fd: number): void { shim().tsb_close(fd); },
  setNonblock(fd: number, on: boolean): void { check("set nonblock", shim().tsb_set_nonblock(fd, on ? 1 : 0)); },
  openpty(): { fd: number; path: string } {
    const name = new Uint8Array(128);
    const fd = check("openpty", shim().tsb_openpty(name, name.length));
    return { fd, path: new TextDecoder().decode(name.subarray(0, name.indexOf(0))) };
  },
  listenTcp(addr: string, port: number): number { return check(`listen on ${addr}:${port}`, shim().tsb_listen_tcp(cstr(addr), port)); },
  listenUnix(path: string): number { return check(`listen on ${path}`, shim().tsb_listen_unix(cstr(path))); },
  /** Non-blocking accept: an fd, or -1 when no client is waiting. */
  accept(fd: number): number { const r = shim().tsb_accept(fd); return r < 0 ? -1 : r; },
  ttyRaw(fd: number, on: boolean): void { check("tty mode", shim().tsb_tty_raw(fd, on ? 1 : 0)); },
  isatty(fd: number): boolean { return shim().tsb_isatty(fd) === 1; },
  /** CLOCK_MONOTONIC nanoseconds since the shim was loaded: the same clock in every thread. */
  monotonicNs(): number { return shim().tsb_monotonic_ns() as number; },
  errnoName(e: number): string { return ERRNO_NAMES[e] ?? `errno ${e}`; },
  // ---- block storage (src/block/): every call returns a negative errno on failure, never throws ----
  /** Open a disk image or block device; flags: DISK_OPEN_* bits. -> fd or -errno. */
  openDisk(path: string, flags: number): number { return shim().tsb_open_disk(cstr(path), flags); },
  /** ioctl(fd, req, buf): the result, or -errno */
  ioctlBuf(fd: number, req: number, buf: Uint8Array): number { return shim().tsb_ioctl_buf(fd, req, buf); },
  /** fstat + block-device ioctls + direct-I/O alignment of an open disk, or -errno. */
  diskInfo(fd: number): DiskHostInfo | number {
    const b = new BigUint64Array(8);
    const r = shim().tsb_disk_info(fd, b);
    if (r < 0) return r;
    const n = (i: number) => Number(b[i]!);
    return {
      kind: n(0) === DISK_KIND_FILE ? "file" : n(0) === DISK_KIND_BLOCKDEV ? "blockdev" : "other",
      size: n(1), logical: n(2), physical: n(3), allocated: n(4), ioSize: n(5), dioMemAlign: n(6), dioOffsetAlign: n(7),
    };
  },
  fdatasync(fd: number): number { return shim().tsb_fdatasync(fd); },
  /** mode: FALLOC_PUNCH (deallocate, reads back zeros) or FALLOC_ZERO; size kept. -EOPNOTSUPP if unsupported. */
  fallocate(fd: number, mode: number, off: number, len: number): number { return shim().tsb_fallocate(fd, mode, off, len); },
  /** Whole-request scatter/gather I/O on (host pointer, length) pairs; bounces unaligned direct I/O.
   *  -> bytes transferred (short only at end of file) or -errno. */
  blkIo(fd: number, iov: BigUint64Array, off: number, write: boolean, memAlign: number, offAlign: number): number {
    return shim().tsb_blk_io(fd, iov, iov.length / 2, off, write ? 1 : 0, memAlign, offAlign) as number;
  },
  /** Make a range read back zeros (fallocate, else writes); flags: WZ_* bits. -> len or -errno. */
  writeZeroes(fd: number, off: number, len: number, flags: number, memAlign: number, offAlign: number): number {
    return shim().tsb_write_zeroes(fd, off, len, flags, memAlign, offAlign) as number;
  },
  /** Page-cache state of a file range (pages), or -errno (-ENOSYS on hosts without cachestat). */
  cacheStat(fd: number, off: number, len: number): { cached: number; dirty: number; writeback: number } | number {
    const b = new BigUint64Array(5);
    const r = shim().tsb_cache_stat(fd, off, len, b);
    return r < 0 ? r : { cached: Number(b[0]), dirty: Number(b[1]), writeback: Number(b[2]) };
  },
  /** Address of a JS typed array (valid only until the next GC-relevant step; use at once). */
  addressOf(a: Uint8Array | DataView): number { return ptrOf(a) as number; },
};
export const POLLIN = 1, POLLOUT = 4, POLLERR = 8, POLLHUP = 16;

/** tsb_open_disk flags (ffi/tsb.h TSB_OPEN_*). */
export const DISK_OPEN_RDONLY = 1, DISK_OPEN_DIRECT = 2, DISK_OPEN_SYNC = 4;
export const DISK_KIND_FILE = 1, DISK_KIND_BLOCKDEV = 2;
/** tsb_fallocate modes and tsb_write_zeroes flags (TSB_FALLOC_*, TSB_WZ_*). */
export const FALLOC_PUNCH = 1, FALLOC_ZERO = 2;
export const WZ_MAY_UNMAP = 1, WZ_NO_FALLOCATE = 2;
/** What the host says about an open disk (tsb_disk_info). Sizes in bytes; 0 = unknown / not applicable. */
export interface DiskHostInfo {
  kind: "file" | "blockdev" | "other";
  size: number;
  /** Block devices: logical and physical sector size. */
  logical: number;
  physical: number;
  /** Bytes the file occupies on the host (st_blocks * 512). */
  allocated: number;
  ioSize: number;
  /** Direct-I/O alignment of buffer addresses and of file offsets/lengths (statx DIOALIGN; block devices: logical). */
  dioMemAlign: number;
  dioOffsetAlign: number;
}
