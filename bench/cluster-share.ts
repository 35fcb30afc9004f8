import { busPartitionPattern, type createRedis, isCluster, mastersOf, scanKeys } from '../packages/shared/src';

type Redis = ReturnType<typeof createRedis>;

/** Per master of a cluster: commands served so far (INFO commandstats) and keys under a prefix. */
export interface MasterSample {
  master: string;
  calls: number;
  keys: number;
}

async function callsOf(node: Redis): Promise<number> {
  let calls = 0;
  for (const m of String(await node.info('commandstats')).matchAll(/^cmdstat_[^:]+:calls=(\d+)/gm)) calls += Number(m[1]);
  return calls;
}

export async function sampleMasters(redis: Redis, prefix: string): Promise<MasterSample[]> {
  if (!isCluster(redis)) return [];
  await redis.ping(); // the slot map is known once connected
  return Promise.all(
    mastersOf(redis).map(async (node) => {
      let keys = 0;
      // The bus partitions carry tags of their own, outside the prefix's pattern.
      for (const pattern of [`${prefix}*`, busPartitionPattern(prefix)]) for await (const page of scanKeys(node, pattern)) keys += page.length;
      return { master: `${node.options.host}:${node.options.port}`, calls: await callsOf(node), keys };
    }),
  );
}

/**
 * Each master's share of the commands sent between two samples and of the keys at the second;
 * the issue-19 target is no master above 45% with 100 tenants. Empty on a single node.
 */
export function masterShares(before: MasterSample[], after: MasterSample[]): Array<Record<string, string | number>> {
  const calls = after.map((a) => a.calls - (before.find((b) => b.master === a.master)?.calls ?? 0));
  const totalCalls = Math.max(1, calls.reduce((s, n) => s + n, 0));
  const totalKeys = Math.max(1, after.reduce((s, a) => s + a.keys, 0));
  return after.map((a, i) => ({
    master: a.master,
    commands: calls[i]!,
    'commands %': Number(((100 * calls[i]!) / totalCalls).toFixed(1)),
    keys: a.keys,
    'keys %': Number(((100 * a.keys) / totalKeys).toFixed(1)),
  }));
}
