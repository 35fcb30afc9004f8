import { InvalidArgumentError } from 'commander';
import { EVENT_TYPES, matchesPattern, toUtcDate } from './shared';

// Parsers for option values. Each throws InvalidArgumentError, which commander turns into one
// line naming the option: "error: option '--limit-usd <amount>' argument '1.2.3' is invalid. ...".

/** A USD amount as typed (`12.50`, `0.000001`) to integer micros, by string arithmetic: no float rounding. */
export function parseUsd(raw: string): number {
  const m = /^(\d{1,12})(?:\.(\d{1,6}))?$/.exec(raw.trim());
  if (!m) {
    if (/^\d+\.\d{7,}$/.test(raw.trim())) throw new InvalidArgumentError('Amounts are exact to the micro-dollar: at most 6 decimals.');
    throw new InvalidArgumentError('Expected a positive USD amount such as 12.50.');
  }
  const micros = Number(m[1]) * 1_000_000 + Number((m[2] ?? '').padEnd(6, '0'));
  if (micros <= 0) throw new InvalidArgumentError('The amount must be more than zero.');
  return micros;
}

export function parseMicros(raw: string): number {
  const n = /^\d{1,16}$/.test(raw.trim()) ? Number(raw.trim()) : NaN;
  if (!Number.isSafeInteger(n) || n <= 0) throw new InvalidArgumentError('Expected a positive whole number of micro-dollars (1 USD = 1000000).');
  return n;
}

export function parsePositiveInt(max: number) {
  return (raw: string): number => {
    const n = /^\d{1,9}$/.test(raw.trim()) ? Number(raw.trim()) : NaN;
    if (!Number.isInteger(n) || n < 1 || n > max) throw new InvalidArgumentError(`Expected a whole number from 1 to ${max}.`);
    return n;
  };
}

export function parseThresholds(raw: string): number[] {
  const parts = raw.split(',').map((s) => s.trim());
  const values = parts.map((p) => (/^\d{1,4}$/.test(p) ? Number(p) : NaN));
  if (values.some((v) => !Number.isInteger(v) || v < 1 || v > 1000) || values.length > 10) {
    throw new InvalidArgumentError('Expected up to 10 comma-separated percentages from 1 to 1000, such as 50,80,100.');
  }
  return [...new Set(values)].sort((a, b) => a - b);
}

/** A comma-separated list checked against allowed values. */
export function parseList<T extends string>(allowed: readonly T[], what: string) {
  return (raw: string): T[] => {
    const items = [...new Set(raw.split(',').map((s) => s.trim()).filter(Boolean))];
    const bad = items.filter((i) => !(allowed as readonly string[]).includes(i));
    if (items.length === 0 || bad.length) {
      throw new InvalidArgumentError(`Unknown ${what} ${bad.map((b) => `"${b}"`).join(', ') || '(none given)'}: expected a comma-separated list of ${allowed.join(', ')}.`);
    }
    return items as T[];
  };
}

/** Event type patterns (`workflow.*`, `usage.recorded`, `*`); one that matches no catalog type is a typo. */
export function parseTypePatterns(raw: string): string[] {
  const patterns = [...new Set(raw.split(',').map((s) => s.trim()).filter(Boolean))];
  if (patterns.length === 0) throw new InvalidArgumentError('Expected an event type or pattern such as workflow.* or usage.recorded.');
  for (const p of patterns) {
    if (!EVENT_TYPES.some((t) => matchesPattern(p, t))) {
      const families = [...new Set(EVENT_TYPES.map((t) => `${t.split('.')[0]}.*`))];
      throw new InvalidArgumentError(`"${p}" matches no event type; try one of ${families.join(', ')} or an exact type.`);
    }
  }
  return patterns;
}

const UNIT_MS: Record<string, number> = { s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000, w: 604_800_000 };

/** An instant: `-15m` / `2h` (that long ago), an ISO date or date-time with a zone, or epoch milliseconds. */
export function parseInstant(now: () => number = Date.now) {
  return (raw: string): Date => {
    const s = raw.trim();
    const rel = /^-?(\d{1,7})([smhdw])$/.exec(s);
    if (rel) return new Date(now() - Number(rel[1]) * UNIT_MS[rel[2]!]!);
    if (/^\d{13}$/.test(s)) return new Date(Number(s));
    try {
      return toUtcDate(s);
    } catch {
      throw new InvalidArgumentError('Expected a time such as -15m, -2h, -1d, 2026-11-25 or 2026-11-25T10:00:00Z.');
    }
  };
}

/** A calendar date or date-time with a zone (`--at` for a period). */
export function parseDate(raw: string): Date {
  try {
    return toUtcDate(raw.trim());
  } catch {
    throw new InvalidArgumentError('Expected a date such as 2026-11-25 or an ISO date-time with a zone.');
  }
}
