import { describe, expect, test } from "bun:test";
import { L1_STALL } from "../harness/nested.ts";

describe("nested harness hang detection", () => {
  test("L1 kernel stall reports are recognised; ordinary console lines are not", () => {
    for (const l of [
      "[   56.667474] watchdog: BUG: soft lockup - CPU#0 stuck for 44s! [bun.exe:243]",
      "[  120.1] rcu: INFO: rcu_preempt self-detected stall on CPU",
      "[  120.1] rcu: INFO: rcu_sched detected stalls on CPUs/tasks:",
      "[  240.0] INFO: task bun:243 blocked for more than 120 seconds.",
    ]) expect(L1_STALL.test(l)).toBe(true);
    for (const l of ["TSB-RESULT npt pass ms=237", "[    2.9] PCI: Fatal: No config space access function found", "soft lockup detector enabled"])
      expect(L1_STALL.test(l)).toBe(false);
  });
});
