/*
 * fs.c — file access confined beneath a shared directory, for virtio-9p (see fs.h for the rules).
 *
 * One name at a time, always relative to a directory fd, through openat2 with RESOLVE_BENEATH |
 * RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS and the *at() calls with AT_SYMLINK_NOFOLLOW /
 * AT_EMPTY_PATH. No function here builds a path from pieces, opens /proc/self/fd, or follows a symlink.
 * A name is re-checked here even though the caller validated it (defence in depth).
 */
#define _GNU_SOURCE
#include "fs.h"
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#define BENEATH (RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)

static int neg(int r) { return r < 0 ? -errno : r; }

/* one path component, not "." or ".." */
static int valid_name(const char *n)
{
	if (!n || !n[0] || strchr(n, '/'))
		return 0;
	if (n[0] == '.' && (n[1] == 0 || (n[1] == '.' && n[2] == 0)))
		return 0;
	return strlen(n) <= 255;
}

static int open_beneath(int dirfd, const char *name, int flags, int mode)
{
	if (!valid_name(name))
		return -EINVAL;
	struct open_how how;
	memset(&how, 0, sizeof how);
	how.flags = (uint64_t)(flags | O_NOFOLLOW | O_CLOEXEC);
	how.mode = (flags & (O_CREAT | O_TMPFILE)) ? (uint64_t)(mode & 07777) : 0;
	how.resolve = BENEATH;
	long r;
	do
		r = syscall(SYS_openat2, dirfd, name, &how, sizeof how);
	while (r < 0 && errno == EINTR);
	return r < 0 ? -errno : (int)r;
}

static void fill_stat(const struct stat *st, uint64_t *o)
{
	o[0] = st->st_dev;
	o[1] = st->st_ino;
	o[2] = st->st_mode;
	o[3] = st->st_nlink;
	o[4] = st->st_uid;
	o[5] = st->st_gid;
	o[6] = st->st_rdev;
	o[7] = (uint64_t)st->st_size;
	o[8] = (uint64_t)st->st_blksize;
	o[9] = (uint64_t)st->st_blocks;
	o[10] = (uint64_t)st->st_atim.tv_sec;
	o[11] = (uint64_t)st->st_atim.tv_nsec;
	o[12] = (uint64_t)st->st_mtim.tv_sec;
	o[13] = (uint64_t)st->st_mtim.tv_nsec;
	o[14] = (uint64_t)st->st_ctim.tv_sec;
	o[15] = (uint64_t)st->st_ctim.tv_nsec;
}

static int lstat_fd(int fd, struct stat *st) { return neg(fstatat(fd, "", st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW)); }

static int same(const struct stat *a, const struct stat *b) { return a->st_dev == b->st_dev && a->st_ino == b->st_ino; }

int32_t tsb_fs_open_root(const char *path)
{
	/* the configured share path itself is the administrator's choice: it may be reached through symlinks */
	return neg(open(path, O_PATH | O_DIRECTORY | O_CLOEXEC));
}

int32_t tsb_fs_walk(int32_t dirfd, const char *name) { return open_beneath(dirfd, name, O_PATH, 0); }

int32_t tsb_fs_stat(int32_t fd, uint64_t *out)
{
	struct stat st;
	int r = lstat_fd(fd, &st);
	if (r < 0)
		return r;
	fill_stat(&st, out);
	return 0;
}

int32_t tsb_fs_statat(int32_t dirfd, const char *name, uint64_t *out)
{
	struct stat st;
	if (!valid_name(name))
		return -EINVAL;
	if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return -errno;
	fill_stat(&st, out);
	return 0;
}

int32_t tsb_fs_reopen(int32_t fd, int32_t dirfd, const char *name, int32_t flags)
{
	struct stat a, b;
	int r = lstat_fd(fd, &a);
	if (r < 0)
		return r;
	flags &= ~(O_CREAT | O_TMPFILE | O_PATH);
	if (S_ISDIR(a.st_mode))
		r = neg(openat(fd, ".", flags | O_DIRECTORY | O_CLOEXEC));
	else if (S_ISREG(a.st_mode))
		r = dirfd < 0 ? -ESTALE : open_beneath(dirfd, name, flags | O_NONBLOCK, 0);
	else
		return S_ISLNK(a.st_mode) ? -ELOOP : -EPERM;
	if (r < 0)
		return r;
	if (fstat(r, &b) < 0 || !same(&a, &b)) {
		close(r);
		return -ESTALE;
	}
	return r;
}

int32_t tsb_fs_create(int32_t dirfd, const char *name, int32_t flags, int32_t mode, int32_t *out)
{
	struct stat a, b;
	flags &= ~(O_TMPFILE | O_PATH | O_DIRECTORY | O_CREAT);
	/* create exclusively first, so the exact mode can be set on a file we made (the process umask
	 * would otherwise be applied on top of the guest's); an existing file is opened as it is */
	int fd = open_beneath(dirfd, name, flags | O_CREAT | O_EXCL | O_NONBLOCK, mode);
	if (fd >= 0)
		fchmod(fd, (mode_t)mode & 07777);
	else if (fd == -EEXIST && !(flags & O_EXCL))
		fd = open_beneath(dirfd, name, flags | O_NONBLOCK, 0);
	if (fd < 0)
		return fd;
	int pfd = open_beneath(dirfd, name, O_PATH, 0);
	if (pfd < 0 || fstat(fd, &a) < 0 || lstat_fd(pfd, &b) < 0 || !same(&a, &b) || !S_ISREG(a.st_mode)) {
		int e = pfd < 0 ? pfd : -ESTALE;
		close(fd);
		if (pfd >= 0)
			close(pfd);
		return e;
	}
	out[0] = fd;
	out[1] = pfd;
	return 0;
}

int32_t tsb_fs_mkdir(int32_t dirfd, const char *name, int32_t mode)
{
	if (!valid_name(name))
		return -EINVAL;
	if (mkdirat(dirfd, name, (mode_t)mode & 07777) < 0)
		return -errno;
	/* the exact mode, as for files (best effort: the directory exists either way) */
	int fd = open_beneath(dirfd, name, O_RDONLY | O_DIRECTORY, 0);
	if (fd >= 0) {
		fchmod(fd, (mode_t)mode & 07777);
		close(fd);
	}
	return 0;
}

int32_t tsb_fs_symlink(int32_t dirfd, const char *name, const char *target)
{
	if (!valid_name(name) || !target[0])
		return -EINVAL;
	/* the target is stored as text and never resolved here: the guest resolves it in its own namespace */
	return neg(symlinkat(target, dirfd, name));
}

int32_t tsb_fs_mknod(int32_t dirfd, const char *name, int32_t mode)
{
	if (!valid_name(name))
		return -EINVAL;
	mode_t t = (mode_t)mode & S_IFMT;
	if (t == 0)
		t = S_IFREG;
	if (t != S_IFREG && t != S_IFIFO && t != S_IFSOCK)
		return -EPERM; /* device nodes would open host devices */
	return neg(mknodat(dirfd, name, t | ((mode_t)mode & 07777), 0));
}

int32_t tsb_fs_link(int32_t fd, int32_t olddirfd, const char *oldname, int32_t newdirfd, const char *newname)
{
	struct stat a, b;
	if (!valid_name(newname))
		return -EINVAL;
	int r = lstat_fd(fd, &a);
	if (r < 0)
		return r;
	if (S_ISDIR(a.st_mode))
		return -EPERM;
	if (linkat(fd, "", newdirfd, newname, AT_EMPTY_PATH) == 0)
		return 0;
	if (errno != ENOENT && errno != EPERM)
		return -errno;
	/* without CAP_DAC_READ_SEARCH: by name beneath the parent, if it still names the same object */
	if (olddirfd < 0 || !valid_name(oldname))
		return -EPERM;
	if (fstatat(olddirfd, oldname, &b, AT_SYMLINK_NOFOLLOW) < 0)
		return -errno;
	if (!same(&a, &b))
		return -ESTALE;
	return neg(linkat(olddirfd, oldname, newdirfd, newname, 0));
}

int32_t tsb_fs_rename(int32_t olddirfd, const char *oldname, int32_t newdirfd, const char *newname)
{
	if (!valid_name(oldname) || !valid_name(newname))
		return -EINVAL;
	return neg(renameat(olddirfd, oldname, newdirfd, newname));
}

int32_t tsb_fs_unlink(int32_t dirfd, const char *name, int32_t rmdir)
{
	if (!valid_name(name))
		return -EINVAL;
	return neg(unlinkat(dirfd, name, rmdir ? AT_REMOVEDIR : 0));
}

int32_t tsb_fs_remove(int32_t fd, int32_t dirfd, const char *name)
{
	struct stat a, b;
	if (!valid_name(name))
		return -EINVAL;
	int r = lstat_fd(fd, &a);
	if (r < 0)
		return r;
	if (fstatat(dirfd, name, &b, AT_SYMLINK_NOFOLLOW) < 0)
		return -errno;
	if (!same(&a, &b))
		return -ESTALE;
	return neg(unlinkat(dirfd, name, S_ISDIR(a.st_mode) ? AT_REMOVEDIR : 0));
}

int32_t tsb_fs_readlink(int32_t fd, uint8_t *buf, int32_t len)
{
	if (len <= 0)
		return -EINVAL;
	ssize_t n = readlinkat(fd, "", (char *)buf, (size_t)len);
	if (n < 0 && errno == ENOENT) {
		struct stat st;
		if (lstat_fd(fd, &st) == 0 && !S_ISLNK(st.st_mode))
			return -EINVAL; /* readlink(2) of something that is not a symlink */
		errno = ENOENT;
	}
	return n < 0 ? -errno : (int32_t)n;
}

/* a real fd on the object for fchmod/ftruncate: read-only first, write-only if that is refused */
static int open_for_change(int fd, int dirfd, const char *name, int want_write)
{
	int r = want_write ? -EACCES : tsb_fs_reopen(fd, dirfd, name, O_RDONLY);
	if (r == -EACCES)
		r = tsb_fs_reopen(fd, dirfd, name, O_WRONLY);
	return r;
}

int32_t tsb_fs_chmod(int32_t fd, int32_t dirfd, const char *name, int32_t mode)
{
	struct stat a;
	int r = lstat_fd(fd, &a);
	if (r < 0)
		return r;
	if (S_ISLNK(a.st_mode))
		return -EOPNOTSUPP; /* Linux symlinks have no mode of their own */
	if (!S_ISDIR(a.st_mode) && !S_ISREG(a.st_mode)) {
		/* fifo/socket: no open (it could block); by name, checked, never following a symlink */
		struct stat b;
		if (dirfd < 0 || !valid_name(name) || fstatat(dirfd, name, &b, AT_SYMLINK_NOFOLLOW) < 0 || !same(&a, &b) || S_ISLNK(b.st_mode))
			return -ESTALE;
		return neg(fchmodat(dirfd, name, (mode_t)mode & 07777, 0));
	}
	int o = open_for_change(fd, dirfd, name, 0);
	if (o < 0)
		return o;
	r = neg(fchmod(o, (mode_t)mode & 07777));
	close(o);
	return r;
}

int32_t tsb_fs_chown(int32_t fd, int32_t uid, int32_t gid)
{
	return neg(fchownat(fd, "", (uid_t)uid, (gid_t)gid, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW));
}

int32_t tsb_fs_truncate(int32_t fd, int32_t dirfd, const char *name, int64_t size)
{
	if (size < 0)
		return -EINVAL;
	int o = open_for_change(fd, dirfd, name, 1);
	if (o < 0)
		return o;
	int r = neg(ftruncate(o, size));
	close(o);
	return r;
}

int32_t tsb_fs_utimes(int32_t fd, int64_t asec, int64_t ansec, int64_t msec, int64_t mnsec)
{
	struct timespec ts[2] = { { .tv_sec = asec, .tv_nsec = ansec }, { .tv_sec = msec, .tv_nsec = mnsec } };
	return neg(utimensat(fd, "", ts, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW));
}

int32_t tsb_fs_statfs(int32_t fd, uint64_t *out)
{
	struct statfs s;
	if (fstatfs(fd, &s) < 0)
		return -errno;
	uint64_t fsid;
	memcpy(&fsid, &s.f_fsid, sizeof fsid);
	out[0] = (uint64_t)s.f_type;
	out[1] = (uint64_t)s.f_bsize;
	out[2] = s.f_blocks;
	out[3] = s.f_bfree;
	out[4] = s.f_bavail;
	out[5] = s.f_files;
	out[6] = s.f_ffree;
	out[7] = fsid;
	out[8] = (uint64_t)s.f_namelen;
	return 0;
}

int32_t tsb_fs_getdents(int32_t fd, int64_t off, uint8_t *buf, int32_t len)
{
	if (len <= 0 || off < 0)
		return -EINVAL;
	if (lseek(fd, off, SEEK_SET) < 0)
		return -errno;
	long n = syscall(SYS_getdents64, fd, buf, (unsigned)len);
	return n < 0 ? -errno : (int32_t)n;
}

int32_t tsb_fs_fsync(int32_t fd, int32_t datasync) { return neg(datasync ? fdatasync(fd) : fsync(fd)); }

int64_t tsb_fs_fd_limit(void)
{
	struct rlimit r;
	if (getrlimit(RLIMIT_NOFILE, &r) < 0)
		return -errno;
	return r.rlim_cur == RLIM_INFINITY ? INT32_MAX : (int64_t)r.rlim_cur;
}
