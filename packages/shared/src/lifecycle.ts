import type { Logger } from 'winston';

/**
 * Runs the closers once on SIGINT/SIGTERM, in order, then exits; a second signal exits at once.
 * Services stop taking work first and close connections last.
 */
export function onShutdown(logger: Logger, closers: Array<[name: string, close: () => Promise<unknown> | unknown]>): void {
  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) process.exit(1);
    stopping = true;
    logger.info('shutting down', { signal });
    for (const [name, close] of closers) {
      try {
        await close();
      } catch (err) {
        logger.warn('shutdown step failed', { step: name, error: (err as Error).message });
      }
    }
    logger.info('stopped');
    process.exit(0);
  };
  process.once('SIGINT', () => void stop('SIGINT'));
  process.once('SIGTERM', () => void stop('SIGTERM'));
}
