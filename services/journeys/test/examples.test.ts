import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { EXAMPLE_TEMPLATES, templateInputSchema } from '@tollgate/shared';

test('docs/journeys.md shows exactly the example templates the start-up data publishes, and each is valid', () => {
  const doc = readFileSync(join(__dirname, '..', '..', '..', 'docs', 'journeys.md'), 'utf8');
  const blocks = [...doc.matchAll(/```json\n([\s\S]*?)\n```/g)].map((m) => JSON.parse(m[1]!));
  expect(blocks).toEqual([EXAMPLE_TEMPLATES['kitchen-renovation'], EXAMPLE_TEMPLATES['bathroom-refresh']]);
  for (const t of Object.values(EXAMPLE_TEMPLATES)) expect(templateInputSchema.safeParse(t).success).toBe(true);
  // A template whose dependency is not an earlier step is refused.
  const bad = templateInputSchema.safeParse({ title: 'x', steps: [{ key: 'a', title: 'A', depends_on: ['b'], completion: { event: 'chat.response_generated' } }, { key: 'b', title: 'B', completion: { event: 'chat.response_generated' } }] });
  expect(bad.success ? [] : bad.error.issues.map((i) => i.path.join('.'))).toEqual(['steps.0.depends_on.0']);
});
