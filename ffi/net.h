/*
 * net.h — host network devices for the network front ends (virtio-net now, e1000 later).
 *
 * Linux tap: a tap interface is opened (created when missing, attached when it exists) through
 * /dev/net/tun as an Ethernet device without packet information, optionally with the virtio-net header
 * in front of every frame (IFF_VNET_HDR) so checksum and segmentation offloads pass between the guest
 * and the host kernel untouched. Frames move with one readv / writev per frame on (host pointer, length)
 * pairs that point straight into guest RAM. Every function returns >= 0 on success, -errno on failure.
 * A FreeBSD backend (tap(4) / if_tuntap with TAPSVNETHDR) implements the same functions.
 */
#ifndef TSB_NET_H
#define TSB_NET_H
#include <stdint.h>

#define TSB_TAP_VNET_HDR 1       /* frames carry a virtio-net header (IFF_VNET_HDR) */
#define TSB_TAP_NO_CREATE 2      /* attach only: fail with -ENODEV when the interface does not exist */

/* tsb_tap_open out[4]: created (1: the interface did not exist before), ifindex, MTU, flags (IFF_*) */
#define TSB_TAP_INFO_WORDS 4

/* Offload bits for tsb_tap_set_offload: what the host may hand us (== the guest may receive). */
#define TSB_TAP_OFF_CSUM    1    /* partial checksums (NEEDS_CSUM) */
#define TSB_TAP_OFF_TSO4    2
#define TSB_TAP_OFF_TSO6    4
#define TSB_TAP_OFF_TSO_ECN 8
#define TSB_TAP_OFF_UFO     16

/* Open tap `name` (at most 15 bytes; "tap%d" lets the kernel pick) non-blocking and close-on-exec. The
 * interface's real name goes to actual[actual_len]; info to out. -> fd or -errno. */
int32_t tsb_tap_open(const char *name, int32_t flags, char *actual, int32_t actual_len, int32_t *out);
/* Bytes of virtio-net header in front of each frame (10 or 12). */
int32_t tsb_tap_set_vnet_hdr_sz(int32_t fd, int32_t size);
/* TSB_TAP_OFF_* bits the reader can take. */
int32_t tsb_tap_set_offload(int32_t fd, int32_t offloads);
/* Interface `name` administratively up (IFF_UP); mtu > 0 also sets its MTU. */
int32_t tsb_net_if_up(const char *name, int32_t mtu);
/* One frame in / out: readv/writev on (ptr,len) pairs, retried on EINTR. -> bytes or -errno (-EAGAIN: nothing
 * to read / no room). A tap cuts a frame longer than the buffers without saying so: tsb_readv_frame reads
 * with one spare byte behind the buffers and returns -EMSGSIZE when the frame reached it (the frame is lost,
 * the buffers hold its first bytes); n at most IOV_MAX - 1. */
int64_t tsb_readv(int32_t fd, const uint64_t *iov, int32_t n);
int64_t tsb_readv_frame(int32_t fd, const uint64_t *iov, int32_t n);
int64_t tsb_writev(int32_t fd, const uint64_t *iov, int32_t n);

#endif
