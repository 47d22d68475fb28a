/**
 * Tier 2 (the built binary): configuration errors stop tsbhyve with exit 4 and a file:line message
 * before any VM exists; `check` validates only; --help lists every key from the schema.
 */
import { describe, expect, test } from "bun:test";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { BINARY, requireKvm } from "./tsb.ts";

const dir = mkdtempSync(join(tmpdir(), "tsb-cli-"));
async function tsb(args: string[]) {
  const p = Bun.spawn([BINARY, ...args], { stdout: "pipe", stderr: "pipe", stdin: "ignore" });
  const [out, err] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text()]);
  return { code: await p.exited, out, err };
}

describe("tsbhyve command line", () => {
  test("every kind of config error: exit 4, file:line, key and what was expected, all reported at once", async () => {
    requireKvm();
    const f = join(dir, "bad.toml");
    writeFileSync(f, [
      'name = "vm1"',
      "cpus = 2",
      "[memory]",
      'size = "lots"',
      "[lpc]",
      'bootrom = "/nonexistent/rom.fd"',
      "[lpc.com1]",
      'path = "stdio"',
      "[x86]",
      'strictio = "perhaps"',
      "colour = 3",
    ].join("\n"));
    const r = await tsb([f]);
    expect(r.code).toBe(4);
    expect(r.err).toContain(`${f}:4: memory.size: expected a size`);
    expect(r.err).toContain(`${f}:6: lpc.bootrom:`);
    expect(r.err).toContain(`${f}:10: x86.strictio:`);
    expect(r.err).toMatch(new RegExp(`${f.replace(/[.]/g, "\\.")}:11: x86\\.colour: unknown key`));
  });

  test("TOML syntax errors carry their line; a missing file is a clear error", async () => {
    const f = join(dir, "syntax.toml");
    writeFileSync(f, 'name = "vm1"\ncpus = = 2\n');
    const r = await tsb([f]);
    expect(r.code).toBe(4);
    expect(r.err).toContain(`${f}:2: TOML syntax error`);
    const m = await tsb([join(dir, "missing.toml")]);
    expect(m.code).toBe(4);
    expect(m.err).toContain("file not found");
  });

  test("check validates without running; flags override the file; config.dump prints the tree", async () => {
    const rom = join(dir, "rom.bin");
    writeFileSync(rom, new Uint8Array(65536));
    const f = join(dir, "ok.toml");
    writeFileSync(f, `name = "vm1"\ncpus = 2\n[memory]\nsize = "512M"\n[lpc]\nbootrom = "${rom}"\n[lpc.com1]\npath = "stdio"\n`);
    const c = await tsb(["check", f]);
    expect(c.code).toBe(0);
    expect(c.out).toContain("ok");
    const d = await tsb(["-c", "4", "-m", "1G", "-o", "config.dump=1", f]);
    expect(d.code).toBe(0);
    expect(d.out).toMatch(/cpus = 4/);
    expect(d.out).toMatch(/size = "1G"/);
    const h = await tsb(["--help"]);
    expect(h.code).toBe(0);
    for (const key of ["memory.size", "lpc.com1.path", "boot.kernel", "x86.strictio", "lpc.pc-testdev"]) expect(h.out).toContain(key);
  });
});
