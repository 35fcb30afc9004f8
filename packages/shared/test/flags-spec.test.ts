import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { applyDelta, clientFeaturesSchema, type DeltaEvent, featureSchema, FlagEngine, segmentSchema } from '../src/flags';

/**
 * Unleash's client specification, every case of every file its index lists, through the
 * evaluator the services use (the document is validated by the import schema first, as an
 * import would be). The delta-API files (19, 20) hold a list of delta events instead of a
 * document: they are applied in order, then evaluated like the rest.
 */
const SPEC_DIR = join(dirname(require.resolve('@unleash/client-specification/package.json')), 'specifications');
const index = JSON.parse(readFileSync(join(SPEC_DIR, 'index.json'), 'utf8')) as string[];

interface SpecFile {
  name: string;
  state: unknown;
  tests?: Array<{ description: string; context: Record<string, unknown>; toggleName: string; expectedResult: boolean }>;
  variantTests?: Array<{ description: string; context: Record<string, unknown>; toggleName: string; expectedResult: Record<string, unknown> }>;
}

function engineFor(spec: SpecFile): FlagEngine {
  const state = spec.state as { events?: unknown[] };
  if (Array.isArray(state.events)) {
    const events = state.events.map((raw) => {
      const e = raw as Record<string, unknown>;
      if (e.type === 'hydration') {
        return { type: 'hydration', features: featureSchema.array().parse(e.features), segments: segmentSchema.array().parse(e.segments ?? []) };
      }
      if (e.type === 'feature-updated') return { type: e.type, feature: featureSchema.parse(e.feature) };
      if (e.type === 'segment-updated') return { type: e.type, segment: segmentSchema.parse(e.segment) };
      return e;
    }) as DeltaEvent[];
    return new FlagEngine(applyDelta({ features: [], segments: [] }, events), { appName: spec.name });
  }
  return new FlagEngine(clientFeaturesSchema.parse(spec.state), { appName: spec.name });
}

const files = index.map((file) => JSON.parse(readFileSync(join(SPEC_DIR, file), 'utf8')) as SpecFile);

test('the index lists every specification file and each has cases', () => {
  expect(files.length).toBeGreaterThanOrEqual(22);
  for (const f of files) expect((f.tests?.length ?? 0) + (f.variantTests?.length ?? 0)).toBeGreaterThan(0);
});

describe.each(files.map((f) => [f.name, f] as const))('%s', (_name, spec) => {
  const engine = engineFor(spec);
  if (spec.tests?.length) {
    test.each(spec.tests.map((t) => [t.description, t] as const))('%s', (_d, t) => {
      expect(engine.isEnabled(t.toggleName, t.context)).toBe(t.expectedResult);
      expect(engine.evaluate(t.toggleName, t.context).enabled).toBe(t.expectedResult);
    });
  }
  if (spec.variantTests?.length) {
    test.each(spec.variantTests.map((t) => [t.description, t] as const))('%s', (_d, t) => {
      const result = engine.evaluate(t.toggleName, t.context);
      expect(result.variant).toStrictEqual(t.expectedResult);
      expect(result.enabled).toBe(t.expectedResult.feature_enabled);
    });
  }
});
