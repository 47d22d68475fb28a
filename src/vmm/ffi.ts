/**
 * The one door to the kernel: bun:ffi bindings of ffi/tsb.h.
 *
 * The shared object is built by scripts/build.ts into build/libtsbhyve.so and embedded in the
 * compiled binary (Bun extracts it to a temp file on dlopen). Every Worker calls `shim()`; the
 * dynamic linker loads the library once per process, so the C-side tables are shared.
 * Nothing outside src/vmm/ may import this file.
 */
import { dlopen, FFIType } from "bun:ffi";
import shimPath from "../../build/libtsbhyve.so" with { type: "file" };
import { netSymbols } from "./symbols-net.ts";
import { fsSymbols } from "./symbols-fs.ts";

const i32 = "i32", u32 = "u32", i64 = "i64", u64 = "u64", ptr = "ptr";
const i64_fast = FFIType.i64_fast, u64_fast = FFIType.u64_fast;

const symbols = {
  tsb_abi_version: { args: [], returns: i32 },
  tsb_available: { args: [], returns: i32 },
  tsb_vm_create: { args: [], returns: i32 },
  tsb_vm_caps: { args: [i32], returns: i32 },
  tsb_vm_destroy: { args: [i32], returns: i32 },
  tsb_vm_max_vcpus: { args: [i32], returns: i32 },
  tsb_mem_alloc: { args: [u64, i32], returns: ptr },
  tsb_mem_free: { args: [ptr, u64], returns: i32 },
  tsb_mem_map: { args: [i32, i32, u64, u64, ptr, i32], returns: i32 },
  tsb_mem_unmap: { args: [i32, i32], returns: i32 },
  tsb_vcpu_create: { args: [i32, i32], returns: i32 },
  tsb_vcpu_exit_page: { args: [i32, i32], returns: ptr },
  tsb_vcpu_bind_thread: { args: [i32, i32, ptr], returns: i32 },
  tsb_vcpu_run: { args: [i32, i32], returns: i32 },
  tsb_vcpu_kick: { args: [i32, i32], returns: i32 },
  tsb_vcpu_get_regs: { args: [i32, i32, ptr], returns: i32 },
  tsb_vcpu_set_regs: { args: [i32, i32, ptr], returns: i32 },
  tsb_vcpu_get_sregs: { args: [i32, i32, ptr], returns: i32 },
  tsb_vcpu_set_sregs: { args: [i32, i32, ptr], returns: i32 },
  tsb_vcpu_set_cpuid: { args: [i32, i32, ptr, i32], returns: i32 },
  tsb_vcpu_set_msrs: { args: [i32, i32, ptr, ptr, i32], returns: i32 },
  tsb_vcpu_get_msrs: { args: [i32, i32, ptr, ptr, i32], returns: i32 },
  tsb_vcpu_set_runnable: { args: [i32, i32, i32], returns: i32 },
  tsb_vcpu_stopped: { args: [i32, i32], returns: i32 },
  tsb_supported_cpuid: { args: [i32, ptr, i32], returns: i32 },
  tsb_irq_line: { args: [i32, i32, i32], returns: i32 },
  tsb_msi: { args: [i32, u64, u32], returns: i32 },
  tsb_ioeventfd: { args: [i32, u64, i32, i32, i64, i32, i32], returns: i32 },
  tsb_irqfd: { args: [i32, i32, i32, i32, i32], returns: i32 },
  tsb_msi_route: { args: [i32, i32, u64, u32], returns: i32 },
  tsb_set_thread_name: { args: [ptr], returns: i32 },
  tsb_thread_affinity: { args: [ptr, i32], returns: i32 },
  tsb_gettid: { args: [], returns: i32 },
  tsb_eventfd: { args: [i32], returns: i32 },
  tsb_eventfd_signal: { args: [i32], returns: i32 },
  tsb_eventfd_drain: { args: [i32], returns: i64_fast },
  tsb_poll: { args: [ptr, ptr, ptr, i32, i32], returns: i32 },
  tsb_read: { args: [i32, ptr, u64], returns: i64_fast },
  tsb_write: { args: [i32, ptr, u64], returns: i64_fast },
  tsb_write_nb: { args: [i32, ptr, u64], returns: i64_fast },
  tsb_pread: { args: [i32, ptr, u64, i64], returns: i64_fast },
  tsb_pwrite: { args: [i32, ptr, u64, i64], returns: i64_fast },
  tsb_preadv: { args: [i32, ptr, i32, i64], returns: i64_fast },
  tsb_pwritev: { args: [i32, ptr, i32, i64], returns: i64_fast },
  tsb_close: { args: [i32], returns: i32 },
  tsb_set_nonblock: { args: [i32, i32], returns: i32 },
  tsb_openpty: { args: [ptr, i32], returns: i32 },
  tsb_listen_tcp: { args: [ptr, i32], returns: i32 },
  tsb_listen_unix: { args: [ptr], returns: i32 },
  tsb_accept: { args: [i32], returns: i32 },
  tsb_tty_raw: { args: [i32, i32], returns: i32 },
  tsb_isatty: { args: [i32], returns: i32 },
  tsb_monotonic_ns: { args: [], returns: u64_fast },
  tsb_ppoll: { args: [ptr, ptr, ptr, i32, i64], returns: i32 },
  tsb_open_disk: { args: [ptr, i32], returns: i32 },
  tsb_ioctl_buf: { args: [i32, u64, ptr], returns: i32 },
  tsb_disk_info: { args: [i32, ptr], returns: i32 },
  tsb_fdatasync: { args: [i32], returns: i32 },
  tsb_fallocate: { args: [i32, i32, i64, i64], returns: i32 },
  tsb_blk_io: { args: [i32, ptr, i32, i64, i32, i32, i32], returns: i64_fast },
  tsb_write_zeroes: { args: [i32, i64, i64, i32, i32, i32], returns: i64_fast },
  tsb_cache_stat: { args: [i32, i64, i64, ptr], returns: i32 },
  ...netSymbols,
  ...fsSymbols,
} as const;

export type Shim = ReturnType<typeof dlopen<typeof symbols>>["symbols"];

let lib: Shim | undefined;

/** The shim's symbols, loaded on first use in this thread. */
export function shim(): Shim {
  if (!lib) {
    lib = dlopen(shimPath, symbols).symbols;
    const v = lib.tsb_abi_version();
    if (v !== ABI_VERSION) throw new Error(`shim ABI ${v}, expected ${ABI_VERSION}: rebuild with npm run build`);
  }
  return lib;
}

/** Must equal TSB_ABI_VERSION in ffi/tsb.h. */
export const ABI_VERSION = 1;

/** A NUL-terminated C string for a ptr argument. */
export function cstr(s: string): Uint8Array {
  return new TextEncoder().encode(s + "\0");
}
