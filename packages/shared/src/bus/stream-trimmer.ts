import type Redis from 'ioredis';
import { fieldsOf } from '../redis';

type Id = [ms: number, seq: number];

const parseId = (id: string): Id => {
  const [ms, seq] = id.split('-');
  return [Number(ms), Number(seq ?? 0)];
};
const older = (a: Id, b: Id) => a[0] < b[0] || (a[0] === b[0] && a[1] < b[1]);
const format = (id: Id) => `${id[0]}-${id[1]}`;

export interface TrimResult {
  trimmed: number;
  /** Set when a lagging group kept the stream above maxLen. */
  heldBy?: string;
  /** Set when the hard cap forced trimming past what a group had processed. */
  forced?: boolean;
}

/**
 * Trims the stream to about `maxLen` entries without deleting any entry a consumer group has
 * not processed yet. XADD MAXLEN alone would silently drop events from under a lagging group;
 * here retention only gives way at `hardMaxLen`, so a group that never reads again cannot fill
 * Redis, and the caller is told.
 */
export async function trimStream(redis: Redis, stream: string, maxLen: number, hardMaxLen: number): Promise<TrimResult> {
  const info = fieldsOf(await redis.xinfo('STREAM', stream).catch(() => null));
  const length = Number(info['length'] ?? 0);
  if (length <= maxLen) return { trimmed: 0 };
  const first = parseId(String((info['first-entry'] as unknown[] | null)?.[0] ?? '0-0'));
  const last = parseId(String((info['last-entry'] as unknown[] | null)?.[0] ?? '0-0'));
  // Stream ids are times: estimate the id that leaves `keep` entries, assuming an even rate.
  const cutFor = (keep: number): Id => [first[0] + Math.floor(((last[0] - first[0]) * (length - keep)) / length), 0];

  let cut = cutFor(maxLen);
  let heldBy: string | undefined;
  const groups = ((await redis.xinfo('GROUPS', stream)) as unknown[]).map(fieldsOf);
  for (const g of groups) {
    const name = String(g['name']);
    const pending = Number(g['pending'] ?? 0);
    let needed: Id;
    if (pending > 0) {
      const summary = (await redis.xpending(stream, name)) as [number, string | null, string | null, unknown];
      needed = parseId(summary[1] ?? '0-0');
    } else {
      const delivered = parseId(String(g['last-delivered-id'] ?? '0-0'));
      needed = [delivered[0], delivered[1] + 1];
    }
    if (older(needed, cut)) {
      cut = needed;
      heldBy = name;
    }
  }
  let forced = false;
  if (length > hardMaxLen) {
    const hard = cutFor(hardMaxLen);
    if (older(cut, hard)) {
      cut = hard;
      forced = true;
    }
  }
  const trimmed = Number(await redis.xtrim(stream, 'MINID', '~', format(cut)));
  return { trimmed, ...(heldBy && { heldBy }), ...(forced && { forced }) };
}
