import { GoogleGenAI } from '@google/genai';
import { countTokens, GEMINI_IMAGE_TOKENS, startStub, type StubServer } from '../src';
import { PNG_BASE64, PNG_BYTES, postJson } from './helpers';

let stub: StubServer;
let ai: GoogleGenAI;
const seen: string[] = [];

// Records the exact URLs the SDK produces, so the route assumptions are checked, not guessed.
// Passing any `fetch` also matters under jest: without one the SDK routes through Undici's global
// dispatcher, which jest's sandboxed global does not expose ("Undici globalDispatcher is not available").
const recordingFetch: typeof fetch = (input, init) => {
  const url = new URL(input instanceof Request ? input.url : String(input));
  seen.push(url.pathname + url.search);
  return fetch(input, init);
};

beforeAll(async () => {
  stub = await startStub({ port: 0, quiet: true });
  ai = new GoogleGenAI({ apiKey: 'test', httpOptions: { baseUrl: `${stub.url}/gemini`, fetch: recordingFetch } });
});
afterAll(() => stub.close());
beforeEach(() => {
  stub.resetStats();
  seen.length = 0;
});

const prompt = 'Describe the quarterly spend of the vision workflow.';

describe('Gemini wire through @google/genai', () => {
  it('generateContent returns text and usageMetadata on the /v1 path', async () => {
    const a = await ai.models.generateContent({ model: 'gemini-2.0-flash', contents: prompt });
    const b = await ai.models.generateContent({ model: 'gemini-2.0-flash', contents: prompt });
    expect(seen).toEqual(['/gemini/v1/models/gemini-2.0-flash:generateContent', '/gemini/v1/models/gemini-2.0-flash:generateContent']);
    expect(a.text).toMatch(/^Stub reply \(gemini\/gemini-2\.0-flash\): You said: "Describe the quarterly spend of the…"/);
    expect(b.text).toBe(a.text);
    expect(a.candidates?.[0]?.finishReason).toBe('STOP');
    expect(a.candidates?.[0]?.content?.role).toBe('model');
    expect(a.modelVersion).toBe('gemini-2.0-flash');
    expect(a.usageMetadata).toMatchObject({
      promptTokenCount: countTokens(prompt),
      candidatesTokenCount: countTokens(a.text ?? ''),
      totalTokenCount: countTokens(prompt) + countTokens(a.text ?? ''),
    });
    expect(stub.stats().byProvider.gemini['gemini-2.0-flash']).toMatchObject({
      requests: 2, successes: 2, billed: { promptTokens: 2 * countTokens(prompt), completionTokens: 2 * countTokens(a.text ?? '') },
    });
  });

  it('counts a system instruction in the prompt', async () => {
    const system = 'Answer in one line.';
    const r = await ai.models.generateContent({ model: 'gemini-2.0-flash', contents: prompt, config: { systemInstruction: system } });
    expect(r.usageMetadata?.promptTokenCount).toBe(countTokens(system) + countTokens(prompt));
  });

  it('generateContentStream assembles the same text with usage on the last chunk', async () => {
    const whole = await ai.models.generateContent({ model: 'gemini-2.5-flash', contents: prompt });
    const stream = await ai.models.generateContentStream({ model: 'gemini-2.5-flash', contents: prompt });
    let text = '';
    let chunks = 0;
    let last: { usage: unknown; finish: unknown } = { usage: undefined, finish: undefined };
    for await (const chunk of stream) {
      chunks++;
      text += chunk.text ?? '';
      last = { usage: chunk.usageMetadata, finish: chunk.candidates?.[0]?.finishReason };
    }
    expect(seen[1]).toBe('/gemini/v1/models/gemini-2.5-flash:streamGenerateContent?alt=sse');
    expect(chunks).toBeGreaterThan(3);
    expect(text).toBe(whole.text);
    expect(last.finish).toBe('STOP');
    expect(last.usage).toMatchObject({
      promptTokenCount: whole.usageMetadata?.promptTokenCount,
      candidatesTokenCount: whole.usageMetadata?.candidatesTokenCount,
      totalTokenCount: whole.usageMetadata?.totalTokenCount,
    });
  });

  it('counts 258 tokens per inline image and describes it', async () => {
    const parts = [{ text: 'What is in this picture?' }];
    const plain = await ai.models.generateContent({ model: 'gemini-2.0-flash', contents: [{ role: 'user', parts }] });
    const withImage = await ai.models.generateContent({
      model: 'gemini-2.0-flash',
      contents: [{ role: 'user', parts: [...parts, { inlineData: { mimeType: 'image/png', data: PNG_BASE64 } }] }],
    });
    expect((withImage.usageMetadata?.promptTokenCount ?? 0) - (plain.usageMetadata?.promptTokenCount ?? 0)).toBe(GEMINI_IMAGE_TOKENS);
    expect(withImage.usageMetadata?.promptTokensDetails).toEqual([
      { modality: 'TEXT', tokenCount: plain.usageMetadata?.promptTokenCount },
      { modality: 'IMAGE', tokenCount: GEMINI_IMAGE_TOKENS },
    ]);
    expect(withImage.text).toContain(`1 image (image/png, ${PNG_BYTES} bytes)`);
    expect(stub.stats().byProvider.gemini['gemini-2.0-flash']?.billed.images).toBe(1);
  });

  it('serves /v1beta (older clients, REST docs) and unprefixed paths, with ?key= auth', async () => {
    const beta = new GoogleGenAI({ apiKey: 'test', httpOptions: { baseUrl: `${stub.url}/gemini`, apiVersion: 'v1beta', fetch: recordingFetch } });
    const r = await beta.models.generateContent({ model: 'gemini-1.5-flash', contents: 'hello' });
    expect(seen).toEqual(['/gemini/v1beta/models/gemini-1.5-flash:generateContent']);
    expect(r.text).toMatch(/^Stub reply \(gemini\/gemini-1\.5-flash\)/);

    const bare = await postJson(`${stub.url}/v1beta/models/gemini-1.5-flash:generateContent?key=abc`, { contents: [{ parts: [{ text: 'hello' }] }] });
    expect(bare.status).toBe(200);
    expect(bare.json).toMatchObject({ candidates: [{ content: { parts: [{ text: r.text }] } }] });
  });

  it('answers streamGenerateContent without alt=sse as one JSON array', async () => {
    const r = await postJson(`${stub.url}/gemini/v1/models/gemini-2.0-flash:streamGenerateContent`, { contents: [{ parts: [{ text: 'hello' }] }] }, { 'x-goog-api-key': 'k' });
    expect(r.status).toBe(200);
    expect(Array.isArray(r.json)).toBe(true);
    const chunks = r.json as Array<{ candidates: Array<{ content: { parts: Array<{ text: string }> } }> }>;
    expect(chunks.map((c) => c.candidates[0]?.content.parts[0]?.text).join('')).toMatch(/^Stub reply \(gemini\/gemini-2\.0-flash\): You said: "hello"\./);
  });

  it('rejects missing contents with INVALID_ARGUMENT and a missing key with 401', async () => {
    const url = `${stub.url}/gemini/v1/models/gemini-2.0-flash:generateContent`;
    const empty = await postJson(url, {}, { 'x-goog-api-key': 'k' });
    expect(empty.status).toBe(400);
    expect(empty.json).toMatchObject({ error: { code: 400, status: 'INVALID_ARGUMENT' } });

    const noKey = await postJson(url, { contents: [{ parts: [{ text: 'hi' }] }] });
    expect(noKey.status).toBe(401);
    expect(noKey.json).toMatchObject({ error: { code: 401, status: 'UNAUTHENTICATED' } });
    expect(stub.stats().byProvider.gemini['gemini-2.0-flash']).toMatchObject({ requests: 2, rejected: 2, successes: 0 });
  });
});

describe('Google Search grounding through @google/genai', () => {
  const question = 'Who won the 2026 regional robotics final?';

  it('a googleSearch call answers with groundingMetadata in the real shape, and counts the searches', async () => {
    const res = await ai.models.generateContent({ model: 'gemini-2.0-flash', contents: question, config: { tools: [{ googleSearch: {} }] } });
    const meta = res.candidates?.[0]?.groundingMetadata;
    expect(meta?.webSearchQueries).toEqual([question, `${question} explained`]);
    expect(meta?.groundingChunks).toHaveLength(3);
    for (const c of meta?.groundingChunks ?? []) {
      expect(c.web?.uri).toMatch(/^https:\/\/vertexaisearch\.cloud\.google\.com\/grounding-api-redirect\//);
      expect(c.web?.title).toMatch(/\.example\.com$/);
    }
    const text = res.text ?? '';
    const supports = meta?.groundingSupports ?? [];
    expect(supports.length).toBeGreaterThan(1);
    for (const s of supports) {
      // Offsets are bytes into the answer text, and the segment text is what they cover.
      expect(Buffer.from(text).subarray(s.segment!.startIndex ?? 0, s.segment!.endIndex).toString()).toBe(s.segment!.text);
      expect(s.groundingChunkIndices!.length).toBe(s.confidenceScores!.length);
    }
    expect(meta?.searchEntryPoint?.renderedContent).toContain('<a class="chip" href="https://www.google.com/search?q=Who%20won');
    expect(stub.stats().byProvider.gemini['gemini-2.0-flash']?.billed).toMatchObject({ searchQueries: 2, groundedPrompts: 1 });
  });

  it('streams the metadata on the last chunk', async () => {
    const stream = await ai.models.generateContentStream({ model: 'gemini-2.0-flash', contents: question, config: { tools: [{ googleSearch: {} }] } });
    const metas: unknown[] = [];
    for await (const chunk of stream) metas.push(chunk.candidates?.[0]?.groundingMetadata);
    expect(metas.slice(0, -1).every((m) => m === undefined)).toBe(true);
    expect((metas.at(-1) as { webSearchQueries?: string[] }).webSearchQueries).toHaveLength(2);
  });

  it('a grounded call that decides not to search has no queries and bills none; an ungrounded call has no metadata', async () => {
    const none = await ai.models.generateContent({ model: 'gemini-2.0-flash', contents: 'hi there [no-search]', config: { tools: [{ googleSearch: {} }] } });
    expect(none.candidates?.[0]?.groundingMetadata?.webSearchQueries).toBeUndefined();
    const plain = await ai.models.generateContent({ model: 'gemini-2.0-flash', contents: question });
    expect(plain.candidates?.[0]?.groundingMetadata).toBeUndefined();
    expect(stub.stats().byProvider.gemini['gemini-2.0-flash']?.billed).toMatchObject({ searchQueries: 0, groundedPrompts: 0 });
  });
});
