// The newc writer, checked by the reference implementation: GNU cpio extracts what we wrote.
import { describe, expect, test, afterAll } from "bun:test";
import { lstatSync, mkdtempSync, readFileSync, readlinkSync, rmSync, statSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { gunzipSync } from "node:zlib";
import { CpioWriter, gzip, normalizeCpioPath } from "../../src/guest/cpio.ts";

const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

function extract(archive: Uint8Array): { dir: string; listing: string } {
  const dir = mkdtempSync(join(tmpdir(), "tsb-cpio-"));
  dirs.push(dir);
  const r = Bun.spawnSync(["cpio", "-idv", "--no-absolute-filenames", "--quiet"], { cwd: dir, stdin: archive, stderr: "pipe" });
  if (r.exitCode !== 0) throw new Error(`cpio -idv failed: ${r.stderr.toString()}`);
  return { dir, listing: r.stderr.toString() };
}

function sample(): CpioWriter {
  const w = new CpioWriter();
  w.dir("/etc", 0o750);
  w.file("/etc/hello.txt", "hello world\n");
  w.file("/bin/tool", new Uint8Array([0x7f, 0x45, 0x4c, 0x46, 1, 2, 3]), 0o755); // parent /bin created implicitly
  w.symlink("/bin/sh", "/bin/tool");
  w.symlink("/usr/bin/relative", "../../bin/tool");
  w.charDev("/dev/console", 5, 1, 0o600);
  w.file("/empty", new Uint8Array(0));
  // Names and sizes of every residue mod 4, to exercise both paddings.
  for (let i = 0; i < 8; i++) w.file(`/pad/${"n".repeat(i + 1)}`, new Uint8Array(i).fill(0x41 + i), 0o600 + i);
  return w;
}

describe("cpio newc writer", () => {
  test("header layout: magic, 4-byte alignment, trailer", () => {
    const a = new CpioWriter().file("a", "xyz").finish();
    const text = new TextDecoder().decode(a);
    expect(text.startsWith("070701")).toBe(true);
    expect(a.length % 4).toBe(0);
    // header 110 + "a\0" = 112 (aligned), data 3 + 1 pad, then the trailer member.
    expect(text.slice(116, 122)).toBe("070701");
    expect(text).toContain("TRAILER!!!\0");
  });

  test("GNU cpio extracts files, modes, dirs, symlinks and device nodes", () => {
    const { dir, listing } = extract(sample().finish());
    expect(readFileSync(join(dir, "etc/hello.txt"), "utf8")).toBe("hello world\n");
    expect(statSync(join(dir, "etc")).mode & 0o7777).toBe(0o750);
    expect(statSync(join(dir, "bin/tool")).mode & 0o7777).toBe(0o755);
    expect(Array.from(readFileSync(join(dir, "bin/tool")))).toEqual([0x7f, 0x45, 0x4c, 0x46, 1, 2, 3]);
    expect(lstatSync(join(dir, "bin/sh")).isSymbolicLink()).toBe(true);
    expect(readlinkSync(join(dir, "bin/sh"))).toBe("/bin/tool");
    expect(readlinkSync(join(dir, "usr/bin/relative"))).toBe("../../bin/tool");
    expect(readFileSync(join(dir, "empty")).length).toBe(0);
    for (let i = 0; i < 8; i++) {
      const p = join(dir, "pad", "n".repeat(i + 1));
      expect(Array.from(readFileSync(p))).toEqual(new Array(i).fill(0x41 + i));
      expect(statSync(p).mode & 0o7777).toBe(0o600 + i);
    }
    expect(listing).toContain("dev/console");
    if (process.getuid?.() === 0) {
      const st = statSync(join(dir, "dev/console"));
      expect(st.isCharacterDevice()).toBe(true);
      expect(st.rdev).toBe((5 << 8) | 1);
    }
  });

  test("parents come before children; re-adding replaces in place", () => {
    const w = new CpioWriter();
    w.file("/a/b/c/d.txt", "one");
    w.file("/a/b/c/d.txt", "two", 0o600);
    const { dir } = extract(w.finish());
    expect(readFileSync(join(dir, "a/b/c/d.txt"), "utf8")).toBe("two");
    expect(statSync(join(dir, "a/b/c/d.txt")).mode & 0o777).toBe(0o600);
    expect(statSync(join(dir, "a/b")).isDirectory()).toBe(true);
  });

  test("a file cannot sit where a directory is needed; '..' is refused", () => {
    const w = new CpioWriter().file("/x", "file");
    expect(() => w.file("/x/y", "child")).toThrow();
    expect(() => normalizeCpioPath("/a/../../etc")).toThrow();
    expect(normalizeCpioPath("//a/./b/")).toBe("a/b");
  });

  test("same input, same bytes; gzip round-trips", () => {
    const a = sample().finish();
    const b = sample().finish();
    expect(Buffer.from(a).equals(Buffer.from(b))).toBe(true);
    const z = gzip(a);
    expect(z[0]).toBe(0x1f);
    expect(z[1]).toBe(0x8b);
    const { dir } = extract(new Uint8Array(gunzipSync(z)));
    expect(existsSync(join(dir, "etc/hello.txt"))).toBe(true);
  });
});
