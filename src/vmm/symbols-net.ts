/** bun:ffi signatures of ffi/net.c (tap devices and fd-level readv/writev). Imported by ffi.ts only. */
import { FFIType } from "bun:ffi";

export const netSymbols = {
  tsb_tap_open: { args: ["ptr", "i32", "ptr", "i32", "ptr"], returns: "i32" },
  tsb_tap_set_vnet_hdr_sz: { args: ["i32", "i32"], returns: "i32" },
  tsb_tap_set_offload: { args: ["i32", "i32"], returns: "i32" },
  tsb_net_if_up: { args: ["ptr", "i32"], returns: "i32" },
  tsb_readv: { args: ["i32", "ptr", "i32"], returns: FFIType.i64_fast },
  tsb_readv_frame: { args: ["i32", "ptr", "i32"], returns: FFIType.i64_fast },
  tsb_writev: { args: ["i32", "ptr", "i32"], returns: FFIType.i64_fast },
} as const;
