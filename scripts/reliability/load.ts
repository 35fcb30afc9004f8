/**
 * The bounded loopback load: `concurrency` loops, each sending one request at a time to the
 * gateway until the time or count runs out. Every request gets its own request id and exactly one
 * recorded outcome: the HTTP answer (reply or error body) or the transport failure, with a client
 * deadline so nothing can wait forever.
 */
import { createHash, randomBytes, randomUUID } from 'node:crypto';

export type RequestKind = 'chat' | 'vision';

export interface Outcome {
  id: string;
  kind: RequestKind;
  key: number;
  /** SHA-256 of the request's (unique) message or prompt: how the stub's call log names it. */
  ask: string;
  sentAt: number;
  doneAt: number;
  /** HTTP status, absent on a transport failure or a client timeout. */
  status?: number;
  body?: unknown;
  /** The connection failed or was reset (the gateway is never restarted, so this counts against it). */
  transportError?: string;
  /** No answer before the client deadline (the request's deadline plus a margin). */
  timedOut?: boolean;
}

export interface LoadOptions {
  gatewayUrl: string;
  keys: string[];
  concurrency: number;
  durationMs: number;
  maxRequests: number;
  /** Share of vision requests, 0..1. */
  visionShare: number;
  clientTimeoutMs: number;
}

const WORDS = ['budget', 'ledger', 'circuit', 'breaker', 'provider', 'latency', 'retry', 'fallback', 'invoice', 'alert', 'stream', 'token', 'vision', 'cache', 'queue'];

/** A message of varying length; the reference makes it unique, so each billed call names its request. */
function message(ref: string): string {
  const n = 3 + Math.floor(Math.random() * 25);
  const words: string[] = [];
  for (let i = 0; i < n; i++) words.push(WORDS[Math.floor(Math.random() * WORDS.length)]!);
  return `Explain ${words.join(' ')}. (ref ${ref})`;
}

/** A small, structurally whole PNG whose bytes are unique (random text chunk), so no two requests share a cache entry. */
export function uniquePng(): Buffer {
  const chunk = (type: string, data: Buffer) => {
    const len = Buffer.alloc(4);
    len.writeUInt32BE(data.length);
    return Buffer.concat([len, Buffer.from(type, 'latin1'), data, Buffer.alloc(4)]);
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(1, 0);
  ihdr.writeUInt32BE(1, 4);
  ihdr[8] = 8;
  ihdr[9] = 2;
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk('IHDR', ihdr),
    chunk('tEXt', Buffer.concat([Buffer.from('id\0', 'latin1'), Buffer.from(randomBytes(16).toString('hex'), 'latin1')])),
    Buffer.from([0x00, 0x00, 0x00, 0x00, 0x49, 0x45, 0x4e, 0x44, 0xae, 0x42, 0x60, 0x82]),
  ]);
}

async function one(opts: LoadOptions, kind: RequestKind, key: number): Promise<Outcome> {
  const id = `rel-${randomUUID()}`;
  const text = kind === 'chat' ? message(id) : `What is in this picture? (ref ${id})`;
  const ask = createHash('sha256').update(text).digest('hex');
  const sentAt = Date.now();
  const body =
    kind === 'chat'
      ? { message: text }
      : { image_base64: uniquePng().toString('base64'), prompt: text, quality: Math.random() < 0.2 ? 'high' : 'standard' };
  try {
    const res = await fetch(`${opts.gatewayUrl}/v1/${kind}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${opts.keys[key]}`, 'x-request-id': id },
      body: JSON.stringify(body),
      signal: AbortSignal.timeout(opts.clientTimeoutMs),
    });
    const text = await res.text();
    let parsed: unknown = text;
    try {
      parsed = JSON.parse(text);
    } catch {
      // kept as text: the shape check reports it
    }
    return { id, kind, key, ask, sentAt, doneAt: Date.now(), status: res.status, body: parsed };
  } catch (err) {
    const e = err as Error & { cause?: { code?: string; message?: string } };
    if (e.name === 'TimeoutError' || e.name === 'AbortError') return { id, kind, key, ask, sentAt, doneAt: Date.now(), timedOut: true };
    return { id, kind, key, ask, sentAt, doneAt: Date.now(), transportError: `${e.message}${e.cause ? ` (${e.cause.code ?? e.cause.message ?? ''})` : ''}` };
  }
}

export class LoadGenerator {
  readonly outcomes: Outcome[] = [];
  private sent = 0;
  private stopAt = 0;
  private loops: Promise<void>[] = [];
  private inFlight = 0;

  constructor(private readonly opts: LoadOptions) {}

  get requestsSent(): number {
    return this.sent;
  }

  get pending(): number {
    return this.inFlight;
  }

  start(): void {
    this.stopAt = Date.now() + this.opts.durationMs;
    for (let i = 0; i < this.opts.concurrency; i++) this.loops.push(this.loop(i));
  }

  /** Stops sending; in-flight requests still finish (each bounded by the client deadline). */
  stopSending(): void {
    this.stopAt = 0;
  }

  /** Resolves when every loop ended and every request has its outcome. */
  done(): Promise<void> {
    return Promise.all(this.loops).then(() => undefined);
  }

  private async loop(n: number): Promise<void> {
    while (Date.now() < this.stopAt && this.sent < this.opts.maxRequests) {
      this.sent++;
      this.inFlight++;
      const kind: RequestKind = Math.random() < this.opts.visionShare ? 'vision' : 'chat';
      const key = (n + this.sent) % this.opts.keys.length;
      try {
        this.outcomes.push(await one(this.opts, kind, key));
      } finally {
        this.inFlight--;
      }
    }
  }
}
