/**
 * Where the bus's partitions live, and which partition an event goes to.
 *
 * A Redis stream is one key, so one slot of one master: a bus on one stream goes no faster on a
 * cluster than on one node. With N partitions the bus is N streams, and each stream's hash tag is
 * chosen so that partition i's slot lies in the i-th of N equal ranges of the 16,384 slots.
 * `redis-cli --cluster create` gives each master an equal run of slots, so with N a multiple of
 * the masters every master holds N / masters partitions. (A reshard moves slots, not these keys:
 * the spread holds for an evenly split cluster, which is what a new one is.)
 *
 * One partition is the bus's home: the stream `<prefix>:bus` itself, under the prefix's own tag,
 * in whichever range that key's slot falls. Scripts that append events atomically with keys of
 * their own under the prefix (the journey store's transition) write there, and every group reads
 * it like any partition. With one partition the home is the whole bus, so a one-partition bus
 * keeps today's keys, and a bus grown to N partitions keeps its stream, groups and backlog.
 */
import { keyspace } from '../keys';
import { checkUnitCount, spreadOverSlots, stableBucket } from '../slots';

export { CLUSTER_SLOTS, rangeOfSlot, slotRange } from '../slots';

export const MAX_BUS_PARTITIONS = 256;

export interface BusPartitionKeys {
  stream: string;
  /** In the stream's slot: a dead letter is written and its entry acked in one MULTI. */
  deadLetters: string;
}

/** The bus stream's key under a prefix: the home partition, where a script that appends events itself writes. */
export function busStreamKey(prefix: string): string {
  return keyspace(prefix)('bus');
}

export function checkPartitionCount(n: number): number {
  return checkUnitCount('bus partitions', n, MAX_BUS_PARTITIONS);
}

/**
 * A key's hash tag as Redis finds it (the first `{`, the first `}` after it, not empty), split
 * out of the prefix so a partition's own tag can take its place.
 */
function splitTag(prefix: string): { before: string; content: string; after: string } {
  const open = prefix.indexOf('{');
  const close = open < 0 ? -1 : prefix.indexOf('}', open + 1);
  if (close > open + 1) return { before: prefix.slice(0, open), content: prefix.slice(open + 1, close), after: prefix.slice(close + 1) };
  // No tag: the prefix is its own tag content.
  return { before: '', content: prefix, after: '' };
}

const layouts = new Map<string, readonly BusPartitionKeys[]>();

/**
 * The keys of each of a bus's `n` partitions. A partition's tag starts from the prefix's own tag
 * content (`{tollgate}` → `{tollgate:bus:3:<k>}:bus`), so buses under different prefixes never
 * share a key; `k` is the first counter that puts the slot in the partition's range.
 */
export function busPartitions(prefix: string, n: number): readonly BusPartitionKeys[] {
  checkPartitionCount(n);
  const cacheKey = `${n}\0${prefix}`;
  const known = layouts.get(cacheKey);
  if (known) return known;
  const home = busStreamKey(prefix);
  const { before, content, after } = splitTag(prefix);
  const out = spreadOverSlots<BusPartitionKeys>(n, { stream: home, deadLetters: keyspace(prefix)('bus', 'dead') }, home, (i, k) => {
    const tag = `${content}:bus:${i}:${k}`;
    const stream = `${before}{${tag}}${after}:bus`;
    return { key: tag, value: { stream, deadLetters: `${stream}:dead` } };
  });
  layouts.set(cacheKey, out);
  return out;
}

const globEscape = (s: string) => s.replace(/[*?[\]\\]/g, '\\$&');

/**
 * A SCAN pattern for the streams and dead letters of every partition but the home one, under the
 * prefix and the prefixes it starts (as `<prefix>*` matches theirs), for whatever walks a prefix's
 * keys (dev resets, key counts): their tags are their own, so `<prefix>*` does not reach them.
 */
export function busPartitionPattern(prefix: string): string {
  const { before, content, after } = splitTag(prefix);
  return `${globEscape(before)}{${globEscape(content)}:bus:*}${globEscape(after)}*`;
}

/**
 * The partition of a placement key (see `placementKey`): a stable hash (FNV-1a) of it, so the
 * events of one key stay in one stream, in the order they were published. Stable across
 * processes and releases: a change would split a request's events during a rolling deploy.
 */
export function partitionOf(key: string, n: number): number {
  return stableBucket(key, n);
}

/**
 * What places an event: its correlation id, so one request's events keep their order; but its
 * journey when it has one. A journey spans requests, and the journey service must get a
 * journey's events in publishing order (a step's event judged before the step it depends on is
 * dropped); every event a journey's request causes carries the journey, so that request's events
 * still share one partition.
 */
export function placementKey(e: { correlation_id: string; journey_id?: string }): string {
  return e.journey_id ?? e.correlation_id;
}

/** A stream id's time and sequence, for ordering entries of different streams. */
export function parseStreamId(id: string): [ms: number, seq: number] {
  const dash = id.indexOf('-');
  return dash < 0 ? [Number(id), 0] : [Number(id.slice(0, dash)), Number(id.slice(dash + 1))];
}

/** Oldest first: time, then sequence, then partition (ids of two streams can be equal). */
export function compareEntries(a: { streamId: string; partition: number }, b: { streamId: string; partition: number }): number {
  const [am, as] = parseStreamId(a.streamId);
  const [bm, bs] = parseStreamId(b.streamId);
  return am - bm || as - bs || a.partition - b.partition;
}
