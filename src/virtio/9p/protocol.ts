/**
 * 9P2000.L as data: message numbers, the field layout of every T-message tsbhyve serves and of every
 * R-message it sends, and the protocol's constants (qid types, Tsetattr/Tgetattr bits, dotl open flags,
 * lock answers). The codec (codec.ts) decodes and encodes from these tables; the server (server.ts)
 * only sees named fields.
 *
 * Every message: size[4] type[1] tag[2] then the fields. Strings are len[2] + bytes (no NUL);
 * a qid is type[1] version[4] path[8]. Twalk's names and Rwalk's qids are counted arrays (n[2]).
 * Tread/Rread and Twrite's data, and Rreaddir's entries, are moved by the server, not the codec.
 */

export type FieldKind = "u8" | "u16" | "u32" | "u64" | "str" | "qid" | "strs" | "qids";
export type FieldSpec = readonly (readonly [string, FieldKind])[];

export const HEADER_BYTES = 7;
/** Bytes before the data of Rread / Rreaddir (size type tag count) and of Twrite (size type tag fid offset count). */
export const RREAD_HDR = HEADER_BYTES + 4;
export const TWRITE_HDR = HEADER_BYTES + 4 + 8 + 4;
export const NOTAG = 0xffff;
export const NOFID = 0xffffffff;
export const VERSION_9P2000_L = "9P2000.L";
/** most names in one Twalk (9P) */
export const MAXWELEM = 16;
export const QID_BYTES = 13;

/** qid.type bits */
export const QT = { DIR: 0x80, APPEND: 0x40, EXCL: 0x20, MOUNT: 0x10, AUTH: 0x08, TMP: 0x04, SYMLINK: 0x02, LINK: 0x01, FILE: 0 } as const;

/** T-messages: number → name and fields (after the header). */
export const T: Readonly<Record<number, { name: string; fields: FieldSpec }>> = {
  8: { name: "Tstatfs", fields: [["fid", "u32"]] },
  12: { name: "Tlopen", fields: [["fid", "u32"], ["flags", "u32"]] },
  14: { name: "Tlcreate", fields: [["fid", "u32"], ["name", "str"], ["flags", "u32"], ["mode", "u32"], ["gid", "u32"]] },
  16: { name: "Tsymlink", fields: [["fid", "u32"], ["name", "str"], ["symtgt", "str"], ["gid", "u32"]] },
  18: { name: "Tmknod", fields: [["dfid", "u32"], ["name", "str"], ["mode", "u32"], ["major", "u32"], ["minor", "u32"], ["gid", "u32"]] },
  20: { name: "Trename", fields: [["fid", "u32"], ["dfid", "u32"], ["name", "str"]] },
  22: { name: "Treadlink", fields: [["fid", "u32"]] },
  24: { name: "Tgetattr", fields: [["fid", "u32"], ["mask", "u64"]] },
  26: { name: "Tsetattr", fields: [["fid", "u32"], ["valid", "u32"], ["mode", "u32"], ["uid", "u32"], ["gid", "u32"], ["size", "u64"],
    ["atime_sec", "u64"], ["atime_nsec", "u64"], ["mtime_sec", "u64"], ["mtime_nsec", "u64"]] },
  30: { name: "Txattrwalk", fields: [["fid", "u32"], ["newfid", "u32"], ["name", "str"]] },
  32: { name: "Txattrcreate", fields: [["fid", "u32"], ["name", "str"], ["size", "u64"], ["flags", "u32"]] },
  40: { name: "Treaddir", fields: [["fid", "u32"], ["offset", "u64"], ["count", "u32"]] },
  50: { name: "Tfsync", fields: [["fid", "u32"], ["datasync", "u32"]] },
  52: { name: "Tlock", fields: [["fid", "u32"], ["type", "u8"], ["flags", "u32"], ["start", "u64"], ["length", "u64"], ["proc_id", "u32"], ["client_id", "str"]] },
  54: { name: "Tgetlock", fields: [["fid", "u32"], ["type", "u8"], ["start", "u64"], ["length", "u64"], ["proc_id", "u32"], ["client_id", "str"]] },
  70: { name: "Tlink", fields: [["dfid", "u32"], ["fid", "u32"], ["name", "str"]] },
  72: { name: "Tmkdir", fields: [["dfid", "u32"], ["name", "str"], ["mode", "u32"], ["gid", "u32"]] },
  74: { name: "Trenameat", fields: [["olddirfid", "u32"], ["oldname", "str"], ["newdirfid", "u32"], ["newname", "str"]] },
  76: { name: "Tunlinkat", fields: [["dirfid", "u32"], ["name", "str"], ["flags", "u32"]] },
  100: { name: "Tversion", fields: [["msize", "u32"], ["version", "str"]] },
  102: { name: "Tauth", fields: [["afid", "u32"], ["uname", "str"], ["aname", "str"], ["n_uname", "u32"]] },
  104: { name: "Tattach", fields: [["fid", "u32"], ["afid", "u32"], ["uname", "str"], ["aname", "str"], ["n_uname", "u32"]] },
  108: { name: "Tflush", fields: [["oldtag", "u16"]] },
  110: { name: "Twalk", fields: [["fid", "u32"], ["newfid", "u32"], ["wnames", "strs"]] },
  116: { name: "Tread", fields: [["fid", "u32"], ["offset", "u64"], ["count", "u32"]] },
  // the data follows count; the server moves it straight from the chain to the file
  118: { name: "Twrite", fields: [["fid", "u32"], ["offset", "u64"], ["count", "u32"]] },
  120: { name: "Tclunk", fields: [["fid", "u32"]] },
  122: { name: "Tremove", fields: [["fid", "u32"]] },
};

/** R-messages: name → number and fields. Rread/Rreaddir carry count[4] + data written by the server. */
export const R = {
  Rlerror: { type: 7, fields: [["ecode", "u32"]] },
  Rstatfs: { type: 9, fields: [["type", "u32"], ["bsize", "u32"], ["blocks", "u64"], ["bfree", "u64"], ["bavail", "u64"],
    ["files", "u64"], ["ffree", "u64"], ["fsid", "u64"], ["namelen", "u32"]] },
  Rlopen: { type: 13, fields: [["qid", "qid"], ["iounit", "u32"]] },
  Rlcreate: { type: 15, fields: [["qid", "qid"], ["iounit", "u32"]] },
  Rsymlink: { type: 17, fields: [["qid", "qid"]] },
  Rmknod: { type: 19, fields: [["qid", "qid"]] },
  Rrename: { type: 21, fields: [] },
  Rreadlink: { type: 23, fields: [["target", "str"]] },
  Rgetattr: { type: 25, fields: [["valid", "u64"], ["qid", "qid"], ["mode", "u32"], ["uid", "u32"], ["gid", "u32"], ["nlink", "u64"],
    ["rdev", "u64"], ["size", "u64"], ["blksize", "u64"], ["blocks", "u64"], ["atime_sec", "u64"], ["atime_nsec", "u64"],
    ["mtime_sec", "u64"], ["mtime_nsec", "u64"], ["ctime_sec", "u64"], ["ctime_nsec", "u64"], ["btime_sec", "u64"],
    ["btime_nsec", "u64"], ["gen", "u64"], ["data_version", "u64"]] },
  Rsetattr: { type: 27, fields: [] },
  Rxattrwalk: { type: 31, fields: [["size", "u64"]] },
  Rxattrcreate: { type: 33, fields: [] },
  Rreaddir: { type: 41, fields: [["count", "u32"]] },
  Rfsync: { type: 51, fields: [] },
  Rlock: { type: 53, fields: [["status", "u8"]] },
  Rgetlock: { type: 55, fields: [["type", "u8"], ["start", "u64"], ["length", "u64"], ["proc_id", "u32"], ["client_id", "str"]] },
  Rlink: { type: 71, fields: [] },
  Rmkdir: { type: 73, fields: [["qid", "qid"]] },
  Rrenameat: { type: 75, fields: [] },
  Runlinkat: { type: 77, fields: [] },
  Rversion: { type: 101, fields: [["msize", "u32"], ["version", "str"]] },
  Rattach: { type: 105, fields: [["qid", "qid"]] },
  Rflush: { type: 109, fields: [] },
  Rwalk: { type: 111, fields: [["wqids", "qids"]] },
  Rread: { type: 117, fields: [["count", "u32"]] },
  Rwrite: { type: 119, fields: [["count", "u32"]] },
  Rclunk: { type: 121, fields: [] },
  Rremove: { type: 123, fields: [] },
} as const satisfies Record<string, { type: number; fields: FieldSpec }>;
export type RName = keyof typeof R;

/** Tsetattr valid bits */
export const SETATTR = { MODE: 0x1, UID: 0x2, GID: 0x4, SIZE: 0x8, ATIME: 0x10, MTIME: 0x20, CTIME: 0x40, ATIME_SET: 0x80, MTIME_SET: 0x100 } as const;
/** Tgetattr mask: everything up to data_version that tsbhyve fills (no btime/gen/data_version) */
export const GETATTR_BASIC = 0x7ffn;

/** 9P2000.L open flags (the Linux x86 values, named P9_DOTL_*) tsbhyve passes on; the rest are dropped. */
export const DOTL = {
  ACCMODE: 0o3, WRONLY: 0o1, RDWR: 0o2, CREATE: 0o100, EXCL: 0o200, TRUNC: 0o1000, APPEND: 0o2000,
  DSYNC: 0o10000, DIRECTORY: 0o200000, SYNC: 0o4000000,
} as const;

/** Tunlinkat flags */
export const AT_REMOVEDIR = 0x200;
/** Rlock status / Tlock type */
export const LOCK = { SUCCESS: 0, BLOCKED: 1, ERROR: 2, GRACE: 3, F_RDLCK: 0, F_WRLCK: 1, F_UNLCK: 2 } as const;
