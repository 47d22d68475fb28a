/**
 * Platform reset registers.
 *
 * 0xCF9 — Reset Control Register (Intel PCH/ICH datasheets, "RST_CNT"; also the FADT RESET_REG our ACPI
 * tables advertise, RESET_VALUE 6). One byte, living inside the PCI configuration-address dword
 * 0xCF8–0xCFB: only port 0xCF9 is claimed so a PCI host bridge can own 0xCF8 and 0xCFC–0xCFF.
 *
 *   bit 1  SYS_RST   0 = soft reset (INIT), 1 = hard reset — stored, read back
 *   bit 2  RST_CPU   writing 1 performs the reset selected by bits 1 and 3
 *   bit 3  FULL_RST  full power cycle — stored, read back
 *
 * Every reset flavour ends the VM the same way: bhyve exit 0 ("reboot"), and the launcher restarts it.
 * RST_CPU is self-clearing (the reset has happened) so it is never stored and reads 0.
 *
 * 0x92 — System Control Port A ("fast A20 and INIT", PS/2 and later chipsets):
 *
 *   bit 0  fast reset: a 0→1 transition resets the CPU (bhyve exit 0)
 *   bit 1  A20 gate: read back only — the guest always runs with A20 enabled (no address wrap)
 *   bits 7:2 stored and read back (activity LED, password lock: no function here)
 *
 * Power-on state (powerOn): 0xCF9 reads 0, port 0x92 reads 0x02 (A20 enabled).
 */
import type { Device, DeviceContext, Space } from "./device.ts";
import { defineLayout } from "./state.ts";

export const RESET_PORTS = {
  /** Reset Control Register (1 byte). */
  RST_CNT: 0xcf9,
  /** System Control Port A (1 byte). */
  PORT_A: 0x92,
} as const;

export const RST_CNT = {
  SYS_RST: 1 << 1,
  RST_CPU: 1 << 2,
  FULL_RST: 1 << 3,
} as const;
const RST_CNT_STORED = RST_CNT.SYS_RST | RST_CNT.FULL_RST;

export const PORT_A = {
  FAST_RESET: 1 << 0,
  A20: 1 << 1,
  /** Power-on value. */
  RESET_VALUE: 0x02,
} as const;

export const resetLayout = defineLayout("reset", 2, {
  /** 0xCF9: the stored bits (SYS_RST, FULL_RST). */
  rstCnt: "u8",
  /** Port 0x92 as last written. */
  portA: "u8",
});

export function createReset(ctx: DeviceContext, _opts: Record<string, never> = {}): Device {
  const { s, lock } = ctx.arena.alloc(resetLayout);
  const { platform } = ctx;
  const ranges = [
    { space: "pio" as Space, base: RESET_PORTS.RST_CNT, size: 1 },
    { space: "pio" as Space, base: RESET_PORTS.PORT_A, size: 1 },
  ];
  return {
    name: "reset",
    ranges,
    lock,
    read(_space, base) {
      return base === RESET_PORTS.RST_CNT ? s.rstCnt : s.portA;
    },
    write(_space, base, _offset, _size, value) {
      const v = value & 0xff;
      if (base === RESET_PORTS.RST_CNT) {
        s.rstCnt = v & RST_CNT_STORED;
        if (v & RST_CNT.RST_CPU) platform.requestExit(0, "reset via 0xCF9");
        return;
      }
      const old = s.portA;
      s.portA = v;
      if (v & PORT_A.FAST_RESET && !(old & PORT_A.FAST_RESET)) platform.requestExit(0, "reset via port 0x92");
    },
    powerOn() {
      s.rstCnt = 0;
      s.portA = PORT_A.RESET_VALUE;
    },
  };
}
