/**
 * virtio-input configuration: bhyve's `-s N,virtio-input,/dev/input/eventX` (the bare option is `path`),
 * tsbhyve's built-in `model`, exactly one of the two, typed options, errors with file:line.
 */
import { describe, expect, test } from "bun:test";
import { parseArgs } from "../../src/cli/args.ts";
import { configFixture } from "./config-fixture.ts";

const { dir, KERNEL, load, errorOf } = configFixture("tsbhyve-vinput-cfg-");

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
