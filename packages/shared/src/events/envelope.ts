import { createHash, randomUUID } from 'node:crypto';
import { z } from 'zod';
import { InvalidEventError } from '../errors/tollgate-error';
import { EVENT_CATALOG, type EventData, type EventType, isEventType } from './catalog';

const id = z.string().min(1).max(128);

export const envelopeSchema = z.strictObject({
  id,
  type: z.string().min(1).max(64),
  version: z.number().int().min(1),
  occurred_at: z.iso.datetime(),
  source: z.string().min(1).max(64),
  correlation_id: id,
  user_id: id.optional(),
  project_id: id.optional(),
  /** The journey the request that caused this event belongs to (`x-tollgate-journey`), and its step tag. */
  journey_id: id.optional(),
  journey_step: id.optional(),
  data: z.unknown(),
});

export interface EventEnvelope<T extends EventType = EventType> {
  id: string;
  type: T;
  version: number;
  occurred_at: string;
  source: string;
  correlation_id: string;
  user_id?: string;
  project_id?: string;
  journey_id?: string;
  journey_step?: string;
  data: EventData<T>;
}

/** Any catalog event, discriminated by `type` so a `switch` narrows `data`. */
export type AnyEvent = { [T in EventType]: EventEnvelope<T> }[EventType];

export interface EventMeta {
  correlation_id: string;
  user_id?: string;
  project_id?: string;
  journey_id?: string;
  journey_step?: string;
  /** Defaults to now; set by replays and tests. */
  occurred_at?: string;
  /** Defaults to a new UUID; set it to make a publish idempotent downstream. */
  id?: string;
}

function issues(error: z.ZodError): Array<{ path: string; message: string }> {
  return error.issues.map((i) => ({ path: i.path.join('.'), message: i.message }));
}

// Strict at publish: a misspelt field is a producer bug worth failing loudly on. Built once per
// type: zod compiles a schema on construction, so a per-call .strict() costs ~20x the parse.
const STRICT_DATA = new Map<string, z.ZodType>(
  Object.entries(EVENT_CATALOG).map(([type, entry]) => [type, (entry.data as z.ZodObject).strict()]),
);

/** Builds and validates an envelope for publishing; unknown types and bad data throw `invalid_event`. */
export function createEvent<T extends EventType>(type: T, data: EventData<T>, meta: EventMeta, source: string): EventEnvelope<T> {
  if (!isEventType(type)) throw new InvalidEventError(`Unknown event type "${String(type)}"`);
  const entry = EVENT_CATALOG[type];
  const parsed = STRICT_DATA.get(type)!.safeParse(data);
  if (!parsed.success) {
    throw new InvalidEventError(`Invalid data for event "${type}"`, issues(parsed.error));
  }
  const envelope = {
    id: meta.id ?? randomUUID(),
    type,
    version: entry.version,
    occurred_at: meta.occurred_at ?? new Date().toISOString(),
    source,
    correlation_id: meta.correlation_id,
    ...(meta.user_id !== undefined && { user_id: meta.user_id }),
    ...(meta.project_id !== undefined && { project_id: meta.project_id }),
    ...(meta.journey_id !== undefined && { journey_id: meta.journey_id }),
    ...(meta.journey_step !== undefined && { journey_step: meta.journey_step }),
    data: parsed.data,
  };
  const checked = envelopeSchema.safeParse(envelope);
  if (!checked.success) throw new InvalidEventError(`Invalid envelope for event "${type}"`, issues(checked.error));
  return envelope as EventEnvelope<T>;
}

/**
 * Validates an event read off the bus. Lenient about unknown data fields (a newer producer may
 * add optional ones) but never about unknown types, versions or bad data.
 */
export function parseEvent(raw: unknown): AnyEvent {
  const env = envelopeSchema.safeParse(raw);
  if (!env.success) throw new InvalidEventError('Invalid event envelope', issues(env.error));
  const { type, version } = env.data;
  if (!isEventType(type)) throw new InvalidEventError(`Unknown event type "${type}"`);
  const entry = EVENT_CATALOG[type];
  if (version !== entry.version) {
    throw new InvalidEventError(`Unsupported version ${version} of "${type}" (this build reads ${entry.version})`);
  }
  const data = entry.data.safeParse(env.data.data);
  if (!data.success) throw new InvalidEventError(`Invalid data for event "${type}"`, issues(data.error));
  return { ...env.data, type, data: data.data } as AnyEvent;
}

// What checked an event at publish, per type: its version and its data and envelope schemas as
// JSON Schema, hashed. Two builds with the same schema for a type share its tag.
const TAGS = new Map<string, string>();
const ENVELOPE_JSON = JSON.stringify(z.toJSONSchema(envelopeSchema, { unrepresentable: 'any' }));

/** The tag of an event type at a version with a data schema. */
export function schemaTagFor(type: string, version: number, data: z.ZodType): string {
  const schema = JSON.stringify(z.toJSONSchema(data, { unrepresentable: 'any' }));
  return createHash('sha256').update(`${type}\n${version}\n${ENVELOPE_JSON}\n${schema}`).digest('base64url').slice(0, 16);
}

/** The tag a publisher writes beside an event of this type (the entry's `schema` field): this build's catalog entry. */
export function schemaTag(type: EventType): string {
  let tag = TAGS.get(type);
  if (tag === undefined) TAGS.set(type, (tag = schemaTagFor(type, EVENT_CATALOG[type].version, EVENT_CATALOG[type].data)));
  return tag;
}

/**
 * The event of a bus entry: its `event` JSON and its `schema` tag. An entry tagged with this
 * build's tag for its type was validated at publish, the boundary, against the schema this build
 * holds, so it is taken as it stands; any other (no tag, another schema or version, a foreign
 * producer) is validated in full by parseEvent. A tag only says which schema checked the event:
 * a producer that writes one without validating is lying, as it could about the data itself.
 */
export function eventOfEntry(raw: string, tag: string | undefined): AnyEvent {
  const value: unknown = JSON.parse(raw);
  if (tag !== undefined && typeof value === 'object' && value !== null) {
    const type = (value as { type?: unknown }).type;
    if (typeof type === 'string' && isEventType(type) && schemaTag(type) === tag) return value as AnyEvent;
  }
  return parseEvent(value);
}
