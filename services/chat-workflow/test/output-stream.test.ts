import type { ChatJobResult, ChatStreamItem } from '@tollgate/shared';
import { testRedis } from '@tollgate/shared/src/testing';
import { OUTPUT_TTL_SECONDS, OutputStream } from '../src/output-stream';

const { redis, prefix, cleanup } = testRedis('output-stream');
afterAll(cleanup);

const done: ChatJobResult = { ok: false, attempts: [], error: { code: 'provider_error', category: 'provider_unavailable', message: 'x', suggested_actions: [], http_status: 502 } };

async function items(key: string): Promise<ChatStreamItem[]> {
  const entries = (await redis.xrange(key, '-', '+')) as Array<[string, string[]]>;
  return entries.map(([, fields]) => JSON.parse(fields.at(-1)!) as ChatStreamItem);
}
const textOf = (list: ChatStreamItem[]) => list.map((i) => (i.kind === 'delta' ? i.text : '')).join('');

test('a burst of deltas: the first goes alone, the rest join into one entry, then done; every character kept, in order', async () => {
  const key = `${prefix}:burst`;
  const out = new OutputStream(redis, key);
  const words = Array.from({ length: 50 }, (_, i) => `w${i} `);
  for (const w of words) out.push({ kind: 'delta', text: w });
  await out.end({ kind: 'done', result: done });

  const list = await items(key);
  expect(list.map((i) => i.kind)).toEqual(['delta', 'delta', 'done']);
  expect(list[0]).toEqual({ kind: 'delta', text: 'w0 ' });
  expect(textOf(list)).toBe(words.join(''));
  expect(list[2]).toEqual({ kind: 'done', result: done });
  const ttl = await redis.ttl(key);
  expect(ttl).toBeGreaterThan(0);
  expect(ttl).toBeLessThanOrEqual(OUTPUT_TTL_SECONDS);
});

test('deltas further apart than a write are relayed one entry each', async () => {
  const key = `${prefix}:spaced`;
  const out = new OutputStream(redis, key);
  for (const [i, w] of ['a ', 'b ', 'c '].entries()) {
    out.push({ kind: 'delta', text: w });
    // The next chunk "arrives" only once this one is in Redis.
    while ((await items(key)).length <= i) await new Promise((r) => setTimeout(r, 2));
  }
  await out.end({ kind: 'done', result: done });
  expect(await items(key)).toEqual([
    { kind: 'delta', text: 'a ' },
    { kind: 'delta', text: 'b ' },
    { kind: 'delta', text: 'c ' },
    { kind: 'done', result: done },
  ]);
});

test('a failed write breaks the stream: the next push and end throw its error instead of dropping text silently', async () => {
  const key = `${prefix}:broken`;
  await redis.set(key, 'not a stream');
  const out = new OutputStream(redis, key);
  out.push({ kind: 'delta', text: 'lost ' });
  await expect(out.end({ kind: 'done', result: done })).rejects.toThrow(/WRONGTYPE/);
  expect(() => out.push({ kind: 'delta', text: 'more' })).toThrow(/WRONGTYPE/);
});

test('on a gateway\'s reply stream every entry names its job, ahead of its item', async () => {
  const key = `${prefix}:reply`;
  const a = new OutputStream(redis, key, 'job-a');
  const b = new OutputStream(redis, key, 'job-b');
  a.push({ kind: 'delta', text: 'from a' });
  b.push({ kind: 'delta', text: 'from b' });
  await Promise.all([a.end({ kind: 'done', result: done }), b.end({ kind: 'done', result: done })]);
  const entries = (await redis.xrange(key, '-', '+')) as Array<[string, string[]]>;
  const byJob = (job: string) => entries.filter(([, f]) => f[0] === 'job' && f[1] === job).map(([, f]) => [f[2], JSON.parse(f[3]!)]);
  expect(entries).toHaveLength(4);
  expect(byJob('job-a')).toEqual([['item', { kind: 'delta', text: 'from a' }], ['item', { kind: 'done', result: done }]]);
  expect(byJob('job-b')).toEqual([['item', { kind: 'delta', text: 'from b' }], ['item', { kind: 'done', result: done }]]);
});

test('once the answer is complete (hold), queued text waits for the final item and leaves with it', async () => {
  const key = `${prefix}:held`;
  const out = new OutputStream(redis, key);
  // The first write is out while the rest of the burst arrives and the provider's answer ends.
  out.push({ kind: 'delta', text: 'first ' });
  out.push({ kind: 'delta', text: 'tail ' });
  out.hold();
  out.push({ kind: 'delta', text: 'end' });
  await new Promise((r) => setTimeout(r, 50));
  expect(await items(key)).toEqual([{ kind: 'delta', text: 'first ' }]);
  await out.end({ kind: 'done', result: done });
  expect(await items(key)).toEqual([{ kind: 'delta', text: 'first ' }, { kind: 'delta', text: 'tail end' }, { kind: 'done', result: done }]);
});
