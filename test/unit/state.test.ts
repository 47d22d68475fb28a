import { describe, expect, test } from "bun:test";
import { bindState, defineLayout, StateArena } from "../../src/devices/state.ts";

describe("device state layouts", () => {
  const L = defineLayout("demo", 3, { a: "u8", b: "u32", c: "u16", fifo: { type: "u8", count: 16 }, t: "f64" });
  test("fields are naturally aligned after the 8-byte header", () => {
    expect(L.offsets).toEqual({ a: 8, b: 12, c: 16, fifo: 18, t: 40 });
    expect(L.bytes).toBe(48);
  });
  test("accessors read and write the shared bytes, and the version is stamped", () => {
    const buf = new SharedArrayBuffer(64);
    const st = bindState(buf, 0, L);
    st.s.a = 0x1ff; st.s.b = -1; st.s.c = 0xbeef; st.s.fifo[15] = 7; st.s.t = 1.5;
    const other = bindState(buf, 0, L); // as another thread would see it
    expect([other.s.a, other.s.b, other.s.c, other.s.fifo[15], other.s.t]).toEqual([0xff, 0xffffffff, 0xbeef, 7, 1.5]);
    expect(new DataView(buf).getUint32(4, true)).toBe(3);
  });
  test("the arena hands out disjoint blocks and refuses overflow", () => {
    const arena = new StateArena(new SharedArrayBuffer(100));
    const x = arena.alloc(L), y = arena.alloc(L);
    expect(y.offset).toBe(x.offset + L.bytes);
    expect(() => arena.alloc(L)).toThrow(/too small/);
    expect(arena.directory.map((d) => d.name)).toEqual(["demo", "demo"]);
  });
});

describe("DeviceLock across Workers", () => {
  test("two threads doing read-modify-write under the lock lose no update", async () => {
    const buf = new SharedArrayBuffer(64);
    const n = 200_000;
    const url = new URL("../fixtures/lock-worker.ts", import.meta.url).href;
    const run = (id: number) => new Promise<void>((res, rej) => {
      const w = new Worker(url);
      w.onmessage = () => { w.terminate(); res(); };
      w.onerror = (e) => rej(e);
      w.postMessage({ buf, n, locked: true, id });
    });
    await Promise.all([run(1), run(2)]);
    expect(new DataView(buf).getUint32(8, true)).toBe(2 * n);
    expect(new Int32Array(buf, 0, 1)[0]).toBe(0); // lock released
  });
});
