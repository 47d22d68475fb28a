/**
 * Host resources opened once, on the main thread, before any Worker starts: the host ends of the
 * serial ports. They reach the Workers as plain data (fd numbers are process-wide).
 */
import { closeChardev, openChardev, type ChardevHandle } from "../chardev/index.ts";
import type { VmConfig } from "../config/types.ts";

export interface Prepared {
  /** lpc.com1..com4 host ends (undefined where the port is absent) */
  com: (ChardevHandle | undefined)[];
}

export function prepare(cfg: VmConfig): Prepared {
  const p: Prepared = { com: [] };
  try {
    cfg.com.forEach((spec, i) => { p.com[i] = spec ? openChardev(spec, `com${i + 1}`) : undefined; });
  } catch (e) {
    release(p);
    throw e;
  }
  return p;
}

export function release(p: Prepared): void {
  for (const h of p.com) if (h) closeChardev(h);
}
