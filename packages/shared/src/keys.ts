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
