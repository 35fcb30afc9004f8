// Everything the CLI uses from the rest of the workspace, in one place. Deep paths on purpose:
// the @tollgate/shared index also loads the provider SDKs, BullMQ, winston and opossum, which
// would more than double the start-up time of every command (about 1.4 s instead of 0.55 s)
// for code the CLI never runs. These are the same modules the index re-exports.
export { ConfigError, loadConfig } from '@tollgate/shared/src/config';
export { hashTagged } from '@tollgate/shared/src/keys';
export { createRedis } from '@tollgate/shared/src/redis';
export { TollgateError } from '@tollgate/shared/src/errors/tollgate-error';
export { toUtcDate, type Period } from '@tollgate/shared/src/time/periods';
export { formatUsd } from '@tollgate/shared/src/pricing/price';
export { EVENT_TYPES } from '@tollgate/shared/src/events/catalog';
export type { AnyEvent } from '@tollgate/shared/src/events/envelope';
export { EventBus } from '@tollgate/shared/src/bus/event-bus';
export { EventTail } from '@tollgate/shared/src/bus/event-tail';
export { matchesPattern } from '@tollgate/shared/src/bus/patterns';
export { GROUP_DIMENSIONS, type GroupDimension } from '@tollgate/shared/src/ledger/ledger-keys';
export { LedgerReader, money, type Money, type Scope } from '@tollgate/shared/src/ledger/ledger-reader';
export {
  type AlertRecord,
  alertingKeys,
  type Budget,
  BUDGET_SCOPES,
  budgetScopeIdSchema,
  BudgetStore,
  DEFAULT_THRESHOLDS_PCT,
  GLOBAL_SCOPE_ID,
  parseAlertEntry,
  type PeriodBudget,
  type PeriodStatus,
} from '@tollgate/shared/src/alerting';
// API keys: the store the gateway authenticates with (hashing included); the CLI writes through the same code.
export { ApiKeyStore, type ApiKeyRecord, KEY_SCOPES, type KeyScope, newKeySchema } from '@tollgate/shared/src/api-keys';
export { ResponseCache } from '@tollgate/shared/src/cache/response-cache';
export { CacheSettingsStore, type CacheSettings } from '@tollgate/shared/src/cache/cache-settings';
// Flags: the store and the admin helpers only (not the evaluator or the OpenFeature SDK).
export { clientFeaturesSchema, featureSchema, FLAG_TYPE_NAMES, flagNameSchema, type FlagType, type StoredFlag } from '@tollgate/shared/src/flags/model';
export { FlagStore, importEdit, publishFlagChanges } from '@tollgate/shared/src/flags/store';
export { FlagInputError, flagView, flagWarnings, prepareFeature } from '@tollgate/shared/src/flags/admin';
export { AnalyticsReader, DIMENSIONS, type Dimension, FunnelReader, GRANULARITIES, type Granularity, METRICS, type Metric, OVERVIEW_PERIODS, type OverviewPeriod } from '@tollgate/shared/src/analytics';
export { EXAMPLE_TEMPLATES, JOURNEY_STATES, JourneyStore, type JourneyState, type JourneyView, type TemplateStats } from '@tollgate/shared/src/journeys';
// Prices: the table (seed and PRICE_TABLE_FILE) and the store the price API writes through.
export { buildPriceTable, isExternal, loadPriceTable, SEED_PRICE_TABLE, selectPriceVersion } from '@tollgate/shared/src/pricing/price-table';
export { PriceStore, priceVersionInputSchema } from '@tollgate/shared/src/pricing/price-store';
