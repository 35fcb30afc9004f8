import OpenAI from 'openai';
import { countTokens, OPENAI_IMAGE_TOKENS, startStub, type StubServer } from '../src';
import { openAIPromptTokens, PNG_BASE64, PNG_BYTES, postJson } from './helpers';

let stub: StubServer;
let client: OpenAI;

beforeAll(async () => {
  stub = await startStub({ port: 0, quiet: true });
  client = new OpenAI({ apiKey: 'test', baseURL: `${stub.url}/openai/v1`, maxRetries: 0 });
});
afterAll(() => stub.close());
beforeEach(() => stub.resetStats());

const messages = [
  { role: 'system' as const, content: 'You are terse.' },
  { role: 'user' as const, content: 'Summarise the quarterly results for the gateway project, please.' },
];

describe('OpenAI wire through the openai SDK', () => {
  it('answers deterministically with usage from the o200k tokenizer', async () => {
    const a = await client.chat.completions.create({ model: 'gpt-4o-mini', messages });
    const b = await client.chat.completions.create({ model: 'gpt-4o-mini', messages });

    expect(a.object).toBe('chat.completion');
    expect(a.model).toBe('gpt-4o-mini');
    expect(a.id).toMatch(/^chatcmpl-/);
    expect(a.id).not.toBe(b.id);
    const text = a.choices[0]?.message.content ?? '';
    expect(text).toMatch(/^Stub reply \(openai\/gpt-4o-mini\): You said: "Summarise the quarterly results for the…"/);
    expect(b.choices[0]?.message.content).toBe(text);
    expect(a.choices[0]?.message.role).toBe('assistant');
    expect(a.choices[0]?.finish_reason).toBe('stop');

    const usage = a.usage;
    expect(usage?.prompt_tokens).toBe(openAIPromptTokens(messages));
    expect(usage?.completion_tokens).toBe(countTokens(text));
    expect(usage?.total_tokens).toBe((usage?.prompt_tokens ?? 0) + (usage?.completion_tokens ?? 0));
    expect(usage?.prompt_tokens_details?.cached_tokens).toBe(0);
    expect(usage?.completion_tokens_details?.reasoning_tokens).toBe(0);
    expect(usage?.completion_tokens).toBeGreaterThanOrEqual(20);
    expect(usage?.completion_tokens).toBeLessThanOrEqual(60);
  });

  it('gives a different reply for a different last user message', async () => {
    const a = await client.chat.completions.create({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'first question' }] });
    const b = await client.chat.completions.create({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'another question entirely' }] });
    expect(a.choices[0]?.message.content).toContain('"first question"');
    expect(b.choices[0]?.message.content).toContain('"another question entirely"');
  });

  it('streams the same text in several chunks with a final usage chunk', async () => {
    const plain = await client.chat.completions.create({ model: 'gpt-4o', messages });
    const stream = await client.chat.completions.create({ model: 'gpt-4o', messages, stream: true, stream_options: { include_usage: true } });
    let text = '';
    let contentChunks = 0;
    let finish: string | null = null;
    let usage: OpenAI.CompletionUsage | null | undefined;
    let roles = 0;
    for await (const chunk of stream) {
      expect(chunk.object).toBe('chat.completion.chunk');
      const choice = chunk.choices[0];
      if (choice?.delta.role) roles++;
      if (choice?.delta.content) {
        text += choice.delta.content;
        contentChunks++;
      }
      if (choice?.finish_reason) finish = choice.finish_reason;
      if (chunk.usage) {
        expect(chunk.choices).toEqual([]);
        usage = chunk.usage;
      }
    }
    expect(text).toBe(plain.choices[0]?.message.content);
    expect(contentChunks).toBeGreaterThan(3);
    expect(roles).toBe(1);
    expect(finish).toBe('stop');
    expect(usage?.prompt_tokens).toBe(plain.usage?.prompt_tokens);
    expect(usage?.completion_tokens).toBe(plain.usage?.completion_tokens);
    expect(stub.stats().byProvider.openai['gpt-4o']?.billed.completionTokens).toBe(2 * (plain.usage?.completion_tokens ?? 0));
  });

  it('sends no usage chunk without include_usage', async () => {
    const stream = await client.chat.completions.create({ model: 'gpt-4o', messages, stream: true });
    let usageChunks = 0;
    let text = '';
    for await (const chunk of stream) {
      if (chunk.usage) usageChunks++;
      text += chunk.choices[0]?.delta.content ?? '';
    }
    expect(usageChunks).toBe(0);
    expect(text).toMatch(/^Stub reply \(openai\/gpt-4o\)/);
  });

  it('counts 85 tokens per image part and describes the image', async () => {
    const withText = await client.chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: [{ type: 'text', text: 'What is this?' }] }] });
    const withImage = await client.chat.completions.create({
      model: 'gpt-4o',
      messages: [{
        role: 'user',
        content: [{ type: 'text', text: 'What is this?' }, { type: 'image_url', image_url: { url: `data:image/png;base64,${PNG_BASE64}` } }],
      }],
    });
    expect((withImage.usage?.prompt_tokens ?? 0) - (withText.usage?.prompt_tokens ?? 0)).toBe(OPENAI_IMAGE_TOKENS);
    expect(withImage.choices[0]?.message.content).toContain(`1 image (image/png, ${PNG_BYTES} bytes)`);
    expect(stub.stats().byProvider.openai['gpt-4o']?.billed.images).toBe(1);
  });

  it('truncates at max_tokens with finish_reason length', async () => {
    const r = await client.chat.completions.create({ model: 'gpt-4o-mini', messages, max_tokens: 5 });
    expect(r.usage?.completion_tokens).toBe(5);
    expect(r.choices[0]?.finish_reason).toBe('length');
    expect(r.choices[0]?.message.content).toBe('Stub reply (openai');
  });

  it('records the DeepSeek prefix under provider deepseek with its cache fields', async () => {
    const deepseek = new OpenAI({ apiKey: 'test', baseURL: `${stub.url}/deepseek/v1`, maxRetries: 0 });
    const r = await deepseek.chat.completions.create({ model: 'deepseek-chat', messages });
    expect(r.choices[0]?.message.content).toMatch(/^Stub reply \(deepseek\/deepseek-chat\)/);
    const usage = r.usage as unknown as Record<string, unknown>;
    expect(usage.prompt_cache_miss_tokens).toBe(r.usage?.prompt_tokens);
    expect(usage.prompt_cache_hit_tokens).toBe(0);
    const stats = stub.stats();
    expect(stats.byProvider.deepseek['deepseek-chat']).toMatchObject({ requests: 1, successes: 1, billed: { promptTokens: r.usage?.prompt_tokens } });
    expect(stats.byProvider.openai['deepseek-chat']).toBeUndefined();
  });

  it('serves the unprefixed /v1 path as openai', async () => {
    const bare = new OpenAI({ apiKey: 'test', baseURL: `${stub.url}/v1`, maxRetries: 0 });
    const r = await bare.chat.completions.create({ model: 'gpt-4.1', messages });
    expect(r.choices[0]?.message.content).toMatch(/^Stub reply \(openai\/gpt-4\.1\)/);
    expect(stub.stats().byProvider.openai['gpt-4.1']?.successes).toBe(1);
  });

  it('rejects a missing model or messages with OpenAI error bodies', async () => {
    const url = `${stub.url}/openai/v1/chat/completions`;
    const auth = { authorization: 'Bearer test' };
    const noModel = await postJson(url, { messages }, auth);
    expect(noModel.status).toBe(400);
    expect(noModel.json).toEqual({ error: { message: 'you must provide a model parameter', type: 'invalid_request_error', param: 'model', code: null } });

    const noMessages = await postJson(url, { model: 'gpt-4o' }, auth);
    expect(noMessages.status).toBe(400);
    expect(noMessages.json).toEqual({
      error: { message: "Missing required parameter: 'messages'.", type: 'invalid_request_error', param: 'messages', code: 'missing_required_parameter' },
    });

    const badJson = await fetch(url, { method: 'POST', headers: auth, body: '{"model":' });
    expect(badJson.status).toBe(400);

    await expect(client.chat.completions.create({ model: 'gpt-4o', messages: [] })).rejects.toMatchObject({ status: 400, code: 'empty_array', param: 'messages' });
    const stats = stub.stats();
    expect(stats.totalRequests).toBe(4);
    expect(stats.byProvider.openai['gpt-4o']).toMatchObject({ requests: 2, rejected: 2, successes: 0 });
  });

  it('answers 401 in the OpenAI shape without a bearer key', async () => {
    const r = await postJson(`${stub.url}/openai/v1/chat/completions`, { model: 'gpt-4o', messages });
    expect(r.status).toBe(401);
    expect(r.json).toMatchObject({ error: { type: 'invalid_request_error', param: null, code: null } });
    expect(stub.stats().byProvider.openai['gpt-4o']).toMatchObject({ requests: 1, rejected: 1, successes: 0 });
  });
});
