/**
 * Tier 2: freestanding boot-ROM payloads (test/payloads/*.asm, built with nasm now) run by dist/tsbhyve on
 * this machine's /dev/kvm. They need KVM and fail loudly without it.
 */
import { beforeAll, describe, expect, test } from "bun:test";
import { buildPayload, expectedMemsum, SMP_ITERS_DEFAULT } from "../payloads/build.ts";
import { readFileSync } from "node:fs";
import { cpus } from "node:os";
import { requireKvm, romConfig, runTsb } from "./tsb.ts";

beforeAll(() => requireKvm());

const lines = (s: string) => s.split(/\r?\n/).map((l) => l.trim()).filter(Boolean);
/** pc-testdev's 0xF4 exit status for a written value (QEMU isa-debug-exit rule): (v << 1) | 1 */
const DONE_OK = 1;

describe("boot ROM payloads on /dev/kvm", () => {
  test("hello: reset vector runs, COM1 prints, cli;hlt halts → exit 2; threads 'vcpu N' pinned by -p and vcpu.N.cpuset; 16 GiB RAM costs no host RAM", async () => {
    const last = cpus().length - 1; // pins: vCPU 0 on the host's last CPU (-p), vCPU 1 on CPU 0 (TOML)
    const toml = romConfig(await buildPayload("hello"), `[vcpu.1]\ncpuset = "0"\n`, 2).replace('size = "128M"', 'size = "16G"');
    let threads: string[] = [];
    const allowed = new Map<string, string>();
    let rssKiB = Infinity;
    const r = await runTsb({
      toml, timeoutMs: 30_000, args: ["-p", `0:${last}`],
      onOutput: {
        text: "hello from tsbhyve payload",
        run: async (pid) => {
          const { readdirSync } = await import("node:fs");
          // vCPU 1's Worker (the AP, never started by the guest) may still be setting up: look again
          // for up to 0.5 s, until both threads show their pins
          for (let tries = 0; tries < 50; tries++) {
            threads = [];
            for (const t of readdirSync(`/proc/${pid}/task`)) {
              const name = readFileSync(`/proc/${pid}/task/${t}/comm`, "utf8").trim();
              threads.push(name);
              allowed.set(name, /Cpus_allowed_list:\s+(\S+)/.exec(readFileSync(`/proc/${pid}/task/${t}/status`, "utf8"))?.[1] ?? "?");
            }
            if (allowed.get("vcpu 0") === `${last}` && allowed.get("vcpu 1") === "0") break;
            await Bun.sleep(10);
          }
          rssKiB = Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1]);
        },
      },
    });
    expect(allowed.get("vcpu 0")).toBe(`${last}`);
    expect(allowed.get("vcpu 1")).toBe("0");
    expect(r.timedOut).toBe(false);
    expect(lines(r.com1)).toContain("hello from tsbhyve payload");
    expect(r.code).toBe(2); // bhyve's halt: the BSP halted with interrupts off, the AP never started
    expect(r.stderr).toContain("every vCPU halted with interrupts disabled");
    expect(threads).toContain("vcpu 0");
    expect(threads).toContain("vcpu 1");
    expect(rssKiB).toBeLessThan(400 * 1024); // demand-paged: 16 GiB of guest RAM, a few MiB touched
  });

  test("memory.wired locks guest RAM (VmLck covers it)", async () => {
    const toml = romConfig(await buildPayload("hello")).replace("[memory]\n", "[memory]\nwired = true\n");
    let lockedKiB = 0;
    const r = await runTsb({
      toml, timeoutMs: 30_000,
      onOutput: { text: "hello from tsbhyve payload", run: (pid) => { lockedKiB = Number(/VmLck:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1]); } },
    });
    expect(r.code).toBe(2);
    expect(lockedKiB).toBeGreaterThanOrEqual(128 * 1024);
  });

  test("ports: unassigned ports read all-ones, UART registers round-trip", async () => {
    const r = await runTsb({ toml: romConfig(await buildPayload("ports")) });
    const l = lines(r.com1);
    expect(l).toContain("PORT300 ff ffff ffffffff");
    expect(l).toContain("SCR 5a a5 00 ff");
    expect(l).toContain("LSR 60");
    expect(l).toContain("DONE ports fails=00");
    expect(r.code).toBe(DONE_OK);
  });

  test("memory: RAM round trip above 1 MiB, MMIO in the PCI hole reads all-ones, LAPIC/IOAPIC answer", async () => {
    const r = await runTsb({ toml: romConfig(await buildPayload("memory")) });
    const l = lines(r.com1);
    expect(l).toContain(`MEMSUM ${expectedMemsum()} MEMERR 00000000`);
    expect(l).toContain("PCIHOLE ffffffff ffffffff ffff ff");
    expect(l.some((x) => /^LAPICVER 000[0-9a-f]0014$/.test(x))).toBe(true);
    expect(l.some((x) => /^IOAPICVER 00170011$/.test(x))).toBe(true);
    expect(l).toContain("DONE memory fails=00");
    expect(r.code).toBe(DONE_OK);
  });

  test("two vCPUs hammering one device under its lock lose no update", async () => {
    const r = await runTsb({ toml: romConfig(await buildPayload("smp"), "", 2), timeoutMs: 60_000 });
    const l = lines(r.com1);
    expect(l).toContain("CPU0 done");
    expect(l).toContain("CPU1 done");
    const want = (2 * SMP_ITERS_DEFAULT).toString(16).padStart(8, "0");
    expect(l).toContain(`COUNT ${want} EXPECT ${want}`);
    expect(r.code).toBe(DONE_OK);
  });

  test("reset through 0xCF9 and through the i8042 exits 0 (bhyve's reboot)", async () => {
    const a = await runTsb({ toml: romConfig(await buildPayload("reset")) });
    expect(lines(a.com1)).toContain("resetting");
    expect(a.code).toBe(0);
    expect(a.stderr).toContain("reset via 0xCF9");
    const b = await runTsb({ toml: romConfig(await buildPayload("resetkbd")) });
    expect(b.code).toBe(0);
    expect(b.stderr).toContain("reset via i8042");
  });

  test("a triple fault exits 3 and says where the guest was", async () => {
    const r = await runTsb({ toml: romConfig(await buildPayload("triple")) });
    expect(lines(r.com1)).toContain("TRIPLE faulting via ud2");
    expect(r.code).toBe(3);
    // the payload runs in 32-bit protected mode with a zero-limit IDT
    expect(r.stderr).toMatch(/triple fault; rip=0x[0-9a-f]+ .*cr0=0x[0-9a-f]*[13579bdf] .*idt=0x[0-9a-f]+\/0\b/);
  });

  test("TSBHYVE_LOG_UNASSIGNED logs unassigned accesses (and they still read all-ones)", async () => {
    const r = await runTsb({ toml: romConfig(await buildPayload("ports")), env: { TSBHYVE_LOG_UNASSIGNED: "1" } });
    expect(r.code).toBe(DONE_OK);
    expect(r.stderr).toContain("unassigned pio read from 0x300");
    expect(lines(r.com1)).toContain("PORT300 ff ffff ffffffff");
  });

  test("x86.strictio stops the VM on the first unassigned port with exit 4", async () => {
    const r = await runTsb({ toml: romConfig(await buildPayload("ports"), "[x86]\nstrictio = true\n") });
    expect(r.code).toBe(4);
    expect(r.stderr).toMatch(/x86.strictio: read from unassigned port 0x300/);
  });

  test("interrupt-driven UART: IRQ 4 through the PIC, stdio input echoed", async () => {
    const rom = await buildPayload("uartirq");
    const toml = romConfig(rom).replace('path = "file=${COM1}"', 'path = "stdio"');
    const r = await runTsb({ toml, stdin: "hi!q", stdinAfter: "send q to quit", timeoutMs: 60_000 });
    const l = lines(r.stdout);
    expect(l).toContain("OK uartirq-timer-irq");
    expect(r.stdout).toContain("uartirq: got q");
    expect(l).toContain("DONE uartirq fails=00");
    expect(r.code).toBe(DONE_OK);
  });
});
