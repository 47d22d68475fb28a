/**
 * Platform devices (ACPI PM, reset registers, i8042, POST/debugcon, pc-testdev) through a real Bus
 * over a shared state arena, with a fake Platform that records what the devices ask for. Devices are
 * powered on as the VM does it: built, then powerOnMachine once.
 */
import { describe, expect, test } from "bun:test";
import { Bus } from "../../src/devices/bus.ts";
import type { Device, DeviceContext, Platform } from "../../src/devices/device.ts";
import { StateArena, type Layout, type LayoutSpec } from "../../src/devices/state.ts";
import { powerOnMachine } from "../../src/vm/machine.ts";
import type { GuestMemory } from "../../src/mem/guest-memory.ts";
import { acpiPmLayout, createAcpiPm, pressPowerButton, PM1_EN, PM1_STS, type AcpiPmOptions } from "../../src/devices/acpi-pm.ts";
import { createReset, resetLayout } from "../../src/devices/reset.ts";
import { createI8042, i8042Layout, STATUS, CMD_BYTE, OUT_PORT } from "../../src/devices/i8042.ts";
import { createPost, postLayout, DEBUGCON_READBACK, type PostOptions } from "../../src/devices/post.ts";
import { createTestdev, testdevLayout, testdevExitStatus } from "../../src/devices/testdev.ts";
import { RecordingPlatform } from "./fake-platform.ts";


function machine(layouts: Layout<LayoutSpec>[], shared = true) {
  const size = StateArena.sizeFor(layouts);
  const buf = shared ? new SharedArrayBuffer(size) : new ArrayBuffer(size);
  const platform = new RecordingPlatform();
  const ctx: DeviceContext = { mem: {} as GuestMemory, arena: new StateArena(buf), platform, role: "vcpu" };
  const bus = new Bus();
  const devices: Device[] = [];
  const add = <D extends Device>(d: D): D => { bus.register(d); devices.push(d); return d; };
  /** What vm.ts does once on the main thread after buildMachine. */
  const powerOn = () => powerOnMachine({ devices });
  const inb = (p: number) => bus.read("pio", p, 1);
  const inw = (p: number) => bus.read("pio", p, 2);
  const inl = (p: number) => bus.read("pio", p, 4);
  const outb = (p: number, v: number) => bus.write("pio", p, 1, v);
  const outw = (p: number, v: number) => bus.write("pio", p, 2, v);
  const outl = (p: number, v: number) => bus.write("pio", p, 4, v);
  return { buf, platform, ctx, bus, add, powerOn, inb, inw, inl, outb, outw, outl };
}

// ------------------------------------------------------------------------------------------------
describe("acpi-pm", () => {
  const setup = (opts?: AcpiPmOptions) => {
    const m = machine([acpiPmLayout]);
    const pm = m.add(createAcpiPm(m.ctx, opts));
    m.powerOn();
    return { ...m, pm };
  };

  test("registers ports 0x400-0x403 and 0x404-0x405 only", () => {
    const { bus } = setup();
    expect(bus.list()).toEqual([
      { space: "pio", base: 0x400, size: 4, name: "acpi-pm" },
      { space: "pio", base: 0x404, size: 2, name: "acpi-pm" },
    ]);
  });

  test("base option moves both blocks", () => {
    const { bus, inw, platform, outw } = setup({ base: 0x600 });
    expect(bus.list().map((r) => r.base)).toEqual([0x600, 0x604]);
    expect(inw(0x604) & 1).toBe(1);
    outw(0x604, (5 << 10) | (1 << 13));
    expect(platform.exits).toEqual([{ code: 1, reason: "ACPI S5 power-off" }]);
    expect(inw(0x400)).toBe(0xffff); // nothing there any more
  });

  test("power-on state: STS 0, EN 0, CNT reads SCI_EN", () => {
    const { inl, inw, inb } = setup();
    expect(inl(0x400)).toBe(0);
    expect(inw(0x404)).toBe(1);
    expect(inb(0x404)).toBe(1);
    expect(inb(0x405)).toBe(0);
  });

  test("PM1_EN read/write at 16 and 8 bits, only defined bits", () => {
    const { inw, outw, outb, inl, inb } = setup();
    outw(0x402, 0xffff);
    expect(inw(0x402)).toBe(PM1_EN.TMR_EN | PM1_EN.GBL_EN | PM1_EN.PWRBTN_EN | PM1_EN.SLPBTN_EN | PM1_EN.RTC_EN | PM1_EN.PCIEXP_WAKE_DIS);
    outw(0x402, 0);
    outb(0x403, 0x01); // PWRBTN_EN via the high byte
    expect(inw(0x402)).toBe(PM1_EN.PWRBTN_EN);
    expect(inl(0x400)).toBe(PM1_EN.PWRBTN_EN << 16);
    expect(inb(0x403)).toBe(1);
    expect(inb(0x402)).toBe(0);
  });

  test("power button: STS set, SCI level follows STS & EN, write-1-to-clear", () => {
    const { pm, inw, outw, platform } = setup();
    pressPowerButton(pm);
    expect(inw(0x400)).toBe(PM1_STS.PWRBTN_STS);
    expect(platform.irqs).toEqual([]); // not enabled: no SCI
    outw(0x402, PM1_EN.PWRBTN_EN);
    expect(platform.irqs).toEqual([[9, 1]]);
    pm.powerButton(); // again while pending: line already high
    expect(platform.irqs).toEqual([[9, 1]]);
    outw(0x400, 0); // writing 0 clears nothing
    expect(inw(0x400)).toBe(PM1_STS.PWRBTN_STS);
    outw(0x400, PM1_STS.TMR_STS); // clearing another bit leaves it
    expect(inw(0x400)).toBe(PM1_STS.PWRBTN_STS);
    outw(0x400, PM1_STS.PWRBTN_STS);
    expect(inw(0x400)).toBe(0);
    expect(platform.irqs).toEqual([[9, 1], [9, 0]]);
    expect(pm.registers()).toEqual({ sts: 0, en: PM1_EN.PWRBTN_EN, cnt: 1 });
  });

  test("enabling with status already set raises SCI; disabling lowers it", () => {
    const { pm, outw, platform } = setup();
    pm.powerButton();
    outw(0x402, PM1_EN.PWRBTN_EN);
    outw(0x402, 0);
    expect(platform.irqs).toEqual([[9, 1], [9, 0]]);
  });

  test("a 32-bit write clears STS and sets EN together", () => {
    const { pm, inl, outl, platform } = setup();
    pm.powerButton();
    outl(0x400, (PM1_EN.PWRBTN_EN << 16) | PM1_STS.PWRBTN_STS);
    expect(inl(0x400)).toBe(PM1_EN.PWRBTN_EN << 16);
    expect(platform.irqs).toEqual([]);
  });

  test("byte write to STS high byte clears PWRBTN_STS", () => {
    const { pm, inw, outb } = setup();
    pm.powerButton();
    outb(0x400, 0xff); // low byte: PWRBTN is bit 8, untouched
    expect(inw(0x400)).toBe(PM1_STS.PWRBTN_STS);
    outb(0x401, 0x01);
    expect(inw(0x400)).toBe(0);
  });

  test("sciGsi option", () => {
    const { pm, outw, platform } = setup({ sciGsi: 11 });
    outw(0x402, PM1_EN.PWRBTN_EN);
    pm.powerButton();
    expect(platform.irqs).toEqual([[11, 1]]);
  });

  test("PM1_CNT: SCI_EN always 1, SLP_TYP stored, SLP_EN and GBL_RLS read 0", () => {
    const { inw, outw, platform } = setup();
    outw(0x404, 0); // try to clear SCI_EN
    expect(inw(0x404)).toBe(1);
    outw(0x404, (3 << 10) | 0x2 | 0x4);
    expect(inw(0x404)).toBe((3 << 10) | 0x2 | 1);
    expect(platform.exits).toEqual([]);
  });

  test("SLP_TYP=5 + SLP_EN → exit 1 power-off", () => {
    const { outw, platform } = setup();
    outw(0x404, (5 << 10) | (1 << 13) | 1);
    expect(platform.exits).toEqual([{ code: 1, reason: "ACPI S5 power-off" }]);
  });

  test("SLP_TYP set first, then SLP_EN by a high-byte write (Linux writes it in two steps)", () => {
    const { outw, outb, inw, platform } = setup();
    outw(0x404, (5 << 10) | 1);
    expect(platform.exits).toEqual([]);
    expect((inw(0x404) >> 10) & 7).toBe(5);
    outb(0x405, (5 << 2) | (1 << 5));
    expect(platform.exits).toEqual([{ code: 1, reason: "ACPI S5 power-off" }]);
    expect(inw(0x404) & (1 << 13)).toBe(0);
  });

  test("other SLP_TYP values are refused with a log line and an immediate wake", () => {
    const { outw, inw, platform } = setup();
    for (const typ of [0, 1, 3, 4, 6, 7]) {
      outw(0x404, (typ << 10) | (1 << 13));
      expect(platform.exits).toEqual([]);
      expect(inw(0x400) & PM1_STS.WAK_STS).toBe(PM1_STS.WAK_STS);
      outw(0x400, PM1_STS.WAK_STS);
      expect(inw(0x400)).toBe(0);
    }
    expect(platform.logs.length).toBe(6);
    expect(platform.logs[2]).toContain("SLP_TYP=3");
    expect(platform.irqs).toEqual([]); // WAK_STS has no enable: no SCI
  });

  test("state lives in the shared block: a second instance over the same buffer sees it", () => {
    const m = machine([acpiPmLayout]);
    const a = createAcpiPm(m.ctx);
    const b = createAcpiPm({ ...m.ctx, arena: new StateArena(m.buf) });
    a.powerButton();
    expect(b.registers().sts).toBe(PM1_STS.PWRBTN_STS);
  });
});

// ------------------------------------------------------------------------------------------------
describe("reset", () => {
  const setup = () => {
    const m = machine([resetLayout]);
    m.add(createReset(m.ctx));
    m.powerOn();
    return m;
  };

  test("claims only 0xCF9 and 0x92, leaving 0xCF8 and 0xCFC-0xCFF free", () => {
    const { bus } = setup();
    expect(bus.list()).toEqual([
      { space: "pio", base: 0xcf9, size: 1, name: "reset" },
      { space: "pio", base: 0x92, size: 1, name: "reset" },
    ]);
    const other: Device = {
      name: "pci-host", ranges: [{ space: "pio", base: 0xcf8, size: 1 }, { space: "pio", base: 0xcfa, size: 6 }],
      read: () => 0, write: () => {},
    };
    expect(() => bus.register(other)).not.toThrow();
  });

  test("0xCF9: value with only SYS_RST is stored, no reset", () => {
    const { inb, outb, platform } = setup();
    expect(inb(0xcf9)).toBe(0);
    outb(0xcf9, 0x02);
    expect(inb(0xcf9)).toBe(0x02);
    expect(platform.exits).toEqual([]);
  });

  test.each([6, 0xe, 4])("0xCF9 write 0x%s → reset (exit 0)", (v) => {
    const { inb, outb, platform } = setup();
    outb(0xcf9, v);
    expect(platform.exits).toEqual([{ code: 0, reason: "reset via 0xCF9" }]);
    expect(inb(0xcf9) & 4).toBe(0);
  });

  test("port 0x92: power-on A20 set, A20 read back, bit 0 rising edge resets", () => {
    const { inb, outb, platform } = setup();
    expect(inb(0x92)).toBe(0x02);
    outb(0x92, 0x00);
    expect(inb(0x92)).toBe(0x00);
    outb(0x92, 0x02);
    expect(inb(0x92)).toBe(0x02);
    expect(platform.exits).toEqual([]);
    outb(0x92, 0x03);
    expect(platform.exits).toEqual([{ code: 0, reason: "reset via port 0x92" }]);
    outb(0x92, 0x03); // no edge
    expect(platform.exits.length).toBe(1);
    outb(0x92, 0x02);
    outb(0x92, 0x01);
    expect(platform.exits.length).toBe(2);
  });

  test("a 16-bit access at 0xCF8 is split: only the 0xCF9 byte reaches the device", () => {
    const { bus, inb, platform } = setup();
    bus.write("pio", 0xcf8, 2, 0x0200);
    expect(inb(0xcf9)).toBe(2);
    expect(platform.exits).toEqual([]);
    expect(bus.read("pio", 0xcf8, 4)).toBe(0xffff02ff);
  });
});

// ------------------------------------------------------------------------------------------------
describe("i8042", () => {
  const setup = () => {
    const m = machine([i8042Layout]);
    const kbc = m.add(createI8042(m.ctx));
    m.powerOn();
    const drain = () => { const out: number[] = []; while (m.inb(0x64) & STATUS.OBF) out.push(m.inb(0x60)); return out; };
    return { ...m, kbc, drain };
  };

  test("claims 0x60 and 0x64 only", () => {
    const { bus } = setup();
    expect(bus.list().map((r) => [r.base, r.size])).toEqual([[0x60, 1], [0x64, 1]]);
  });

  test("power-on status: empty, input buffer empty, system flag, unlocked", () => {
    const { inb } = setup();
    const st = inb(0x64);
    expect(st & STATUS.OBF).toBe(0);
    expect(st & STATUS.IBF).toBe(0);
    expect(st & STATUS.SYS).toBe(STATUS.SYS);
    expect(st & STATUS.UNLOCKED).toBe(STATUS.UNLOCKED);
  });

  test("read/write command byte (0x20 / 0x60)", () => {
    const { outb, drain, inb } = setup();
    outb(0x64, 0x20);
    expect(inb(0x64) & STATUS.OBF).toBe(STATUS.OBF);
    expect(drain()).toEqual([CMD_BYTE.RESET_VALUE]);
    outb(0x64, 0x60);
    expect(inb(0x64) & STATUS.A2).toBe(STATUS.A2);
    outb(0x60, 0x30); // no INT, SYS clear, both disabled
    expect(inb(0x64) & STATUS.A2).toBe(0);
    expect(inb(0x64) & STATUS.SYS).toBe(0);
    outb(0x64, 0x20);
    expect(drain()).toEqual([0x30]);
  });

  test("other internal RAM bytes (0x21-0x3F / 0x61-0x7F)", () => {
    const { outb, drain } = setup();
    outb(0x64, 0x65);
    outb(0x60, 0x5a);
    outb(0x64, 0x25);
    expect(drain()).toEqual([0x5a]);
  });

  test("self-test 0xAA → 0x55, interface test 0xAB → 0x00, aux test → absent", () => {
    const { outb, drain } = setup();
    outb(0x64, 0xaa);
    expect(drain()).toEqual([0x55]);
    outb(0x64, 0xab);
    expect(drain()).toEqual([0x00]);
    outb(0x64, 0xa9);
    expect(drain()).toEqual([0x02]);
  });

  test("self-test sets the system flag", () => {
    const { outb, inb, drain } = setup();
    outb(0x64, 0x60); outb(0x60, 0x00);
    expect(inb(0x64) & STATUS.SYS).toBe(0);
    outb(0x64, 0xaa);
    drain();
    expect(inb(0x64) & STATUS.SYS).toBe(STATUS.SYS);
  });

  test("0xAD/0xAE/0xA7/0xA8 toggle the command-byte disable bits", () => {
    const { outb, drain } = setup();
    const ctr = () => { outb(0x64, 0x20); return drain()[0]!; };
    outb(0x64, 0xad);
    expect(ctr() & CMD_BYTE.KBD_DIS).toBe(CMD_BYTE.KBD_DIS);
    outb(0x64, 0xae);
    expect(ctr() & CMD_BYTE.KBD_DIS).toBe(0);
    outb(0x64, 0xa8);
    expect(ctr() & CMD_BYTE.AUX_DIS).toBe(0);
    outb(0x64, 0xa7);
    expect(ctr() & CMD_BYTE.AUX_DIS).toBe(CMD_BYTE.AUX_DIS);
  });

  test("output port read/write (0xD0/0xD1)", () => {
    const { outb, drain, platform } = setup();
    outb(0x64, 0xd0);
    expect(drain()).toEqual([0x03]);
    outb(0x64, 0xd1);
    outb(0x60, 0xdf);
    outb(0x64, 0xd0);
    expect(drain()).toEqual([0xdf]);
    expect(platform.exits).toEqual([]);
    outb(0x64, 0xd1);
    outb(0x60, 0xde); // reset line (active low) asserted
    expect(platform.exits).toEqual([{ code: 0, reason: "reset via i8042" }]);
  });

  test("pulse output line 0xFE → reset", () => {
    const { outb, platform } = setup();
    outb(0x64, 0xfe);
    expect(platform.exits).toEqual([{ code: 0, reason: "reset via i8042" }]);
  });

  test("pulse commands: even 0xF0-0xFE reset, odd ones do not", () => {
    for (let c = 0xf0; c <= 0xff; c++) {
      const { outb, platform } = setup();
      outb(0x64, c);
      expect(platform.exits.length).toBe(c & 1 ? 0 : 1);
    }
  });

  test("keyboard commands are ACKed; reset → FA AA; get ID → FA AB 41 (translated)", () => {
    const { outb, drain } = setup();
    outb(0x60, 0xff);
    expect(drain()).toEqual([0xfa, 0xaa]);
    outb(0x60, 0xf2);
    expect(drain()).toEqual([0xfa, 0xab, 0x41]);
    outb(0x60, 0xf4);
    expect(drain()).toEqual([0xfa]);
    outb(0x60, 0xf5);
    expect(drain()).toEqual([0xfa]);
    outb(0x60, 0xed); outb(0x60, 0x07);
    expect(drain()).toEqual([0xfa, 0xfa]);
    outb(0x60, 0xf3); outb(0x60, 0x00);
    expect(drain()).toEqual([0xfa, 0xfa]);
    outb(0x60, 0xee);
    expect(drain()).toEqual([0xee]);
    outb(0x60, 0x42); // unknown
    expect(drain()).toEqual([0xfa]);
  });

  test("get ID without translation → FA AB 83; scancode set query", () => {
    const { outb, drain } = setup();
    outb(0x64, 0x60); outb(0x60, 0x01);
    outb(0x60, 0xf2);
    expect(drain()).toEqual([0xfa, 0xab, 0x83]);
    outb(0x60, 0xf0); outb(0x60, 0x00);
    expect(drain()).toEqual([0xfa, 0xfa, 0x02]);
    outb(0x60, 0xf0); outb(0x60, 0x03);
    outb(0x60, 0xf0); outb(0x60, 0x00);
    expect(drain()).toEqual([0xfa, 0xfa, 0xfa, 0xfa, 0x03]);
    outb(0x60, 0xff);
    outb(0x60, 0xf0); outb(0x60, 0x00);
    expect(drain()).toEqual([0xfa, 0xaa, 0xfa, 0xfa, 0x02]);
  });

  test("0xD2 writes the output buffer; empty buffer re-reads the last byte", () => {
    const { outb, inb, drain } = setup();
    outb(0x64, 0xd2); outb(0x60, 0x1c);
    expect(drain()).toEqual([0x1c]);
    expect(inb(0x60)).toBe(0x1c);
    expect(inb(0x64) & STATUS.OBF).toBe(0);
  });

  test("aux data (0xD3/0xD4) is dropped, not treated as a keyboard command", () => {
    const { outb, drain } = setup();
    outb(0x64, 0xd4); outb(0x60, 0xff);
    outb(0x64, 0xd3); outb(0x60, 0x5a);
    expect(drain()).toEqual([]);
  });

  test("IRQ1 pulses on each output-buffer fill while INT is set", () => {
    const { outb, inb, platform, kbc } = setup();
    outb(0x60, 0xff); // FA, AA
    expect(platform.irqs).toEqual([[1, 1], [1, 0]]);
    expect(kbc.pending()).toEqual([0xfa, 0xaa]);
    expect(inb(0x60)).toBe(0xfa); // AA moves into the buffer: another edge
    expect(platform.irqs.length).toBe(4);
    expect(inb(0x60)).toBe(0xaa);
    expect(platform.irqs.length).toBe(4);
  });

  test("no IRQ1 with INT clear; setting INT with a full buffer gives the edge", () => {
    const { outb, inb, platform } = setup();
    outb(0x64, 0x60); outb(0x60, 0x44); // INT off
    outb(0x60, 0xf4);
    expect(platform.irqs).toEqual([]);
    outb(0x64, 0x60); outb(0x60, 0x45);
    expect(platform.irqs).toEqual([[1, 1], [1, 0]]);
    expect(inb(0x60)).toBe(0xfa);
  });

  test("unknown controller command is logged and ignored", () => {
    const { outb, drain, platform } = setup();
    outb(0x64, 0xc5);
    expect(drain()).toEqual([]);
    expect(platform.logs[0]).toContain("0xc5");
  });

  test("FIFO overrun drops bytes instead of throwing", () => {
    const { outb, kbc } = setup();
    for (let i = 0; i < 40; i++) outb(0x60, 0xf4);
    expect(kbc.pending().length).toBe(16);
  });
});

// ------------------------------------------------------------------------------------------------
describe("post / debugcon", () => {
  const setup = (opts: PostOptions = {}) => {
    const m = machine([postLayout]);
    const post = m.add(createPost(m.ctx, opts));
    m.powerOn();
    return { ...m, post };
  };

  test("port 0x80 latches the last byte", () => {
    const { inb, outb, post } = setup();
    expect(inb(0x80)).toBe(0);
    outb(0x80, 0x3c);
    outb(0x80, 0x55);
    expect(inb(0x80)).toBe(0x55);
    expect(post.lastCode()).toBe(0x55);
  });

  test("0x402 lines go to the sink, CR dropped; reads return 0xE9", () => {
    const lines: string[] = [];
    const { inb, outb, post } = setup({ sink: (l) => lines.push(l) });
    expect(inb(0x402)).toBe(DEBUGCON_READBACK);
    for (const c of "Hello\r\nOVMF\n") outb(0x402, c.charCodeAt(0));
    expect(lines).toEqual(["Hello", "OVMF"]);
    for (const c of "tail") outb(0x402, c.charCodeAt(0));
    expect(lines.length).toBe(2);
    post.flush();
    expect(lines).toEqual(["Hello", "OVMF", "tail"]);
    post.flush();
    expect(lines.length).toBe(3);
  });

  test("debugconPort option: moved or left out", () => {
    const { bus } = setup({ debugconPort: 0xe9 });
    expect(bus.list().map((r) => r.base)).toEqual([0x80, 0xe9]);
    expect(setup({ debugconPort: null }).bus.list().map((r) => r.base)).toEqual([0x80]);
  });

  test("debugcon 0x402 overlaps the default ACPI PM block: the bus refuses it", () => {
    const m = machine([acpiPmLayout, postLayout]);
    m.add(createAcpiPm(m.ctx));
    expect(() => m.add(createPost(m.ctx))).toThrow(/0x402 already used by acpi-pm/);
  });

  test("default sink is platform.log; UTF-8 decoded; long lines are cut", () => {
    const { outb, platform } = setup();
    for (const b of new TextEncoder().encode("é\n")) outb(0x402, b);
    expect(platform.logs).toEqual(["debugcon: é"]);
    for (let i = 0; i < 300; i++) outb(0x402, 0x41);
    expect(platform.logs.length).toBe(2);
    expect(platform.logs[1]).toBe("debugcon: " + "A".repeat(256));
  });
});

// ------------------------------------------------------------------------------------------------
describe("pc-testdev", () => {
  const setup = () => {
    const m = machine([testdevLayout]);
    m.add(createTestdev(m.ctx));
    m.powerOn();
    return m;
  };

  test("counter: byte writes of 1 increment, others ignored, 4-byte write sets", () => {
    const { inl, outb, outl, inb, inw } = setup();
    expect(inl(0xe0)).toBe(0);
    for (let i = 0; i < 1000; i++) outb(0xe0, 1);
    outb(0xe0, 2);
    outb(0xe1, 1);
    expect(inl(0xe0)).toBe(1000);
    expect(inb(0xe0)).toBe(1000 & 0xff);
    expect(inb(0xe1)).toBe(1000 >> 8);
    expect(inw(0xe2)).toBe(0);
    outl(0xe0, 0xffffffff);
    outb(0xe0, 1);
    expect(inl(0xe0)).toBe(0);
    outl(0xe0, 0x12345678);
    expect(inw(0xe2)).toBe(0x1234);
  });

  test("0xF4 exit uses isa-debug-exit's (v << 1) | 1", () => {
    const { outb, platform } = setup();
    outb(0xf4, 0);
    outb(0xf4, 0x10);
    outb(0xf4, 0xff);
    expect(platform.exits.map((e) => e.code)).toEqual([1, 0x21, 0xff]);
    expect(testdevExitStatus(0x7f)).toBe(0xff);
  });

  test("the device lock makes the non-atomic increment exact across two Workers", async () => {
    const m = machine([testdevLayout]);
    m.add(createTestdev(m.ctx));
    m.powerOn();
    const src = `
      import { Bus } from ${JSON.stringify(new URL("../../src/devices/bus.ts", import.meta.url).href)};
      import { StateArena } from ${JSON.stringify(new URL("../../src/devices/state.ts", import.meta.url).href)};
      import { createTestdev } from ${JSON.stringify(new URL("../../src/devices/testdev.ts", import.meta.url).href)};
      self.onmessage = (ev) => {
        const { buf, n } = ev.data;
        const platform = { irqLine() {}, msi() {}, requestExit() {}, wakeIo() {}, log() {} };
        const bus = new Bus();
        bus.register(createTestdev({ mem: {}, arena: new StateArena(buf), platform, role: "vcpu" }));
        for (let i = 0; i < n; i++) bus.write("pio", 0xe0, 1, 1);
        self.postMessage("done");
      };`;
    const url = URL.createObjectURL(new Blob([src], { type: "application/typescript" }));
    const N = 200_000;
    const workers = [new Worker(url), new Worker(url)];
    await Promise.all(workers.map((w) => new Promise<void>((resolve, reject) => {
      w.onmessage = () => resolve();
      w.onerror = (e) => reject(e);
      w.postMessage({ buf: m.buf, n: N });
    })));
    for (const w of workers) w.terminate();
    expect(m.inl(0xe0)).toBe(2 * N);
  });
});

// ------------------------------------------------------------------------------------------------
describe("power-on hook", () => {
  /** A second thread's view: the same devices constructed over the same buffer, never powered on. */
  const otherThread = (m: ReturnType<typeof machine>) => {
    const ctx: DeviceContext = { ...m.ctx, arena: new StateArena(m.buf) };
    const bus = new Bus();
    bus.register(createReset(ctx));
    bus.register(createI8042(ctx));
    return {
      inb: (p: number) => bus.read("pio", p, 1),
      outb: (p: number, v: number) => bus.write("pio", p, 1, v),
    };
  };
  const cmdByte = (io: { inb(p: number): number; outb(p: number, v: number): void }) => {
    io.outb(0x64, 0x20);
    return io.inb(0x60);
  };
  const outPort = (io: { inb(p: number): number; outb(p: number, v: number): void }) => {
    io.outb(0x64, 0xd0);
    return io.inb(0x60);
  };

  test("constructors write nothing: before powerOn the state blocks (past the header) are all zero", () => {
    const m = machine([resetLayout, i8042Layout]);
    m.add(createReset(m.ctx));
    m.add(createI8042(m.ctx));
    expect(new Uint8Array(m.buf, 8, resetLayout.bytes - 8).every((b) => b === 0)).toBe(true);
    expect(new Uint8Array(m.buf, resetLayout.bytes + 8, i8042Layout.bytes - 8).every((b) => b === 0)).toBe(true);
    expect(m.inb(0x92)).toBe(0); // not the power-on 0x02: the hook is what sets it
  });

  test("after powerOn: command byte 0x65, output port 0x03, port 0x92 0x02, scancode set 2", () => {
    const m = machine([resetLayout, i8042Layout]);
    m.add(createReset(m.ctx));
    m.add(createI8042(m.ctx));
    m.powerOn();
    expect(cmdByte(m)).toBe(0x65);
    expect(CMD_BYTE.RESET_VALUE).toBe(0x65);
    expect(outPort(m)).toBe(OUT_PORT.RESET_VALUE);
    expect(m.inb(0x92)).toBe(0x02);
    expect(m.inb(0xcf9)).toBe(0);
    m.outb(0x60, 0xf0); // keyboard: scancode set (ACK), query (ACK, set)
    m.outb(0x60, 0x00);
    expect([m.inb(0x60), m.inb(0x60), m.inb(0x60)]).toEqual([0xfa, 0xfa, 2]);
    expect(m.platform.irqs.filter(([g]) => g === 1).length).toBeGreaterThan(0); // INT is on
  });

  test("another thread's instances over the same buffer see the power-on values without calling powerOn", () => {
    const m = machine([resetLayout, i8042Layout]);
    m.add(createReset(m.ctx));
    m.add(createI8042(m.ctx));
    m.powerOn();
    const t = otherThread(m);
    expect(cmdByte(t)).toBe(0x65);
    expect(outPort(t)).toBe(0x03);
    expect(t.inb(0x92)).toBe(0x02);
    expect(t.inb(0x64) & STATUS.SYS).toBe(STATUS.SYS);
    // ... and a thread constructed after the guest changed things does not reset them.
    m.outb(0x92, 0x00);
    m.outb(0x64, 0x60);
    m.outb(0x60, 0x30);
    const late = otherThread(m);
    expect(late.inb(0x92)).toBe(0x00);
    expect(cmdByte(late)).toBe(0x30);
    expect(cmdByte(m)).toBe(0x30);
  });

  test("powerOn restores the power-on state from any state (device reset)", () => {
    const m = machine([resetLayout, i8042Layout]);
    m.add(createReset(m.ctx));
    const kbc = m.add(createI8042(m.ctx));
    m.powerOn();
    m.outb(0x92, 0xfc);
    m.outb(0xcf9, 0x0a);
    m.outb(0x64, 0x60);
    m.outb(0x60, 0x00);
    m.outb(0x64, 0x65); // RAM byte 5 ← next data byte
    m.outb(0x60, 0x5a);
    m.outb(0x64, 0xd2); // leave bytes in the output FIFO
    m.outb(0x60, 0x11);
    m.outb(0x60, 0xf0); // keyboard: set scancode set 3
    m.outb(0x60, 0x03);
    expect(kbc.pending().length).toBeGreaterThan(0);
    m.powerOn();
    expect(kbc.pending()).toEqual([]);
    expect(m.inb(0x92)).toBe(0x02);
    expect(m.inb(0xcf9)).toBe(0);
    expect(cmdByte(m)).toBe(0x65);
    m.outb(0x64, 0x25);
    expect(m.inb(0x60)).toBe(0);
    m.outb(0x60, 0xf0);
    m.outb(0x60, 0x00);
    expect([m.inb(0x60), m.inb(0x60), m.inb(0x60)]).toEqual([0xfa, 0xfa, 2]);
  });

  test("powerOnMachine runs each hook once, under the device lock, and skips devices without one", () => {
    const calls: string[] = [];
    const locked = { held: false, acquire() { this.held = true; }, release() { this.held = false; } };
    const dev: Device = {
      name: "probe", ranges: [], lock: locked, read: () => 0, write: () => {},
      powerOn() { calls.push(locked.held ? "locked" : "unlocked"); },
    };
    const bare: Device = { name: "bare", ranges: [], read: () => 0, write: () => {} };
    powerOnMachine({ devices: [dev, bare] });
    expect(calls).toEqual(["locked"]);
    expect(locked.held).toBe(false);
  });
});

// ------------------------------------------------------------------------------------------------
describe("fuzz", () => {
  test("random accesses to every port of every device never throw", () => {
    const m = machine([acpiPmLayout, resetLayout, i8042Layout, postLayout, testdevLayout]);
    const sink: string[] = [];
    m.add(createAcpiPm(m.ctx, { base: 0x600 })); // 0x400-0x403 would overlap debugcon 0x402
    m.add(createReset(m.ctx));
    m.add(createI8042(m.ctx));
    m.add(createPost(m.ctx, { sink: (l) => { if (sink.length < 100) sink.push(l); } }));
    m.add(createTestdev(m.ctx));
    m.powerOn();
    const ports = m.bus.list().flatMap((r) => Array.from({ length: r.size + 2 }, (_, i) => r.base - 1 + i));
    // xorshift32, fixed seed: reproducible
    let x = 0x9e3779b9;
    const rnd = () => { x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0; return x; };
    for (let i = 0; i < 200_000; i++) {
      const port = ports[rnd() % ports.length]!;
      const size = [1, 2, 4][rnd() % 3]!;
      if (rnd() & 1) {
        const v = m.bus.read("pio", port, size);
        expect(v).toBeGreaterThanOrEqual(0);
        expect(v).toBeLessThan(2 ** (8 * size));
      } else {
        m.bus.write("pio", port, size, rnd());
      }
    }
    for (const e of m.platform.exits) expect(Number.isInteger(e.code) && e.code >= 0 && e.code <= 255).toBe(true);
    for (const [gsi, level] of m.platform.irqs) {
      expect([1, 9]).toContain(gsi);
      expect([0, 1]).toContain(level);
    }
  });
});
