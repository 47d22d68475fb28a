/**
 * virtio-input configuration: bhyve's `-s N,virtio-input,/dev/input/eventX` (the bare option is `path`),
 * tsbhyve's built-in `model`, exactly one of the two, typed options, errors with file:line.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync, truncateSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "../../src/cli/args.ts";
import { ConfigError, loadConfigText } from "../../src/config/load.ts";

const dir = mkdtempSync(join(tmpdir(), "tsbhyve-vinput-cfg-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const KERNEL = join(dir, "bzImage");
writeFileSync(KERNEL, "");
truncateSync(KERNEL, 4096);
const HEAD = `boot.kernel = "bzImage"\n`;
const load = (text: string) => loadConfigText(HEAD + text, join(dir, "guest.toml"));
function errorOf(fn: () => unknown): string {
  try { fn(); } catch (e) {
    expect(e).toBeInstanceOf(ConfigError);
    return (e as Error).message.replaceAll(dir + "/", "");
  }
  throw new Error("expected a ConfigError");
}

describe("virtio-input config", () => {
  test("built-in models with name, serial and hello", () => {
    const c = load(`[pci.0.6.0]\ndevice = "virtio-input"\nmodel = "tablet"\nname = "my tablet"\n[pci.0.7.0]\ndevice = "virtio-input"\nmodel = "keyboard"\nserial = "K1"\nhello = true\n`);
    expect(c.pci["0.6.0"]).toEqual({ device: "virtio-input", model: "tablet", name: "my tablet" });
    expect(c.pci["0.7.0"]).toEqual({ device: "virtio-input", model: "keyboard", serial: "K1", hello: true });
  });

  test("-s N,virtio-input,PATH: a host character device (here /dev/null stands in for /dev/input/eventX)", () => {
    const c = parseArgs(["-k", KERNEL, "-s", "6,virtio-input,/dev/null", "vm"], { cwd: dir }).config!;
    expect(c.pci["0.6.0"]).toEqual({ device: "virtio-input", path: "/dev/null" });
  });

  test("errors: neither or both of path/model, an unknown model, a regular file, hello with a host device", () => {
    expect(errorOf(() => load(`[pci.0.6.0]\ndevice = "virtio-input"\n`))).toContain("pci.0.6.0.path: missing: expected path");
    expect(errorOf(() => load(`[pci.0.6.0]\ndevice = "virtio-input"\nmodel = "keyboard"\npath = "/dev/null"\n`))).toContain("not both");
    expect(errorOf(() => load(`[pci.0.6.0]\ndevice = "virtio-input"\nmodel = "mouse"\n`))).toContain("pci.0.6.0.model: expected one of keyboard, tablet");
    expect(errorOf(() => load(`[pci.0.6.0]\ndevice = "virtio-input"\npath = "bzImage"\n`))).toContain("expected a character device");
    expect(errorOf(() => load(`[pci.0.6.0]\ndevice = "virtio-input"\npath = "/dev/null"\nhello = true\n`))).toContain("pci.0.6.0.hello: only for a built-in model");
    expect(errorOf(() => load(`[pci.0.6.0]\ndevice = "virtio-input"\nmodel = "keyboard"\nspeed = 3\n`))).toContain("speed");
  });
});
