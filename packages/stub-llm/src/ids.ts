import { randomBytes } from 'node:crypto';

// A per-process prefix plus a counter: unique enough and far cheaper than random bytes per call.
const prefix = randomBytes(6).toString('hex');
let counter = 0;

export function nextId(kind: string): string {
  counter = (counter + 1) % Number.MAX_SAFE_INTEGER;
  return `${kind}${prefix}${counter.toString(36).padStart(6, '0')}`;
}

export function unixSeconds(): number {
  return Math.floor(Date.now() / 1000);
}
