/** bun:ffi signatures of ffi/fs.c (file access confined beneath a directory, for virtio-9p). Imported by ffi.ts only. */
const i32 = "i32", i64 = "i64", ptr = "ptr";

export const fsSymbols = {
  tsb_fs_open_root: { args: [ptr], returns: i32 },
  tsb_fs_walk: { args: [i32, ptr], returns: i32 },
  tsb_fs_stat: { args: [i32, ptr], returns: i32 },
  tsb_fs_statat: { args: [i32, ptr, ptr], returns: i32 },
  tsb_fs_reopen: { args: [i32, i32, ptr, i32], returns: i32 },
  tsb_fs_create: { args: [i32, ptr, i32, i32, ptr], returns: i32 },
  tsb_fs_mkdir: { args: [i32, ptr, i32], returns: i32 },
  tsb_fs_symlink: { args: [i32, ptr, ptr], returns: i32 },
  tsb_fs_mknod: { args: [i32, ptr, i32], returns: i32 },
  tsb_fs_link: { args: [i32, i32, ptr, i32, ptr], returns: i32 },
  tsb_fs_rename: { args: [i32, ptr, i32, ptr], returns: i32 },
  tsb_fs_unlink: { args: [i32, ptr, i32], returns: i32 },
  tsb_fs_remove: { args: [i32, i32, ptr], returns: i32 },
  tsb_fs_readlink: { args: [i32, ptr, i32], returns: i32 },
  tsb_fs_chmod: { args: [i32, i32, ptr, i32], returns: i32 },
  tsb_fs_chown: { args: [i32, i32, i32], returns: i32 },
  tsb_fs_truncate: { args: [i32, i32, ptr, i64], returns: i32 },
  tsb_fs_utimes: { args: [i32, i64, i64, i64, i64], returns: i32 },
  tsb_fs_statfs: { args: [i32, ptr], returns: i32 },
  tsb_fs_getdents: { args: [i32, i64, ptr, i32], returns: i32 },
  tsb_fs_fsync: { args: [i32, i32], returns: i32 },
  tsb_fs_fd_limit: { args: [], returns: i64 },
} as const;
