/**
 * virtio without MSI-X (bhyve's global virtio_msix = false): the function offers one MSI message
 * instead of the MSI-X table. Until the driver enables MSI, interrupts are INTx with the ISR; once it
 * does, every queue and configuration interrupt is that message, and the ISR still says why. With the
 * default (MSI-X) there is no MSI capability. Config: `virtio_msix` reaches every virtio emulation.
 */
import { expect, test } from "bun:test";
import { GuestMemory, MiB } from "../../src/mem/guest-memory.ts";
import { MSI } from "../../src/pci/regs.ts";
import { rndModel } from "../../src/virtio/devices/rnd.ts";
import { createConsole } from "../../src/virtio/devices/console.ts";
import { createInput, inputModelIdentity } from "../../src/virtio/devices/input.ts";
import { virtioPciInput } from "../../src/virtio/emulation.ts";
import { createVirtioPci } from "../../src/virtio/pci.ts";
import type { PciCreateInput } from "../../src/pci/registry-types.ts";
import { virtioPciRig } from "./virtio-pci-rig.ts";

function rig(msix: boolean) {
  return virtioPciRig({ mem: GuestMemory.fake(64 * MiB), queues: 1, build: (inp) => createVirtioPci({ ...inp, msix }, rndModel()) });
}

test("virtio_msix = false: one MSI message (64-bit address) instead of MSI-X; ISR tells queue from config", () => {
  const r = rig(false);
  expect(r.msixCap).toBe(0);
  expect(r.msiCap).toBeGreaterThan(0);
  const ctrl = r.cr(r.msiCap + MSI.CTRL, 2);
  expect(ctrl & MSI.CTRL_64BIT).toBe(MSI.CTRL_64BIT);
  expect((ctrl >> MSI.CTRL_MMC_SHIFT) & 7).toBe(0); // one vector
  // MSI on: address fee01000, data 0x4071
  r.cw(r.msiCap + MSI.ADDR, 0xfee01000);
  r.cw(r.msiCap + MSI.ADDR + 4, 0);
  r.cw(r.msiCap + MSI.ADDR + 8, 0x4071, 2);
  r.cw(r.msiCap + MSI.CTRL, ctrl | MSI.CTRL_ENABLE, 2);
  const d = r.bringUp(0n, { msix: false }).drivers[0]!;
  r.platform.msis.length = 0;
  d.add([{ len: 64, write: true }]);
  d.publish();
  r.kick(0);
  expect(d.collect().length).toBe(1);
  expect(r.platform.msis).toEqual([[0xfee01000, 0x4071]]);
  expect(r.platform.irqs.filter(([, l]) => l === 1)).toEqual([]); // no INTx while MSI is on
  expect(r.bus.read("mmio", r.isr, 1)).toBe(1); // queue interrupt; reading clears
  expect(r.bus.read("mmio", r.isr, 1)).toBe(0);
});

test("virtio_msix = false, MSI not enabled by the driver: INTx with the ISR", () => {
  const r = rig(false);
  const d = r.bringUp(0n, { msix: false }).drivers[0]!;
  d.add([{ len: 64, write: true }]);
  d.publish();
  r.kick(0);
  expect(d.collect().length).toBe(1);
  expect(r.platform.msis).toEqual([]);
  expect(r.platform.irqs.some(([, l]) => l === 1)).toBe(true);
  expect(r.bus.read("mmio", r.isr, 1)).toBe(1);
});

test("the default has MSI-X and no MSI capability; virtio_msix reaches the transport from the config", () => {
  const r = rig(true);
  expect(r.msixCap).toBeGreaterThan(0);
  expect(r.msiCap).toBe(0);
  const inp = (virtioMsix: boolean) => virtioPciInput({ ctx: { platform: {} }, cfg: { virtioMsix }, addr: { bus: 0, slot: 5, fn: 0 }, table: { device: "virtio-rnd" }, prepared: {} } as unknown as PciCreateInput);
  expect(inp(false).msix).toBe(false);
  expect(inp(true).msix).toBe(true);
});

test("virtio_msix = false reaches every model that builds its own transport input (console, input)", () => {
  const built = [
    virtioPciRig({ mem: GuestMemory.fake(64 * MiB), queues: 4, build: (inp) => createConsole({ ...inp, msix: false, ports: [{ id: 0 }] }).fn }),
    virtioPciRig({ mem: GuestMemory.fake(64 * MiB), queues: 2, build: (inp) => createInput({ ...inp, msix: false, device: { identity: inputModelIdentity("tablet") } }).fn }),
  ];
  for (const r of built) {
    expect(r.msixCap).toBe(0);
    expect(r.msiCap).toBeGreaterThan(0);
  }
});
