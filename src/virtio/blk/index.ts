/** virtio-blk, storage side: device description (features, config space) and the request executor. */
export * from "./device.ts";
export * from "./request.ts";
