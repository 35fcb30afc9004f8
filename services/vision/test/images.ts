import { deflateSync } from 'node:zlib';

/** Real, decodable tiny images built byte by byte, so tests exercise true magic bytes and structure. */

const CRC_TABLE = Array.from({ length: 256 }, (_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c >>> 0;
});

function crc32(data: Buffer): number {
  let c = 0xffffffff;
  for (const byte of data) c = (CRC_TABLE[(c ^ byte) & 0xff] ?? 0) ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

function pngChunk(type: string, data: Buffer): Buffer {
  const length = Buffer.alloc(4);
  length.writeUInt32BE(data.length);
  const body = Buffer.concat([Buffer.from(type, 'latin1'), data]);
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(body));
  return Buffer.concat([length, body, crc]);
}

/** A 1x1 RGB PNG of the given colour: signature, IHDR, IDAT (zlib), IEND, every CRC right. */
export function png1x1(rgb: [number, number, number] = [255, 0, 0]): Buffer {
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(1, 0); // width
  ihdr.writeUInt32BE(1, 4); // height
  ihdr[8] = 8; // bit depth
  ihdr[9] = 2; // colour type: truecolour
  // compression, filter and interlace methods stay 0
  const scanline = Buffer.from([0, ...rgb]); // filter type 0, then one pixel
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    pngChunk('IHDR', ihdr),
    pngChunk('IDAT', deflateSync(scanline)),
    pngChunk('IEND', Buffer.alloc(0)),
  ]);
}

function segment(marker: number, payload: number[]): number[] {
  const length = payload.length + 2;
  return [0xff, marker, length >> 8, length & 0xff, ...payload];
}

/**
 * A 1x1 grey baseline JPEG: JFIF header, a flat quantisation table, one-symbol Huffman tables and
 * a scan whose only block is all zeros (DC difference 0, then end-of-block).
 */
export function jpeg1x1(): Buffer {
  const oneSymbolTable = (tableClass: number) => segment(0xc4, [tableClass << 4, 1, ...Array<number>(15).fill(0), 0x00]);
  return Buffer.from([
    0xff, 0xd8, // SOI
    ...segment(0xe0, [0x4a, 0x46, 0x49, 0x46, 0x00, 1, 1, 0, 0, 1, 0, 1, 0, 0]), // APP0 JFIF 1.1
    ...segment(0xdb, [0x00, ...Array<number>(64).fill(1)]), // DQT
    ...segment(0xc0, [8, 0, 1, 0, 1, 1, 1, 0x11, 0]), // SOF0: 8-bit, 1x1, one component
    ...oneSymbolTable(0), // DHT DC
    ...oneSymbolTable(1), // DHT AC
    ...segment(0xda, [1, 1, 0x00, 0, 63, 0]), // SOS
    0x3f, // '0' (DC category 0) '0' (EOB), padded with ones
    0xff, 0xd9, // EOI
  ]);
}

/** The classic 35-byte 1x1 GIF89a: two-colour palette, one LZW-coded pixel, trailer. */
export function gif1x1(): Buffer {
  return Buffer.from('47494638396101000100800000000000ffffff2c000000000100010000020244010' + '03b', 'hex');
}

/** A 1x1 lossless WebP (RIFF/WEBP/VP8L), the one browsers' feature tests decode. */
export function webp1x1(): Buffer {
  return Buffer.from('UklGRhoAAABXRUJQVlA4TA0AAAAvAAAAEAcQERGIiP4HAA==', 'base64');
}

/** A PNG padded with an ancillary chunk to roughly `bytes` in size, still a valid PNG. */
export function pngOfSize(bytes: number): Buffer {
  const base = png1x1([0, 0, 255]);
  const padding = Math.max(0, bytes - base.length - 12);
  // tEXt is ignored by decoders; it must sit before IEND.
  const text = pngChunk('tEXt', Buffer.concat([Buffer.from('Comment\0', 'latin1'), Buffer.alloc(Math.max(0, padding - 8), 0x41)]));
  return Buffer.concat([base.subarray(0, base.length - 12), text, base.subarray(base.length - 12)]);
}
