import type Redis from 'ioredis';
import { LuaScript } from '../lua';
import type { EventBus } from '../bus/event-bus';
import type { EventData } from '../events/catalog';
import { keyspace } from '../keys';
import type { ClientFeatures, Feature, Segment, StoredFlag } from './model';
import APPLY_FLAGS from './apply-flags-4.lua';

/**
 * The flag store in Redis: one hash of flags, one of segments, a version every change bumps,
 * and a capped history stream. A change is written with its audit entries and the new version
 * in one script, against the version it was computed from, so no change is half-applied and a
 * history entry's `before` is exactly what the change replaced.
 */
export function flagKeys(namespace: string) {
  const k = keyspace(namespace);
  return { flags: k('flags', 'defs'), segments: k('flags', 'segments'), version: k('flags', 'version'), history: k('flags', 'history') };
}

const APPLY = new LuaScript(APPLY_FLAGS);

export interface FlagState {
  version: number;
  flags: StoredFlag[];
  segments: Segment[];
}

/** One audited change; `before`/`after` are null where the flag or segment did not exist. */
export type FlagChange = EventData<'flag.changed'>;

export interface ApplyResult {
  version: number;
  changes: FlagChange[];
}

const HISTORY_CAP = 10_000;
const MAX_ATTEMPTS = 20;

export class FlagConflictError extends Error {
  readonly code = 'flag_conflict';
  constructor() {
    super('The flags changed concurrently too often to apply this change; try again.');
  }
}

const parseFlags = (raw: Record<string, string>) => Object.values(raw).map((j) => JSON.parse(j) as StoredFlag);
const parseSegments = (raw: Record<string, string>) => Object.values(raw).map((j) => JSON.parse(j) as Segment);

/** The feature without what the store stamps on it: what "did it change?" compares. */
function definition(f: Feature | StoredFlag): string {
  const { meta: _meta, createdAt: _createdAt, ...rest } = f as StoredFlag;
  return JSON.stringify(rest);
}

export interface Edit {
  /** Flags to write (created or replaced). */
  put?: Feature[];
  /** Flag names to remove. */
  remove?: string[];
  putSegments?: Segment[];
  removeSegments?: number[];
}

export class FlagStore {
  readonly keys: ReturnType<typeof flagKeys>;

  constructor(
    private readonly redis: Redis,
    namespace: string,
  ) {
    this.keys = flagKeys(namespace);
  }

  /** Everything, at one version (one MULTI). */
  async load(): Promise<FlagState> {
    const res = await this.redis.multi().get(this.keys.version).hgetall(this.keys.flags).hgetall(this.keys.segments).exec();
    if (!res) throw new Error('flag store read was aborted');
    for (const [err] of res) if (err) throw err;
    const [[, version], [, flags], [, segments]] = res as [[null, string | null], [null, Record<string, string>], [null, Record<string, string>]];
    return { version: Number(version ?? 0), flags: parseFlags(flags), segments: parseSegments(segments) };
  }

  async version(): Promise<number> {
    return Number((await this.redis.get(this.keys.version)) ?? 0);
  }

  async get(name: string): Promise<StoredFlag | undefined> {
    const raw = await this.redis.hget(this.keys.flags, name);
    return raw ? (JSON.parse(raw) as StoredFlag) : undefined;
  }

  /**
   * Applies `edit(current)` atomically; recomputed and retried if another writer got in between.
   * Writes that change nothing are not applied or audited.
   */
  async apply(actor: string, edit: (current: FlagState) => Edit, now: () => Date = () => new Date()): Promise<ApplyResult> {
    for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
      const current = await this.load();
      const e = edit(current);
      const at = now().toISOString();
      const byName = new Map(current.flags.map((f) => [f.name, f]));
      const segById = new Map(current.segments.map((s) => [s.id, s]));
      const flagWrites: Array<[string, string]> = [];
      const segWrites: Array<[string, string]> = [];
      const changes: Array<Omit<FlagChange, 'version'>> = [];

      for (const f of e.put ?? []) {
        const before = byName.get(f.name);
        if (before && definition(before) === definition(f)) continue;
        const after: StoredFlag = { ...f, createdAt: before?.createdAt ?? f.createdAt ?? at, meta: { updated_at: at, updated_by: actor } };
        flagWrites.push([f.name, JSON.stringify(after)]);
        changes.push({ name: f.name, kind: 'flag', action: before ? 'updated' : 'created', actor, at, before: toRecord(before), after: toRecord(after) });
      }
      for (const name of e.remove ?? []) {
        const before = byName.get(name);
        if (!before) continue;
        flagWrites.push([name, '']);
        changes.push({ name, kind: 'flag', action: 'deleted', actor, at, before: toRecord(before), after: null });
      }
      for (const s of e.putSegments ?? []) {
        const before = segById.get(s.id);
        if (before && JSON.stringify(before) === JSON.stringify(s)) continue;
        segWrites.push([String(s.id), JSON.stringify(s)]);
        changes.push({ name: `segment:${s.id}`, kind: 'segment', action: before ? 'updated' : 'created', actor, at, before: toRecord(before), after: toRecord(s) });
      }
      for (const id of e.removeSegments ?? []) {
        const before = segById.get(id);
        if (!before) continue;
        segWrites.push([String(id), '']);
        changes.push({ name: `segment:${id}`, kind: 'segment', action: 'deleted', actor, at, before: toRecord(before), after: null });
      }
      if (!changes.length) return { version: current.version, changes: [] };

      const args: Array<string | number> = [current.version, HISTORY_CAP, flagWrites.length, ...flagWrites.flat(), segWrites.length, ...segWrites.flat(), changes.length];
      for (const c of changes) args.push(JSON.stringify(c));
      const version = Number(await APPLY.run(this.redis, [this.keys.flags, this.keys.segments, this.keys.version, this.keys.history], args));
      if (version > 0) return { version, changes: changes.map((c) => ({ ...c, version })) };
    }
    throw new FlagConflictError();
  }

  /** Newest first; `name` filters to one flag (or `segment:<id>`). Scans at most the capped stream. */
  async history(opts: { name?: string; limit?: number } = {}): Promise<FlagChange[]> {
    const limit = Math.min(opts.limit ?? 50, 1000);
    const out: FlagChange[] = [];
    let end = '+';
    for (let scanned = 0; out.length < limit && scanned < HISTORY_CAP + 1000; ) {
      const page = (await this.redis.xrevrange(this.keys.history, end, '-', 'COUNT', 500)) as Array<[string, string[]]>;
      if (!page.length) break;
      for (const [id, fields] of page) {
        scanned++;
        end = `(${id}`;
        const entry = fieldOf(fields, 'entry');
        if (!entry) continue;
        const change = { ...(JSON.parse(entry) as Omit<FlagChange, 'version'>), version: Number(fieldOf(fields, 'version')) };
        if (opts.name === undefined || change.name === opts.name) out.push(change);
        if (out.length >= limit) break;
      }
      if (page.length < 500) break;
    }
    return out;
  }
}

function fieldOf(fields: string[], name: string): string | undefined {
  for (let i = 0; i < fields.length; i += 2) if (fields[i] === name) return fields[i + 1];
  return undefined;
}

function toRecord(v: object | undefined): Record<string, unknown> | null {
  return v ? (JSON.parse(JSON.stringify(v)) as Record<string, unknown>) : null;
}

/**
 * Announces an applied change: one audit event per flag or segment, then `flags.changed`, which
 * every instance's snapshot reloads on. The history in Redis already holds the audit; if this
 * publish fails, the snapshots' polling still picks the change up.
 */
export async function publishFlagChanges(bus: EventBus, result: ApplyResult, actor: string): Promise<void> {
  if (!result.changes.length) return;
  const correlation_id = `flags:${result.version}`;
  await bus.publishMany([
    ...result.changes.map((c) => ({ type: 'flag.changed' as const, data: c, meta: { correlation_id } })),
    {
      type: 'flags.changed' as const,
      data: { version: result.version, names: result.changes.map((c) => c.name).slice(0, 10_000), actor },
      meta: { correlation_id },
    },
  ]);
}

/** An import: the document's flags and segments written; with `replace`, everything it does not name removed. */
export function importEdit(doc: ClientFeatures, replace: boolean): (current: FlagState) => Edit {
  return (current) => {
    const named = new Set(doc.features.map((f) => f.name));
    const segIds = new Set(doc.segments.map((s) => s.id));
    return {
      put: doc.features,
      putSegments: doc.segments,
      remove: replace ? current.flags.filter((f) => !named.has(f.name)).map((f) => f.name) : [],
      removeSegments: replace ? current.segments.filter((s) => !segIds.has(s.id)).map((s) => s.id) : [],
    };
  };
}
