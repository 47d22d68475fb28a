/**
 * Host resources opened once, on the main thread, before any Worker starts: character devices for
 * the UARTs, the boot images. They reach the Workers as plain data (fd numbers are process-wide).
 */
import type { VmConfig } from "../config/types.ts";

export interface Prepared {
  com: unknown[];
}

export function prepare(cfg: VmConfig): Prepared {
  void cfg;
  return { com: [] };
}

export function release(p: Prepared): void {
  void p;
}
