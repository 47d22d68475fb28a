/*
 * kvm.c — the Linux KVM backend of tsb.h.
 *
 * Kept deliberately thin: every function maps to one or two ioctls. The only state kept here is
 * what the kernel API forces on us: the vCPU fds and run pages, the thread that runs each vCPU
 * (for kicks), a pending IN/MMIO-read result to copy back, and the GSI routing table (KVM replaces
 * the whole table on every update).
 */
#define _GNU_SOURCE
#include "tsb.h"
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#define KICK_SIGNAL (SIGRTMIN + 5)
#define MAX_ROUTES 1024

struct vcpu {
	int fd;
	struct kvm_run *run;
	struct tsb_exit *exit;
	pthread_t thread;
	int bound;
	/* a guest read waiting for TypeScript's answer in exit->data */
	uint8_t *pending_dst;
	uint32_t pending_len;
};

struct vm {
	int used;
	int fd;
	int caps;
	pthread_mutex_t lock;
	struct vcpu vcpus[TSB_MAX_VCPUS];
	int nroutes;
	struct kvm_irq_routing_entry routes[MAX_ROUTES];
};

static int sysfd = -1;
static int run_size;
static struct vm vms[TSB_MAX_VMS];
static pthread_mutex_t global_lock = PTHREAD_MUTEX_INITIALIZER;

static int neg(int r) { return r < 0 ? -errno : r; }

static int kvm_open(void)
{
	if (sysfd >= 0)
		return 0;
	int fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (ioctl(fd, KVM_GET_API_VERSION, 0) != KVM_API_VERSION) {
		close(fd);
		return -ENOTSUP;
	}
	run_size = ioctl(fd, KVM_GET_VCPU_MMAP_SIZE, 0);
	if (run_size <= 0) {
		close(fd);
		return -ENOTSUP;
	}
	sysfd = fd;
	return 0;
}

static struct vm *get_vm(int32_t h)
{
	if (h < 0 || h >= TSB_MAX_VMS || !vms[h].used)
		return NULL;
	return &vms[h];
}

static struct vcpu *get_vcpu(int32_t h, int32_t id)
{
	struct vm *vm = get_vm(h);
	if (!vm || id < 0 || id >= TSB_MAX_VCPUS || !vm->vcpus[id].run)
		return NULL;
	return &vm->vcpus[id];
}

int32_t tsb_abi_version(void) { return TSB_ABI_VERSION; }

int32_t tsb_available(void)
{
	pthread_mutex_lock(&global_lock);
	int r = kvm_open();
	pthread_mutex_unlock(&global_lock);
	return r;
}

static void kick_handler(int sig) { (void)sig; }

/*
 * The PC's interrupt wiring as the kernel's routing table: ISA IRQ n drives PIC pin n and IOAPIC pin n,
 * except the timer, IRQ 0, which is wired to IOAPIC pin 2 (the MP table and MADT say so, as on real
 * chipsets); pin 2 is the PIC cascade and has no ISA IRQ of its own. GSIs 16-23 are the IOAPIC's PCI
 * pins. This is also where the in-kernel PIT (which raises GSI 0) gets its pin-2 wiring.
 */
static void default_routes(struct vm *vm)
{
	int n = 0;
	for (int gsi = 0; gsi < 24; gsi++) {
		if (gsi == 2)
			continue;
		struct kvm_irq_routing_entry *e;
		if (gsi < 16) {
			e = &vm->routes[n++];
			memset(e, 0, sizeof(*e));
			e->gsi = gsi;
			e->type = KVM_IRQ_ROUTING_IRQCHIP;
			e->u.irqchip.irqchip = gsi < 8 ? KVM_IRQCHIP_PIC_MASTER : KVM_IRQCHIP_PIC_SLAVE;
			e->u.irqchip.pin = gsi & 7;
		}
		e = &vm->routes[n++];
		memset(e, 0, sizeof(*e));
		e->gsi = gsi;
		e->type = KVM_IRQ_ROUTING_IRQCHIP;
		e->u.irqchip.irqchip = KVM_IRQCHIP_IOAPIC;
		e->u.irqchip.pin = gsi == 0 ? 2 : gsi;
	}
	vm->nroutes = n;
}

/* KVM replaces the whole table on every update: push all of it. Call with vm->lock held. */
static int push_routes(struct vm *vm)
{
	size_t sz = sizeof(struct kvm_irq_routing) + vm->nroutes * sizeof(struct kvm_irq_routing_entry);
	struct kvm_irq_routing *t = calloc(1, sz);
	if (!t)
		return -ENOMEM;
	t->nr = vm->nroutes;
	memcpy(t->entries, vm->routes, vm->nroutes * sizeof(struct kvm_irq_routing_entry));
	int r = neg(ioctl(vm->fd, KVM_SET_GSI_ROUTING, t));
	free(t);
	return r;
}

int32_t tsb_vm_create(void)
{
	pthread_mutex_lock(&global_lock);
	int r = kvm_open();
	if (r < 0)
		goto out;
	int h;
	for (h = 0; h < TSB_MAX_VMS && vms[h].used; h++)
		;
	if (h == TSB_MAX_VMS) {
		r = -EMFILE;
		goto out;
	}
	int fd = ioctl(sysfd, KVM_CREATE_VM, 0);
	if (fd < 0) {
		r = -errno;
		goto out;
	}
	struct vm *vm = &vms[h];
	memset(vm, 0, sizeof(*vm));
	vm->fd = fd;
	pthread_mutex_init(&vm->lock, NULL);
	/* Intel real-mode helpers; harmless where unused. Placed below the 16 MiB boot-ROM window. */
	if (ioctl(sysfd, KVM_CHECK_EXTENSION, KVM_CAP_SET_TSS_ADDR) > 0)
		ioctl(fd, KVM_SET_TSS_ADDR, 0xfeffd000UL);
	if (ioctl(sysfd, KVM_CHECK_EXTENSION, KVM_CAP_SET_IDENTITY_MAP_ADDR) > 0) {
		uint64_t a = 0xfeffc000UL;
		ioctl(fd, KVM_SET_IDENTITY_MAP_ADDR, &a);
	}
	int caps = 0;
	if (ioctl(fd, KVM_CREATE_IRQCHIP, 0) == 0)
		caps |= TSB_CAP_IRQCHIP | TSB_CAP_MSI;
	struct kvm_pit_config pit = { .flags = KVM_PIT_SPEAKER_DUMMY };
	if ((caps & TSB_CAP_IRQCHIP) && ioctl(fd, KVM_CREATE_PIT2, &pit) == 0)
		caps |= TSB_CAP_PIT;
	if (ioctl(fd, KVM_CHECK_EXTENSION, KVM_CAP_IOEVENTFD) > 0)
		caps |= TSB_CAP_IOEVENTFD;
	if (ioctl(fd, KVM_CHECK_EXTENSION, KVM_CAP_IRQFD) > 0)
		caps |= TSB_CAP_IRQFD;
	if (ioctl(fd, KVM_CHECK_EXTENSION, KVM_CAP_READONLY_MEM) > 0)
		caps |= TSB_CAP_READONLY_MEM;
	if (ioctl(fd, KVM_CHECK_EXTENSION, KVM_CAP_IMMEDIATE_EXIT) > 0)
		caps |= TSB_CAP_IMMEDIATE_EXIT;
	vm->caps = caps;
	default_routes(vm);
	if (caps & TSB_CAP_IRQCHIP) {
		r = push_routes(vm);
		if (r < 0) {
			close(fd);
			goto out;
		}
	}
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = kick_handler; /* no SA_RESTART: KVM_RUN must return EINTR */
	sigemptyset(&sa.sa_mask);
	sigaction(KICK_SIGNAL, &sa, NULL);
	vm->used = 1;
	r = h;
out:
	pthread_mutex_unlock(&global_lock);
	return r;
}

int32_t tsb_vm_caps(int32_t h)
{
	struct vm *vm = get_vm(h);
	return vm ? vm->caps : -EBADF;
}

int32_t tsb_vm_max_vcpus(int32_t h)
{
	struct vm *vm = get_vm(h);
	if (!vm)
		return -EBADF;
	int n = ioctl(vm->fd, KVM_CHECK_EXTENSION, KVM_CAP_MAX_VCPUS);
	if (n <= 0)
		n = ioctl(vm->fd, KVM_CHECK_EXTENSION, KVM_CAP_NR_VCPUS);
	if (n <= 0)
		n = 4;
	return n < TSB_MAX_VCPUS ? n : TSB_MAX_VCPUS;
}

int32_t tsb_vm_destroy(int32_t h)
{
	pthread_mutex_lock(&global_lock);
	struct vm *vm = get_vm(h);
	if (!vm) {
		pthread_mutex_unlock(&global_lock);
		return -EBADF;
	}
	for (int i = 0; i < TSB_MAX_VCPUS; i++) {
		struct vcpu *v = &vm->vcpus[i];
		if (v->run) {
			munmap(v->run, run_size);
			close(v->fd);
			free(v->exit);
		}
	}
	close(vm->fd);
	vm->used = 0;
	pthread_mutex_unlock(&global_lock);
	return 0;
}

int32_t tsb_mem_map(int32_t h, int32_t slot, uint64_t gpa, uint64_t size, void *host, int32_t flags)
{
	struct vm *vm = get_vm(h);
	if (!vm)
		return -EBADF;
	struct kvm_userspace_memory_region r = {
		.slot = (uint32_t)slot,
		.flags = (flags & TSB_MEM_READONLY) ? KVM_MEM_READONLY : 0,
		.guest_phys_addr = gpa,
		.memory_size = size,
		.userspace_addr = (uint64_t)(uintptr_t)host,
	};
	return neg(ioctl(vm->fd, KVM_SET_USER_MEMORY_REGION, &r));
}

int32_t tsb_mem_unmap(int32_t h, int32_t slot)
{
	struct vm *vm = get_vm(h);
	if (!vm)
		return -EBADF;
	struct kvm_userspace_memory_region r = { .slot = (uint32_t)slot };
	return neg(ioctl(vm->fd, KVM_SET_USER_MEMORY_REGION, &r));
}

int32_t tsb_vcpu_create(int32_t h, int32_t id)
{
	struct vm *vm = get_vm(h);
	if (!vm || id < 0 || id >= TSB_MAX_VCPUS)
		return -EINVAL;
	struct vcpu *v = &vm->vcpus[id];
	if (v->run)
		return -EEXIST;
	int fd = ioctl(vm->fd, KVM_CREATE_VCPU, (unsigned long)id);
	if (fd < 0)
		return -errno;
	void *run = mmap(NULL, run_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (run == MAP_FAILED) {
		int e = errno;
		close(fd);
		return -e;
	}
	struct tsb_exit *ex = calloc(1, sizeof(*ex));
	if (!ex) {
		munmap(run, run_size);
		close(fd);
		return -ENOMEM;
	}
	v->fd = fd;
	v->exit = ex;
	v->run = run;
	return 0;
}

struct tsb_exit *tsb_vcpu_exit_page(int32_t h, int32_t id)
{
	struct vcpu *v = get_vcpu(h, id);
	return v ? v->exit : NULL;
}

int32_t tsb_vcpu_bind_thread(int32_t h, int32_t id, const char *name)
{
	struct vcpu *v = get_vcpu(h, id);
	if (!v)
		return -EBADF;
	v->thread = pthread_self();
	__atomic_store_n(&v->bound, 1, __ATOMIC_RELEASE);
	if (name)
		tsb_set_thread_name(name);
	/* the kick signal must be deliverable on this thread */
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, KICK_SIGNAL);
	pthread_sigmask(SIG_UNBLOCK, &set, NULL);
	return 0;
}

int32_t tsb_vcpu_kick(int32_t h, int32_t id)
{
	struct vcpu *v = get_vcpu(h, id);
	if (!v)
		return -EBADF;
	__atomic_store_n(&v->run->immediate_exit, 1, __ATOMIC_SEQ_CST);
	if (__atomic_load_n(&v->bound, __ATOMIC_ACQUIRE))
		pthread_kill(v->thread, KICK_SIGNAL);
	return 0;
}

static int32_t fill_exit(struct vcpu *v)
{
	struct kvm_run *run = v->run;
	struct tsb_exit *ex = v->exit;
	ex->exits++;
	ex->data_len = 0;
	ex->count = 1;
	ex->detail = 0;
	ex->rip = 0;
	switch (run->exit_reason) {
	case KVM_EXIT_IO: {
		uint32_t len = (uint32_t)run->io.size * run->io.count;
		if (len > sizeof(ex->data) || run->io.data_offset + len > (uint64_t)run_size) {
			ex->reason = TSB_EXIT_INTERNAL;
			ex->detail = 0x10000;
			return ex->reason;
		}
		uint8_t *src = (uint8_t *)run + run->io.data_offset;
		ex->reason = TSB_EXIT_IO;
		ex->size = run->io.size;
		ex->count = run->io.count;
		ex->addr = run->io.port;
		ex->data_len = len;
		if (run->io.direction == KVM_EXIT_IO_OUT) {
			ex->dir = TSB_DIR_WRITE;
			memcpy(ex->data, src, len);
		} else {
			ex->dir = TSB_DIR_READ;
			memset(ex->data, 0xff, len);
			v->pending_dst = src;
			v->pending_len = len;
		}
		return ex->reason;
	}
	case KVM_EXIT_MMIO:
		ex->reason = TSB_EXIT_MMIO;
		ex->size = run->mmio.len;
		ex->addr = run->mmio.phys_addr;
		ex->data_len = run->mmio.len;
		if (run->mmio.is_write) {
			ex->dir = TSB_DIR_WRITE;
			memcpy(ex->data, run->mmio.data, 8);
		} else {
			ex->dir = TSB_DIR_READ;
			memset(ex->data, 0xff, 8);
			v->pending_dst = run->mmio.data;
			v->pending_len = run->mmio.len;
		}
		return ex->reason;
	case KVM_EXIT_HLT:
		return ex->reason = TSB_EXIT_HLT;
	case KVM_EXIT_SHUTDOWN:
		return ex->reason = TSB_EXIT_SHUTDOWN;
	case KVM_EXIT_INTR:
		return ex->reason = TSB_EXIT_INTR;
	case KVM_EXIT_DEBUG:
		return ex->reason = TSB_EXIT_DEBUG;
	case KVM_EXIT_FAIL_ENTRY:
		ex->detail = run->fail_entry.hardware_entry_failure_reason;
		return ex->reason = TSB_EXIT_FAIL_ENTRY;
	case KVM_EXIT_INTERNAL_ERROR:
		ex->detail = run->internal.suberror;
		return ex->reason = TSB_EXIT_INTERNAL;
	case KVM_EXIT_SYSTEM_EVENT:
		ex->detail = run->system_event.type;
		if (run->system_event.type == KVM_SYSTEM_EVENT_RESET)
			return ex->reason = TSB_EXIT_RESET;
		if (run->system_event.type == KVM_SYSTEM_EVENT_SHUTDOWN)
			return ex->reason = TSB_EXIT_POWEROFF;
		return ex->reason = TSB_EXIT_SHUTDOWN;
	default:
		ex->detail = run->exit_reason;
		return ex->reason = TSB_EXIT_UNKNOWN;
	}
}

int32_t tsb_vcpu_run(int32_t h, int32_t id)
{
	struct vcpu *v = get_vcpu(h, id);
	if (!v)
		return -EBADF;
	if (v->pending_dst) {
		memcpy(v->pending_dst, v->exit->data, v->pending_len);
		v->pending_dst = NULL;
	}
	int r = ioctl(v->fd, KVM_RUN, 0);
	if (r < 0) {
		int e = errno;
		if (e == EINTR || e == EAGAIN) {
			__atomic_store_n(&v->run->immediate_exit, 0, __ATOMIC_SEQ_CST);
			v->exit->exits++;
			return v->exit->reason = TSB_EXIT_INTR;
		}
		v->exit->detail = (uint64_t)e;
		return v->exit->reason = TSB_EXIT_ERROR;
	}
	return fill_exit(v);
}

int32_t tsb_vcpu_get_regs(int32_t h, int32_t id, struct tsb_regs *out)
{
	struct vcpu *v = get_vcpu(h, id);
	if (!v)
		return -EBADF;
	struct kvm_regs k;
	if (ioctl(v->fd, KVM_GET_REGS, &k) < 0)
		return -errno;
	uint64_t *r = out->r;
	r[0] = k.rax; r[1] = k.rbx; r[2] = k.rcx; r[3] = k.rdx; r[4] = k.rsi; r[5] = k.rdi;
	r[6] = k.rsp; r[7] = k.rbp; r[8] = k.r8; r[9] = k.r9; r[10] = k.r10; r[11] = k.r11;
	r[12] = k.r12; r[13] = k.r13; r[14] = k.r14; r[15] = k.r15; r[16] = k.rip; r[17] = k.rflags;
	return 0;
}

int32_t tsb_vcpu_set_regs(int32_t h, int32_t id, const struct tsb_regs *in)
{
	struct vcpu *v = get_vcpu(h, id);
	if (!v)
		return -EBADF;
	const uint64_t *r = in->r;
	struct kvm_regs k = {
		.rax = r[0], .rbx = r[1], .rcx = r[2], .rdx = r[3], .rsi = r[4], .rdi = r[5],
		.rsp = r[6], .rbp = r[7], .r8 = r[8], .r9 = r[9], .r10 = r[10], .r11 = r[11],
		.r12 = r[12], .r13 = r[13], .r14 = r[14], .r15 = r[15], .rip = r[16], .rflags = r[17],
	};
	return neg(ioctl(v->fd, KVM_SET_REGS, &k));
}

static void seg_from_kvm(struct tsb_seg *d, const struct kvm_segment *s)
{
	d->base = s->base; d->limit = s->limit; d->selector = s->selector; d->type = s->type;
	d->present = s->present; d->dpl = s->dpl; d->db = s->db; d->s = s->s; d->l = s->l;
	d->g = s->g; d->avl = s->avl; d->unusable = s->unusable; d->pad = 0;
}

static void seg_to_kvm(struct kvm_segment *d, const struct tsb_seg *s)
{
	memset(d, 0, sizeof(*d));
	d->base = s->base; d->limit = s->limit; d->selector = s->selector; d->type = s->type;
	d->present = s->present; d->dpl = s->dpl; d->db = s->db; d->s = s->s; d->l = s->l;
	d->g = s->g; d->avl = s->avl; d->unusable = s->unusable;
}

int32_t tsb_vcpu_get_sregs(int32_t h, int32_t id, struct tsb_sregs *out)
{
	struct vcpu *v = get_vcpu(h, id);
	if (!v)
		return -EBADF;
	struct kvm_sregs k;
	if (ioctl(v->fd, KVM_GET_SREGS, &k) < 0)
		return -errno;
	seg_from_kvm(&out->cs, &k.cs); seg_from_kvm(&out->ds, &k.ds); seg_from_kvm(&out->es, &k.es);
	seg_from_kvm(&out->fs, &k.fs); seg_from_kvm(&out->gs, &k.gs); seg_from_kvm(&out->ss, &k.ss);
	seg_from_kvm(&out->tr, &k.tr); seg_from_kvm(&out->ldt, &k.ldt);
	memset(&out->gdt, 0, sizeof(out->gdt) * 2);
	out->gdt.base = k.gdt.base; out->gdt.limit = k.gdt.limit;
	out->idt.base = k.idt.base; out->idt.limit = k.idt.limit;
	out->cr0 = k.cr0; out->cr2 = k.cr2; out->cr3 = k.cr3; out->cr4 = k.cr4; out->cr8 = k.cr8;
	out->efer = k.efer; out->apic_base = k.apic_base;
	return 0;
}

int32_t tsb_vcpu_set_sregs(int32_t h, int32_t id, const struct tsb_sregs *in)
{
	struct vcpu *v = get_vcpu(h, id);
	if (!v)
		return -EBADF;
	struct kvm_sregs k;
	/* start from the current state so the interrupt bitmap and anything we do not model survive */
	if (ioctl(v->fd, KVM_GET_SREGS, &k) < 0)
		return -errno;
	seg_to_kvm(&k.cs, &in->cs); seg_to_kvm(&k.ds, &in->ds); seg_to_kvm(&k.es, &in->es);
	seg_to_kvm(&k.fs, &in->fs); seg_to_kvm(&k.gs, &in->gs); seg_to_kvm(&k.ss, &in->ss);
	seg_to_kvm(&k.tr, &in->tr); seg_to_kvm(&k.ldt, &in->ldt);
	k.gdt.base = in->gdt.base; k.gdt.limit = in->gdt.limit;
	k.idt.base = in->idt.base; k.idt.limit = in->idt.limit;
	k.cr0 = in->cr0; k.cr2 = in->cr2; k.cr3 = in->cr3; k.cr4 = in->cr4; k.cr8 = in->cr8;
	k.efer = in->efer; k.apic_base = in->apic_base;
	return neg(ioctl(v->fd, KVM_SET_SREGS, &k));
}

int32_t tsb_supported_cpuid(int32_t h, struct tsb_cpuid_entry *out, int32_t max)
{
	(void)h;
	if (kvm_open() < 0)
		return -ENODEV;
	int n = 256;
	struct kvm_cpuid2 *c = calloc(1, sizeof(*c) + n * sizeof(struct kvm_cpuid_entry2));
	if (!c)
		return -ENOMEM;
	c->nent = n;
	if (ioctl(sysfd, KVM_GET_SUPPORTED_CPUID, c) < 0) {
		int e = errno;
		free(c);
		return -e;
	}
	int cnt = (int)c->nent < max ? (int)c->nent : max;
	for (int i = 0; i < cnt; i++) {
		struct kvm_cpuid_entry2 *e = &c->entries[i];
		out[i] = (struct tsb_cpuid_entry){ e->function, e->index,
			(e->flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX) ? TSB_CPUID_FLAG_INDEXED : 0,
			e->eax, e->ebx, e->ecx, e->edx };
	}
	free(c);
	return cnt;
}

int32_t tsb_vcpu_set_cpuid(int32_t h, int32_t id, const struct tsb_cpuid_entry *in, int32_t n)
{
	struct vcpu *v = get_vcpu(h, id);
	if (!v || n < 0 || n > 1024)
		return -EINVAL;
	struct kvm_cpuid2 *c = calloc(1, sizeof(*c) + n * sizeof(struct kvm_cpuid_entry2));
	if (!c)
		return -ENOMEM;
	c->nent = n;
	for (int i = 0; i < n; i++) {
		struct kvm_cpuid_entry2 *e = &c->entries[i];
		e->function = in[i].function; e->index = in[i].index;
		e->flags = (in[i].flags & TSB_CPUID_FLAG_INDEXED) ? KVM_CPUID_FLAG_SIGNIFCANT_INDEX : 0;
		e->eax = in[i].eax; e->ebx = in[i].ebx; e->ecx = in[i].ecx; e->edx = in[i].edx;
	}
	int r = neg(ioctl(v->fd, KVM_SET_CPUID2, c));
	free(c);
	return r;
}

static int msr_io(int32_t h, int32_t id, const uint32_t *idx, uint64_t *val, int32_t n, int set)
{
	struct vcpu *v = get_vcpu(h, id);
	if (!v || n < 0 || n > 256)
		return -EINVAL;
	struct kvm_msrs *m = calloc(1, sizeof(*m) + n * sizeof(struct kvm_msr_entry));
	if (!m)
		return -ENOMEM;
	m->nmsrs = n;
	for (int i = 0; i < n; i++) {
		m->entries[i].index = idx[i];
		m->entries[i].data = set ? val[i] : 0;
	}
	int r = ioctl(v->fd, set ? KVM_SET_MSRS : KVM_GET_MSRS, m);
	if (r < 0)
		r = -errno;
	else if (!set)
		for (int i = 0; i < r; i++)
			val[i] = m->entries[i].data;
	free(m);
	return r; /* number of MSRs processed */
}

int32_t tsb_vcpu_set_msrs(int32_t h, int32_t id, const uint32_t *idx, const uint64_t *val, int32_t n)
{
	return msr_io(h, id, idx, (uint64_t *)val, n, 1);
}

int32_t tsb_vcpu_get_msrs(int32_t h, int32_t id, const uint32_t *idx, uint64_t *val, int32_t n)
{
	return msr_io(h, id, idx, val, n, 0);
}

int32_t tsb_vcpu_set_runnable(int32_t h, int32_t id, int32_t runnable)
{
	struct vcpu *v = get_vcpu(h, id);
	if (!v)
		return -EBADF;
	struct kvm_mp_state s = { .mp_state = runnable ? KVM_MP_STATE_RUNNABLE : KVM_MP_STATE_UNINITIALIZED };
	return neg(ioctl(v->fd, KVM_SET_MP_STATE, &s));
}

int32_t tsb_vcpu_stopped(int32_t h, int32_t id)
{
	struct vcpu *v = get_vcpu(h, id);
	if (!v)
		return -EBADF;
	/*
	 * Only KVM_GET_MP_STATE and the run page's if_flag (written on every return from KVM_RUN, EINTR
	 * included). Not KVM_GET_REGS: after an EINTR that came before a pending port/MMIO completion ran,
	 * reading the registers syncs the instruction emulator's half-done register cache into the vCPU and
	 * can corrupt the guest when the instruction then completes.
	 */
	struct kvm_mp_state s;
	if (ioctl(v->fd, KVM_GET_MP_STATE, &s) < 0)
		return -errno;
	if (s.mp_state == KVM_MP_STATE_UNINITIALIZED || s.mp_state == KVM_MP_STATE_INIT_RECEIVED)
		return 1; /* never started (or parked by INIT): waits for a SIPI */
	if (s.mp_state != KVM_MP_STATE_HALTED)
		return 0;
	return v->run->if_flag ? 0 : 1; /* halted with interrupts disabled */
}

int32_t tsb_irq_line(int32_t h, int32_t gsi, int32_t level)
{
	struct vm *vm = get_vm(h);
	if (!vm)
		return -EBADF;
	struct kvm_irq_level l = { .irq = (uint32_t)gsi, .level = (uint32_t)level };
	return neg(ioctl(vm->fd, KVM_IRQ_LINE, &l));
}

int32_t tsb_msi(int32_t h, uint64_t addr, uint32_t data)
{
	struct vm *vm = get_vm(h);
	if (!vm)
		return -EBADF;
	struct kvm_msi m = { .address_lo = (uint32_t)addr, .address_hi = (uint32_t)(addr >> 32), .data = data };
	int r = ioctl(vm->fd, KVM_SIGNAL_MSI, &m);
	return r < 0 ? -errno : 0;
}

int32_t tsb_ioeventfd(int32_t h, uint64_t addr, int32_t len, int32_t pio, int64_t datamatch, int32_t fd, int32_t deassign)
{
	struct vm *vm = get_vm(h);
	if (!vm)
		return -EBADF;
	struct kvm_ioeventfd e;
	memset(&e, 0, sizeof(e));
	e.addr = addr;
	e.len = (uint32_t)len;
	e.fd = fd;
	if (pio)
		e.flags |= KVM_IOEVENTFD_FLAG_PIO;
	if (datamatch >= 0) {
		e.flags |= KVM_IOEVENTFD_FLAG_DATAMATCH;
		e.datamatch = (uint64_t)datamatch;
	}
	if (deassign)
		e.flags |= KVM_IOEVENTFD_FLAG_DEASSIGN;
	return neg(ioctl(vm->fd, KVM_IOEVENTFD, &e));
}

int32_t tsb_irqfd(int32_t h, int32_t gsi, int32_t fd, int32_t resample_fd, int32_t deassign)
{
	struct vm *vm = get_vm(h);
	if (!vm)
		return -EBADF;
	struct kvm_irqfd f;
	memset(&f, 0, sizeof(f));
	f.fd = (uint32_t)fd;
	f.gsi = (uint32_t)gsi;
	if (deassign)
		f.flags |= KVM_IRQFD_FLAG_DEASSIGN;
	else if (resample_fd >= 0) {
		f.flags |= KVM_IRQFD_FLAG_RESAMPLE;
		f.resamplefd = (uint32_t)resample_fd;
	}
	return neg(ioctl(vm->fd, KVM_IRQFD, &f));
}

int32_t tsb_msi_route(int32_t h, int32_t gsi, uint64_t addr, uint32_t data)
{
	struct vm *vm = get_vm(h);
	if (!vm || gsi < 24)
		return -EINVAL;
	pthread_mutex_lock(&vm->lock);
	int i;
	for (i = 0; i < vm->nroutes && vm->routes[i].gsi != (uint32_t)gsi; i++)
		;
	if (i == vm->nroutes) {
		if (vm->nroutes == MAX_ROUTES) {
			pthread_mutex_unlock(&vm->lock);
			return -ENOSPC;
		}
		vm->nroutes++;
	}
	struct kvm_irq_routing_entry *e = &vm->routes[i];
	memset(e, 0, sizeof(*e));
	e->gsi = (uint32_t)gsi;
	e->type = KVM_IRQ_ROUTING_MSI;
	e->u.msi.address_lo = (uint32_t)addr;
	e->u.msi.address_hi = (uint32_t)(addr >> 32);
	e->u.msi.data = data;
	int r = push_routes(vm);
	pthread_mutex_unlock(&vm->lock);
	return r;
}
