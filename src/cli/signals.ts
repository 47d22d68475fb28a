/**
 * Signals, as bhyve: SIGTERM presses the ACPI power button (a graceful shutdown by the guest); a second
 * SIGTERM, or no power-off within TSBHYVE_SHUTDOWN_TIMEOUT seconds (default 60), stops the VM hard
 * and says so. SIGINT/SIGHUP stop it at once.
 */
import type { AcpiPmDevice } from "../devices/acpi-pm.ts";
import type { VmControl } from "../vm/vm.ts";

export function installSignals(ctl: VmControl): void {
  let pressed = false;
  const timeoutS = Number(process.env.TSBHYVE_SHUTDOWN_TIMEOUT ?? 60);
  process.on("SIGTERM", () => {
    const pm = ctl.machine.named.get("acpi-pm") as AcpiPmDevice | undefined;
    if (!pressed && pm) {
      pressed = true;
      process.stderr.write("tsbhyve: SIGTERM: pressing the ACPI power button (send SIGTERM again to stop at once)\n");
      pm.powerButton();
      setTimeout(() => ctl.stop(4, `guest did not power off within ${timeoutS} s of the power button; stopped hard`), timeoutS * 1000).unref();
      return;
    }
    ctl.stop(4, "second SIGTERM: stopped hard");
  });
  for (const sig of ["SIGINT", "SIGHUP"] as const) process.on(sig, () => ctl.stop(4, `${sig}: stopped hard`));
}
