/*
 * tsb.h — the thin, backend-neutral C API that tsbhyve's TypeScript calls through bun:ffi.
 *
 * Every function returns >= 0 on success and -errno on failure (pointers: NULL on failure).
 * Nothing here names KVM or vmm.ko: kvm.c implements it for Linux KVM; a vmm.ko backend
 * implements the same API for FreeBSD. The layouts of the structs below are mirrored in
 * src/vmm/layout.ts — change both together and bump TSB_ABI_VERSION.
 */
#ifndef TSB_H
#define TSB_H
#include <stdint.h>

#define TSB_ABI_VERSION 1
#define TSB_MAX_VMS 16
#define TSB_MAX_VCPUS 256

/* ---- exit page: one per vCPU, read and written by TypeScript in place ---- */
enum tsb_exit_reason {
	TSB_EXIT_NONE = 0,
	TSB_EXIT_IO = 1,        /* port I/O: port, size, dir, count; data[] holds count*size bytes */
	TSB_EXIT_MMIO = 2,      /* MMIO: gpa, size, dir; data[0..8) */
	TSB_EXIT_HLT = 3,       /* HLT (only without an in-kernel LAPIC) */
	TSB_EXIT_SHUTDOWN = 4,  /* triple fault */
	TSB_EXIT_RESET = 5,     /* platform reset requested through the kernel (e.g. PSCI / system event) */
	TSB_EXIT_POWEROFF = 6,
	TSB_EXIT_INTR = 7,      /* interrupted by a kick: check the control flags and run again */
	TSB_EXIT_INTERNAL = 8,  /* the kernel could not emulate something: detail = suberror */
	TSB_EXIT_FAIL_ENTRY = 9,/* entry failed: detail = hardware reason */
	TSB_EXIT_DEBUG = 10,
	TSB_EXIT_UNKNOWN = 11,  /* detail = raw backend exit code */
	TSB_EXIT_ERROR = 12,    /* the run call itself failed: detail = errno */
};

#define TSB_DIR_READ 0   /* guest reads (IN / MMIO load): TypeScript fills data[] */
#define TSB_DIR_WRITE 1  /* guest writes: data[] holds the value */

struct tsb_exit {                 /* offset */
	uint32_t reason;              /* 0 */
	uint32_t size;                /* 4  access width in bytes (1,2,4,8) */
	uint32_t dir;                 /* 8 */
	uint32_t count;               /* 12 string I/O repeat count (1 for plain) */
	uint64_t addr;                /* 16 port or guest-physical address */
	uint64_t detail;              /* 24 backend-specific detail (suberror, errno, raw reason) */
	uint64_t rip;                 /* 32 guest RIP if known, else 0 */
	uint32_t data_len;            /* 40 valid bytes in data[] */
	uint32_t pad;                 /* 44 */
	uint64_t exits;               /* 48 number of exits taken by this vCPU */
	uint8_t  reserved[8];         /* 56 */
	uint8_t  data[4096];          /* 64 */
};

/* ---- registers ---- */
struct tsb_regs {                 /* 18 x u64: rax rbx rcx rdx rsi rdi rsp rbp r8..r15 rip rflags */
	uint64_t r[18];
};

struct tsb_seg {                  /* 24 bytes */
	uint64_t base;
	uint32_t limit;
	uint16_t selector;
	uint8_t type, present, dpl, db, s, l, g, avl, unusable, pad;
};

struct tsb_dtable {               /* 16 bytes */
	uint64_t base;
	uint16_t limit;
	uint16_t pad[3];
};

struct tsb_sregs {
	struct tsb_seg cs, ds, es, fs, gs, ss, tr, ldt;   /* 0 .. 192 */
	struct tsb_dtable gdt, idt;                        /* 192 .. 224 */
	uint64_t cr0, cr2, cr3, cr4, cr8, efer, apic_base; /* 224 .. 280 */
};

struct tsb_cpuid_entry {          /* 28 bytes */
	uint32_t function, index, flags, eax, ebx, ecx, edx;
};
#define TSB_CPUID_FLAG_INDEXED 1

/* ---- capabilities a backend reports (tsb_vm_caps) ---- */
#define TSB_CAP_IRQCHIP      (1u << 0) /* in-kernel LAPIC/IOAPIC/PIC */
#define TSB_CAP_PIT          (1u << 1) /* in-kernel 8254 */
#define TSB_CAP_IOEVENTFD    (1u << 2)
#define TSB_CAP_IRQFD        (1u << 3)
#define TSB_CAP_MSI          (1u << 4)
#define TSB_CAP_HPET         (1u << 5) /* in-kernel HPET (vmm.ko) */
#define TSB_CAP_RTC          (1u << 6) /* in-kernel RTC (vmm.ko) */
#define TSB_CAP_PMTMR        (1u << 7) /* in-kernel ACPI PM timer (vmm.ko) */
#define TSB_CAP_READONLY_MEM (1u << 8)
#define TSB_CAP_IMMEDIATE_EXIT (1u << 9)

#define TSB_MEM_READONLY 1
#define TSB_MEM_WIRED    2

int32_t tsb_abi_version(void);
int32_t tsb_available(void);                         /* 0 if the VM device can be opened */
int32_t tsb_vm_create(void);                         /* -> vm handle */
int32_t tsb_vm_caps(int32_t vm);
int32_t tsb_vm_destroy(int32_t vm);
int32_t tsb_vm_max_vcpus(int32_t vm);

void   *tsb_mem_alloc(uint64_t size, int32_t flags);  /* demand-paged anonymous memory; WIRED locks it */
int32_t tsb_mem_free(void *p, uint64_t size);
int32_t tsb_mem_map(int32_t vm, int32_t slot, uint64_t gpa, uint64_t size, void *host, int32_t flags);
int32_t tsb_mem_unmap(int32_t vm, int32_t slot);

int32_t tsb_vcpu_create(int32_t vm, int32_t id);
struct tsb_exit *tsb_vcpu_exit_page(int32_t vm, int32_t id);
int32_t tsb_vcpu_bind_thread(int32_t vm, int32_t id, const char *name); /* call on the thread that runs it */
int32_t tsb_vcpu_run(int32_t vm, int32_t id);         /* -> exit reason; exit page filled */
int32_t tsb_vcpu_kick(int32_t vm, int32_t id);        /* race-free: the next or current run returns INTR */
int32_t tsb_vcpu_get_regs(int32_t vm, int32_t id, struct tsb_regs *out);
int32_t tsb_vcpu_set_regs(int32_t vm, int32_t id, const struct tsb_regs *in);
int32_t tsb_vcpu_get_sregs(int32_t vm, int32_t id, struct tsb_sregs *out);
int32_t tsb_vcpu_set_sregs(int32_t vm, int32_t id, const struct tsb_sregs *in);
int32_t tsb_vcpu_set_cpuid(int32_t vm, int32_t id, const struct tsb_cpuid_entry *e, int32_t n);
int32_t tsb_vcpu_set_msrs(int32_t vm, int32_t id, const uint32_t *idx, const uint64_t *val, int32_t n);
int32_t tsb_vcpu_get_msrs(int32_t vm, int32_t id, const uint32_t *idx, uint64_t *val, int32_t n);
int32_t tsb_vcpu_set_runnable(int32_t vm, int32_t id, int32_t runnable); /* AP wait-for-SIPI vs running */
/* 1 if the vCPU is stopped for good — halted with interrupts disabled, or never started (waiting for
 * INIT/SIPI) — else 0. Call on the vCPU's own thread between runs (e.g. after a kick). */
int32_t tsb_vcpu_stopped(int32_t vm, int32_t id);
int32_t tsb_supported_cpuid(int32_t vm, struct tsb_cpuid_entry *out, int32_t max);

/* gsi 0-15: ISA IRQ n (PIC pin n and IOAPIC pin n; IRQ 0 is wired to IOAPIC pin 2, as the MADT says);
 * gsi 16-23: IOAPIC pins for PCI INTx. */
int32_t tsb_irq_line(int32_t vm, int32_t gsi, int32_t level);
int32_t tsb_msi(int32_t vm, uint64_t addr, uint32_t data);
int32_t tsb_ioeventfd(int32_t vm, uint64_t addr, int32_t len, int32_t pio, int64_t datamatch, int32_t fd, int32_t deassign);
int32_t tsb_irqfd(int32_t vm, int32_t gsi, int32_t fd, int32_t resample_fd, int32_t deassign);
int32_t tsb_msi_route(int32_t vm, int32_t gsi, uint64_t addr, uint32_t data); /* gsi >= 24: route an irqfd to an MSI */

/* ---- host helpers (backend-independent) ---- */
int32_t tsb_set_thread_name(const char *name);
int32_t tsb_thread_affinity(const int32_t *cpus, int32_t n);
int32_t tsb_gettid(void);
int32_t tsb_eventfd(int32_t initval);
int32_t tsb_eventfd_signal(int32_t fd);
int64_t tsb_eventfd_drain(int32_t fd);               /* non-blocking read: counter or 0 */
int32_t tsb_poll(int32_t *fds, int16_t *events, int16_t *revents, int32_t n, int32_t timeout_ms);
int64_t tsb_read(int32_t fd, void *buf, uint64_t len);
int64_t tsb_write(int32_t fd, const void *buf, uint64_t len);
int64_t tsb_write_nb(int32_t fd, const void *buf, uint64_t len); /* never blocks: -EAGAIN if no room */
int64_t tsb_pread(int32_t fd, void *buf, uint64_t len, int64_t off);
int64_t tsb_pwrite(int32_t fd, const void *buf, uint64_t len, int64_t off);
int64_t tsb_preadv(int32_t fd, const uint64_t *iov, int32_t n, int64_t off);  /* iov: (ptr,len) pairs */
int64_t tsb_pwritev(int32_t fd, const uint64_t *iov, int32_t n, int64_t off);
int32_t tsb_close(int32_t fd);
int32_t tsb_set_nonblock(int32_t fd, int32_t on);
int32_t tsb_openpty(char *name, int32_t namelen);    /* -> master fd, raw mode; slave path in name */
int32_t tsb_listen_tcp(const char *addr, int32_t port); /* non-blocking listening socket */
int32_t tsb_listen_unix(const char *path);
int32_t tsb_accept(int32_t fd);                      /* non-blocking; -EAGAIN if none */
int32_t tsb_tty_raw(int32_t fd, int32_t on);         /* saves the mode on the first call, restores on off */
int32_t tsb_isatty(int32_t fd);
uint64_t tsb_monotonic_ns(void);                    /* CLOCK_MONOTONIC ns since the shim was loaded (process-wide) */
int32_t tsb_ppoll(int32_t *fds, int16_t *events, int16_t *revents, int32_t n, int64_t timeout_ns); /* -1: wait forever */

/* ---- block storage helpers (disk images and block devices; backend-independent) ---- */
#define TSB_OPEN_RDONLY 1        /* else read-write */
#define TSB_OPEN_DIRECT 2        /* bypass the host page cache (O_DIRECT): I/O must be aligned, see tsb_blk_io */
#define TSB_OPEN_SYNC   4        /* every write reaches stable storage before it returns (O_SYNC) */
int32_t tsb_open_disk(const char *path, int32_t flags); /* -> fd (close-on-exec) */
int32_t tsb_ioctl_buf(int32_t fd, uint64_t req, void *buf); /* ioctl with a buffer argument -> result or -errno */
/* out[8]: kind (1 regular file, 2 block device, 3 other), size in bytes, logical and physical sector
 * size (block devices; 0 for files), allocated bytes (st_blocks * 512), preferred I/O size,
 * direct-I/O memory alignment and file-offset alignment (0 if the host does not say). */
#define TSB_DISK_FILE 1
#define TSB_DISK_BLOCKDEV 2
#define TSB_DISK_OTHER 3
int32_t tsb_disk_info(int32_t fd, uint64_t *out);
int32_t tsb_fdatasync(int32_t fd);
#define TSB_FALLOC_PUNCH 1       /* deallocate [off, off+len); later reads return zeros; size unchanged */
#define TSB_FALLOC_ZERO  2       /* zero [off, off+len) (may stay allocated); size unchanged */
int32_t tsb_fallocate(int32_t fd, int32_t mode, int64_t off, int64_t len); /* -EOPNOTSUPP if unsupported */
/* Scatter/gather I/O of a whole request: iov holds n (ptr,len) pairs; reads (write=0) or writes the
 * total length at off, retrying short transfers and EINTR. If mem_align/off_align > 1 (an fd opened with
 * TSB_OPEN_DIRECT) and any buffer address is not a multiple of mem_align, or the offset or a length not
 * a multiple of off_align, the transfer goes through an aligned bounce buffer (read-modify-write at
 * unaligned edges). -> bytes transferred (less than the total only at end of file), or -errno. */
int64_t tsb_blk_io(int32_t fd, const uint64_t *iov, int32_t n, int64_t off, int32_t write, int32_t mem_align, int32_t off_align);
#define TSB_WZ_MAY_UNMAP 1       /* the range may be deallocated (punched) as long as it reads back zeros */
#define TSB_WZ_NO_FALLOCATE 2    /* skip fallocate and write zeros (tests the fallback) */
/* Make [off, off+len) read back zeros: fallocate when the host can, else write zeros. -> len or -errno. */
int64_t tsb_write_zeroes(int32_t fd, int64_t off, int64_t len, int32_t flags, int32_t mem_align, int32_t off_align);
/* out[5]: page-cache pages of [off, off+len): cached, dirty, under writeback, evicted, recently evicted.
 * -ENOSYS where the host cannot tell (used by tests to prove a flush left nothing dirty). */
int32_t tsb_cache_stat(int32_t fd, int64_t off, int64_t len, uint64_t *out);

#endif
