/** vmm/fs — file access confined beneath a shared directory, for virtio-9p (ffi/fs.c). */
export const fsHost = {};
