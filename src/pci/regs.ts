/**
 * PCI configuration-space register offsets and bits (PCI Local Bus 3.0 §6.1-6.2 type 0 header, §6.7-6.8
 * capabilities; PCI Bus Power Management 1.2; PCI Express Base §7.5.3 for the PCIe capability).
 */

/** Type 0 header offsets. */
export const CFG = {
  VENDOR: 0x00,
  DEVICE: 0x02,
  COMMAND: 0x04,
  STATUS: 0x06,
  REVISION: 0x08,
  /** programming interface 0x09, subclass 0x0A, base class 0x0B */
  CLASS: 0x09,
  CACHE_LINE: 0x0c,
  LATENCY: 0x0d,
  HEADER_TYPE: 0x0e,
  BIST: 0x0f,
  BAR0: 0x10,
  CARDBUS_CIS: 0x28,
  SUBVENDOR: 0x2c,
  SUBDEVICE: 0x2e,
  ROM: 0x30,
  CAP_PTR: 0x34,
  INT_LINE: 0x3c,
  INT_PIN: 0x3d,
  MIN_GNT: 0x3e,
  MAX_LAT: 0x3f,
  /** first byte after the predefined header */
  DEVICE_SPECIFIC: 0x40,
  /** standard space size (mechanism #1), full space (ECAM) */
  SIZE: 0x100,
  EXT_SIZE: 0x1000,
} as const;

export const COMMAND = {
  IO: 1 << 0,
  MEMORY: 1 << 1,
  BUS_MASTER: 1 << 2,
  PARITY: 1 << 6,
  SERR: 1 << 8,
  INTX_DISABLE: 1 << 10,
  /** bits software may set */
  WRITABLE: (1 << 0) | (1 << 1) | (1 << 2) | (1 << 6) | (1 << 8) | (1 << 10),
} as const;

export const STATUS = {
  INTERRUPT: 1 << 3,
  CAP_LIST: 1 << 4,
  /** write-1-to-clear error bits: master data parity error, signaled/received target abort, received
   * master abort, signaled system error, detected parity error */
  W1C: (1 << 8) | (1 << 11) | (1 << 12) | (1 << 13) | (1 << 14) | (1 << 15),
} as const;

export const HEADER_MULTIFUNCTION = 0x80;

/** BAR low bits. */
export const BAR = {
  IO: 0x1,
  MEM64: 0x4,
  PREFETCH: 0x8,
  IO_ADDR_MASK: 0xffff_fffc,
  MEM_ADDR_MASK: 0xffff_fff0,
} as const;

export const ROM_ENABLE = 1;
export const ROM_ADDR_MASK = 0xffff_f800;

export const CAP_ID = { PM: 0x01, MSI: 0x05, VENDOR: 0x09, PCIE: 0x10, MSIX: 0x11 } as const;

/** MSI capability (offsets from the capability). */
export const MSI = {
  CTRL: 2,
  ADDR: 4,
  CTRL_ENABLE: 1 << 0,
  /** Multiple Message Capable, bits 3:1 */
  CTRL_MMC_SHIFT: 1,
  /** Multiple Message Enable, bits 6:4 */
  CTRL_MME_SHIFT: 4,
  CTRL_64BIT: 1 << 7,
  CTRL_PVM: 1 << 8,
} as const;

/** MSI-X capability and table. */
export const MSIX = {
  CTRL: 2,
  TABLE: 4,
  PBA: 8,
  CTRL_ENABLE: 1 << 15,
  CTRL_FMASK: 1 << 14,
  ENTRY_SIZE: 16,
  /** entry dwords */
  ADDR_LO: 0, ADDR_HI: 1, DATA: 2, VCTRL: 3,
  VCTRL_MASK: 1,
} as const;

/** Power management capability. */
export const PMCAP = { PMC: 2, PMCSR: 4, VERSION_1_2: 3, PMCSR_STATE_MASK: 3, PMCSR_NO_SOFT_RESET: 1 << 3 } as const;

/** PCI Express capability. */
export const PCIE = {
  CAPS: 2, DEVCAP: 4, DEVCTL: 8, DEVSTA: 0xa, LINKCAP: 0xc, LINKCTL: 0x10, LINKSTA: 0x12,
  DEVCAP2: 0x24, DEVCTL2: 0x28, SIZE: 0x3c,
  /** device/port types (bits 7:4 of the capabilities register) */
  TYPE_ENDPOINT: 0x0, TYPE_LEGACY_ENDPOINT: 0x1, TYPE_ROOT_PORT: 0x4, TYPE_RC_INTEGRATED: 0x9,
} as const;
