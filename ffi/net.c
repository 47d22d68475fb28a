/*
 * net.c — Linux tap devices for tsbhyve's network front ends (declarations and the design in net.h).
 */
#define _GNU_SOURCE
#include "net.h"
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <net/if.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>
#include <linux/if_tun.h>

static int32_t net_err(int r) { return r < 0 ? -errno : r; }

/* An AF_INET datagram socket in the caller's network namespace, for the SIOC* interface ioctls. */
static int ctl_socket(void) { return socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0); }

/* ifr zeroed with the interface name in it; -EINVAL when the name does not fit. */
static int ifr_named(struct ifreq *ifr, const char *name)
{
	size_t n = name ? strlen(name) : IFNAMSIZ;
	memset(ifr, 0, sizeof *ifr);
	if (n == 0 || n >= IFNAMSIZ)
		return -EINVAL;
	memcpy(ifr->ifr_name, name, n);
	return 0;
}

static int if_mtu(const char *name)
{
	struct ifreq ifr;
	if (ifr_named(&ifr, name) < 0)
		return -EINVAL;
	int s = ctl_socket();
	if (s < 0)
		return -errno;
	int r = ioctl(s, SIOCGIFMTU, &ifr);
	int e = errno;
	close(s);
	return r < 0 ? -e : ifr.ifr_mtu;
}

int32_t tsb_tap_open(const char *name, int32_t flags, char *actual, int32_t actual_len, int32_t *out)
{
	struct ifreq ifr;
	if (ifr_named(&ifr, name) < 0)
		return -EINVAL;
	int existed = strchr(name, '%') == NULL && if_nametoindex(name) != 0;
	if ((flags & TSB_TAP_NO_CREATE) && !existed)
		return -ENODEV;
	int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	ifr.ifr_flags = IFF_TAP | IFF_NO_PI | ((flags & TSB_TAP_VNET_HDR) ? IFF_VNET_HDR : 0);
	if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
		int e = errno;
		close(fd);
		return -e;
	}
	if (actual && actual_len > 0) {
		size_t n = strnlen(ifr.ifr_name, IFNAMSIZ);
		if (n >= (size_t)actual_len)
			n = (size_t)actual_len - 1;
		memcpy(actual, ifr.ifr_name, n);
		actual[n] = 0;
	}
	if (out) {
		out[0] = !existed;
		out[1] = (int32_t)if_nametoindex(ifr.ifr_name);
		out[2] = if_mtu(ifr.ifr_name);
		out[3] = ifr.ifr_flags;
	}
	return fd;
}

int32_t tsb_tap_set_vnet_hdr_sz(int32_t fd, int32_t size)
{
	int sz = size;
	return net_err(ioctl(fd, TUNSETVNETHDRSZ, &sz));
}

int32_t tsb_tap_set_offload(int32_t fd, int32_t offloads)
{
	unsigned long f = 0;
	if (offloads & TSB_TAP_OFF_CSUM)
		f |= TUN_F_CSUM;
	if (offloads & TSB_TAP_OFF_TSO4)
		f |= TUN_F_TSO4;
	if (offloads & TSB_TAP_OFF_TSO6)
		f |= TUN_F_TSO6;
	if (offloads & TSB_TAP_OFF_TSO_ECN)
		f |= TUN_F_TSO_ECN;
	if (offloads & TSB_TAP_OFF_UFO)
		f |= TUN_F_UFO;
	return net_err(ioctl(fd, TUNSETOFFLOAD, f));
}

int32_t tsb_net_if_up(const char *name, int32_t mtu)
{
	struct ifreq ifr;
	if (ifr_named(&ifr, name) < 0)
		return -EINVAL;
	int s = ctl_socket();
	if (s < 0)
		return -errno;
	int r = 0;
	if (mtu > 0) {
		ifr.ifr_mtu = mtu;
		r = ioctl(s, SIOCSIFMTU, &ifr);
	}
	if (r == 0)
		r = ioctl(s, SIOCGIFFLAGS, &ifr);
	if (r == 0 && !(ifr.ifr_flags & IFF_UP)) {
		ifr.ifr_flags |= IFF_UP;
		r = ioctl(s, SIOCSIFFLAGS, &ifr);
	}
	int e = errno;
	close(s);
	return r < 0 ? -e : 0;
}

int64_t tsb_readv(int32_t fd, const uint64_t *iov, int32_t n)
{
	if (n < 0 || n > IOV_MAX)
		return -EINVAL;
	ssize_t r;
	do
		r = readv(fd, (const struct iovec *)iov, n);
	while (r < 0 && errno == EINTR);
	return r < 0 ? -errno : r;
}

int64_t tsb_readv_frame(int32_t fd, const uint64_t *iov, int32_t n)
{
	if (n < 0 || n > IOV_MAX - 1)
		return -EINVAL;
	struct iovec v[IOV_MAX];
	unsigned char spare;
	size_t room = 0;
	memcpy(v, iov, (size_t)n * sizeof v[0]);
	for (int i = 0; i < n; i++)
		room += v[i].iov_len;
	v[n].iov_base = &spare;
	v[n].iov_len = 1;
	ssize_t r;
	do
		r = readv(fd, v, n + 1);
	while (r < 0 && errno == EINTR);
	if (r < 0)
		return -errno;
	return (size_t)r > room ? -EMSGSIZE : r;
}

int64_t tsb_writev(int32_t fd, const uint64_t *iov, int32_t n)
{
	if (n < 0 || n > IOV_MAX)
		return -EINVAL;
	ssize_t r;
	do
		r = writev(fd, (const struct iovec *)iov, n);
	while (r < 0 && errno == EINTR);
	return r < 0 ? -errno : r;
}
