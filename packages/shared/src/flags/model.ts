import { z } from 'zod';

/**
 * Flags in Unleash's own shape (the client-features document every Unleash SDK reads), so a
 * team's flags move over as they are. Validated here, once, where they enter: the admin API and
 * the import; the evaluator trusts what the store holds.
 */

export const CONSTRAINT_OPERATORS = [
  'IN',
  'NOT_IN',
  'STR_ENDS_WITH',
  'STR_STARTS_WITH',
  'STR_CONTAINS',
  'NUM_EQ',
  'NUM_GT',
  'NUM_GTE',
  'NUM_LT',
  'NUM_LTE',
  'DATE_AFTER',
  'DATE_BEFORE',
  'SEMVER_EQ',
  'SEMVER_GT',
  'SEMVER_LT',
  'SEMVER_GTE',
  'SEMVER_LTE',
  'REGEX',
  'IN_CIDR',
] as const;

/** Unleash's flag types and their expected lifetimes in days (null: permanent), as Unleash ships them. */
export const FLAG_TYPES = {
  release: 40,
  experiment: 40,
  operational: 7,
  'kill-switch': null,
  permission: null,
} as const satisfies Record<string, number | null>;
export type FlagType = keyof typeof FLAG_TYPES;
export const FLAG_TYPE_NAMES = Object.keys(FLAG_TYPES) as FlagType[];

/** Unleash allows URL-safe names; UTF-8 is allowed too (client spec 18), control characters are not. */
export const flagNameSchema = z
  .string()
  .min(1)
  .max(200)
  .refine((s) => !/[\u0000-\u001f\u007f]/.test(s) && s.trim() === s, 'no control characters or surrounding spaces');

const text = z.string().max(10_000);
const contextName = z.string().min(1).max(200);

export const constraintSchema = z.object({
  contextName,
  // An operator this evaluator does not know never matches, as in every Unleash SDK (client spec
  // 11): a document from a newer Unleash server still imports, and the API warns about it.
  operator: z.string().min(1).max(100),
  values: z.array(text).max(10_000).default([]),
  value: z.union([text, z.number()]).optional(),
  inverted: z.boolean().default(false),
  caseInsensitive: z.boolean().default(false),
});

export const payloadSchema = z.object({ type: z.enum(['string', 'json', 'csv', 'number']), value: text });

const stickiness = z.string().min(1).max(200);
export const variantSchema = z.object({
  name: z.string().min(1).max(200),
  weight: z.number().int().min(0).max(1000),
  weightType: z.enum(['variable', 'fix']).optional(),
  stickiness: stickiness.optional(),
  payload: payloadSchema.optional(),
  overrides: z.array(z.object({ contextName, values: z.array(text).max(10_000) })).max(100).optional(),
});

export const strategySchema = z.object({
  name: z.string().min(1).max(200),
  // Unleash sends parameters as strings; numbers are accepted and kept as sent.
  parameters: z.record(z.string(), z.union([z.string().max(100_000), z.number()])).default({}),
  constraints: z.array(constraintSchema).max(1000).default([]),
  segments: z.array(z.number().int().nonnegative()).max(1000).optional(),
  variants: z.array(variantSchema).max(100).optional(),
});

export const dependencySchema = z.object({
  feature: flagNameSchema,
  enabled: z.boolean().optional(),
  variants: z.array(z.string().min(1).max(200)).max(100).optional(),
});

/** One feature of an Unleash client-features document. */
export const featureSchema = z.object({
  name: flagNameSchema,
  type: z.enum(FLAG_TYPE_NAMES as [FlagType, ...FlagType[]]).default('release'),
  description: z.string().max(2000).nullish(),
  project: z.string().max(200).optional(),
  enabled: z.boolean(),
  stale: z.boolean().optional(),
  impressionData: z.boolean().optional(),
  strategies: z.array(strategySchema).max(1000).default([]),
  variants: z.array(variantSchema).max(100).default([]),
  dependencies: z.array(dependencySchema).max(100).optional(),
  /** When the flag was first stored; Unleash's admin API name for it. Set by the store. */
  createdAt: z.iso.datetime().optional(),
});
export type Feature = z.infer<typeof featureSchema>;
export type FeatureInput = z.input<typeof featureSchema>;

export const segmentSchema = z.object({
  id: z.number().int().nonnegative(),
  name: z.string().max(200).optional(),
  constraints: z.array(constraintSchema).max(1000).default([]),
});
export type Segment = z.infer<typeof segmentSchema>;

/** `GET /api/client/features` of an Unleash server: what `PUT /v1/flags/import?format=unleash` takes. */
export const clientFeaturesSchema = z.object({
  version: z.number().int().min(1).max(2),
  features: z.array(featureSchema).max(10_000),
  segments: z.array(segmentSchema).max(10_000).default([]),
});
export type ClientFeatures = z.infer<typeof clientFeaturesSchema>;

/** An Unleash context as the evaluate API takes it; `properties` carries custom fields. */
export const flagContextSchema = z.object({
  userId: z.string().max(500).optional(),
  sessionId: z.string().max(500).optional(),
  remoteAddress: z.string().max(100).optional(),
  environment: z.string().max(200).optional(),
  appName: z.string().max(200).optional(),
  currentTime: z.iso.datetime({ offset: true }).optional(),
  properties: z.record(z.string().max(200), z.union([z.string().max(10_000), z.number()])).optional(),
});
export type FlagContextInput = z.infer<typeof flagContextSchema>;

/** Stored beside each feature: who changed it last, and when. */
export interface FlagMeta {
  updated_at: string;
  updated_by: string;
}

/** A flag as the store keeps it: the Unleash feature plus its metadata. */
export interface StoredFlag extends Feature {
  createdAt: string;
  meta: FlagMeta;
}

/** Past the type's expected lifetime, or marked stale: time to remove the flag from the code. */
export function isStale(flag: Pick<StoredFlag, 'type' | 'createdAt' | 'stale'>, now = Date.now()): boolean {
  if (flag.stale) return true;
  const days = FLAG_TYPES[flag.type];
  if (days === null) return false;
  return now - Date.parse(flag.createdAt) > days * 86_400_000;
}
