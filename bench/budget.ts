/**
 * `pnpm bench budget`: does a hard budget hold across replicas? Two gateways and two chat workers
 * (separate processes, from one build) with the ledger and alerting, one project with a hard day
 * budget of $0.05, 100 concurrent clients (50 per gateway) for 6 s on gpt-4o. Reports what the
 * project was billed against its limit (the overspend ratio), and how many requests were served
 * and refused. Loopback only; bounded in time.
 */
import { randomUUID } from 'node:crypto';
import autocannon from 'autocannon';
import { ApiKeyStore, BudgetStore, createRedis, hashTagged, LedgerReader, ledgerKeys, periodKeys, deleteByPrefix } from '../packages/shared/src';
import { type Proc, start, waitHttp } from './gateway';
import type { SummaryRow } from './summary';

const { build } = require('../scripts/build.js') as { build(options?: { only?: string[] }): Promise<unknown> };
const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const LIMIT = Number(process.env.BENCH_BUDGET_MICROS ?? 50_000);
const DURATION = Number(process.env.BENCH_DURATION_S ?? 6);
const PORTS = { stub: 4310, gateways: [8390, 8391], health: [9390, 9391] };

export async function run(): Promise<SummaryRow[]> {
  const prefix = `bench-budget-${randomUUID().slice(0, 8)}`;
  const ns = hashTagged(prefix);
  const redis = createRedis(REDIS_URL, { name: 'bench-budget' });
  const procs: Proc[] = [];
  const env = {
    TOLLGATE_PREFIX: prefix,
    LOG_LEVEL: 'warn',
    STUB_PORT: String(PORTS.stub),
    RATE_LIMIT_PER_MINUTE: '100000000',
    CHAT_FALLBACK_CHAIN: 'openai:gpt-4o,openai:gpt-4o-mini',
  };
  try {
    await build({ only: ['stub-llm', 'gateway', 'chat-workflow', 'cost-ledger', 'alerting'] });
    procs.push(start('stub', process.execPath, ['packages/stub-llm/dist/index.js'], env));
    PORTS.gateways.forEach((port, i) => procs.push(start(`gateway-${i + 1}`, process.execPath, ['services/gateway/dist/index.js'], { ...env, GATEWAY_PORT: String(port) })));
    PORTS.health.forEach((port, i) =>
      procs.push(start(`chat-workflow-${i + 1}`, process.execPath, ['services/chat-workflow/dist/index.js'], { ...env, HEALTH_PORT: String(port) })),
    );
    for (const service of ['cost-ledger', 'alerting']) procs.push(start(service, process.execPath, [`services/${service}/dist/index.js`], env));
    await waitHttp(`http://127.0.0.1:${PORTS.stub}/healthz`);
    for (const port of PORTS.gateways) await waitHttp(`http://127.0.0.1:${port}/readyz`);
    for (const port of PORTS.health) await waitHttp(`http://127.0.0.1:${port}/readyz`);

    const rows: SummaryRow[] = [];
    const table: Array<Record<string, string | number>> = [];
    // Without max_tokens every gpt-4o request may cost its 4,096-token default cap (~$0.041), so
    // the budget admits about one at a time; with a small max_tokens many fit at once.
    for (const maxTokens of [undefined, 100]) {
      const project = `bench-budget-${maxTokens ?? 'default'}`;
      await new BudgetStore(redis, ns).put('project', project, { periods: [{ period: 'day', limit_micros: LIMIT, mode: 'hard' }] });
      const { key } = await new ApiKeyStore(redis, ns).create({ name: 'bench', user_id: project, project_id: project, scopes: ['chat'] });
      const body = JSON.stringify({
        model: 'gpt-4o',
        messages: [{ role: 'user', content: 'Summarise the benefits of circuit breakers.' }],
        ...(maxTokens && { max_tokens: maxTokens }),
      });
      console.log(`  100 clients (50 per gateway) for ${DURATION}s, max_tokens ${maxTokens ?? 'unset'}, hard day budget ${LIMIT} micros...`);
      const results = await Promise.all(
        PORTS.gateways.map(
          (port) =>
            new Promise<autocannon.Result>((resolve, reject) => {
              autocannon(
                {
                  url: `http://127.0.0.1:${port}/v1/chat/completions`,
                  method: 'POST',
                  headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
                  body,
                  connections: 50,
                  duration: DURATION,
                },
                (err, res) => (err ? reject(err) : resolve(res)),
              );
            }),
        ),
      );
      const served = results.reduce((n, r) => n + r['2xx'], 0);
      const refused = results.reduce((n, r) => n + (r.statusCodeStats?.['402']?.count ?? 0), 0);
      const other = results.reduce((n, r) => n + r.non2xx + r.errors + r.timeouts, 0) - refused;
      // The ledger drains asynchronously: wait until it holds every served request.
      const lk = ledgerKeys(ns);
      for (let i = 0; i < 100 && (await new LedgerReader(redis, ns).appliedCount({ project })) < served; i++) await new Promise((r) => setTimeout(r, 100));
      const entries = await new LedgerReader(redis, ns).count({ project });
      const spent = Number((await redis.hget(lk.day(periodKeys(Date.now()).day), `project:${project}`)) ?? 0);
      const ratio = spent / LIMIT;
      table.push({ max_tokens: maxTokens ?? 'unset', 'limit micros': LIMIT, 'spent micros': spent, 'spent / limit': Number(ratio.toFixed(3)), served, 'refused 402': refused, 'other errors': other, 'ledger entries': entries });
      const what = `max_tokens ${maxTokens ?? 'unset'}`;
      rows.push(
        { benchmark: 'budget', measure: `hard budget spent / limit, 2 gateways x 2 workers, c=100, ${what}`, result: ratio.toFixed(3), target: '<= 1', met: ratio <= 1 },
        { benchmark: 'budget', measure: `served requests in the ledger, ${what}`, result: `${entries}/${served}`, target: 'all', met: entries === served },
      );
    }
    console.table(table);
    return rows;
  } finally {
    for (const p of procs) p.proc.kill('SIGTERM');
    await new Promise((r) => setTimeout(r, 500));
    await deleteByPrefix(redis, ns).catch(() => undefined);
    await redis.quit();
  }
}
