/*
 * fs.h — file access confined beneath a shared directory (virtio-9p, src/vmm/fs.ts).
 *
 * Every file is reached one name at a time from a directory fd the caller already holds: `name` is one
 * path component (not "", ".", "..", no '/'), looked up with openat2(RESOLVE_BENEATH |
 * RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS) and O_NOFOLLOW, so no symlink on the host is ever
 * followed and nothing above the directory is reachable. Objects are held as O_PATH fds; operations
 * that need a real open file re-open it beneath its parent and check it is still the same inode
 * (-ESTALE otherwise). Every call returns a negative errno on failure and never follows symlinks.
 */
#ifndef TSB_FS_H
#define TSB_FS_H
#include <stdint.h>

/* out[] of tsb_fs_stat */
#define TSB_FS_STAT_WORDS 16  /* dev ino mode nlink uid gid rdev size blksize blocks atime(s,ns) mtime(s,ns) ctime(s,ns) */
/* out[] of tsb_fs_statfs */
#define TSB_FS_STATFS_WORDS 9 /* type bsize blocks bfree bavail files ffree fsid namelen */

int32_t tsb_fs_open_root(const char *path);                       /* O_PATH directory fd of the share */
int32_t tsb_fs_walk(int32_t dirfd, const char *name);             /* O_PATH fd of name beneath dirfd (a symlink itself) */
int32_t tsb_fs_stat(int32_t fd, uint64_t *out);                   /* lstat of the fd's object */
int32_t tsb_fs_statat(int32_t dirfd, const char *name, uint64_t *out); /* lstat of name beneath dirfd */
/* Open the object of O_PATH fd `fd` with `flags` (never O_CREAT): a directory through ".", a regular
 * file as `name` beneath `dirfd`, checked to be the same inode; symlinks -ELOOP, others -EPERM. */
int32_t tsb_fs_reopen(int32_t fd, int32_t dirfd, const char *name, int32_t flags);
/* Create-or-open name beneath dirfd (O_CREAT added); out[0] = open fd, out[1] = O_PATH fd. */
int32_t tsb_fs_create(int32_t dirfd, const char *name, int32_t flags, int32_t mode, int32_t *out);
int32_t tsb_fs_mkdir(int32_t dirfd, const char *name, int32_t mode);
int32_t tsb_fs_symlink(int32_t dirfd, const char *name, const char *target);
int32_t tsb_fs_mknod(int32_t dirfd, const char *name, int32_t mode);  /* regular files, fifos, sockets only */
/* Hard link the object of fd (name `oldname` beneath `olddirfd`, checked) as newname beneath newdirfd. */
int32_t tsb_fs_link(int32_t fd, int32_t olddirfd, const char *oldname, int32_t newdirfd, const char *newname);
int32_t tsb_fs_rename(int32_t olddirfd, const char *oldname, int32_t newdirfd, const char *newname);
int32_t tsb_fs_unlink(int32_t dirfd, const char *name, int32_t rmdir);
/* unlink name beneath dirfd only if it is still the object of fd */
int32_t tsb_fs_remove(int32_t fd, int32_t dirfd, const char *name);
int32_t tsb_fs_readlink(int32_t fd, uint8_t *buf, int32_t len);   /* -> bytes (not NUL-terminated) */
int32_t tsb_fs_chmod(int32_t fd, int32_t dirfd, const char *name, int32_t mode);
int32_t tsb_fs_chown(int32_t fd, int32_t uid, int32_t gid);       /* -1 keeps */
int32_t tsb_fs_truncate(int32_t fd, int32_t dirfd, const char *name, int64_t size);
/* ns: UTIME_NOW / UTIME_OMIT allowed */
int32_t tsb_fs_utimes(int32_t fd, int64_t asec, int64_t ansec, int64_t msec, int64_t mnsec);
int32_t tsb_fs_statfs(int32_t fd, uint64_t *out);
/* getdents64 from directory cookie `off` (0 = start) into buf -> bytes (0 at the end) */
int32_t tsb_fs_getdents(int32_t fd, int64_t off, uint8_t *buf, int32_t len);
int32_t tsb_fs_fsync(int32_t fd, int32_t datasync);
int64_t tsb_fs_fd_limit(void);                                    /* RLIMIT_NOFILE soft limit */

#endif
