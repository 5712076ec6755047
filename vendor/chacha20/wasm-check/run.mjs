// Loads the check module (a path, as `npm test` passes it) and fails unless every comparison
// passed. The module imports nothing.
import { readFileSync } from 'node:fs';

const { instance } = await WebAssembly.instantiate(readFileSync(process.argv[2]));
const failures = instance.exports.check();
if (failures !== 0) {
  console.error(`ChaCha20 wasm SIMD backend: ${failures} comparisons failed`);
  process.exit(1);
}
console.log('ChaCha20 wasm SIMD backend: RFC 8439 vector, 2000 random cases against the scalar reference, counter end: ok');
