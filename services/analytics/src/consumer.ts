import { type AnyEvent, type EventBus, matchesPattern, timelineAttrs } from '@tollgate/shared';
import { contributionOf, ROLLUP_TYPES } from './contributions';
import type { RollupWriter, WriteOutcome } from './rollup-writer';

/** Funnel steps followed by default: request lifecycles, refusals, and journeys and flag exposures once they exist. */
export const DEFAULT_TIMELINE_TYPES = ['workflow.*', 'request.refused', 'vision.analysis_completed', 'rag.context_retrieved', 'journey.*', 'flag.exposed'];

export interface IngestStats {
  counted: number;
  duplicate: number;
  late: number;
}

const followed = new WeakMap<readonly string[], Map<string, boolean>>();

/** Whether a type is on the timeline, looked up once per type and list. */
function onTimelineType(timelineTypes: readonly string[], type: string): boolean {
  let byType = followed.get(timelineTypes);
  if (!byType) followed.set(timelineTypes, (byType = new Map()));
  let on = byType.get(type);
  if (on === undefined) byType.set(type, (on = timelineTypes.some((p) => matchesPattern(p, type))));
  return on;
}

/** What one event becomes for the writer. */
export function toCounted(event: AnyEvent, timelineTypes: readonly string[]) {
  const contribution = contributionOf(event);
  const onTimeline = event.user_id !== undefined && onTimelineType(timelineTypes, event.type);
  const t = Date.parse(event.occurred_at);
  return {
    id: event.id,
    project: event.project_id ?? '',
    t,
    contribution,
    ...(onTimeline && {
      timeline: {
        user: event.user_id!,
        entry: { t, type: event.type, corr: event.correlation_id, project: event.project_id ?? '', attrs: timelineAttrs(event.data as Record<string, unknown>) },
      },
    }),
  };
}

/**
 * Subscribes the rollups (and funnel timelines) to the bus, one batch subscription for every type
 * they need, so each read is one rollup script and the bus acks every other event undecoded.
 */
export function consumeForAnalytics(
  bus: EventBus,
  writer: RollupWriter,
  timelineTypes: readonly string[] = DEFAULT_TIMELINE_TYPES,
): { stats: IngestStats; handle: (e: AnyEvent) => Promise<WriteOutcome> } {
  const stats: IngestStats = { counted: 0, duplicate: 0, late: 0 };
  const handleMany = async (events: readonly AnyEvent[]): Promise<WriteOutcome[]> => {
    const outcomes = await writer.writeMany(events.map((e) => toCounted(e, timelineTypes)));
    for (const o of outcomes) stats[o]++;
    return outcomes;
  };
  // No pattern covered by another, so the bus matches as few patterns per type as possible.
  const all = [...new Set([...timelineTypes, ...ROLLUP_TYPES])];
  const patterns = all.filter((p) => !all.some((q) => q !== p && q.endsWith('*') && matchesPattern(q, p)));
  bus.subscribeBatch(patterns, (items) => handleMany(items.map((it) => it.event)), { name: 'analytics' });
  return { stats, handle: async (event) => (await handleMany([event]))[0]! };
}
