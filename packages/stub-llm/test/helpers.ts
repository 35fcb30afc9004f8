import { countTokens, OPENAI_REPLY_PRIMING_TOKENS, OPENAI_TOKENS_PER_MESSAGE } from '../src';

/** The stub's documented OpenAI prompt count, recomputed independently for string-content messages. */
export function openAIPromptTokens(messages: ReadonlyArray<{ role: string; content: string }>): number {
  return messages.reduce((n, m) => n + OPENAI_TOKENS_PER_MESSAGE + countTokens(m.role) + countTokens(m.content), OPENAI_REPLY_PRIMING_TOKENS);
}

/** A 1x1 transparent PNG. */
export const PNG_BASE64 = 'iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==';
export const PNG_BYTES = Buffer.from(PNG_BASE64, 'base64').length;

export async function postJson(url: string, body: unknown, headers: Record<string, string> = {}): Promise<{ status: number; headers: Headers; json: unknown }> {
  const res = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body) });
  const text = await res.text();
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    json = text;
  }
  return { status: res.status, headers: res.headers, json };
}
