/** vmm/net — host network devices for virtio-net and e1000 backends (ffi/net.c). */
export const netHost = {};
