import { describe, expect, test } from "bun:test";
import { mkdtempSync, writeFileSync, mkdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { BootromError, planBootrom, readBootrom, readBootvars } from "../../src/loader/bootrom.ts";

const MiB = 1024 * 1024, FOUR_G = 4 * 1024 * MiB;

describe("bootrom", () => {
  test("ROM ends at 4 GiB, vars directly below", () => {
    expect(planBootrom(2 * MiB)).toEqual({ rom: { gpa: FOUR_G - 2 * MiB, size: 2 * MiB } });
    const p = planBootrom(2 * MiB, 128 * 1024);
    expect(p.rom.gpa + p.rom.size).toBe(FOUR_G);
    expect(p.vars).toEqual({ gpa: FOUR_G - 2 * MiB - 128 * 1024, size: 128 * 1024 });
    expect(planBootrom(16 * MiB).rom.gpa).toBe(0xff000000);
  });

  test("size rules", () => {
    expect(() => planBootrom(0)).toThrow(BootromError);
    expect(() => planBootrom(4095)).toThrow(/multiple of 4 KiB/);
    expect(() => planBootrom(16 * MiB + 4096)).toThrow(/16 MiB/);
    expect(() => planBootrom(4096, 100)).toThrow(/multiple of 4 KiB/);
    expect(() => planBootrom(16 * MiB, 4096)).toThrow(/exceed/);
    expect(() => planBootrom(NaN)).toThrow(BootromError);
  });

  test("readBootrom validates files", async () => {
    const dir = mkdtempSync(join(tmpdir(), "tsbhyve-rom-"));
    const good = join(dir, "rom.fd");
    const rom = new Uint8Array(64 * 1024).map((_, i) => i & 0xff);
    writeFileSync(good, rom);
    expect(await readBootrom(good)).toEqual(rom);
    expect(await readBootvars(good)).toEqual(rom);
    writeFileSync(join(dir, "odd"), new Uint8Array(5000));
    writeFileSync(join(dir, "empty"), new Uint8Array(0));
    mkdirSync(join(dir, "sub"));
    await expect(readBootrom(join(dir, "odd"))).rejects.toThrow(/multiple of 4 KiB/);
    await expect(readBootrom(join(dir, "empty"))).rejects.toThrow(/empty/);
    await expect(readBootrom(join(dir, "missing"))).rejects.toThrow(/no such file/);
    await expect(readBootrom(join(dir, "sub"))).rejects.toThrow(/not a regular file/);
    await expect(readBootrom(join(dir, "missing"))).rejects.toBeInstanceOf(BootromError);
  });
});
