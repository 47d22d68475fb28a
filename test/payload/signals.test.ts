/**
 * Tier 2: SIGTERM handling of the built binary, as bhyve's: the first SIGTERM presses the ACPI power
 * button; a second one, or the shutdown timeout, stops the VM hard and says so. The guest is the uartirq
 * payload, which ignores the button and waits with interrupts on (so the halt detector stays quiet).
 */
import { describe, expect, test } from "bun:test";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { buildPayload } from "../payloads/build.ts";
import { BINARY, requireKvm, romConfig } from "./tsb.ts";

async function started(env: Record<string, string> = {}) {
  requireKvm();
  const dir = mkdtempSync(join(tmpdir(), "tsb-sig-"));
  const cfg = join(dir, "g.toml");
  writeFileSync(cfg, romConfig(await buildPayload("uartirq")).replace('path = "file=${COM1}"', 'path = "stdio"'));
  const p = Bun.spawn([BINARY, cfg], { stdout: "pipe", stderr: "pipe", stdin: "pipe", env: { ...process.env, ...env } });
  const dec = new TextDecoder();
  let out = "";
  const reader = p.stdout.getReader();
  while (!out.includes("send q to quit")) {
    const { value, done } = await reader.read();
    if (done) break;
    out += dec.decode(value);
  }
  return { p, out };
}

describe("signals", () => {
  test("SIGTERM presses the power button; a second SIGTERM stops the VM hard (exit 4)", async () => {
    const { p, out } = await started();
    expect(out).toContain("send q to quit");
    p.kill("SIGTERM");
    await Bun.sleep(300);
    expect(p.exitCode).toBeNull(); // still running: the guest decides what the button does
    p.kill("SIGTERM");
    const code = await p.exited;
    const err = await new Response(p.stderr).text();
    expect(err).toContain("pressing the ACPI power button");
    expect(err).toContain("second SIGTERM: stopped hard");
    expect(code).toBe(4);
  });

  test("a guest that ignores the button is stopped after TSBHYVE_SHUTDOWN_TIMEOUT", async () => {
    const { p } = await started({ TSBHYVE_SHUTDOWN_TIMEOUT: "1" });
    const t0 = performance.now();
    p.kill("SIGTERM");
    const code = await p.exited;
    const err = await new Response(p.stderr).text();
    expect(code).toBe(4);
    expect(err).toContain("did not power off within 1 s of the power button");
    expect(performance.now() - t0).toBeGreaterThanOrEqual(900);
  });
});
