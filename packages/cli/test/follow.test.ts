import { randomUUID } from 'node:crypto';
import { type AlertRecord, alertingKeys, alertRecordSchema, EventBus } from '@tollgate/shared';
import { cliRedis, Follower, lines } from './run-cli';

const { prefix, namespace, redis, cleanup } = cliRedis('follow');
afterAll(cleanup);
// Each test runs the real binary a few times (about 0.6 s per start on an idle machine).
jest.setTimeout(60_000);

/** Appends an alert notice the way the alerting service does (same fields; `alert` is what readers parse). */
async function recordAlert(alert: AlertRecord): Promise<void> {
  const where = alert.kind === 'cost' ? { scope: alert.scope, scope_id: alert.scope_id } : { scope: 'ops', scope_id: 'ops' };
  await redis.xadd(
    alertingKeys(namespace).alertsStream,
    '*',
    ...['kind', alert.kind, 'state', alert.state, 'scope', where.scope, 'scope_id', where.scope_id, 'alert_id', alert.alert_id],
    ...['alert', JSON.stringify(alertRecordSchema.parse(alert))],
  );
}

function costAlert(pct: number, spent: number): AlertRecord {
  return {
    kind: 'cost',
    alert_id: `al_${randomUUID().slice(0, 8)}`,
    fingerprint: `fp-${pct}`,
    state: 'firing',
    scope: 'user',
    scope_id: 'alice',
    period: 'day',
    period_key: '2026-11-25',
    threshold_pct: pct,
    spent_micros: spent,
    limit_micros: 10_000_000,
    hard: true,
    top_contributors: [{ dimension: 'model', key: 'openai/gpt-4o-mini', micros: spent }],
    inhibited_pct: [],
    summary: `user alice: ${pct}% of the day budget (2026-11-25) reached, $${(spent / 1e6).toFixed(6)} of $10.000000.`,
    fired_at: new Date().toISOString(),
  };
}

test('alerts tail: prints what the stream holds with --from-start, then follows; colours only when asked; Ctrl-C ends it cleanly', async () => {
  await recordAlert(costAlert(80, 8_000_000));
  const coloured = new Follower(prefix, ['alerts', 'tail', '--from-start'], { FORCE_COLOR: '1' });
  const json = new Follower(prefix, ['alerts', 'tail', '--json']);
  await Promise.all([coloured.until('stderr', /Following alerts/), json.until('stderr', /Following alerts/)]);
  await coloured.until('stdout', /80% of the day budget/);

  const crossed = costAlert(100, 10_000_000);
  await recordAlert(crossed);
  await Promise.all([coloured.until('stdout', /100% of the day budget/), json.until('stdout', /\n/)]);
  const [a, b] = await Promise.all([coloured.interrupt(), json.interrupt()]);

  expect(a.code).toBe(0);
  const shown = lines(a.stdout);
  expect(shown).toHaveLength(2);
  // Yellow for a warning, red for a used-up budget, both bold; the rest of the line is plain text.
  expect(shown[0]).toContain('\u001b[1m\u001b[33mFIRING');
  expect(shown[1]).toContain('\u001b[1m\u001b[31mFIRING');
  expect(shown[1]).toContain('user alice day 100% hard');
  expect(shown[1]).toContain('user alice: 100% of the day budget (2026-11-25) reached, $10.000000 of $10.000000.');
  expect(shown[1]).toContain('top: model openai/gpt-4o-mini $10.00');

  // Without FORCE_COLOR a pipe gets plain JSON lines, and only what came after the start.
  expect(b.code).toBe(0);
  expect(b.stdout).not.toContain('\u001b[');
  const followed = lines(b.stdout).map((l) => JSON.parse(l) as { stream_id: string; alert: AlertRecord });
  expect(followed).toEqual([{ stream_id: expect.stringMatching(/^\d+-\d+$/), alert: crossed }]);
  expect(lines(b.stderr)).toEqual(['Following alerts; Ctrl-C stops.']);
});

test('events tail: follows only the matching types published after it started', async () => {
  const bus = new EventBus({ redis, prefix: namespace, service: 'chat-workflow' });
  await bus.publish('workflow.started', { workflow: 'chat', job_id: 'before' }, { correlation_id: 'req-0' });

  const tail = new Follower(prefix, ['events', 'tail', '--type', 'workflow.*', '--json']);
  await tail.until('stderr', /Following events of type workflow\.\*/);
  await bus.publish('workflow.started', { workflow: 'chat', job_id: 'j1' }, { correlation_id: 'req-1', user_id: 'alice' });
  await bus.publish('chat.message_received', { conversation_id: 'c1', message_chars: 5, history_messages: 0 }, { correlation_id: 'req-1' });
  await bus.publish('workflow.completed', { workflow: 'chat', job_id: 'j1', duration_ms: 30 }, { correlation_id: 'req-1' });
  await tail.until('stdout', /workflow\.completed/);
  const result = await tail.interrupt();

  expect(result.code).toBe(0);
  const events = lines(result.stdout).map((l) => JSON.parse(l) as { stream_id: string; event: { type: string; data: { job_id?: string }; user_id?: string } });
  expect(events.map((e) => [e.event.type, e.event.data.job_id])).toEqual([
    ['workflow.started', 'j1'],
    ['workflow.completed', 'j1'],
  ]);
  expect(events[0]!.event.user_id).toBe('alice');
});
