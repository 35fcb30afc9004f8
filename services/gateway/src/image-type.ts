import type { VisionMimeType } from '@tollgate/shared';

/**
 * What an upload's bytes say it is. A client's file name and declared content type are ignored:
 * only the magic bytes decide, and a recognised image must also be whole, because a truncated
 * upload would be paid for and answered with nonsense.
 */
export type ImageSniff =
  | { kind: 'image'; mimeType: VisionMimeType }
  /** Starts like a supported image but ends too early. */
  | { kind: 'truncated'; mimeType: VisionMimeType }
  | { kind: 'unknown' };

const PNG_SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
const PNG_IEND = Buffer.from([0x00, 0x00, 0x00, 0x00, 0x49, 0x45, 0x4e, 0x44, 0xae, 0x42, 0x60, 0x82]);
const JPEG_SOI = Buffer.from([0xff, 0xd8, 0xff]);
const GIF87 = Buffer.from('GIF87a', 'latin1');
const GIF89 = Buffer.from('GIF89a', 'latin1');
const RIFF = Buffer.from('RIFF', 'latin1');
const WEBP = Buffer.from('WEBP', 'latin1');
const WEBP_CHUNKS = new Set(['VP8 ', 'VP8L', 'VP8X']);

/** Encoders and transfer tools sometimes pad a file after its end marker; this much is tolerated. */
const TRAILING_SLACK = 64;

function startsWith(bytes: Buffer, prefix: Buffer, at = 0): boolean {
  return bytes.length >= at + prefix.length && bytes.subarray(at, at + prefix.length).equals(prefix);
}

/**
 * The whole of `bytes` is a strict prefix of `signature`: the start of that format, cut short.
 * One byte says too little to call it that.
 */
function isPrefixOf(bytes: Buffer, signature: Buffer): boolean {
  return bytes.length > 1 && bytes.length < signature.length && signature.subarray(0, bytes.length).equals(bytes);
}

/** `marker` ends the file, give or take TRAILING_SLACK bytes of padding. */
function endsWithin(bytes: Buffer, marker: Buffer): boolean {
  const from = Math.max(0, bytes.length - marker.length - TRAILING_SLACK);
  return bytes.subarray(from).lastIndexOf(marker) !== -1;
}

function png(bytes: Buffer): ImageSniff | undefined {
  if (isPrefixOf(bytes, PNG_SIGNATURE)) return { kind: 'truncated', mimeType: 'image/png' };
  if (!startsWith(bytes, PNG_SIGNATURE)) return undefined;
  // Signature, then the IHDR chunk (length 13), then at least the IEND chunk.
  const whole = bytes.length >= 8 + 25 + PNG_IEND.length && bytes.readUInt32BE(8) === 13 && bytes.toString('latin1', 12, 16) === 'IHDR' && endsWithin(bytes, PNG_IEND);
  return { kind: whole ? 'image' : 'truncated', mimeType: 'image/png' };
}

function jpeg(bytes: Buffer): ImageSniff | undefined {
  if (isPrefixOf(bytes, JPEG_SOI)) return { kind: 'truncated', mimeType: 'image/jpeg' };
  if (!startsWith(bytes, JPEG_SOI)) return undefined;
  // SOI, at least one segment, and the EOI marker at the end.
  const whole = bytes.length >= 8 && endsWithin(bytes.subarray(3), Buffer.from([0xff, 0xd9]));
  return { kind: whole ? 'image' : 'truncated', mimeType: 'image/jpeg' };
}

function gif(bytes: Buffer): ImageSniff | undefined {
  if (isPrefixOf(bytes, GIF87) || isPrefixOf(bytes, GIF89)) return { kind: 'truncated', mimeType: 'image/gif' };
  if (!startsWith(bytes, GIF87) && !startsWith(bytes, GIF89)) return undefined;
  // Header and logical screen descriptor (13 bytes), at least one block, and the 0x3B trailer.
  const whole = bytes.length >= 14 && endsWithin(bytes.subarray(13), Buffer.from([0x3b]));
  return { kind: whole ? 'image' : 'truncated', mimeType: 'image/gif' };
}

function webp(bytes: Buffer): ImageSniff | undefined {
  if (isPrefixOf(bytes, RIFF)) return { kind: 'truncated', mimeType: 'image/webp' };
  if (!startsWith(bytes, RIFF)) return undefined;
  // RIFF, its size, then the form type: cut anywhere in there, it may still have been a WebP.
  if (bytes.length < 12) return bytes.length <= 8 || WEBP.subarray(0, bytes.length - 8).equals(bytes.subarray(8)) ? { kind: 'truncated', mimeType: 'image/webp' } : undefined;
  // RIFF is a container for many formats (WAV, AVI): only the WEBP form type is an image.
  if (!startsWith(bytes, WEBP, 8)) return undefined;
  // The RIFF header states the file's size; fewer bytes than that means the upload was cut.
  const declared = bytes.readUInt32LE(4) + 8;
  const whole = bytes.length >= 20 && WEBP_CHUNKS.has(bytes.toString('latin1', 12, 16)) && bytes.length >= declared;
  return { kind: whole ? 'image' : 'truncated', mimeType: 'image/webp' };
}

export function sniffImage(bytes: Buffer): ImageSniff {
  return png(bytes) ?? jpeg(bytes) ?? gif(bytes) ?? webp(bytes) ?? { kind: 'unknown' };
}
