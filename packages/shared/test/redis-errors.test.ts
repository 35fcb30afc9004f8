import { createRedis } from '../src/redis';

/** A sink that keeps what it is told. */
function capture() {
  const lines: string[] = [];
  return { lines, sink: { warn: (message: string) => void lines.push(message) } };
}

test('an unreachable Redis is reported once per distinct error, redacted, not once per retry with a stack', async () => {
  const { lines, sink } = capture();
  // Port 1 refuses at once, so the client retries every 100-300 ms.
  const redis = createRedis('redis://:hunter2-password@127.0.0.1:1', { name: 'probe', logger: sink, lazyConnect: false, nodes: null });
  const dup = redis.duplicate();
  await new Promise((r) => setTimeout(r, 1_200));
  redis.disconnect();
  dup.disconnect();
  expect(lines.length).toBe(2);
  expect(lines).toContain('redis (probe): connect ECONNREFUSED 127.0.0.1:1; reconnecting');
  expect(lines.every((l) => !l.includes('hunter2') && !l.includes('\n    at '))).toBe(true);
});
