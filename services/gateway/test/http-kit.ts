import http from 'node:http';
import { ERROR_CATEGORIES } from '@tollgate/shared';

/**
 * A raw HTTP client for bad-input tests: any method, a path sent exactly as given (malformed
 * percent-escapes included), any header bytes, any body. fetch would refuse or normalise much of
 * what these tests need to send.
 */

export interface RawRequest {
  method: string;
  /** Sent as is; must be printable latin1 (percent-encode the rest). */
  path: string;
  headers?: Record<string, string | string[]>;
  body?: string | Buffer;
}

export interface RawResponse {
  status: number;
  headers: http.IncomingHttpHeaders;
  text: string;
}

/** UTF-8 bytes of `s` as a latin1 string: how to put non-ASCII text on the wire in a header. */
export function headerBytes(s: string): string {
  return Buffer.from(s, 'utf8').toString('latin1');
}

export function httpClient(baseUrl: string) {
  const { hostname, port } = new URL(baseUrl);
  const agent = new http.Agent({ keepAlive: true, maxSockets: 16 });
  async function send(req: RawRequest, timeoutMs = 10_000): Promise<RawResponse> {
    try {
      return await once(req, timeoutMs);
    } catch (err) {
      // The keep-alive race: the server closed an idle socket just as this request went out on it.
      // Node's documented remedy is to retry on a fresh socket; nothing reached the app.
      if ((err as { reusedSocket?: boolean }).reusedSocket && ['ECONNRESET', 'EPIPE'].includes(String((err as { code?: string }).code))) {
        return once(req, timeoutMs);
      }
      throw err;
    }
  }
  function once(req: RawRequest, timeoutMs: number): Promise<RawResponse> {
    return new Promise((resolve, reject) => {
      const body = req.body === undefined ? undefined : Buffer.isBuffer(req.body) ? req.body : Buffer.from(req.body, 'utf8');
      const r = http.request(
        {
          host: hostname,
          port: Number(port),
          method: req.method,
          path: req.path,
          agent,
          headers: { ...(body !== undefined && { 'content-length': String(body.length) }), ...req.headers },
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, text: Buffer.concat(chunks).toString('utf8') }));
          res.on('error', reject);
        },
      );
      r.setTimeout(timeoutMs, () => r.destroy(new Error(`no answer within ${timeoutMs} ms`)));
      r.on('error', (err) => reject(Object.assign(err, { reusedSocket: r.reusedSocket })));
      r.end(body);
    });
  }
  return { send, close: () => agent.destroy() };
}

const REQUIRED = ['category', 'code', 'message', 'request_id', 'suggested_actions'];

/**
 * What is wrong with an error response, as a list of problems (empty when it is a proper 4xx in
 * the one error shape: `{error: {code, category, message, suggested_actions, request_id[, issues]}}`).
 */
export function errorShapeProblems(res: RawResponse, allowed: readonly number[] | ((s: number) => boolean)): string[] {
  const problems: string[] = [];
  const ok = typeof allowed === 'function' ? allowed(res.status) : allowed.includes(res.status);
  if (!ok) problems.push(`status ${res.status}`);
  if (res.status < 400 || res.status > 499) problems.push(`not a 4xx: ${res.status}`);
  if (!String(res.headers['content-type'] ?? '').startsWith('application/json')) problems.push(`content-type ${String(res.headers['content-type'])}`);
  let body: unknown;
  try {
    body = JSON.parse(res.text);
  } catch {
    problems.push(`body is not JSON: ${JSON.stringify(res.text.slice(0, 200))}`);
    return problems;
  }
  if (typeof body !== 'object' || body === null || Array.isArray(body)) return [...problems, 'body is not an object'];
  if (Object.keys(body).join(',') !== 'error') problems.push(`top-level keys ${Object.keys(body).join(',')}`);
  const e = (body as { error?: unknown }).error;
  if (typeof e !== 'object' || e === null) return [...problems, 'no error object'];
  const err = e as Record<string, unknown>;
  const keys = Object.keys(err).sort();
  const expected = 'issues' in err ? [...REQUIRED, 'issues'].sort() : REQUIRED;
  if (keys.join(',') !== expected.join(',')) problems.push(`error keys ${keys.join(',')}`);
  if (typeof err.code !== 'string' || !/^[a-z_]{2,64}$/.test(err.code)) problems.push(`code ${JSON.stringify(err.code)}`);
  // The client's own mistake is never blamed on an AI provider or on the service.
  if (typeof err.code === 'string' && /^provider_|internal|unavailable|timeout/.test(err.code)) problems.push(`code ${err.code} for a client error`);
  if (!['invalid_request', 'authentication'].includes(String(err.category))) problems.push(`category ${String(err.category)} for a client error`);
  if (!(ERROR_CATEGORIES as readonly unknown[]).includes(err.category)) problems.push(`category ${JSON.stringify(err.category)}`);
  if (typeof err.message !== 'string' || err.message.length === 0) problems.push('empty message');
  if (!Array.isArray(err.suggested_actions) || !err.suggested_actions.every((a) => typeof a === 'string')) problems.push('suggested_actions');
  if (typeof err.request_id !== 'string' || err.request_id === '' || err.request_id !== res.headers['x-request-id']) {
    problems.push(`request_id ${JSON.stringify(err.request_id)} vs header ${String(res.headers['x-request-id'])}`);
  }
  if ('issues' in err) {
    const issues = err.issues;
    if (!Array.isArray(issues) || !issues.every((i) => typeof i === 'object' && i !== null && Object.keys(i).sort().join(',') === 'message,path' && typeof i.path === 'string' && typeof i.message === 'string')) {
      problems.push('issues malformed');
    }
  }
  // Never internals: no stack frames, file paths or library names.
  if (/\n\s+at |node_modules|\.ts:\d+|TypeError|ReferenceError|SyntaxError:/.test(res.text)) problems.push('internals leaked');
  return problems;
}
