/**
 * Tier 3, one boot for virtio-net, virtio-scsi and virtio-9p (test/nested/parts/): Debian's kernel with
 * its own drivers under dist/tsbhyve in the nested harness, run inside network namespace tsbnet (where
 * tsbhyve creates the tap). What each device's checks are is described in its part.
 */
import { test } from "bun:test";
import { requireQemu } from "../harness/nested.ts";
import { runL2Parts } from "../harness/l2.ts";
import { ninepPart } from "./parts/9p.ts";
import { NET_NS, netPart } from "./parts/net.ts";
import { scsiPart } from "./parts/scsi.ts";

const VM = "virtio-nsp";

test(
  "virtio-net, virtio-scsi and virtio-9p under a real kernel (nested): tap in a netns with ping and iperf3 both ways; two SCSI LUNs read, written, discarded; 9p shares read, written, read-only, escape attempts",
  async () => {
    requireQemu();
    await runL2Parts({ name: VM, memory: "512M", prefix: `ip netns exec ${NET_NS}`, bootSecs: 400, parts: [netPart(VM), scsiPart(), ninepPart()] });
  },
  1_000_000,
);
