import { gif1x1, jpeg1x1, png1x1, webp1x1 } from '@tollgate/vision/test/images';
import { sniffImage } from '../src/image-type';

test('each supported format is recognised from its magic bytes and structure', () => {
  expect(sniffImage(png1x1())).toEqual({ kind: 'image', mimeType: 'image/png' });
  expect(sniffImage(jpeg1x1())).toEqual({ kind: 'image', mimeType: 'image/jpeg' });
  expect(sniffImage(gif1x1())).toEqual({ kind: 'image', mimeType: 'image/gif' });
  expect(sniffImage(webp1x1())).toEqual({ kind: 'image', mimeType: 'image/webp' });
});

test('a little padding after the end marker is tolerated', () => {
  for (const image of [png1x1(), jpeg1x1(), gif1x1()]) {
    expect(sniffImage(Buffer.concat([image, Buffer.alloc(16)])).kind).toBe('image');
  }
});

test('an image cut short is truncated, wherever the cut falls', () => {
  const cases: Array<[Buffer, string]> = [
    [png1x1(), 'image/png'],
    [jpeg1x1(), 'image/jpeg'],
    [gif1x1(), 'image/gif'],
    [webp1x1(), 'image/webp'],
  ];
  for (const [image, mimeType] of cases) {
    for (const cut of [2, 5, 12, image.length - 1]) {
      expect({ cut, sniff: sniffImage(image.subarray(0, cut)) }).toEqual({ cut, sniff: { kind: 'truncated', mimeType } });
    }
  }
});

test('anything else is unknown, including other RIFF formats and files merely named like images', () => {
  const wav = Buffer.concat([Buffer.from('RIFF'), Buffer.from([36, 0, 0, 0]), Buffer.from('WAVEfmt '), Buffer.alloc(28)]);
  for (const bytes of [
    Buffer.from('This is a plain text file renamed to photo.png\n'),
    Buffer.from('%PDF-1.7\n%...'),
    Buffer.from('<svg xmlns="http://www.w3.org/2000/svg"/>'),
    Buffer.from([0x42, 0x4d, 0x3a, 0, 0, 0]), // BMP
    wav,
    Buffer.from('R'),
    Buffer.alloc(0),
  ]) {
    expect(sniffImage(bytes)).toEqual({ kind: 'unknown' });
  }
});
