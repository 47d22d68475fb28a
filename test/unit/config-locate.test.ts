import { describe, expect, test } from "bun:test";
import { lineOf, locateKeys } from "../../src/config/locate.ts";
import { ConfigError, loadConfigText } from "../../src/config/load.ts";

describe("key locator", () => {
  test("tables, dotted keys, quoted keys", () => {
    const lines = locateKeys([
      `name = "a"`,                     // 1
      `# comment [not.a.table]`,        // 2
      `"memory.size" = "1G"`,           // 3
      `x86.strictio = true  # trailing`, // 4
      ``,                               // 5
      `[ lpc . "com1" ]`,                // 6
      `path = "stdio"`,                 // 7
      `[pci.0.4.0]`,                    // 8
      `device = 'hostbridge'`,          // 9
    ].join("\n"));
    expect(lines.get("name")).toBe(1);
    expect(lines.get("memory.size")).toBe(3);
    expect(lines.get("x86.strictio")).toBe(4);
    expect(lines.get("x86")).toBe(4);
    expect(lines.get("lpc.com1")).toBe(6);
    expect(lines.get("lpc.com1.path")).toBe(7);
    expect(lines.get("pci.0.4.0.device")).toBe(9);
    expect(lineOf(lines, "pci.0.4.0.missing")).toBe(8);
    expect(lineOf(lines, "nowhere")).toBeUndefined();
  });

  test("multi-line strings and arrays do not confuse it", () => {
    const lines = locateKeys([
      `a = """`,          // 1
      `[fake]`,           // 2
      `b = 1 """`,        // 3
      `c = [`,            // 4
      `  "x", # [also.fake]`, // 5
      `  { d = 1 },`,     // 6
      `]`,                // 7
      `e = '''`,          // 8
      `''''`,             // 9  (closing ''' plus one quote in the content)
      `f = "q\\"[g]"`,    // 10
      `h = 1979-05-27 07:32:00`, // 11
      `[[arr]]`,          // 12
      `k = 1`,            // 13
      `[[arr]]`,          // 14
      `k = 2`,            // 15
      `[t]`,              // 16
      `i = { j = { l = 1 }, m = "}" }`, // 17
      `n = 2`,            // 18
    ].join("\n"));
    expect(lines.has("fake")).toBe(false);
    expect(lines.has("b")).toBe(false);
    expect(lines.get("c")).toBe(4);
    expect(lines.has("also.fake")).toBe(false);
    expect(lines.get("e")).toBe(8);
    expect(lines.get("f")).toBe(10);
    expect(lines.has("g")).toBe(false);
    expect(lines.get("h")).toBe(11);
    expect(lines.get("arr")).toBe(12);
    expect(lines.get("arr.k")).toBe(13);
    expect(lines.get("t.i.j.l")).toBe(17);
    expect(lines.get("t.i.m")).toBe(17);
    expect(lines.get("t.n")).toBe(18);
  });

  test("errors inside inline tables and after multi-line strings point at the right line", () => {
    const text = `boot.cmdline = """\nconsole=ttyS0\n"""\nmemory = { size = "x" }\n[mem]\nsize = "1G"\n`;
    let msg = "";
    try {
      loadConfigText(text, "g.toml");
    } catch (e) {
      expect(e).toBeInstanceOf(ConfigError);
      msg = (e as Error).message;
    }
    expect(msg.split("\n")).toEqual([
      `g.toml:1: boot.cmdline: needs boot.kernel`,
      `g.toml:4: memory.size: expected a size like "512M" or "2G", got "x"`,
      `g.toml:6: mem.size: unknown key (did you mean memory.size?)`,
      `g.toml: lpc.bootrom: expected lpc.bootrom (firmware) or boot.kernel (direct kernel boot); neither is set`,
    ]);
  });
});
