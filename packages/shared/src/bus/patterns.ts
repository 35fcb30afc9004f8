import type { AnyEvent } from '../events/envelope';

/**
 * Matches an event type against a subscription pattern: exact (`usage.recorded`), everything
 * (`*`), or `*` standing for one dot-separated segment (`workflow.*`, `*.failed`).
 */
export function matchesPattern(pattern: string, type: string): boolean {
  if (pattern === '*' || pattern === type) return true;
  if (!pattern.includes('*')) return false;
  // Every delivered event is matched against every subscription: remember wildcard answers
  // (bounded, as types come off the stream and a foreign producer could send any).
  const key = `${pattern}\0${type}`;
  const known = WILDCARD_MATCHES.get(key);
  if (known !== undefined) return known;
  const result = matchesWildcard(pattern, type);
  if (WILDCARD_MATCHES.size >= 10_000) WILDCARD_MATCHES.clear();
  WILDCARD_MATCHES.set(key, result);
  return result;
}

const WILDCARD_MATCHES = new Map<string, boolean>();

function matchesWildcard(pattern: string, type: string): boolean {
  const want = pattern.split('.');
  const have = type.split('.');
  return want.length === have.length && want.every((seg, i) => seg === '*' || seg === have[i]);
}

type MetadataKey = 'user_id' | 'project_id' | 'source' | 'correlation_id';
/** Equality on envelope metadata; an array means "any of these". */
export type MetadataFilter = Partial<Record<MetadataKey, string | readonly string[]>>;
export type EventFilter = MetadataFilter | ((event: AnyEvent) => boolean);

export function matchesFilter(filter: EventFilter | undefined, event: AnyEvent): boolean {
  if (!filter) return true;
  if (typeof filter === 'function') return filter(event);
  for (const [key, want] of Object.entries(filter) as Array<[MetadataKey, string | readonly string[] | undefined]>) {
    if (want === undefined) continue;
    const have = event[key];
    if (have === undefined) return false;
    if (typeof want === 'string' ? have !== want : !want.includes(have)) return false;
  }
  return true;
}
