import { price } from '@tollgate/shared';
import { keysMatching } from '@tollgate/shared/src/testing';
import { gif1x1, jpeg1x1, png1x1, pngOfSize, webp1x1 } from '@tollgate/vision/test/images';
import { postJson, postMultipart, startVisionSystem, type VisionSystem } from './vision-harness';

/** POST /v1/vision end to end: real HTTP, real Redis, the vision worker, the stub provider. */

let sys: VisionSystem;
beforeAll(async () => {
  sys = await startVisionSystem('gw-vision');
});
afterAll(async () => {
  await sys.close();
});

const id = (name: string) => ({ 'x-request-id': name });
const perImage = (provider: string, model: string) => price({ provider, model, units: { images: 1 } }, { table: sys.priceTable }).amount_micros;

async function eventsOf(requestId: string) {
  return (await sys.bus.history({ filter: { correlation_id: requestId } })).map((e) => e.event);
}

function dataOf<T extends string>(events: Array<{ type: string; data: unknown }>, type: T): Record<string, any> {
  const found = events.find((e) => e.type === type);
  if (!found) throw new Error(`no ${type} event among ${events.map((e) => e.type).join(', ')}`);
  return found.data as Record<string, any>;
}

const ROOM = png1x1([200, 180, 150]);
const ROOM_PROMPT = 'What kind of room is this?';

test('a PNG at standard quality is answered by DeepSeek and billed 30,000 micros through one usage event', async () => {
  const res = await postMultipart(sys, { image: ROOM, prompt: ROOM_PROMPT, quality: 'standard' }, id('vis-std'));
  expect(res.status).toBe(200);
  expect(res.json).toMatchObject({ provider: 'deepseek', model: 'deepseek-vl2', cached: false, degraded: false, quality: 'standard', request_id: 'vis-std' });
  expect(res.headers.get('x-tollgate-provider')).toBe('deepseek');
  // The stub echoes what it received: one PNG of exactly our size reached the provider.
  expect(res.json.analysis).toMatch(/^Stub reply \(deepseek\/deepseek-vl2\)/);
  expect(res.json.analysis).toContain(`1 image (image/png, ${ROOM.length} bytes)`);
  expect(perImage('deepseek', 'deepseek-vl2')).toBe(30_000);
  expect(res.json.cost).toMatchObject({ micros: 30_000, usd: '0.030000' });

  const events = await eventsOf('vis-std');
  expect(events.map((e) => e.type)).toEqual(['workflow.started', 'usage.recorded', 'vision.analysis_completed', 'workflow.completed']);
  expect(events.every((e) => e.user_id === 'user-v' && e.project_id === 'proj-v' && e.source === 'vision')).toBe(true);
  const usage = dataOf(events, 'usage.recorded');
  expect(usage).toEqual({
    provider: 'deepseek',
    model: 'deepseek-vl2',
    service: 'vision',
    operation: 'vision',
    units: { images: 1 },
    usage_source: 'provider',
    request_id: 'vis-std',
    cached: false,
  });
  expect(price({ provider: usage.provider, model: usage.model, units: usage.units }).amount_micros).toBe(30_000);
  expect(dataOf(events, 'vision.analysis_completed')).toMatchObject({
    provider: 'deepseek',
    model: 'deepseek-vl2',
    cached: false,
    quality: 'standard',
    degraded: false,
    image_sha256: res.json.image_sha256,
  });
  expect(res.json.image_sha256).toMatch(/^[a-f0-9]{64}$/);
  expect(sys.stub.stats().byProvider.deepseek['deepseek-vl2']).toMatchObject({ requests: 1, successes: 1, billed: expect.objectContaining({ images: 1 }) });
  expect(sys.stub.stats().byProvider.gemini).toEqual({});
});

test('the same image and prompt again is served from the cache: cached, zero cost, no provider call, saving recorded', async () => {
  const before = sys.stub.stats().totals.requests;
  const res = await postMultipart(sys, { image: ROOM, prompt: ROOM_PROMPT, quality: 'standard', filename: 'renamed.jpg', declaredType: 'image/jpeg' }, id('vis-hit'));
  expect(res.status).toBe(200);
  expect(res.json).toMatchObject({ provider: 'deepseek', model: 'deepseek-vl2', cached: true, degraded: false });
  expect(res.json.cost).toMatchObject({ micros: 0, usd: '0.000000', avoided: { micros: 30_000, usd: '0.030000' } });
  expect(res.json.analysis).toContain(`1 image (image/png, ${ROOM.length} bytes)`);
  expect(sys.stub.stats().totals.requests).toBe(before);

  const events = await eventsOf('vis-hit');
  expect(events.map((e) => e.type)).toEqual(['workflow.started', 'usage.recorded', 'vision.analysis_completed', 'workflow.completed']);
  expect(dataOf(events, 'usage.recorded')).toMatchObject({
    provider: 'deepseek',
    model: 'deepseek-vl2',
    units: { images: 1 },
    usage_source: 'cache',
    cached: true,
    avoided_micros: 30_000,
  });
  expect(dataOf(events, 'vision.analysis_completed')).toMatchObject({ cached: true, provider: 'deepseek' });

  // Another question about the same image is another analysis, and is paid for.
  const other = await postMultipart(sys, { image: ROOM, prompt: 'Is it tidy?', quality: 'standard' }, id('vis-other-prompt'));
  expect(other.json).toMatchObject({ cached: false, provider: 'deepseek' });
  expect(sys.stub.stats().totals.requests).toBe(before + 1);
});

test('high quality goes to Gemini at 250,000 micros; the JSON base64 body works like multipart', async () => {
  const image = jpeg1x1();
  const res = await postJson(sys, { image_base64: image.toString('base64'), prompt: 'Describe the product.', quality: 'high' }, id('vis-high'));
  expect(res.status).toBe(200);
  expect(res.json).toMatchObject({ provider: 'gemini', model: 'gemini-2.0-flash', cached: false, degraded: false, quality: 'high' });
  expect(res.json.analysis).toContain(`1 image (image/jpeg, ${image.length} bytes)`);
  expect(perImage('gemini', 'gemini-2.0-flash')).toBe(250_000);
  expect(res.json.cost).toMatchObject({ micros: 250_000, usd: '0.250000' });
  const usage = dataOf(await eventsOf('vis-high'), 'usage.recorded');
  expect(usage).toMatchObject({ provider: 'gemini', model: 'gemini-2.0-flash', units: { images: 1 }, cached: false, usage_source: 'provider' });
  expect(price({ provider: usage.provider, model: usage.model, units: usage.units }).amount_micros).toBe(250_000);

  // A data URL is accepted as base64 too, and hits the cache for the same bytes and prompt.
  const again = await postJson(sys, { image_base64: `data:image/jpeg;base64,${image.toString('base64')}`, prompt: 'Describe the product.', quality: 'high' }, id('vis-high-again'));
  expect(again.json).toMatchObject({ provider: 'gemini', cached: true, cost: { micros: 0, avoided: { micros: 250_000 } } });
});

test('a standard answer cached earlier never stands in for a high-quality request', async () => {
  const geminiBefore = sys.stub.stats().byProvider.gemini['gemini-2.0-flash']?.requests ?? 0;
  const res = await postMultipart(sys, { image: ROOM, prompt: ROOM_PROMPT, quality: 'high' }, id('vis-upgrade'));
  expect(res.json).toMatchObject({ provider: 'gemini', cached: false });
  expect(sys.stub.stats().byProvider.gemini['gemini-2.0-flash']!.requests).toBe(geminiBefore + 1);
  // ...while the high-quality answer is good enough for a later standard request.
  const standard = await postMultipart(sys, { image: ROOM, prompt: ROOM_PROMPT }, id('vis-downgrade'));
  expect(standard.json).toMatchObject({ cached: true });
});

test('GIF and WebP are recognised from their bytes, whatever the file is called', async () => {
  const gif = await postMultipart(sys, { image: gif1x1(), prompt: 'What is this?', filename: 'a.png', declaredType: 'image/png' });
  expect(gif.status).toBe(200);
  expect(gif.json.analysis).toContain('(image/gif, 35 bytes)');
  const webp = await postMultipart(sys, { image: webp1x1(), prompt: 'What is this?', filename: 'b.bin', declaredType: 'application/octet-stream' });
  expect(webp.status).toBe(200);
  expect(webp.json.analysis).toContain('(image/webp, 34 bytes)');
});

test('identical requests in flight together are paid for once', async () => {
  sys.stub.setFaults({ latencyMs: 300 });
  try {
    const image = png1x1([1, 2, 3]);
    const before = sys.stub.stats().totals.requests;
    const results = await Promise.all([0, 1, 2].map((i) => postMultipart(sys, { image, prompt: 'Same question' }, id(`vis-dup-${i}`))));
    expect(results.map((r) => r.status)).toEqual([200, 200, 200]);
    expect(results.filter((r) => r.json.cached === false)).toHaveLength(1);
    expect(new Set(results.map((r) => r.json.analysis)).size).toBe(1);
    expect(sys.stub.stats().totals.requests).toBe(before + 1);
  } finally {
    sys.stub.setFaults({});
  }
});

test('rejected uploads get 415/400/413 with clear messages and enqueue nothing', async () => {
  const before = await sys.jobCount();
  const stubBefore = sys.stub.stats().totals.requests;
  const text = Buffer.from('This is a plain text file that someone renamed to photo.png.\n');
  const truncated = ROOM.subarray(0, ROOM.length - 20);

  const renamed = await postMultipart(sys, { image: text, prompt: 'What is this?', filename: 'photo.png', declaredType: 'image/png' });
  const empty = await postMultipart(sys, { image: Buffer.alloc(0), prompt: 'What is this?' });
  const cut = await postMultipart(sys, { image: truncated, prompt: 'What is this?' });
  const huge = await postMultipart(sys, { image: pngOfSize(9 * 1024 * 1024), prompt: 'What is this?' });
  const jsonText = await postJson(sys, { image_base64: text.toString('base64'), prompt: 'What is this?' });
  const jsonHuge = await postJson(sys, { image_base64: pngOfSize(9 * 1024 * 1024).toString('base64'), prompt: 'What is this?' });
  const jsonEmpty = await postJson(sys, { image_base64: '', prompt: 'What is this?' });
  const notBase64 = await postJson(sys, { image_base64: 'not base64 at all!', prompt: 'What is this?' });
  const noPrompt = await postMultipart(sys, { image: ROOM });
  const badQuality = await postJson(sys, { image_base64: ROOM.toString('base64'), prompt: 'x', quality: 'ultra' });
  const url = await postJson(sys, { image_url: 'http://169.254.169.254/latest/meta-data', prompt: 'x' });
  const plainText = await fetch(`${sys.url}/v1/vision`, { method: 'POST', headers: { authorization: `Bearer ${sys.apiKey}`, 'content-type': 'text/plain' }, body: 'hello' });

  expect(renamed.status).toBe(415);
  expect(renamed.json.error).toMatchObject({ code: 'unsupported_media_type', category: 'invalid_request' });
  expect(renamed.json.error.message).toMatch(/not a PNG, JPEG, WebP or GIF image/);
  expect(empty.status).toBe(400);
  expect(empty.json.error.message).toMatch(/empty/);
  expect(cut.status).toBe(400);
  expect(cut.json.error.message).toMatch(/incomplete.*image\/png/);
  expect(huge.status).toBe(413);
  expect(huge.json.error).toMatchObject({ code: 'payload_too_large' });
  expect(huge.json.error.message).toMatch(/8 MB/);
  expect(jsonText.status).toBe(415);
  expect(jsonHuge.status).toBe(413);
  expect(jsonEmpty.status).toBe(400);
  expect(notBase64.status).toBe(400);
  expect(notBase64.json.error.message).toMatch(/base64/);
  expect(noPrompt.status).toBe(400);
  expect(noPrompt.json.error.code).toBe('validation_failed');
  expect(badQuality.status).toBe(400);
  expect(badQuality.json.error.issues.map((i: { path: string }) => i.path)).toEqual(['quality']);
  // No field takes an address: a URL is an unknown field, never fetched.
  expect(url.status).toBe(400);
  expect(plainText.status).toBe(415);

  for (const r of [renamed, empty, cut, huge, jsonText, jsonHuge, jsonEmpty, notBase64, noPrompt]) {
    expect(r.json.error.request_id).toBe(r.headers.get('x-request-id'));
    expect(r.json.error.suggested_actions.length).toBeGreaterThan(0);
    expect(r.text).not.toMatch(/\bat .+\(.+:\d+:\d+\)|node_modules|Error:/);
  }
  expect(await sys.jobCount()).toBe(before);
  expect(sys.stub.stats().totals.requests).toBe(stubBefore);
});

test('a key without the vision scope is refused before the upload is read', async () => {
  const before = await sys.jobCount();
  const { key } = await sys.keys.create({ name: 'chat-only', user_id: 'u2', project_id: 'p2', scopes: ['chat'] });
  const forbidden = await postMultipart({ url: sys.url, apiKey: key }, { image: ROOM, prompt: 'x' });
  expect(forbidden.status).toBe(403);
  expect(forbidden.json.error.message).toMatch(/"vision" scope/);
  const anonymous = await fetch(`${sys.url}/v1/vision`, { method: 'POST', body: new FormData() });
  expect(anonymous.status).toBe(401);
  expect(await sys.jobCount()).toBe(before);
});

test('job progress is reported and the image upload is cleaned up after the job', async () => {
  const res = await postMultipart(sys, { image: png1x1([9, 9, 9]), prompt: 'Progress?' }, id('vis-progress'));
  expect(res.status).toBe(200);
  const [job] = (await sys.queue.getJobs(['completed'])).filter((j) => j.data.request_id === 'vis-progress');
  expect(job!.progress).toEqual({ step: 'completed', percent: 100 });
  expect(job!.returnvalue).toMatchObject({ ok: true, provider: 'deepseek' });
  expect(await keysMatching(sys.redis, `${sys.namespace}:vision:upload:*`)).toEqual([]);
});

describe('recovery and budget', () => {
  let other: VisionSystem | undefined;
  afterEach(async () => {
    await other?.close();
    other = undefined;
  });

  test('DeepSeek failing with 503: Gemini answers, the response names it and only Gemini is billed', async () => {
    other = await startVisionSystem('gw-vision-503', { faults: { providers: { deepseek: { rate503: 1 } } } });
    const res = await postMultipart(other, { image: png1x1(), prompt: 'What room?' }, id('vis-503'));
    expect(res.status).toBe(200);
    expect(res.json).toMatchObject({ provider: 'gemini', model: 'gemini-2.0-flash', fallback_used: true, cached: false });
    expect(res.headers.get('x-tollgate-provider')).toBe('gemini');
    expect(res.json.analysis).toMatch(/^Stub reply \(gemini\/gemini-2\.0-flash\)/);
    expect(res.json.cost.micros).toBe(250_000);

    const events = (await other.bus.history({ filter: { correlation_id: 'vis-503' } })).map((e) => e.event);
    const errors = events.filter((e) => e.type === 'error.occurred').map((e) => e.data as Record<string, any>);
    expect(errors).toEqual([expect.objectContaining({ provider: 'deepseek', category: 'provider_unavailable', strategy: 'fallback_provider', operation: 'vision' })]);
    const usage = events.filter((e) => e.type === 'usage.recorded').map((e) => e.data as Record<string, any>);
    expect(usage).toEqual([expect.objectContaining({ provider: 'gemini', cached: false, units: { images: 1 } })]);
    expect(other.stub.stats().byProvider.deepseek['deepseek-vl2']).toMatchObject({ requests: 1, successes: 0 });
  });

  test('every provider failing ends in one classified error and no usage', async () => {
    other = await startVisionSystem('gw-vision-down', { faults: { rate503: 1 } });
    const res = await postMultipart(other, { image: png1x1(), prompt: 'Anyone?' }, id('vis-down'));
    expect(res.status).toBe(502);
    expect(res.json.error).toMatchObject({ category: 'provider_unavailable', request_id: 'vis-down' });
    const types = (await other.bus.history({ filter: { correlation_id: 'vis-down' } })).map((e) => e.event.type);
    expect(types.at(-1)).toBe('workflow.failed');
    expect(types).not.toContain('usage.recorded');
  });

  test('close to a hard budget, high degrades to standard and the response says so', async () => {
    const asked: string[] = [];
    let near = true;
    other = await startVisionSystem('gw-vision-budget', {
      nearHardBudget: async (user, project) => {
        asked.push(`${user}/${project}`);
        return near;
      },
    });
    const res = await postMultipart(other, { image: png1x1(), prompt: 'Expensive?', quality: 'high' }, id('vis-degraded'));
    expect(res.status).toBe(200);
    expect(res.json).toMatchObject({ provider: 'deepseek', degraded: true, quality: 'high', cost: { micros: 30_000 } });
    expect(asked).toEqual(['user-v/proj-v']);
    const events = (await other.bus.history({ filter: { correlation_id: 'vis-degraded' } })).map((e) => e.event);
    expect(dataOf(events, 'vision.analysis_completed')).toMatchObject({ quality: 'high', degraded: true, provider: 'deepseek' });

    // A high-quality answer already cached is free, so a degraded request still gets it.
    near = false;
    const image = png1x1([0, 128, 0]);
    expect((await postMultipart(other, { image, prompt: 'Expensive?', quality: 'high' })).json).toMatchObject({ provider: 'gemini', degraded: false });
    near = true;
    const hit = await postMultipart(other, { image, prompt: 'Expensive?', quality: 'high' });
    expect(hit.json).toMatchObject({ provider: 'gemini', cached: true, degraded: false, cost: { micros: 0 } });
  });

  test('a smaller configured limit is enforced on both body kinds', async () => {
    other = await startVisionSystem('gw-vision-limit', { maxImageBytes: 50_000 });
    const big = pngOfSize(60_000);
    expect((await postMultipart(other, { image: big, prompt: 'x' })).status).toBe(413);
    expect((await postJson(other, { image_base64: big.toString('base64'), prompt: 'x' })).status).toBe(413);
    expect((await postMultipart(other, { image: pngOfSize(40_000), prompt: 'x' })).status).toBe(200);
  });
});
