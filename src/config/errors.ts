/** Error and layer types shared by the config loader, resolver and command line. */

/** Exit status for configuration and usage errors (bhyve exits 4 on error). */
export const CONFIG_EXIT_CODE = 4;

export interface ConfigIssue {
  /** "guest.toml:7", "command line (-m lots)" or a bare source name */
  where: string;
  /** dotted key, or "" for document-level problems */
  key: string;
  message: string;
}

/** All problems found in a configuration; the message lists one per line as `where: key: message`. */
export class ConfigError extends Error {
  readonly exitCode = CONFIG_EXIT_CODE;
  constructor(readonly issues: ConfigIssue[]) {
    super(issues.map((e) => (e.key ? `${e.where}: ${e.key}: ${e.message}` : `${e.where}: ${e.message}`)).join("\n"));
    this.name = "ConfigError";
  }
}

/** Where a setting came from. */
export interface Origin {
  where: string;
  /** directory relative paths are resolved against */
  baseDir: string;
  /** for ordering messages: layer rank, then line */
  line?: number;
}

export interface Setting {
  key: string;
  value: unknown;
  origin: Origin;
  /** an empty [table] (only marks that the table exists) */
  table?: boolean;
}

export interface Layer {
  name: string;
  settings: Setting[];
  /** key prefixes removed from all lower layers before this layer applies (e.g. -c drops file topology) */
  clears?: string[];
}
