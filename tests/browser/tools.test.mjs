// Tool calling in the browser, through the JS API on the CPU engine: SmolLM2 loaded with the real
// Qwen2.5 chat template (llama.cpp's copy, `chatTemplate` at load) answers forced calls in
// OpenAI's shape, streamed and not, with arguments that validate under the function's schema;
// the call and its result go back through the template; bad tool requests are named errors.
// With tool_choice 'auto', a model made to answer a fixed text (fixtures.mjs `withForcedOutput`)
// through the Llama 3.1 template: a call is held back from the stream and comes back parsed;
// text that only looked like the start of one comes out whole at the end.
//
// Run: `cargo xtask test --browser-only`, or with a server already running:
//   QUANTWEB_BASE_URL=http://127.0.0.1:8080 node --test tests/browser/tools.test.mjs

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import path from 'node:path';
import Ajv2020 from 'ajv/dist/2020.js';
import { launch, baseUrl } from './lib.mjs';
import { root, fixturesDir, withForcedOutput, ggufInt } from './fixtures.mjs';

const SMOL = 'SmolLM2-135M-Instruct.Q4_1.gguf';
const TINY = 'tiny-llama3.gguf';
const QWEN = 'templates/Qwen-Qwen2.5-7B-Instruct.jinja';
const LLAMA = 'templates/meta-llama-Llama-3.1-8B-Instruct.jinja';
const MINUTE = 60_000;

const WEATHER = {
  type: 'object',
  properties: { city: { type: 'string', minLength: 1 }, unit: { type: 'string', enum: ['celsius', 'fahrenheit'] } },
  required: ['city', 'unit'],
  additionalProperties: false,
};
const TOOLS = [
  { type: 'function', function: { name: 'get_weather', description: 'The weather in a city now', parameters: WEATHER } },
  { type: 'function', function: { name: 'get_time', description: 'The time in a city now', parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] } } },
  { type: 'function', function: { name: 'now', description: 'The time here' } },
];
const QUESTION = [{ role: 'user', content: 'What is the weather in Paris?' }];
const validWeather = new Ajv2020({ strict: false }).compile(WEATHER);

let browser;
let page;

before(async () => {
  for (const f of [SMOL, QWEN]) assert.ok(existsSync(path.join(root, 'models', f)), `models/${f} is missing: run \`cargo xtask fetch-models --all\``);
  browser = await launch({ webgpu: false });
  page = await browser.newPage();
  await page.goto(`${baseUrl}/`);
  await page.evaluate(
    async ([url, templateUrl]) => {
      const { Engine } = await import('/quantweb.js');
      const chatTemplate = await (await fetch(templateUrl)).text();
      window.engine = await Engine.load(url, { cache: false, backend: 'cpu', threads: 2, contextLength: 1024, chatTemplate });
      /** The answer, its chunks when streamed, or the error's name, param and message. */
      window.ask = async (req) => {
        try {
          const r = await window.engine.chat.completions.create({ temperature: 0, max_tokens: 120, parallel_tool_calls: false, ...req });
          if (!req.stream) return { answer: r };
          const chunks = [];
          for await (const c of r) chunks.push(c);
          return { chunks };
        } catch (e) {
          return { error: { name: e.name, param: e.param, message: e.message } };
        }
      };
    },
    [`${baseUrl}/models/${SMOL}`, `${baseUrl}/models/${QWEN}`],
  );
});

after(async () => {
  await browser?.close();
});

function assertWeatherCall(call, label) {
  assert.match(call.id, /^[A-Za-z0-9]{9}$/, label);
  assert.equal(call.type, 'function', label);
  assert.equal(call.function.name, 'get_weather', label);
  const args = JSON.parse(call.function.arguments);
  assert.ok(validWeather(args), `${label}: ${call.function.arguments} fails the schema`);
}

test('forced calls come back in OpenAI\'s shape, and the round trip goes back through the template', { timeout: 10 * MINUTE }, async () => {
  assert.equal(await page.evaluate(() => window.engine.info.chatTemplate), 'custom');
  const named = { type: 'function', function: { name: 'get_weather' } };
  for (const tool_choice of ['required', named]) {
    const { answer, error } = await page.evaluate((req) => window.ask(req), { messages: QUESTION, tools: TOOLS, tool_choice });
    assert.equal(error, undefined, JSON.stringify(error));
    const [choice] = answer.choices;
    assert.equal(choice.finish_reason, 'tool_calls', JSON.stringify(choice));
    assert.equal(choice.message.content, null);
    assert.equal(choice.message.tool_calls.length, 1);
    if (tool_choice === named) assertWeatherCall(choice.message.tool_calls[0], 'named');
    else assert.ok(TOOLS.some((t) => t.function.name === choice.message.tool_calls[0].function.name));

    // The answer's message and the tool's result go back as they are; the model may answer or
    // call again.
    const call = choice.message.tool_calls[0];
    const result = { role: 'tool', tool_call_id: call.id, content: JSON.stringify({ temperature: 21, sky: 'sunny' }) };
    const next = await page.evaluate((req) => window.ask(req), { messages: [...QUESTION, choice.message, result], tools: TOOLS, max_tokens: 24 });
    assert.equal(next.error, undefined, JSON.stringify(next.error));
    assert.ok(['stop', 'length', 'tool_calls'].includes(next.answer.choices[0].finish_reason));
    // The prompt extends the question's (tools, question: reused from the KV cache) by the call
    // and the result.
    const [before, after] = [answer.usage, next.answer.usage];
    assert.ok(after.prompt_tokens_details.cached_tokens > 0.9 * before.prompt_tokens, JSON.stringify([before, after]));
    assert.ok(after.prompt_tokens > before.prompt_tokens + 30, JSON.stringify([before, after]));
  }
});

test('a streamed forced call: no text, one chunk with the call, then finish_reason tool_calls', { timeout: 5 * MINUTE }, async () => {
  const { chunks, error } = await page.evaluate((req) => window.ask(req), {
    messages: QUESTION,
    tools: TOOLS,
    tool_choice: { type: 'function', function: { name: 'get_weather' } },
    stream: true,
  });
  assert.equal(error, undefined, JSON.stringify(error));
  const deltas = chunks.flatMap((c) => c.choices.map((ch) => ch.delta));
  assert.equal(deltas.map((d) => d.content ?? '').join(''), '');
  const calls = deltas.flatMap((d) => d.tool_calls ?? []);
  assert.equal(calls.length, 1);
  assert.equal(calls[0].index, 0);
  assertWeatherCall(calls[0], 'streamed');
  const last = chunks.at(-1).choices[0];
  assert.equal(last.finish_reason, 'tool_calls');
});

test('bad tool requests are named errors, and the engine goes on', { timeout: 5 * MINUTE }, async () => {
  const cases = [
    [{ tools: TOOLS, tool_choice: { type: 'function', function: { name: 'rm' } } }, 'InvalidRequestError', 'tool_choice.function.name'],
    [{ tools: [{ type: 'function', function: { name: 'get weather' } }] }, 'InvalidRequestError', 'tools[0].function.name'],
    [{ tools: TOOLS, tool_choice: 'sometimes' }, 'InvalidRequestError', 'tool_choice'],
    [{ tools: TOOLS, response_format: { type: 'json_object' } }, 'InvalidRequestError', 'response_format'],
  ];
  for (const [req, name, param] of cases) {
    const { error } = await page.evaluate((r) => window.ask(r), { messages: QUESTION, ...req });
    assert.ok(error, `${param}: answered instead of refused`);
    assert.equal(error.name, name, error.message);
    assert.equal(error.param, param, error.message);
  }
  const { answer } = await page.evaluate((r) => window.ask(r), { messages: QUESTION, max_tokens: 4 });
  assert.equal(typeof answer.choices[0].message.content, 'string');

  // A template that does not compile fails the load by name.
  const loadError = await page.evaluate(async (url) => {
    const { Engine } = await import('/quantweb.js');
    try {
      await Engine.load(url, { cache: false, backend: 'cpu', threads: 1, chatTemplate: '{% if %}' });
      return null;
    } catch (e) {
      return e.name;
    }
  }, `${baseUrl}/models/${SMOL}`);
  assert.equal(loadError, 'ChatTemplateError');
});

/** The chunks of a streamed 'auto' answer from a copy of the tiny model forced to answer `text`. */
async function forcedAnswer(text, name) {
  const tinyUrl = `${baseUrl}/models/${TINY}`;
  const ids = await page.evaluate(async ([url, t]) => {
    const { Engine } = await import('/quantweb.js');
    const engine = await Engine.load(url, { backend: 'cpu', cache: false });
    const out = await engine.tokenize(t);
    await engine.unload();
    return out;
  }, [tinyUrl, text]);
  // The forced model maps each token to the next, so the answer's tokens must all differ.
  assert.equal(new Set(ids).size, ids.length, `${text}: a token repeats`);
  const eos = ggufInt(path.join(root, 'models', TINY), 'tokenizer.ggml.eos_token_id');
  withForcedOutput(path.join(root, 'models', TINY), path.join(fixturesDir, `${name}.gguf`), ids, eos);
  return page.evaluate(
    async ([url, templateUrl, tools]) => {
      const { Engine } = await import('/quantweb.js');
      const chatTemplate = await (await fetch(templateUrl)).text();
      const engine = await Engine.load(url, { backend: 'cpu', cache: false, chatTemplate });
      try {
        const stream = await engine.chat.completions.create({ messages: [{ role: 'user', content: 'Hello' }], tools, max_tokens: 32, temperature: 0, stream: true });
        const chunks = [];
        for await (const c of stream) chunks.push(c);
        const whole = await engine.chat.completions.create({ messages: [{ role: 'user', content: 'Hello' }], tools, max_tokens: 32, temperature: 0 });
        return { chunks, whole };
      } finally {
        await engine.unload();
      }
    },
    [`${baseUrl}/fixtures/${name}.gguf`, `${baseUrl}/models/${LLAMA}`, TOOLS],
  );
}

test("tool_choice 'auto': a call is held back from the stream and parsed; text that is no call comes out whole", { timeout: 5 * MINUTE }, async () => {
  const call = '{"name":"now","parameters":{}}';
  const { chunks, whole } = await forcedAnswer(call, 'forced-call');
  const deltas = chunks.flatMap((c) => c.choices.map((ch) => ch.delta));
  assert.equal(deltas.map((d) => d.content ?? '').join(''), '');
  const calls = deltas.flatMap((d) => d.tool_calls ?? []);
  assert.deepEqual(calls.map((c) => [c.index, c.function.name, c.function.arguments]), [[0, 'now', '{}']]);
  assert.equal(chunks.at(-1).choices[0].finish_reason, 'tool_calls');
  assert.equal(whole.choices[0].finish_reason, 'tool_calls');
  assert.equal(whole.choices[0].message.content, null);
  assert.equal(whole.choices[0].message.tool_calls[0].function.name, 'now');

  // Starts as a Llama 3 call would, so it waits; it is no call, so it is the answer.
  const text = '{Oslo}:cold';
  const plain = await forcedAnswer(text, 'forced-text');
  const shown = plain.chunks.flatMap((c) => c.choices.map((ch) => ch.delta.content ?? '')).join('');
  assert.equal(shown, text);
  assert.equal(plain.chunks.at(-1).choices[0].finish_reason, 'stop');
  assert.deepEqual([plain.whole.choices[0].message.content, plain.whole.choices[0].message.tool_calls], [text, undefined]);
});
