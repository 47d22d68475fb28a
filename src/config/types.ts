/**
 * The resolved VM configuration: what the config loader (src/config/) produces from TOML, the command
 * line and defaults, and what every other part of tsbhyve consumes. It is plain data (structured-clone
 * safe) so it can be posted to every Worker.
 */

/** Where a character device (UART, console) goes. */
export type ChardevSpec =
  | { kind: "stdio" }
  | { kind: "null" }
  | { kind: "file"; path: string }           // file=/path   (append; output only)
  | { kind: "tcp"; addr: string; port: number } // tcp=[addr:]port (default addr 127.0.0.1; one client)
  | { kind: "unix"; path: string }           // unix=/path   (listening socket; one client)
  | { kind: "pty" }                          // pty          (prints the slave path)
  | { kind: "device"; path: string };        // /dev/...     (an existing tty, e.g. nmdm)

export interface BootKernel {
  kernel: string;
  initrd?: string;
  cmdline: string;
}

/** SMBIOS strings (bhyve's bios.*, system.*, board.*, chassis.* keys); "" = not specified. */
export interface SmbiosStrings {
  bios: { vendor: string; version: string; releaseDate: string };
  system: { manufacturer: string; productName: string; version: string; serialNumber: string; sku: string; familyName: string };
  board: { manufacturer: string; productName: string; version: string; serialNumber: string; assetTag: string; location: string };
  chassis: { manufacturer: string; version: string; serialNumber: string; assetTag: string; sku: string };
}

/** A user fw_cfg file (bhyve's -f name,file=PATH | name,string=TEXT; TOML [[fw_cfg]]): exactly one of file/string. */
export interface FwCfgUserFile {
  name: string;
  /** absolute path, read when the VM starts */
  file?: string;
  string?: string;
}

export interface VmConfig {
  name: string;
  cpus: number;
  sockets: number;
  cores: number;
  threads: number;
  memory: { size: number; wired: boolean };
  /** lpc.bootrom: raw firmware image mapped to end at 4 GiB */
  bootrom?: string;
  bootvars?: string;
  /** [boot]: direct Linux kernel boot */
  boot?: BootKernel;
  /** lpc.com1 .. lpc.com4 (index 0..3); undefined = not present */
  com: (ChardevSpec | undefined)[];
  /** pci.B.S.F tables as written (device = emulation name plus its keys) */
  pci: Record<string, { device: string; [key: string]: unknown }>;
  acpiTables: boolean;
  destroyOnPoweroff: boolean;
  /** virtio devices use MSI-X (false: MSI, as bhyve's virtio_msix) */
  virtioMsix: boolean;
  /** lpc.pc-testdev: the test device of tsbhyve's payload tests */
  pcTestdev: boolean;
  rtcLocaltime: boolean;
  /** SMBIOS system UUID, lower case: the `uuid` key, else derived from the name (src/smbios/uuid.ts) */
  uuid: string;
  smbios: SmbiosStrings;
  /** user fw_cfg files in the order given (later layers replace entries of the same name) */
  fwcfg: FwCfgUserFile[];
  x86: { strictio: boolean; strictmsr: boolean; mptable: boolean; vmexitOnHlt: boolean; verbosemsr: boolean };
  /** vcpu.N.cpuset: vCPU index → the host CPUs its thread may run on (absent: any) */
  cpusets: Record<number, number[]>;
  /** Where the config came from (for messages). */
  source: string;
}
