// Writes brotli (`.br`) and gzip (`.gz`) copies of the bundle's wasm and JavaScript next to
// each file, for the relay's HTTP server to send to browsers that accept them (the worker's
// wasm: 2.4 MB, 0.7 MB as brotli). Compressed once here, at the highest quality, instead of
// on every request. Usage: node scripts/precompress.mjs DIR
import { readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { brotliCompressSync, constants, gzipSync } from 'node:zlib';

const MIN_BYTES = 1024; // smaller files gain nothing worth a second request path

function* files(dir) {
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) yield* files(path);
    else if (/\.(wasm|js)$/.test(name)) yield path;
  }
}

const dir = process.argv[2];
if (!dir) {
  console.error('usage: node scripts/precompress.mjs DIR');
  process.exit(2);
}
let before = 0;
let after = 0;
for (const path of files(dir)) {
  const bytes = readFileSync(path);
  if (bytes.length < MIN_BYTES) continue;
  const br = brotliCompressSync(bytes, {
    params: {
      [constants.BROTLI_PARAM_QUALITY]: constants.BROTLI_MAX_QUALITY,
      [constants.BROTLI_PARAM_SIZE_HINT]: bytes.length,
    },
  });
  writeFileSync(`${path}.br`, br);
  writeFileSync(`${path}.gz`, gzipSync(bytes, { level: 9 }));
  before += bytes.length;
  after += br.length;
}
console.log(`precompressed ${Math.round(before / 1024)} KiB of wasm and js → ${Math.round(after / 1024)} KiB brotli`);
