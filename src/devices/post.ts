/**
 * Two write-mostly diagnostic ports.
 *
 * 0x80 — POST code port. Firmware writes progress codes here; the last byte is latched and reads
 * return it. (Linux also writes 0x80 as an I/O delay; that is just another latch.)
 *
 * 0x402 — debug console (port is an option: `debugconPort`, null = none), compatible with the QEMU/bhyve "debugcon" convention OVMF uses for its
 * DEBUG() output: every byte written is text. Bytes are collected into lines ('\n' ends a line, '\r'
 * is dropped; a line is also cut at LINE_MAX bytes) and each line goes to the sink: the `sink` option
 * or, by default, platform.log prefixed with "debugcon: ". Reads return 0xE9, the value OVMF reads
 * back to detect that a debug console is present.
 *
 * The partial line lives in the shared state block (any vCPU thread may be the writer).
 *
 * CONFLICT: 0x402 is inside the bhyve-layout ACPI PM1a event block (0x400–0x403, PM1_EN at 0x402).
 * QEMU has no clash because its PM base is 0x600. So the VM must either move the PM base or put the
 * debug console elsewhere (or leave it out) — registering both at their defaults fails on the bus.
 */
import type { Device, DeviceContext, IoRange } from "./device.ts";
import { defineLayout } from "./state.ts";

export const POST_PORTS = {
  /** POST code latch (1 byte). */
  POST: 0x80,
  /** Debug console (1 byte). */
  DEBUGCON: 0x402,
} as const;

/** What a read of the debug console port returns (presence check). */
export const DEBUGCON_READBACK = 0xe9;
const LINE_MAX = 256;

export const postLayout = defineLayout("post", 1, {
  code: "u8",
  len: "u16",
  line: { type: "u8", count: LINE_MAX },
});

export interface PostOptions {
  /** Receives each complete debug-console line (without the newline). Default: platform.log. */
  sink?: (line: string) => void;
  /** Debug console port (default 0x402); null leaves the debug console out. */
  debugconPort?: number | null;
}

export interface PostDevice extends Device {
  /** Emit a partial debug-console line, if any (at VM exit). Takes the lock. */
  flush(): void;
  /** The last POST code (diagnostics). */
  lastCode(): number;
}

const decoder = new TextDecoder("utf-8", { fatal: false });

export function createPost(ctx: DeviceContext, opts: PostOptions = {}): PostDevice {
  const { s, lock } = ctx.arena.alloc(postLayout);
  const sink = opts.sink ?? ((line: string) => ctx.platform.log(`debugcon: ${line}`));

  const emit = (): void => {
    const text = decoder.decode(s.line.slice(0, s.len));
    s.len = 0;
    sink(text);
  };

  const debugcon = opts.debugconPort === undefined ? POST_PORTS.DEBUGCON : opts.debugconPort;
  const ranges: IoRange[] = [{ space: "pio", base: POST_PORTS.POST, size: 1 }];
  if (debugcon !== null) ranges.push({ space: "pio", base: debugcon, size: 1 });

  return {
    name: "post",
    ranges,
    lock,
    read(_space, base) {
      return base === POST_PORTS.POST ? s.code : DEBUGCON_READBACK;
    },
    write(_space, base, _offset, _size, value) {
      const b = value & 0xff;
      if (base === POST_PORTS.POST) { s.code = b; return; }
      if (b === 0x0a) { emit(); return; }
      if (b === 0x0d) return;
      s.line[s.len] = b;
      s.len = s.len + 1;
      if (s.len >= LINE_MAX) emit();
    },
    flush() {
      lock.with(() => { if (s.len > 0) emit(); });
    },
    lastCode() {
      return lock.with(() => s.code);
    },
  };
}
