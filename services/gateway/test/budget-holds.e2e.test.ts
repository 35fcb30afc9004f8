import OpenAI from 'openai';
import { BudgetStore, heldMicros, LedgerReader, ledgerKeys, periodKeys, sweepHolds } from '@tollgate/shared';
import { png1x1 } from '@tollgate/vision/test/images';
import { type Replicas, startReplicas } from './replicas-harness';

// Hard budgets hold across replicas: two gateways, two chat and two vision workers and two
// ledger consumers share one project's hard day budget. Each request holds its worst case at
// admission; the ledger settles it with the real cost.

const LIMIT = 400_000; // $0.40: the load runs into it
const VISION_WORST = 250_000; // the dearest image any quality may reach (gemini)

interface Outcome {
  status: number;
  kind: 'plain' | 'stream' | 'vision';
  refusal?: { spent_micros: number; held_micros: number; limit_micros: number; request_worst_case_micros: number };
  /** What the SDK said, when it is not an HTTP status (a stream that broke off). */
  error?: string;
}

async function projectSpend(sys: Replicas, project: string): Promise<number> {
  const day = periodKeys(Date.now()).day;
  return Number((await sys.redis.hget(ledgerKeys(sys.namespace).day(day), `project:${project}`)) ?? 0);
}

async function projectEntries(sys: Replicas, project: string): Promise<number> {
  // Entries in the running totals too (the ledger writes an entry, then adds it to the totals).
  return new LedgerReader(sys.redis, sys.namespace).appliedCount({ project });
}

/** Waits until the ledger has caught up with `count` entries (the bus is asynchronous). */
async function ledgerHas(sys: Replicas, project: string, count: number): Promise<void> {
  for (let i = 0; i < 200 && (await projectEntries(sys, project)) < count; i++) await new Promise((r) => setTimeout(r, 50));
}

async function heldNow(sys: Replicas, project: string): Promise<number> {
  const held = await heldMicros(sys.redis, sys.namespace, 'project', project, periodKeys(Date.now()));
  return held.day;
}

async function waitHeldZero(sys: Replicas, project: string): Promise<number> {
  let held = await heldNow(sys, project);
  for (let i = 0; i < 200 && held !== 0; i++) {
    await new Promise((r) => setTimeout(r, 50));
    held = await heldNow(sys, project);
  }
  return held;
}

async function refusalOf(res: Response): Promise<Outcome['refusal']> {
  if (res.status !== 402) return undefined;
  const body = (await res.json()) as { error: { code: string; budget: Outcome['refusal'] } };
  expect(body.error.code).toBe('budget_exceeded');
  return body.error.budget;
}

describe('hard budgets under concurrency', () => {
  let sys: Replicas;
  beforeAll(async () => {
    sys = await startReplicas('holds-load');
  });
  afterAll(async () => sys?.close());

  test('100 concurrent clients on two gateways never take the project past its hard limit, and use it up', async () => {
    const project = 'holds-proj';
    await new BudgetStore(sys.redis, sys.namespace).put('project', project, { periods: [{ period: 'day', limit_micros: LIMIT, mode: 'hard' }] });
    const keys = await Promise.all(
      [0, 1, 2, 3].map(async (i) => (await sys.keys.create({ name: `k${i}`, user_id: `holds-user-${i}`, project_id: project, scopes: ['chat', 'vision'] })).key),
    );

    const send = async (client: number, n: number): Promise<Outcome> => {
      const gw = client % 2;
      const kind = (['plain', 'stream', 'vision'] as const)[(client + n) % 3]!;
      if (kind === 'vision') {
        const res = await fetch(`${sys.gateways[gw]!.url}/v1/vision`, {
          method: 'POST',
          headers: { authorization: `Bearer ${keys[client % 4]}`, 'content-type': 'application/json' },
          body: JSON.stringify({ image_base64: png1x1([client % 256, n, 7]).toString('base64'), prompt: `What is in image ${client}-${n}?`, quality: 'standard' }),
        });
        const refusal = await refusalOf(res);
        if (res.status === 200) await res.json();
        return { status: res.status, kind, ...(refusal && { refusal }) };
      }
      const sdk = new OpenAI({ apiKey: keys[client % 4]!, baseURL: `${sys.gateways[gw]!.url}/v1`, maxRetries: 0 });
      const body = { model: 'gpt-4o', messages: [{ role: 'user' as const, content: `Tell me about item ${client}-${n}` }], max_tokens: 60 };
      try {
        if (kind === 'plain') await sdk.chat.completions.create(body);
        else for await (const _ of await sdk.chat.completions.create({ ...body, stream: true })) void _;
        return { status: 200, kind };
      } catch (err) {
        const e = err as { status?: number; error?: { budget?: Outcome['refusal'] } };
        return { status: e.status ?? 0, kind, ...(e.error?.budget && { refusal: e.error.budget }), ...(e.status === undefined && { error: String(err).slice(0, 300) }) };
      }
    };

    // 100 clients, 4 requests each, all at once, over both gateways.
    const outcomes = (await Promise.all(Array.from({ length: 100 }, async (_, c) => {
      const mine: Outcome[] = [];
      for (let n = 0; n < 4; n++) mine.push(await send(c, n));
      return mine;
    }))).flat();

    const served = outcomes.filter((o) => o.status === 200);
    const refused = outcomes.filter((o) => o.status === 402);
    expect([served.length + refused.length, outcomes.filter((o) => o.status !== 200 && o.status !== 402).map((o) => `${o.kind} ${o.status}${o.error ? ` ${o.error}` : ''}`).slice(0, 5)]).toEqual([outcomes.length, []]);
    expect(refused.length).toBeGreaterThan(0);
    expect(served.filter((o) => o.kind === 'stream').length).toBeGreaterThan(0);
    expect(served.filter((o) => o.kind === 'vision').length).toBeGreaterThan(0);
    // Every refusal says why, in numbers that add up past the limit.
    for (const o of refused) {
      expect(o.refusal!.limit_micros).toBe(LIMIT);
      expect(o.refusal!.spent_micros + o.refusal!.held_micros + o.refusal!.request_worst_case_micros).toBeGreaterThan(LIMIT);
    }

    // Then one client alone, chat only, until the budget refuses with nothing else held: what is
    // left then is less than one chat's worst case.
    let last: Outcome | undefined;
    for (let i = 0; i < 1_000; i++) {
      await waitHeldZero(sys, project);
      last = await send(0, 0); // client 0, request 0: plain chat
      if (last.status === 402 && last.refusal!.held_micros === 0) break;
      if (last.status === 200) served.push(last);
    }
    expect(last?.status).toBe(402);
    const chatWorst = last!.refusal!.request_worst_case_micros;

    await ledgerHas(sys, project, served.length);
    const spent = await projectSpend(sys, project);
    expect(await projectEntries(sys, project)).toBe(served.length);
    expect(spent).toBeLessThanOrEqual(LIMIT);
    expect(spent).toBeGreaterThanOrEqual(LIMIT - Math.max(chatWorst, VISION_WORST));
    expect(spent).toBeGreaterThan(LIMIT - chatWorst);
    expect(await waitHeldZero(sys, project)).toBe(0);
  }, 120_000);
});

describe('holds that end without a bill', () => {
  let sys: Replicas;
  beforeAll(async () => {
    sys = await startReplicas('holds-fail', { gateways: 1, chatWorkers: 1, visionWorkers: 0, ledgers: 1, faults: { providers: { gemini: { rate503: 1 }, deepseek: { rate503: 1 }, openai: { rate503: 1 } } } });
  });
  afterAll(async () => sys?.close());

  test('a request that fails at every provider gives its hold back before it is answered', async () => {
    const project = 'holds-fail-proj';
    await new BudgetStore(sys.redis, sys.namespace).put('project', project, { periods: [{ period: 'day', limit_micros: LIMIT, mode: 'hard' }] });
    const { key } = await sys.keys.create({ name: 'f', user_id: 'holds-fail-user', project_id: project, scopes: ['chat'] });
    const res = await fetch(`${sys.gateways[0]!.url}/v1/chat`, {
      method: 'POST',
      headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
      body: JSON.stringify({ message: 'hello', model: 'gpt-4o' }),
    });
    expect(res.status).toBeGreaterThanOrEqual(500);
    expect(Number(res.headers.get('x-tollgate-budget-hold-micros'))).toBeGreaterThan(0);
    expect(await heldNow(sys, project)).toBe(0);
    expect(await projectEntries(sys, project)).toBe(0);
  });
});

describe('holds of requests that died', () => {
  let sys: Replicas;
  beforeAll(async () => {
    // No chat worker at all: the job is never run, as if its worker had been killed for good.
    sys = await startReplicas('holds-dead', { gateways: 1, chatWorkers: 0, visionWorkers: 0, ledgers: 1, deadlineMs: 300, holdMarginMs: 200 });
  });
  afterAll(async () => sys?.close());

  test('expire after the deadline and the margin, and are counted', async () => {
    const project = 'holds-dead-proj';
    await new BudgetStore(sys.redis, sys.namespace).put('project', project, { periods: [{ period: 'day', limit_micros: LIMIT, mode: 'hard' }] });
    const { key } = await sys.keys.create({ name: 'd', user_id: 'holds-dead-user', project_id: project, scopes: ['chat'] });
    const res = await fetch(`${sys.gateways[0]!.url}/v1/chat`, {
      method: 'POST',
      headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
      body: JSON.stringify({ message: 'hello', model: 'gpt-4o-mini' }),
    });
    expect(res.status).toBe(504);
    const held = Number(res.headers.get('x-tollgate-budget-hold-micros'));
    expect(held).toBeGreaterThan(0);
    // Still held: nothing ended the request (this harness runs no periodic sweep).
    expect(await heldNow(sys, project)).toBe(held);
    // Past deadline + margin (the 504 came 2 s after the deadline), the next admission's sweep gives it back and counts it.
    const next = await fetch(`${sys.gateways[0]!.url}/v1/chat`, {
      method: 'POST',
      headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
      body: JSON.stringify({ message: 'hello again', model: 'gpt-4o-mini' }),
    });
    expect(next.status).toBe(504);
    const metrics = await sys.gateways[0]!.metrics.registry.getSingleMetricAsString('tollgate_budget_holds_expired_total');
    expect(metrics).toMatch(/tollgate_budget_holds_expired_total 1\b/);
    // Only the second request's hold remains.
    expect(await heldNow(sys, project)).toBe(Number(next.headers.get('x-tollgate-budget-hold-micros')));
    await new Promise((r) => setTimeout(r, 600));
    expect(await sweepHolds(sys.redis, sys.namespace)).toBe(1);
    expect(await heldNow(sys, project)).toBe(0);
  });
});
