/**
 * Fuzzing virtio-9p's request path: the whole device (virtio-pci transport, split queue, 9P server on a
 * real host folder, preadv/pwritev into real guest memory) gets
 *  - structured random T-messages (every type in the table and unknown ones; fids near the live ones;
 *    names like "..", "/", "a/b", absolute paths, symlinks pointing out, NUL, 300 bytes; offsets and
 *    counts at the edges), then mutated (bit flips, truncation, a wrong size field, junk appended),
 *    split over 1-3 readable and 0-3 writable buffers of random sizes (0 to 64 KiB of room);
 *  - malformed descriptor chains: loops, huge lengths, addresses outside RAM or beyond 2^53, readable
 *    after writable, only-readable / only-writable, bad indirect tables, an avail index far ahead.
 * Oracles per execution: no exception escapes; the server counts no internal error; the used length
 * is at most the chain's writable bytes; guest bytes outside the chain's writable buffers are unchanged
 * (a canary-filled arena); a reply is a well-formed R-message (size = used length, the request's tag,
 * Rlerror or the matching R type); a chain that cannot hold an Rlerror gets 0 bytes; after a
 * malformed chain the queue either answered or the device set NEEDS_RESET. At the end the folder
 * outside the share is unchanged. A sabotaged server shows the oracles catch a wrong device.
 */
import { afterAll, expect, test } from "bun:test";
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { T as TSPEC } from "../../src/virtio/9p/protocol.ts";
import type { Chain } from "../../src/virtio/queue.ts";
import { VIRTIO_STATUS } from "../../src/virtio/pci.ts";
import { VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE } from "../../src/virtio/queue.ts";
import { deviceRig, tmsg, type Part } from "./virtio-9p-client.ts";
import type { FakeDriver } from "./virtio-driver.ts";
import { rng, type Rng } from "./virtio-fuzz-rig.ts";

const base = mkdtempSync(join(tmpdir(), "tsb-9p-fuzz-"));
afterAll(() => rmSync(base, { recursive: true, force: true }));
const outside = join(base, "outside");
mkdirSync(outside);
writeFileSync(join(outside, "secret.txt"), "SECRET");
const snapshot = () => JSON.stringify(readdirSync(outside).sort()) + readFileSync(join(outside, "secret.txt"), "utf8") + JSON.stringify(readdirSync(base).filter((f) => !f.startsWith("share-")).sort());

function makeShare(name: string): string {
  const d = join(base, name);
  mkdirSync(join(d, "sub"), { recursive: true });
  writeFileSync(join(d, "hello.txt"), "hello world\n");
  writeFileSync(join(d, "sub", "inner.txt"), "inner");
  symlinkSync("/", join(d, "link_root"));
  symlinkSync("../..", join(d, "link_up"));
  symlinkSync(outside, join(d, "link_outside"));
  return d;
}


const NAMES = ["", ".", "..", "/", "a/b", "/etc/passwd", "../outside", "hello.txt", "sub", "inner.txt", "link_root", "link_up",
  "link_outside", "secret.txt", "new", "new2", "d", "x".repeat(300), "a\0b", "f"];
const TYPES = [...Object.keys(TSPEC).map(Number), 0, 7, 101, 112, 114, 124, 126, 255];

function field(r: Rng, kind: string): Part[] {
  switch (kind) {
    case "u8": return [["u8", r.int(256)]];
    case "u16": return [["u16", r.chance(0.5) ? r.int(4) : r.int(0x10000)]];
    case "u32": return [["u32", r.chance(0.7) ? r.int(8) : r.pick([0xffffffff, 0x7fffffff, 0x100000, 0o100 | 2, 0o200000, 0o1000, 0x200, 4096, r.u32()])]];
    case "u64": return [["u64", r.pick([0n, 0n, 1n, 5n, 4096n, 0x7ffn, 2n ** 53n, 2n ** 63n, 2n ** 64n - 1n, BigInt(r.u32())])]];
    case "str": return [["s", r.chance(0.9) ? r.pick(NAMES) : Uint8Array.from({ length: r.int(40) }, () => r.int(256))]];
    case "strs": {
      const n = r.chance(0.9) ? r.int(5) : r.int(20);
      return [["u16", n], ...Array.from({ length: n }, () => ["s", r.pick(NAMES)] as Part)];
    }
  }
  return [];
}

/** A random T-message, maybe mutated. */
function message(r: Rng): { bytes: Uint8Array; tag: number } {
  let type = r.pick(TYPES);
  if (type === 100 && r.chance(0.9)) type = r.pick(TYPES); // a Tversion ends the session: keep them rare
  const tag = r.int(0x10000);
  const spec = TSPEC[type]?.fields ?? [["x", "u32"], ["y", "str"]];
  const parts = spec.flatMap(([, k]) => field(r, k));
  if (type === 118) { // Twrite: data after count (count mostly right)
    const data = Uint8Array.from({ length: r.int(3000) }, () => r.int(256));
    parts[2] = ["u32", r.chance(0.8) ? data.length : r.u32()];
    parts.push(["raw", data]);
  }
  if (type === 100 && r.chance(0.7)) { parts[0] = ["u32", r.pick([8192, 65536, 512 * 1024, 1 << 30])]; parts[1] = ["s", "9P2000.L"]; }
  let b = tmsg(type, tag, parts);
  if (r.chance(0.15)) { b = b.slice(); for (let i = r.int(4) + 1; i > 0; i--) b[r.int(b.length)] ^= 1 << r.int(8); }
  if (r.chance(0.08)) b = b.slice(0, r.int(b.length));
  if (r.chance(0.08) && b.length >= 4) { b = b.slice(); new DataView(b.buffer).setUint32(0, r.pick([0, 6, 7, b.length + 1, r.u32()]), true); }
  if (r.chance(0.05)) b = Uint8Array.from([...b, ...Array.from({ length: r.int(64) }, () => r.int(256))]);
  return { bytes: b, tag };
}

const ARENA = 0x2000000, ARENA_BYTES = 512 * 1024;
const CANARY = Uint8Array.from({ length: ARENA_BYTES }, (_, i) => (i * 131 + 7) & 0xff);
const R_TYPES = new Set(Object.keys(TSPEC).map((t) => Number(t) + 1));

interface FuzzResult { executions: number; findings: string[]; broken: number; answered: number; ok: Map<number, number> }

/** Run `iterations` executions against a fresh device; `sabotage` may replace the server's handler. */
function fuzz(seed: number, iterations: number, sabotage?: (rig: ReturnType<typeof deviceRig>) => void): FuzzResult {
  const share = makeShare(`share-${seed}`);
  const rig = deviceRig({ path: share });
  sabotage?.(rig);
  const r = rng(seed);
  const arena = rig.mem.view(ARENA, ARENA_BYTES);
  const findings: string[] = [];
  const res: FuzzResult = { executions: 0, findings, broken: 0, answered: 0, ok: new Map() };
  /** (Re)start the device and give the fuzzer a session with a few live fids to aim at. */
  const live = (d: FakeDriver, version: boolean) => {
    const c = rig.client(d);
    try {
      if (version) c.version(65536);
      c.attach(1);
      c.walk(1, 2, ["sub"]);
      c.walk(1, 3, ["hello.txt"]);
      c.lopen(3, 2);
      c.walk(1, 4, []);
      c.lopen(4, 0);
      c.walk(1, 5, []);
    } catch { /* a sabotaged server: the fuzz loop reports it */ }
  };
  const start = (): FakeDriver => {
    const d = rig.bringUp();
    live(d, true);
    return d;
  };
  let drv: FakeDriver = start();
  const finding = (i: number, what: string) => { if (findings.length < 20) findings.push(`#${i}: ${what}`); };

  for (let i = 0; i < iterations; i++) {
    if (i % 50 === 49) live(drv, false); // fids 1-5 alive again (the fuzzer clunks, removes and renames them)
    arena.set(CANARY);
    let bump = 0;
    const alloc = (len: number) => { const a = ARENA + bump; bump += len + 1 + r.int(64); return a; };
    const errorsBefore = rig.ioServer.internalErrors;
    try {
      if (r.chance(0.85)) {
        // a well-formed chain carrying a random (possibly mangled) message
        const { bytes, tag } = message(r);
        const nr = Math.min(bytes.length, 1 + r.int(3));
        const cuts = [0, ...Array.from({ length: nr - 1 }, () => r.int(bytes.length + 1)).sort((a, b) => a - b), bytes.length];
        const bufs: { len: number; data?: Uint8Array; write?: boolean; addr: number }[] = [];
        for (let k = 0; k + 1 < cuts.length; k++) {
          const piece = bytes.subarray(cuts[k]!, cuts[k + 1]!);
          if (piece.length) bufs.push({ len: piece.length, data: piece.slice(), addr: alloc(piece.length) });
        }
        const room = r.pick([0, 5, 10, 11, 20, 64, 200, 4096, 65536, r.int(70000)]);
        const nw = room === 0 ? 0 : 1 + r.int(3);
        const wl: number[] = [];
        for (let k = 0, left = room; k < nw; k++) { const l = k === nw - 1 ? left : r.int(left + 1); wl.push(l); left -= l; }
        for (const l of wl) if (l > 0) bufs.push({ len: l, write: true, addr: alloc(l) });
        if (!bufs.length) bufs.push({ len: 0, addr: alloc(0) });
        const { head } = drv.add(bufs, { indirect: r.chance(0.3) });
        const wsegs = bufs.filter((b) => b.write);
        const wbytes = wsegs.reduce((a, b) => a + b.len, 0);
        drv.publish();
        rig.kick();
        res.executions++;
        const used = drv.collect();
        if (rig.status() & VIRTIO_STATUS.NEEDS_RESET) { finding(i, "a well-formed chain broke the queue"); drv = start(); continue; }
        if (used.length !== 1 || used[0]!.id !== head) { finding(i, `used ${JSON.stringify(used)} for head ${head}`); continue; }
        const len = used[0]!.len;
        if (len > wbytes) finding(i, `used length ${len} > writable ${wbytes}`);
        if (len === 0 && wbytes >= 11) finding(i, `no reply although ${wbytes} writable bytes`);
        if (len > 0) {
          res.answered++;
          const reply = new Uint8Array(len);
          let o = 0;
          for (const w of wsegs) { const k = Math.min(w.len, len - o); if (k <= 0) break; reply.set(rig.mem.readBytes(w.addr, k), o); o += k; }
          const dv = new DataView(reply.buffer);
          if (len < 7) finding(i, `reply of ${len} bytes`);
          else {
            const size = dv.getUint32(0, true), type = dv.getUint8(4), rtag = dv.getUint16(5, true);
            if (size !== len) finding(i, `reply size field ${size}, used ${len}`);
            if (type !== 7) res.ok.set(type - 1, (res.ok.get(type - 1) ?? 0) + 1);
            if (type !== 7 && !R_TYPES.has(type)) finding(i, `reply type ${type}`);
            if (bytes.length >= 7 && rtag !== new DataView(bytes.buffer, bytes.byteOffset).getUint16(5, true)) finding(i, `reply tag ${rtag}, request tag ${tag}`);
            if (type === 7 && (len !== 11 || dv.getUint32(7, true) === 0 || dv.getUint32(7, true) > 200)) finding(i, `Rlerror ${len} bytes errno ${len >= 11 ? dv.getUint32(7, true) : "?"}`);
          }
        }
        // the readable buffers still hold the request; nothing outside the writable buffers changed
        for (const b of bufs) {
          if (!b.write && b.data && Buffer.compare(rig.mem.readBytes(b.addr, b.len), b.data) !== 0) finding(i, "a readable buffer was written");
          arena.set(CANARY.subarray(b.addr - ARENA, b.addr - ARENA + b.len), b.addr - ARENA);
        }
        if (Buffer.compare(arena, CANARY) !== 0) finding(i, "guest memory outside the writable buffers changed");
      } else {
        // a malformed chain, hand-made in the descriptor table
        const d = drv.desc, size = drv.size;
        const ok = alloc(64);
        rig.mem.writeBytes(ok, tmsg(120, 1, [["u32", 99]])); // an 11-byte Tclunk
        const kind = r.int(9);
        const h = r.int(size);
        const n1 = (h + 1) % size, n2 = (h + 2) % size;
        switch (kind) {
          case 0: drv.writeDesc(d, h, ok, 11, VIRTQ_DESC_F_NEXT, h); break; // loop onto itself
          case 1: drv.writeDesc(d, h, ok, 11, VIRTQ_DESC_F_NEXT, n1); drv.writeDesc(d, n1, alloc(16), 16, VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE, h); break; // longer loop
          case 2: drv.writeDesc(d, h, ok, 0xffffffff, VIRTQ_DESC_F_NEXT, n1); drv.writeDesc(d, n1, alloc(16), 16, VIRTQ_DESC_F_WRITE, 0); break; // huge length
          case 3: drv.writeDesc(d, h, r.pick([64 << 20, 0xfee00000, 2 ** 40, 2 ** 53 + 8]), 16, 0, 0); break; // outside RAM
          case 4: drv.writeDesc(d, h, 2n ** 64n - 8n, 16, VIRTQ_DESC_F_WRITE, 0); break; // beyond 2^53
          case 5: drv.writeDesc(d, h, alloc(64), 64, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, n1); drv.writeDesc(d, n1, ok, 11, 0, 0); break; // readable after writable
          case 6: drv.writeDesc(d, h, alloc(64), 64, VIRTQ_DESC_F_WRITE, 0); break; // only writable (no message)
          case 7: { // indirect: bad length / nested / pointing outside
            const t = alloc(48);
            drv.writeDesc(t, 0, ok, 11, VIRTQ_DESC_F_NEXT, 1);
            drv.writeDesc(t, 1, t, 48, VIRTQ_DESC_F_INDIRECT, 0);
            drv.writeDesc(d, h, r.chance(0.5) ? t : 64 << 20, r.pick([48, 20, 0]), VIRTQ_DESC_F_INDIRECT, 0);
            break;
          }
          case 8: drv.writeDesc(d, h, ok, 11, VIRTQ_DESC_F_NEXT, size + 5); drv.writeDesc(d, n2, 0, 0, 0, 0); break; // next outside the table
        }
        if (kind === 8 && r.chance(0.5)) drv.setAvailIdx(drv.mem.read16(drv.avail + 2) + size + 3); // avail index far ahead
        else { drv.pushHead(h); drv.publish(); }
        rig.kick();
        res.executions++;
        drv.collect();
        if (rig.status() & VIRTIO_STATUS.NEEDS_RESET) { res.broken++; drv = start(); }
        // the chain's own buffers may hold a reply now; nothing else in the arena may change
        arena.set(CANARY.subarray(0, bump), 0);
        if (Buffer.compare(arena, CANARY) !== 0) finding(i, "malformed chain: guest memory changed outside its buffers");
      }
    } catch (e) {
      finding(i, `exception escaped: ${(e as Error)?.stack ?? e}`);
      drv = start();
    }
    if (rig.ioServer.internalErrors !== errorsBefore) finding(i, `server internal error: ${(rig.ioServer.lastInternalError as Error)?.message}`);
  }
  rig.ioServer.close();
  return res;
}

test("fuzz virtio-9p: random and malformed messages and descriptor chains", () => {
  const before = snapshot();
  const t0 = performance.now();
  let executions = 0, broken = 0, answered = 0;
  const findings: string[] = [];
  const ok = new Map<number, number>();
  for (const seed of [0x9e3779b9, 12345, 777, 4242]) {
    const r = fuzz(seed, 5000);
    executions += r.executions; broken += r.broken; answered += r.answered;
    findings.push(...r.findings);
    for (const [t, n] of r.ok) ok.set(t, (ok.get(t) ?? 0) + n);
  }
  if (snapshot() !== before) findings.push("the folder outside the share changed");
  console.log(`fuzz virtio-9p: ${executions} executions, ${findings.length} findings (${answered} replies, ${broken} malformed chains set NEEDS_RESET) in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  console.log(`  successful replies by T-message: ${[...ok].sort((a, b) => a[0] - b[0]).map(([t, n]) => `${TSPEC[t]?.name ?? t}=${n}`).join(" ")}`);
  for (const f of findings) console.log(`  finding ${f}`);
  expect(executions).toBeGreaterThanOrEqual(20000);
  expect(ok.size).toBeGreaterThanOrEqual(20); // most operations succeeded at least once
  expect(broken).toBeGreaterThan(500);
  expect(answered).toBeGreaterThan(5000);
  expect(findings).toEqual([]);
}, 60_000);

test("the fuzz oracles catch a wrong device (sabotaged servers)", () => {
  // writes one byte past the end of the chain's writable buffers
  const overrun = fuzz(1, 200, (rig) => {
    const real = rig.ioServer.handle.bind(rig.ioServer);
    rig.ioServer.handle = (mem, chain: Chain) => {
      const n = real(mem, chain);
      const last = chain.writable.at(-1);
      if (last) mem.write8(last.gpa + last.len, 0x5a);
      return n;
    };
  });
  expect(overrun.findings.some((f) => f.includes("outside the writable buffers"))).toBe(true);
  // claims more bytes than the chain can hold
  const liar = fuzz(2, 200, (rig) => {
    const real = rig.ioServer.handle.bind(rig.ioServer);
    rig.ioServer.handle = (mem, chain: Chain) => { real(mem, chain); return chain.writableBytes + 1; };
  });
  expect(liar.findings.some((f) => f.includes("used length"))).toBe(true);
  // lets an exception escape
  const thrower = fuzz(3, 200, (rig) => { rig.ioServer.handle = () => { throw new Error("boom"); }; });
  expect(thrower.findings.some((f) => f.includes("exception escaped: Error: boom"))).toBe(true);
  console.log(`fuzz virtio-9p sabotage: overrun ${overrun.findings.length}, liar ${liar.findings.length}, thrower ${thrower.findings.length} findings (expected > 0)`);
});
