import { type Content, type GenerateContentResponse, GoogleGenAI } from '@google/genai';
import '../errors/google-errors';
import { ContentBlockedError } from '../errors/provider-errors';
import { guardMalformed, guardMalformedStream } from './malformed';
import { countMessageTokens, countTokens } from './tokens';
import type { CompletionChunk, CompletionRequest, CompletionResult, ProviderClient } from './types';

export interface GeminiClientConfig {
  apiKey: string;
  baseUrl: string;
  timeoutMs: number;
}

const BLOCKED = new Set(['SAFETY', 'PROHIBITED_CONTENT', 'BLOCKLIST', 'SPII', 'IMAGE_SAFETY']);

function toContents(req: CompletionRequest): { contents: Content[]; system?: string } {
  const system = req.messages.filter((m) => m.role === 'system').map((m) => m.content).join('\n') || undefined;
  const turns = req.messages.filter((m) => m.role !== 'system');
  const lastUser = turns.map((m) => m.role).lastIndexOf('user');
  const contents = turns.map((m, i): Content => ({
    role: m.role === 'assistant' ? 'model' : 'user',
    parts: [
      { text: m.content },
      ...(req.image && i === lastUser ? [{ inlineData: { mimeType: req.image.mimeType, data: req.image.data.toString('base64') } }] : []),
    ],
  }));
  return { contents, system };
}

function checkBlocked(res: GenerateContentResponse): void {
  const reason = res.promptFeedback?.blockReason ?? res.candidates?.[0]?.finishReason;
  if (reason && BLOCKED.has(String(reason))) throw new ContentBlockedError(`gemini blocked the content (${String(reason)})`);
}

function unitsFrom(res: GenerateContentResponse | undefined, req: CompletionRequest, text: string): Pick<CompletionResult, 'units' | 'usageSource'> {
  const u = res?.usageMetadata;
  if (u && typeof u.promptTokenCount === 'number') {
    return {
      usageSource: 'provider',
      units: {
        input_tokens: u.promptTokenCount,
        cached_input_tokens: u.cachedContentTokenCount ?? 0,
        output_tokens: u.candidatesTokenCount ?? 0,
        // Gemini bills "thinking" separately from the visible answer.
        reasoning_tokens: u.thoughtsTokenCount ?? 0,
      },
    };
  }
  return { usageSource: 'tokenizer', units: { input_tokens: countMessageTokens(req.messages), output_tokens: countTokens(text) } };
}

/** Gemini through @google/genai; the base URL points at the local stub when no key is configured. */
export function createGeminiClient(config: GeminiClientConfig): ProviderClient {
  const sdk = new GoogleGenAI({ apiKey: config.apiKey, httpOptions: { baseUrl: config.baseUrl, timeout: config.timeoutMs } });

  const params = (req: CompletionRequest) => {
    const { contents, system } = toContents(req);
    return {
      model: req.model,
      contents,
      config: {
        abortSignal: req.signal,
        ...(system && { systemInstruction: system }),
        ...(req.maxOutputTokens && { maxOutputTokens: req.maxOutputTokens }),
      },
    };
  };

  return {
    name: 'gemini',
    async complete(req) {
      const res = await guardMalformed('gemini', () => sdk.models.generateContent(params(req)));
      checkBlocked(res);
      const text = res.text ?? '';
      return { provider: 'gemini', model: res.modelVersion || req.model, text, ...unitsFrom(res, req, text) };
    },

    async *stream(req): AsyncGenerator<CompletionChunk> {
      let text = '';
      let last: GenerateContentResponse | undefined;
      let usageChunk: GenerateContentResponse | undefined;
      const stream = await guardMalformed('gemini', () => sdk.models.generateContentStream(params(req)));
      for await (const chunk of guardMalformedStream('gemini', stream)) {
        checkBlocked(chunk);
        last = chunk;
        if (chunk.usageMetadata) usageChunk = chunk;
        const delta = chunk.text;
        if (delta) {
          text += delta;
          yield { type: 'delta', text: delta };
        }
      }
      yield { type: 'done', result: { provider: 'gemini', model: last?.modelVersion || req.model, text, ...unitsFrom(usageChunk, req, text) } };
    },
  };
}
