import { randomUUID } from 'node:crypto';
import type Redis from 'ioredis';
import { createRedis, deleteByPrefix, scanKeys } from './redis';

export const TEST_REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';

/**
 * A Redis connection and a key prefix of the test file's own; `cleanup` removes every key under
 * the prefix and closes the connection. Tests talk to real Redis, never a mock.
 */
export function testRedis(label: string): { redis: Redis; prefix: string; cleanup: () => Promise<void> } {
  const prefix = `{test:${label}:${randomUUID().slice(0, 8)}}`;
  const redis = createRedis(TEST_REDIS_URL, { name: `test-${label}` });
  return {
    redis,
    prefix,
    cleanup: async () => {
      await deleteByPrefix(redis, prefix);
      await redis.quit();
    },
  };
}

/** Polls until `check` returns true or the time runs out; returns whether it became true. */
export async function waitFor(check: () => boolean | Promise<boolean>, timeoutMs = 10_000, everyMs = 20): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return true;
    if (Date.now() > deadline) return false;
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

/** Every key matching a glob, on every master of a cluster (KEYS and SCAN see one node only). */
export async function keysMatching(redis: Redis, pattern: string | readonly string[]): Promise<string[]> {
  const out: string[] = [];
  for await (const page of scanKeys(redis, pattern)) out.push(...page);
  return out.sort();
}
