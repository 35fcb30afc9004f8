import { createHash } from 'node:crypto';
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { SSE_TYPE, answer, jsonResponse, type ChatRequest, type RouteInfo, type Wire, type WireResponse } from './chat';
import { FaultPlanner, parseFaultConfig, parseFaultHeader, type ForcedFault } from './faults';
import { geminiWire } from './gemini-wire';
import { openAIWire } from './openai-wire';
import { StatsRecorder } from './stats';
import { warmUpTokenizer } from './tokens';
import type { FaultConfig, Provider, StubOptions, StubServer } from './types';

const DEFAULT_HOST = '127.0.0.1';
// Inline images travel as base64 in the JSON body.
const MAX_BODY_BYTES = 32 * 1024 * 1024;

const OPENAI_PATHS = new Map<string, Provider>([
  ['/v1/chat/completions', 'openai'],
  ['/openai/v1/chat/completions', 'openai'],
  ['/deepseek/v1/chat/completions', 'deepseek'],
  // DeepSeek's documented base URL has no /v1.
  ['/deepseek/chat/completions', 'deepseek'],
]);
const GEMINI_PATH = /^(?:\/gemini)?\/(?:v1|v1beta|v1alpha)\/models\/([^/:]+):(generateContent|streamGenerateContent)$/;

type ModelRoute = { wire: 'openai' | 'gemini'; info: RouteInfo };

function modelRoute(path: string, query: URLSearchParams): ModelRoute | null {
  const openai = OPENAI_PATHS.get(path);
  if (openai) return { wire: 'openai', info: { provider: openai, model: null, stream: false, query } };
  const gemini = GEMINI_PATH.exec(path);
  if (gemini?.[1] !== undefined) {
    let model: string | null;
    try {
      model = decodeURIComponent(gemini[1]);
    } catch {
      model = null;
    }
    return { wire: 'gemini', info: { provider: 'gemini', model, stream: gemini[2] === 'streamGenerateContent', query } };
  }
  return null;
}

function send(res: ServerResponse, r: WireResponse): void {
  if (res.destroyed || res.headersSent) return;
  // Event streams go out chunked like the real APIs; everything else gets an exact length.
  const headers = r.headers['content-type'] === SSE_TYPE ? r.headers : { ...r.headers, 'content-length': String(Buffer.byteLength(r.body)) };
  res.writeHead(r.status, headers);
  res.end(r.body);
}

class BodyTooLarge extends Error {}

function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (chunk: Buffer) => {
      if (size > MAX_BODY_BYTES) return;
      size += chunk.length;
      if (size > MAX_BODY_BYTES) {
        chunks.length = 0;
        reject(new BodyTooLarge());
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => resolve(chunks.length === 1 && chunks[0] ? chunks[0].toString('utf8') : Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

/** Resolves true after `ms`, or false as soon as the connection goes away (the timer is cleared then). */
function wait(ms: number, res: ServerResponse): Promise<boolean> {
  if (res.destroyed) return Promise.resolve(false);
  return new Promise((resolve) => {
    const onClose = (): void => {
      clearTimeout(timer);
      resolve(false);
    };
    const timer = setTimeout(() => {
      res.off('close', onClose);
      resolve(!res.destroyed);
    }, ms);
    res.once('close', onClose);
  });
}

function parseJson(text: string): { ok: true; value: unknown } | { ok: false } {
  try {
    return { ok: true, value: JSON.parse(text) as unknown };
  } catch {
    return { ok: false };
  }
}

/** Starts the stub on host:port (127.0.0.1, random port by default); resolves once it is listening. */
export async function startStub(opts: StubOptions = {}): Promise<StubServer> {
  const quiet = opts.quiet ?? false;
  const log = (message: string): void => {
    if (!quiet) process.stderr.write(`[stub-llm] ${message}\n`);
  };
  const callLog = opts.callLog ?? false;
  const stats = new StatsRecorder(callLog);
  const planner = new FaultPlanner(opts.faults ? parseFaultConfig(opts.faults) : {});
  warmUpTokenizer();

  async function handleModel<C extends ChatRequest>(wire: Wire<C>, info: RouteInfo, req: IncomingMessage, res: ServerResponse): Promise<void> {
    const provider = info.provider;
    stats.request();
    const json = parseJson(await readBody(req));
    const authed = wire.hasApiKey(req.headers, info.query);
    if (!json.ok) {
      send(res, authed ? wire.invalidJson() : wire.unauthorized());
      return;
    }
    const parsed = wire.parse(json.value, info);
    const model = parsed.ok ? parsed.chat.model : parsed.model;
    if (model !== null) stats.modelRequest(provider, model);
    const reject = (r: WireResponse): void => {
      if (model !== null) stats.rejected(provider, model);
      send(res, r);
    };
    if (!authed) return reject(wire.unauthorized());
    if (!parsed.ok) return reject(parsed.error);
    const chat = parsed.chat;

    let forced: ForcedFault | null = null;
    const header = req.headers['x-stub-fault'];
    if (typeof header === 'string') {
      try {
        forced = parseFaultHeader(header);
      } catch (err) {
        return reject(wire.badRequest((err as Error).message));
      }
    }

    const decision = planner.decide(provider, forced);
    if (decision.latencyMs > 0 && !(await wait(decision.latencyMs, res))) {
      stats.aborted(provider, chat.model);
      return;
    }
    if (decision.fault !== null) stats.fault(provider, chat.model, decision.fault);
    switch (decision.fault) {
      // Held open on purpose; the socket is destroyed when the client leaves or close() runs.
      case 'hang':
        return;
      case 'malformed':
        return send(res, wire.malformed(chat, answer(chat)));
      case '429':
      case '500':
      case '503':
        return send(res, wire.fault(decision.fault, chat, decision.retryAfterSeconds));
      case null:
        break;
    }
    if (res.destroyed) {
      stats.aborted(provider, chat.model);
      return;
    }
    const reply = answer(chat);
    // Billed when the whole reply is handed to the socket, so stats match what the client was told.
    stats.success(provider, chat.model, reply, callLog ? createHash('sha256').update(chat.lastUserText).digest('hex') : undefined);
    send(res, wire.success(chat, reply));
  }

  async function handleAdmin(path: string, req: IncomingMessage, res: ServerResponse): Promise<boolean> {
    const method = req.method ?? 'GET';
    if (path === '/healthz' && method === 'GET') {
      send(res, jsonResponse(200, { ok: true, service: 'stub-llm', pid: process.pid }));
    } else if (path === '/_stub/stats' && method === 'GET') {
      send(res, jsonResponse(200, stats.snapshot()));
    } else if (path === '/_stub/calls' && method === 'GET') {
      send(res, jsonResponse(200, { enabled: callLog, calls: stats.billedCalls() }));
    } else if (path === '/_stub/faults' && method === 'GET') {
      send(res, jsonResponse(200, planner.current()));
    } else if (path === '/_stub/faults' && method === 'POST') {
      const json = parseJson(await readBody(req));
      try {
        if (!json.ok) throw new Error('body is not valid JSON');
        const config = parseFaultConfig(json.value);
        planner.set(config);
        log(`faults set: ${JSON.stringify(config)}`);
        send(res, jsonResponse(200, { ok: true, faults: config }));
      } catch (err) {
        send(res, jsonResponse(400, { error: { message: (err as Error).message } }));
      }
    } else if (path === '/_stub/reset' && method === 'POST') {
      stats.reset();
      planner.set({});
      send(res, jsonResponse(200, { ok: true }));
    } else {
      return false;
    }
    return true;
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = req.url ?? '/';
    const q = url.indexOf('?');
    const path = q === -1 ? url : url.slice(0, q);
    const route = modelRoute(path, new URLSearchParams(q === -1 ? '' : url.slice(q + 1)));
    if (route && req.method === 'POST') {
      return route.wire === 'openai' ? handleModel(openAIWire, route.info, req, res) : handleModel(geminiWire, route.info, req, res);
    }
    if (route) return send(res, jsonResponse(405, { error: { message: `Method ${req.method ?? ''} not allowed on ${path}` } }, { allow: 'POST' }));
    if (await handleAdmin(path, req, res)) return;
    send(res, jsonResponse(404, { error: { message: `No stub route for ${req.method ?? ''} ${path}` } }));
  }

  const server = http.createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      if (err instanceof BodyTooLarge) {
        return send(res, jsonResponse(413, { error: { message: `Request body over ${MAX_BODY_BYTES} bytes` } }, { connection: 'close' }));
      }
      log(`internal error on ${req.method ?? ''} ${req.url ?? ''}: ${err instanceof Error ? err.stack ?? err.message : String(err)}`);
      send(res, jsonResponse(500, { error: { message: 'stub-llm internal error' } }));
    });
  });

  const host = opts.host ?? DEFAULT_HOST;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port ?? 0, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const port = (server.address() as AddressInfo).port;
  const urlHost = host.includes(':') ? `[${host}]` : host;

  let closing: Promise<void> | null = null;
  return {
    url: `http://${urlHost}:${port}`,
    port,
    stats: () => stats.snapshot(),
    billedCalls: () => stats.billedCalls(),
    resetStats: () => stats.reset(),
    setFaults: (faults: FaultConfig) => planner.set(parseFaultConfig(faults)),
    close() {
      closing ??= new Promise<void>((resolve, reject) => {
        server.close((err) => (err ? reject(err) : resolve()));
        // Hung and keep-alive connections would otherwise hold close() open indefinitely.
        server.closeAllConnections();
      });
      return closing;
    },
  };
}
