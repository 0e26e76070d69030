// Every architecture and quant type in the browser: the tiny random-weight models of tests/tiny
// (qwen2, qwen3, phi3, Llama 3, Mistral-style llama), and the tiny Llama 3 requantized by
// `quantweb quantize` into every type they do not already use, load through the JS engine API
// in headless Chromium, on both engines (WebGPU on SwiftShader, and the CPU engine), and
// generate llama.cpp's greedy tokens (tests/golden/tiny-*.json, quant-tiny-llama3-*.json).
//
// Their logits have a standard deviation of 64, so, as in crate/tests/fidelity.rs, a step where
// llama.cpp's own top two are within NEAR_TIE of each other may go either way; up to there the
// tokens must be equal.
//
// Run: `cargo xtask test --browser-only`, or with a server already running:
//   QUANTWEB_BASE_URL=http://127.0.0.1:8080 node --test tests/browser/archs.test.mjs

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, existsSync } from 'node:fs';
import path from 'node:path';
import { launch, baseUrl } from './lib.mjs';
import { root } from './fixtures.mjs';

const ARCHS = ['qwen2', 'qwen3', 'phi3', 'llama3', 'mistral'];
const TYPES = ['Q4_1', 'Q5_0', 'Q5_1', 'Q2_K', 'Q3_K', 'Q4_K', 'Q5_K', 'Q6_K', 'IQ4_NL', 'IQ4_XS', 'BF16'];
const MODELS = [
  ...ARCHS.map((a) => ({ label: `tiny ${a}`, file: `tiny-${a}.gguf`, golden: `tiny-${a}.json` })),
  ...TYPES.map((t) => ({ label: `tiny llama3 ${t}`, file: `tiny-llama3-${t}.gguf`, golden: `quant-tiny-llama3-${t}.json` })),
];
const N_TOKENS = 16;
const NEAR_TIE = 1.0;
const MINUTE = 60_000;

let browser;

before(async () => {
  for (const m of MODELS) {
    assert.ok(existsSync(path.join(root, 'models', m.file)), `models/${m.file} is missing: run \`cargo xtask fetch-models --all\``);
  }
  browser = await launch();
});

after(async () => {
  await browser?.close();
});

for (const m of MODELS) for (const backend of ['webgpu', 'cpu']) {
  test(`${m.label} on ${backend}: loads in the browser and generates llama.cpp's greedy tokens`, { timeout: 5 * MINUTE }, async () => {
    const golden = JSON.parse(readFileSync(path.join(root, 'tests', 'golden', m.golden), 'utf8'));
    const c = golden.cases.find((x) => x.name === 'raw_0');
    const page = await browser.newPage();
    const errors = [];
    page.on('pageerror', (e) => errors.push(e.message));
    try {
      await page.goto(`${baseUrl}/`);
      const res = await page.evaluate(async ({ url, prompt, n, backend }) => {
        const { Engine } = await import('/quantweb.js');
        const engine = await Engine.load(url, { cache: false, contextLength: 256, backend });
        const out = await engine.complete({ prompt, max_tokens: n, temperature: 0 });
        const info = engine.info;
        await engine.unload();
        return { ...out, architecture: info.architecture, backend: info.backend };
      }, { url: `/models/${m.file}`, prompt: c.prompt, n: N_TOKENS, backend });
      assert.equal(res.architecture, golden.model.architecture);
      assert.equal(res.backend, backend);
      assert.deepEqual(res.prompt_tokens, c.prompt_tokens, 'prompt tokens (BOS as llama.cpp)');
      assert.equal(res.tokens.length, N_TOKENS);
      const i = res.tokens.findIndex((t, k) => t !== c.tokens[k]);
      if (i >= 0 && c.margins[i] >= NEAR_TIE) {
        assert.fail(`greedy token ${i} is ${res.tokens[i]}, llama.cpp's ${c.tokens[i]} where its top-2 margin is ${c.margins[i]} (not a near-tie); ours ${JSON.stringify(res.tokens)}, llama.cpp ${JSON.stringify(c.tokens.slice(0, N_TOKENS))}`);
      }
      console.log(`${m.label} on ${backend}: ${i < 0 ? N_TOKENS : i} of ${N_TOKENS} greedy tokens equal llama.cpp's${i >= 0 ? ` (then a near-tie, margin ${c.margins[i]})` : ''}; decode ${res.timings.decode_tok_s.toFixed(1)} tok/s`);
      assert.deepEqual(errors, []);
    } finally {
      await page.close();
    }
  });
}
