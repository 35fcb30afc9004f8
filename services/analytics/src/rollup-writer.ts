import type Redis from 'ioredis';
import {
  type AnalyticsKeys,
  analyticsKeys,
  bucketStart,
  encodeSeries,
  GRAIN_MS,
  GRAIN_RETENTION_MS,
  GRAINS,
  LuaScript,
  METRIC_SEP,
  tenantShardNamespaces,
  groupByShard,
  tenantShardsFrom,
  TIMELINE_RETENTION_DAYS,
  timelineMember,
  type TimelineEntry,
} from '@tollgate/shared';
import type { Contribution } from './contributions';
import ROLLUP_LUA from './rollup-n.lua';

const ROLLUP = new LuaScript(ROLLUP_LUA);

/** One event's share of a batch. */
export interface Counted {
  id: string;
  /** The event's project ('' for none): the tenant shard it is counted in. */
  project: string;
  /** occurred_at, epoch ms: the bucket it lands in. */
  t: number;
  contribution: Contribution | null;
  timeline?: { user: string; entry: TimelineEntry };
}

export type WriteOutcome = 'counted' | 'duplicate' | 'late';

/**
 * An event older than this is not counted: its minute bucket is gone (48 h), and it could have
 * been counted before the oldest seen set checked. An hour's margin under the minute retention.
 */
export const LATE_AFTER_MS = GRAIN_RETENTION_MS.minute - GRAIN_MS.hour;
/** Seen sets checked: the day of counting and the two before, so every id counted in the last 48 h or more. */
const SEEN_DAYS = 3;
const BATCH_MAX = 1_000;
/** Between a series' metric names and amounts in the script's arguments (see rollup-n.lua). */
const PAIR_SEP = '\x1d';
const sec = (ms: number) => Math.ceil(ms / 1000);

/**
 * Writes a bus read's events in one script call per tenant shard (see rollup-n.lua and
 * tenant-shards.ts), so ingest costs a round trip per read and shard and one HINCRBY per distinct
 * field, not per event.
 */
export class RollupWriter {
  private readonly shards: ReadonlyArray<AnalyticsKeys>;

  constructor(
    private readonly redis: Redis,
    namespace: string,
    private readonly now: () => number = Date.now,
    shards = tenantShardsFrom(),
  ) {
    this.shards = tenantShardNamespaces(namespace, shards).map(analyticsKeys);
  }

  /** Writes events at once (a bus batch): per shard, one script per BATCH_MAX events, late ones left out. */
  async writeMany(items: Counted[]): Promise<WriteOutcome[]> {
    const lateBefore = this.now() - LATE_AFTER_MS;
    const outcomes: WriteOutcome[] = items.map((it) => (it.t < lateBefore ? 'late' : 'counted'));
    await Promise.all(
      [...groupByShard(items, (it) => it.project, this.shards.length)].map(async ([s, positions]) => {
        const live = positions.filter((i) => outcomes[i] !== 'late');
        for (let from = 0; from < live.length; from += BATCH_MAX) {
          const part = live.slice(from, from + BATCH_MAX);
          const written = await this.writeBatch(part.map((i) => items[i]!), this.shards[s]!);
          part.forEach((i, k) => (outcomes[i] = written[k]!));
        }
      }),
    );
    return outcomes;
  }

  /** Writes a batch of one shard; events already counted (or twice in the batch) come back as duplicates. */
  private async writeBatch(items: Counted[], keys: AnalyticsKeys): Promise<WriteOutcome[]> {
    const outcomes: WriteOutcome[] = items.map(() => 'counted');
    const firstOf = new Map<string, number>();
    items.forEach((it, i) => {
      if (firstOf.has(it.id)) outcomes[i] = 'duplicate';
      else firstOf.set(it.id, i);
    });
    let live = [...firstOf.values()];
    while (live.length > 0) {
      const { keys: touched, args } = this.plan(live.map((i) => items[i]!), keys);
      const res = (await ROLLUP.run(this.redis, touched, args)) as string[];
      if (res[0] === 'ok') break;
      const dupIds = new Set(res.slice(1));
      const dup = new Set(live.filter((i) => dupIds.has(items[i]!.id)));
      for (const i of dup) outcomes[i] = 'duplicate';
      live = live.filter((i) => !dup.has(i));
    }
    return outcomes;
  }

  private plan(items: Counted[], shard: AnalyticsKeys): { keys: string[]; args: Array<string | number> } {
    const keys: string[] = [];
    const index = new Map<string, number>();
    const expireAt: Array<string | number> = [];
    const at = (key: string, expiresMs: number): number => {
      let i = index.get(key);
      if (i === undefined) {
        keys.push(key);
        index.set(key, (i = keys.length));
        expireAt.push(i, sec(expiresMs));
      }
      return i;
    };
    // Per minute (its hour and day follow from it), per series: metric -> summed amount. Field
    // names are built once per distinct series and metric, not once per event.
    const byMinute = new Map<number, Map<string, Map<string, number>>>();
    const today = bucketStart(this.now(), 'day');
    const checks = Array.from({ length: SEEN_DAYS }, (_, i) => {
      const day = today - i * GRAIN_MS.day;
      return at(shard.seen(day), day + (SEEN_DAYS + 1) * GRAIN_MS.day);
    });
    const ids: string[] = [];
    const lists: Array<string | number> = [];
    const subjects = new Set<string>();
    const sets: Array<string | number> = [];
    for (const it of items) {
      const minute = bucketStart(it.t, 'minute');
      ids.push(it.id);
      if (it.contribution) {
        const series = encodeSeries(it.contribution.series);
        let bySeries = byMinute.get(minute);
        if (!bySeries) byMinute.set(minute, (bySeries = new Map()));
        let sums = bySeries.get(series);
        if (!sums) bySeries.set(series, (sums = new Map()));
        for (const [metric, n] of it.contribution.sums) {
          if (n !== 0) sums.set(metric, (sums.get(metric) ?? 0) + n);
        }
      }
      if (it.timeline) {
        const day = bucketStart(it.t, 'day');
        const until = day + TIMELINE_RETENTION_DAYS * GRAIN_MS.day;
        lists.push(at(shard.timeline(day, it.timeline.user), until), timelineMember(it.timeline.entry));
        const subject = `${it.timeline.user}\x1f${it.timeline.entry.project}`;
        const k = at(shard.subjects(day), until);
        if (!subjects.has(`${k}|${subject}`)) {
          subjects.add(`${k}|${subject}`);
          sets.push(k, subject);
        }
      }
    }
    const groups: Array<string | number> = [];
    for (const [minute, bySeries] of byMinute) {
      for (const g of GRAINS) {
        const start = bucketStart(minute, g);
        groups.push(at(shard.bucket(g, start), start + GRAIN_RETENTION_MS[g] + GRAIN_MS[g]));
      }
      // Each series once, then its metrics and amounts packed into one argument: the script joins
      // them into field names. Repeated series were most of the call's bytes, and a Redis
      // client's cost is per argument.
      groups.push(bySeries.size);
      for (const [series, sums] of bySeries) {
        let packed = '';
        for (const [metric, n] of sums) if (n !== 0) packed += `${metric}${PAIR_SEP}${n}${PAIR_SEP}`;
        groups.push(series, packed);
      }
    }
    const args = [
      METRIC_SEP, checks.length, ...checks, checks[0]!, ids.length, ...ids,
      byMinute.size, ...groups,
      lists.length / 2, ...lists,
      sets.length / 2, ...sets,
      expireAt.length / 2, ...expireAt,
    ];
    return { keys, args };
  }
}
