import type { Provider } from './types';

export interface ImageInfo {
  /** e.g. image/png; null when a URL gives no hint. */
  mediaType: string | null;
  /** Decoded size for inline/data-URL images; null for remote URLs. */
  bytes: number | null;
}

const SENTENCES = [
  'This answer comes from the local stub, not a real model.',
  'The wording is picked by a hash of your last message, so it repeats exactly.',
  'Token counts use the o200k_base tokenizer.',
  'Nothing here was sent to a paid provider.',
  'Ask the same thing again and you will get the same words.',
  'Latency and faults can be injected through the admin routes.',
  'Usage numbers in this response are what the stub bills.',
  'A real provider would have charged for this call.',
  'The stub keeps replies short so benchmarks stay fast.',
  'Each request is counted per provider and model.',
  'Streaming and non-streaming calls return the same text.',
  'Images are counted at a fixed token price.',
];

const EXCERPT_CHARS = 40;

/** FNV-1a, 32-bit: cheap, stable across runs and platforms. */
export function hashText(text: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

function excerpt(text: string): string {
  const flat = text.replace(/\s+/g, ' ').trim();
  if (flat.length <= EXCERPT_CHARS) return flat;
  const cut = flat.slice(0, EXCERPT_CHARS);
  const lastSpace = cut.lastIndexOf(' ');
  return `${(lastSpace > 20 ? cut.slice(0, lastSpace) : cut).trimEnd()}…`;
}

function describeImages(images: readonly ImageInfo[]): string {
  const parts = images.map((img) => {
    const type = img.mediaType ?? 'unknown type';
    return img.bytes === null ? `${type}, remote` : `${type}, ${img.bytes} bytes`;
  });
  const noun = images.length === 1 ? 'image' : 'images';
  return `I received ${images.length} ${noun} (${parts.join('; ')}).`;
}

/**
 * The reply as sentences to be joined with single spaces: a function of provider, model, last user text
 * and images only. Kept apart so tokens can be counted per sentence (see countReplyTokens).
 */
export function composeReplyParts(provider: Provider, model: string, lastUserText: string, images: readonly ImageInfo[]): string[] {
  const h = hashText(lastUserText);
  const first = h % SENTENCES.length;
  // A second, different sentence from other bits of the same hash.
  const second = (first + 1 + ((h >>> 8) % (SENTENCES.length - 1))) % SENTENCES.length;
  const echo = lastUserText.trim().length > 0 ? `You said: "${excerpt(lastUserText)}".` : 'You sent no text.';
  const pieces = [`Stub reply (${provider}/${model}):`, echo];
  if (images.length > 0) pieces.push(describeImages(images));
  pieces.push(SENTENCES[first] ?? '', SENTENCES[second] ?? '');
  return pieces;
}

export function composeReply(provider: Provider, model: string, lastUserText: string, images: readonly ImageInfo[]): string {
  return composeReplyParts(provider, model, lastUserText, images).join(' ');
}

const WORDS_PER_PIECE = 3;

/** Stream pieces of a few words each; joined they give back `text` exactly. */
export function splitForStream(text: string): string[] {
  const words = text.match(/\s*\S+\s*/g);
  if (!words) return text.length > 0 ? [text] : [];
  const pieces: string[] = [];
  for (let i = 0; i < words.length; i += WORDS_PER_PIECE) {
    pieces.push(words.slice(i, i + WORDS_PER_PIECE).join(''));
  }
  return pieces;
}

/** Size of base64 data once decoded, without decoding it. */
export function base64DecodedBytes(data: string): number {
  const clean = data.replace(/\s+/g, '');
  let padding = 0;
  if (clean.endsWith('==')) padding = 2;
  else if (clean.endsWith('=')) padding = 1;
  return Math.max(0, Math.floor((clean.length * 3) / 4) - padding);
}
