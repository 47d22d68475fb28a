/** bun:ffi signatures of ffi/fs.c (file access confined beneath a directory, for virtio-9p). Imported by ffi.ts only. */
export const fsSymbols = {} as const;
