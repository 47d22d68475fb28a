/** `tsbhyve demo`: the built-in default guest (filled in below by the guest-assets module). */
import type { Layer } from "../config/load.ts";
import type { VmConfig } from "../config/types.ts";

export async function runDemo(layers: Layer[], run: (cfg: VmConfig) => Promise<number>): Promise<number> {
  void layers; void run;
  throw new Error("demo: not available yet");
}
