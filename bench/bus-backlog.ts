import { type createRedis, fieldsOf } from '../packages/shared/src';

/**
 * Entries on the bus's streams not yet read and acked: by one consumer group (Infinity while it
 * does not exist yet), or by every group there is.
 */
export async function busBacklog(redis: ReturnType<typeof createRedis>, streams: readonly string[], group?: string): Promise<number> {
  let behind = 0;
  for (const stream of streams) {
    const groups = ((await redis.xinfo('GROUPS', stream).catch(() => [])) as unknown[]).map(fieldsOf).filter((g) => group === undefined || g.name === group);
    if (group !== undefined && groups.length === 0) return Infinity;
    for (const g of groups) behind += Number(g.pending ?? 0) + Number(g.lag ?? 0);
  }
  return behind;
}
