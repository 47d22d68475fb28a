// Proves the tier-2 boot-ROM payloads are correct by running each one on
// QEMU (TCG) and checking its COM1 output and exit status.  QEMU differs from
// tsbhyve in a few documented ways (no pc-testdev counter at 0xE0, zeros from
// unassigned PCI-hole MMIO); those lines are pinned to QEMU's values here and
// described in README.md.  Missing nasm or qemu-system-x86_64 fails loudly.

import { describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import {
  buildPayload,
  checkPayloadImage,
  expectedMemsum,
  listPayloads,
  nasmPath,
  PAYLOAD_SIZE,
  serialLines,
  SMP_ITERS_DEFAULT,
} from "./build.ts";
import { qemuPath, runPayloadOnQemu, type QemuRunOptions, type QemuRunResult } from "./run.ts";

const RUN_TIMEOUT_MS = 20_000; // QEMU wall-clock limit per run
const TEST_TIMEOUT_MS = 40_000; // bun:test limit (build + run)

const hex32 = (n: number) => n.toString(16).padStart(8, "0");

async function run(name: string, opts: QemuRunOptions = {}): Promise<QemuRunResult & { lines: string[] }> {
  const bin = await buildPayload(name);
  const r = await runPayloadOnQemu(bin, { timeoutMs: RUN_TIMEOUT_MS, ...opts });
  return { ...r, lines: serialLines(r.serial) };
}

/** Attach the whole run to assertion failures. */
function ctx(r: QemuRunResult): string {
  return `\n--- serial ---\n${r.serial}\n--- stderr ---\n${r.stderr}\n--- exit ${r.code} timedOut=${r.timedOut} ${r.durationMs}ms`;
}

function expectLinesInOrder(r: QemuRunResult & { lines: string[] }, expected: (string | RegExp)[]): void {
  let i = 0;
  for (const want of expected) {
    while (i < r.lines.length && !(typeof want === "string" ? r.lines[i] === want : want.test(r.lines[i]!))) i++;
    if (i >= r.lines.length) throw new Error(`missing line ${String(want)} (in order)${ctx(r)}`);
    i++;
  }
}

describe("toolchain", () => {
  test("nasm is installed", () => {
    expect(nasmPath()).toBeTruthy();
  });
  test("qemu-system-x86_64 is installed", () => {
    expect(qemuPath()).toBeTruthy();
  });
});

describe("payload images", () => {
  test(
    "every payload assembles to a 64 KiB image with a reset vector at 0xFFF0",
    async () => {
      const names = listPayloads();
      expect(names).toEqual(
        expect.arrayContaining(["hello", "ports", "memory", "reset", "resetkbd", "smp", "triple", "uartirq"]),
      );
      for (const name of names) {
        const image = new Uint8Array(readFileSync(await buildPayload(name)));
        expect(image.length).toBe(PAYLOAD_SIZE);
        checkPayloadImage(image, name);
      }
    },
    TEST_TIMEOUT_MS,
  );

  test("builds are cached and keyed on defines", async () => {
    const a = await buildPayload("smp");
    expect(await buildPayload("smp")).toBe(a);
    const b = await buildPayload("smp", { defines: { SMP_ITERS: 1000 } });
    expect(b).not.toBe(a);
    expect(readFileSync(b).equals(readFileSync(a))).toBe(false);
  });

  test("unknown payload names fail loudly", async () => {
    await expect(buildPayload("no-such-payload")).rejects.toThrow(/unknown payload/);
    await expect(buildPayload("../etc/passwd")).rejects.toThrow(/invalid payload name/);
  });
});

describe("payloads on QEMU (TCG)", () => {
  test(
    "hello: prints the greeting, then halts",
    async () => {
      const r = await run("hello", { until: "hello from tsbhyve payload\r\n" });
      expect(r.stoppedByUntil, ctx(r)).toBe(true);
      expect(r.serial).toBe("hello from tsbhyve payload\r\n");
    },
    TEST_TIMEOUT_MS,
  );

  test(
    "hello: keeps halting (no output after the greeting, no exit)",
    async () => {
      const r = await run("hello", { timeoutMs: 1500 });
      expect(r.timedOut, ctx(r)).toBe(true);
      expect(r.serial).toBe("hello from tsbhyve payload\r\n");
    },
    TEST_TIMEOUT_MS,
  );

  test(
    "ports: all-ones from unassigned ports, UART register round trips",
    async () => {
      const r = await run("ports");
      expect(r.timedOut, ctx(r)).toBe(false);
      expect(r.lines, ctx(r)).toEqual([
        "ports: start",
        "PORT300 ff ffff ffffffff",
        "PORT300W ff ffff ffffffff",
        "OK ports-unassigned",
        "SCR 5a a5 00 ff",
        "OK ports-scratch",
        "LCR 03 MCR 03",
        "OK ports-lcr-mcr",
        "LSR 60",
        "OK ports-lsr",
        "IIR c1",
        "DONE ports fails=00",
      ]);
      expect(r.code).toBe(1); // isa-debug-exit: (0 << 1) | 1
    },
    TEST_TIMEOUT_MS,
  );

  test(
    "memory: xorshift fill/readback at 1 MiB, unaligned access, MMIO reads",
    async () => {
      const r = await run("memory");
      expect(r.timedOut, ctx(r)).toBe(false);
      expect(r.lines, ctx(r)).toEqual([
        "memory: protected mode up",
        `MEMSUM ${expectedMemsum()} MEMERR 00000000`,
        "OK memory-pattern",
        "UNALIGNED 11223344 11223344",
        "OK memory-unaligned",
        // QEMU TCG reads zeros from the unassigned PCI hole; tsbhyve must give
        // "PCIHOLE ffffffff ffffffff ffff ff" / "OK memory-pcihole" / fails=00.
        "PCIHOLE 00000000 00000000 0000 00",
        "FAIL memory-pcihole",
        "LAPICID 00000000",
        expect.stringMatching(/^LAPICVER [0-9a-f]{6}1[0-9a-f]$/),
        "OK memory-lapic",
        expect.stringMatching(/^IOAPICVER [0-9a-f]{6}[12][0-9a-f]$/),
        "OK memory-ioapic",
        "DONE memory fails=01",
      ]);
      expect(r.code).toBe(3); // one FAIL (pcihole) -> (1 << 1) | 1
    },
    TEST_TIMEOUT_MS,
  );

  test("expectedMemsum is the documented xorshift/rol checksum", () => {
    expect(expectedMemsum()).toBe("d7b976d0");
  });

  for (const [name, line] of [
    ["reset", "resetting"],
    ["resetkbd", "resetting via i8042"],
  ] as const) {
    test(
      `${name}: prints "${line}" and resets the machine`,
      async () => {
        const r = await run(name);
        expect(r.timedOut, ctx(r)).toBe(false);
        expect(r.lines, ctx(r)).toEqual([line]);
        expect(r.code).toBe(0); // -no-reboot turns the reset into a clean exit
      },
      TEST_TIMEOUT_MS,
    );
  }

  test(
    `smp: INIT-SIPI-SIPI wakes CPU1, both count ${SMP_ITERS_DEFAULT} and report`,
    async () => {
      const r = await run("smp", { smp: 2 });
      expect(r.timedOut, ctx(r)).toBe(false);
      for (const l of ["CPU0 up", "CPU1 up", "CPU0 done", "CPU1 done"]) expect(r.lines, ctx(r)).toContain(l);
      // No counter device on QEMU: the 4-byte read of port 0xE0 is all-ones.
      expectLinesInOrder(r, [
        "smp: BSP in protected mode",
        "CPU0 up",
        "CPU0 done",
        `COUNT ffffffff EXPECT ${hex32(2 * SMP_ITERS_DEFAULT)}`,
        "FAIL smp-count",
        "DONE smp fails=01",
      ]);
      expectLinesInOrder(r, ["CPU1 up", "CPU1 done", /^COUNT /]);
      expect(r.lines.length, ctx(r)).toBe(8);
      expect(r.code).toBe(3);
    },
    TEST_TIMEOUT_MS,
  );

  test(
    "smp: with a single vCPU the BSP reports the AP timeout instead of hanging",
    async () => {
      const r = await run("smp", { smp: 1 });
      expect(r.timedOut, ctx(r)).toBe(false);
      expect(r.lines, ctx(r)).toEqual([
        "smp: BSP in protected mode",
        "CPU0 up",
        "CPU0 done",
        "FAIL smp-ap-timeout",
        "DONE smp fails=01",
      ]);
      expect(r.code).toBe(3);
    },
    TEST_TIMEOUT_MS,
  );

  for (const [name, how] of [
    ["triple", "ud2"],
    ["triplediv", "div0"],
    ["tripleint", "int80"],
  ] as const) {
    test(
      `${name}: zero-limit IDT + ${how} triple-faults (shutdown)`,
      async () => {
        const r = await run(name);
        expect(r.timedOut, ctx(r)).toBe(false);
        expect(r.lines, ctx(r)).toEqual(["triple: protected mode up", `TRIPLE faulting via ${how}`]);
        expect(r.code).toBe(0); // shutdown + -no-reboot
      },
      TEST_TIMEOUT_MS,
    );
  }

  test(
    "uartirq: interrupt-driven TX, RX echo until 'q'",
    async () => {
      const r = await run("uartirq", { input: "abcq", inputAfter: "send q to quit\r\n" });
      expect(r.timedOut, ctx(r)).toBe(false);
      expectLinesInOrder(r, [
        "uartirq: start",
        "LAPIC SVR 000001ff LVT0 00000700",
        "OK uartirq-timer-irq",
        "uartirq: interrupt-driven echo, send q to quit",
        "abcq",
        "uartirq: got q",
        /^IRQ4 [0-9a-f]{4} THREI [0-9a-f]{4} RXI [0-9a-f]{4} RXCHARS 0004$/,
        "OK uartirq",
        "DONE uartirq fails=00",
      ]);
      expect(r.serial).not.toContain("FAIL");
      const stats = r.lines.find((l) => l.startsWith("IRQ4 "))!.split(" ");
      expect(parseInt(stats[3]!, 16), "THRE interrupts").toBeGreaterThanOrEqual(60);
      expect(parseInt(stats[5]!, 16), "RX interrupts").toBeGreaterThanOrEqual(1);
      expect(r.code).toBe(1);
    },
    TEST_TIMEOUT_MS,
  );
});
