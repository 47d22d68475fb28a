// Tier 3 smoke test: the nested harness boots L1, kvm_amd gives /dev/kvm with nested paging, and the
// project's Bun runs in the chroot and reaches KVM through bun:ffi. One boot, several checks.
import { expect, test } from "bun:test";
import { describeResult, requireQemu, runNested } from "../harness/nested.ts";

// Opens /dev/kvm with libc through bun:ffi: KVM_GET_API_VERSION must be 12 (KVM API doc §4.1), and
// KVM_CREATE_VM must hand back a VM fd.
const KVM_PROBE = `
import { dlopen, FFIType } from "bun:ffi";
const libc = dlopen("libc.so.6", {
  open: { args: [FFIType.ptr, FFIType.i32], returns: FFIType.i32 },
  ioctl: { args: [FFIType.i32, FFIType.u64, FFIType.u64], returns: FFIType.i32 },
  close: { args: [FFIType.i32], returns: FFIType.i32 },
});
const O_RDWR = 2, O_CLOEXEC = 0o2000000;
const KVM_GET_API_VERSION = 0xae00, KVM_CREATE_VM = 0xae01;
const fd = libc.symbols.open(Buffer.from("/dev/kvm\\0"), O_RDWR | O_CLOEXEC);
if (fd < 0) { console.log("open /dev/kvm failed"); process.exit(1); }
const api = libc.symbols.ioctl(fd, KVM_GET_API_VERSION, 0);
const vm = libc.symbols.ioctl(fd, KVM_CREATE_VM, 0);
console.log("api=" + api + " vmfd=" + (vm >= 0 ? "ok" : vm));
process.exit(api === 12 && vm >= 0 ? 0 : 1);
`;

const JOB = `
tsb_check bun-version "$TSB_BUN" --version
tsb_check bun-version-warm "$TSB_BUN" --version
tsb_check npt grep -qx Y /sys/module/kvm_amd/parameters/npt
tsb_check tmp-writable sh -c 'echo x > /tmp/probe && rm /tmp/probe'
tsb_check kvm-api "$TSB_BUN" "$TSB_JOB_DIR/kvm-probe.ts"
echo "job-dir-write" > "$TSB_OUT/hello.txt"
`;

test(
  "nested harness: L1 boots, /dev/kvm with NPT, Bun + bun:ffi reach KVM",
  async () => {
    requireQemu(); // throws (fails the test) when qemu-system-x86_64 is missing: never a silent skip
    const r = await runNested({ name: "smoke", script: JOB, files: { "kvm-probe.ts": KVM_PROBE }, keepJobDir: true });
    const why = describeResult(r);
    console.log(why);
    expect(r.hung, why).toBeUndefined();
    expect(r.exitStatus, why).toBe(0);
    expect(r.l1Errors, why).toEqual([]);
    const res = (name: string) => r.results.get(name);
    expect(res("l1.dev-kvm")?.status, why).toBe("pass");
    expect(res("l1.dev-kvm")?.detail, why).toContain("npt=Y");
    expect(res("npt")?.status, why).toBe("pass");
    expect(res("tmp-writable")?.status, why).toBe("pass");
    expect(res("bun-version")?.status, why).toBe("pass");
    expect(res("bun-version")?.detail, why).toMatch(/\d+\.\d+\.\d+/);
    expect(res("kvm-api")?.status, why).toBe("pass");
    expect(res("kvm-api")?.detail, why).toContain("api=12");
    // The writable job share carries files back to the host.
    expect(await Bun.file(`${r.jobDir}/out/hello.txt`).text()).toBe("job-dir-write\n");
    expect(r.ok, why).toBe(true);
    await Bun.$`rm -rf ${r.jobDir}`.quiet();
  },
  480_000,
);
