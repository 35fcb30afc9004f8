import express, { type RequestHandler, Router } from 'express';
import multer, { MulterError } from 'multer';
import { createHash } from 'node:crypto';
import {
  cachedAnalysisSchema,
  type CacheSettingsStore,
  type EventBus,
  formatUsd,
  price,
  type PriceTable,
  type ResponseCache,
  ttlFor,
  visionCacheableTargets,
  visionCacheKey,
  VISION_PROMPT_MAX_CHARS,
  VISION_QUALITIES,
} from '@tollgate/shared';
import { z } from 'zod';
import { principalOf } from '../auth/middleware';
import { journeyOf } from '../auth/admission';
import { ApiError, sendJobError } from '../errors';
import { sniffImage } from '../image-type';
import type { VisionDispatcher } from '../vision-dispatch';
import { cacheDirectiveOf } from '../answer-cache';
import { costOf, holdId } from './chat';
import type { Guards } from './guards';
import { moneySchema, route } from '../openapi/registry';
import { cacheRequestHeaders, cacheResponseHeaders } from '../openapi/schemas';

export interface VisionRouteOptions {
  dispatcher: VisionDispatcher;
  /** Largest image accepted, in bytes (decoded, for base64). */
  maxImageBytes: number;
  /** The caching service: hits are answered here, without the queue. */
  cache?: { cache: ResponseCache; settings: CacheSettingsStore; bus: EventBus; namespace: string };
}

const fields = {
  prompt: z.string().trim().min(1).max(VISION_PROMPT_MAX_CHARS),
  quality: z.enum(VISION_QUALITIES).default('standard'),
};
const multipartFields = z.strictObject(fields);
const jsonBody = z.strictObject({ image_base64: z.string(), ...fields });

const visionReply = z
  .object({
    analysis: z.string(),
    provider: z.string(),
    model: z.string(),
    cached: z.boolean(),
    degraded: z.boolean().meta({ description: 'Answered by a cheaper model than the quality asked for (budget pressure).' }),
    quality: z.enum(VISION_QUALITIES),
    cost: moneySchema
      .extend({ price_version: z.string().optional(), avoided: moneySchema.optional().meta({ description: 'On a cache hit: what it would have cost.' }) })
      .optional(),
    fallback_used: z.boolean(),
    image_sha256: z.string(),
    request_id: z.string(),
  })
  .meta({ id: 'VisionReply' });

export const openapi = [
  route({
    method: 'post',
    path: '/v1/vision',
    tag: 'Vision',
    summary: 'Analyse an image',
    description:
      'One image (PNG, JPEG, WebP or GIF, checked from its bytes) as multipart `image` or JSON `image_base64` (a data URL works), with a prompt. ' +
      'The cheapest provider that meets `quality` answers; a repeated image and prompt is served from the cache for an hour at no cost.',
    guard: 'vision',
    paid: true,
    headers: cacheRequestHeaders,
    body: {
      content: {
        'multipart/form-data': multipartFields.extend({ image: z.string().meta({ format: 'binary', description: 'The image file.' }) }),
        'application/json': jsonBody,
      },
    },
    responses: { 200: { description: 'The analysis and what it cost.', headers: cacheResponseHeaders, content: { 'application/json': visionReply } } },
    errors: [413, 415],
  }),
];

const FORMATS = 'PNG, JPEG, WebP or GIF';
const HOW_TO_SEND = 'Send multipart/form-data with the image in the field "image", or JSON with "image_base64"; plus "prompt" and optional "quality" (standard or high).';

const mb = (bytes: number) => `${Math.round((bytes / (1024 * 1024)) * 10) / 10} MB`;
const tooLarge = (max: number) => new ApiError('payload_too_large', `The image is larger than the ${mb(max)} limit. Send a smaller image.`);

// A client may paste a data URL; only its payload matters (nothing is ever fetched from a URL).
const DATA_URL_PREFIX = /^data:[a-z]+\/[a-z0-9.+-]+;base64,/i;
const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

/** Strict base64: Buffer.from silently skips junk characters, which would hand the sniffer a different file. */
function decodeBase64(text: string, maxBytes: number): Buffer {
  const payload = text.replace(DATA_URL_PREFIX, '').replace(/\s+/g, '');
  if (!BASE64.test(payload) || payload.length % 4 === 1) {
    throw new ApiError('invalid_request', 'image_base64 is not valid base64.');
  }
  // Checked before decoding so an oversized payload costs no allocation.
  const decodedLength = Math.floor((payload.length * 3) / 4) - (payload.match(/=+$/)?.[0].length ?? 0);
  if (decodedLength > maxBytes) throw tooLarge(maxBytes);
  return Buffer.from(payload, 'base64');
}

/**
 * Reads the body the client chose. Multipart and JSON get their own parsers here, after the
 * guards, so an unauthenticated client never makes the gateway buffer a large upload, and JSON
 * gets a limit sized for base64 of the largest image rather than the small global one.
 */
function readBody(maxImageBytes: number): RequestHandler {
  const upload = multer({
    storage: multer.memoryStorage(),
    limits: { fileSize: maxImageBytes, files: 1, fields: 4, parts: 6, fieldSize: 32 * 1024 },
  }).single('image');
  // 4 base64 characters per 3 bytes, plus room for the prompt and the JSON around it.
  const json = express.json({ limit: Math.ceil(maxImageBytes / 3) * 4 + 64 * 1024 });

  return (req, res, next) => {
    const kind = req.is(['multipart/form-data', 'application/json']);
    if (kind === null) return next(new ApiError('invalid_request', `The request has no body. ${HOW_TO_SEND}`));
    if (kind === false) return next(new ApiError('unsupported_media_type', `Content type "${req.headers['content-type'] ?? ''}" is not accepted here. ${HOW_TO_SEND}`));
    if (kind === 'application/json') {
      return json(req, res, (err?: unknown) => {
        const type = (err as { type?: string } | undefined)?.type;
        if (type === 'entity.too.large') return next(tooLarge(maxImageBytes));
        if (type === 'entity.parse.failed') return next(new ApiError('invalid_request', 'The request body is not valid JSON.'));
        next(err);
      });
    }
    upload(req, res, (err?: unknown) => {
      if (err === undefined) return next();
      if (err instanceof MulterError) {
        if (err.code === 'LIMIT_FILE_SIZE') return next(tooLarge(maxImageBytes));
        if (err.code === 'LIMIT_FIELD_VALUE') return next(new ApiError('payload_too_large', `The form field "${err.field ?? ''}" is too long.`));
        if (err.code === 'LIMIT_UNEXPECTED_FILE') return next(new ApiError('invalid_request', `Unexpected file field "${err.field ?? ''}": send one image in the field "image".`));
        return next(new ApiError('invalid_request', `The multipart body has too many parts or fields. ${HOW_TO_SEND}`));
      }
      // busboy's own errors ("Unexpected end of form", bad part headers): the body is broken.
      next(new ApiError('invalid_request', 'The multipart body is malformed or incomplete.'));
    });
  };
}

/** The bytes of the one image, from whichever body was sent, size-checked. */
function imageOf(req: express.Request, maxImageBytes: number): { image: Buffer; prompt: string; quality: (typeof VISION_QUALITIES)[number] } {
  if (req.is('multipart/form-data')) {
    const body = multipartFields.parse(req.body ?? {});
    if (!req.file) throw new ApiError('invalid_request', `No image file in the field "image". ${HOW_TO_SEND}`);
    return { image: req.file.buffer, ...body };
  }
  const body = jsonBody.parse(req.body);
  return { image: decodeBase64(body.image_base64, maxImageBytes), prompt: body.prompt, quality: body.quality };
}

export function visionRoutes(guards: Guards, opts: VisionRouteOptions, priceTable: PriceTable): Router {
  const router = Router();

  router.post('/v1/vision', ...guards.vision, readBody(opts.maxImageBytes), async (req, res) => {
    const { image, prompt, quality } = imageOf(req, opts.maxImageBytes);
    if (image.length === 0) throw new ApiError('invalid_request', 'The image is empty (0 bytes). Send the whole image file.');
    if (image.length > opts.maxImageBytes) throw tooLarge(opts.maxImageBytes);
    const sniffed = sniffImage(image);
    if (sniffed.kind === 'unknown') {
      throw new ApiError('unsupported_media_type', `The file is not a ${FORMATS} image. Its type is checked from its content, not its name or declared type.`);
    }
    if (sniffed.kind === 'truncated') {
      throw new ApiError('invalid_request', `The image is incomplete: it starts like ${sniffed.mimeType} but is cut short. Send the whole file.`);
    }

    const who = principalOf(res);
    const directive = cacheDirectiveOf(req);
    if (opts.cache && directive.mode === 'default') {
      const served = await serveCachedAnalysis(opts.cache, priceTable, res, { who, image, prompt, quality, directive });
      if (served) return;
    }
    const result = await opts.dispatcher.run({
      request_id: res.locals.requestId as string,
      route: '/v1/vision',
        ...journeyOf(res),
      user_id: who.user_id,
      project_id: who.project_id,
      image,
      mime_type: sniffed.mimeType,
      prompt,
      quality,
      cache: { mode: directive.mode, partition: directive.partition, ...(directive.maxAgeSeconds !== undefined && { max_age_seconds: directive.maxAgeSeconds }) },
      ...holdId(res),
    });
    if (!result.ok) return sendJobError(res, result.error);

    res.setHeader('x-tollgate-provider', result.provider);
    res.setHeader('x-tollgate-cache', result.cached ? 'HIT' : directive.mode === 'bypass' ? 'BYPASS' : directive.mode === 'refresh' ? 'REFRESH' : 'MISS');
    if (result.cached && result.avoided_micros !== undefined) res.setHeader('x-tollgate-cache-saved-micros', String(result.avoided_micros));
    res.json({
      analysis: result.analysis,
      provider: result.provider,
      model: result.model,
      cached: result.cached,
      degraded: result.degraded,
      quality,
      // A hit is free; what it would have cost is shown as what was saved.
      cost: result.cached
        ? {
            micros: 0,
            usd: formatUsd(0),
            ...(result.avoided_micros !== undefined && { avoided: { micros: result.avoided_micros, usd: formatUsd(result.avoided_micros) } }),
          }
        : costOf(result.provider, result.model, result.units, priceTable),
      fallback_used: result.fallback_used,
      image_sha256: result.image_sha256,
      request_id: res.locals.requestId,
    });
  });

  return router;
}

/**
 * A vision hit answered here, without the queue: the image's digest and the prompt under the
 * caller's tenant, from a model that meets the quality asked for whatever the budget. It is
 * recorded like the worker records one (zero-cost usage with what it saved, and the analysis
 * event) and is otherwise the worker's answer shape.
 */
async function serveCachedAnalysis(
  c: NonNullable<VisionRouteOptions['cache']>,
  table: PriceTable,
  res: express.Response,
  r: { who: ReturnType<typeof principalOf>; image: Buffer; prompt: string; quality: (typeof VISION_QUALITIES)[number]; directive: ReturnType<typeof cacheDirectiveOf> },
): Promise<boolean> {
  const settings = await c.settings.get(r.who.project_id);
  if (ttlFor('vision', settings, r.directive.maxAgeSeconds) <= 0) return false;
  const sha = createHash('sha256').update(r.image).digest('hex');
  const job = { user_id: r.who.user_id, project_id: r.who.project_id, prompt: r.prompt, cache: { mode: 'default' as const, partition: r.directive.partition } };
  const targets = visionCacheableTargets(r.quality);
  const keys = targets.map((t) => visionCacheKey(c.namespace, job, sha, t));
  const hit = await c.cache.first(keys, cachedAnalysisSchema, r.directive.maxAgeSeconds);
  if (!hit) return false;
  const { analysis, provider, model } = hit.value;
  let avoided = 0;
  try {
    avoided = price({ provider, model, units: { images: 1 } }, { table }).amount_micros;
  } catch {
    avoided = 0;
  }
  const requestId = res.locals.requestId as string;
  const { journey, journey_step } = journeyOf(res);
  const meta = {
    correlation_id: requestId,
    user_id: r.who.user_id,
    project_id: r.who.project_id,
    ...(journey !== undefined && { journey_id: journey }),
    ...(journey_step !== undefined && { journey_step }),
  };
  await Promise.all([
    c.bus.publishMany([
      {
        type: 'usage.recorded',
        data: { provider, model, service: 'gateway', operation: 'vision', units: { images: 1 }, usage_source: 'cache', request_id: requestId, cached: true, ...(avoided > 0 && { avoided_micros: avoided }) },
        meta,
      },
      { type: 'vision.analysis_completed', data: { provider, model, cached: true, latency_ms: 0, image_sha256: sha, quality: r.quality, degraded: false }, meta },
    ]),
    c.cache.record(keys[0]!, 'HIT', avoided).catch(() => undefined),
  ]);
  res.setHeader('x-tollgate-provider', provider);
  res.setHeader('x-tollgate-cache', 'HIT');
  res.setHeader('age', String(hit.age_seconds));
  res.setHeader('x-tollgate-cache-saved-micros', String(avoided));
  res.json({
    analysis,
    provider,
    model,
    cached: true,
    degraded: false,
    quality: r.quality,
    cost: { micros: 0, usd: formatUsd(0), avoided: { micros: avoided, usd: formatUsd(avoided) } },
    fallback_used: false,
    image_sha256: sha,
    request_id: requestId,
  });
  return true;
}
