// Structured output in the browser: `response_format` through the JS API on the threaded CPU
// engine (the one a page without a usable GPU runs). Answers to the schemas of
// tests/structured/schemas.json parse and validate under Ajv (JSON Schema 2020-12, formats
// checked), streamed and not; WebLLM's grammar and schema-string forms work; bad schemas and
// grammars are named errors and leave the engine usable.
//
// Run: `cargo xtask test --browser-only`, or with a server already running:
//   QUANTWEB_BASE_URL=http://127.0.0.1:8080 node --test tests/browser/structured.test.mjs

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, existsSync } from 'node:fs';
import path from 'node:path';
import Ajv2020 from 'ajv/dist/2020.js';
import addFormats from 'ajv-formats';
import { launch, baseUrl } from './lib.mjs';
import { root } from './fixtures.mjs';

const SMOL = 'SmolLM2-135M-Instruct.Q4_1.gguf';
const MINUTE = 60_000;
const CASES = JSON.parse(readFileSync(path.join(root, 'tests', 'structured', 'schemas.json'), 'utf8'));
/** Every third bounded case: a dozen schemas of every kind, in a few minutes. */
const SUBSET = CASES.filter((c) => !c.open_ended).filter((_, i) => i % 3 === 0);

let browser;
let page;

const ajv = new Ajv2020({ strict: false, allErrors: true });
addFormats(ajv);

function validates(schema, text, label) {
  let value;
  try {
    value = JSON.parse(text);
  } catch (e) {
    assert.fail(`${label}: ${JSON.stringify(text)} is not JSON: ${e.message}`);
  }
  const validate = ajv.compile(schema);
  assert.ok(validate(value), `${label}: ${text} fails its schema: ${ajv.errorsText(validate.errors)}`);
}

before(async () => {
  assert.ok(existsSync(path.join(root, 'models', SMOL)), `models/${SMOL} is missing: run \`cargo xtask fetch-models --all\``);
  browser = await launch({ webgpu: false });
  page = await browser.newPage();
  await page.goto(`${baseUrl}/`);
  await page.evaluate(async (url) => {
    const { Engine } = await import('/quantweb.js');
    window.engine = await Engine.load(url, { cache: false, backend: 'cpu', threads: 2 });
    /** A chat answer under `response_format`, or the error's name, param, keywords and message. */
    window.ask = async (req) => {
      try {
        const r = await window.engine.chat.completions.create({ temperature: 0, max_tokens: 200, ...req });
        return { text: r.choices[0].message.content, finish: r.choices[0].finish_reason };
      } catch (e) {
        return { error: { name: e.name, param: e.param, keywords: e.keywords, message: e.message } };
      }
    };
  }, `${baseUrl}/models/${SMOL}`);
});

after(async () => {
  await browser?.close();
});

const messages = (c) => [
  { role: 'system', content: `Answer in JSON following this schema: ${JSON.stringify(c.schema)}` },
  { role: 'user', content: c.prompt },
];

test(`SmolLM2 answers ${SUBSET.length} schemas with JSON that validates (OpenAI's json_schema)`, { timeout: 10 * MINUTE }, async () => {
  for (const c of SUBSET) {
    const res = await page.evaluate((req) => window.ask(req), {
      messages: messages(c),
      response_format: { type: 'json_schema', json_schema: { name: c.name, strict: true, schema: c.schema } },
    });
    assert.equal(res.error, undefined, `${c.name}: ${JSON.stringify(res.error)}`);
    assert.equal(res.finish, 'stop', `${c.name}: ${JSON.stringify(res.text)} did not end`);
    validates(c.schema, res.text, c.name);
  }
});

test('streamed: the chunks join into JSON that validates; JSON mode gives an object; WebLLM\'s schema string and GBNF grammar', { timeout: 5 * MINUTE }, async () => {
  const c = CASES.find((x) => x.name === 'nested-object');
  const streamed = await page.evaluate(async (req) => {
    let text = '';
    for await (const chunk of await window.engine.chat.completions.create(req)) text += chunk.choices[0]?.delta.content ?? '';
    return text;
  }, { messages: messages(c), temperature: 0, max_tokens: 200, stream: true, response_format: { type: 'json_schema', json_schema: { name: 'x', schema: c.schema } } });
  validates(c.schema, streamed, 'streamed');

  const json = await page.evaluate((req) => window.ask(req), { messages: [{ role: 'user', content: 'Describe a cat as JSON.' }], max_tokens: 120, response_format: { type: 'json_object' } });
  if (json.finish === 'stop') assert.equal(typeof JSON.parse(json.text), 'object', json.text);
  else assert.equal(json.finish, 'length', JSON.stringify(json));

  const e = CASES.find((x) => x.name === 'enum-string');
  const webllm = await page.evaluate((req) => window.ask(req), { messages: messages(e), response_format: { type: 'json_object', schema: JSON.stringify(e.schema) } });
  validates(e.schema, webllm.text, 'WebLLM schema string');

  // The raw completion takes it too, and reports what the masks cost.
  const raw = await page.evaluate((req) => window.engine.complete(req), { prompt: 'A city as JSON: ', max_tokens: 60, temperature: 0, response_format: { type: 'json_schema', json_schema: { name: 'x', schema: c.schema } } });
  validates(c.schema, raw.text, 'raw complete');
  assert.ok(raw.timings.mask_ms > 0, JSON.stringify(raw.timings));
  const perToken = raw.timings.mask_ms / raw.tokens.length;
  const stepMs = (raw.timings.prefill_ms + raw.timings.decode_ms) / raw.tokens.length;
  console.log(`SmolLM2 (49 152 tokens) in Chromium, CPU engine: mask ${perToken.toFixed(2)} ms per token, ${((100 * perToken) / stepMs).toFixed(1)} % of a step`);

  const grammar = 'root ::= ("yes" | "no") ", because " [a-z ]{1,40} "."';
  const g = await page.evaluate((req) => window.ask(req), { messages: [{ role: 'user', content: 'Is the sky blue?' }], response_format: { type: 'grammar', grammar } });
  assert.match(g.text, /^(yes|no), because [a-z ]{1,40}\.$/, JSON.stringify(g));
});

test('bad schemas and grammars are named errors, before anything runs, and the engine answers after them', { timeout: 5 * MINUTE }, async () => {
  const cases = [
    [{ type: 'json_schema', json_schema: { name: 'x', schema: { type: 'array', uniqueItems: true } } }, 'UnsupportedSchemaError', 'response_format.json_schema.schema', ['uniqueItems']],
    [{ type: 'grammar', grammar: 'root ::= item' }, 'GrammarError', 'response_format.grammar'],
    [{ type: 'yaml' }, 'GrammarError', 'response_format.type'],
    [{ type: 'structural_tag', structural_tag: {} }, 'UnsupportedOptionError', 'response_format.type'],
  ];
  for (const [format, name, param, keywords] of cases) {
    const res = await page.evaluate((req) => window.ask(req), { messages: [{ role: 'user', content: 'Hi' }], response_format: format });
    assert.ok(res.error, `${JSON.stringify(format)} was taken: ${JSON.stringify(res)}`);
    assert.equal(res.error.name, name, res.error.message);
    assert.equal(res.error.param, param, res.error.message);
    if (keywords) assert.deepEqual(res.error.keywords, keywords);
  }
  const after = await page.evaluate((req) => window.ask(req), { messages: [{ role: 'user', content: 'Say hi.' }], max_tokens: 4 });
  assert.equal(after.error, undefined, JSON.stringify(after));
});

test('gemma3, 262 144 tokens: answers validate, and what the mask costs per token is reported', { timeout: 10 * MINUTE }, async () => {
  const parts = [0, 1, 2, 3].map((i) => `${baseUrl}/models/gemma-3-270m-q4_k_m.gguf.part0${i}`);
  const other = await browser.newPage();
  try {
    await other.goto(`${baseUrl}/`);
    const c = CASES.find((x) => x.name === 'array-of-objects');
    const res = await other.evaluate(async ({ parts, schema, prompt }) => {
      const { Engine } = await import('/quantweb.js');
      const engine = await Engine.load(parts, { cache: false, backend: 'cpu', threads: 2 });
      const first = await engine.complete({ prompt, max_tokens: 8, temperature: 0 });
      const r = await engine.complete({ prompt, max_tokens: 120, temperature: 0, response_format: { type: 'json_schema', json_schema: { name: 'x', schema } } });
      return { text: r.text, finish: r.finish_reason, tokens: r.tokens.length, timings: r.timings, plain: first.timings };
    }, { parts, schema: c.schema, prompt: `${c.prompt} Answer in JSON:` });
    assert.equal(res.finish, 'stop', JSON.stringify(res.text));
    validates(c.schema, res.text, 'gemma3');
    const perToken = res.timings.mask_ms / res.tokens;
    const stepMs = 1000 / res.plain.decode_tok_s;
    console.log(`gemma3 (262 144 tokens) in Chromium, CPU engine, 2 threads: mask ${perToken.toFixed(2)} ms per token; an unconstrained decode step ${stepMs.toFixed(1)} ms (${((100 * perToken) / stepMs).toFixed(1)} %)`);
  } finally {
    await other.close();
  }
});
