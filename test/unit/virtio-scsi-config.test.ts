/**
 * virtio-scsi configuration: `path` (LUN 0) with the block options, `lun.N.path` and per-LUN options in
 * TOML and on the command line (-s 6,virtio-scsi,IMAGE,lun.1.path=...), typed values and defaults,
 * errors with file:line (unknown keys, LUN 0 under lun., out-of-range LUNs, missing paths, the same
 * image twice), the dump round trip, and prepare opening every LUN's disk.
 */
import { describe, expect, test } from "bun:test";
import { join } from "node:path";
import { parseArgs } from "../../src/cli/args.ts";
import { dumpConfig } from "../../src/config/dump.ts";
import { loadConfigText } from "../../src/config/load.ts";
import { configFixture } from "./config-fixture.ts";
import { describeKeys } from "../../src/config/schema.ts";
import { prepare, release } from "../../src/vm/prepare.ts";

const { dir, KERNEL, touch, load, errorOf } = configFixture("tsbhyve-vscsi-cfg-");
for (const f of ["a.img", "b.img", "c.img"]) touch(f, 1 << 20);

describe("virtio-scsi config", () => {
  test("TOML: LUN 0 from path, lun.N sub-tables, typed values, defaults, paths against the file's directory", () => {
    const c = load(`[pci.0.6.0]\ndevice = "virtio-scsi"\npath = "a.img"\nser = "S0"\nqueues = 2\n` +
      `[pci.0.6.0.lun.1]\npath = "b.img"\nro = true\n[pci.0.6.0.lun.7]\npath = "c.img"\nsectorsize = "512/4096"\nnodelete = "yes"\n`);
    expect(c.pci["0.6.0"]).toEqual({
      device: "virtio-scsi", path: join(dir, "a.img"), ser: "S0", queues: 2, queue_size: 256,
      lun: { "1": { path: join(dir, "b.img"), ro: true }, "7": { path: join(dir, "c.img"), sectorsize: "512/4096", nodelete: true } },
    });
    const again = loadConfigText(dumpConfig(c), join(dir, "dumped.toml"));
    expect(again.pci["0.6.0"]).toEqual(c.pci["0.6.0"]!);
  });

  test("-s 6,virtio-scsi,IMAGE,lun.1.path=...,lun.1.ro", () => {
    const c = parseArgs(["-k", KERNEL, "-s", "6,virtio-scsi,a.img,lun.1.path=b.img,lun.1.ro=true,nocache=false", "vm"], { cwd: dir }).config!;
    expect(c.pci["0.6.0"]).toEqual({
      device: "virtio-scsi", path: join(dir, "a.img"), nocache: false, queues: 1, queue_size: 256,
      lun: { "1": { path: join(dir, "b.img"), ro: true } },
    });
  });

  test("errors name the key and where it was set", () => {
    const e = (t: string) => errorOf(() => load(`[pci.0.6.0]\ndevice = "virtio-scsi"\n${t}`));
    expect(e(`path = "a.img"\nbogus = 1\n`)).toContain("pci.0.6.0.bogus: unknown virtio-scsi option");
    expect(e(`path = "a.img"\nbogus = 1\n`)).toContain("guest.toml:5");
    expect(e(`ro = true\n`)).toContain("pci.0.6.0.path: missing");
    expect(e(`path = "a.img"\nlun.0.path = "b.img"\n`)).toContain("LUN 0 is the table's own path");
    expect(e(`path = "a.img"\nlun.256.path = "b.img"\n`)).toContain("expected a LUN number 1-255, got 256");
    expect(e(`path = "a.img"\nlun.2.ro = true\n`)).toContain("pci.0.6.0.lun.2.path: missing");
    expect(e(`path = "a.img"\nlun.2.path = "a.img"\n`)).toContain("is already LUN 0");
    expect(e(`path = "a.img"\nlun.2.iothreads = 3\n`)).toContain("expected lun.N.KEY");
    expect(e(`path = "nope.img"\n`)).toContain("file not found");
    expect(e(`path = "a.img"\nqueues = 99\n`)).toContain("pci.0.6.0.queues: expected an integer 1-16");
    expect(e(`path = "a.img"\nlun.3.sectorsize = "300"\nlun.3.path = "b.img"\n`)).toContain("pci.0.6.0.lun.3.sectorsize");
  });

  test("--help lists the keys, LUN 0's and lun.N's", () => {
    const h = describeKeys();
    expect(h).toMatch(/pci\.B\.S\.F\.path +path +- +virtio-scsi \(required\): LUN 0/);
    expect(h).toMatch(/pci\.B\.S\.F\.lun\.N\.ro +bool .*virtio-scsi: LUN N \(1-255\)/);
    expect(h).toMatch(/PCI devices: [^(]*virtio-scsi/);
  });

  test("prepare opens LUN 0 and every lun.N (read-only where asked) and release closes them", () => {
    const c = load(`[pci.0.6.0]\ndevice = "virtio-scsi"\npath = "a.img"\n[pci.0.6.0.lun.3]\npath = "b.img"\nro = true\n`);
    const p = prepare(c);
    try {
      const luns = p.scsiLuns!["0.6.0"]!;
      expect(luns.map((l) => [l.lun, l.disk.readonly, l.disk.size])).toEqual([[0, false, 1 << 20], [3, true, 1 << 20]]);
      expect(p.virtioNotify["0.6.0"]!.length).toBe(3);
    } finally { release(p); }
    expect(p.scsiLuns!["0.6.0"]!.every((l) => l.disk.fd === -1)).toBe(true);
  });
});
