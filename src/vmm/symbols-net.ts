/** bun:ffi signatures of ffi/net.c (tap devices and fd-level readv/writev). Imported by ffi.ts only. */
export const netSymbols = {} as const;
