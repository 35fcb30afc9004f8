import { styleText } from 'node:util';
import { formatUsd, money, type Money } from './shared';

/** A problem the operator can fix: printed as one line on stderr, exit code 1, never a stack. */
export class CliError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'CliError';
  }
}

/**
 * Colour on a terminal only. FORCE_COLOR forces it either way (as in Node itself); otherwise
 * NO_COLOR (https://no-color.org), `--no-color`, a pipe or TERM=dumb turn it off.
 */
export function colorEnabled(stream: { isTTY?: boolean }, env: NodeJS.ProcessEnv, flag = true): boolean {
  const force = env.FORCE_COLOR;
  if (force !== undefined && force !== '') return force !== '0' && force !== 'false';
  if (!flag) return false;
  if (env.NO_COLOR !== undefined && env.NO_COLOR !== '') return false;
  return stream.isTTY === true && env.TERM !== 'dumb';
}

type Style = Parameters<typeof styleText>[0];

/** Where a command writes its results: human text or JSON, coloured or not. */
export class Output {
  constructor(
    readonly json: boolean,
    readonly color: boolean,
    private readonly stream: NodeJS.WritableStream = process.stdout,
  ) {}

  paint(style: Style, text: string): string {
    // We decide (colorEnabled); newer Nodes would otherwise check process.stdout themselves.
    return this.color ? styleText(style, text, { validateStream: false }) : text;
  }

  line(text = ''): void {
    this.stream.write(`${text}\n`);
  }

  /** One JSON document (a command's whole result). */
  document(value: unknown): void {
    this.stream.write(`${JSON.stringify(value, null, 2)}\n`);
  }

  /** One JSON line (an item of a stream that is being followed). */
  jsonLine(value: unknown): void {
    this.stream.write(`${JSON.stringify(value)}\n`);
  }
}

/** `$12.50`, `$0.000023`: exact (from integer micros), trailing zeros dropped down to cents. */
export function usd(micros: number): string {
  const s = formatUsd(micros);
  const [whole, frac = ''] = s.split('.');
  return `$${whole}.${frac.replace(/0+$/, '').padEnd(2, '0')}`;
}

/** A column of amounts with one number of decimals (the most any of them needs), so the points line up. */
export function usdColumn(values: number[]): string[] {
  const fracs = values.map((v) => formatUsd(v).split('.')[1]!.replace(/0+$/, '').length);
  const places = Math.max(2, ...fracs);
  return values.map((v) => {
    const [whole, frac] = formatUsd(v).split('.');
    return `$${whole}.${frac!.slice(0, places)}`;
  });
}

/** Money for JSON output: integer micros and the exact USD string, as the HTTP API returns it. */
export const jsonMoney = (micros: number): Money => money(micros);

/** Left-aligned text columns, right-aligned numeric ones; `right` lists the right-aligned column indexes. */
export function table(headers: string[], rows: string[][], right: number[] = []): string[] {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => visibleLength(r[i] ?? ''))));
  const fmt = (cells: string[]) =>
    cells
      .map((c, i) => {
        const pad = ' '.repeat(Math.max(0, widths[i]! - visibleLength(c)));
        return right.includes(i) ? pad + c : i === cells.length - 1 ? c : c + pad;
      })
      .join('  ');
  return [fmt(headers), ...rows.map(fmt)];
}

// eslint-disable-next-line no-control-regex
const ANSI = /\u001b\[[0-9;]*m/g;
const visibleLength = (s: string) => s.replace(ANSI, '').length;

/** Cuts text to `max` characters with an ellipsis. */
export function truncate(text: string, max: number): string {
  return text.length <= max ? text : `${text.slice(0, max - 1)}…`;
}

/** Any message on one line: errors must never spill over several. */
export function oneLine(message: string): string {
  return message
    .split(/\r?\n/)
    .map((s) => s.trim())
    .filter(Boolean)
    .join(' ');
}
