/*
 * host.c — backend-independent host helpers for tsb.h: guest-memory allocation, thread naming,
 * eventfds, poll, fd and iovec I/O, sockets, ptys and terminal modes.
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
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
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
	if (n < 0 || n > 1024)
		return -EINVAL;
	struct pollfd p[n > 0 ? n : 1];
	for (int i = 0; i < n; i++) {
		p[i].fd = fds[i];
		p[i].events = events[i];
		p[i].revents = 0;
	}
	int r = poll(p, (nfds_t)n, timeout_ms);
	if (r < 0)
		return -errno;
	for (int i = 0; i < n; i++)
		revents[i] = p[i].revents;
	return r;
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
