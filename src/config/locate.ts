/**
 * Maps dotted key paths to source lines in a TOML document (smol-toml does not report positions).
 * The scanner assumes the text already parsed successfully; it tracks [table] and [[array]] headers,
 * dotted and quoted keys, inline tables, arrays and (multi-line) strings. Key segments are joined with
 * "." so a quoted key "memory.size" and the dotted key memory.size both map to "memory.size".
 */

export type KeyLines = Map<string, number>;

export function locateKeys(text: string): KeyLines {
  const out: KeyLines = new Map();
  let i = 0;
  let line = 1;
  const n = text.length;

  const record = (path: string[], at: number) => {
    for (let k = 1; k <= path.length; k++) {
      const p = path.slice(0, k).join(".");
      if (!out.has(p)) out.set(p, at);
    }
  };
  const skipWs = () => {
    while (i < n && (text[i] === " " || text[i] === "\t")) i++;
  };
  const skipWsNl = () => {
    while (i < n) {
      const c = text[i];
      if (c === " " || c === "\t" || c === "\r") i++;
      else if (c === "\n") { line++; i++; }
      else if (c === "#") { while (i < n && text[i] !== "\n") i++; }
      else break;
    }
  };
  const readString = (): string => {
    const q = text[i]!;
    const triple = text.startsWith(q.repeat(3), i);
    const close = triple ? q.repeat(3) : q;
    i += close.length;
    let s = "";
    while (i < n && !text.startsWith(close, i)) {
      const c = text[i]!;
      if (c === "\n") line++;
      if (c === "\\" && q === '"') { s += text[i + 1] ?? ""; if (text[i + 1] === "\n") line++; i += 2; continue; }
      s += c;
      i++;
    }
    i += close.length;
    // a multi-line string may end with up to two extra quote characters
    if (triple) while (i < n && text[i] === q) i++;
    return s;
  };
  const readKey = (): string[] => {
    const segs: string[] = [];
    for (;;) {
      skipWs();
      if (text[i] === '"' || text[i] === "'") segs.push(readString());
      else {
        const start = i;
        while (i < n && /[A-Za-z0-9_-]/.test(text[i]!)) i++;
        if (i === start) break;
        segs.push(text.slice(start, i));
      }
      skipWs();
      if (text[i] !== ".") break;
      i++;
    }
    return segs;
  };
  const skipValue = (path: string[]): void => {
    const c = text[i];
    if (c === '"' || c === "'") { readString(); return; }
    if (c === "[") {
      i++;
      for (let guard = i; i < n; guard = i) {
        skipWsNl();
        if (text[i] === "]") { i++; return; }
        skipValue(path);
        skipWsNl();
        if (text[i] === ",") i++;
        if (i === guard) i++;
      }
      return;
    }
    if (c === "{") {
      i++;
      for (let guard = i; i < n; guard = i) {
        skipWsNl();
        if (text[i] === "}") { i++; return; }
        const key = [...path, ...readKey()];
        record(key, line);
        skipWs();
        if (text[i] === "=") i++;
        skipWs();
        skipValue(key);
        skipWsNl();
        if (text[i] === ",") i++;
        if (i === guard) i++;
      }
      return;
    }
    while (i < n && !",]}\n\r#".includes(text[i]!)) i++;
  };

  let table: string[] = [];
  while (i < n) {
    skipWsNl();
    if (i >= n) break;
    const start = i;
    if (text[i] === "[") {
      const arr = text[i + 1] === "[";
      i += arr ? 2 : 1;
      table = readKey();
      record(table, line);
      while (i < n && text[i] !== "]") i++;
      i += arr ? 2 : 1;
    } else {
      const key = [...table, ...readKey()];
      record(key, line);
      skipWs();
      if (text[i] === "=") i++;
      skipWs();
      skipValue(key);
    }
    while (i < n && text[i] !== "\n") i++; // trailing comment
    if (i === start) i++;
  }
  return out;
}

/** Line of a dotted key, falling back to its nearest recorded parent table. */
export function lineOf(lines: KeyLines, key: string): number | undefined {
  const segs = key.split(".");
  for (let k = segs.length; k > 0; k--) {
    const at = lines.get(segs.slice(0, k).join("."));
    if (at !== undefined) return at;
  }
  return undefined;
}
