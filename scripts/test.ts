/**
 * `npm test`: build the shim and the binary, then run all three test tiers with bun test:
 *   test/unit     device models, loaders, config — fake guest memory, no kernel
 *   test/payload  freestanding payload guests on this machine's /dev/kvm, through dist/tsbhyve
 *   test/nested   real Debian guests with their real drivers, one level down (QEMU TCG + nested SVM)
 * Extra arguments are passed to bun test (e.g. `npm test -- test/unit`). Ends with one line
 * "N passed, M failed" and a non-zero exit status on any failure.
 */
import { buildBinary } from "./build.ts";

await buildBinary();
const args = process.argv.slice(2);
const bun = process.execPath;
const proc = Bun.spawn([bun, "test", ...(args.length ? args : ["test/"])], {
  cwd: `${import.meta.dir}/..`, stdout: "inherit", stderr: "pipe", stdin: "ignore",
});
let tail = "";
const dec = new TextDecoder();
for await (const chunk of proc.stderr) {
  process.stderr.write(chunk);
  tail = (tail + dec.decode(chunk)).slice(-4000);
}
const code = await proc.exited;
const pass = Number(/^\s*(\d+) pass$/m.exec(tail)?.[1] ?? 0);
const fail = Number(/^\s*(\d+) fail$/m.exec(tail)?.[1] ?? 0);
console.log(`${pass} passed, ${fail} failed`);
process.exit(code !== 0 || fail > 0 || pass === 0 ? 1 : 0);
