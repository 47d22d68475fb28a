/**
 * Tier 2: power-off through the ACPI PM1a control register the way firmware and Linux do it on this
 * PIIX4 platform: SLP_TYP 0 (soft-off, our DSDT's \_S5 and OVMF's shutdown) with SLP_EN → exit 1; other
 * sleep types are refused and the guest keeps running. With a boot ROM the PM block appears only once
 * "firmware" (the payload) programs the PIIX4 PM function's PMBA, as on the real chipset.
 */
import { describe, expect, test } from "bun:test";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { $ } from "bun";
import { requireKvm, romConfig, runTsb } from "./tsb.ts";

const dir = mkdtempSync(join(tmpdir(), "tsb-power-"));
/** What firmware does first: program the PIIX4 PM function (00:01.3) PMBA = 0x600 and enable PM I/O. */
const PMBA = [
  "  mov dx, 0xcf8", "  mov eax, 0x80000b40", "  out dx, eax", "  mov dx, 0xcfc", "  mov eax, 0x601", "  out dx, eax",
  "  mov dx, 0xcf8", "  mov eax, 0x80000b80", "  out dx, eax", "  mov dx, 0xcfc", "  mov al, 1", "  out dx, al",
].join("\n");

async function rom(name: string, asm: string): Promise<string> {
  const src = join(dir, `${name}.asm`), out = join(dir, `${name}.bin`);
  writeFileSync(src, `bits 16\norg 0\nstart:\n${asm}\ntimes 0xFFF0-($-$$) db 0\n  jmp start\ntimes 0x10000-($-$$) db 0\n`);
  await $`nasm -f bin -o ${out} ${src}`.quiet();
  return out;
}

describe("ACPI power-off", () => {
  test("SLP_EN with SLP_TYP 0 at PM1a_CNT (0x604) powers off: exit 1", async () => {
    requireKvm();
    const r = await runTsb({ toml: romConfig(await rom("s5", PMBA + "\n  mov dx, 0x604\n  mov ax, 0x2000\n  out dx, ax\n.h: jmp .h")) });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("ACPI S5 power-off");
  });
  test("an unsupported sleep type (S3, SLP_TYP 1) is refused; the guest runs on and exits through the test device", async () => {
    const r = await runTsb({ toml: romConfig(await rom("s3", PMBA + "\n  mov dx, 0x604\n  mov ax, 0x2400\n  out dx, ax\n  mov al, 2\n  out 0xf4, al\n.h: jmp .h")) });
    expect(r.code).toBe(5); // pc-testdev: (2 << 1) | 1
  });
});
