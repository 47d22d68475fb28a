/**
 * How the 9P server turns failures into Rlerror: operations throw `Fail(errno)` (through `fail`, or
 * `ok` on a host call's negative errno); server.ts catches it and answers with that errno. Anything
 * else thrown is a bug, counted and answered with EIO.
 */
export class Fail extends Error {
  constructor(readonly errno: number) { super(`errno ${errno}`); }
}

export const fail = (errno: number): never => { throw new Fail(errno); };

/** A host call's result: a negative errno becomes a guest error. */
export function ok<T>(r: T | number): T {
  if (typeof r === "number" && r < 0) fail(-r);
  return r as T;
}
