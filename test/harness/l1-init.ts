/** The L1 /init, job prelude and line protocol moved to src/guest/nested/l1-init.ts (shared with `tsbhyve demo`). */
export { CMDLINE_KEYS, L1_INIT, MARK, jobPrelude, type L1Mode } from "../../src/guest/nested/l1-init.ts";
