/**
 * The temp-dir fixture of the config unit tests: a directory removed after the file's tests with a 4 KiB
 * `bzImage` in it; `touch` makes more sized files there; `load` reads TOML text (after `head`) as the file
 * guest.toml in that directory; `errorOf` returns the message of the ConfigError a call throws, the
 * directory stripped.
 */
import { afterAll, expect } from "bun:test";
import { mkdtempSync, rmSync, truncateSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ConfigError, loadConfigText } from "../../src/config/load.ts";

export function configFixture(prefix: string, head = `boot.kernel = "bzImage"\n`) {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const touch = (name: string, bytes: number): string => {
    const p = join(dir, name);
    writeFileSync(p, "");
    truncateSync(p, bytes);
    return p;
  };
  const KERNEL = touch("bzImage", 4096);
  const load = (text: string) => loadConfigText(head + text, join(dir, "guest.toml"));
  const errorOf = (fn: () => unknown): string => {
    try { fn(); } catch (e) {
      expect(e).toBeInstanceOf(ConfigError);
      return (e as Error).message.replaceAll(dir + "/", "");
    }
    throw new Error("expected a ConfigError");
  };
  return { dir, KERNEL, touch, load, errorOf };
}
