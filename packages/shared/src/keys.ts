/**
 * Redis key names. Every key lives under one prefix; the default wraps it in a hash tag so the
 * keys a Lua script touches together land in one Redis Cluster slot.
 */
export function keyspace(prefix: string) {
  return (...parts: Array<string | number>): string => [prefix, ...parts].join(':');
}
export type Keyspace = ReturnType<typeof keyspace>;

/** `tollgate` → `{tollgate}`; a prefix that already carries a hash tag is kept as it is. */
export function hashTagged(prefix: string): string {
  return /\{[^}]+\}/.test(prefix) ? prefix : `{${prefix}}`;
}

const TAG = /\{([^}]+)\}/;

/**
 * The namespace of one unit that a script must see whole (a project, a bus partition), in a
 * Redis Cluster slot of its own: `{tollgate}` and `t:web` give `{tollgate:t:web}`. The rest of
 * the namespace is kept, so `{test:x}:a` and `{test:x}:b` stay apart.
 */
export function unitNamespace(namespace: string, unit: string): string {
  const tagged = hashTagged(namespace);
  return tagged.replace(TAG, (_, tag: string) => `{${tag}:${unit}}`);
}

/** Globs that together match every key of a namespace, its units' included (for scans and resets). */
export function namespaceGlobs(namespace: string): string[] {
  const esc = (s: string) => s.replace(/[*?[\]\\]/g, '\\$&');
  const m = TAG.exec(namespace);
  if (!m) return [`${esc(namespace)}*`];
  const before = esc(namespace.slice(0, m.index));
  const after = esc(namespace.slice(m.index + m[0].length));
  return [`${esc(namespace)}*`, `${before}{${esc(m[1]!)}:*}${after}*`];
}
