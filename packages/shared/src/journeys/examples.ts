import type { TemplateInput } from './schema';

/**
 * The two example templates, published at start-up (`pnpm start`, the journey service) when
 * missing or changed, and shown in docs/journeys.md.
 */
export const EXAMPLE_TEMPLATES: Record<string, TemplateInput> = {
  'kitchen-renovation': {
    title: 'Kitchen renovation plan',
    description: 'From a first description to a costed plan: brief, photo analysis, plan, then optional material picks.',
    abandon_after_seconds: 7 * 86_400,
    steps: [
      { key: 'brief', title: 'Describe the kitchen and the goal', weight: 1, completion: { event: 'chat.response_generated' } },
      { key: 'photos', title: 'Analyse a photo of the room', weight: 2, depends_on: ['brief'], completion: { event: 'vision.analysis_completed' } },
      { key: 'plan', title: 'Draft the renovation plan', weight: 2, depends_on: ['photos'], completion: { event: 'chat.response_generated' } },
      { key: 'materials', title: 'Choose materials', required: false, depends_on: ['plan'], completion: { event: 'chat.response_generated', match: { step: 'materials' } } },
    ],
  },
  'bathroom-refresh': {
    title: 'Bathroom refresh',
    description: 'A lighter journey: a photo first, a high-quality look at the fixtures, then a shopping list.',
    abandon_after_seconds: 3 * 86_400,
    steps: [
      { key: 'photo', title: 'Analyse a photo of the bathroom', weight: 1, completion: { event: 'vision.analysis_completed' } },
      { key: 'fixtures', title: 'Inspect the fixtures closely', weight: 1, depends_on: ['photo'], completion: { event: 'vision.analysis_completed', match: { quality: 'high' } } },
      { key: 'shopping-list', title: 'Write the shopping list', weight: 2, depends_on: ['photo'], completion: { event: 'chat.response_generated', match: { step: 'shopping-list' } } },
    ],
  },
};
