import winston from 'winston';
import { TollgateError } from './errors/tollgate-error';

export const REDACTED = '[REDACTED]';

// Keys are compared after camelCase -> snake_case, lower-casing and '-' -> '_', so
// `apiKey`, `API_KEY`, `x-api-key` and `X-Api-Key` are one rule.
const SECRET_KEYS = new Set([
  'authorization',
  'proxy_authorization',
  'cookie',
  'set_cookie',
  'x_api_key',
  'x_goog_api_key',
  'api_key',
  'apikey',
  'password',
  'passwd',
  'secret',
  'token',
  'access_token',
  'refresh_token',
  'admin_token',
]);
const SECRET_SUFFIXES = ['_key', '_token', '_secret', '_password'];
// Tollgate's own identifiers that merely end in _key; hiding them would make ledger logs useless.
const NOT_SECRET_KEYS = new Set(['model_key', 'cache_key', 'idempotency_key', 'period_key']);

function normalizeKey(key: string): string {
  return key
    .replace(/([a-z0-9])([A-Z])/g, '$1_$2')
    .toLowerCase()
    .replace(/[-\s]/g, '_');
}

export function isSecretKey(key: string): boolean {
  const k = normalizeKey(key);
  if (NOT_SECRET_KEYS.has(k)) return false;
  return SECRET_KEYS.has(k) || SECRET_SUFFIXES.some((s) => k.endsWith(s));
}

// The lookbehinds stop "task-12345678" or "my_tg_..." from being read as keys.
const STRING_RULES: readonly [RegExp, string][] = [
  [/\bBearer\s+[^\s"',;]+/gi, `Bearer ${REDACTED}`],
  [/(?<![A-Za-z0-9_-])sk-[A-Za-z0-9_-]{8,}/g, REDACTED],
  [/(?<![A-Za-z0-9_-])AIza[0-9A-Za-z_-]{20,}/g, REDACTED],
  [/(?<![A-Za-z0-9_-])tg_[A-Za-z0-9_-]{16,}/g, REDACTED],
  // Credentials in URLs: redis://:pass@host, https://user:pass@proxy.
  [/(\b[a-z][a-z0-9+.-]*:\/\/[^\s/@:]*):[^\s/@]+@/gi, `$1:${REDACTED}@`],
  // Keys in query strings (Gemini REST takes ?key=).
  [/([?&](?:key|api_key|apikey|token|access_token|password|secret)=)[^&#\s"',;)]+/gi, `$1${REDACTED}`],
];

export function redactString(text: string): string {
  let out = text;
  for (const [pattern, replacement] of STRING_RULES) out = out.replace(pattern, replacement);
  return out;
}

const MAX_DEPTH = 32;

/**
 * A redacted deep copy: secret-named keys become '[REDACTED]', secrets inside any string are masked,
 * Errors become plain objects (name, message, stack, cause, own fields) so they survive JSON, cycles
 * become '[Circular]'. Pure: the input is never modified.
 */
export function redact(value: unknown): unknown {
  return walk(value, new Set<object>(), 0);
}

function walk(value: unknown, ancestors: Set<object>, depth: number): unknown {
  if (typeof value === 'string') return redactString(value);
  if (value === null || typeof value !== 'object') return value;
  if (ancestors.has(value)) return '[Circular]';
  if (depth >= MAX_DEPTH) return '[Truncated]';

  ancestors.add(value);
  try {
    return walkObject(value, ancestors, depth);
  } finally {
    ancestors.delete(value);
  }
}

function walkObject(value: object, ancestors: Set<object>, depth: number): unknown {
  const next = (v: unknown): unknown => walk(v, ancestors, depth + 1);

  if (Array.isArray(value)) return value.map(next);
  // Image bytes and the like: size is useful, content is noise (and may be sensitive).
  if (ArrayBuffer.isView(value)) return `[binary ${value.byteLength} bytes]`;
  if (value instanceof ArrayBuffer) return `[binary ${value.byteLength} bytes]`;
  if (value instanceof Date) return new Date(value.getTime());
  if (value instanceof URL) return redactString(value.href);
  if (value instanceof Error) return redactEntries(errorEntries(value), next);
  if (value instanceof Map) return redactEntries([...value].map(([k, v]) => [String(k), v]), next);
  if (value instanceof Set) return [...value].map(next);
  if (typeof Headers !== 'undefined' && value instanceof Headers) return redactEntries([...value.entries()], next);

  const toJSON = (value as { toJSON?: unknown }).toJSON;
  if (typeof toJSON === 'function') {
    try {
      return next(toJSON.call(value));
    } catch {
      return '[Unserializable]';
    }
  }

  const entries: [string, unknown][] = [];
  for (const key of Object.keys(value)) {
    try {
      entries.push([key, (value as Record<string, unknown>)[key]]);
    } catch {
      entries.push([key, '[Unreadable]']);
    }
  }
  return redactEntries(entries, next);
}

function errorEntries(err: Error): [string, unknown][] {
  const entries: [string, unknown][] = [
    ['name', err.name],
    ['message', err.message],
  ];
  if (err.stack !== undefined) entries.push(['stack', err.stack]);
  for (const key of Object.keys(err)) {
    if (key !== 'name' && key !== 'message' && key !== 'stack') {
      entries.push([key, (err as unknown as Record<string, unknown>)[key]]);
    }
  }
  // cause and AggregateError.errors are own but non-enumerable, so JSON would drop them.
  if (err.cause !== undefined && !Object.keys(err).includes('cause')) entries.push(['cause', err.cause]);
  if (err instanceof AggregateError && !Object.keys(err).includes('errors')) entries.push(['errors', err.errors]);
  return entries;
}

function redactEntries(entries: [string, unknown][], next: (v: unknown) => unknown): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [key, v] of entries) {
    out[redactString(key)] = isSecretKey(key) && v !== undefined && v !== null ? REDACTED : next(v);
  }
  return out;
}

type LogInfo = winston.Logform.TransformableInfo;

// Winston hands formats the caller's own object when it logs a single object, so build a new one.
function redactFormat(service: string): winston.Logform.Format {
  return winston.format((info: LogInfo): LogInfo => {
    const out = redact({ ...info }) as LogInfo;
    for (const sym of Object.getOwnPropertySymbols(info)) {
      (out as Record<symbol, unknown>)[sym] = redact((info as Record<symbol, unknown>)[sym]);
    }
    // Set after the caller's fields so meta cannot spoof which service wrote the line.
    out.service = service;
    return out;
  })();
}

/** One line a person reads in `pnpm start`: time, level, message, then the meta as compact JSON. */
const pretty = winston.format.printf((info) => {
  const { level, message, timestamp, service: _service, ...meta } = info as Record<string, unknown>;
  const rest = Object.keys(meta).length ? ` ${JSON.stringify(meta)}` : '';
  return `${String(timestamp).slice(11, 23)} ${String(level).padEnd(5)} ${String(message)}${rest}`;
});

/**
 * JSON-lines logger: timestamp, level, service, message and meta, with every entry passed through `redact`.
 * Level defaults to LOG_LEVEL, then 'info'. LOG_FORMAT=pretty (set by `pnpm start`) prints plain
 * lines for people instead; redaction applies the same.
 */
export function createLogger(
  service: string,
  opts: { level?: string; stream?: NodeJS.WritableStream; format?: 'json' | 'pretty' } = {},
): winston.Logger {
  const format = opts.format ?? (process.env.LOG_FORMAT === 'pretty' ? 'pretty' : 'json');
  const level = opts.level ?? process.env.LOG_LEVEL ?? 'info';
  if (!Object.prototype.hasOwnProperty.call(winston.config.npm.levels, level)) {
    throw new TollgateError('invalid_config', `Unknown log level "${level}"`);
  }
  const transport = opts.stream
    ? new winston.transports.Stream({ stream: opts.stream })
    : new winston.transports.Console();
  return winston.createLogger({
    level,
    format: winston.format.combine(
      winston.format.errors({ stack: true }),
      redactFormat(service),
      winston.format.timestamp(),
      format === 'pretty' ? pretty : winston.format.json(),
    ),
    transports: [transport],
  });
}
