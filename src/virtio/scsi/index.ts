/** virtio-scsi, storage side: device description (config space, layouts) and the request executors. */
export * from "./device.ts";
export * from "./request.ts";
