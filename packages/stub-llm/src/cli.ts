import { parseFaultConfig } from './faults';
import { startStub } from './server';
import type { FaultConfig, StubServer } from './types';
import { stubEndpoints } from './endpoints';

function faultsFromEnv(raw: string | undefined): FaultConfig | undefined {
  if (raw === undefined || raw.trim() === '') return undefined;
  let value: unknown;
  try {
    value = JSON.parse(raw);
  } catch {
    throw new Error('STUB_FAULTS is not valid JSON');
  }
  return parseFaultConfig(value);
}

/** Starts the stub from STUB_HOST / STUB_PORT / STUB_FAULTS / STUB_CALL_LOG (1 keeps every billed call) and closes it on SIGINT/SIGTERM. */
export async function main(env: NodeJS.ProcessEnv = process.env): Promise<StubServer> {
  const port = Number(env.STUB_PORT ?? 4010);
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`STUB_PORT is not a port: ${env.STUB_PORT ?? ''}`);
  const stub = await startStub({ host: env.STUB_HOST ?? '127.0.0.1', port, faults: faultsFromEnv(env.STUB_FAULTS), callLog: env.STUB_CALL_LOG === '1' });
  const urls = Object.entries(stubEndpoints(stub.url)).map(([provider, e]) => `${provider}: ${e.baseUrl}`);
  process.stdout.write(`stub-llm listening on ${stub.url} — ${urls.join(', ')}\n`);
  const stop = (): void => {
    stub.close().then(
      () => { process.exitCode = 0; },
      (err: unknown) => {
        process.stderr.write(`stub-llm: close failed: ${String(err)}\n`);
        process.exitCode = 1;
      },
    );
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  return stub;
}

if (require.main === module) {
  main().catch((err: unknown) => {
    process.stderr.write(`stub-llm: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  });
}
