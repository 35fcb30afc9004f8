import { createHash } from 'node:crypto';
import http from 'node:http';
import { ApiError, GoogleGenAI } from '@google/genai';
import OpenAI from 'openai';
import { startStub, type StubServer } from '../src';
import { postJson } from './helpers';

let stub: StubServer;
let openai: OpenAI;
let gemini: GoogleGenAI;

// A custom fetch keeps @google/genai off Undici's global dispatcher, which jest's global lacks.
const passFetch: typeof fetch = (input, init) => fetch(input, init);

beforeAll(async () => {
  stub = await startStub({ port: 0, quiet: true });
  // logLevel off: the SDK console.errors every unparsable stream chunk, which these tests cause on purpose.
  openai = new OpenAI({ apiKey: 'test', baseURL: `${stub.url}/openai/v1`, maxRetries: 0, logLevel: 'off' });
  gemini = new GoogleGenAI({ apiKey: 'test', httpOptions: { baseUrl: `${stub.url}/gemini`, fetch: passFetch } });
});
afterAll(() => stub.close());
beforeEach(() => {
  stub.resetStats();
  stub.setFaults({});
});

const messages = [{ role: 'user' as const, content: 'Plan a budget for the vision pipeline.' }];
const ask = (model = 'gpt-4o-mini'): Promise<OpenAI.ChatCompletion> => openai.chat.completions.create({ model, messages });

describe('scripted faults', () => {
  it('two 429s then a success: the SDK sees RateLimitError with retry-after, stats bill once', async () => {
    stub.setFaults({ script: [{ fault: '429', times: 2 }], retryAfterSeconds: 2 });
    for (let i = 0; i < 2; i++) {
      const err: unknown = await ask().catch((e: unknown) => e);
      expect(err).toBeInstanceOf(OpenAI.RateLimitError);
      const rate = err as InstanceType<typeof OpenAI.RateLimitError>;
      expect(rate.status).toBe(429);
      expect(rate.headers.get('retry-after')).toBe('2');
      expect(rate.headers.get('retry-after-ms')).toBe('2000');
      expect(rate.code).toBe('rate_limit_exceeded');
    }
    const ok = await ask();
    expect(ok.choices[0]?.message.content).toMatch(/^Stub reply/);

    const s = stub.stats().byProvider.openai['gpt-4o-mini'];
    expect(s).toMatchObject({ requests: 3, successes: 1, faults: { '429': 2, '500': 0, '503': 0, hang: 0, malformed: 0 } });
    expect(s?.billed).toEqual({
      promptTokens: ok.usage?.prompt_tokens,
      completionTokens: ok.usage?.completion_tokens,
      totalTokens: ok.usage?.total_tokens,
      images: 0,
      searchQueries: 0,
      groundedPrompts: 0,
    });
  });

  it('a provider-scoped script step only hits that provider, in order', async () => {
    stub.setFaults({ script: [{ provider: 'gemini', fault: '500', times: 1 }, { fault: '503', times: 1 }] });
    const first = await ask().catch((e: unknown) => e);
    expect(first).toBeInstanceOf(OpenAI.InternalServerError);
    expect((first as InstanceType<typeof OpenAI.APIError>).status).toBe(503);
    const g = await gemini.models.generateContent({ model: 'gemini-2.0-flash', contents: 'hi' }).catch((e: unknown) => e);
    expect(g).toBeInstanceOf(ApiError);
    expect((g as ApiError).status).toBe(500);
    expect((await ask()).choices[0]?.finish_reason).toBe('stop');
  });
});

describe('rates', () => {
  it('rate503=1 for gemini only leaves openai working', async () => {
    stub.setFaults({ providers: { gemini: { rate503: 1 } } });
    for (let i = 0; i < 3; i++) {
      const err: unknown = await gemini.models.generateContent({ model: 'gemini-2.0-flash', contents: 'hello' }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(ApiError);
      expect((err as ApiError).status).toBe(503);
      expect((err as ApiError).message).toContain('UNAVAILABLE');
    }
    const ok = await ask();
    expect(ok.choices[0]?.message.content).toMatch(/^Stub reply \(openai/);
    const stats = stub.stats();
    expect(stats.byProvider.gemini['gemini-2.0-flash']).toMatchObject({ requests: 3, successes: 0, faults: { '503': 3 }, billed: { promptTokens: 0 } });
    expect(stats.byProvider.openai['gpt-4o-mini']).toMatchObject({ requests: 1, successes: 1 });
  });

  it('a seed makes the rate draws reproducible', async () => {
    const outcomes = async (): Promise<number[]> => {
      stub.setFaults({ rate500: 0.5, seed: 42 });
      const statuses: number[] = [];
      for (let i = 0; i < 12; i++) {
        const r = await postJson(`${stub.url}/v1/chat/completions`, { model: 'm', messages }, { authorization: 'Bearer t' });
        statuses.push(r.status);
      }
      return statuses;
    };
    const a = await outcomes();
    expect(await outcomes()).toEqual(a);
    expect(a).toContain(500);
    expect(a).toContain(200);
  });

  it('adds configured latency before answering', async () => {
    stub.setFaults({ latencyMs: 150 });
    const t0 = Date.now();
    await ask();
    expect(Date.now() - t0).toBeGreaterThanOrEqual(140);
  });
});

describe('malformed responses', () => {
  it('openai: a truncated JSON body and a broken SSE line both make the SDK throw', async () => {
    stub.setFaults({ script: [{ fault: 'malformed', times: 2 }] });
    const plain = await ask().catch((e: unknown) => e);
    expect(plain).toBeInstanceOf(Error);
    expect(plain).not.toBeInstanceOf(OpenAI.APIError);
    expect(String(plain)).toMatch(/JSON/);

    let text = '';
    const streamed = await (async () => {
      const stream = await openai.chat.completions.create({ model: 'gpt-4o-mini', messages, stream: true });
      for await (const chunk of stream) text += chunk.choices[0]?.delta.content ?? '';
    })().catch((e: unknown) => e);
    expect(String(streamed)).toMatch(/JSON/);
    expect(text).toBe('');
    expect(stub.stats().byProvider.openai['gpt-4o-mini']).toMatchObject({ successes: 0, faults: { malformed: 2 }, billed: { completionTokens: 0 } });
  });

  it('gemini: truncated JSON and a broken SSE event both make the SDK throw', async () => {
    stub.setFaults({ script: [{ provider: 'gemini', fault: 'malformed', times: 2 }] });
    const plain = await gemini.models.generateContent({ model: 'gemini-2.0-flash', contents: 'hi' }).catch((e: unknown) => e);
    // Compared by name: the SDK's SyntaxError comes from Node's realm, not jest's sandbox.
    expect((plain as Error).name).toBe('SyntaxError');

    let chunks = 0;
    const streamed = await (async () => {
      for await (const chunk of await gemini.models.generateContentStream({ model: 'gemini-2.0-flash', contents: 'hi' })) {
        if (chunk.text) chunks++;
      }
    })().catch((e: unknown) => e);
    expect((streamed as Error).name).toBe('SyntaxError');
    expect((streamed as Error).message).toMatch(/JSON/);
    expect(chunks).toBe(1);
    const s = stub.stats().byProvider.gemini['gemini-2.0-flash'];
    // One request each: the SDK did not silently re-request the broken stream.
    expect(s).toMatchObject({ requests: 2, successes: 0, faults: { malformed: 2 } });
  });
});

describe('hangs', () => {
  it('client-side timeouts fire and close() still returns promptly with hung requests open', async () => {
    const own = await startStub({ port: 0, quiet: true, faults: { hangRate: 1 } });
    try {
      const client = new OpenAI({ apiKey: 'test', baseURL: `${own.url}/openai/v1`, maxRetries: 0 });
      const ai = new GoogleGenAI({ apiKey: 'test', httpOptions: { baseUrl: `${own.url}/gemini`, fetch: passFetch } });

      const t0 = Date.now();
      const o = await client.chat.completions.create({ model: 'gpt-4o-mini', messages }, { timeout: 200 }).catch((e: unknown) => e);
      // Plain Node gives APIConnectionTimeoutError; under jest the abort reason crosses realms and the SDK
      // falls back to its parent class, so the elapsed time is what proves the timeout fired.
      expect(o).toBeInstanceOf(OpenAI.APIConnectionError);
      expect(Date.now() - t0).toBeGreaterThanOrEqual(190);

      const t1 = Date.now();
      const g = await ai.models.generateContent({ model: 'gemini-2.0-flash', contents: 'hi', config: { abortSignal: AbortSignal.timeout(200) } }).catch((e: unknown) => e);
      // The SDK wraps the fetch abort: "exception AbortError: This operation was aborted sending request".
      expect((g as Error).cause).toMatchObject({ name: 'AbortError' });
      expect(Date.now() - t1).toBeGreaterThanOrEqual(190);
      expect(Date.now() - t0).toBeLessThan(2000);

      // A raw request that nobody aborts: close() must destroy it rather than wait.
      const pending = new Promise<string>((resolve) => {
        const req = http.request(`${own.url}/v1/chat/completions`, { method: 'POST', headers: { authorization: 'Bearer t', 'content-type': 'application/json' } }, () => resolve('answered'));
        req.on('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message));
        req.end(JSON.stringify({ model: 'gpt-4o-mini', messages }));
      });
      await new Promise((r) => setTimeout(r, 100));
      expect(own.stats().totals.faults.hang).toBe(3);
      expect(own.stats().totals.successes).toBe(0);

      const t2 = Date.now();
      await own.close();
      expect(Date.now() - t2).toBeLessThan(500);
      expect(await pending).toBe('ECONNRESET');
    } finally {
      await own.close();
    }
  });
});

describe('per-request header x-stub-fault', () => {
  const url = (): string => `${stub.url}/openai/v1/chat/completions`;
  const body = { model: 'gpt-4o-mini', messages };
  const auth = { authorization: 'Bearer t' };

  it('forces each status and wins over the configuration', async () => {
    stub.setFaults({ script: [{ fault: '500', times: 5 }] });
    for (const [value, status] of [['429', 429], ['500', 500], ['503', 503]] as const) {
      const r = await postJson(url(), body, { ...auth, 'x-stub-fault': value });
      expect(r.status).toBe(status);
      expect(r.json).toMatchObject({ error: { type: status === 429 ? 'requests' : 'server_error' } });
    }
    // The forced requests did not consume the script.
    expect((await postJson(url(), body, auth)).status).toBe(500);
    const g = await postJson(`${stub.url}/gemini/v1/models/gemini-2.0-flash:generateContent`, { contents: [{ parts: [{ text: 'x' }] }] }, { 'x-goog-api-key': 'k', 'x-stub-fault': '429' });
    expect(g.status).toBe(429);
    expect(g.headers.get('retry-after')).toBe('1');
    expect(g.json).toMatchObject({ error: { code: 429, status: 'RESOURCE_EXHAUSTED' } });
  });

  it('forces malformed and latency, and rejects unknown values with a 400', async () => {
    const malformed = await fetch(url(), { method: 'POST', headers: { ...auth, 'x-stub-fault': 'malformed' }, body: JSON.stringify(body) });
    expect(malformed.status).toBe(200);
    const parseError = await malformed.json().catch((e: unknown) => e);
    expect((parseError as Error).name).toBe('SyntaxError');

    const t0 = Date.now();
    const slow = await postJson(url(), body, { ...auth, 'x-stub-fault': 'latency=200' });
    expect(slow.status).toBe(200);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(190);

    const bad = await postJson(url(), body, { ...auth, 'x-stub-fault': 'explode' });
    expect(bad.status).toBe(400);
    expect(bad.json).toMatchObject({ error: { type: 'invalid_request_error', message: expect.stringContaining('explode') } });
  });
});

describe('admin routes', () => {
  it('health, faults, stats and reset over HTTP', async () => {
    expect(await (await fetch(`${stub.url}/healthz`)).json()).toEqual({ ok: true, service: 'stub-llm', pid: process.pid });

    const set = await postJson(`${stub.url}/_stub/faults`, { script: [{ fault: '503', times: 1 }] });
    expect(set.status).toBe(200);
    expect((await ask().catch((e: unknown) => e)) as unknown).toBeInstanceOf(OpenAI.InternalServerError);
    await ask();

    const stats = (await (await fetch(`${stub.url}/_stub/stats`)).json()) as ReturnType<StubServer['stats']>;
    expect(stats).toEqual(stub.stats());
    expect(stats.totals).toMatchObject({ requests: 2, successes: 1, faults: { '503': 1 } });

    const bad = await postJson(`${stub.url}/_stub/faults`, { rate429: 2 });
    expect(bad.status).toBe(400);
    expect(bad.json).toEqual({ error: { message: 'rate429 must be a probability in 0..1' } });

    await postJson(`${stub.url}/_stub/faults`, { rate500: 1 });
    expect((await postJson(`${stub.url}/_stub/reset`, {})).status).toBe(200);
    expect(stub.stats().totalRequests).toBe(0);
    expect((await ask()).choices[0]?.finish_reason).toBe('stop');
  });
});

describe('billing ledger', () => {
  it('billed totals equal the sum of usages returned to clients', async () => {
    stub.setFaults({ script: [{ fault: '429', times: 1 }, { provider: 'gemini', fault: '503', times: 1 }] });
    let openaiPrompt = 0;
    let openaiCompletion = 0;
    let geminiPrompt = 0;
    let geminiCompletion = 0;
    const prompts = ['one', 'two words', 'a somewhat longer third prompt', 'four', 'five five five'];
    for (const p of prompts) {
      const r = await openai.chat.completions.create({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: p }] }).catch(() => null);
      openaiPrompt += r?.usage?.prompt_tokens ?? 0;
      openaiCompletion += r?.usage?.completion_tokens ?? 0;

      const stream = await openai.chat.completions.create({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: p }], stream: true, stream_options: { include_usage: true } });
      for await (const chunk of stream) {
        openaiPrompt += chunk.usage?.prompt_tokens ?? 0;
        openaiCompletion += chunk.usage?.completion_tokens ?? 0;
      }

      const g = await gemini.models.generateContent({ model: 'gemini-2.0-flash', contents: p }).catch(() => null);
      geminiPrompt += g?.usageMetadata?.promptTokenCount ?? 0;
      geminiCompletion += g?.usageMetadata?.candidatesTokenCount ?? 0;
    }
    const stats = stub.stats();
    expect(stats.byProvider.openai['gpt-4o-mini']).toMatchObject({
      requests: 10, successes: 9, faults: { '429': 1 }, billed: { promptTokens: openaiPrompt, completionTokens: openaiCompletion, totalTokens: openaiPrompt + openaiCompletion },
    });
    expect(stats.byProvider.gemini['gemini-2.0-flash']).toMatchObject({
      requests: 5, successes: 4, faults: { '503': 1 }, billed: { promptTokens: geminiPrompt, completionTokens: geminiCompletion },
    });
    expect(stats.totals.billed.promptTokens).toBe(openaiPrompt + geminiPrompt);
    expect(openaiPrompt).toBeGreaterThan(0);
    expect(geminiCompletion).toBeGreaterThan(0);
  });

  it('the opt-in call log keeps each billed call with the hash of what was asked (and serves it over HTTP)', async () => {
    expect(stub.billedCalls()).toEqual([]);
    expect(await (await fetch(`${stub.url}/_stub/calls`)).json()).toEqual({ enabled: false, calls: [] });
    const own = await startStub({ port: 0, quiet: true, callLog: true });
    try {
      own.setFaults({ script: [{ fault: '503', times: 1 }] });
      const client = new OpenAI({ apiKey: 'test', baseURL: `${own.url}/openai/v1`, maxRetries: 0, logLevel: 'off' });
      const before = Date.now();
      for (const content of ['same prompt', 'same prompt', 'another, longer prompt here']) {
        await client.chat.completions.create({ model: 'gpt-4o-mini', messages: [{ role: 'user', content }] }).catch(() => null);
      }
      const calls = own.billedCalls();
      const billed = own.stats().byProvider.openai['gpt-4o-mini']!.billed;
      expect(calls).toHaveLength(2);
      expect(calls.reduce((n, c) => n + c.promptTokens, 0)).toBe(billed.promptTokens);
      expect(calls.reduce((n, c) => n + c.completionTokens, 0)).toBe(billed.completionTokens);
      expect(calls.map((c) => c.ask)).toEqual(
        ['same prompt', 'another, longer prompt here'].map((t) => createHash('sha256').update(t).digest('hex')),
      );
      expect(calls.every((c) => c.provider === 'openai' && c.model === 'gpt-4o-mini' && c.images === 0 && c.at >= before)).toBe(true);
      expect(await (await fetch(`${own.url}/_stub/calls`)).json()).toEqual({ enabled: true, calls });
      own.resetStats();
      expect(own.billedCalls()).toEqual([]);
    } finally {
      await own.close();
    }
  });
});
