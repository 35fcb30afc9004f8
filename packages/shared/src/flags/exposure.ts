import type Redis from 'ioredis';
import type { EventBus } from '../bus/event-bus';
import type { EventMeta } from '../events/envelope';
import { currentTenantShards } from '../config';
import { projectNamespace } from '../tenant-shards';

const DAY_MS = 86_400_000;
const LOCAL_MAX = 100_000;

/**
 * `flag.exposed` once per subject, flag and UTC day, across every instance: a Redis SET NX per
 * (day, flag, subject) decides who publishes; a local set skips the round trip for subjects this
 * instance already saw today. The SET is undone if the publish fails, so a later request retries.
 * The markers are spread over the tenant shards by subject (one subject's in one shard, so the
 * decision stays one key), not kept in the system's one slot.
 */
export class ExposureLog {
  private seen = new Set<string>();
  private seenDay = '';

  constructor(
    private readonly redis: Redis,
    private readonly namespace: string,
    private readonly bus: EventBus,
    private readonly now: () => number = Date.now,
    private readonly shards = currentTenantShards(),
  ) {}

  /** The marker of a subject's exposure to a flag on a day (in the subject's shard). */
  markerKey(day: string, flag: string, subject: string): string {
    return `${projectNamespace(this.namespace, subject, this.shards)}:flags:exposed:${day}:${flag}:${subject}`;
  }

  /** Returns whether this call published the exposure. */
  async record(flag: string, variant: string, subject: string, featureEnabled: boolean, meta: EventMeta): Promise<boolean> {
    const t = this.now();
    const day = new Date(t).toISOString().slice(0, 10);
    if (day !== this.seenDay) {
      this.seen = new Set();
      this.seenDay = day;
    }
    const local = `${flag}\u0000${subject}`;
    if (this.seen.has(local)) return false;
    const key = this.markerKey(day, flag, subject);
    // Kept past midnight by a margin so a clock a little behind cannot publish twice.
    const ttl = Math.ceil((DAY_MS - (t % DAY_MS)) / 1000) + 3600;
    const first = (await this.redis.set(key, variant, 'EX', ttl, 'NX')) === 'OK';
    if (first) {
      try {
        await this.bus.publish('flag.exposed', { flag, variant, subject, feature_enabled: featureEnabled, day }, meta);
      } catch (err) {
        await this.redis.del(key).catch(() => undefined);
        throw err;
      }
    }
    if (this.seen.size >= LOCAL_MAX) this.seen.clear();
    this.seen.add(local);
    return first;
  }
}
