import OpenAI from 'openai';
import { startStub } from '../src';
it('probe', async () => {
  const own = await startStub({ port: 0, quiet: true, faults: { hangRate: 1 } });
  try {
    const client = new OpenAI({ apiKey: 'test', baseURL: `${own.url}/openai/v1`, maxRetries: 0 });
    const e = await client.chat.completions.create({ model: 'm', messages: [{ role: 'user', content: 'x' }] }, { timeout: 200 }).catch((x: unknown) => x) as Error & { cause?: unknown };
    const c = e.cause as Error & { cause?: unknown };
    console.log(e.constructor.name, e.message, '| cause:', c?.name, c?.message, String(c?.cause), Object.prototype.toString.call(c));
  } finally { await own.close(); }
});
