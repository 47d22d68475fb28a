/** virtio-net, network side: device description (features, config space, header, MACs) and the receive and transmit paths. */
export * from "./device.ts";
export * from "./rx.ts";
export * from "./tx.ts";
export * from "./frames.ts";
