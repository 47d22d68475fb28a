/*
 * host.c — backend-independent host helpers for tsb.h: guest-memory allocation, thread naming,
 * eventfds, poll, fd and iovec I/O, sockets, ptys and terminal modes, disk images and block devices.
 */
#define _GNU_SOURCE
#include "tsb.h"
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <linux/fs.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

static int neg(int r) { return r < 0 ? -errno : r; }
static int64_t neg64(int64_t r) { return r < 0 ? -errno : r; }

void *tsb_mem_alloc(uint64_t size, int32_t flags)
{
	/* MAP_NORESERVE: untouched guest RAM costs no host RAM (demand paging). */
	void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (p == MAP_FAILED)
		return NULL;
	madvise(p, size, MADV_DONTDUMP);
	if (flags & TSB_MEM_WIRED) {
		if (mlock(p, size) < 0) {
			munmap(p, size);
			return NULL;
		}
	}
	return p;
}

int32_t tsb_mem_free(void *p, uint64_t size) { return neg(munmap(p, size)); }

int32_t tsb_set_thread_name(const char *name)
{
	char buf[16];
	strncpy(buf, name, 15);
	buf[15] = 0;
	return -pthread_setname_np(pthread_self(), buf);
}

/* Let the calling thread run only on host CPUs cpus[0..n) (bhyve's vcpu.N.cpuset). */
int32_t tsb_thread_affinity(const int32_t *cpus, int32_t n)
{
	cpu_set_t set;
	CPU_ZERO(&set);
	for (int32_t i = 0; i < n; i++) {
		if (cpus[i] < 0 || cpus[i] >= CPU_SETSIZE)
			return -EINVAL;
		CPU_SET(cpus[i], &set);
	}
	return neg(sched_setaffinity(0, sizeof(set), &set));
}

int32_t tsb_gettid(void) { return (int32_t)syscall(SYS_gettid); }

int32_t tsb_eventfd(int32_t initval) { return neg(eventfd((unsigned)initval, EFD_CLOEXEC | EFD_NONBLOCK)); }

int32_t tsb_eventfd_signal(int32_t fd)
{
	uint64_t one = 1;
	return write(fd, &one, 8) == 8 ? 0 : -errno;
}

int64_t tsb_eventfd_drain(int32_t fd)
{
	uint64_t v = 0;
	ssize_t r = read(fd, &v, 8);
	if (r == 8)
		return (int64_t)v;
	return (r < 0 && errno != EAGAIN) ? -errno : 0;
}

int32_t tsb_poll(int32_t *fds, int16_t *events, int16_t *revents, int32_t n, int32_t timeout_ms)
{
	return tsb_ppoll(fds, events, revents, n, timeout_ms < 0 ? -1 : (int64_t)timeout_ms * 1000000);
}

int64_t tsb_read(int32_t fd, void *buf, uint64_t len) { return neg64(read(fd, buf, len)); }
int64_t tsb_write(int32_t fd, const void *buf, uint64_t len) { return neg64(write(fd, buf, len)); }

int64_t tsb_write_nb(int32_t fd, const void *buf, uint64_t len)
{
	struct stat st;
	if (fstat(fd, &st) == 0 && S_ISSOCK(st.st_mode))
		return neg64(send(fd, buf, len, MSG_DONTWAIT | MSG_NOSIGNAL));
	if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode))
		return neg64(write(fd, buf, len));
	/* pipes and ttys: only write when poll says there is room, so a stalled reader never blocks us */
	struct pollfd p = { .fd = fd, .events = POLLOUT };
	int r = poll(&p, 1, 0);
	if (r < 0)
		return -errno;
	if (r == 0 || !(p.revents & POLLOUT))
		return (p.revents & (POLLERR | POLLHUP)) ? -EPIPE : -EAGAIN;
	return neg64(write(fd, buf, len));
}

int64_t tsb_pread(int32_t fd, void *buf, uint64_t len, int64_t off) { return neg64(pread(fd, buf, len, off)); }
int64_t tsb_pwrite(int32_t fd, const void *buf, uint64_t len, int64_t off) { return neg64(pwrite(fd, buf, len, off)); }

int64_t tsb_preadv(int32_t fd, const uint64_t *iov, int32_t n, int64_t off)
{
	if (n < 0 || n > IOV_MAX)
		return -EINVAL;
	return neg64(preadv(fd, (const struct iovec *)iov, n, off));
}

int64_t tsb_pwritev(int32_t fd, const uint64_t *iov, int32_t n, int64_t off)
{
	if (n < 0 || n > IOV_MAX)
		return -EINVAL;
	return neg64(pwritev(fd, (const struct iovec *)iov, n, off));
}

int32_t tsb_close(int32_t fd) { return neg(close(fd)); }

int32_t tsb_set_nonblock(int32_t fd, int32_t on)
{
	int fl = fcntl(fd, F_GETFL);
	if (fl < 0)
		return -errno;
	return neg(fcntl(fd, F_SETFL, on ? (fl | O_NONBLOCK) : (fl & ~O_NONBLOCK)));
}

int32_t tsb_openpty(char *name, int32_t namelen)
{
	int m = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
	if (m < 0)
		return -errno;
	if (grantpt(m) < 0 || unlockpt(m) < 0 || ptsname_r(m, name, (size_t)namelen) != 0) {
		int e = errno;
		close(m);
		return -e;
	}
	/* Keep one slave fd open for the life of the process: with no slave open, reads of the master
	 * fail with EIO and poll reports POLLHUP in a loop until a client attaches. */
	int s = open(name, O_RDWR | O_NOCTTY | O_CLOEXEC);
	if (s >= 0) {
		struct termios t;
		if (tcgetattr(s, &t) == 0) {
			cfmakeraw(&t);
			tcsetattr(s, TCSANOW, &t);
		}
	}
	fcntl(m, F_SETFL, fcntl(m, F_GETFL) | O_NONBLOCK);
	return m;
}

int32_t tsb_listen_tcp(const char *addr, int32_t port)
{
	struct sockaddr_in6 a6;
	struct sockaddr_in a4;
	int fam = strchr(addr, ':') ? AF_INET6 : AF_INET;
	int fd = socket(fam, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	int one = 1;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	int r;
	if (fam == AF_INET6) {
		memset(&a6, 0, sizeof(a6));
		a6.sin6_family = AF_INET6;
		a6.sin6_port = htons((uint16_t)port);
		if (inet_pton(AF_INET6, addr, &a6.sin6_addr) != 1) {
			close(fd);
			return -EINVAL;
		}
		r = bind(fd, (struct sockaddr *)&a6, sizeof(a6));
	} else {
		memset(&a4, 0, sizeof(a4));
		a4.sin_family = AF_INET;
		a4.sin_port = htons((uint16_t)port);
		if (inet_pton(AF_INET, addr, &a4.sin_addr) != 1) {
			close(fd);
			return -EINVAL;
		}
		r = bind(fd, (struct sockaddr *)&a4, sizeof(a4));
	}
	if (r < 0 || listen(fd, 1) < 0) {
		int e = errno;
		close(fd);
		return -e;
	}
	return fd;
}

int32_t tsb_listen_unix(const char *path)
{
	struct sockaddr_un a;
	if (strlen(path) >= sizeof(a.sun_path))
		return -ENAMETOOLONG;
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	memset(&a, 0, sizeof(a));
	a.sun_family = AF_UNIX;
	strcpy(a.sun_path, path);
	if (bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(fd, 1) < 0) {
		int e = errno;
		close(fd);
		return -e;
	}
	return fd;
}

int32_t tsb_accept(int32_t fd)
{
	return neg(accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC));
}

#define MAX_TTYS 8
static struct { int fd; struct termios saved; } ttys[MAX_TTYS];
static int nttys;
static pthread_mutex_t tty_lock = PTHREAD_MUTEX_INITIALIZER;

static void restore_all(void)
{
	for (int i = 0; i < nttys; i++)
		tcsetattr(ttys[i].fd, TCSADRAIN, &ttys[i].saved);
}

int32_t tsb_isatty(int32_t fd) { return isatty(fd); }

int32_t tsb_tty_raw(int32_t fd, int32_t on)
{
	pthread_mutex_lock(&tty_lock);
	int i;
	for (i = 0; i < nttys && ttys[i].fd != fd; i++)
		;
	int r = 0;
	if (on) {
		if (i == nttys) {
			if (nttys == MAX_TTYS || tcgetattr(fd, &ttys[i].saved) < 0) {
				r = nttys == MAX_TTYS ? -ENOSPC : -errno;
				goto out;
			}
			ttys[i].fd = fd;
			if (nttys++ == 0)
				atexit(restore_all);
		}
		struct termios t = ttys[i].saved;
		cfmakeraw(&t);
		r = neg(tcsetattr(fd, TCSANOW, &t));
	} else if (i < nttys) {
		r = neg(tcsetattr(fd, TCSADRAIN, &ttys[i].saved));
	}
out:
	pthread_mutex_unlock(&tty_lock);
	return r;
}

static uint64_t raw_monotonic_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Process-wide epoch, so the nanosecond clock fits a JS number (2^53 ns = 104 days) on any host uptime. */
static uint64_t epoch_ns;
__attribute__((constructor)) static void init_epoch(void) { epoch_ns = raw_monotonic_ns(); }

uint64_t tsb_monotonic_ns(void) { return raw_monotonic_ns() - epoch_ns; }

int32_t tsb_ppoll(int32_t *fds, int16_t *events, int16_t *revents, int32_t n, int64_t timeout_ns)
{
	if (n < 0 || n > 1024)
		return -EINVAL;
	struct pollfd p[n > 0 ? n : 1];
	for (int i = 0; i < n; i++) {
		p[i].fd = fds[i];
		p[i].events = events[i];
		p[i].revents = 0;
	}
	struct timespec ts, *tp = NULL;
	if (timeout_ns >= 0) {
		ts.tv_sec = timeout_ns / 1000000000;
		ts.tv_nsec = timeout_ns % 1000000000;
		tp = &ts;
	}
	int r = ppoll(p, (nfds_t)n, tp, NULL);
	if (r < 0)
		return -errno;
	for (int i = 0; i < n; i++)
		revents[i] = p[i].revents;
	return r;
}

/* ---- block storage ---- */

int32_t tsb_open_disk(const char *path, int32_t flags)
{
	int fl = O_CLOEXEC | ((flags & TSB_OPEN_RDONLY) ? O_RDONLY : O_RDWR);
	if (flags & TSB_OPEN_DIRECT)
		fl |= O_DIRECT;
	if (flags & TSB_OPEN_SYNC)
		fl |= O_SYNC;
	return neg(open(path, fl));
}

/* ioctl whose argument is a buffer (e.g. the EVIOCG* queries of an evdev device): -errno or the result */
int32_t tsb_ioctl_buf(int32_t fd, uint64_t req, void *buf) { return neg(ioctl(fd, (unsigned long)req, buf)); }

int32_t tsb_disk_info(int32_t fd, uint64_t *out)
{
	struct stat st;
	if (fstat(fd, &st) < 0)
		return -errno;
	memset(out, 0, 8 * sizeof(uint64_t));
	out[4] = (uint64_t)st.st_blocks * 512;
	out[5] = (uint64_t)st.st_blksize;
	if (S_ISBLK(st.st_mode)) {
		uint64_t size = 0;
		int lss = 0;
		unsigned int pss = 0;
		if (ioctl(fd, BLKGETSIZE64, &size) < 0 || ioctl(fd, BLKSSZGET, &lss) < 0)
			return -errno;
		if (ioctl(fd, BLKPBSZGET, &pss) < 0)
			pss = (unsigned int)lss;
		out[0] = TSB_DISK_BLOCKDEV;
		out[1] = size;
		out[2] = (uint64_t)lss;
		out[3] = pss;
		/* direct I/O on a block device: buffers and offsets aligned to its logical block size */
		out[6] = out[7] = (uint64_t)lss;
		return 0;
	}
	out[0] = S_ISREG(st.st_mode) ? TSB_DISK_FILE : TSB_DISK_OTHER;
	out[1] = (uint64_t)st.st_size;
#ifdef STATX_DIOALIGN
	struct statx sx;
	if (statx(fd, "", AT_EMPTY_PATH, STATX_DIOALIGN, &sx) == 0 && (sx.stx_mask & STATX_DIOALIGN)) {
		out[6] = sx.stx_dio_mem_align;
		out[7] = sx.stx_dio_offset_align;
	}
#endif
	return 0;
}

int32_t tsb_fdatasync(int32_t fd)
{
	int r;
	do
		r = fdatasync(fd);
	while (r < 0 && errno == EINTR);
	return neg(r);
}

int32_t tsb_fallocate(int32_t fd, int32_t mode, int64_t off, int64_t len)
{
	int m;
	if (mode == TSB_FALLOC_PUNCH)
		m = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE;
	else if (mode == TSB_FALLOC_ZERO)
		m = FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE;
	else
		return -EINVAL;
	if (off < 0 || len <= 0)
		return -EINVAL;
	int r;
	do
		r = fallocate(fd, m, off, len);
	while (r < 0 && errno == EINTR);
	return r < 0 ? (errno == ENOSYS ? -EOPNOTSUPP : -errno) : 0;
}

/* Whole-buffer pread/pwrite: retries EINTR and short transfers; -> bytes (short only at EOF) or -errno. */
static int64_t rw_buf(int fd, char *buf, size_t len, int64_t off, int write)
{
	size_t done = 0;
	while (done < len) {
		ssize_t r = write ? pwrite(fd, buf + done, len - done, off + (int64_t)done)
				  : pread(fd, buf + done, len - done, off + (int64_t)done);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (r == 0)
			break;
		done += (size_t)r;
	}
	return (int64_t)done;
}

/* preadv/pwritev of a whole iovec array (modified in place), at most IOV_MAX entries per call. */
static int64_t rw_vec(int fd, struct iovec *v, int n, int64_t off, int write)
{
	int64_t done = 0;
	while (n > 0) {
		if (v->iov_len == 0) {
			v++;
			n--;
			continue;
		}
		int cnt = n > IOV_MAX ? IOV_MAX : n;
		ssize_t r = write ? pwritev(fd, v, cnt, off) : preadv(fd, v, cnt, off);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (r == 0)
			break;
		done += r;
		off += r;
		size_t left = (size_t)r;
		while (left > 0 && n > 0) {
			if (left >= v->iov_len) {
				left -= v->iov_len;
				v++;
				n--;
			} else {
				v->iov_base = (char *)v->iov_base + left;
				v->iov_len -= left;
				left = 0;
			}
		}
	}
	return done;
}

/* A cursor over an iovec array for the bounce path. */
struct iov_cursor {
	const struct iovec *v;
	int n, i;
	size_t o;
};

static void cursor_copy(struct iov_cursor *c, char *buf, size_t len, int to_iov)
{
	while (len > 0 && c->i < c->n) {
		size_t avail = c->v[c->i].iov_len - c->o;
		if (avail == 0) {
			c->i++;
			c->o = 0;
			continue;
		}
		size_t k = avail < len ? avail : len;
		char *p = (char *)c->v[c->i].iov_base + c->o;
		if (to_iov)
			memcpy(p, buf, k);
		else
			memcpy(buf, p, k);
		buf += k;
		len -= k;
		c->o += k;
	}
}

#define BOUNCE_BYTES (1u << 20)

/* Unaligned direct I/O: move the request through an aligned buffer, one aligned window at a time. */
static int64_t rw_bounce(int fd, const struct iovec *v, int n, uint64_t total, int64_t off, int write, size_t ma, size_t oa)
{
	size_t chunk = BOUNCE_BYTES < oa ? oa : BOUNCE_BYTES - BOUNCE_BYTES % oa;
	size_t balign = ma < 4096 ? 4096 : ma;
	void *buf;
	if (posix_memalign(&buf, balign, chunk) != 0)
		return -ENOMEM;
	struct iov_cursor c = { v, n, 0, 0 };
	int64_t lo = off - off % (int64_t)oa;
	int64_t end = off + (int64_t)total;
	int64_t hi = end % (int64_t)oa ? end + (int64_t)oa - end % (int64_t)oa : end;
	int64_t done = 0, r = 0;
	for (int64_t w = lo; w < hi; w += (int64_t)chunk) {
		size_t wl = (size_t)(hi - w) < chunk ? (size_t)(hi - w) : chunk;
		int64_t dlo = w > off ? w : off;
		int64_t dhi = w + (int64_t)wl < end ? w + (int64_t)wl : end;
		if (write) {
			if (dlo > w || dhi < w + (int64_t)wl) {
				/* read-modify-write: keep the bytes of the window the request does not cover */
				r = rw_buf(fd, buf, wl, w, 0);
				if (r < 0)
					break;
				memset((char *)buf + r, 0, wl - (size_t)r);
			}
			cursor_copy(&c, (char *)buf + (dlo - w), (size_t)(dhi - dlo), 0);
			r = rw_buf(fd, buf, wl, w, 1);
			if (r < 0)
				break;
			if (r < (int64_t)wl) {
				r = 0;
				break;
			}
			done += dhi - dlo;
		} else {
			r = rw_buf(fd, buf, wl, w, 0);
			if (r < 0)
				break;
			int64_t vhi = w + r < dhi ? w + r : dhi;
			if (vhi > dlo) {
				cursor_copy(&c, (char *)buf + (dlo - w), (size_t)(vhi - dlo), 1);
				done += vhi - dlo;
			}
			if (vhi < dhi) {
				r = 0;
				break;
			}
		}
	}
	free(buf);
	return r < 0 ? r : done;
}

int64_t tsb_blk_io(int32_t fd, const uint64_t *iov, int32_t n, int64_t off, int32_t write, int32_t mem_align, int32_t off_align)
{
	if (n < 0 || off < 0 || mem_align < 0 || off_align < 0)
		return -EINVAL;
	size_t ma = mem_align > 1 ? (size_t)mem_align : 1, oa = off_align > 1 ? (size_t)off_align : 1;
	if ((ma & (ma - 1)) || (oa & (oa - 1)))
		return -EINVAL;
	struct iovec *v = malloc(sizeof(struct iovec) * (size_t)(n > 0 ? n : 1));
	if (!v)
		return -ENOMEM;
	uint64_t total = 0;
	int aligned = (uint64_t)off % oa == 0;
	for (int i = 0; i < n; i++) {
		v[i].iov_base = (void *)(uintptr_t)iov[2 * i];
		v[i].iov_len = (size_t)iov[2 * i + 1];
		total += iov[2 * i + 1];
		if ((uintptr_t)v[i].iov_base % ma || v[i].iov_len % oa)
			aligned = 0;
	}
	int64_t r;
	if (total > (uint64_t)INT64_MAX - (uint64_t)off)
		r = -EINVAL;
	else if (aligned)
		r = rw_vec(fd, v, n, off, write != 0);
	else
		r = rw_bounce(fd, v, n, total, off, write != 0, ma, oa);
	free(v);
	return r;
}

static char *zero_buf;
static pthread_once_t zero_once = PTHREAD_ONCE_INIT;
static void zero_init(void)
{
	void *p;
	if (posix_memalign(&p, 4096, BOUNCE_BYTES) == 0) {
		memset(p, 0, BOUNCE_BYTES);
		zero_buf = p;
	}
}

int64_t tsb_write_zeroes(int32_t fd, int64_t off, int64_t len, int32_t flags, int32_t mem_align, int32_t off_align)
{
	if (off < 0 || len < 0 || len > INT64_MAX - off)
		return -EINVAL;
	if (len == 0)
		return 0;
	if (!(flags & TSB_WZ_NO_FALLOCATE)) {
		int modes[2] = { TSB_FALLOC_ZERO, 0 };
		if (flags & TSB_WZ_MAY_UNMAP) {
			modes[0] = TSB_FALLOC_PUNCH;
			modes[1] = TSB_FALLOC_ZERO;
		}
		for (int i = 0; i < 2 && modes[i]; i++) {
			int r = tsb_fallocate(fd, modes[i], off, len);
			if (r == 0)
				return len;
			/* unsupported here (file system, device, or an unaligned range): try the next way */
			if (r != -EOPNOTSUPP && r != -EINVAL && r != -ENODEV)
				return r;
		}
	}
	pthread_once(&zero_once, zero_init);
	if (!zero_buf)
		return -ENOMEM;
	int64_t done = 0;
	while (done < len) {
		uint64_t k = (uint64_t)(len - done) < BOUNCE_BYTES ? (uint64_t)(len - done) : BOUNCE_BYTES;
		uint64_t iov[2] = { (uint64_t)(uintptr_t)zero_buf, k };
		int64_t r = tsb_blk_io(fd, iov, 1, off + done, 1, mem_align, off_align);
		if (r < 0)
			return r;
		if ((uint64_t)r < k)
			return -EIO;
		done += r;
	}
	return done;
}

#ifndef __NR_cachestat
#define __NR_cachestat 451
#endif

int32_t tsb_cache_stat(int32_t fd, int64_t off, int64_t len, uint64_t *out)
{
	struct { uint64_t off, len; } range = { (uint64_t)off, (uint64_t)len };
	uint64_t cs[5] = { 0 };
	if (syscall(__NR_cachestat, fd, &range, cs, 0) < 0)
		return -errno;
	memcpy(out, cs, sizeof(cs));
	return 0;
}
