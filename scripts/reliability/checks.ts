/**
 * What the reliability suite asserts once the system has settled. Each check reads what the run
 * left behind (outcomes, the stub's billed calls, the ledger, the alerts stream, the bus history)
 * and returns a verdict with the numbers behind it.
 */
import {
  type AlertRecord,
  type AnyEvent,
  ERROR_CATEGORIES,
  type LedgerEntry,
  periodKeys,
  price,
  reachedPct,
} from '../../packages/shared/src';
import type { BilledCall } from '../../packages/stub-llm/src';
import type { Outcome } from './load';

export interface CheckResult {
  name: string;
  ok: boolean;
  detail: string;
  /** Up to a few examples of what went wrong. */
  problems?: string[];
}

const MAX_PROBLEMS = 8;
const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const examples = (list: string[]) => (list.length > MAX_PROBLEMS ? [...list.slice(0, MAX_PROBLEMS), `... and ${list.length - MAX_PROBLEMS} more`] : list);

export function result(name: string, problems: string[], detail: string): CheckResult {
  return { name, ok: problems.length === 0, detail, ...(problems.length > 0 && { problems: examples(problems) }) };
}

// ---------------------------------------------------------------------------------------------
// Outcomes

export interface OutcomeSummary {
  sent: number;
  replies: number;
  errors: Record<string, number>;
  transport: number;
  timedOut: number;
  badShape: number;
  p50: number;
  p99: number;
  max: number;
}

/** A reply for the request it answers, or the standard error shape with a known category. */
function shapeProblem(o: Outcome): string | null {
  const body = o.body;
  if (o.status === undefined) return null;
  if (o.status >= 200 && o.status < 300) {
    if (!isRecord(body)) return 'a 2xx without a JSON body';
    if (o.kind === 'chat' && typeof body.reply !== 'string') return 'a chat 2xx without `reply`';
    if (o.kind === 'vision' && typeof body.analysis !== 'string') return 'a vision 2xx without `analysis`';
    if (body.request_id !== o.id) return `a 2xx for request id ${String(body.request_id)}`;
    return null;
  }
  const error = isRecord(body) ? body.error : undefined;
  if (!isRecord(error)) return `HTTP ${o.status} without the error shape: ${JSON.stringify(body).slice(0, 200)}`;
  if (typeof error.code !== 'string' || typeof error.message !== 'string' || !Array.isArray(error.suggested_actions)) {
    return `HTTP ${o.status} error without code/message/suggested_actions`;
  }
  if (!(ERROR_CATEGORIES as readonly string[]).includes(String(error.category))) return `HTTP ${o.status} with unknown category ${String(error.category)}`;
  if (error.request_id !== o.id) return `HTTP ${o.status} error for request id ${String(error.request_id)}`;
  return null;
}

export function summarizeOutcomes(outcomes: Outcome[], sent: number): OutcomeSummary {
  const errors: Record<string, number> = {};
  let replies = 0;
  let badShape = 0;
  for (const o of outcomes) {
    if (shapeProblem(o)) badShape++;
    if (o.status === undefined) continue;
    if (o.status < 300) replies++;
    else {
      const e = isRecord(o.body) && isRecord(o.body.error) ? o.body.error : {};
      const label = `${o.status} ${String(e.category ?? '?')}/${String(e.code ?? '?')}`;
      errors[label] = (errors[label] ?? 0) + 1;
    }
  }
  const latencies = outcomes.map((o) => o.doneAt - o.sentAt).sort((a, b) => a - b);
  const pct = (p: number) => latencies[Math.min(latencies.length - 1, Math.floor((latencies.length * p) / 100))] ?? 0;
  return {
    sent,
    replies,
    errors,
    transport: outcomes.filter((o) => o.transportError).length,
    timedOut: outcomes.filter((o) => o.timedOut).length,
    badShape,
    p50: pct(50),
    p99: pct(99),
    max: latencies[latencies.length - 1] ?? 0,
  };
}

export function checkOutcomes(outcomes: Outcome[], sent: number, deadlineMs: number): CheckResult {
  const problems: string[] = [];
  const byId = new Map<string, number>();
  for (const o of outcomes) byId.set(o.id, (byId.get(o.id) ?? 0) + 1);
  if (outcomes.length !== sent) problems.push(`${sent} requests sent but ${outcomes.length} outcomes recorded`);
  for (const [id, n] of byId) if (n !== 1) problems.push(`request ${id} has ${n} outcomes`);
  for (const o of outcomes) {
    if (o.timedOut) problems.push(`request ${o.id} (${o.kind}) got no answer within the client deadline (${Math.round((o.doneAt - o.sentAt) / 1000)} s)`);
    else if (o.transportError) problems.push(`request ${o.id} (${o.kind}) failed at the transport: ${o.transportError}`);
    else {
      const shape = shapeProblem(o);
      if (shape) problems.push(`request ${o.id} (${o.kind}): ${shape}`);
      // The gateway answers at the latest at its deadline plus its 2 s margin; allow scheduling slack.
      else if (o.doneAt - o.sentAt > deadlineMs + 5_000) problems.push(`request ${o.id} answered after ${o.doneAt - o.sentAt} ms, past its deadline`);
    }
  }
  const s = summarizeOutcomes(outcomes, sent);
  return result(
    'every request has exactly one outcome (reply or classified error), none past its deadline',
    problems,
    `${sent} sent: ${s.replies} replies, ${outcomes.length - s.replies - s.transport - s.timedOut} classified errors, ${s.transport} transport failures, ${s.timedOut} hung; latency p50 ${s.p50} ms, p99 ${s.p99} ms, max ${s.max} ms`,
  );
}

// ---------------------------------------------------------------------------------------------
// Money: the stub's billed calls against the ledger, request by request

/** One billed unit set, as the ledger prices it: tokens for text, images for vision (per image). */
function signature(provider: string, modelKey: string, units: { input_tokens?: number; output_tokens?: number; images?: number }): string {
  return (units.images ?? 0) > 0
    ? `${provider} ${modelKey} images=${units.images}`
    : `${provider} ${modelKey} in=${units.input_tokens ?? 0} out=${units.output_tokens ?? 0}`;
}

/** A SIGKILL of a worker that calls providers: chat-workflow makes the text calls, vision the image calls. */
export interface Kill {
  name: string;
  /** When the kill was asked for. */
  at: number;
  /**
   * When the kill was known done, if later: `docker kill` goes through the daemon, so on a busy
   * machine the process may live for a second after it was asked to die.
   */
  doneAt?: number;
}

/**
 * A call billed this close to the SIGKILL of the worker that made it may have been in the dead
 * process's hands (reply in its socket buffer, or billed by the stub before it saw the socket
 * close): no usage event can exist for it. A live worker records usage within ~100 ms (p99).
 */
export const KILL_WINDOW = { beforeMs: 1_000, afterMs: 500 };

export interface Unrecordable {
  request: string;
  call: string;
  /** ms from the kill to the billing (negative: billed before the kill). */
  offsetMs: number;
  micros: number;
}

export interface Reconciliation {
  stubCalls: number;
  stubMicros: number;
  ledgerBilledEntries: number;
  ledgerCachedEntries: number;
  ledgerMicros: number;
  /** Requests with at least one billed call, and how many of them were billed more than once (a job run again). */
  requestsBilled: number;
  requestsBilledTwice: number;
  unrecordable: Unrecordable[];
  unrecordableMicros: number;
  problems: string[];
}

/**
 * Every call the stub billed against the ledger. Each call names its request (`ask`, the hash of
 * the request's unique message) and each entry its correlation id, so they are matched per request
 * by provider, model and units. A billed call without an entry passes only when it is provably one
 * the killed worker was holding: its request was in flight and the call was billed within
 * KILL_WINDOW of the SIGKILL of the worker that makes such calls. Anything else is a loss.
 */
export function reconcile(calls: BilledCall[], entries: LedgerEntry[], outcomes: Outcome[], kills: Kill[], at: Date): Reconciliation {
  const problems: string[] = [];
  const byAsk = new Map(outcomes.map((o) => [o.ask, o]));
  const wanted = new Map<string, Array<{ sig: string; at: number; micros: number; image: boolean }>>();
  let stubMicros = 0;
  for (const c of calls) {
    // Vision is billed per image (the product's cost table); text per input and output token.
    const image = c.images > 0;
    const units = image ? { images: c.images } : { input_tokens: c.promptTokens, output_tokens: c.completionTokens };
    const p = price({ provider: c.provider, model: c.model, units }, { at });
    stubMicros += p.amount_micros;
    const o = byAsk.get(c.ask);
    if (!o) {
      problems.push(`a call billed at ${new Date(c.at).toISOString()} (${c.provider}/${c.model}) was asked by no request of the run`);
      continue;
    }
    const list = wanted.get(o.id) ?? [];
    list.push({ sig: signature(c.provider, p.model_key, units), at: c.at, micros: p.amount_micros, image });
    wanted.set(o.id, list);
  }
  const have = new Map<string, string[]>();
  let ledgerMicros = 0;
  let billed = 0;
  let cached = 0;
  for (const e of entries) {
    ledgerMicros += e.amount_micros;
    if (e.cached) {
      cached++;
      if (e.amount_micros !== 0) problems.push(`cache-hit entry ${e.entry_id} costs ${e.amount_micros} micros`);
      continue;
    }
    billed++;
    const p = price({ provider: e.provider, model: e.model, units: e.units }, { at: e.occurred_at });
    const list = have.get(e.correlation_id) ?? [];
    list.push(signature(e.provider, p.model_key, e.units));
    have.set(e.correlation_id, list);
  }
  const unrecordable: Unrecordable[] = [];
  let twice = 0;
  for (const [request, list] of wanted) {
    if (list.length > 1) twice++;
    const recorded = [...(have.get(request) ?? [])];
    have.delete(request);
    const outcome = outcomes.find((o) => o.id === request);
    const killOf = (call: (typeof list)[number]) =>
      kills.find(
        (k) =>
          k.name === (call.image ? 'vision' : 'chat-workflow') &&
          call.at >= k.at - KILL_WINDOW.beforeMs &&
          call.at <= (k.doneAt ?? k.at) + KILL_WINDOW.afterMs &&
          outcome !== undefined &&
          outcome.sentAt < k.at,
      );
    // Calls with the same units are interchangeable: the ones left without an entry are taken from
    // those a killed worker held, if there are such.
    for (const sig of new Set(list.map((c) => c.sig))) {
      const same = list.filter((c) => c.sig === sig).sort((a, b) => Number(!!killOf(a)) - Number(!!killOf(b)));
      let entriesFor = 0;
      for (let i = recorded.indexOf(sig); i >= 0; i = recorded.indexOf(sig)) {
        recorded.splice(i, 1);
        entriesFor++;
      }
      for (const call of same.slice(entriesFor)) {
        const kill = killOf(call);
        if (kill) unrecordable.push({ request, call: call.sig, offsetMs: call.at - kill.at, micros: call.micros });
        else problems.push(`request ${request}: ${call.sig} billed at ${new Date(call.at).toISOString()} has no ledger entry`);
      }
      for (let i = same.length; i < entriesFor; i++) problems.push(`request ${request}: ledger entry ${sig} matches no billed call`);
    }
    for (const sig of recorded) problems.push(`request ${request}: ledger entry ${sig} matches no billed call`);
  }
  for (const [request, list] of have) for (const sig of list) problems.push(`ledger entry ${sig} for ${request}, which the stub never billed`);
  return {
    stubCalls: calls.length,
    stubMicros,
    ledgerBilledEntries: billed,
    ledgerCachedEntries: cached,
    ledgerMicros,
    requestsBilled: wanted.size,
    requestsBilledTwice: twice,
    unrecordable,
    unrecordableMicros: unrecordable.reduce((n, u) => n + u.micros, 0),
    problems,
  };
}

// ---------------------------------------------------------------------------------------------
// Alerts

export interface AlertNotice {
  streamId: string;
  alert: AlertRecord;
}

export interface Delivery {
  deliveryId: string;
  alertId: string;
  state: string;
}

export function checkAlertDuplicates(notices: AlertNotice[]): CheckResult {
  const problems: string[] = [];
  const seen = new Map<string, string>();
  const open = new Map<string, string>();
  const costFired = new Set<string>();
  for (const { streamId, alert } of notices) {
    const key = `${alert.alert_id}/${alert.state}`;
    if (seen.has(key)) problems.push(`alert ${alert.alert_id} ${alert.state} notified twice (${seen.get(key)} and ${streamId})`);
    seen.set(key, streamId);
    if (alert.state === 'firing') {
      const already = open.get(alert.fingerprint);
      if (already && already !== alert.alert_id) problems.push(`fingerprint ${alert.fingerprint} fired again as ${alert.alert_id} while ${already} was still firing`);
      open.set(alert.fingerprint, alert.alert_id);
      if (alert.kind === 'cost') {
        // Budgets do not change during the run, so a cost fingerprint (scope, id, period, key, threshold) crosses once.
        if (costFired.has(alert.fingerprint)) problems.push(`cost fingerprint ${alert.fingerprint} (${alert.summary}) fired twice`);
        costFired.add(alert.fingerprint);
      }
    } else if (open.get(alert.fingerprint) === alert.alert_id) {
      open.delete(alert.fingerprint);
    } else {
      problems.push(`alert ${alert.alert_id} resolved without a firing notice before it`);
    }
  }
  const firing = notices.filter((n) => n.alert.state === 'firing');
  const cost = firing.filter((n) => n.alert.kind === 'cost').length;
  return result(
    'no alert is duplicated (alerts stream: one notice per alert and state, one open alert per fingerprint)',
    problems,
    `${notices.length} notices: ${cost} cost firings, ${firing.length - cost} ops firings, ${notices.length - firing.length} resolutions`,
  );
}

export interface BudgetSpec {
  scope: 'user' | 'project';
  scopeId: string;
  period: 'day' | 'week' | 'month';
  limitMicros: number;
  thresholds: number[];
  mode?: 'soft' | 'hard';
}

/**
 * No hard budget ends above its limit by more than the calls of requests that were billed twice
 * (a job run again after its worker was SIGKILLed is charged in full): those are listed.
 */
export function checkHardBudgets(budgets: BudgetSpec[], entries: LedgerEntry[]): CheckResult {
  const problems: string[] = [];
  const parts: string[] = [];
  for (const b of budgets.filter((x) => x.mode === 'hard')) {
    const mine = entries.filter((e) => (b.scope === 'user' ? e.user_id : e.project_id) === b.scopeId);
    const windows = new Map<string, LedgerEntry[]>();
    for (const e of mine) {
      const k = periodKeys(e.occurred_at)[b.period];
      windows.set(k, [...(windows.get(k) ?? []), e]);
    }
    for (const [periodKey, list] of windows) {
      const spent = list.reduce((n, e) => n + e.amount_micros, 0);
      // Every billed call of a request after its first is a re-run's.
      const byRequest = new Map<string, LedgerEntry[]>();
      for (const e of [...list].sort((x, y) => x.occurred_at.localeCompare(y.occurred_at))) byRequest.set(e.request_id, [...(byRequest.get(e.request_id) ?? []), e]);
      const reruns = [...byRequest.values()].flatMap((es) => es.slice(1).filter((e) => e.amount_micros > 0));
      const rerunMicros = reruns.reduce((n, e) => n + e.amount_micros, 0);
      parts.push(`${b.scope} ${b.scopeId} ${b.period} ${periodKey}: spent ${spent} of ${b.limitMicros}` + (reruns.length ? `, ${reruns.length} re-run calls ${rerunMicros} micros (${reruns.map((e) => e.request_id).join(', ')})` : ''));
      if (spent - rerunMicros > b.limitMicros) problems.push(`${b.scope} ${b.scopeId} ${b.period} ${periodKey}: spent ${spent}, ${spent - rerunMicros} without re-runs, over the hard limit ${b.limitMicros}`);
    }
  }
  return result('no hard budget ends above its limit by more than the re-run calls listed', problems, parts.join('; ') || 'no hard budget spent');
}

/** Every threshold the final spend reached was alerted (or inhibited by a higher one), and none that it did not reach. */
export function checkAlertCoverage(notices: AlertNotice[], budgets: BudgetSpec[], entries: LedgerEntry[]): CheckResult {
  const problems: string[] = [];
  const spend = new Map<string, number>();
  for (const e of entries) {
    const keys = periodKeys(e.occurred_at);
    for (const period of ['day', 'week', 'month'] as const) {
      for (const [scope, id] of [['user', e.user_id], ['project', e.project_id]] as const) {
        const k = `${scope}/${id}/${period}/${keys[period]}`;
        spend.set(k, (spend.get(k) ?? 0) + e.amount_micros);
      }
    }
  }
  const costFirings = notices.flatMap((n) => (n.alert.kind === 'cost' && n.alert.state === 'firing' ? [n.alert] : []));
  let crossed = 0;
  for (const b of budgets) {
    const windows = [...spend.keys()].filter((k) => k.startsWith(`${b.scope}/${b.scopeId}/${b.period}/`));
    for (const w of windows) {
      const periodKey = w.split('/')[3]!;
      const spent = spend.get(w) ?? 0;
      const fired = costFirings.filter((a) => a.scope === b.scope && a.scope_id === b.scopeId && a.period === b.period && a.period_key === periodKey);
      for (const t of b.thresholds) {
        const reached = reachedPct(spent, b.limitMicros, t);
        const covered = fired.some((a) => a.threshold_pct === t || (a.threshold_pct > t && a.inhibited_pct.includes(t)));
        if (reached) crossed++;
        if (reached && !covered) problems.push(`${b.scope} ${b.scopeId} ${b.period} ${periodKey}: ${t}% reached (spent ${spent} of ${b.limitMicros}) but never alerted`);
        if (!reached && fired.some((a) => a.threshold_pct === t)) problems.push(`${b.scope} ${b.scopeId} ${b.period} ${periodKey}: ${t}% alerted but the ledger shows only ${spent} of ${b.limitMicros}`);
      }
    }
  }
  return result(
    'every budget threshold the ledger crossed was alerted, and only those',
    problems,
    `${budgets.length} budgets, ${crossed} threshold crossings by final ledger spend, ${costFirings.length} cost firings`,
  );
}

export function checkWebhooks(notices: AlertNotice[], deliveries: Delivery[]): CheckResult {
  const problems: string[] = [];
  const idsByNotice = new Map<string, Set<string>>();
  const noticeByDelivery = new Map<string, string>();
  for (const d of deliveries) {
    const notice = `${d.alertId}/${d.state}`;
    const before = noticeByDelivery.get(d.deliveryId);
    if (before && before !== notice) problems.push(`delivery ${d.deliveryId} carried ${before} and ${notice}`);
    noticeByDelivery.set(d.deliveryId, notice);
    const ids = idsByNotice.get(notice) ?? new Set<string>();
    ids.add(d.deliveryId);
    idsByNotice.set(notice, ids);
  }
  for (const [notice, ids] of idsByNotice) if (ids.size > 1) problems.push(`${notice} was sent as ${ids.size} different deliveries`);
  const expected = notices.filter((n) => !n.alert.silenced_by);
  for (const n of expected) {
    if (!idsByNotice.has(`${n.alert.alert_id}/${n.alert.state}`)) problems.push(`${n.alert.alert_id} ${n.alert.state} was never delivered to the webhook`);
  }
  const retries = deliveries.length - noticeByDelivery.size;
  return result(
    'webhook: every notice delivered, each as exactly one delivery id',
    problems,
    `${deliveries.length} POSTs, ${noticeByDelivery.size} distinct deliveries for ${expected.length} notices (${retries} repeated attempts of a delivery)`,
  );
}

// ---------------------------------------------------------------------------------------------
// Events

export function indexEvents(events: AnyEvent[]): { byId: Map<string, AnyEvent>; byCorrelation: Map<string, AnyEvent[]>; duplicateIds: number } {
  const byId = new Map<string, AnyEvent>();
  const byCorrelation = new Map<string, AnyEvent[]>();
  let duplicateIds = 0;
  for (const e of events) {
    if (byId.has(e.id)) {
      duplicateIds++;
      continue;
    }
    byId.set(e.id, e);
    const list = byCorrelation.get(e.correlation_id) ?? [];
    list.push(e);
    byCorrelation.set(e.correlation_id, list);
  }
  return { byId, byCorrelation, duplicateIds };
}

/** Each reply has its workflow events and the usage event of the very call that produced it. */
export function checkReplyEvents(outcomes: Outcome[], byCorrelation: Map<string, AnyEvent[]>): CheckResult {
  const problems: string[] = [];
  let replies = 0;
  let failures = 0;
  for (const o of outcomes) {
    // A failure the worker classified (provider errors after recovery) is a failed workflow on the bus.
    if (o.status !== undefined && o.status >= 500) {
      const code = isRecord(o.body) && isRecord(o.body.error) ? o.body.error.code : undefined;
      failures++;
      const events = byCorrelation.get(o.id) ?? [];
      if (code !== 'deadline_exceeded' && !events.some((e) => e.type === 'workflow.failed')) {
        problems.push(`${o.kind} request ${o.id} failed with ${o.status} ${String(code)} but has no workflow.failed in the history`);
      }
      continue;
    }
    if (o.status === undefined || o.status >= 300 || !isRecord(o.body)) continue;
    replies++;
    const events = byCorrelation.get(o.id) ?? [];
    const types = new Set(events.map((e) => e.type));
    const needed = ['workflow.started', 'workflow.completed', 'usage.recorded', o.kind === 'chat' ? 'chat.response_generated' : 'vision.analysis_completed'];
    const missing = needed.filter((t) => !types.has(t as AnyEvent['type']));
    if (missing.length) {
      problems.push(`${o.kind} reply ${o.id} has no ${missing.join(', ')} in the history`);
      continue;
    }
    const body = o.body;
    const usages = events.filter((e): e is Extract<AnyEvent, { type: 'usage.recorded' }> => e.type === 'usage.recorded');
    const match = usages.some((u) => {
      if (u.data.provider !== body.provider || u.data.model !== body.model) return false;
      if (o.kind === 'vision') return u.data.cached === body.cached;
      const usage = isRecord(body.usage) ? body.usage : {};
      return u.data.units.input_tokens === usage.input_tokens && u.data.units.output_tokens === usage.output_tokens;
    });
    if (!match) problems.push(`${o.kind} reply ${o.id} (${String(body.provider)}/${String(body.model)}) has no usage.recorded for the call that answered it`);
  }
  return result(
    'no event missing: every reply has workflow.started/completed, its response event and the usage of the call that answered; every failure its workflow.failed',
    problems,
    `${replies} replies and ${failures} failures checked against the bus history`,
  );
}
