import {
  InvalidPeriodError,
  nextPeriodKey,
  periodBounds,
  periodKey,
  periodKeys,
  previousPeriodKey,
  type Period,
} from '../src/time/periods';

describe('periodKeys', () => {
  it('splits at midnight UTC: 23:59:59.999 vs 00:00:00.000', () => {
    expect(periodKeys('2026-03-31T23:59:59.999Z')).toEqual({ day: '2026-03-31', week: '2026-W14', month: '2026-03' });
    expect(periodKeys('2026-04-01T00:00:00.000Z')).toEqual({ day: '2026-04-01', week: '2026-W14', month: '2026-04' });
    // Sunday night to Monday morning changes the ISO week.
    expect(periodKeys('2026-04-05T23:59:59.999Z').week).toBe('2026-W14');
    expect(periodKeys('2026-04-06T00:00:00.000Z').week).toBe('2026-W15');
  });

  it('uses UTC whatever the offset of the input', () => {
    // 01:30 at +02:00 is still the previous day in UTC.
    expect(periodKeys('2026-05-01T01:30:00+02:00')).toEqual({ day: '2026-04-30', week: '2026-W18', month: '2026-04' });
  });

  it.each([
    ['2026-12-31', { day: '2026-12-31', week: '2026-W53', month: '2026-12' }],
    ['2027-01-01', { day: '2027-01-01', week: '2026-W53', month: '2027-01' }],
    ['2027-01-03T23:59:59.999Z', { day: '2027-01-03', week: '2026-W53', month: '2027-01' }],
    ['2027-01-04T00:00:00Z', { day: '2027-01-04', week: '2027-W01', month: '2027-01' }],
    ['2024-12-29', { day: '2024-12-29', week: '2024-W52', month: '2024-12' }],
    ['2024-12-30', { day: '2024-12-30', week: '2025-W01', month: '2024-12' }],
    ['2026-01-01', { day: '2026-01-01', week: '2026-W01', month: '2026-01' }],
    ['2021-01-03', { day: '2021-01-03', week: '2020-W53', month: '2021-01' }],
    ['2028-02-29T12:00:00Z', { day: '2028-02-29', week: '2028-W09', month: '2028-02' }],
  ])('%s', (input, expected) => {
    expect(periodKeys(input)).toEqual(expected);
  });

  it('accepts Date and epoch milliseconds', () => {
    const ms = Date.UTC(2026, 11, 31, 23, 59, 59, 999);
    expect(periodKeys(ms)).toEqual({ day: '2026-12-31', week: '2026-W53', month: '2026-12' });
    expect(periodKeys(new Date(ms + 1))).toEqual({ day: '2027-01-01', week: '2026-W53', month: '2027-01' });
  });

  it('periodKey picks one period', () => {
    expect(periodKey('day', '2024-12-30')).toBe('2024-12-30');
    expect(periodKey('week', '2024-12-30')).toBe('2025-W01');
    expect(periodKey('month', '2024-12-30')).toBe('2024-12');
  });

  it.each(['2026-03-01T12:00:00', 'yesterday', '2026-13-45', '2026-02-30', '2027-02-29T10:00:00Z', '2026-04-31T00:00:00Z', ''])('rejects the ambiguous or invalid date %p', (input) => {
    expect(() => periodKeys(input)).toThrow(InvalidPeriodError);
  });

  it('rejects an invalid Date and NaN', () => {
    expect(() => periodKeys(new Date('nope'))).toThrow(/Invalid date/);
    expect(() => periodKeys(Number.NaN)).toThrow(InvalidPeriodError);
  });
});

describe('periodBounds', () => {
  const iso = (b: { start: Date; end: Date }) => [b.start.toISOString(), b.end.toISOString()];

  it('day', () => {
    expect(iso(periodBounds('day', '2026-12-31'))).toEqual(['2026-12-31T00:00:00.000Z', '2027-01-01T00:00:00.000Z']);
    expect(iso(periodBounds('day', '2028-02-29'))).toEqual(['2028-02-29T00:00:00.000Z', '2028-03-01T00:00:00.000Z']);
  });

  it('month, including leap and non-leap February', () => {
    expect(iso(periodBounds('month', '2028-02'))).toEqual(['2028-02-01T00:00:00.000Z', '2028-03-01T00:00:00.000Z']);
    expect(iso(periodBounds('month', '2027-02'))).toEqual(['2027-02-01T00:00:00.000Z', '2027-03-01T00:00:00.000Z']);
    expect(iso(periodBounds('month', '2026-12'))).toEqual(['2026-12-01T00:00:00.000Z', '2027-01-01T00:00:00.000Z']);
  });

  it('ISO week across a year boundary', () => {
    expect(iso(periodBounds('week', '2026-W53'))).toEqual(['2026-12-28T00:00:00.000Z', '2027-01-04T00:00:00.000Z']);
    expect(iso(periodBounds('week', '2025-W01'))).toEqual(['2024-12-30T00:00:00.000Z', '2025-01-06T00:00:00.000Z']);
    expect(iso(periodBounds('week', '2026-W01'))).toEqual(['2025-12-29T00:00:00.000Z', '2026-01-05T00:00:00.000Z']);
  });

  it('is consistent with periodKey at both edges', () => {
    for (const period of ['day', 'week', 'month'] as Period[]) {
      for (const at of ['2026-12-31T10:00:00Z', '2027-01-01T00:00:00Z', '2028-02-29T23:59:59.999Z']) {
        const key = periodKey(period, at);
        const { start, end } = periodBounds(period, key);
        expect(periodKey(period, start)).toBe(key);
        expect(periodKey(period, end.getTime() - 1)).toBe(key);
        expect(periodKey(period, end)).not.toBe(key);
      }
    }
  });

  it.each<[Period, string]>([
    ['day', '2027-02-29'],
    ['day', '2026-02-30'],
    ['day', '2026-13-01'],
    ['day', '2026-1-01'],
    ['week', '2027-W53'],
    ['week', '2026-W00'],
    ['week', '2026-53'],
    ['month', '2026-00'],
    ['month', '2026-13'],
    ['month', '2026-W01'],
  ])('rejects %s key %s', (period, key) => {
    expect(() => periodBounds(period, key)).toThrow(`Invalid ${period} key "${key}"`);
  });

  it('rejects an unknown period', () => {
    expect(() => periodBounds('year' as Period, '2026')).toThrow(/Unknown period "year"/);
  });
});

describe('previous and next period', () => {
  it.each<[Period, string, string]>([
    ['day', '2027-01-01', '2026-12-31'],
    ['day', '2028-03-01', '2028-02-29'],
    ['day', '2027-03-01', '2027-02-28'],
    ['week', '2027-W01', '2026-W53'],
    ['week', '2026-W01', '2025-W52'],
    ['week', '2026-W10', '2026-W09'],
    ['month', '2027-01', '2026-12'],
    ['month', '2028-03', '2028-02'],
  ])('%s before %s is %s', (period, key, previous) => {
    expect(previousPeriodKey(period, key)).toBe(previous);
    expect(nextPeriodKey(period, previous)).toBe(key);
  });
});
