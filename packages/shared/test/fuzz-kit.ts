/**
 * Seeded random inputs for fuzz tests. Every draw comes from one PRNG, so a failure names its
 * seed and case number and the same run can be repeated with `FUZZ_SEED=<seed>`.
 */

/** mulberry32: small, fast, good enough to spread inputs; deterministic per seed. */
export function prng(seed: number) {
  let a = seed >>> 0;
  const next = (): number => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const int = (min: number, max: number): number => min + Math.floor(next() * (max - min + 1));
  const pick = <T>(items: readonly T[]): T => items[Math.floor(next() * items.length)]!;
  const chance = (p: number): boolean => next() < p;
  return { next, int, pick, chance };
}
export type Rng = ReturnType<typeof prng>;

/** The seed of this run: FUZZ_SEED when set, else a fixed default so CI runs are repeatable. */
export function fuzzSeed(fallback: number): number {
  const raw = process.env.FUZZ_SEED;
  return raw && /^\d+$/.test(raw) ? Number(raw) : fallback;
}

/** Keys that have polluted prototypes through naive merges, parsers and form decoders. */
export const POLLUTION_KEYS = ['__proto__', 'constructor', 'prototype'] as const;

/** Strings that have broken parsers, regexes, databases and terminals. */
export const NASTY_STRINGS: readonly string[] = [
  '',
  ' ',
  '\t\r\n',
  '\u0000',
  'a\u0000b',
  '\ud800', // lone high surrogate
  '\udfff', // lone low surrogate
  'x\ud83dy', // a pair cut in half
  '\u202eevil\u202c', // right-to-left override
  'مرحبا بالعالم',
  'שלום עולם',
  '\u200f\u200e\u200b\u2060',
  '😀👩‍👩‍👧‍👦🏳️‍🌈',
  'Z̷̧̛͎̈́ͅa̸̢͝l̵̰̔g̵̣̈́ő̶̙',
  '\ufeff',
  '\uffff\ufffe',
  '%00%ff%',
  '../../../../etc/passwd',
  '<script>alert(1)</script>',
  "' OR '1'='1' --",
  '${jndi:ldap://127.0.0.1/a}',
  '{{7*7}}',
  '*',
  '?[]\\',
  '{tollgate}:apikey:*',
  'a:b:c',
  '__proto__',
  'constructor',
  'prototype',
  'hasOwnProperty',
  'toString',
  'NaN',
  'Infinity',
  '-0',
  '1e309',
  'null',
  'true',
  '[]',
  '{}',
  '0x7fffffff',
  '9007199254740993',
  '=cmd|"/c calc"!A1',
];

export const NASTY_NUMBERS: readonly number[] = [
  0, -0, -1, 1.5, -1.5, 1e-300, 1e300, Number.MAX_SAFE_INTEGER, Number.MAX_SAFE_INTEGER + 2, -Number.MAX_SAFE_INTEGER, 2 ** 31, -(2 ** 31), 2 ** 53, 0.1,
];

/** A random string: mostly nasty or random code points (surrogates included), now and then huge. */
export function randomString(r: Rng, maxLen = 40): string {
  const roll = r.next();
  if (roll < 0.35) return r.pick(NASTY_STRINGS);
  if (roll < 0.4) return r.pick(['A', '💥', '\u0000', 'é', '\ud800']).repeat(r.int(200, 40_000));
  const len = r.int(0, maxLen);
  let s = '';
  for (let i = 0; i < len; i++) {
    const kind = r.next();
    if (kind < 0.6) s += String.fromCharCode(r.int(0x20, 0x7e));
    else if (kind < 0.75) s += String.fromCharCode(r.int(0, 0x1f));
    else if (kind < 0.85) s += String.fromCharCode(r.int(0xd800, 0xdfff)); // lone surrogates
    else s += String.fromCodePoint(r.int(0x80, 0x10ffff));
  }
  return s;
}

/**
 * A random JSON value. Object keys mix the schema's own field names (so values get past the
 * first check and hit the deeper ones), pollution keys and random strings.
 */
export function randomJson(r: Rng, fieldNames: readonly string[] = [], depth = 0): unknown {
  const roll = r.next();
  const leaf = depth >= 4 || roll < 0.45;
  if (leaf) {
    const l = r.next();
    if (l < 0.15) return null;
    if (l < 0.3) return r.chance(0.5);
    if (l < 0.5) return r.chance(0.5) ? r.pick(NASTY_NUMBERS) : (r.next() - 0.5) * 10 ** r.int(0, 20);
    return randomString(r);
  }
  if (roll < 0.65) return Array.from({ length: r.int(0, 5) }, () => randomJson(r, fieldNames, depth + 1));
  return randomObject(r, fieldNames, depth);
}

export function randomObject(r: Rng, fieldNames: readonly string[] = [], depth = 0): Record<string, unknown> {
  // Own properties even for "__proto__": what JSON.parse produces, and what a parser must survive.
  const out: Record<string, unknown> = {};
  const n = r.int(0, 6);
  for (let i = 0; i < n; i++) {
    const k = r.next();
    const key = k < 0.5 && fieldNames.length ? r.pick(fieldNames) : k < 0.7 ? r.pick(POLLUTION_KEYS) : randomString(r, 12);
    Object.defineProperty(out, key, { value: randomJson(r, fieldNames, depth + 1), enumerable: true, configurable: true, writable: true });
  }
  return out;
}

/** A payload whose keys would pollute Object.prototype (or a marker) if anything merged it naively. */
export function pollutionPayload(marker: string): Record<string, unknown> {
  return JSON.parse(
    `{"__proto__":{"${marker}":"polluted"},"constructor":{"prototype":{"${marker}":"polluted"}},"prototype":{"${marker}":"polluted"}}`,
  ) as Record<string, unknown>;
}

/** Deeply nested arrays or objects, as JSON text. */
export function deepJson(depth: number, kind: 'array' | 'object'): string {
  return kind === 'array' ? `${'['.repeat(depth)}${']'.repeat(depth)}` : `${'{"a":'.repeat(depth)}1${'}'.repeat(depth)}`;
}

/** JSON-ish text a parser must refuse. */
export function malformedJson(r: Rng): string {
  const valid = JSON.stringify(randomObject(r, ['message', 'model']));
  return r.pick([
    valid.slice(0, Math.max(1, Math.floor(valid.length / 2))),
    `${valid}}`,
    `${valid},`,
    "{'message': 'single quotes'}",
    '{"message": "unterminated',
    '{"message": undefined}',
    '{"message": NaN}',
    '{message: "bare key"}',
    '{"a":1,,"b":2}',
    '{"message":"\u0000"}',
    '\u0000',
    '{"message":"x"}\u0000garbage',
    '[',
    '{',
    '"',
    '{"message":"\\uD800"', // cut after a lone surrogate escape
    '{"message":"\\u12"}',
    '{"message":"\\x41"}',
    '/* comment */ {}',
    '{"__proto__":',
    'null null',
    '1 2',
    '-',
    '0x10',
    randomString(r, 80),
  ]);
}

/** Names the own property names of a prototype, to compare before and after a fuzz run. */
export function prototypeSnapshot(): Record<string, string[]> {
  const protos: Record<string, object> = {
    Object: Object.prototype,
    Array: Array.prototype,
    Function: Function.prototype,
    String: String.prototype,
    // Node's core modules (and Buffer) live in the outer realm, whose prototypes are separate.
    'Object (outer realm)': Object.getPrototypeOf(Object.getPrototypeOf(Object.getPrototypeOf(Buffer.prototype))) as object,
  };
  return Object.fromEntries(Object.entries(protos).map(([k, p]) => [k, Object.getOwnPropertyNames(p).sort()]));
}
