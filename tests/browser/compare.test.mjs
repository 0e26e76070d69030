// The Compare view end to end in headless Chromium: "Make Q4_K, Q5_K and Q8_0 from the base and
// compare" quantizes SmolLM2 three times in the page (into OPFS), compares the three files with
// the base on the CPU engine, and shows a table and a chart whose values are the CLI's
// `quantweb compare --json` on the same files (made natively, byte-identical). Also, through the
// JS API: abort, a candidate with another vocabulary, and one that cannot load.
//
// Run: `cargo xtask test --browser-only`, or with a server already running:
//   QUANTWEB_BASE_URL=http://127.0.0.1:8080 node --test tests/browser/compare.test.mjs

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { launch, baseUrl } from './lib.mjs';
import { root } from './fixtures.mjs';

const BASE = 'SmolLM2-135M-Instruct.Q4_1.gguf';
const TYPES = ['Q8_0', 'Q5_K', 'Q4_K'];
const CTX = 64;
const MINUTE = 60_000;
const cli = path.join(root, 'target/debug/quantweb');

let browser;
before(async () => {
  browser = await launch();
});
after(async () => {
  await browser?.close();
});

/** The CLI's comparison of the same files, quantized natively (the same bytes as the page's). */
function cliComparison() {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'quantweb-compare-'));
  try {
    const base = path.join(root, 'models', BASE);
    const files = TYPES.map((t) => {
      const out = path.join(dir, `${t}.gguf`);
      execFileSync(cli, ['quantize', base, out, '--type', t, '--allow-requantize'], { stdio: 'ignore' });
      return out;
    });
    const out = execFileSync(cli, ['compare', base, ...files, '--backend', 'cpu', '--threads', '1', '--ctx', String(CTX), '--chunks', '1', '--json'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
    return JSON.parse(out);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const close = (a, b, rel) => Math.abs(a - b) <= rel * Math.max(Math.abs(a), Math.abs(b), 1e-12);

test('the Compare view: quantize in the page, compare, table and chart equal the CLI', { timeout: 10 * MINUTE }, async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  try {
    await page.goto(`${baseUrl}/#compare`);
    await page.getByTestId('cmp-base').fill(`${baseUrl}/models/${BASE}`);
    await page.getByTestId('cmp-ctx').fill(String(CTX));
    await page.getByTestId('cmp-chunks').fill('1');
    await page.getByTestId('cmp-make').click();
    // The table fills in after each window; the chart comes with the final result.
    await page.locator('[data-testid="cmp-chart"] svg').waitFor({ state: 'visible', timeout: 8 * MINUTE });

    const rows = await page.$$eval('[data-testid="cmp-table"] tbody tr', (trs) => trs.map((tr) => ({ model: tr.dataset.model, kld: Number(tr.dataset.kld), ppl: Number(tr.dataset.ppl), error: tr.dataset.error })));
    const stem = BASE.replace(/\.gguf$/, '');
    assert.deepEqual(rows.map((r) => r.model), [stem, ...TYPES.map((t) => `${stem}-${t}`)]);
    assert.equal(await page.locator('[data-testid="cmp-chart"] circle').count(), 4);
    assert.match(await page.getByTestId('cmp-summary').textContent(), /1 windows of 64 tokens/);
    // The three files are listed as quantized in this browser, ticked for the next comparison.
    assert.equal(await page.locator('[data-testid="cmp-quantized"] input:checked').count(), 3);

    const want = cliComparison();
    for (const [i, c] of want.candidates.entries()) {
      const got = rows[i + 1];
      // The same statistics of the same files, but not the same floating point: wasm's libm
      // (exp, sin, cos) is not glibc's, and SmolLM2's 30 layers carry those last bits into the
      // logits. Measured on these 31 positions: the page's Q8_0 KLD is 4.5 % below the CLI's
      // and PPL(base) 0.8 %; the native GPU engine is as far from the native CPU one (9 %,
      // 1.9 %). A wrong position, window or formula moves them by far more (Q8_0 to Q4_K is
      // 15×).
      assert.ok(close(got.kld, c.report.kld.value, 0.1), `${TYPES[i]} KLD: page ${got.kld}, CLI ${c.report.kld.value}`);
      assert.ok(close(got.ppl, c.report.ppl.value, 0.02), `${TYPES[i]} PPL: page ${got.ppl}, CLI ${c.report.ppl.value}`);
    }
    assert.ok(rows[1].kld > 0, 'a requantized file is not the base');
    assert.deepEqual(errors, []);
  } finally {
    await context.close();
  }
});

test('compare(): abort, a candidate with another vocabulary, one that cannot load', { timeout: 5 * MINUTE }, async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  try {
    await page.goto(`${baseUrl}/`);
    const r = await page.evaluate(async ({ base, other }) => {
      const qw = await import('/quantweb.js');
      const settle = (p) => p.then((v) => ({ ok: v }), (e) => ({ error: { name: e.name, message: e.message } }));
      const ctrl = new AbortController();
      const events = [];
      const aborted = await settle(
        qw.compare(base, [base], {
          ctx: 128,
          backend: 'cpu',
          signal: ctrl.signal,
          onProgress: (p) => {
            events.push(p.phase);
            if (p.phase === 'compare') ctrl.abort();
          },
        }),
      );
      const mismatch = await settle(qw.compare(base, [other], { ctx: 64, backend: 'cpu' }));
      const short = await settle(qw.compare(base, [base], { ctx: 64, text: 'Too short.', backend: 'cpu' }));
      // A candidate that cannot load is marked with its error; the others are compared.
      const c = await qw.compare(base, ['/models/missing-Q4_K.gguf', base], { ctx: 64, chunks: 1, backend: 'cpu' });
      const marked = c.candidates.map((x) => ({ name: x.name, error: x.error?.name, zero: x.report ? Math.abs(x.report.kld.value) < 1e-6 : undefined }));
      return { aborted, events: [...new Set(events)], mismatch, short, marked };
    }, { base: `${baseUrl}/models/${BASE}`, other: `${baseUrl}/models/tiny-phi3.gguf` });
    assert.equal(r.aborted.error?.name, 'AbortError', JSON.stringify(r.aborted));
    assert.ok(r.events.includes('compare') && r.events.includes('upload'), r.events.join());
    assert.equal(r.mismatch.error?.name, 'VocabMismatchError', JSON.stringify(r.mismatch));
    assert.match(r.mismatch.error.message, /32064 tokens against the base's 49152/);
    assert.equal(r.short.error?.name, 'InvalidRequestError', JSON.stringify(r.short));
    assert.deepEqual(r.marked, [
      { name: 'missing-Q4_K', error: 'HttpError', zero: undefined },
      { name: BASE.replace(/\.gguf$/, ''), error: undefined, zero: true },
    ]);
  } finally {
    await context.close();
  }
});
