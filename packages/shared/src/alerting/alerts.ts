import { randomBytes } from 'node:crypto';
import type Redis from 'ioredis';
import { z } from 'zod';
import { micros } from '../events/catalog';
import { field } from '../bus/fields';
import { alertingKeys } from './keys';

export const ALERT_STATES = ['firing', 'resolved'] as const;
export type AlertState = (typeof ALERT_STATES)[number];
/** Scopes an alert can be filed under: the budget scopes, and `ops` for operational alerts. */
export const ALERT_SCOPES = ['global', 'user', 'project', 'ops'] as const;
export type AlertScope = (typeof ALERT_SCOPES)[number];
export const OPS_SCOPE_ID = 'ops';

const id = z.string().min(1).max(128);
const iso = z.string().min(1).max(64);

export const contributorSchema = z.object({ dimension: id, key: id, micros });

/** A budget threshold alert: the `cost.threshold_exceeded` data plus its lifecycle. */
export const costAlertSchema = z.object({
  kind: z.literal('cost'),
  alert_id: id,
  fingerprint: id,
  state: z.enum(ALERT_STATES),
  scope: z.enum(['global', 'user', 'project']),
  scope_id: id,
  period: z.enum(['day', 'week', 'month']),
  period_key: id,
  threshold_pct: z.number().int().min(1).max(1000),
  spent_micros: micros,
  limit_micros: micros,
  hard: z.boolean(),
  top_contributors: z.array(contributorSchema).max(20),
  /** Lower thresholds crossed by the same jump: never sent, because this one covers them. */
  inhibited_pct: z.array(z.number().int()),
  summary: z.string(),
  fired_at: iso,
  resolved_at: iso.optional(),
  resolve_reason: z.enum(['period_rollover', 'budget_raised', 'budget_removed']).optional(),
  /** The request whose cost crossed the threshold. */
  correlation_id: id.optional(),
  /** A silence matched: recorded and streamed, not sent to webhooks. */
  silenced_by: id.optional(),
});
export type CostAlert = z.infer<typeof costAlertSchema>;

/** An operational alert raised by the `escalate` strategy: a circuit that stays open, an error rate. */
export const opsAlertSchema = z.object({
  kind: z.literal('ops'),
  alert_id: id,
  fingerprint: id,
  state: z.enum(ALERT_STATES),
  alert: z.enum(['circuit_open', 'error_rate']),
  labels: z.record(z.string(), z.string()),
  /** Seconds open, or errors in the window. */
  value: z.number(),
  threshold: z.number(),
  strategy: z.literal('escalate'),
  summary: z.string(),
  fired_at: iso,
  resolved_at: iso.optional(),
  resolve_reason: z.enum(['circuit_closed', 'rate_recovered']).optional(),
  silenced_by: id.optional(),
});
export type OpsAlert = z.infer<typeof opsAlertSchema>;

export const alertRecordSchema = z.discriminatedUnion('kind', [costAlertSchema, opsAlertSchema]);
export type AlertRecord = z.infer<typeof alertRecordSchema>;

export function alertScopeOf(alert: AlertRecord): { scope: AlertScope; scope_id: string } {
  return alert.kind === 'cost' ? { scope: alert.scope, scope_id: alert.scope_id } : { scope: 'ops', scope_id: OPS_SCOPE_ID };
}

/** Who is asking: operators see every alert, everyone else the alerts of their own user and project. */
export type AlertViewer = { all: true } | { all: false; user_id: string; project_id: string };

export function canSee(viewer: AlertViewer, alert: AlertRecord): boolean {
  if (viewer.all) return true;
  if (alert.kind !== 'cost') return false;
  return (alert.scope === 'user' && alert.scope_id === viewer.user_id) || (alert.scope === 'project' && alert.scope_id === viewer.project_id);
}

/** One entry of the alerts stream, as ops tools, the SSE endpoint and the dispatcher read it. */
export interface AlertEntry {
  streamId: string;
  alert: AlertRecord;
}

/** Decodes a stream entry's fields; null for an entry this build cannot read. */
export function parseAlertEntry(streamId: string, fields: readonly string[] | null): AlertEntry | null {
  const raw = fields ? field(fields, 'alert') : undefined;
  if (raw === undefined) return null;
  try {
    return { streamId, alert: alertRecordSchema.parse(JSON.parse(raw)) };
  } catch {
    return null;
  }
}

export interface AlertQuery {
  scope?: AlertScope;
  scope_id?: string;
  state?: AlertState;
  /** Only alerts that fired or resolved at or after this time (epoch ms). */
  since?: number;
  limit?: number;
}

const SCAN_CAP = 5_000;

/** Read side of the alert history the alerting service writes. */
export class AlertStore {
  private readonly keys: ReturnType<typeof alertingKeys>;

  constructor(
    private readonly redis: Redis,
    namespace: string,
  ) {
    this.keys = alertingKeys(namespace);
  }

  async get(alertId: string): Promise<AlertRecord | null> {
    return decode(await this.redis.get(this.keys.alert(alertId)));
  }

  /** Newest change first. */
  async list(query: AlertQuery, viewer: AlertViewer): Promise<AlertRecord[]> {
    const limit = Math.min(Math.max(query.limit ?? 100, 1), 1_000);
    const min = query.since === undefined ? '-inf' : String(query.since);
    let indexes: string[];
    if (!viewer.all) indexes = [this.keys.alertScopeIndex('user', viewer.user_id), this.keys.alertScopeIndex('project', viewer.project_id)];
    else if (query.scope && query.scope_id) indexes = [this.keys.alertScopeIndex(query.scope, query.scope_id)];
    else if (query.scope === 'ops') indexes = [this.keys.alertScopeIndex('ops', OPS_SCOPE_ID)];
    else indexes = [this.keys.alertIndex];

    const scored = new Map<string, number>();
    for (const index of indexes) {
      const flat = await this.redis.zrevrangebyscore(index, '+inf', min, 'WITHSCORES', 'LIMIT', 0, SCAN_CAP);
      for (let i = 0; i < flat.length; i += 2) scored.set(flat[i]!, Math.max(scored.get(flat[i]!) ?? 0, Number(flat[i + 1])));
    }
    const ids = [...scored].sort((a, b) => b[1] - a[1]).map(([alertId]) => alertId);
    const out: AlertRecord[] = [];
    for (let i = 0; i < ids.length && out.length < limit; i += 500) {
      const chunk = ids.slice(i, i + 500);
      const raws = await this.redis.mget(chunk.map((a) => this.keys.alert(a)));
      for (const raw of raws) {
        const alert = decode(raw);
        if (!alert || !canSee(viewer, alert)) continue;
        const where = alertScopeOf(alert);
        if (query.scope && where.scope !== query.scope) continue;
        if (query.scope_id && where.scope_id !== query.scope_id) continue;
        if (query.state && alert.state !== query.state) continue;
        out.push(alert);
        if (out.length >= limit) break;
      }
    }
    return out;
  }
}

function decode(raw: string | null): AlertRecord | null {
  if (!raw) return null;
  try {
    return alertRecordSchema.parse(JSON.parse(raw));
  } catch {
    return null;
  }
}

export const webhookNameSchema = z.string().regex(/^[A-Za-z0-9_-]{1,64}$/, 'letters, digits, dash or underscore (1-64)');
export const webhookInputSchema = z.strictObject({
  url: z
    .string()
    .max(2048)
    .refine((u) => {
      try {
        return ['http:', 'https:'].includes(new URL(u).protocol);
      } catch {
        return false;
      }
    }, 'expected an http(s) URL'),
  /** Signs every delivery (HMAC-SHA256); generated when omitted on creation. */
  secret: z.string().min(16).max(256).optional(),
});

export interface WebhookTarget {
  name: string;
  url: string;
  created_at: string;
}
const storedTargetSchema = z.object({ name: z.string(), url: z.string(), secret: z.string(), created_at: z.string() });
export type StoredWebhookTarget = z.infer<typeof storedTargetSchema>;

export const webhookDeadLetterSchema = z.object({
  delivery_id: z.string(),
  target: z.string(),
  url: z.string(),
  alert_id: z.string(),
  stream_id: z.string(),
  attempts: z.number().int(),
  error: z.string(),
  failed_at: z.string(),
});
export type WebhookDeadLetter = z.infer<typeof webhookDeadLetterSchema>;

/**
 * Webhook targets, set by operators through the gateway and read by the alerting service at each
 * delivery (so a changed URL or secret applies to the next attempt). The secret has to be kept
 * usable to sign with; it is returned only when it is generated.
 */
export class WebhookTargets {
  private readonly keys: ReturnType<typeof alertingKeys>;

  constructor(
    private readonly redis: Redis,
    namespace: string,
  ) {
    this.keys = alertingKeys(namespace);
  }

  async put(name: string, input: unknown): Promise<{ target: WebhookTarget; created: boolean; secret?: string }> {
    webhookNameSchema.parse(name);
    const spec = webhookInputSchema.parse(input);
    const existing = await this.get(name);
    const generated = spec.secret === undefined && !existing ? `whsec_${randomBytes(24).toString('base64url')}` : undefined;
    const stored: StoredWebhookTarget = {
      name,
      url: spec.url,
      secret: spec.secret ?? existing?.secret ?? generated!,
      created_at: existing?.created_at ?? new Date().toISOString(),
    };
    await this.redis.hset(this.keys.webhooks, name, JSON.stringify(stored));
    return { target: publicTarget(stored), created: !existing, ...(generated && { secret: generated }) };
  }

  async get(name: string): Promise<StoredWebhookTarget | null> {
    const raw = await this.redis.hget(this.keys.webhooks, name);
    return raw ? parseTarget(raw) : null;
  }

  /** With secrets: for the delivering service only. */
  async all(): Promise<StoredWebhookTarget[]> {
    const all = await this.redis.hgetall(this.keys.webhooks);
    return Object.values(all)
      .map(parseTarget)
      .filter((t): t is StoredWebhookTarget => t !== null)
      .sort((a, b) => a.name.localeCompare(b.name));
  }

  async list(): Promise<WebhookTarget[]> {
    return (await this.all()).map(publicTarget);
  }

  async remove(name: string): Promise<boolean> {
    return (await this.redis.hdel(this.keys.webhooks, name)) === 1;
  }

  async deadLetters(limit = 100): Promise<WebhookDeadLetter[]> {
    const all = await this.redis.hgetall(this.keys.webhookDeadLetters);
    return Object.values(all)
      .flatMap((raw) => {
        const parsed = webhookDeadLetterSchema.safeParse(safeJson(raw));
        return parsed.success ? [parsed.data] : [];
      })
      .sort((a, b) => b.failed_at.localeCompare(a.failed_at))
      .slice(0, limit);
  }
}

function safeJson(raw: string): unknown {
  try {
    return JSON.parse(raw);
  } catch {
    return null;
  }
}

function parseTarget(raw: string): StoredWebhookTarget | null {
  const parsed = storedTargetSchema.safeParse(safeJson(raw));
  return parsed.success ? parsed.data : null;
}

function publicTarget(t: StoredWebhookTarget): WebhookTarget {
  return { name: t.name, url: t.url, created_at: t.created_at };
}
