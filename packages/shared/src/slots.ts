/**
 * Placing a unit's keys (a bus partition, a queue partition) on a Redis Cluster's slots.
 *
 * `redis-cli --cluster create` gives each master an equal run of the 16,384 slots, so keys whose
 * slots lie in the i-th of N equal ranges spread evenly over the masters when N is a multiple of
 * their count. A reshard moves slots, not keys: the spread holds for an evenly split cluster.
 */
import calculateSlot from 'cluster-key-slot';
import { unitNamespace } from './keys';

export const CLUSTER_SLOTS = 16_384;

/**
 * The i-th of n equal slot ranges, rounded as `redis-cli --cluster create` rounds its masters'
 * ranges (lround), so that with n a multiple of the masters each range lies inside one master's.
 */
export function slotRange(i: number, n: number): [first: number, last: number] {
  const per = CLUSTER_SLOTS / n;
  const first = i === 0 ? 0 : Math.round(i * per - 1) + 1;
  const last = i === n - 1 ? CLUSTER_SLOTS - 1 : Math.round((i + 1) * per - 1);
  return [first, last];
}

/** Which of n equal slot ranges a slot is in. */
export function rangeOfSlot(slot: number, n: number): number {
  let i = Math.min(n - 1, Math.floor((slot * n) / CLUSTER_SLOTS));
  while (i > 0 && slot < slotRange(i, n)[0]) i--;
  while (i < n - 1 && slot > slotRange(i, n)[1]) i++;
  return i;
}

/**
 * n placements, one per slot range. The unit whose range holds `home`'s slot is `home` itself
 * (so one unit keeps today's keys, and growing the count keeps them); unit i is otherwise
 * `candidate(i, k)` for the first counter k whose slot falls in range i (about n tries).
 */
export function spreadOverSlots<T>(n: number, home: T, homeKey: string, candidate: (i: number, k: number) => { key: string; value: T }): T[] {
  const homeIndex = rangeOfSlot(calculateSlot(homeKey), n);
  const out: T[] = [];
  for (let i = 0; i < n; i++) {
    if (i === homeIndex) {
      out.push(home);
      continue;
    }
    for (let k = 0; ; k++) {
      const c = candidate(i, k);
      if (rangeOfSlot(calculateSlot(c.key), n) !== i) continue;
      out.push(c.value);
      break;
    }
  }
  return out;
}

/**
 * A stable hash (32-bit FNV-1a) of a text, mod n: the same partition in every process and release,
 * since gateways and workers of two releases must agree during a rolling deploy.
 */
export function stableBucket(text: string, n: number): number {
  if (n === 1) return 0;
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return (h >>> 0) % n;
}

/** A count of units (partitions, shards): an integer 1 to max, else a RangeError naming `what`. */
export function checkUnitCount(what: string, n: number, max: number): number {
  if (!Number.isInteger(n) || n < 1 || n > max) throw new RangeError(`${what} must be an integer 1-${max}, got ${n}`);
  return n;
}

const layouts = new Map<string, readonly string[]>();

/**
 * The namespaces of a namespace's n units of one kind, each under a tag of its own
 * (`unitNamespace(namespace, '<kind>:<i>:<k>')`) in the i-th slot range; the unit whose range holds
 * the namespace's own slot is the namespace itself, so one unit is the namespace.
 */
export function unitNamespaces(namespace: string, kind: string, n: number): readonly string[] {
  if (n === 1) return [namespace];
  const cacheKey = `${n}\0${kind}\0${namespace}`;
  const known = layouts.get(cacheKey);
  if (known) return known;
  const out = spreadOverSlots(n, namespace, namespace, (i, k) => {
    const ns = unitNamespace(namespace, `${kind}:${i}:${k}`);
    return { key: ns, value: ns };
  });
  layouts.set(cacheKey, out);
  return out;
}
