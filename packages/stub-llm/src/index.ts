export { startStub } from './server';
export { PROVIDER_PATHS, stubEndpoints } from './endpoints';
export { parseFaultConfig } from './faults';
export { NO_SEARCH_MARKER } from './grounding';
export {
  countTokens,
  GEMINI_IMAGE_TOKENS,
  OPENAI_IMAGE_TOKENS,
  OPENAI_REPLY_PRIMING_TOKENS,
  OPENAI_TOKENS_PER_MESSAGE,
} from './tokens';
export type {
  BilledCall,
  BilledUsage,
  FaultConfig,
  FaultKind,
  FaultRates,
  ModelStats,
  Provider,
  ScriptedFault,
  StubOptions,
  StubServer,
  StubStats,
} from './types';

// The root `pnpm stub` script runs this file directly.
if (require.main === module) {
  void import('./cli').then(({ main }) => main()).catch((err: unknown) => {
    process.stderr.write(`stub-llm: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  });
}
