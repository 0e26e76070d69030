// Untrusted requests through the JS API, in headless Chromium on SmolLM2 and the CPU engine
// (faster to load and run than WebGPU on SwiftShader): every bad value is a named error
// (InvalidRequestError with `param`, ContextFullError), every other case a documented clamp
// (max_tokens past the context, lone surrogates → U+FFFD, a request made during another waits
// its turn), and after each the engine gives the same answer as before.
//
// Run: `cargo xtask test --browser-only`, or with a server already running:
//   QUANTWEB_BASE_URL=http://127.0.0.1:8080 node --test tests/browser/requests.test.mjs

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { launch, baseUrl } from './lib.mjs';
import { root } from './fixtures.mjs';

const MODEL = 'SmolLM2-135M-Instruct.Q4_1.gguf';
const CONTEXT = 64;
const MINUTE = 60_000;
const PROMPT = 'The capital of France is';
const MB = 1 << 20;

let browser;
let page;
const pageErrors = [];
/** The greedy answer to PROMPT before any bad request: later ones must equal it. */
let baseline;

before(async () => {
  assert.ok(existsSync(path.join(root, 'models', MODEL)), `models/${MODEL} is missing: run \`cargo xtask fetch-models\``);
  browser = await launch();
  page = await browser.newPage();
  page.on('pageerror', (e) => pageErrors.push(e.message));
  await page.goto(`${baseUrl}/`);
  await page.evaluate(async ({ url, contextLength }) => {
    const { Engine } = await import('/quantweb.js');
    window.engine = await Engine.load(url, { cache: false, backend: 'cpu', contextLength });
    // A rejection as data, so that the test can check its name.
    window.settle = (p) => p.then((value) => ({ value }), (e) => ({ error: { name: e.name, param: e.param, message: e.message } }));
  }, { url: `/models/${MODEL}`, contextLength: CONTEXT });
  baseline = await answer();
});

after(async () => {
  await browser?.close();
});

/** The greedy 4 tokens after PROMPT, as ids. */
function answer() {
  return page.evaluate((prompt) => window.engine.complete({ prompt, max_tokens: 4, temperature: 0 }).then((r) => r.tokens), PROMPT);
}

async function assertStillAnswers(label) {
  assert.deepEqual(await answer(), baseline, `${label}: the engine answers as before`);
  assert.deepEqual(pageErrors, []);
}

const user = (content) => ({ role: 'user', content });

/** [label, how to call: 'complete' | 'chat' | 'stream', request, the param the error names]. */
const INVALID = [
  ['max_tokens 0', 'complete', { max_tokens: 0 }, 'max_tokens'],
  ['max_tokens -1', 'complete', { max_tokens: -1 }, 'max_tokens'],
  ['max_tokens 2.5', 'chat', { max_tokens: 2.5 }, 'max_tokens'],
  ['temperature NaN', 'complete', { temperature: NaN }, 'temperature'],
  ['temperature -1', 'chat', { temperature: -1 }, 'temperature'],
  ['top_p 1.5', 'complete', { top_p: 1.5 }, 'top_p'],
  ['top_p NaN', 'stream', { top_p: NaN }, 'top_p'],
  ['an empty stop string', 'chat', { stop: '' }, 'stop[0]'],
  ['a 1 MB stop string', 'complete', { stop: ['ok', 'x'.repeat(MB)] }, 'stop[1]'],
  ['17 stop strings', 'complete', { stop: Array.from({ length: 17 }, (_, i) => `s${i}`) }, 'stop'],
  ['no message', 'chat', { messages: [] }, 'messages'],
  ['an unknown role', 'chat', { messages: [user('Hi'), { role: 'wizard', content: 'Abracadabra' }] }, 'messages[1].role'],
  ['an unknown role, streamed', 'stream', { messages: [{ role: 'USER', content: 'Hi' }] }, 'messages[0].role'],
  ['an empty prompt (SmolLM2 adds no BOS)', 'complete', { prompt: '' }, 'prompt'],
];

test('bad values are InvalidRequestErrors naming the option; the engine answers as before', { timeout: 5 * MINUTE }, async () => {
  const got = await page.evaluate(async (cases) => {
    const out = [];
    for (const [label, how, req] of cases) {
      const r = { max_tokens: 4, temperature: 0, ...req };
      let settled;
      if (how === 'complete') settled = await window.settle(window.engine.complete({ prompt: 'Hi', ...r }));
      else if (how === 'chat') settled = await window.settle(window.engine.chat.completions.create({ messages: [{ role: 'user', content: 'Hi' }], ...r }));
      else {
        // A streamed request fails where its chunks are read.
        settled = await window.settle((async () => {
          const stream = await window.engine.chat.completions.create({ messages: [{ role: 'user', content: 'Hi' }], ...r, stream: true });
          for await (const _ of stream);
        })());
      }
      out.push([label, settled.error ?? null]);
    }
    return out;
  }, INVALID);
  for (const [[label, error], [, , , param]] of got.map((g, i) => [g, INVALID[i]])) {
    assert.equal(error?.name, 'InvalidRequestError', `${label}: ${JSON.stringify(error)}`);
    assert.equal(error.param, param, `${label}: ${error.message}`);
    assert.match(error.message, new RegExp(`^invalid request: ${param.replace(/[[\]]/g, '\\$&')} = `), label);
    assert.ok(error.message.length < 300, `${label}: a long value is cut short in the message (${error.message.length} chars)`);
  }
  await assertStillAnswers('after the invalid requests');
});

test('a 1 MB prompt and a prompt beyond the context are ContextFullErrors', { timeout: 5 * MINUTE }, async () => {
  const r = await page.evaluate(async (mb) => {
    const big = 'The quick brown fox jumps over the lazy dog. '.repeat(Math.ceil(mb / 45));
    const t0 = performance.now();
    const raw = await window.settle(window.engine.complete({ prompt: big, max_tokens: 4 }));
    const t1 = performance.now();
    const chat = await window.settle(window.engine.chat.completions.create({ messages: [{ role: 'user', content: big }], max_tokens: 4 }));
    const t2 = performance.now();
    // Just past the context: 70 words of one token or more each.
    const over = await window.settle(window.engine.complete({ prompt: ' word'.repeat(70), max_tokens: 1 }));
    return { raw: raw.error, chat: chat.error, over: over.error, rawMs: t1 - t0, chatMs: t2 - t1, bytes: big.length };
  }, MB);
  assert.ok(r.bytes >= MB);
  for (const [label, e] of [['1 MB raw prompt', r.raw], ['1 MB chat message', r.chat], ['70 words', r.over]]) {
    assert.equal(e?.name, 'ContextFullError', `${label}: ${JSON.stringify(e)}`);
    assert.match(e.message, new RegExp(`context full: \\d+ tokens needed but the context holds ${CONTEXT}`), label);
  }
  console.log(`1 MB prompt: ContextFullError after ${r.rawMs.toFixed(0)} ms (raw), ${r.chatMs.toFixed(0)} ms (chat)`);
  await assertStillAnswers('after the context-full requests');
});

test('lone UTF-16 surrogates become U+FFFD, as TextEncoder makes them', { timeout: 5 * MINUTE }, async () => {
  const r = await page.evaluate(async () => {
    const e = window.engine;
    const lone = 'Hi \uD83D there \uDE00!';
    const replaced = 'Hi \uFFFD there \uFFFD!';
    const chat = (content) => e.chat.completions.create({ messages: [{ role: 'user', content }], max_tokens: 2, temperature: 0 });
    return {
      tokenized: [await e.tokenize(lone), await e.tokenize(replaced)],
      prompt: [(await e.complete({ prompt: lone, max_tokens: 1, temperature: 0 })).prompt_tokens, (await e.complete({ prompt: replaced, max_tokens: 1, temperature: 0 })).prompt_tokens],
      chat: [await chat(lone), await chat(replaced)].map((c) => [c.usage.prompt_tokens, c.choices[0].message.content]),
      fffd: await e.tokenize('\uFFFD'),
    };
  });
  assert.deepEqual(r.tokenized[0], r.tokenized[1]);
  assert.deepEqual(r.prompt[0], r.prompt[1]);
  assert.deepEqual(r.chat[0], r.chat[1]);
  // The replacement is really there (not the surrogates dropped): U+FFFD's tokens are in it.
  const has = (hay, needle) => hay.some((_, i) => needle.every((t, k) => hay[i + k] === t));
  assert.ok(has(r.tokenized[0], r.fffd), `${JSON.stringify(r.tokenized[0])} holds U+FFFD ${JSON.stringify(r.fffd)}`);
  await assertStillAnswers('after lone surrogates');
});

test('max_tokens beyond the context (1e9) stops at the context end with finish_reason length', { timeout: 5 * MINUTE }, async () => {
  const r = await page.evaluate((prompt) => window.engine.complete({ prompt, max_tokens: 1e9, temperature: 0 }), PROMPT);
  assert.equal(r.finish_reason, 'length');
  assert.equal(r.prompt_tokens.length + r.tokens.length, CONTEXT, 'generation fills the context, no further');
  assert.deepEqual(r.tokens.slice(0, 4), baseline);
  await assertStillAnswers('after filling the context');
});

test('a request made while another runs waits for it, and gets the answer it gets alone', { timeout: 5 * MINUTE }, async () => {
  const r = await page.evaluate(async (prompt) => {
    const e = window.engine;
    const order = [];
    const note = (label) => (v) => (order.push(label), v);
    const first = e.complete({ prompt, max_tokens: 12, temperature: 0 }).then(note('complete'));
    const second = e.chat.completions.create({ messages: [{ role: 'user', content: 'What is 2+2?' }], max_tokens: 6, temperature: 0 }).then(note('chat'));
    const third = e.tokenize(prompt).then(note('tokenize'));
    const together = await Promise.all([first, second, third]);
    const alone = [await e.complete({ prompt, max_tokens: 12, temperature: 0 }), await e.chat.completions.create({ messages: [{ role: 'user', content: 'What is 2+2?' }], max_tokens: 6, temperature: 0 })];
    return { order, together: [together[0].tokens, together[1].choices[0].message.content], alone: [alone[0].tokens, alone[1].choices[0].message.content] };
  }, PROMPT);
  assert.deepEqual(r.order, ['complete', 'chat', 'tokenize'], 'requests run in the order they were made');
  assert.deepEqual(r.together, r.alone);
  assert.equal(r.together[0].length, 12);
  await assertStillAnswers('after concurrent requests');
});
