import OpenAI from 'openai';
import type { ChatCompletionMessageParam } from 'openai/resources/chat/completions';
import '../errors/openai-errors';
import { ContentBlockedError, MalformedResponseError } from '../errors/provider-errors';
import { guardMalformed, guardMalformedStream } from './malformed';
import { countMessageTokens, countTokens } from './tokens';
import type { CompletionChunk, CompletionRequest, CompletionResult, ProviderClient } from './types';

export interface OpenAiClientConfig {
  apiKey: string;
  baseUrl: string;
  timeoutMs: number;
}

interface WireUsage {
  prompt_tokens?: number;
  completion_tokens?: number;
  prompt_tokens_details?: { cached_tokens?: number } | null;
  completion_tokens_details?: { reasoning_tokens?: number } | null;
}

function toMessages(req: CompletionRequest): ChatCompletionMessageParam[] {
  const lastUser = req.messages.map((m) => m.role).lastIndexOf('user');
  return req.messages.map((m, i): ChatCompletionMessageParam => {
    if (req.image && i === lastUser) {
      const url = `data:${req.image.mimeType};base64,${req.image.data.toString('base64')}`;
      return { role: 'user', content: [{ type: 'text', text: m.content }, { type: 'image_url', image_url: { url } }] };
    }
    return { role: m.role, content: m.content };
  });
}

/** Provider usage, normalised: output excludes reasoning; cached input is a subset of input. */
function unitsFrom(usage: WireUsage | null | undefined, req: CompletionRequest, text: string): Pick<CompletionResult, 'units' | 'usageSource'> {
  if (usage && typeof usage.prompt_tokens === 'number') {
    const reasoning = usage.completion_tokens_details?.reasoning_tokens ?? 0;
    return {
      usageSource: 'provider',
      units: {
        input_tokens: usage.prompt_tokens,
        cached_input_tokens: usage.prompt_tokens_details?.cached_tokens ?? 0,
        output_tokens: Math.max(0, (usage.completion_tokens ?? 0) - reasoning),
        reasoning_tokens: reasoning,
      },
    };
  }
  return {
    usageSource: 'tokenizer',
    units: { input_tokens: countMessageTokens(req.messages), output_tokens: countTokens(text) },
  };
}

/** OpenAI and every OpenAI-wire provider (DeepSeek). SDK retries are off: recovery is owned in one place. */
export function createOpenAiClient(name: 'openai' | 'deepseek', config: OpenAiClientConfig): ProviderClient {
  const sdk = new OpenAI({ apiKey: config.apiKey, baseURL: config.baseUrl, maxRetries: 0, timeout: config.timeoutMs });

  return {
    name,
    async complete(req) {
      const res = await guardMalformed(name, () => sdk.chat.completions.create(
        { model: req.model, messages: toMessages(req), ...(req.maxOutputTokens && { max_completion_tokens: req.maxOutputTokens }) },
        { signal: req.signal },
      ));
      const choice = res.choices?.[0];
      if (!choice) throw new MalformedResponseError(`${name} returned no choices`);
      if (choice.finish_reason === 'content_filter') throw new ContentBlockedError(`${name} blocked the response`);
      const text = choice.message?.content ?? '';
      return { provider: name, model: res.model || req.model, text, ...unitsFrom(res.usage, req, text) };
    },

    async *stream(req): AsyncGenerator<CompletionChunk> {
      const stream = await guardMalformed(name, () => sdk.chat.completions.create(
        {
          model: req.model,
          messages: toMessages(req),
          stream: true,
          // Without this the provider sends no usage on streams, the classic $0 streamed call.
          stream_options: { include_usage: true },
          ...(req.maxOutputTokens && { max_completion_tokens: req.maxOutputTokens }),
        },
        { signal: req.signal },
      ));
      let text = '';
      let model = req.model;
      let usage: WireUsage | undefined;
      for await (const chunk of guardMalformedStream(name, stream)) {
        if (chunk.model) model = chunk.model;
        if (chunk.usage) usage = chunk.usage;
        const choice = chunk.choices?.[0];
        if (choice?.finish_reason === 'content_filter') throw new ContentBlockedError(`${name} blocked the response`);
        const delta = choice?.delta?.content;
        if (delta) {
          text += delta;
          yield { type: 'delta', text: delta };
        }
      }
      yield { type: 'done', result: { provider: name, model, text, ...unitsFrom(usage, req, text) } };
    },
  };
}
