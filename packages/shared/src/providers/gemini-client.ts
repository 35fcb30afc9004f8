import { type Content, type GenerateContentResponse, GoogleGenAI, type GroundingMetadata } from '@google/genai';
import '../errors/google-errors';
import { ContentBlockedError } from '../errors/provider-errors';
import { guardMalformed, guardMalformedStream } from './malformed';
import { countMessageTokens, countTokens } from './tokens';
import type { CompletionChunk, CompletionRequest, CompletionResult, GroundingResult, ProviderClient } from './types';

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

/** Gemini's groundingMetadata, reduced to what Tollgate bills and shows; queries deduplicated as Gemini 3 bills them. */
export function groundingFrom(meta: GroundingMetadata | undefined): GroundingResult {
  const queries = [...new Set((meta?.webSearchQueries ?? []).map((q) => q.trim()).filter((q) => q !== ''))];
  const sources = (meta?.groundingChunks ?? []).flatMap((c) => (c.web?.uri ? [{ title: c.web.title ?? c.web.domain ?? c.web.uri, uri: c.web.uri }] : []));
  const supports = (meta?.groundingSupports ?? []).flatMap((s) =>
    s.segment ? [{ text: s.segment.text ?? '', start: s.segment.startIndex ?? 0, end: s.segment.endIndex ?? 0, sources: s.groundingChunkIndices ?? [] }] : [],
  );
  const html = meta?.searchEntryPoint?.renderedContent;
  return { queries, sources, supports, ...(html && { entryPointHtml: html }) };
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
        ...(req.grounding && {
          tools: [{ googleSearch: req.grounding.timeRange ? { timeRangeFilter: { startTime: req.grounding.timeRange.start, endTime: req.grounding.timeRange.end } } : {} }],
        }),
      },
    };
  };

  return {
    name: 'gemini',
    async complete(req) {
      const res = await guardMalformed('gemini', () => sdk.models.generateContent(params(req)));
      checkBlocked(res);
      const text = res.text ?? '';
      const result: CompletionResult = { provider: 'gemini', model: res.modelVersion || req.model, text, ...unitsFrom(res, req, text) };
      return req.grounding ? withGrounding(result, res.candidates?.[0]?.groundingMetadata) : result;
    },

    async *stream(req): AsyncGenerator<CompletionChunk> {
      let text = '';
      let last: GenerateContentResponse | undefined;
      let usageChunk: GenerateContentResponse | undefined;
      let grounding: GroundingMetadata | undefined;
      const stream = await guardMalformed('gemini', () => sdk.models.generateContentStream(params(req)));
      for await (const chunk of guardMalformedStream('gemini', stream)) {
        checkBlocked(chunk);
        last = chunk;
        if (chunk.usageMetadata) usageChunk = chunk;
        grounding = chunk.candidates?.[0]?.groundingMetadata ?? grounding;
        const delta = chunk.text;
        if (delta) {
          text += delta;
          yield { type: 'delta', text: delta };
        }
      }
      const result: CompletionResult = { provider: 'gemini', model: last?.modelVersion || req.model, text, ...unitsFrom(usageChunk, req, text) };
      yield { type: 'done', result: req.grounding ? withGrounding(result, grounding) : result };
    },
  };
}

/** Adds what the call searched, and its search units: one grounded prompt if it searched at all, and each unique query. */
function withGrounding(result: CompletionResult, meta: GroundingMetadata | undefined): CompletionResult {
  const grounding = groundingFrom(meta);
  const searched = grounding.queries.length;
  return { ...result, grounding, units: { ...result.units, grounded_prompts: searched > 0 ? 1 : 0, search_queries: searched } };
}
