// The Calculator view, in headless Chromium against the served page.
//
// Figures on the page (exact byte counts in data-* attributes) must equal what the CLI prints
// (`quantweb fit --json`) for the same files and settings; model reads must be header-only
// Range requests; errors must be visible and say what went wrong.
//
// Run: `cargo xtask test`, or with a server already running:
//   QUANTWEB_BASE_URL=http://127.0.0.1:8080 QUANTWEB_ALT_BASE_URL=http://localhost:8080 \
//     node --test tests/browser/

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, statSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { launch, baseUrl, altBaseUrl } from './lib.mjs';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const SMOL = 'SmolLM2-135M-Instruct.Q4_1.gguf';
const GEMMA_PARTS = [0, 1, 2, 3].map((i) => `gemma-3-270m-q4_k_m.gguf.part0${i}`);
const modelPath = (name) => path.join('models', name);
const GIB = 2 ** 30;

// ------------------------------------------------------------------ the CLI, as the oracle

let cliPath;

function cli(args) {
  const out = execFileSync(cliPath, args, { cwd: root, encoding: 'utf8', maxBuffer: 64 << 20 });
  return JSON.parse(out);
}

/** `quantweb fit --json` for model files under models/. */
function cliFit(files, { ctx = 4096, kv = 'f16', gpu } = {}) {
  const args = ['fit', '--json', ...files.map(modelPath), '--ctx', String(ctx), '--kv', kv];
  if (gpu) args.push('--gpu-memory', gpu);
  return cli(args);
}

// ------------------------------------------------------------------ the browser

let browser;

before(async () => {
  for (const f of [SMOL, ...GEMMA_PARTS]) {
    assert.ok(existsSync(path.join(root, 'models', f)), `models/${f} is missing: run \`cargo xtask fetch-models --all\``);
  }
  // The oracle. `cargo xtask test` builds it (cargo test); built here only when missing, so a
  // busy cargo lock does not eat the time budget. A stale binary shows up as a mismatch: rebuild
  // with `cargo build -p quantweb`, or set QUANTWEB_CLI.
  cliPath = process.env.QUANTWEB_CLI || path.join(root, 'target', 'debug', 'quantweb');
  if (!existsSync(cliPath) && !process.env.QUANTWEB_CLI) {
    execFileSync('cargo', ['build', '--quiet', '-p', 'quantweb', '--bin', 'quantweb'], { cwd: root, stdio: 'inherit' });
  }
  assert.ok(existsSync(cliPath), `the CLI ${cliPath} is missing: run \`cargo build -p quantweb\``);
  browser = await launch();
});

after(async () => {
  await browser?.close();
});

/**
 * A fresh page (own context: empty cache and storage) that records every request and response,
 * console errors and page errors.
 */
async function openPage({ url = `${baseUrl}/`, waitDevice = true } = {}) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  const log = { requests: [], consoleErrors: [], pageErrors: [] };
  page.on('request', (req) => {
    log.requests.push({ url: req.url(), method: req.method(), req, done: null });
  });
  page.on('response', (resp) => {
    const entry = log.requests.find((r) => r.req === resp.request());
    if (entry) entry.done = resp.allHeaders().then((headers) => ({ status: resp.status(), headers }));
  });
  page.on('console', (m) => {
    if (m.type() === 'error') log.consoleErrors.push(m.text());
  });
  page.on('pageerror', (e) => log.pageErrors.push(e.message));
  await page.goto(url);
  if (waitDevice) {
    // Verdicts use the adapter limits and the storage estimate: wait for both.
    await page.waitForSelector('#gpu-info[data-available]', { state: 'attached', timeout: 15000 });
    await page.waitForSelector('#storage-info[data-available]', { state: 'attached', timeout: 15000 });
  }
  return { page, context, log };
}

/** Details of every request (with its Range header and response) made so far. */
async function settle(log) {
  return Promise.all(
    log.requests.map(async (r) => {
      const headers = await r.req.allHeaders();
      const resp = r.done ? await r.done : null;
      return { url: r.url, method: r.method, range: headers.range, status: resp?.status, contentLength: resp ? Number(resp.headers['content-length']) : undefined };
    }),
  );
}

/** Waits until the page shows figures for this setting, or for a visible error. */
async function waitForFigures(page, { ctx = 4096, kv = 'f16' } = {}) {
  const sel = `#results:not([hidden])[data-context-length="${ctx}"][data-kv-type="${kv}"]`;
  await Promise.race([
    page.waitForSelector(sel, { timeout: 30000 }),
    page.waitForSelector('#error:not([hidden])', { timeout: 30000 }).then(async () => {
      throw new Error(`the page shows an error instead of figures: ${await page.textContent('#error')}`);
    }),
  ]);
}

/** Everything the page shows as exact numbers. */
function pageFigures(page) {
  return page.evaluate(() => {
    const bytes = (id) => Number(document.getElementById(id).dataset.bytes);
    return {
      weights: bytes('weights-bytes'),
      kv: bytes('kv-bytes'),
      scratch: bytes('scratch-bytes'),
      total: bytes('total-bytes'),
      rule: bytes('rule-bytes'),
      rows: [...document.querySelectorAll('#quant-rows [data-quant]')].map((r) => ({
        quant: r.dataset.quant,
        weights: Number(r.dataset.weightsBytes),
        total: Number(r.dataset.totalBytes),
        rule: Number(r.dataset.ruleBytes),
      })),
    };
  });
}

function cliFigures(fit) {
  return {
    weights: fit.weights_bytes,
    kv: fit.kv_cache_bytes,
    scratch: fit.scratch_bytes,
    total: fit.total_bytes,
    rule: fit.rule_of_thumb_bytes,
    rows: [
      { quant: 'file', weights: fit.weights_bytes, total: fit.total_bytes, rule: fit.rule_of_thumb_bytes },
      ...fit.by_quant.map((r) => ({ quant: r.quant, weights: r.weights_bytes, total: r.total_bytes, rule: r.rule_of_thumb_bytes })),
    ],
  };
}

/** The figures and the KV explanation equal the CLI's for this setting. */
async function assertMatchesCli(page, fit, what) {
  assert.deepEqual(await pageFigures(page), cliFigures(fit), `${what}: page figures differ from \`quantweb fit --json\``);
  const kv = fit.kv_cache;
  const how = await page.textContent('#kv-how');
  const n = (x) => x.toLocaleString('en-US');
  assert.ok(how.includes(`${kv.full_layers} layers × ${n(kv.full_cells)} cells × ${n(kv.bytes_per_cell_per_layer)} B`), `${what}: KV explanation "${how}"`);
  if (kv.sliding_layers > 0) {
    assert.ok(how.includes(`${kv.sliding_layers} sliding-window layers × ${n(kv.sliding_cells)} cells`), `${what}: KV explanation lacks the sliding layers: "${how}"`);
  }
  // Human-readable text with the exact count in the tooltip.
  const total = page.locator('#total-bytes');
  assert.match(await total.textContent(), /^\d+(\.\d+)? (KiB|MiB|GiB)$/);
  assert.equal(await total.getAttribute('title'), `${n(fit.total_bytes)} bytes`);
}

/** Model-file requests: Range, 206, header-sized, few per file, and only to `origin`. */
function assertHeaderOnly(reqs, files, origin) {
  for (const r of reqs) {
    if (!/^https?:/.test(r.url)) continue;
    assert.equal(new URL(r.url).origin, origin, `request to another origin: ${r.url}`);
  }
  const modelReqs = reqs.filter((r) => /\/(models|nocors)\//.test(new URL(r.url).pathname));
  assert.ok(modelReqs.length > 0, 'no model request was recorded');
  let fetched = 0;
  let size = 0;
  for (const f of files) {
    const mine = modelReqs.filter((r) => new URL(r.url).pathname.endsWith(`/${f}`));
    assert.ok(mine.length >= 1 && mine.length <= 2, `${f}: ${mine.length} requests (want 1 or 2)`);
    for (const r of mine) {
      assert.match(r.range || '', /^bytes=\d+-\d+$/, `${r.url} was requested without a Range header`);
      assert.equal(r.status, 206, `${r.url} answered ${r.status}, not 206 Partial Content`);
      assert.ok(Number.isFinite(r.contentLength), `${r.url}: no Content-Length`);
      fetched += r.contentLength;
    }
    size += statSync(path.join(root, 'models', f)).size;
  }
  assert.equal(modelReqs.length, modelReqs.filter((r) => files.some((f) => r.url.endsWith(`/${f}`))).length, 'requests to other model files');
  assert.ok(fetched < size * 0.1, `fetched ${fetched} of ${size} bytes (${((100 * fetched) / size).toFixed(1)} %): not header-only`);
  return { fetched, size };
}

async function inspectUrl(page, url) {
  await page.fill('#url', url);
  await page.click('#inspect');
}

async function errorText(page) {
  await page.waitForSelector('#error:not([hidden])', { timeout: 30000 });
  assert.equal(await page.getAttribute('#error', 'role'), 'alert');
  assert.ok(await page.isHidden('#results'), 'results are still shown next to the error');
  return page.textContent('#error');
}

// ------------------------------------------------------------------ tests

test('the page loads with both tabs, no console errors, and shows the WebGPU adapter', async () => {
  const { page, context, log } = await openPage();
  try {
    assert.equal(await page.textContent('#tab-calc'), 'Calculator');
    assert.equal(await page.textContent('#tab-chat'), 'Chat');
    assert.ok(await page.isVisible('#panel-calc'));
    assert.ok(await page.isHidden('#panel-chat'));
    await page.click('#tab-chat');
    assert.ok(await page.isVisible('#panel-chat'));
    assert.ok(await page.isHidden('#panel-calc'));
    assert.ok(await page.isVisible('#chat-input')); // the chat view (tests/browser/chat.test.mjs)
    await page.click('#tab-calc');
    assert.ok(await page.isVisible('#panel-calc'));

    // What the page shows is what the browser reports.
    const truth = await page.evaluate(async () => {
      const a = await navigator.gpu.requestAdapter();
      const e = await navigator.storage.estimate();
      return { vendor: a.info.vendor, architecture: a.info.architecture, binding: a.limits.maxStorageBufferBindingSize, maxBuffer: a.limits.maxBufferSize, f16: a.features.has('shader-f16'), quota: e.quota };
    });
    assert.equal(await page.getAttribute('#gpu-info', 'data-available'), 'true');
    assert.equal(await page.getAttribute('#gpu-adapter', 'data-vendor'), truth.vendor);
    assert.equal(await page.getAttribute('#gpu-adapter', 'data-architecture'), truth.architecture);
    assert.ok(truth.vendor || truth.architecture, 'the adapter reports neither vendor nor architecture');
    assert.ok((await page.textContent('#gpu-adapter')).includes(truth.architecture || truth.vendor));
    assert.equal(Number(await page.getAttribute('#limit-max-storage-binding', 'data-bytes')), truth.binding);
    assert.equal(Number(await page.getAttribute('#limit-max-buffer', 'data-bytes')), truth.maxBuffer);
    assert.equal(await page.getAttribute('#gpu-f16', 'data-value'), String(truth.f16));
    assert.equal(Number(await page.getAttribute('#storage-quota', 'data-bytes')), truth.quota);

    assert.deepEqual(log.pageErrors, []);
    assert.deepEqual(log.consoleErrors, []);
    for (const r of await settle(log)) assert.equal(new URL(r.url).origin, new URL(baseUrl).origin, `request to another origin: ${r.url}`);
  } finally {
    await context.close();
  }
});

test('the public module quantweb.js: inspect/estimateMemory return the CLI JSON; ready, judgeFit, ruleOfThumb, deviceInfo, storageEstimate', async () => {
  const { page, context, log } = await openPage({ waitDevice: false });
  try {
    const r = await page.evaluate(async (url) => {
      const qw = await import('/quantweb.js');
      const info = await qw.inspect(url);
      const est = await qw.estimateMemory(info, { contextLength: 8192, kvType: 'f32' });
      const sameReady = qw.ready() === qw.ready();
      const sync = await qw.ready();
      const estSync = sync.estimateMemory(info, { contextLength: 8192, kvType: 'f32' });
      const errorOf = async (f) => {
        try {
          await f();
          return null;
        } catch (e) {
          return e instanceof Error ? e.message : `not an Error: ${e}`;
        }
      };
      const device = await qw.deviceInfo();
      const storage = await qw.storageEstimate();
      const budget = qw.deviceBudget(16 * 2 ** 30, device, storage);
      const verdict = await qw.judgeFit({ totalBytes: est.total_bytes, largestTensor: est.largest_tensor, downloadBytes: info.file_bytes, device: budget });
      const noBinding = sync.judgeFit({ totalBytes: 1, largestTensor: { name: 'big', bytes: 2 ** 40 }, downloadBytes: 1, device: budget });
      return {
        info,
        est,
        sameSync: JSON.stringify(est) === JSON.stringify(estSync),
        sameReady,
        rule: await qw.ruleOfThumb('8B'),
        ruleErr: await errorOf(() => qw.ruleOfThumb('lots')),
        kvErr: await errorOf(() => sync.estimateMemory(info, { kvType: 'q4' })),
        notGguf: await errorOf(() => qw.inspect('/index.html')),
        device,
        storage,
        budget,
        verdict,
        noBinding,
      };
    }, `/models/${SMOL}`);

    assert.deepEqual(r.est, cliFit([SMOL], { ctx: 8192, kv: 'f32' }), 'estimateMemory differs from `quantweb fit --json --ctx 8192 --kv f32`');
    const cliInfo = cli(['inspect', '--json', modelPath(SMOL)]);
    // Same JSON but for where the bytes came from.
    const strip = (i) => ({ ...i, parts: i.parts.map((p) => p.bytes), header_reads: undefined });
    assert.deepEqual(strip(r.info), strip(cliInfo), 'inspect() differs from `quantweb inspect --json`');
    assert.deepEqual(r.info.parts, [{ name: `/models/${SMOL}`, bytes: cliInfo.file_bytes }]);
    assert.ok(r.sameSync && r.sameReady);
    assert.deepEqual(r.rule, {
      parameters: 8e9,
      rows: [
        { bits: 16, bytes_per_weight: 2, weights_bytes: 16e9, rule_of_thumb_bytes: 19.2e9 },
        { bits: 8, bytes_per_weight: 1, weights_bytes: 8e9, rule_of_thumb_bytes: 9.6e9 },
        { bits: 4, bytes_per_weight: 0.5, weights_bytes: 4e9, rule_of_thumb_bytes: 4.8e9 },
      ],
    });
    assert.match(r.ruleErr || '', /lots/);
    assert.match(r.kvErr || '', /q4/);
    assert.match(r.notGguf || '', /not a GGUF file/);
    assert.equal(r.device.available, true);
    assert.equal(typeof r.device.shaderF16, 'boolean');
    assert.ok(r.device.limits.maxStorageBufferBindingSize > 0 && Array.isArray(r.device.features));
    // SwiftShader (Chromium 123+) has the integer dot products the GPU decode matvec uses.
    console.log(`WGSL language features: ${r.device.wgslLanguageFeatures.join(', ')}`);
    assert.ok(r.device.wgslLanguageFeatures.includes('packed_4x8_integer_dot_product'));
    assert.equal(r.storage.available, true);
    assert.equal(r.storage.free, Math.max(0, r.storage.quota - r.storage.usage));
    assert.deepEqual(r.budget, {
      gpuMemoryBytes: 16 * GIB,
      maxStorageBufferBindingSize: r.device.limits.maxStorageBufferBindingSize,
      maxBufferSize: r.device.limits.maxBufferSize,
      storageAvailableBytes: r.storage.free,
    });
    assert.deepEqual(r.verdict, { level: 'fits', reasons: [] });
    assert.equal(r.noBinding.level, 'does_not_fit');
    assert.match(r.noBinding.reasons.join(' '), /maxStorageBufferBindingSize/);
    assert.deepEqual(log.pageErrors, []);
  } finally {
    await context.close();
  }
});

test('SmolLM2 by URL: figures equal the CLI at 4K, after the slider (32K) and with a q8_0 KV cache; header-only requests', async () => {
  const { page, context, log } = await openPage();
  try {
    await inspectUrl(page, `/models/${SMOL}`);
    await waitForFigures(page);
    await assertMatchesCli(page, cliFit([SMOL]), 'ctx 4096 f16');

    const info = cli(['inspect', '--json', modelPath(SMOL)]);
    assert.equal(await page.textContent('#model-name'), info.name);
    assert.equal(Number(await page.getAttribute('#model-params', 'data-value')), info.parameters);
    assert.equal(await page.textContent('#model-layers'), String(info.hparams.layers));
    assert.match(await page.textContent('#model-kv-heads'), new RegExp(`^${info.hparams.kv_heads[0]}\\b`));
    assert.equal(await page.textContent('#model-head-dims'), `${info.hparams.key_length} / ${info.hparams.value_length}`);
    assert.match(await page.textContent('#model-sliding'), /^none/);
    assert.equal(await page.locator('#type-mix tr').count(), info.type_mix.length);

    const before = log.requests.length;
    await page.locator('#ctx').fill('15');
    await waitForFigures(page, { ctx: 32768 });
    assert.equal(await page.getAttribute('#ctx-value', 'data-tokens'), '32768');
    await assertMatchesCli(page, cliFit([SMOL], { ctx: 32768 }), 'ctx 32768 f16');
    // 32K is past the 8K SmolLM2 was trained for: the CLI warns, so must the page.
    assert.match(await page.textContent('#warnings'), /longer than the 8192 tokens/);

    await page.selectOption('#kv-type', 'q8_0');
    await waitForFigures(page, { ctx: 32768, kv: 'q8_0' });
    await assertMatchesCli(page, cliFit([SMOL], { ctx: 32768, kv: 'q8_0' }), 'ctx 32768 q8_0');
    await page.locator('#ctx').fill('11');
    await waitForFigures(page, { ctx: 2048, kv: 'q8_0' });
    await assertMatchesCli(page, cliFit([SMOL], { ctx: 2048, kv: 'q8_0' }), 'ctx 2048 q8_0');
    assert.equal(log.requests.length, before, 'changing the context or KV type made requests (it must not re-fetch)');

    const reqs = await settle(log);
    assertHeaderOnly(reqs, [SMOL], new URL(baseUrl).origin);
    assert.deepEqual(log.pageErrors, []);
    assert.deepEqual(log.consoleErrors, []);
  } finally {
    await context.close();
  }
});

test('Gemma 3 byte chunks via the preset: figures equal the CLI on the four parts; sliding window shown', async () => {
  const { page, context, log } = await openPage();
  try {
    await page.click('[data-preset="gemma-chunks"]');
    await waitForFigures(page);
    await assertMatchesCli(page, cliFit(GEMMA_PARTS), 'gemma ctx 4096');
    const info = cli(['inspect', '--json', ...GEMMA_PARTS.map(modelPath)]);
    const hp = info.hparams;
    assert.ok(hp.sliding_window > 0 && hp.sliding_window_layers.length > 0, 'the CLI sees no sliding window in gemma 3');
    assert.equal(Number(await page.getAttribute('#model-sliding', 'data-window')), hp.sliding_window);
    assert.equal(Number(await page.getAttribute('#model-sliding', 'data-layers')), hp.sliding_window_layers.length);
    assert.match(await page.textContent('#model-sliding'), new RegExp(`${hp.sliding_window} tokens on ${hp.sliding_window_layers.length} of ${hp.layers} layers`));
    assert.equal(await page.textContent('#model-name'), info.name);
    assert.match(await page.textContent('#model-file-bytes'), /in 4 byte chunks/);

    await page.locator('#ctx').fill('17');
    await waitForFigures(page, { ctx: 131072 });
    await assertMatchesCli(page, cliFit(GEMMA_PARTS, { ctx: 131072 }), 'gemma ctx 131072');

    const reqs = await settle(log);
    const { fetched, size } = assertHeaderOnly(reqs, GEMMA_PARTS, new URL(baseUrl).origin);
    // Only the first chunk holds the header: the others are only asked for their size.
    for (const f of GEMMA_PARTS.slice(1)) {
      const got = reqs.filter((r) => r.url.endsWith(`/${f}`)).reduce((a, r) => a + r.contentLength, 0);
      assert.ok(got <= 65536, `${f}: fetched ${got} bytes, but a later chunk only needs its size`);
    }
    console.log(`gemma chunks: fetched ${fetched} of ${size} bytes (${((100 * fetched) / size).toFixed(1)} %)`);
    assert.deepEqual(log.pageErrors, []);
    assert.deepEqual(log.consoleErrors, []);
  } finally {
    await context.close();
  }
});

test('errors: 404, not a GGUF file, cross-origin without CORS; cross-origin with CORS works', async () => {
  assert.notEqual(new URL(altBaseUrl).origin, new URL(baseUrl).origin, 'QUANTWEB_ALT_BASE_URL must be another origin than QUANTWEB_BASE_URL');
  const { page, context, log } = await openPage({ waitDevice: false });
  try {
    await inspectUrl(page, '/models/nope.gguf');
    assert.match(await errorText(page), /HTTP 404/);
    assert.match(await page.textContent('#error'), /check the URL/i);

    for (const notGguf of ['/index.html', '/style.css']) {
      await inspectUrl(page, notGguf);
      await page.waitForFunction((u) => document.querySelector('#error:not([hidden])')?.textContent.includes(u), notGguf, { timeout: 30000 });
      assert.match(await errorText(page), /not a GGUF file/);
    }

    await inspectUrl(page, `${altBaseUrl}/nocors/${SMOL}`);
    await page.waitForFunction(() => /network error/.test(document.querySelector('#error:not([hidden])')?.textContent || ''), null, { timeout: 30000 });
    const cors = await errorText(page);
    assert.match(cors, /CORS/);
    assert.match(cors, /file picker/, 'the CORS error does not say what to do');

    // An error box never shows model- or URL-derived text as HTML.
    await inspectUrl(page, '/models/<b>injected</b><img/src=x>.gguf');
    await page.waitForFunction(() => /HTTP 404/.test(document.querySelector('#error:not([hidden])')?.textContent || '') && document.querySelector('#error').textContent.includes('<b>injected</b>'), null, { timeout: 30000 });
    assert.equal(await page.locator('#error b, #error img').count(), 0);

    await inspectUrl(page, `${altBaseUrl}/models/${SMOL}`);
    await waitForFigures(page);
    assert.ok(await page.isHidden('#error'), 'the error box stayed after a successful inspect');
    await assertMatchesCli(page, cliFit([SMOL]), 'cross-origin with CORS');
    const reqs = await settle(log);
    const cross = reqs.filter((r) => r.url.startsWith(`${altBaseUrl}/models/`) && r.method === 'GET');
    assert.ok(cross.length >= 1 && cross.length <= 2 && cross.every((r) => r.status === 206 && /^bytes=/.test(r.range || '')), JSON.stringify(cross));
    assert.deepEqual(log.pageErrors, []);
  } finally {
    await context.close();
  }
});

test('a local file is read in the page: figures shown and no request for the model', async () => {
  const { page, context, log } = await openPage();
  try {
    await page.setInputFiles('#file', path.join(root, 'models', SMOL));
    await waitForFigures(page);
    await assertMatchesCli(page, cliFit([SMOL]), 'local file');
    assert.match(await page.textContent('#status'), /locally/);
    const reqs = await settle(log);
    const model = reqs.filter((r) => /gguf|\/models\/|\/nocors\//i.test(r.url));
    assert.deepEqual(model.map((r) => r.url), [], 'the page requested the model although it was given as a file');
    for (const r of reqs) assert.equal(new URL(r.url).origin, new URL(baseUrl).origin, `request to another origin: ${r.url}`);
    assert.deepEqual(log.consoleErrors, []);
  } finally {
    await context.close();
  }
});

test('the parameter-count rule of thumb: 7B gives 14 / 7 / 3.5 GB, × 1.2', async () => {
  const { page, context } = await openPage({ waitDevice: false });
  try {
    await page.fill('#param-count', '7B');
    await page.press('#param-count', 'Enter');
    await page.waitForSelector('#rule-table:not([hidden])');
    assert.equal(await page.getAttribute('#rule-table', 'data-parameters'), '7000000000');
    const rows = await page.$$eval('#rule-rows tr', (trs) =>
      trs.map((tr) => ({
        bits: Number(tr.dataset.bits),
        weights: Number(tr.querySelector('.rule-weights').dataset.bytes),
        rule: Number(tr.querySelector('.rule-total').dataset.bytes),
        text: tr.querySelector('.rule-weights').textContent,
      })),
    );
    assert.deepEqual(rows, [
      { bits: 16, weights: 14e9, rule: 16.8e9, text: '14 GB' },
      { bits: 8, weights: 7e9, rule: 8.4e9, text: '7 GB' },
      { bits: 4, weights: 3.5e9, rule: 4.2e9, text: '3.5 GB' },
    ]);
    assert.equal(await page.textContent('#rule-rows tr[data-bits="16"] .rule-total'), '16.8 GB');

    await page.fill('#param-count', 'lots');
    await page.press('#param-count', 'Enter');
    await page.waitForSelector('#param-error:not([hidden])');
    assert.ok(await page.isHidden('#rule-table'));
    assert.match(await page.textContent('#param-error'), /8B/);
  } finally {
    await context.close();
  }
});

test('verdicts follow the GPU memory entered and agree with the CLI', async () => {
  const { page, context } = await openPage();
  try {
    await inspectUrl(page, `/models/${SMOL}`);
    await waitForFigures(page);
    const verdicts = () =>
      page.$$eval('#quant-rows [data-quant]', (rows) =>
        rows.map((r) => {
          const v = r.querySelector('.verdict');
          return { quant: r.dataset.quant, level: v.dataset.level, reasons: [...v.querySelectorAll('.reasons li')].map((li) => li.textContent) };
        }),
      );
    const expect = (gpu) =>
      cliFit([SMOL], { gpu }).verdicts.map(([what, v]) => ({ quant: what === 'this file' ? 'file' : what, level: v.level, reasons: v.reasons }));

    for (const [gb, level] of [['0.1', 'does_not_fit'], ['0.2', null], ['16', 'fits']]) {
      await page.fill('#gpu-mem', gb);
      await page.waitForSelector(`#results[data-gpu-memory-bytes="${Math.floor(Number(gb) * GIB)}"]`);
      const got = await verdicts();
      // The page also checks the adapter's binding limits and the storage quota, which this
      // small model passes: so it must say exactly what the CLI says.
      assert.deepEqual(got, expect(`${gb}G`), `GPU ${gb} GB`);
      if (level) assert.ok(got.every((v) => v.level === level), `GPU ${gb} GB: ${JSON.stringify(got)}`);
    }
    // 0.2 GiB: this file (0.19 GiB) is tight, F16 does not fit.
    await page.fill('#gpu-mem', '0.2');
    await page.waitForSelector(`#results[data-gpu-memory-bytes="${Math.floor(0.2 * GIB)}"]`);
    assert.equal(await page.getAttribute('[data-quant="file"] .verdict', 'data-level'), 'tight');
    // Beside each GPU verdict, the CPU engine's: SmolLM2 fits wasm's 4 GiB at every quantization.
    assert.equal(await page.getAttribute('[data-quant="F16"] .cpu-verdict', 'data-level'), 'fits');
    assert.match(await page.textContent('[data-quant="file"] .cpu-verdict'), /CPU engine/);
    assert.equal(await page.getAttribute('[data-quant="F16"] .verdict', 'data-level'), 'does_not_fit');
    await page.fill('#gpu-mem', '0.1');
    await page.waitForSelector(`#results[data-gpu-memory-bytes="${Math.floor(0.1 * GIB)}"]`);
    assert.match(await page.textContent('[data-quant="Q4_K_M"] .reasons'), /needs [\d.]+ GiB but the GPU has 0\.10 GiB/);
  } finally {
    await context.close();
  }
});
