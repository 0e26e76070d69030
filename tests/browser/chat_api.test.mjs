// The OpenAI/WebLLM-shaped chat API (`engine.chat.completions.create`) in headless Chromium, on the
// tiny random-weight Llama 3 model (its answers are noise; their shape is what is checked):
// request fields the engine does not implement reject with UnsupportedOptionError naming the
// field, before anything reaches the worker; the accepted ones keep the engine answering, in
// OpenAI's shape. tests/types checks the same API at the type level.
//
// Run: `cargo xtask test --browser-only`, or with a server already running:
//   QUANTWEB_BASE_URL=http://127.0.0.1:8080 node --test tests/browser/chat_api.test.mjs

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { launch, baseUrl } from './lib.mjs';
import { root } from './fixtures.mjs';

const MODEL = 'tiny-llama3.gguf';
const MINUTE = 60_000;
const user = (content) => ({ role: 'user', content });

/** [request, second argument of create, the field the error must name]. */
const REFUSED = [
  [{ messages: [user('Hi')], n: 2 }, undefined, 'n'],
  // The tiny model's template takes no tools (tests/browser/tools.test.mjs has one that does).
  [{ messages: [user('Hi')], tools: [{ type: 'function', function: { name: 'add' } }], tool_choice: 'auto' }, undefined, 'tools'],
  [{ messages: [user('Hi')], functions: [{ name: 'add' }] }, undefined, 'functions'],
  [{ messages: [user('Hi')], response_format: { type: 'structural_tag', structural_tag: {} } }, undefined, 'response_format.type'],
  [{ messages: [user('Hi')], frequency_penalty: 0.5 }, undefined, 'frequency_penalty'],
  [{ messages: [user('Hi')], modalities: ['text', 'audio'], audio: { voice: 'alloy', format: 'wav' } }, undefined, 'modalities'],
  [{ messages: [user('Hi')], max_token: 8 }, undefined, 'max_token'],
  [{ messages: [user('Hi')], extra_body: { enable_thinking: false } }, undefined, 'extra_body.enable_thinking'],
  [{ messages: [user('Hi')], stream_options: { include_usage: true } }, undefined, 'stream_options'],
  [{ messages: [user('Hi')] }, { timeout: 1000 }, 'options.timeout'],
  [{ messages: [user([{ type: 'text', text: 'What is this?' }, { type: 'image_url', image_url: { url: 'data:image/png;base64,' } }])] }, undefined, 'messages[0].content[1]'],
  [{ messages: [user([{ type: 'input_audio', input_audio: { data: '', format: 'wav' } }])] }, undefined, 'messages[0].content[0]'],
  [{ messages: [user('Hi'), { role: 'assistant', content: null, tool_calls: [{ id: 'c1', type: 'function', function: { name: 'f', arguments: '{}' } }] }] }, undefined, 'messages[1]'],
  [{ messages: [user('Hi'), { role: 'tool', tool_call_id: 'c1', content: '4' }] }, undefined, 'messages[1]'],
  [{ messages: [{ role: 'user', content: 'Hi', name: 'ada' }] }, undefined, 'messages[0].name'],
];

let browser;

before(async () => {
  assert.ok(existsSync(path.join(root, 'models', MODEL)), `models/${MODEL} is missing: run \`cargo xtask fetch-models --all\``);
  browser = await launch();
});

after(async () => {
  await browser?.close();
});

test('chat API: unsupported fields are named UnsupportedOptionErrors; OpenAI-shaped requests and answers work around them', { timeout: 10 * MINUTE }, async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  page.on('console', (m) => m.type() === 'error' && errors.push(m.text()));
  try {
    await page.goto(`${baseUrl}/`);
    await page.evaluate(async (url) => {
      const { Engine } = await import('/quantweb.js');
      window.engine = await Engine.load(url, { cache: false, contextLength: 256 });
    }, `/models/${MODEL}`);

    const refused = await page.evaluate(async (cases) => {
      const out = [];
      for (const [req, options] of cases) {
        try {
          await window.engine.chat.completions.create({ max_tokens: 1, temperature: 0, ...req }, options);
          out.push(null);
        } catch (e) {
          out.push({ name: e.name, param: e.param, message: e.message });
        }
      }
      return out;
    }, REFUSED);
    REFUSED.forEach(([, , param], i) => {
      const e = refused[i];
      assert.ok(e, `${param}: the request was answered instead of refused`);
      assert.equal(e.name, 'UnsupportedOptionError', `${param}: ${e.name}: ${e.message}`);
      assert.equal(e.param, param, e.message);
      assert.ok(e.message.startsWith(`${param}: `), e.message);
    });

    const r = await page.evaluate(async () => {
      const create = (req, options) => window.engine.chat.completions.create({ max_tokens: 1, temperature: 0, ...req }, options);
      // Fields at their defaults, and the ones with no effect here, as an OpenAI app sends them.
      const defaults = { model: 'gpt-4o-mini', user: 'u', n: 1, logprobs: false, tools: [], tool_choice: 'none', response_format: { type: 'text' }, stop: null, seed: null };
      const system = await create({ ...defaults, messages: [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'Hi' }] });
      // The same prompt, if `developer` renders as `system`: the KV cache then holds all of it.
      const developer = await create({ messages: [{ role: 'developer', content: [{ type: 'text', text: 'Be brief.' }] }, { role: 'user', content: 'Hi' }] });
      // An assistant turn with null or absent content is an empty one.
      const turns = (assistant) => [{ role: 'user', content: 'Hi' }, assistant, { role: 'user', content: 'Again' }];
      const empty = await create({ messages: turns({ role: 'assistant', content: '' }) });
      const absent = await create({ messages: turns({ role: 'assistant', content: null, refusal: null, tool_calls: [] }) });
      const chunks = [];
      const stream = await create({ messages: [{ role: 'user', content: 'Hi' }], stream: true, stream_options: { include_usage: true }, max_tokens: 2 });
      for await (const c of stream) chunks.push(c);
      let aborted = null;
      try {
        await create({ messages: [{ role: 'user', content: 'Hi' }] }, { signal: AbortSignal.abort() });
      } catch (e) {
        aborted = e.name;
      }
      // logprobs, returned and streamed; the same greedy tokens both times.
      const asked = { messages: [{ role: 'user', content: 'Hi' }], max_tokens: 4, logprobs: true, top_logprobs: 3 };
      const logprobs = await create(asked);
      const lpChunks = [];
      for await (const c of await create({ ...asked, stream: true })) lpChunks.push(c);
      let tooMany = null;
      try {
        await create({ ...asked, top_logprobs: 21 });
      } catch (e) {
        tooMany = { name: e.name, param: e.param };
      }
      await window.engine.unload();
      return { system, developer, empty, absent, chunks, aborted, logprobs, lpChunks, tooMany };
    });

    const c = r.system;
    assert.equal(c.object, 'chat.completion');
    assert.deepEqual(Object.keys(c.choices[0]).sort(), ['finish_reason', 'index', 'logprobs', 'message']);
    assert.deepEqual({ ...c.choices[0].message, content: typeof c.choices[0].message.content }, { role: 'assistant', content: 'string', refusal: null });
    assert.equal(c.choices[0].logprobs, null);
    assert.equal(c.choices[0].finish_reason, 'length');
    assert.equal(c.usage.completion_tokens, 1);
    assert.equal(c.usage.total_tokens, c.usage.prompt_tokens + 1);
    assert.equal(typeof c.usage.prompt_tokens_details.cached_tokens, 'number');
    for (const [k, v] of Object.entries(c.usage.extra)) assert.ok(Number.isFinite(v) && v >= 0, `usage.extra.${k} = ${v}`);
    assert.ok(c.usage.extra.e2e_latency_s > 0);

    assert.equal(r.developer.usage.prompt_tokens, c.usage.prompt_tokens);
    assert.ok(r.developer.usage.prompt_tokens_details.cached_tokens >= c.usage.prompt_tokens - 1, `developer rendered as system: ${JSON.stringify(r.developer.usage)}`);
    assert.equal(r.absent.usage.prompt_tokens, r.empty.usage.prompt_tokens);
    assert.ok(r.absent.usage.prompt_tokens_details.cached_tokens >= r.empty.usage.prompt_tokens - 1, `null content rendered as '': ${JSON.stringify(r.absent.usage)}`);

    // Streamed: role first, the finish_reason chunk, then include_usage's chunk without choices.
    const [first, ...rest] = r.chunks;
    const usageChunk = rest.pop();
    const finish = rest.pop();
    assert.deepEqual(first.choices, [{ index: 0, delta: { role: 'assistant', content: '' }, finish_reason: null, logprobs: null }]);
    assert.ok(r.chunks.every((k) => k.object === 'chat.completion.chunk' && k.id === first.id));
    assert.equal(finish.choices[0].finish_reason, 'length');
    assert.deepEqual(usageChunk.choices, []);
    assert.equal(usageChunk.usage.completion_tokens, 2);
    assert.deepEqual(usageChunk.usage, finish.usage);

    // One entry per generated token (an end-of-generation one excepted), the greedy token the
    // likeliest of its top 3; their bytes spell the answer; the stream carries the same entries.
    const lp = r.logprobs.choices[0];
    const content = lp.logprobs.content;
    assert.equal(lp.logprobs.refusal, null);
    assert.ok(content.length === r.logprobs.usage.completion_tokens || (lp.finish_reason === 'stop' && content.length === r.logprobs.usage.completion_tokens - 1), JSON.stringify(lp));
    for (const e of content) {
      assert.equal(e.top_logprobs.length, 3);
      assert.ok(e.logprob <= 0 && e.top_logprobs.every((t, i, a) => i === 0 || a[i - 1].logprob >= t.logprob));
      assert.deepEqual({ token: e.token, bytes: e.bytes, logprob: e.logprob }, e.top_logprobs[0]);
    }
    assert.equal(new TextDecoder().decode(Uint8Array.from(content.flatMap((e) => e.bytes))), lp.message.content);
    const streamedEntries = r.lpChunks.flatMap((k) => k.choices[0]?.logprobs?.content ?? []);
    assert.deepEqual(streamedEntries, content);
    assert.deepEqual(r.tooMany, { name: 'InvalidRequestError', param: 'top_logprobs' });

    assert.equal(r.aborted, 'AbortError', 'the signal of create\'s second argument is read');
    assert.deepEqual(errors, []);
  } finally {
    await context.close();
  }
});
