import { randomUUID } from 'node:crypto';
import type Redis from 'ioredis';
import { z } from 'zod';
import { ALERT_SCOPES, type AlertRecord, alertScopeOf } from './alerts';
import { alertingKeys } from './keys';

const MAX_MINUTES = 90 * 24 * 60;

export const silenceMatchersSchema = z
  .strictObject({
    kind: z.enum(['cost', 'ops']).optional(),
    scope: z.enum(ALERT_SCOPES).optional(),
    scope_id: z.string().min(1).max(128).optional(),
    period: z.enum(['day', 'week', 'month']).optional(),
    threshold_pct: z.number().int().min(1).max(1000).optional(),
    alert: z.enum(['circuit_open', 'error_rate']).optional(),
    fingerprint: z.string().min(1).max(128).optional(),
  })
  .refine((m) => Object.values(m).some((v) => v !== undefined), 'a silence needs at least one matcher');
export type SilenceMatchers = z.infer<typeof silenceMatchersSchema>;

export const silenceInputSchema = z
  .strictObject({
    matchers: silenceMatchersSchema,
    /** When it ends: either a time or a duration, never open-ended. */
    ends_at: z.iso.datetime({ offset: true }).optional(),
    duration_minutes: z.number().int().min(1).max(MAX_MINUTES).optional(),
    comment: z.string().max(500).optional(),
  })
  .refine((s) => (s.ends_at === undefined) !== (s.duration_minutes === undefined), 'give either ends_at or duration_minutes');

export const silenceSchema = z.object({
  id: z.string(),
  matchers: silenceMatchersSchema,
  starts_at: z.string(),
  ends_at: z.string(),
  comment: z.string().optional(),
  created_by: z.string(),
});
export type Silence = z.infer<typeof silenceSchema>;

/** Every matcher given must equal the alert's label; a matcher the alert has no label for never matches. */
export function silenceMatches(silence: Silence, alert: AlertRecord, now: number): boolean {
  if (Date.parse(silence.ends_at) <= now || Date.parse(silence.starts_at) > now) return false;
  const where = alertScopeOf(alert);
  const labels: Record<string, string | number | undefined> = {
    kind: alert.kind,
    scope: where.scope,
    scope_id: where.scope_id,
    fingerprint: alert.fingerprint,
    ...(alert.kind === 'cost' ? { period: alert.period, threshold_pct: alert.threshold_pct } : { alert: alert.alert }),
  };
  return Object.entries(silence.matchers).every(([k, v]) => v === undefined || labels[k] === v);
}

/**
 * Silences with an expiry, as in Alertmanager: a matching alert still fires, resolves and is kept
 * in the history (marked `silenced_by`), but nobody is notified of it (no webhook).
 */
export class Silences {
  private readonly key: string;

  constructor(
    private readonly redis: Redis,
    namespace: string,
  ) {
    this.key = alertingKeys(namespace).silences;
  }

  async create(input: unknown, createdBy: string, now = Date.now()): Promise<Silence> {
    const spec = silenceInputSchema.parse(input);
    const endsAt = spec.ends_at ? Date.parse(spec.ends_at) : now + spec.duration_minutes! * 60_000;
    if (endsAt <= now) throw new z.ZodError([{ code: 'custom', path: ['ends_at'], message: 'ends_at must be in the future', input: spec.ends_at }]);
    if (endsAt - now > MAX_MINUTES * 60_000) {
      throw new z.ZodError([{ code: 'custom', path: ['ends_at'], message: 'a silence lasts at most 90 days', input: spec.ends_at }]);
    }
    const silence: Silence = {
      id: `sil_${randomUUID().replace(/-/g, '').slice(0, 16)}`,
      matchers: spec.matchers,
      starts_at: new Date(now).toISOString(),
      ends_at: new Date(endsAt).toISOString(),
      ...(spec.comment && { comment: spec.comment }),
      created_by: createdBy,
    };
    await this.redis.hset(this.key, silence.id, JSON.stringify(silence));
    return silence;
  }

  /** Silences in force now; expired ones are removed on the way. */
  async active(now = Date.now()): Promise<Silence[]> {
    const all = await this.redis.hgetall(this.key);
    const live: Silence[] = [];
    const expired: string[] = [];
    for (const [id, raw] of Object.entries(all)) {
      let parsed: Silence | null = null;
      try {
        const r = silenceSchema.safeParse(JSON.parse(raw));
        if (r.success) parsed = r.data;
      } catch {
        parsed = null;
      }
      if (!parsed || Date.parse(parsed.ends_at) <= now) expired.push(id);
      else live.push(parsed);
    }
    if (expired.length) await this.redis.hdel(this.key, ...expired);
    return live.sort((a, b) => a.ends_at.localeCompare(b.ends_at));
  }

  /** The id of a silence in force that matches the alert, if any. */
  async match(alert: AlertRecord, now = Date.now()): Promise<string | undefined> {
    return (await this.active(now)).find((s) => silenceMatches(s, alert, now))?.id;
  }

  /** Ends a silence now; false when there was none. */
  async remove(id: string): Promise<boolean> {
    return (await this.redis.hdel(this.key, id)) === 1;
  }
}
