/**
 * TEST DEVICE — not part of the emulated PC. It exists for tsbhyve's own guest payload tests and is
 * present only when the config sets `lpc.pc-testdev = true` (TESTDEV_CONFIG_KEY). Nothing a real
 * guest OS would look for lives here.
 *
 * 0xE0–0xE3  COUNTER (32 bits)
 *   1-byte write of 1 at 0xE0: counter += 1, done as a plain JavaScript read-modify-write of the
 *     state field (no atomics). The increment is only exact because the bus holds the device lock
 *     around the access: two vCPUs hammering this port and then comparing the total against the
 *     number of writes is the end-to-end test of the per-device lock.
 *   Other 1-byte writes: ignored.
 *   4-byte write at 0xE0: set the counter (payloads write 0 to start from a known value).
 *   Reads of any width return the corresponding bytes of the counter (4-byte read at 0xE0 = all).
 *
 * 0xF4  EXIT (1 byte, the port and convention of QEMU's isa-debug-exit with iobase=0xf4,iosize=1)
 *   Writing v ends the VM with exit status ((v & 0x7f) << 1) | 1. Like QEMU's, the status is always
 *   odd, so a payload can never fake the clean reboot (0) — but note that with bhyve's codes v=0
 *   gives 1 ("power-off") and v=1 gives 3 ("triple fault"); payload tests compare against the status
 *   they chose. v is masked to 7 bits so the status fits a process exit code (QEMU would wrap).
 */
import type { AccessSize, Device, DeviceContext, Space } from "./device.ts";
import { defineLayout } from "./state.ts";

/** The config key (under [lpc]) that adds this device. */
export const TESTDEV_CONFIG_KEY = "lpc.pc-testdev";

export const TESTDEV_PORTS = {
  COUNTER: 0xe0,
  COUNTER_LEN: 4,
  EXIT: 0xf4,
} as const;

/** Exit status for a value written to the EXIT port. */
export function testdevExitStatus(value: number): number {
  return ((value & 0x7f) << 1) | 1;
}

export const testdevLayout = defineLayout("pc-testdev", 1, {
  counter: "u32",
});

const BYTE_MASK = [0, 0xff, 0xffff, 0, 0xffffffff] as const;

export function createTestdev(ctx: DeviceContext, _opts: Record<string, never> = {}): Device {
  const { s, lock } = ctx.arena.alloc(testdevLayout);
  const { platform } = ctx;
  const ranges = [
    { space: "pio" as Space, base: TESTDEV_PORTS.COUNTER, size: TESTDEV_PORTS.COUNTER_LEN },
    { space: "pio" as Space, base: TESTDEV_PORTS.EXIT, size: 1 },
  ];
  return {
    name: "pc-testdev",
    ranges,
    lock,
    read(_space, base, offset, size: AccessSize) {
      if (base === TESTDEV_PORTS.EXIT) return 0;
      return (Math.floor(s.counter / 2 ** (8 * offset)) & BYTE_MASK[size]) >>> 0;
    },
    write(_space, base, offset, size, value) {
      if (base === TESTDEV_PORTS.EXIT) {
        const status = testdevExitStatus(value);
        platform.requestExit(status, `pc-testdev exit: wrote 0x${(value & 0xff).toString(16)} → status ${status}`);
        return;
      }
      if (size === 4) { s.counter = value >>> 0; return; }
      if (size === 1 && offset === 0 && (value & 0xff) === 1) {
        const c = s.counter;   // deliberately non-atomic: read ...
        s.counter = c + 1;     // ... modify, write (the device lock makes it correct)
      }
    },
  };
}
