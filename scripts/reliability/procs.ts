/**
 * Child processes of the reliability suite: each one in its own process group (the services run
 * as one plain node process each, but the group makes sure a SIGKILL also takes anything a
 * process started), output to a log file, every exit recorded with whether the suite asked for it.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { createWriteStream, type WriteStream } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';

export interface ExitRecord {
  name: string;
  generation: number;
  code: number | null;
  signal: NodeJS.Signals | null;
  /** The suite killed or stopped it on purpose. */
  expected: boolean;
  at: number;
}

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

const handedOut = new Set<number>();
/** A free loopback port (bound and released at once), never one this run handed out before. */
export async function freePort(): Promise<number> {
  for (;;) {
    const port = await new Promise<number>((resolve, reject) => {
      const server = createServer();
      server.once('error', reject);
      server.listen(0, '127.0.0.1', () => {
        const address = server.address();
        const p = typeof address === 'object' && address ? address.port : 0;
        server.close(() => resolve(p));
      });
    });
    if (!handedOut.has(port)) {
      handedOut.add(port);
      return port;
    }
  }
}

export class Proc {
  generation = 0;
  private child?: ChildProcess;
  private log?: WriteStream;
  private expectExit = false;
  /** Set by stop(): the run is ending, so nothing starts this process again. */
  private closed = false;
  private exited?: Promise<void>;
  private readonly tail: string[] = [];

  constructor(
    readonly name: string,
    private readonly command: string,
    private readonly args: string[],
    private readonly env: NodeJS.ProcessEnv,
    private readonly opts: { cwd: string; logDir: string; exits: ExitRecord[] },
  ) {}

  get pid(): number | undefined {
    return this.child?.pid;
  }

  alive(): boolean {
    return !!this.child && this.child.exitCode === null && this.child.signalCode === null;
  }

  start(): void {
    if (this.closed) return;
    if (this.alive()) throw new Error(`${this.name} is already running`);
    this.generation++;
    this.expectExit = false;
    this.log = createWriteStream(join(this.opts.logDir, `${this.name}.${this.generation}.log`));
    const child = spawn(this.command, this.args, {
      cwd: this.opts.cwd,
      env: { ...process.env, ...this.env },
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true,
    });
    this.child = child;
    const generation = this.generation;
    const log = this.log;
    for (const stream of [child.stdout, child.stderr]) {
      stream?.on('data', (chunk: Buffer) => {
        log.write(chunk);
        for (const line of chunk.toString().split('\n')) {
          if (!line.trim()) continue;
          this.tail.push(`[${this.name}#${generation}] ${line.slice(0, 400)}`);
          if (this.tail.length > 40) this.tail.shift();
        }
      });
    }
    this.exited = new Promise((resolve) => {
      child.once('exit', (code, signal) => {
        this.opts.exits.push({ name: this.name, generation, code, signal, expected: this.expectExit, at: Date.now() });
        log.end();
        resolve();
      });
    });
  }

  /** Signals the whole process group (SIGKILL) or the process itself (SIGTERM: its graceful shutdown); waits for the exit. */
  async kill(signal: NodeJS.Signals, timeoutMs = 10_000): Promise<void> {
    const child = this.child;
    if (!child?.pid || !this.alive()) return;
    this.expectExit = true;
    try {
      if (signal === 'SIGKILL') process.kill(-child.pid, 'SIGKILL');
      else child.kill(signal);
    } catch {
      // already gone
    }
    const done = await Promise.race([this.exited!.then(() => true), sleep(timeoutMs).then(() => false)]);
    if (!done) {
      try {
        process.kill(-child.pid, 'SIGKILL');
      } catch {
        // already gone
      }
      await Promise.race([this.exited, sleep(2_000)]);
    }
    // Whatever is left in its group (children of the process, if it started any).
    try {
      process.kill(-child.pid, 'SIGKILL');
    } catch {
      // group empty
    }
  }

  /** Graceful stop for the end of the run; the process is not started again after it. */
  stop(): Promise<void> {
    this.closed = true;
    return this.kill('SIGTERM', 8_000);
  }

  recentOutput(): string[] {
    return [...this.tail];
  }
}

/** Polls `url` until it answers 200 (bounded). */
export async function waitReady(url: string, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    try {
      const r = await fetch(url, { signal: AbortSignal.timeout(2_000) });
      if (r.status === 200) return true;
    } catch {
      // not up yet
    }
    await sleep(200);
  }
  return false;
}
