/**
 * Running the docker CLI (and apt, debootstrap) from `pnpm test:compose`: every command has a
 * deadline, its output is kept for the error message, and long ones can stream to a log file.
 */
import { spawn } from 'node:child_process';
import { createWriteStream } from 'node:fs';

export interface RunResult {
  code: number | null;
  stdout: string;
  stderr: string;
  ms: number;
}

export interface RunOptions {
  timeoutMs?: number;
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  input?: string;
  /** Appends stdout and stderr here as they come (the build logs). */
  logFile?: string;
  /** Called with each line of output as it comes. */
  onLine?: (line: string) => void;
}

/** A command that failed: its exit, and the end of what it printed. */
export class CommandError extends Error {
  readonly code = 'command_failed';
  constructor(readonly command: string, readonly result: RunResult) {
    const tail = `${result.stderr}\n${result.stdout}`.trim().split('\n').slice(-25).join('\n');
    super(`\`${command}\` ${result.code === null ? 'timed out or was killed' : `exited ${result.code}`} after ${(result.ms / 1000).toFixed(1)} s${tail ? `:\n${tail}` : ''}`);
  }
}

const KEEP = 256 * 1024; // the end of the output is what explains a failure

export function run(cmd: string, args: string[], opts: RunOptions = {}): Promise<RunResult> {
  const started = Date.now();
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { env: opts.env ?? process.env, cwd: opts.cwd, stdio: [opts.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'] });
    const log = opts.logFile ? createWriteStream(opts.logFile, { flags: 'a' }) : undefined;
    let stdout = '';
    let stderr = '';
    let partial = '';
    const take = (chunk: Buffer, which: 'out' | 'err') => {
      const text = chunk.toString();
      if (which === 'out') stdout = (stdout + text).slice(-KEEP);
      else stderr = (stderr + text).slice(-KEEP);
      log?.write(text);
      if (opts.onLine) {
        const lines = (partial + text).split('\n');
        partial = lines.pop() ?? '';
        for (const line of lines) opts.onLine(line);
      }
    };
    child.stdout!.on('data', (c: Buffer) => take(c, 'out'));
    child.stderr!.on('data', (c: Buffer) => take(c, 'err'));
    const timer = opts.timeoutMs ? setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs) : undefined;
    child.on('error', (err) => {
      stderr += `${err.message}\n`;
    });
    child.on('close', (code) => {
      if (timer) clearTimeout(timer);
      log?.end();
      resolve({ code, stdout, stderr, ms: Date.now() - started });
    });
    if (child.stdin) {
      child.stdin.on('error', () => undefined); // a command that exits without reading its input
      child.stdin.end(opts.input);
    }
  });
}

/** `run`, throwing a CommandError unless it exits 0. */
export async function must(cmd: string, args: string[], opts: RunOptions = {}): Promise<RunResult> {
  const r = await run(cmd, args, opts);
  if (r.code !== 0) throw new CommandError([cmd, ...args].join(' '), r);
  return r;
}

/** Whether a program is on PATH. */
export async function onPath(name: string): Promise<boolean> {
  return (await run('sh', ['-c', `command -v ${name}`], { timeoutMs: 5_000 })).code === 0;
}

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

export const seconds = (ms: number) => `${(ms / 1000).toFixed(1)} s`;
