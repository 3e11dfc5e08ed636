#!/usr/bin/env node
// Writes the app package's icons as PNGs with nothing but node:zlib:
//   appPackage/color.png    192x192, full colour, opaque (a white "Q" on quarry's blue)
//   appPackage/outline.png   32x32, white "Q" on a transparent background
//   ../outlook-word-addin/assets/icon-{16,32,64,80}.png, the add-in's ribbon and store icons
// Teams and Microsoft 365 require exactly these sizes; validate.mjs checks them.
// Run again after changing the drawing: node copilot-agent/make-icons.mjs
import { deflateSync } from 'node:zlib';
import { writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';

const CRC_TABLE = Array.from({ length: 256 }, (_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c >>> 0;
});

function crc32(buf) {
  let c = 0xffffffff;
  for (const b of buf) c = CRC_TABLE[(c ^ b) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

function chunk(type, data) {
  const len = Buffer.alloc(4);
  len.writeUInt32BE(data.length);
  const td = Buffer.concat([Buffer.from(type, 'ascii'), data]);
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(td));
  return Buffer.concat([len, td, crc]);
}

/** An 8-bit RGBA PNG of size x size; pixel(x, y) returns [r, g, b, a] for the pixel's centre. */
export function png(size, pixel) {
  const raw = Buffer.alloc(size * (size * 4 + 1));
  for (let y = 0; y < size; y++) {
    const row = y * (size * 4 + 1);
    raw[row] = 0; // filter: none
    for (let x = 0; x < size; x++) raw.set(pixel(x + 0.5, y + 0.5), row + 1 + x * 4);
  }
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(size, 0);
  ihdr.writeUInt32BE(size, 4);
  ihdr[8] = 8; // bit depth
  ihdr[9] = 6; // colour type: RGBA
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk('IHDR', ihdr),
    chunk('IDAT', deflateSync(raw, { level: 9 })),
    chunk('IEND', Buffer.alloc(0)),
  ]);
}

/** Coverage (0..1) of a "Q" in a size x size square at (x, y), 4x4 supersampled. */
function q(size, x, y) {
  const c = size / 2, ro = size * 0.34, ri = size * 0.22;
  let hit = 0;
  for (let i = 0; i < 4; i++)
    for (let j = 0; j < 4; j++) {
      const px = x - 0.5 + (i + 0.5) / 4, py = y - 0.5 + (j + 0.5) / 4;
      const d = Math.hypot(px - c, py - c);
      // the tail: a thick stroke from the ring's lower right outwards
      const t = ((px - c) + (py - c)) / Math.SQRT2, n = ((px - c) - (py - c)) / Math.SQRT2;
      const tail = t > size * 0.16 && t < size * 0.46 && Math.abs(n) < size * 0.065;
      if ((d <= ro && d >= ri) || tail) hit++;
    }
  return hit / 16;
}

const here = dirname(fileURLToPath(import.meta.url));
if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const blue = [0x1f, 0x5f, 0xa8];
  writeFileSync(join(here, 'appPackage', 'color.png'), png(192, (x, y) => {
    const a = q(192, x, y);
    return [...blue.map((v) => Math.round(v + (255 - v) * a)), 255];
  }));
  writeFileSync(join(here, 'appPackage', 'outline.png'), png(32, (x, y) =>
    [255, 255, 255, Math.round(255 * q(32, x, y))]));
  for (const size of [16, 32, 64, 80])
    writeFileSync(join(here, '..', 'outlook-word-addin', 'assets', `icon-${size}.png`), png(size, (x, y) => {
      const a = q(size, x, y);
      return [...blue.map((v) => Math.round(v + (255 - v) * a)), 255];
    }));
  console.log('wrote appPackage/color.png (192x192), appPackage/outline.png (32x32) and the add-in icons');
}
