import { type AnyEvent, type Series, sketchBin } from '@tollgate/shared';

/** What one event adds to its bucket: the series it belongs to and the sums it increments. */
export interface Contribution {
  series: Series;
  sums: Array<[metric: string, amount: number]>;
}

/** Event types that feed the rollups. */
export const ROLLUP_TYPES = ['workflow.started', 'workflow.completed', 'workflow.failed', 'request.refused', 'cost.recorded', 'circuit.opened'] as const;

interface Tags {
  route?: string;
  streamed?: boolean;
  cache?: string;
  flag_variant?: string;
  journey?: string;
  provider?: string;
  model?: string;
}

/**
 * An event's series, built in one object: this runs for every event read, and conditional
 * spreads allocated an object per present field.
 */
function seriesOf(e: AnyEvent, service: string, operation: string | undefined, d: Tags): Series {
  const s: Series = { service };
  if (e.user_id !== undefined) s.user = e.user_id;
  if (e.project_id !== undefined) s.project = e.project_id;
  if (operation) s.operation = operation;
  if (d.provider) s.provider = d.provider;
  if (d.model) s.model = d.model;
  if (d.route) s.route = d.route;
  if (d.streamed !== undefined) s.streamed = String(d.streamed);
  if (d.cache) s.cache = d.cache;
  if (d.flag_variant) s.flag_variant = d.flag_variant;
  if (d.journey) s.journey = d.journey;
  return s;
}

/**
 * The rollup contribution of an event, or null for a type that feeds none. Latency sketches hold
 * answered requests only; failures are counted by category.
 */
export function contributionOf(e: AnyEvent): Contribution | null {
  switch (e.type) {
    case 'workflow.started':
      return { series: seriesOf(e, e.source, e.data.workflow, e.data), sums: [['req', 1], ['started', 1]] };
    case 'workflow.completed': {
      const d = e.data;
      const latency = d.latency_ms ?? d.duration_ms;
      const sums: Contribution['sums'] = [['ok', 1], [`lat:${sketchBin(latency)}`, 1], ['lat_sum', latency]];
      if (d.attempts !== undefined) sums.push(['attempts', d.attempts]);
      if (d.fallback_used) sums.push(['fallbacks', 1]);
      if (d.ttft_ms !== undefined) sums.push([`ttft:${sketchBin(d.ttft_ms)}`, 1], ['ttft_sum', d.ttft_ms]);
      if (d.generation_ms !== undefined && d.generation_ms > 0 && d.output_tokens !== undefined) sums.push(['gen_ms', d.generation_ms], ['gen_tok', d.output_tokens]);
      return { series: seriesOf(e, e.source, d.workflow, d), sums };
    }
    case 'workflow.failed': {
      const d = e.data;
      // A worker that found the budget used up refused the request; it did not fail at a provider.
      const sums: Contribution['sums'] = [[d.error.category === 'budget_exceeded' ? 'refused_budget' : `fail:${d.error.category}`, 1]];
      if (d.attempts) sums.push(['attempts', d.attempts]);
      if (d.fallback_used) sums.push(['fallbacks', 1]);
      return { series: seriesOf(e, e.source, d.workflow, d), sums };
    }
    case 'request.refused':
      return {
        series: seriesOf(e, e.source, e.data.workflow, { route: e.data.route, streamed: e.data.streamed }),
        sums: [['req', 1], [e.data.reason === 'rate_limited' ? 'rate_limited' : 'refused_budget', 1]],
      };
    case 'cost.recorded': {
      const d = e.data;
      const sums: Contribution['sums'] = [['cost', d.amount_micros], ['cost_n', 1]];
      if (d.avoided_micros) sums.push(['avoided', d.avoided_micros]);
      if (d.units.input_tokens) sums.push(['tok_in', d.units.input_tokens]);
      if (d.units.output_tokens) sums.push(['tok_out', d.units.output_tokens]);
      return { series: seriesOf(e, d.service, d.operation, { provider: d.provider, model: d.model, ...(d.cached && { cache: 'hit' }) }), sums };
    }
    case 'circuit.opened':
      return { series: { service: e.source, operation: e.data.operation, provider: e.data.provider }, sums: [['breaker_open', 1]] };
    default:
      return null;
  }
}
