/**
 * Fuzzing virtio-net's request parsing: the receive and transmit paths behind the real transport on real
 * host memory, with a checking backend in place of the tap. Each execution resets the device, negotiates
 * a random feature subset, publishes random chains on both queues — plausible frames and receive buffers
 * mixed with loops, wrong directions, zero / tiny / huge lengths, addresses past RAM and at 2^40 / 2^63,
 * bad indirect tables, heads outside the ring, avail indices far ahead — and serves the queues and the
 * "tap" as the I/O Worker would, while the backend answers with random frames (cut short, bogus
 * offload headers), EAGAIN and errors.
 *
 * Findings: an exception escaping the device; an iovec handed to the backend outside guest RAM, or a
 * read iovec outside the posted receive buffers, or a write iovec outside the posted transmit buffers;
 * guest memory changed outside the receive buffers and used rings (canaries, the transmit buffers); a
 * used length larger than the chain's writable bytes; a transmit chain neither returned nor the device
 * marked DEVICE_NEEDS_RESET. A deliberately wrong iovec and a deliberate stray write check the checks.
 */
import { describe, expect, test } from "bun:test";
import { createHash } from "node:crypto";
import { bit, NET_F, type FrameIo, type NetDeviceInfo } from "../../src/virtio/net/index.ts";
import { VIRTIO_STATUS } from "../../src/virtio/pci.ts";
import { VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE } from "../../src/virtio/queue.ts";
import { POLLIN, POLLOUT } from "../../src/vmm/index.ts";
import type { FakeDriver } from "./virtio-driver.ts";
import { realMem, rig } from "./virtio-net-rig.ts";
import { rng, type Rng } from "./virtio-fuzz-rig.ts";


const mem = realMem();
const REGION = mem.find(0, 1);
const HOST0 = REGION.host, RAM = REGION.size;

/** The checking backend: iovecs must lie in the given guest ranges; frames and errors at random. */
class CheckedIo implements FrameIo {
  findings: string[] = [];
  rxArea: [number, number] = [0, 0];
  txArea: [number, number] = [0, 0];
  calls = 0;
  constructor(private readonly r: Rng) {}
  check(iov: BigUint64Array, area: [number, number], what: string): boolean {
    for (let i = 0; i < iov.length; i += 2) {
      const p = Number(iov[i]!), n = Number(iov[i + 1]!);
      if (p < HOST0 || p + n > HOST0 + RAM) { this.find(`${what}: iovec ${p.toString(16)}+${n} outside guest RAM`); return false; }
      const gpa = p - HOST0;
      if (gpa < area[0] || gpa + n > area[1]) { this.find(`${what}: iovec gpa ${gpa.toString(16)}+${n} outside the posted buffers`); return false; }
    }
    return true;
  }
  find(m: string): void { if (this.findings.length < 20) this.findings.push(m); }
  readv(iov: BigUint64Array): number {
    this.calls++;
    if (!this.check(iov, this.rxArea, "readv")) return -14;
    const r = this.r;
    if (r.chance(0.2)) return -11;
    if (r.chance(0.05)) return -r.pick([14, 22, 90, 105]);
    let room = 0;
    for (let i = 1; i < iov.length; i += 2) room += Number(iov[i]!);
    const len = r.chance(0.1) ? 12 + r.int(80000) : Math.min(room, 12 + 14 + r.int(2000));
    // the "kernel" writes the header (sometimes with offloads the guest never accepted) and data
    let left = len, k = 0;
    for (let i = 0; i < iov.length && left > 0; i += 2) {
      const gpa = Number(iov[i]!) - HOST0, n = Math.min(left, Number(iov[i + 1]!));
      const b = new Uint8Array(n);
      for (let j = 0; j < n; j++, k++) b[j] = k === 0 ? r.pick([0, 0, 1, 2, 0x80]) : k === 1 ? r.pick([0, 0, 1, 3, 4, 0x81, 7]) : (k * 7) & 0xff;
      mem.writeBytes(gpa, b);
      left -= n;
    }
    return len;
  }
  writev(iov: BigUint64Array): number {
    this.calls++;
    if (!this.check(iov, this.txArea, "writev")) return -14;
    const r = this.r;
    if (r.chance(0.1)) return -11;
    if (r.chance(0.05)) return -r.pick([22, 5, 105]);
    let n = 0;
    for (let i = 1; i < iov.length; i += 2) n += Number(iov[i]!);
    return n;
  }
}

const digest = (a: number, b: number) => createHash("sha1").update(mem.readBytes(a, b - a)).digest("hex");

function fuzz(iterations: number, seed: number) {
  const r = rng(seed);
  const io = new CheckedIo(r);
  const dev: NetDeviceInfo = { fd: -1, ifname: "fuzz0", mac: [2, 0, 0, 0, 0, 1], mtu: 1500, queueSize: 64 };
  const R = rig(dev, { ops: { io, setHdr: () => 0, setOffload: () => 0 } });
  const findings: string[] = [];
  let executions = 0, chains = 0, resets = 0;
  const offered = R.features();
  const netBits = [NET_F.MAC, NET_F.STATUS, NET_F.MRG_RXBUF, NET_F.CSUM, NET_F.GUEST_CSUM, NET_F.HOST_TSO4, NET_F.HOST_TSO6, NET_F.HOST_ECN,
    NET_F.HOST_UFO, NET_F.GUEST_TSO4, NET_F.GUEST_TSO6, NET_F.GUEST_ECN, NET_F.GUEST_UFO, NET_F.MTU];
  const safe = (what: string, fn: () => void) => {
    executions++;
    try { fn(); } catch (e) { findings.push(`${what}: exception escaped: ${(e as Error).stack?.split("\n").slice(0, 3).join(" | ")}`); }
  };
  for (let it = 0; it < iterations && findings.length + io.findings.length < 20; it++) {
    const want = netBits.filter(() => r.chance(0.6)).reduce((a, b) => a | bit(b), 0n) & offered;
    let drv!: { rx: FakeDriver; tx: FakeDriver };
    safe("bring-up", () => { drv = R.bringUp(want, { eventIdx: r.chance(0.7) }); });
    if (!drv) continue;
    const { rx, tx } = drv;
    // areas: rx heap [rx.heap...), tx heap; canaries around; see the rig's layout (rings at base, heaps at base + 2 MiB)
    const rxHeap = rx.alloc(0, 4096), txHeap = tx.alloc(0, 4096);
    io.rxArea = [rxHeap, rxHeap + 0x80000];
    io.txArea = [txHeap, txHeap + 0x80000];
    const canaryLo = rxHeap - 0x200000 - 0x10000, canaryHi = txHeap + 0x100000;
    mem.writeBytes(canaryLo, new Uint8Array(0x10000).fill(0xc3));
    mem.writeBytes(canaryHi, new Uint8Array(0x10000).fill(0xc3));
    const before = digest(canaryLo, canaryLo + 0x10000) + digest(canaryHi, canaryHi + 0x10000);
    const hostile = r.chance(0.35); // else only plausible chains (and wrong directions, tiny buffers, odd headers)
    const posted = new Map<number, number>(); // rx head → writable bytes
    const txHeads = new Set<number>();
    let brokenExpected = false;
    for (const [d, q] of [[rx, 0], [tx, 1]] as const) {
      let next = 0, rh = 0, wh = 0;
      const area = q === 0 ? io.rxArea : io.txArea;
      const buf = (len: number) => { const a = area[0] + ((q === 0 ? rh : wh) % 0x70000); if (q === 0) rh += len + 16; else wh += len + 16; return a; };
      const n = 1 + r.int(q === 0 ? 48 : 24);
      for (let c = 0; c < n && next < d.size - 8; c++) {
        const kind = hostile ? r.int(12) : r.pick([0, 0, 0, 1, 6, 8, 8, 10, 11]), head = next;
        const descs = q === 0 && !hostile ? 1 + r.int(2) : 1 + r.int(4);
        let writable = 0, broken = false;
        for (let k = 0; k < descs; k++) {
          const i = next++;
          const last = k === descs - 1;
          let len = q === 0 ? r.pick([8, 12, 64, 256, 1536, 2048, 4096]) : k === 0 ? 12 : r.int(1600);
          let addr: number | bigint = buf(Math.min(len, 0x8000));
          let flags = (q === 0 ? VIRTQ_DESC_F_WRITE : 0) | (last ? 0 : VIRTQ_DESC_F_NEXT);
          let nxt = last ? 0 : i + 1;
          if (kind === 1 && r.chance(0.5)) flags ^= VIRTQ_DESC_F_WRITE; // wrong direction
          if (kind === 2) { len = r.pick([0xffffffff, 0x80000000, 70000]); broken ||= len > 0x10000; }
          if (kind === 3) { addr = r.pick<number | bigint>([RAM + r.int(4096), 2 ** 40, 1n << 63n, RAM - 8]); broken = true; }
          if (kind === 4 && !last) { nxt = i; broken = true; } // loop
          if (kind === 5 && k === 0) { flags |= VIRTQ_DESC_F_INDIRECT; len = r.pick([0, 5, 16, 4096]); broken = true; }
          if (kind === 6) len = r.int(3);
          if (kind === 7 && !last) { nxt = d.size + 3; broken = true; }
          if (kind === 8 && q === 1 && k === 0) {
            // a plausible header with random offload fields
            const h = new Uint8Array(12);
            h[0] = r.pick([0, 1, 2, 0x40]); h[1] = r.pick([0, 1, 3, 4, 5, 0x81]); h[4] = r.int(256); h[5] = r.int(8);
            mem.writeBytes(Number(addr), h);
          }
          d.writeDesc(d.desc, i, addr, len, flags, nxt);
          if (flags & VIRTQ_DESC_F_WRITE) writable += len;
        }
        if (kind === 9 && r.chance(0.3)) { d.pushHead(d.size + r.int(100)); brokenExpected = true; }
        else d.pushHead(head);
        brokenExpected ||= broken;
        if (q === 0) posted.set(head, writable); else txHeads.add(head);
        chains++;
      }
      if (r.chance(0.03)) { d.setAvailIdx(d.size * 3); brokenExpected = true; }
      d.publish();
    }
    // serve: kicks, then tap readiness, as the I/O Worker would
    for (let round = 0; round < 6; round++) {
      safe("kick tx", () => R.kick(1));
      safe("kick rx", () => R.kick(0));
      const src = R.tapSource();
      if (src) safe("tap ready", () => { src.ready(src.events & (POLLIN | POLLOUT)); });
    }
    // make the backend always accept, and drain what is blocked
    const oldW = io.writev.bind(io);
    io.writev = (iov) => { io.calls++; return io.check(iov, io.txArea, "writev") ? Number(iov.reduce((a, v, i) => (i & 1 ? a + v : a), 0n)) : -14; };
    for (let round = 0; round < 3; round++) {
      const src = R.tapSource();
      if (src && src.events & POLLOUT) safe("tap writable", () => { src.ready(POLLOUT); });
      safe("kick tx", () => R.kick(1));
    }
    io.writev = oldW;
    const needsReset = (R.status() & VIRTIO_STATUS.NEEDS_RESET) !== 0;
    if (needsReset) resets++;
    for (const e of rx.collect()) {
      const w = posted.get(e.id);
      if (w === undefined) findings.push(`it ${it}: rx used id ${e.id} was never posted`);
      else if (e.len > w) findings.push(`it ${it}: rx used len ${e.len} > ${w} writable bytes`);
    }
    const back = new Set(tx.collect().map((e) => e.id));
    if (!needsReset) for (const h of txHeads) if (!back.has(h)) { findings.push(`it ${it}: tx chain ${h} not returned and the device not marked NEEDS_RESET${brokenExpected ? " (broken chains present)" : ""}`); break; }
    const after = digest(canaryLo, canaryLo + 0x10000) + digest(canaryHi, canaryHi + 0x10000);
    if (after !== before) findings.push(`it ${it}: guest memory outside the buffers changed`);
  }
  return { executions: executions + io.calls, chains, findings: [...findings, ...io.findings], io, R, resets };
}

describe("virtio-net fuzz", () => {
  test("random and malformed chains on both queues: no exception, no access outside guest memory, chains returned or NEEDS_RESET", () => {
    const t0 = performance.now();
    let executions = 0, chains = 0, resets = 0;
    const findings: string[] = [];
    const sum = { rxFrames: 0, rxDropped: 0, rxErrors: 0, txFrames: 0, txErrors: 0, txDropped: 0 };
    for (const seed of [0x5eed1, 0xbadc0de, 0x1234567]) {
      const s = fuzz(400, seed);
      executions += s.executions; chains += s.chains; resets += s.resets; findings.push(...s.findings);
      const c = s.R.net.counters();
      for (const k of Object.keys(sum) as (keyof typeof sum)[]) sum[k] += c[k];
    }
    console.log(`fuzz virtio-net: ${executions} executions, ${findings.length} findings (${chains} chains, ${resets} runs ended in NEEDS_RESET, ` +
      `${JSON.stringify(sum)}, ${((performance.now() - t0) / 1000).toFixed(1)} s)`);
    // the paths were really exercised: frames both ways, every kind of rejection
    for (const k of Object.keys(sum) as (keyof typeof sum)[]) expect(sum[k]).toBeGreaterThan(0);
    expect(resets).toBeGreaterThan(0);
    expect(findings).toEqual([]);
    expect(executions).toBeGreaterThan(3000);
  }, 120_000);

  test("the checks catch a deliberately wrong iovec and a stray write", () => {
    const io = new CheckedIo(rng(1));
    io.rxArea = [0x100000, 0x110000];
    expect(io.check(new BigUint64Array([BigInt(HOST0 + 0x100000), 64n]), io.rxArea, "ok")).toBe(true);
    expect(io.check(new BigUint64Array([BigInt(HOST0 + RAM - 8), 64n]), io.rxArea, "past RAM")).toBe(false);
    expect(io.check(new BigUint64Array([BigInt(HOST0 + 0x200000), 64n]), io.rxArea, "outside buffers")).toBe(false);
    expect(io.findings.length).toBe(2);
    expect(io.findings[0]).toMatch(/outside guest RAM/);
    const before = digest(0x3f00000, 0x3f01000);
    mem.write8(0x3f00010, mem.read8(0x3f00010) ^ 0xff);
    expect(digest(0x3f00000, 0x3f01000)).not.toBe(before);
  });
});
