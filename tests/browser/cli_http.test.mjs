// The native CLI reading models over HTTP Range from the test server: the same figures as from
// the local files, for a single file and for byte chunks, and named errors for 404 and non-GGUF.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { baseUrl } from './lib.mjs';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const cli = path.join(root, 'target/debug/quantweb');
const fitJson = (...models) => JSON.parse(execFileSync(cli, ['fit', '--json', '--ctx', '16384', ...models], { encoding: 'utf8' }));

test('fit over HTTP equals fit on the local file', () => {
  const name = 'SmolLM2-135M-Instruct.Q4_1.gguf';
  assert.deepEqual(fitJson(`${baseUrl}/models/${name}`), fitJson(path.join(root, 'models', name)));
});

test('fit over HTTP on byte chunks equals fit on the local chunks', () => {
  const parts = [0, 1, 2, 3].map((i) => `gemma-3-270m-q4_k_m.gguf.part0${i}`);
  const remote = fitJson(...parts.map((p) => `${baseUrl}/models/${p}`));
  const local = fitJson(...parts.map((p) => path.join(root, 'models', p)));
  assert.deepEqual(remote, local);
  assert.equal(remote.kv_cache_bytes, 3 * 16384 * 1024 + 15 * 1024 * 1024);
});

test('HTTP errors are named', () => {
  const run = (url) => spawnSync(cli, ['inspect', url], { encoding: 'utf8' });
  const missing = run(`${baseUrl}/models/nope.gguf`);
  assert.notEqual(missing.status, 0);
  assert.match(missing.stderr, /HTTP 404 \(not found/);
  const notGguf = run(`${baseUrl}/index.html`);
  assert.notEqual(notGguf.status, 0);
  assert.match(notGguf.stderr, /not a GGUF file/);
  const refused = run('http://127.0.0.1:9/model.gguf');
  assert.notEqual(refused.status, 0);
  assert.match(refused.stderr, /network error/);
});
