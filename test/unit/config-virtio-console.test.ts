/**
 * virtio-console configuration: bhyve's command-line pairs (`-s 5,virtio-console,port1=/tmp/c1.sock`, a
 * port named "port1" numbered from 0), the same pairs in TOML, bhyve's config tree port.N.name/path,
 * chardev specs for a port's host end, the port limit and errors with file:line; dump round trip.
 */
import { describe, expect, test } from "bun:test";
import { join } from "node:path";
import { parseArgs } from "../../src/cli/args.ts";
import { dumpConfig } from "../../src/config/dump.ts";
import { loadConfigText } from "../../src/config/load.ts";
import { configFixture } from "./config-fixture.ts";
import { consolePortSpec } from "../../src/config/schema.ts";
import { virtioQueueCount } from "../../src/virtio/notify.ts";
import { consoleMaxNrPorts, consoleQueueCount } from "../../src/virtio/devices/console.ts";

const { dir, KERNEL, load, errorOf } = configFixture("tsbhyve-vcon-cfg-");

describe("virtio-console config", () => {
  test("-s NAME=PATH pairs: ports numbered from 0 in order, names kept, relative paths against the cwd", () => {
    const c = parseArgs(["-k", KERNEL, "-s", "5,virtio-console,port1=/tmp/c1.sock,org.qemu.guest_agent.0=qga.sock", "vm"], { cwd: dir }).config!;
    expect(c.pci["0.5.0"]).toEqual({
      device: "virtio-console",
      port: { "0": { name: "port1", path: "/tmp/c1.sock" }, "1": { name: "org.qemu.guest_agent.0", path: join(dir, "qga.sock") } },
    });
  });

  test("TOML: pairs, port.N tables (name optional), chardev specs; explicit numbers first, pairs take the lowest free", () => {
    const c = load(`[pci.0.5.0]\ndevice = "virtio-console"\nport1 = "/tmp/a.sock"\n` +
      `[pci.0.5.0.port.0]\nname = "org.example.x"\npath = "sock/x.sock"\n[pci.0.5.0.port.3]\npath = "pty"\n[pci.0.5.0.port.4]\npath = "tcp=5999"\n`);
    expect(c.pci["0.5.0"]).toEqual({
      device: "virtio-console",
      port: {
        "0": { name: "org.example.x", path: join(dir, "sock/x.sock") },
        "1": { name: "port1", path: "/tmp/a.sock" },
        "3": { path: "pty" },
        "4": { path: "tcp=127.0.0.1:5999" },
      },
    });
    expect(consoleMaxNrPorts(c.pci["0.5.0"]!)).toBe(5);
    expect(consoleQueueCount(5)).toBe(12);
    // the dump is the config tree form, and loads back the same
    const again = loadConfigText(dumpConfig(c), join(dir, "dumped.toml"));
    expect(again.pci["0.5.0"]).toEqual(c.pci["0.5.0"]!);
    // no ports at all is allowed (bhyve too)
    expect(load(`[pci.0.6.0]\ndevice = "virtio-console"\n`).pci["0.6.0"]).toEqual({ device: "virtio-console", port: {} });
    // receiveq + transmitq per port number up to the highest, plus the two control queues
    expect(virtioQueueCount({ device: "virtio-console" })).toBe(4);
    expect(virtioQueueCount({ device: "virtio-console", port: { "0": { path: "/a" }, "3": { path: "/b" } } })).toBe(10);
  });

  test("errors name the file and line", () => {
    const e = errorOf(() => load(`[pci.0.5.0]\ndevice = "virtio-console"\n` + // lines 2-3
      `[pci.0.5.0.port.16]\npath = "/tmp/x"\n` + // 4-5
      `[pci.0.5.0.port.2]\nname = "has space"\npath = "/tmp/y"\n` + // 6-8
      `[pci.0.5.0.port.3]\nname = "noPath"\n` + // 9-10
      `[pci.0.5.0.port.5]\npath = "tcp=99999"\nbogus = 1\n` + // 11-13
      `[pci.0.5.0.port.6]\npath = "/tmp/dup"\n[pci.0.5.0.port.7]\npath = "/tmp/dup"\n`)); // 14-17
    expect(e.split("\n")).toEqual([
      "guest.toml:5: pci.0.5.0.port.16.path: expected a port number 0-15 (bhyve's 16 ports), got 16",
      "guest.toml:13: pci.0.5.0.port.5.bogus: expected port.N.name or port.N.path (N = 0-15)",
      "guest.toml:8: pci.0.5.0.port.2.name: expected a port name of 1-127 printable ASCII characters without spaces or '/', got \"has space\"",
      "guest.toml:10: pci.0.5.0.port.3.path: missing: a port needs path = a Unix socket path (or a chardev like \"pty\")",
      "guest.toml:12: pci.0.5.0.port.5.path: tcp=: expected a port 1-65535, got \"99999\"",
      "guest.toml:17: pci.0.5.0.port.7.path: /tmp/dup is already used by port 6",
    ].sort((a, b) => Number(a.split(":")[1]) - Number(b.split(":")[1])));
  });

  test("command-line errors: a bare path, a pair without a path, too many ports (bhyve's 16 are fine: 34 queues)", () => {
    const bare = () => parseArgs(["-k", KERNEL, "-s", "5,virtio-console,/tmp/c.sock", "vm"], { cwd: dir });
    expect(() => bare()).toThrow(/pci\.0\.5\.0\.path: expected NAME=PATH port pairs/);
    const ports = (n: number) => Array.from({ length: n }, (_, i) => `p${i}=/tmp/s${i}`).join(",");
    const sixteen = parseArgs(["-k", KERNEL, "-s", `5,virtio-console,${ports(16)}`, "vm"], { cwd: dir }).config!.pci["0.5.0"]!;
    expect(Object.keys(sixteen.port as object)).toHaveLength(16);
    expect(virtioQueueCount(sixteen)).toBe(34);
    expect(() => parseArgs(["-k", KERNEL, "-s", `5,virtio-console,${ports(17)}`, "vm"], { cwd: dir })).toThrow(/pci\.0\.5\.0\.p16: too many ports: at most 16/);
    expect(() => parseArgs(["-k", KERNEL, "-s", "5,virtio-console,a=", "vm"], { cwd: dir })).toThrow(/pci\.0\.5\.0\.a: expected a Unix socket path/);
  });

  test("port host ends: plain path = Unix socket, chardev specs, an existing /dev tty", () => {
    expect(consolePortSpec("/run/x.sock", "/")).toEqual({ ok: true, value: { kind: "unix", path: "/run/x.sock" } });
    expect(consolePortSpec("rel", "/base")).toEqual({ ok: true, value: { kind: "unix", path: "/base/rel" } });
    expect(consolePortSpec("unix=/u", "/")).toEqual({ ok: true, value: { kind: "unix", path: "/u" } });
    expect(consolePortSpec("pty", "/")).toEqual({ ok: true, value: { kind: "pty" } });
    expect(consolePortSpec("/dev/null", "/")).toEqual({ ok: true, value: { kind: "device", path: "/dev/null" } });
    expect(consolePortSpec(3, "/").ok).toBe(false);
  });
});
