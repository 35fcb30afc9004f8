import { CONSTRAINT_OPERATORS, type Feature, FLAG_TYPES, isStale, type Segment, type StoredFlag } from './model';

/**
 * What the admin API and the CLI both do to a flag before storing it, so a flag written either
 * way is the same flag.
 */

/** Path words of the flags API; a flag cannot be named like them. */
export const RESERVED_FLAG_NAMES: ReadonlySet<string> = new Set(['import', 'evaluate', 'history']);
const KNOWN_STRATEGIES = new Set(['default', 'userWithId', 'gradualRolloutUserId', 'gradualRolloutSessionId', 'gradualRolloutRandom', 'flexibleRollout', 'remoteAddress', 'applicationHostname']);
const OPERATORS = new Set<string>(CONSTRAINT_OPERATORS);
// Unleash's server fills groupId with the flag's name; bucketing hashes `groupId:id`, so rollouts
// without one would share their buckets with every other flag that lacks one.
const GROUPED = new Set(['flexibleRollout', 'gradualRolloutUserId', 'gradualRolloutSessionId']);

export class FlagInputError extends Error {
  readonly code = 'invalid_request';
}

/** The feature as stored: named by `name`, rollouts grouped by the flag's name; refuses what cannot work. */
export function prepareFeature(name: string, body: Omit<Feature, 'name'> & { name?: string }): Feature {
  if (RESERVED_FLAG_NAMES.has(name)) throw new FlagInputError(`"${name}" is a reserved word of the flags API; choose another name.`);
  if (body.name !== undefined && body.name !== name) throw new FlagInputError(`The body names "${body.name}" but the flag is "${name}".`);
  if (body.dependencies?.some((d) => d.feature === name)) throw new FlagInputError('A flag cannot depend on itself.');
  return {
    ...body,
    name,
    strategies: body.strategies.map((s) => (GROUPED.has(s.name) && s.parameters.groupId === undefined ? { ...s, parameters: { ...s.parameters, groupId: name } } : s)),
  };
}

/** What will not behave as the author may think: Unleash evaluates these as "no match". */
export function flagWarnings(features: readonly Feature[], known: { flags: readonly { name: string }[]; segments: readonly Pick<Segment, 'id'>[] }): string[] {
  const out: string[] = [];
  const flags = new Set([...known.flags.map((f) => f.name), ...features.map((f) => f.name)]);
  const segments = new Set(known.segments.map((s) => s.id));
  for (const f of features) {
    for (const s of f.strategies) {
      if (!KNOWN_STRATEGIES.has(s.name)) out.push(`${f.name}: strategy "${s.name}" is unknown here and never matches.`);
      for (const c of s.constraints) if (!OPERATORS.has(c.operator)) out.push(`${f.name}: operator "${c.operator}" is unknown and never matches.`);
      for (const id of s.segments ?? []) if (!segments.has(id)) out.push(`${f.name}: segment ${id} does not exist, so the strategy never matches.`);
    }
    for (const d of f.dependencies ?? []) if (!flags.has(d.feature)) out.push(`${f.name}: depends on "${d.feature}", which does not exist, so it evaluates off.`);
  }
  return out;
}

/** A stored flag as the API and CLI show it: with whether it is stale and its type's lifetime. */
export function flagView(f: StoredFlag, now = Date.now()) {
  return { ...f, stale: isStale(f, now), expected_lifetime_days: FLAG_TYPES[f.type] };
}
