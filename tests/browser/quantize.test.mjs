// `quantize` of www/quantweb.js in headless Chromium: `quantweb quantize` run in a worker on
// wasm, streaming into the Origin Private File System. The tiny Llama 3 (tests/tiny) quantized
// to Q4_K in the browser must be byte-identical to the file the golden
// tests/golden/quant-tiny-llama3-Q4_K.json records (the CLI's output, which is llama.cpp's
// quantizer's, see crate/tests/quantize.rs), and must then load and generate llama.cpp's greedy
// tokens. Also: the requantization guard, abort (nothing kept), listing and deleting.
//
// Run: `cargo xtask test --browser-only`, or with a server already running:
//   QUANTWEB_BASE_URL=http://127.0.0.1:8080 node --test tests/browser/quantize.test.mjs

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, existsSync } from 'node:fs';
import path from 'node:path';
import { launch, baseUrl } from './lib.mjs';
import { root } from './fixtures.mjs';

const SOURCE = 'tiny-llama3.gguf';
const GOLDEN = JSON.parse(readFileSync(path.join(root, 'tests', 'golden', 'quant-tiny-llama3-Q4_K.json'), 'utf8'));
const N_TOKENS = 16;
/** As archs.test.mjs: llama.cpp top-2 margins below this may go either way on these models. */
const NEAR_TIE = 1.0;
const MINUTE = 60_000;

let browser;

before(async () => {
  assert.ok(existsSync(path.join(root, 'models', SOURCE)), `models/${SOURCE} is missing: run \`cargo xtask fetch-models --all\``);
  browser = await launch();
});

after(async () => {
  await browser?.close();
});

test('quantize in the browser: byte-identical to the CLI (and llama.cpp), then loads and generates llama.cpp\'s tokens', { timeout: 10 * MINUTE }, async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  try {
    await page.goto(`${baseUrl}/`);
    const c = GOLDEN.cases.find((x) => x.name === 'raw_0');
    const r = await page.evaluate(async ({ url, prompt, n }) => {
      const qw = await import('/quantweb.js');
      const settle = (p) => p.then((v) => ({ ok: v }), (e) => ({ error: { name: e.name, message: e.message } }));
      // An already quantized source needs allowRequantize.
      const refused = await settle(qw.quantize(url, { type: 'Q4_K' }));
      // Aborted at the first progress event: AbortError, and no file is left.
      const ctrl = new AbortController();
      const aborted = await settle(qw.quantize(url, { type: 'Q4_K', allowRequantize: true, name: 'aborted', signal: ctrl.signal, onProgress: () => ctrl.abort() }));
      const afterAbort = (await qw.quantizedModels()).map((m) => m.name);

      const events = [];
      const res = await qw.quantize(url, { type: 'Q4_K', allowRequantize: true, onProgress: (p) => events.push(p) });
      const bytes = await res.file.arrayBuffer();
      const sha256 = [...new Uint8Array(await crypto.subtle.digest('SHA-256', bytes))].map((b) => b.toString(16).padStart(2, '0')).join('');
      const listed = (await qw.quantizedModels()).map((m) => ({ name: m.name, size: m.size }));

      const engine = await qw.Engine.load(res.file, { contextLength: 256 });
      const out = await engine.complete({ prompt, max_tokens: n, temperature: 0 });
      await engine.unload();
      const deleted = await qw.deleteQuantized(res.name);
      const left = (await qw.quantizedModels()).length;
      const { file, ...summary } = res;
      return {
        refused, aborted, afterAbort, summary, size: file.size, sha256, listed, deleted, left,
        phases: [...new Set(events.map((e) => e.phase))],
        last: events.at(-1),
        monotone: events.every((e, i) => i === 0 || e.loaded >= events[i - 1].loaded),
        out,
      };
    }, { url: `/models/${SOURCE}`, prompt: c.prompt, n: N_TOKENS });

    assert.equal(r.refused.error?.name, 'Error', JSON.stringify(r.refused));
    assert.match(r.refused.error.message, /requantiz/);
    assert.equal(r.aborted.error?.name, 'AbortError', JSON.stringify(r.aborted));
    assert.deepEqual(r.afterAbort, [], 'the aborted output was deleted');

    assert.equal(r.sha256, GOLDEN.model.sha256, `the browser's Q4_K file differs from \`${GOLDEN.model.generator}\``);
    assert.equal(r.size, GOLDEN.model.size);
    assert.equal(r.summary.outBytes, r.size, 'the size announced before writing');
    assert.equal(r.summary.name, 'tiny-llama3-Q4_K.gguf');
    assert.equal(r.summary.type, 'Q4_K');
    assert.ok(r.summary.converted > 0 && r.summary.converted <= r.summary.tensors);
    assert.deepEqual(r.phases, ['quantize']);
    assert.ok(r.monotone);
    assert.equal(r.last.loaded, r.last.total);
    assert.deepEqual(r.listed, [{ name: 'tiny-llama3-Q4_K.gguf', size: r.size }]);
    assert.equal(r.deleted, true);
    assert.equal(r.left, 0);

    assert.deepEqual(r.out.prompt_tokens, c.prompt_tokens);
    const i = r.out.tokens.findIndex((t, k) => t !== c.tokens[k]);
    if (i >= 0 && c.margins[i] >= NEAR_TIE) {
      assert.fail(`greedy token ${i} is ${r.out.tokens[i]}, llama.cpp's ${c.tokens[i]} (margin ${c.margins[i]})`);
    }
    console.log(`quantized in the browser to Q4_K: ${r.size} bytes, sha256 = the CLI's; ${i < 0 ? N_TOKENS : i} of ${N_TOKENS} greedy tokens equal llama.cpp's; fallbacks ${JSON.stringify(r.summary.fallbacks)}`);
    assert.deepEqual(errors, []);
  } finally {
    await context.close();
  }
});

test('the Chat view quantizes a URL, lists the result, and loads it', { timeout: 10 * MINUTE }, async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  try {
    await page.goto(`${baseUrl}/#chat`);
    await page.fill('#quantize-url', `/models/${SOURCE}`);
    await page.selectOption('#quantize-type', 'Q8_0');
    // Without permission the already quantized source is refused, with advice on the page.
    await page.click('#quantize-start');
    await page.waitForSelector('#chat-error:not([hidden])');
    assert.match(await page.textContent('#chat-error'), /requantiz/);
    await page.check('#quantize-requant');
    await page.click('#quantize-start');
    const item = '#quantized-list li[data-name="tiny-llama3-Q8_0.gguf"]';
    await page.waitForSelector(item, { timeout: 5 * MINUTE });
    assert.match(await page.textContent('#quantize-text'), /Wrote tiny-llama3-Q8_0\.gguf/);
    assert.equal(await page.getAttribute(`${item} a`, 'download'), 'tiny-llama3-Q8_0.gguf');
    await page.click(`${item} button:text("Load")`);
    await page.waitForSelector('#chat-model-info:not([hidden])', { timeout: 5 * MINUTE });
    assert.equal(await page.textContent('#chat-model-arch'), 'llama');
    await page.click(`${item} button:text("Delete")`);
    await page.waitForSelector(item, { state: 'detached' });
    assert.deepEqual(errors, []);
  } finally {
    await context.close();
  }
});

test('quantizing into a full storage is a QuotaExceededError before anything is written', { timeout: 5 * MINUTE }, async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  try {
    const errors = [];
    page.on('console', (m) => m.type() === 'error' && errors.push(m.text()));
    await page.goto(`${baseUrl}/`);
    // The browser's own quota for this origin, as the worker's navigator.storage sees it.
    const cdp = await context.newCDPSession(page);
    await cdp.send('Storage.overrideQuotaForOrigin', { origin: new URL(baseUrl).origin, quotaSize: 5e6 });
    const r = await page.evaluate(async (url) => {
      const qw = await import('/quantweb.js');
      try {
        await qw.quantize(url, { type: 'Q4_K', allowRequantize: true });
        return null;
      } catch (e) {
        return { name: e.name, message: e.message, left: (await qw.quantizedModels()).length };
      }
    }, `/models/${SOURCE}`);
    assert.equal(r?.name, 'QuotaExceededError', JSON.stringify(r));
    assert.match(r.message, /store the quantized model: it needs 9\.7 MB/);
    assert.equal(r.left, 0, 'no partial file is kept');
    assert.deepEqual(errors, [], 'no panic or other console error');
  } finally {
    await context.close();
  }
});
