import { randomUUID } from 'node:crypto';
import {
  BudgetStore,
  chatExperiment,
  EventBus,
  ExposureLog,
  FlagEngine,
  FlagStore,
  featureSchema,
  publishFlagChanges,
  PRODUCT_FLAGS,
  requestFlagContext,
} from '@tollgate/shared';
import { waitFor } from '@tollgate/shared/src/testing';
import { png1x1 } from '@tollgate/vision/test/images';
import { call, type FlagSystem, startFlagSystem } from './flags-harness';

let sys: FlagSystem;
beforeAll(async () => {
  sys = await startFlagSystem('flags-e2e');
});
afterAll(() => sys.close());

const EXPERIMENT = {
  type: 'experiment',
  enabled: true,
  strategies: [{ name: 'flexibleRollout', parameters: { rollout: '100', stickiness: 'default' } }],
  variants: [
    { name: 'control', weight: 500, stickiness: 'default' },
    { name: 'openai', weight: 300, stickiness: 'default', payload: { type: 'json', value: '{"chain":["openai:gpt-4o-mini","gemini:gemini-2.0-flash"]}' } },
    { name: 'deepseek', weight: 200, stickiness: 'default', payload: { type: 'json', value: '{"model":"deepseek-chat"}' } },
  ],
};
const PROVIDER_OF: Record<string, string> = { control: 'gemini', openai: 'openai', deepseek: 'deepseek' };

async function userKey(user: string, scopes: Array<'chat' | 'vision' | 'costs' | 'admin'> = ['chat', 'vision']) {
  return (await sys.keys.create({ name: user, user_id: user, project_id: 'proj-f', scopes })).key;
}

describe('admin API', () => {
  test('create, read, update, enable/disable, delete; every change in the history with who, before and after', async () => {
    const created = await call(sys, 'PUT', '/v1/flags/checkout.new', { type: 'release', enabled: false, strategies: [{ name: 'flexibleRollout', parameters: { rollout: '25' } }] });
    expect(created.status).toBe(201);
    // As the Unleash server does, the rollout is grouped by the flag's name.
    expect(created.json.flag).toMatchObject({ name: 'checkout.new', enabled: false, stale: false, expected_lifetime_days: 40, strategies: [{ parameters: { rollout: '25', groupId: 'checkout.new' } }] });
    expect((await call(sys, 'GET', '/v1/flags/checkout.new')).json).toMatchObject({ name: 'checkout.new', meta: { updated_by: 'operator' } });
    const same = await call(sys, 'PUT', '/v1/flags/checkout.new', { type: 'release', enabled: false, strategies: [{ name: 'flexibleRollout', parameters: { rollout: '25' } }] });
    expect(same).toMatchObject({ status: 200, json: { changed: false } });
    expect((await call(sys, 'POST', '/v1/flags/checkout.new/enable')).json).toMatchObject({ changed: true, flag: { enabled: true } });
    expect((await call(sys, 'POST', '/v1/flags/checkout.new/disable')).json).toMatchObject({ changed: true, flag: { enabled: false } });
    expect((await call(sys, 'DELETE', '/v1/flags/checkout.new')).status).toBe(204);
    expect((await call(sys, 'GET', '/v1/flags/checkout.new')).json.error).toMatchObject({ code: 'not_found' });
    const history = (await call(sys, 'GET', '/v1/flags/checkout.new/history')).json.changes as Array<Record<string, any>>;
    expect(history.map((h) => [h.action, h.before?.enabled ?? null, h.after?.enabled ?? null, h.actor])).toEqual([
      ['deleted', false, null, 'operator'],
      ['updated', true, false, 'operator'],
      ['updated', false, true, 'operator'],
      ['created', null, false, 'operator'],
    ]);
    // The same audit went out on the bus, with flags.changed for the snapshots.
    const events = await sys.bus.history({ types: ['flag.changed', 'flags.changed'] });
    const audit = events.filter((e) => e.event.type === 'flag.changed' && e.event.data.name === 'checkout.new');
    expect(audit).toHaveLength(4);
    expect(events.filter((e) => e.event.type === 'flags.changed').length).toBeGreaterThanOrEqual(4);
  });

  test('names with UTF-8 and reserved URL characters round-trip when percent-encoded', async () => {
    for (const name of ['Feature.UTF-8.😊_φriend_你好', 'team/checkout?v=2#x']) {
      const path = `/v1/flags/${encodeURIComponent(name)}`;
      expect((await call(sys, 'PUT', path, { enabled: true })).status).toBe(201);
      expect((await call(sys, 'GET', path)).json).toMatchObject({ name, enabled: true });
      expect((await call(sys, 'POST', '/v1/flags/evaluate', { flag: name })).json).toMatchObject({ enabled: true, reason: 'STATIC' });
      expect((await call(sys, 'DELETE', path)).status).toBe(204);
    }
  });

  test('a change written elsewhere (the CLI, another gateway) reaches this gateway within a second', async () => {
    const store = new FlagStore(sys.redis, sys.namespace);
    const result = await store.apply('cli:ops', () => ({ put: [featureSchema.parse({ name: 'elsewhere', enabled: true })] }));
    await publishFlagChanges(new EventBus({ redis: sys.redis, prefix: sys.namespace, service: 'tollgate-cli' }), result, 'cli:ops');
    expect(await waitFor(() => sys.snapshots.gateway.evaluate('elsewhere').enabled, 1_000)).toBe(true);
    expect((await call(sys, 'POST', '/v1/flags/evaluate', { flag: 'elsewhere' })).json).toMatchObject({ enabled: true, snapshot_version: result.version });
  });

  test('bad input is refused with a code; only admins reach the flags', async () => {
    expect((await call(sys, 'PUT', '/v1/flags/x', { enabled: 'yes' })).json.error.code).toBe('validation_failed');
    expect((await call(sys, 'PUT', '/v1/flags/x', { name: 'y', enabled: true })).json.error.code).toBe('invalid_request');
    expect((await call(sys, 'PUT', '/v1/flags/import', { enabled: true })).json.error.code).toBe('invalid_request');
    expect((await call(sys, 'PUT', '/v1/flags/self', { enabled: true, dependencies: [{ feature: 'self' }] })).status).toBe(400);
    expect((await call(sys, 'PUT', '/v1/flags/import?format=yaml', { version: 1, features: [] })).json.error.code).toBe('invalid_request');
    expect((await call(sys, 'POST', '/v1/flags/evaluate', { flag: 'nope' })).status).toBe(404);
    const warned = await call(sys, 'PUT', '/v1/flags/odd', { enabled: true, strategies: [{ name: 'custom', constraints: [{ contextName: 'a', operator: 'NEW_OP', values: ['1'] }], segments: [77] }] });
    expect(warned.json.warnings).toHaveLength(3);
    const user = await userKey('plain-user', ['chat', 'vision', 'costs']);
    for (const [method, path] of [['GET', '/v1/flags'], ['GET', '/v1/flags/odd'], ['PUT', '/v1/flags/odd'], ['POST', '/v1/flags/evaluate'], ['DELETE', '/v1/flags/odd']]) {
      expect((await call(sys, method!, path!, method === 'GET' || method === 'DELETE' ? undefined : { enabled: false, flag: 'odd' }, user)).status).toBe(403);
    }
    expect((await call(sys, 'GET', '/v1/flags/odd')).json.enabled).toBe(true);
  });

  test('an Unleash export imports as is; replace=true removes the flags it does not name; evaluate answers in Unleash terms', async () => {
    await call(sys, 'PUT', '/v1/flags/legacy.flag', { enabled: true });
    const doc = {
      version: 2,
      segments: [{ id: 1, name: 'beta-testers', constraints: [{ contextName: 'userId', operator: 'IN', values: ['ann', 'bo'] }] }],
      features: [
        { name: 'beta.ui', type: 'release', enabled: true, strategies: [{ name: 'default', segments: [1] }] },
        {
          name: 'pricing.test',
          type: 'experiment',
          enabled: true,
          strategies: [{ name: 'flexibleRollout', parameters: { rollout: '100', stickiness: 'default', groupId: 'pricing.test' }, constraints: [{ contextName: 'appVersion', operator: 'SEMVER_GTE', value: '2.0.0', values: [] }] }],
          variants: [{ name: 'cheap', weight: 1000, stickiness: 'default', payload: { type: 'string', value: 'low' } }],
        },
        { name: 'old.ops', type: 'operational', enabled: true, createdAt: '2020-01-01T00:00:00.000Z', strategies: [] },
      ],
    };
    const imported = await call(sys, 'PUT', '/v1/flags/import?format=unleash&replace=true', doc);
    expect(imported.json).toMatchObject({ created: 3, deleted: expect.any(Number), warnings: [] });
    const list = (await call(sys, 'GET', '/v1/flags')).json;
    expect(list.flags.map((f: { name: string }) => f.name)).toEqual(['beta.ui', 'old.ops', 'pricing.test']);
    expect(list.segments).toMatchObject([{ id: 1 }]);
    expect((await call(sys, 'GET', '/v1/flags?stale=true')).json.flags.map((f: { name: string }) => f.name)).toEqual(['old.ops']);

    const evaluate = (flag: string, context: unknown) => call(sys, 'POST', '/v1/flags/evaluate', { flag, context });
    expect((await evaluate('beta.ui', { userId: 'ann' })).json).toMatchObject({ enabled: true, reason: 'TARGETING_MATCH', variant: { name: 'disabled', enabled: false, feature_enabled: true } });
    expect((await evaluate('beta.ui', { userId: 'zed' })).json).toMatchObject({ enabled: false, reason: 'DEFAULT' });
    expect((await evaluate('pricing.test', { userId: 'u1', properties: { appVersion: '2.1.0' } })).json).toEqual({
      enabled: true,
      variant: { name: 'cheap', enabled: true, feature_enabled: true, payload: { type: 'string', value: 'low' } },
      reason: 'SPLIT',
      snapshot_version: expect.any(Number),
    });
    expect((await evaluate('pricing.test', { userId: 'u1', properties: { appVersion: '1.9.0' } })).json).toMatchObject({ enabled: false });
    expect((await call(sys, 'GET', '/v1/flags/history?limit=5')).json.changes).toHaveLength(5);
  });
});

describe('flags in the product', () => {
  test('the vision high kill switch flipped through the API reaches the running worker within a second and degrades high to standard, and back', async () => {
    const key = await userKey('vision-user');
    const ask = (rgb: [number, number, number]) =>
      fetch(`${sys.url}/v1/vision`, {
        method: 'POST',
        headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
        body: JSON.stringify({ image_base64: png1x1(rgb).toString('base64'), prompt: 'What is it?', quality: 'high' }),
      }).then((r) => r.json() as Promise<Record<string, unknown>>);
    expect(await ask([1, 2, 3])).toMatchObject({ provider: 'gemini', degraded: false, quality: 'high' });

    await call(sys, 'PUT', `/v1/flags/${PRODUCT_FLAGS.visionHighKill}`, { type: 'kill-switch', enabled: true, strategies: [{ name: 'default' }] });
    expect(await waitFor(() => sys.snapshots.vision.evaluate(PRODUCT_FLAGS.visionHighKill).enabled, 1_000)).toBe(true);
    expect(await ask([4, 5, 6])).toMatchObject({ provider: 'deepseek', model: 'deepseek-vl2', degraded: true, quality: 'high' });

    await call(sys, 'POST', `/v1/flags/${PRODUCT_FLAGS.visionHighKill}/disable`);
    expect(await waitFor(() => !sys.snapshots.vision.evaluate(PRODUCT_FLAGS.visionHighKill).enabled, 1_000)).toBe(true);
    expect(await ask([7, 8, 9])).toMatchObject({ provider: 'gemini', degraded: false });
  });

  test('the grounding kill switch answers grounded requests without a search, marked degraded, until it is off again', async () => {
    const key = await userKey('ground-user');
    const ask = async () => {
      const res = await fetch(`${sys.url}/v1/chat`, { method: 'POST', headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' }, body: JSON.stringify({ message: `Who won the match ${randomUUID()}?`, grounding: true }) });
      return { status: res.status, body: (await res.json()) as Record<string, unknown> };
    };
    const before = await ask();
    expect(before.status).toBe(200);
    expect(before.body.grounding).toBeDefined();
    expect(before.body.degraded).toBeUndefined();

    await call(sys, 'PUT', `/v1/flags/${PRODUCT_FLAGS.groundingKill}`, { type: 'kill-switch', enabled: true });
    expect(await waitFor(() => sys.snapshots.gateway.evaluate(PRODUCT_FLAGS.groundingKill).enabled, 1_000)).toBe(true);
    const killed = await ask();
    expect(killed.status).toBe(200);
    expect(killed.body).toMatchObject({ degraded: true, degraded_reason: 'grounding_disabled' });
    expect(killed.body.grounding).toBeUndefined();
    const searches = (await sys.bus.history({ types: 'rag.context_retrieved' })).filter((e) => e.event.correlation_id === killed.body.request_id);
    expect(searches).toHaveLength(0);
    // The OpenAI-compatible API too: no search, said in a header, the body stays OpenAI's.
    const compat = await fetch(`${sys.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'gemini-2.0-flash', messages: [{ role: 'user', content: `Latest news ${randomUUID()}?` }], web_search_options: {} }),
    });
    expect(compat.status).toBe(200);
    expect(compat.headers.get('x-tollgate-degraded')).toBe('grounding_disabled');
    const compatBody = (await compat.json()) as { tollgate: { grounding?: unknown; request_id: string } };
    expect(compatBody.tollgate.grounding).toBeUndefined();
    expect((await sys.bus.history({ types: 'rag.context_retrieved' })).filter((e) => e.event.correlation_id === compatBody.tollgate.request_id)).toHaveLength(0);

    await call(sys, 'DELETE', `/v1/flags/${PRODUCT_FLAGS.groundingKill}`);
    expect(await waitFor(() => sys.snapshots.gateway.evaluate(PRODUCT_FLAGS.groundingKill).error_code === 'FLAG_NOT_FOUND', 1_000)).toBe(true);
    expect((await ask()).body.grounding).toBeDefined();
  });

  test('while the experiment is on, a budget hold covers the dearest target any variant may use', async () => {
    const flag = `/v1/flags/${PRODUCT_FLAGS.chatProviderExperiment}`;
    await call(sys, 'DELETE', flag);
    const user = 'hold-user';
    const key = await userKey(user);
    await new BudgetStore(sys.redis, sys.namespace).put('user', user, { periods: [{ period: 'day', limit_micros: 50_000_000, mode: 'hard' }] });
    const hold = async () => {
      const res = await fetch(`${sys.url}/v1/chat`, { method: 'POST', headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' }, body: JSON.stringify({ message: 'hi' }) });
      expect(res.status).toBe(200);
      return Number(res.headers.get('x-tollgate-budget-hold-micros'));
    };
    const plain = await hold();
    // The dear variant has weight 0, so this caller gets control; the hold still covers gpt-4o.
    await call(sys, 'PUT', flag, {
      ...EXPERIMENT,
      variants: [
        { name: 'control', weight: 1000, stickiness: 'default' },
        { name: 'dear', weight: 0, stickiness: 'default', payload: { type: 'json', value: '{"model":"gpt-4o"}' } },
      ],
    });
    const covered = await hold();
    expect(plain).toBeGreaterThan(0);
    expect(covered).toBeGreaterThan(plain * 10);
    await call(sys, 'DELETE', flag);
  });

  test('the chat experiment routes each user to its variant\'s provider and publishes one exposure per user', async () => {
    const put = await call(sys, 'PUT', `/v1/flags/${PRODUCT_FLAGS.chatProviderExperiment}`, EXPERIMENT);
    expect(put.status).toBe(201);
    expect(await waitFor(() => sys.snapshots.gateway.evaluate(PRODUCT_FLAGS.chatProviderExperiment).enabled, 1_000)).toBe(true);

    const users = Array.from({ length: 24 }, (_, i) => `exp-user-${i}`);
    const seen = new Map<string, string>();
    for (const user of users) {
      const key = await userKey(user);
      for (let turn = 0; turn < 2; turn++) {
        const res = await fetch(`${sys.url}/v1/chat`, { method: 'POST', headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' }, body: JSON.stringify({ message: 'hi' }) });
        const body = (await res.json()) as { provider: string };
        const variant = sys.snapshots.gateway.evaluate(PRODUCT_FLAGS.chatProviderExperiment, requestFlagContext({ user_id: user, project_id: 'proj-f' })).variant.name;
        expect(body.provider).toBe(PROVIDER_OF[variant]);
        seen.set(user, variant);
      }
    }
    expect(new Set(seen.values()).size).toBe(3);
    // A client naming a model is outside the experiment.
    const named = await fetch(`${sys.url}/v1/chat`, { method: 'POST', headers: { authorization: `Bearer ${await userKey('exp-user-0')}`, 'content-type': 'application/json' }, body: JSON.stringify({ message: 'hi', model: 'gemini-2.0-flash' }) });
    expect(((await named.json()) as { provider: string }).provider).toBe('gemini');

    const ours = async () =>
      (await sys.bus.history({ types: 'flag.exposed' })).map((e) => (e.event.type === 'flag.exposed' ? e.event : undefined)!).filter((e) => e.data.subject.startsWith('exp-user-'));
    await waitFor(async () => (await ours()).length >= users.length, 2_000);
    const exposures = await ours();
    expect(exposures.map((e) => e.data.subject).sort()).toEqual([...users].sort());
    for (const e of exposures) {
      expect(e.data).toMatchObject({ flag: PRODUCT_FLAGS.chatProviderExperiment, variant: seen.get(e.data.subject), feature_enabled: true });
      expect(e.user_id).toBe(e.data.subject);
    }
  });
});

test('the chat experiment splits 10,000 users by its weights, and each user is exposed once', async () => {
  const engine = new FlagEngine({ features: [featureSchema.parse({ name: PRODUCT_FLAGS.chatProviderExperiment, ...EXPERIMENT, strategies: [{ name: 'flexibleRollout', parameters: { rollout: '100', stickiness: 'default', groupId: PRODUCT_FLAGS.chatProviderExperiment } }] })], segments: [] });
  const ns = `${sys.namespace}:split`;
  const bus = new EventBus({ redis: sys.redis, prefix: ns, service: 'chat-workflow', maxLen: 100_000 });
  const log = new ExposureLog(sys.redis, ns, bus);
  const counts: Record<string, number> = { control: 0, openai: 0, deepseek: 0 };
  const users = Array.from({ length: 10_000 }, () => randomUUID());
  let published = 0;
  for (let pass = 0; pass < 2; pass++) {
    for (let i = 0; i < users.length; i += 500) {
      const results = await Promise.all(
        users.slice(i, i + 500).map((u) => {
          const a = chatExperiment(engine, requestFlagContext({ user_id: u, project_id: 'p' }))!;
          if (pass === 0) counts[a.variant]!++;
          return log.record(a.flag, a.variant, u, true, { correlation_id: `r-${u}` });
        }),
      );
      published += results.filter(Boolean).length;
    }
  }
  expect(published).toBe(10_000);
  expect(await sys.redis.xlen(bus.stream)).toBe(10_000);
  // Binomial standard deviation over 10,000 users: about 50 for 50%, 46 for 30%, 40 for 20%; 4 sd allowed.
  for (const [variant, weight] of [['control', 0.5], ['openai', 0.3], ['deepseek', 0.2]] as const) {
    const sd = Math.sqrt(10_000 * weight * (1 - weight));
    expect(Math.abs(counts[variant]! - 10_000 * weight)).toBeLessThan(4 * sd);
  }
});
