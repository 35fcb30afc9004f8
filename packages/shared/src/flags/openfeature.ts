// Types only: the services bundle this module, and none of them needs the SDK loaded to run.
import type { ErrorCode, EvaluationContext, JsonValue, Provider, ResolutionDetails } from '@openfeature/server-sdk';
import type { FlagContext, FlagEvaluation } from './engine';
import type { FlagReader } from './snapshot';

const FLAG_NOT_FOUND = 'FLAG_NOT_FOUND' as ErrorCode.FLAG_NOT_FOUND;
const TYPE_MISMATCH = 'TYPE_MISMATCH' as ErrorCode.TYPE_MISMATCH;
const PARSE_ERROR = 'PARSE_ERROR' as ErrorCode.PARSE_ERROR;

const KNOWN = new Set(['targetingKey', 'userId', 'sessionId', 'remoteAddress', 'environment', 'appName', 'currentTime', 'properties']);

/** An OpenFeature context as an Unleash one: `targetingKey` is the user; unknown fields become properties. */
export function unleashContextOf(ctx: EvaluationContext): FlagContext {
  const out: FlagContext = {};
  const str = (v: unknown) => (typeof v === 'string' ? v : typeof v === 'number' || typeof v === 'boolean' ? String(v) : undefined);
  const userId = str(ctx.userId) ?? str(ctx.targetingKey);
  if (userId !== undefined) out.userId = userId;
  for (const k of ['sessionId', 'remoteAddress', 'environment', 'appName'] as const) {
    const v = str(ctx[k]);
    if (v !== undefined) out[k] = v;
  }
  const t = ctx.currentTime;
  if (t instanceof Date || typeof t === 'string') out.currentTime = t;
  const properties: Record<string, string> = {};
  const nested = ctx.properties;
  if (nested && typeof nested === 'object' && !Array.isArray(nested) && !(nested instanceof Date)) {
    for (const [k, v] of Object.entries(nested)) {
      const s = v instanceof Date ? v.toISOString() : str(v);
      if (s !== undefined) properties[k] = s;
    }
  }
  for (const [k, v] of Object.entries(ctx)) {
    if (KNOWN.has(k)) continue;
    const s = v instanceof Date ? v.toISOString() : str(v);
    if (s !== undefined) properties[k] = s;
  }
  if (Object.keys(properties).length) out.properties = properties;
  return out;
}

type Payload = NonNullable<FlagEvaluation['variant']['payload']>;

/**
 * Tollgate's flags through the OpenFeature server SDK. Booleans are the flag's on/off; strings,
 * numbers and objects are the served variant's payload (`string`/`csv`, `number`, `json`). A flag
 * that is off, or serves no variant, answers the caller's default with reason DISABLED/DEFAULT.
 */
export class TollgateFlagProvider implements Provider {
  readonly metadata = { name: 'tollgate-flags' } as const;
  readonly runsOn = 'server' as const;

  constructor(private readonly flags: FlagReader) {}

  async resolveBooleanEvaluation(flagKey: string, defaultValue: boolean, context: EvaluationContext): Promise<ResolutionDetails<boolean>> {
    const r = this.flags.evaluate(flagKey, unleashContextOf(context));
    if (r.error_code) return { value: defaultValue, reason: 'ERROR', errorCode: FLAG_NOT_FOUND, errorMessage: `No flag named "${flagKey}".` };
    return { value: r.enabled, variant: r.variant.name, reason: r.reason, flagMetadata: { featureEnabled: r.enabled } };
  }

  async resolveStringEvaluation(flagKey: string, defaultValue: string, context: EvaluationContext): Promise<ResolutionDetails<string>> {
    return this.payload(flagKey, defaultValue, context, ['string', 'csv'], (p) => p.value);
  }

  async resolveNumberEvaluation(flagKey: string, defaultValue: number, context: EvaluationContext): Promise<ResolutionDetails<number>> {
    return this.payload(flagKey, defaultValue, context, ['number'], (p) => {
      const n = Number(p.value);
      if (p.value.trim() === '' || !Number.isFinite(n)) throw new Error(`payload "${p.value}" is not a number`);
      return n;
    });
  }

  async resolveObjectEvaluation<T extends JsonValue>(flagKey: string, defaultValue: T, context: EvaluationContext): Promise<ResolutionDetails<T>> {
    return this.payload(flagKey, defaultValue, context, ['json'], (p) => JSON.parse(p.value) as T);
  }

  private payload<T>(flagKey: string, defaultValue: T, context: EvaluationContext, types: string[], parse: (p: Payload) => T): ResolutionDetails<T> {
    const r = this.flags.evaluate(flagKey, unleashContextOf(context));
    if (r.error_code) return { value: defaultValue, reason: 'ERROR', errorCode: FLAG_NOT_FOUND, errorMessage: `No flag named "${flagKey}".` };
    const meta = { featureEnabled: r.enabled };
    if (!r.enabled || !r.variant.enabled) return { value: defaultValue, variant: r.variant.name, reason: r.reason, flagMetadata: meta };
    const p = r.variant.payload;
    if (!p || !types.includes(p.type)) {
      return {
        value: defaultValue,
        variant: r.variant.name,
        reason: 'ERROR',
        errorCode: TYPE_MISMATCH,
        errorMessage: `Variant "${r.variant.name}" of "${flagKey}" has ${p ? `a ${p.type} payload` : 'no payload'}; expected ${types.join(' or ')}.`,
        flagMetadata: meta,
      };
    }
    try {
      return { value: parse(p), variant: r.variant.name, reason: r.reason, flagMetadata: meta };
    } catch (err) {
      return { value: defaultValue, variant: r.variant.name, reason: 'ERROR', errorCode: PARSE_ERROR, errorMessage: (err as Error).message, flagMetadata: meta };
    }
  }
}
