// The Chat view in headless Chromium (WebGPU on SwiftShader: seconds per token, so answers are
// kept a few tokens long): load a preset into the cache, stream an answer and stop it, a second
// turn over the chat template, new chat, the cached-models list, a local file with no request.
//
// Run: `cargo xtask test --browser-only`, or with a server already running:
//   QUANTWEB_BASE_URL=http://127.0.0.1:8080 node --test tests/browser/chat.test.mjs

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { launch, baseUrl } from './lib.mjs';
import { root } from './fixtures.mjs';

const SMOL = 'SmolLM2-135M-Instruct.Q4_1.gguf';
const MINUTE = 60_000;

let browser;

before(async () => {
  assert.ok(existsSync(path.join(root, 'models', SMOL)), `models/${SMOL} is missing: run \`cargo xtask fetch-models\``);
  browser = await launch();
});

after(async () => {
  await browser?.close();
});

test('chat: load a preset, stream an answer, stop it, answer a second turn, then a local file loads with no request', { timeout: 25 * MINUTE }, async () => {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  const requests = [];
  const errors = [];
  page.on('request', (r) => requests.push(r.url()));
  page.on('pageerror', (e) => errors.push(e.message));
  page.on('console', (m) => m.type() === 'error' && errors.push(m.text()));
  try {
    await page.goto(`${baseUrl}/#chat`);
    assert.ok(await page.isVisible('#panel-chat'));
    assert.ok(await page.isDisabled('#send'), 'nothing to send to before a model is loaded');
    await page.fill('#temperature', '0');
    await page.fill('#max-tokens', '64');

    // Load the default model: downloaded into the cache, progress shown.
    await page.click('[data-testid=chat-preset-smollm2]');
    await page.waitForSelector('#load-progress:not([hidden])');
    await page.waitForSelector('#chat-model-info:not([hidden])', { timeout: 5 * MINUTE });
    assert.equal(await page.getAttribute('#chat-model-info', 'data-source'), 'network');
    assert.match(await page.textContent('#chat-model-name'), /smollm2/i);
    assert.ok(await page.isHidden('#load-progress'));
    const mem = Number(await page.getAttribute('#mem-use', 'data-bytes'));
    assert.ok(mem > 96_000_000, `memory use shown: ${mem}`);
    await page.waitForSelector('#cached-list li[data-complete=true]');

    // Turn 1: tokens stream in; Stop ends the answer early.
    await page.fill('#chat-input', 'What is the capital of France?');
    await page.press('#chat-input', 'Enter');
    await page.waitForSelector('#stop:not([hidden])');
    assert.equal(await page.textContent('.msg.user .text'), 'What is the capital of France?');
    await page.waitForFunction(() => {
      const t = document.querySelector('.msg.assistant .text');
      return t && t.textContent.length > 0;
    }, null, { timeout: 10 * MINUTE, polling: 200 });
    const early = await page.textContent('.msg.assistant .text');
    await page.click('#stop');
    await page.waitForSelector('.msg.assistant:not(.streaming)', { timeout: 3 * MINUTE });
    const first = page.locator('.msg.assistant').first();
    assert.equal(await first.getAttribute('data-aborted'), 'true');
    assert.equal(await first.getAttribute('data-finish'), 'stop');
    const answer1 = await first.locator('.text').textContent();
    assert.ok(answer1.startsWith(early), 'the answer keeps what was streamed');
    assert.ok(await page.isVisible('#send'));
    assert.ok(await page.isHidden('#stop'));

    // Turn 2: the conversation goes on through the chat template.
    await page.fill('#max-tokens', '3');
    await page.fill('#chat-input', 'And of Italy?');
    await page.click('#send');
    await page.waitForFunction(() => document.querySelectorAll('.msg.assistant').length === 2 && !document.querySelector('.msg.streaming'), null, { timeout: 10 * MINUTE, polling: 500 });
    const second = page.locator('.msg.assistant').nth(1);
    assert.equal(await second.getAttribute('data-finish'), 'length');
    assert.ok((await second.locator('.text').textContent()).length > 0);
    assert.match(await second.locator('.meta').textContent(), /3 tokens · [\d.]+ tok\/s/);
    assert.match(await page.textContent('#tok-s'), /^[\d.]+$/);
    assert.equal(await page.locator('.msg').count(), 4);
    // Model output is text: never parsed as HTML.
    assert.equal(await page.evaluate(() => [...document.querySelectorAll('.msg .text')].reduce((n, e) => n + e.childElementCount, 0)), 0);
    assert.ok(await page.isHidden('#chat-error'), await page.textContent('#chat-error'));

    await page.click('#new-chat');
    assert.equal(await page.locator('.msg').count(), 0);

    // The cached copy can be deleted from the page.
    await page.click('#cached-list li[data-complete=true] button');
    await page.waitForFunction(() => !document.querySelector('#cached-list li[data-key]'));

    // A local file: read in place, no model request.
    const before = requests.length;
    await page.setInputFiles('#chat-file', path.join(root, 'models', SMOL));
    await page.waitForSelector('#chat-model-info[data-source=local]:not([hidden])', { timeout: 5 * MINUTE });
    // (The new engine worker fetches its own script and wasm from the page's origin.)
    assert.deepEqual(requests.slice(before).filter((u) => /\/models\/|\.gguf|\/fixtures\//.test(u)), [], 'no model request while loading a local file');

    // The page only ever talked to its own origin.
    assert.deepEqual(requests.filter((u) => !u.startsWith(`${baseUrl}/`) && !u.startsWith('blob:') && !u.startsWith('data:')), []);
    assert.deepEqual(errors, []);
  } finally {
    await context.close();
  }
});
