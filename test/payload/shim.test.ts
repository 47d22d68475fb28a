/**
 * Tier 2: the shim's hot-path plumbing on this machine's /dev/kvm, driven through src/vmm directly:
 * ioeventfd (a guest port write signals an eventfd inside the kernel, never reaching userspace),
 * irqfd + MSI routes, iovec file I/O straight into guest memory, and the race-free kick.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { $ } from "bun";
import { createVm, EXIT, ExitReason, host, type VmHandle } from "../../src/vmm/index.ts";
import { setupMemory, viewMemory } from "../../src/vm/memory.ts";
import { requireKvm } from "./tsb.ts";

const dir = mkdtempSync(join(tmpdir(), "tsb-shim-"));
let vm: VmHandle | undefined;
afterEach(() => { vm?.destroy(); vm = undefined; });

/** A 64 KiB boot ROM from a few real-mode instructions placed at the reset vector's jump target. */
async function rom(asm: string): Promise<Uint8Array> {
  const src = join(dir, "p.asm"), out = join(dir, "p.bin");
  writeFileSync(src, `bits 16\norg 0\nstart:\n${asm}\ntimes 0xFFF0-($-$$) db 0\n  jmp start\ntimes 0x10000-($-$$) db 0\n`);
  await $`nasm -f bin -o ${out} ${src}`.quiet();
  return new Uint8Array(readFileSync(out));
}

describe("shim on /dev/kvm", () => {
  test("ioeventfd: port writes signal the eventfd in the kernel; only the other port exits to us", async () => {
    requireKvm();
    vm = createVm();
    setupMemory(vm, 64 << 20, false, await rom("  mov al, 1\n  mov dx, 0x500\n  out dx, al\n  out dx, al\n  out dx, al\n  out 0xf4, al\n.h: hlt\n  jmp .h"));
    vm.createVcpu(0);
    const efd = host.eventfd();
    vm.ioeventfd(0x500, 1, true, null, efd);
    const v = vm.vcpu(0);
    const page = v.exitPage();
    const ports: number[] = [];
    for (let i = 0; i < 10; i++) {
      const r = v.run();
      if (r !== ExitReason.IO) continue;
      ports.push(Number(page.getBigUint64(EXIT.addr, true)));
      if (ports.at(-1) === 0xf4) break;
    }
    expect(ports).toEqual([0xf4]);
    expect(host.drain(efd)).toBe(3);
    vm.ioeventfd(0x500, 1, true, null, efd, true); // deassign
    host.close(efd);
  });

  test("iovec I/O moves file bytes straight into and out of guest memory, bounds-checked addresses", () => {
    requireKvm();
    vm = createVm();
    const regions = setupMemory(vm, 64 << 20, false);
    const mem = viewMemory(regions);
    const data = new Uint8Array(3 * 4096).map((_, i) => (i * 7 + 3) & 0xff);
    mem.writeBytes(0x10000, data.subarray(0, 4096));
    mem.writeBytes(0x30000, data.subarray(4096));
    const f = join(dir, "disk.img");
    writeFileSync(f, new Uint8Array(0));
    const fd = require("node:fs").openSync(f, "r+");
    const iov = new BigUint64Array([BigInt(mem.hostAddr(0x10000, 4096)), 4096n, BigInt(mem.hostAddr(0x30000, 8192)), 8192n]);
    expect(host.pwritev(fd, iov, 512)).toBe(3 * 4096);
    expect(new Uint8Array(readFileSync(f)).subarray(512)).toEqual(data);
    const back = new BigUint64Array([BigInt(mem.hostAddr(0x200000, 3 * 4096)), BigInt(3 * 4096)]);
    expect(host.preadv(fd, back, 512)).toBe(3 * 4096);
    expect(mem.readBytes(0x200000, 3 * 4096)).toEqual(data);
    expect(() => mem.hostAddr((64 << 20) - 100, 4096)).toThrow(/outside guest memory/);
    require("node:fs").closeSync(fd);
  });

  test("irqfd on an MSI route and KVM_SIGNAL_MSI are accepted; a kick before run returns INTR at once", async () => {
    requireKvm();
    vm = createVm();
    setupMemory(vm, 64 << 20, false, await rom("  jmp start"));
    vm.createVcpu(0);
    const efd = host.eventfd();
    vm.msiRoute(24, 0xfee00000, 0x4030);
    vm.irqfd(24, efd);
    host.signal(efd); // the kernel consumes it: an interrupt towards vector 0x30
    vm.msi(0xfee00000, 0x4031);
    vm.irqLine(4, 1);
    vm.irqLine(4, 0);
    const v = vm.vcpu(0);
    v.kick();
    const t = performance.now();
    expect(v.run()).toBe(ExitReason.INTR);
    expect(performance.now() - t).toBeLessThan(100);
    vm.irqfd(24, efd, -1, true);
    host.close(efd);
  });
});
