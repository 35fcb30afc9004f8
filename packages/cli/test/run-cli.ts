import { type ChildProcessWithoutNullStreams, execFile, spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { resolve } from 'node:path';
import { createRedis, deleteByPrefix, hashTagged } from '@tollgate/shared';
import { TEST_REDIS_URL } from '@tollgate/shared/src/testing';

/** The real binary, as an operator runs it. */
export const BIN = resolve(__dirname, '../bin/tollgate.js');
const ROOT = resolve(__dirname, '../../..');

export interface Result {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** A prefix of the test file's own (TOLLGATE_PREFIX allows no colons), its namespace and a connection. */
export function cliRedis(label: string) {
  const prefix = `test-cli-${label}-${randomUUID().slice(0, 8)}`;
  const namespace = hashTagged(prefix);
  const redis = createRedis(TEST_REDIS_URL, { name: `test-cli-${label}` });
  return {
    prefix,
    namespace,
    redis,
    cleanup: async () => {
      await deleteByPrefix(redis, namespace);
      await redis.quit();
    },
  };
}

function childEnv(prefix: string, extra: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, REDIS_URL: TEST_REDIS_URL, TOLLGATE_PREFIX: prefix };
  // Colour is decided by the test, not by whatever the runner exports.
  delete env.FORCE_COLOR;
  delete env.NO_COLOR;
  return { ...env, ...extra };
}

/** Runs one command to completion. */
export function cli(prefix: string, args: string[], extra: NodeJS.ProcessEnv = {}): Promise<Result> {
  return new Promise((done) => {
    execFile(process.execPath, [BIN, ...args], { cwd: ROOT, env: childEnv(prefix, extra), timeout: 45_000 }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : null) : 0;
      done({ code, stdout, stderr });
    });
  });
}

/** A following command (`alerts tail`, `events tail`) running in the background. */
export class Follower {
  readonly proc: ChildProcessWithoutNullStreams;
  stdout = '';
  stderr = '';
  private readonly exited: Promise<Result>;

  constructor(prefix: string, args: string[], extra: NodeJS.ProcessEnv = {}) {
    this.proc = spawn(process.execPath, [BIN, ...args], { cwd: ROOT, env: childEnv(prefix, extra) });
    this.proc.stdout.on('data', (d: Buffer) => (this.stdout += d.toString()));
    this.proc.stderr.on('data', (d: Buffer) => (this.stderr += d.toString()));
    this.exited = new Promise((done) => this.proc.on('close', (code) => done({ code, stdout: this.stdout, stderr: this.stderr })));
  }

  /** Waits until stdout or stderr (`where`) matches. */
  async until(where: 'stdout' | 'stderr', pattern: RegExp, timeoutMs = 30_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!pattern.test(this[where])) {
      if (Date.now() > deadline || this.proc.exitCode !== null) {
        throw new Error(`no ${pattern} on ${where}; stdout: ${this.stdout} stderr: ${this.stderr} exit: ${this.proc.exitCode}`);
      }
      await new Promise((r) => setTimeout(r, 25));
    }
  }

  /** Ctrl-C, and how it ended. */
  async interrupt(): Promise<Result> {
    this.proc.kill('SIGINT');
    const timer = setTimeout(() => this.proc.kill('SIGKILL'), 5_000);
    const result = await this.exited;
    clearTimeout(timer);
    return result;
  }
}

/** Lines of output, without the trailing empty one. */
export const lines = (text: string) => text.split('\n').filter((l) => l.length > 0);
