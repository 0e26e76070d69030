// The CPU engine in the browser, where a user without a usable GPU meets it: headless Chromium
// launched without `--enable-unsafe-webgpu`, so navigator.gpu is there but finds no adapter (as
// on most Linux desktops). `auto` must pick the CPU engine, say so and why, and match llama.cpp's
// goldens (tests/golden/generate-*.json), threaded on a cross-origin isolated page and on one
// thread without isolation; an abort keeps it usable. Its simd128 and relaxed SIMD kernels give the native
// engine's logprobs bit for bit (target/debug/quantweb, built by `cargo test --workspace`).
//
// Run: `cargo xtask test --browser-only`, or with a server already running:
//   QUANTWEB_BASE_URL=http://127.0.0.1:8080 node --test tests/browser/cpu.test.mjs

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, existsSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { launch, baseUrl } from './lib.mjs';
import { root } from './fixtures.mjs';

const SMOL = 'SmolLM2-135M-Instruct.Q4_1.gguf';
const GEMMA_PARTS = [0, 1, 2, 3].map((i) => `gemma-3-270m-q4_k_m.gguf.part0${i}`);
const N_TOKENS = 16;
const MINUTE = 60_000;

const golden = (file, name) => JSON.parse(readFileSync(path.join(root, 'tests', 'golden', file), 'utf8')).cases.find((c) => c.name === name);
const SMOL_CASE = golden('generate-smollm2.json', 'raw_3');
const GEMMA_CASE = golden('generate-gemma3.json', 'raw_3');

let browser;

before(async () => {
  for (const f of [SMOL, ...GEMMA_PARTS]) {
    assert.ok(existsSync(path.join(root, 'models', f)), `models/${f} is missing: run \`cargo xtask fetch-models --all\``);
  }
  browser = await launch({ webgpu: false });
});

after(async () => {
  await browser?.close();
});

/** `fn(arg)` in the page: its value, or a failure with the page's error name and message. */
async function must(page, fn, arg) {
  try {
    return await page.evaluate(fn, arg);
  } catch (e) {
    assert.fail(e.message);
  }
}

/** Equal to the golden's first tokens, or a failure naming where and llama.cpp's margin. */
function assertGoldenTokens(got, c, label) {
  const i = got.findIndex((t, k) => t !== c.tokens[k]);
  if (i >= 0) assert.fail(`${label}: greedy token ${i} is ${got[i]}, llama.cpp's ${c.tokens[i]} (its margin there: ${c.margins[i]})`);
}

test('without a WebGPU adapter on a cross-origin isolated page, auto runs SmolLM2 on the threaded CPU engine: 2 threads, llama.cpp\'s greedy tokens, the reason in info, an abort keeps it usable', { timeout: 10 * MINUTE }, async () => {
  const page = await browser.newPage();
  try {
    await page.goto(`${baseUrl}/`);
    const info = await must(page, async (url) => {
      const { Engine } = await import('/quantweb.js');
      window.engine = await Engine.load(url, { cache: false, threads: 2 });
      return { ...window.engine.info, isolated: self.crossOriginIsolated };
    }, `/models/${SMOL}`);
    assert.equal(info.isolated, true);
    assert.equal(info.backend, 'cpu');
    assert.equal(info.threads, 2);
    assert.match(info.backendReason, /no adapter/);
    // Chromium runs relaxed SIMD, so the worker picks that build.
    assert.match(info.adapter, /^CPU \(relaxed-simd, 2 threads\)$/);
    // The weights once, in their GGUF bytes (93.8 MiB of tensors), plus the KV cache (the
    // helper workers' stacks included).
    assert.ok(info.weightBytes > 90e6 && info.weightBytes < 100e6, `weight bytes ${info.weightBytes}`);
    assert.ok(info.wasmMemoryBytes < info.weightBytes + info.kvBytes + 64 * 2 ** 20, `wasm memory ${info.wasmMemoryBytes}`);

    const res = await must(page, (a) => window.engine.complete({ prompt: a.prompt, max_tokens: a.n, temperature: 0 }), { prompt: SMOL_CASE.prompt, n: N_TOKENS });
    assert.deepEqual(res.prompt_tokens, SMOL_CASE.prompt_tokens);
    assert.equal(res.tokens.length, N_TOKENS);
    assertGoldenTokens(res.tokens, SMOL_CASE, 'SmolLM2 raw_3 on the CPU, 2 threads');
    console.log(`SmolLM2 on the CPU engine in Chromium, 2 threads: prefill ${res.timings.prefill_tok_s.toFixed(1)} tok/s, decode ${res.timings.decode_tok_s.toFixed(1)} tok/s`);

    const aborted = await must(page, async (prompt) => {
      const ctrl = new AbortController();
      let n = 0;
      return window.engine.complete({ prompt, max_tokens: 64, temperature: 0, signal: ctrl.signal, onToken: () => ++n === 2 && ctrl.abort() });
    }, SMOL_CASE.prompt);
    assert.equal(aborted.aborted, true);
    assert.ok(aborted.tokens.length >= 2 && aborted.tokens.length <= 3, `stopped after ${aborted.tokens.length} tokens`);
    assertGoldenTokens(aborted.tokens, SMOL_CASE, 'after the abort');
    const again = await must(page, (prompt) => window.engine.complete({ prompt, max_tokens: 1, temperature: 0 }), SMOL_CASE.prompt);
    assert.deepEqual(again.tokens, SMOL_CASE.tokens.slice(0, 1));

    // Asked for WebGPU, with no adapter: the load fails by name instead of falling back.
    const forced = await page.evaluate(async (url) => {
      const { Engine } = await import('/quantweb.js');
      return Engine.load(url, { cache: false, backend: 'webgpu' }).then(() => 'loaded', (e) => e.name);
    }, `/models/${SMOL}`);
    assert.notEqual(forced, 'loaded');
  } finally {
    await page.close();
  }
});

test('without cross-origin isolation (no SharedArrayBuffer), the CPU engine runs on one thread even when asked for two, with llama.cpp\'s greedy tokens', { timeout: 10 * MINUTE }, async () => {
  const page = await browser.newPage();
  try {
    // serve's /open/ is www/ without COOP/COEP, as on a host that cannot send them.
    await page.goto(`${baseUrl}/open/`);
    const info = await must(page, async (url) => {
      const { Engine } = await import('/open/quantweb.js');
      window.engine = await Engine.load(url, { cache: false, backend: 'cpu', threads: 2 });
      return { ...window.engine.info, isolated: self.crossOriginIsolated };
    }, `/models/${SMOL}`);
    assert.equal(info.isolated, false);
    assert.equal(info.threads, 1);
    assert.match(info.adapter, /^CPU \(relaxed-simd, 1 thread\)$/);
    const res = await must(page, (a) => window.engine.complete({ prompt: a.prompt, max_tokens: a.n, temperature: 0 }), { prompt: SMOL_CASE.prompt, n: N_TOKENS });
    assertGoldenTokens(res.tokens, SMOL_CASE, 'SmolLM2 raw_3 on the CPU, 1 thread');
    console.log(`SmolLM2 on the CPU engine in Chromium, 1 thread: prefill ${res.timings.prefill_tok_s.toFixed(1)} tok/s, decode ${res.timings.decode_tok_s.toFixed(1)} tok/s`);
  } finally {
    await page.close();
  }
});

test('gemma-3-270m (K-quants, GELU, sliding window) on the CPU engine in Chromium: llama.cpp\'s greedy tokens', { timeout: 10 * MINUTE }, async () => {
  const page = await browser.newPage();
  try {
    await page.goto(`${baseUrl}/`);
    const res = await must(page, async (a) => {
      const { Engine } = await import('/quantweb.js');
      const engine = await Engine.load(a.urls, { cache: false, contextLength: 256 });
      const out = await engine.complete({ prompt: a.prompt, max_tokens: a.n, temperature: 0 });
      return { ...out, backend: engine.info.backend };
    }, { urls: GEMMA_PARTS.map((f) => `/models/${f}`), prompt: GEMMA_CASE.prompt, n: N_TOKENS });
    assert.equal(res.backend, 'cpu');
    assert.deepEqual(res.prompt_tokens, GEMMA_CASE.prompt_tokens);
    assertGoldenTokens(res.tokens, GEMMA_CASE, 'gemma3 raw_3 on the CPU');
    console.log(`gemma3 on the CPU engine in Chromium: prefill ${res.timings.prefill_tok_s.toFixed(1)} tok/s, decode ${res.timings.decode_tok_s.toFixed(1)} tok/s`);
  } finally {
    await page.close();
  }
});

test('the wasm kernels, plain simd128 and relaxed SIMD, give the native engine\'s logprobs bit for bit (tiny Q4_1, Q5_0, Q4_K, Q5_K, Q6_K models)', { timeout: 10 * MINUTE }, async () => {
  // Native, the AVX2 kernels equal the portable ones bit for bit (avx2_kernels_equal_the_portable_ones),
  // and every other op computes the same in both builds: so must the wasm kernels. Relaxed SIMD's
  // multiply-add is fused on this x86 CPU (FMA3), as the AVX2 kernels' is.
  // Not tiny-llama3-Q5_1: outside the kernels, wasm takes expf, powf, sinf and cosf from Rust's
  // libm and native from glibc (as llama.cpp does); they differ in the last bit for a few
  // inputs, and that random-weight model meets one and amplifies it (first token's second
  // logprob -7.98 against -7.37). Native with libm's functions gives the wasm figures exactly,
  // with either wasm build and with the Q5_1 kernel or the portable one.
  const cli = path.join(root, 'target/debug/quantweb');
  const page = await browser.newPage();
  try {
    await page.goto(`${baseUrl}/`);
    for (const type of ['Q4_1', 'Q5_0', 'Q4_K', 'Q5_K', 'Q6_K']) {
      const file = `tiny-llama3-${type}.gguf`;
      const args = { url: `/models/${file}`, prompt: 'The capital of France is', n: 12 };
      const native = JSON.parse(execFileSync(cli, ['generate', '--backend', 'cpu', '--json', '--logprobs', '5', '--max-tokens', String(args.n), '--prompt', args.prompt, path.join(root, 'models', file)], { encoding: 'utf8' }));
      const figures = (logprobs) => logprobs.map((l) => [l.logprob, ...l.top_logprobs.map((t) => t.logprob)]);
      for (const [relaxedSimd, simd] of [[false, 'simd128'], [true, 'relaxed-simd']]) {
        const web = await must(page, async (a) => {
          const { Engine } = await import('/quantweb.js');
          const engine = await Engine.load(a.url, { cache: false, backend: 'cpu', threads: 1, relaxedSimd: a.relaxedSimd });
          const out = await engine.complete({ prompt: a.prompt, max_tokens: a.n, temperature: 0, logprobs: true, top_logprobs: 5 });
          await engine.unload();
          return { ...out, adapter: engine.info.adapter };
        }, { ...args, relaxedSimd });
        assert.equal(web.adapter, `CPU (${simd}, 1 thread)`, file);
        assert.deepEqual(web.tokens, native.tokens, `${file}, ${simd}`);
        assert.deepEqual(figures(web.logprobs), figures(native.logprobs), `${file}, ${simd}`);
      }
    }
  } finally {
    await page.close();
  }
});

test('the chat page says the model runs on the CPU, and why', { timeout: 10 * MINUTE }, async () => {
  const page = await browser.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  try {
    await page.goto(`${baseUrl}/#chat`);
    assert.ok(await page.isHidden('#chat-error'), 'no WebGPU warning up front: the CPU engine runs here');
    await page.fill('#chat-url', `${baseUrl}/models/${SMOL}`);
    await page.click('#chat-load');
    await page.waitForSelector('#chat-model-info:not([hidden])', { timeout: 5 * MINUTE });
    assert.equal(await page.getAttribute('#chat-model-info', 'data-backend'), 'cpu');
    // Cross-origin isolated: as many threads as cores, at most 4.
    assert.match(await page.textContent('#chat-model-facts'), /Running on the CPU, \d+ threads?: this browser offers WebGPU but no adapter/);
    assert.deepEqual(errors, []);
  } finally {
    await page.close();
  }
});
