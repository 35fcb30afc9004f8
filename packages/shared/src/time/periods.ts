import { TollgateError } from '../errors/tollgate-error';

/** Calendar periods used by aggregates and budgets; always UTC so every instance agrees on the boundary. */
export type Period = 'day' | 'week' | 'month';

export const PERIODS: readonly Period[] = ['day', 'week', 'month'];

export interface PeriodKeys {
  /** YYYY-MM-DD */
  day: string;
  /** GGGG-Www (ISO 8601 week; the ISO year can differ from the calendar year near 1 January) */
  week: string;
  /** YYYY-MM */
  month: string;
}

export type DateInput = Date | string | number;

/** A bad date or period key. */
export class InvalidPeriodError extends TollgateError {
  constructor(message: string) {
    super('invalid_period', message);
  }
}

const DAY_MS = 86_400_000;
const WEEK_MS = 7 * DAY_MS;

// Date-only strings, or date-times that carry Z or an explicit offset: a bare local date-time would
// be read in the host's time zone and land in a different UTC period on different machines.
const ISO_DATE_ONLY = /^\d{4}-\d{2}-\d{2}$/;
const ISO_DATE_TIME_WITH_ZONE = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:?\d{2})$/i;

/** Parses a Date, epoch milliseconds, or an ISO string with a zone into a valid Date; throws InvalidPeriodError otherwise. */
export function toUtcDate(input: DateInput): Date {
  let date: Date;
  if (input instanceof Date) {
    date = new Date(input.getTime());
  } else if (typeof input === 'number') {
    date = new Date(input);
  } else if (typeof input === 'string') {
    if (!ISO_DATE_ONLY.test(input) && !ISO_DATE_TIME_WITH_ZONE.test(input)) {
      throw new InvalidPeriodError(`Invalid date "${input}": expected YYYY-MM-DD or an ISO date-time with Z or an offset`);
    }
    // V8 rolls 2026-02-30 over to 2 March instead of rejecting it.
    const [y, m, d] = input.slice(0, 10).split('-').map(Number) as [number, number, number];
    const calendar = new Date(Date.UTC(y, m - 1, d));
    if (calendar.getUTCMonth() !== m - 1 || calendar.getUTCDate() !== d) {
      throw new InvalidPeriodError(`Invalid date "${input}": no such calendar day`);
    }
    date = new Date(input);
  } else {
    throw new InvalidPeriodError(`Invalid date: expected a Date, epoch milliseconds or an ISO string`);
  }
  const year = date.getUTCFullYear();
  if (Number.isNaN(date.getTime()) || year < 1000 || year > 9999) {
    throw new InvalidPeriodError(`Invalid date "${String(input)}"`);
  }
  return date;
}

const pad2 = (n: number): string => String(n).padStart(2, '0');

function startOfUtcDay(ms: number): number {
  return Math.floor(ms / DAY_MS) * DAY_MS;
}

/** Monday 00:00 UTC of ISO week 1 of `isoYear` (the week that contains 4 January). */
function isoWeekOneMonday(isoYear: number): number {
  const jan4 = Date.UTC(isoYear, 0, 4);
  const mondayOffset = (new Date(jan4).getUTCDay() + 6) % 7;
  return jan4 - mondayOffset * DAY_MS;
}

function isoWeek(date: Date): { isoYear: number; week: number } {
  const day = startOfUtcDay(date.getTime());
  const mondayOffset = (new Date(day).getUTCDay() + 6) % 7;
  // The ISO year is the calendar year of the week's Thursday.
  const isoYear = new Date(day - mondayOffset * DAY_MS + 3 * DAY_MS).getUTCFullYear();
  const week = Math.floor((day - mondayOffset * DAY_MS - isoWeekOneMonday(isoYear)) / WEEK_MS) + 1;
  return { isoYear, week };
}

function isoWeeksInYear(isoYear: number): number {
  // 28 December is always in the last ISO week of its year.
  return isoWeek(new Date(Date.UTC(isoYear, 11, 28))).week;
}

export function periodKeys(input: DateInput): PeriodKeys {
  const date = toUtcDate(input);
  const y = date.getUTCFullYear();
  const m = pad2(date.getUTCMonth() + 1);
  const { isoYear, week } = isoWeek(date);
  return {
    day: `${y}-${m}-${pad2(date.getUTCDate())}`,
    week: `${isoYear}-W${pad2(week)}`,
    month: `${y}-${m}`,
  };
}

export function periodKey(period: Period, input: DateInput): string {
  return periodKeys(input)[assertPeriod(period)];
}

function assertPeriod(period: string): Period {
  if (!(PERIODS as readonly string[]).includes(period)) {
    throw new InvalidPeriodError(`Unknown period "${period}": expected day, week or month`);
  }
  return period as Period;
}

const KEY_PATTERNS: Record<Period, RegExp> = {
  day: /^(\d{4})-(\d{2})-(\d{2})$/,
  week: /^(\d{4})-W(\d{2})$/,
  month: /^(\d{4})-(\d{2})$/,
};

/** Start (inclusive) and end (exclusive) of the period a key names; rejects keys that name no real period. */
export function periodBounds(period: Period, key: string): { start: Date; end: Date } {
  const match = KEY_PATTERNS[assertPeriod(period)].exec(key);
  const bad = (): InvalidPeriodError => new InvalidPeriodError(`Invalid ${period} key "${key}"`);
  if (!match) throw bad();
  const year = Number(match[1]);
  const second = Number(match[2]);
  if (year < 1000) throw bad();

  if (period === 'week') {
    if (second < 1 || second > isoWeeksInYear(year)) throw bad();
    const start = isoWeekOneMonday(year) + (second - 1) * WEEK_MS;
    return { start: new Date(start), end: new Date(start + WEEK_MS) };
  }
  if (second < 1 || second > 12) throw bad();
  if (period === 'month') {
    return { start: new Date(Date.UTC(year, second - 1, 1)), end: new Date(Date.UTC(year, second, 1)) };
  }
  const day = Number(match[3]);
  const start = Date.UTC(year, second - 1, day);
  // Date.UTC rolls 2027-02-30 over into March; round-tripping catches it.
  if (day < 1 || new Date(start).getUTCDate() !== day) throw bad();
  return { start: new Date(start), end: new Date(start + DAY_MS) };
}

export function previousPeriodKey(period: Period, key: string): string {
  const { start } = periodBounds(period, key);
  return periodKey(period, start.getTime() - 1);
}

export function nextPeriodKey(period: Period, key: string): string {
  const { end } = periodBounds(period, key);
  return periodKey(period, end);
}
