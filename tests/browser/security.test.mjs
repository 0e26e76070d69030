// Security checks of the page (issue "Reliability", item 6): model output never becomes HTML,
// a whole session (calculator, chat, quantize) talks to nobody but the page's origin and the
// model URLs given, and the page's Content-Security-Policy holds (no eval).
//
// The model that answers with markup is tiny-llama3 rewritten so that its greedy output is a
// fixed token sequence (fixtures.mjs `withForcedOutput`): an <svg onload> that would open a
// dialog if anything put the answer into the DOM as HTML.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { launch, baseUrl } from './lib.mjs';
import { root, fixturesDir, withForcedOutput, ggufInt } from './fixtures.mjs';

const TINY = 'tiny-llama3.gguf';
const SMOL = 'SmolLM2-135M-Instruct.Q4_1.gguf';
// Its tokens are all different (the forced model maps each token to the next).
const PAYLOAD = '<svg onload=alert(1)>';
const MINUTE = 60_000;

let browser;

before(async () => {
  browser = await launch();
});

after(async () => {
  await browser?.close();
});

test('model output stays text, a session requests only the page origin and the models, and the CSP forbids eval', { timeout: 10 * MINUTE }, async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  const requests = [];
  const errors = [];
  const violations = [];
  page.on('request', (r) => requests.push(r.url()));
  const dialogs = [];
  page.on('pageerror', (e) => errors.push(e.message));
  page.on('dialog', (d) => {
    dialogs.push(d.message());
    d.dismiss();
  });
  await page.exposeFunction('reportViolation', (v) => violations.push(v));
  await page.addInitScript(() => {
    document.addEventListener('securitypolicyviolation', (e) => window.reportViolation(`${e.violatedDirective}: ${e.blockedURI}`));
  });
  await page.goto(`${baseUrl}/`);

  // The forced model, made from the tiny model's own token ids for the payload.
  const tinyUrl = `${baseUrl}/models/${TINY}`;
  const ids = await page.evaluate(async ([url, text]) => {
    const { Engine } = await import('./quantweb.js');
    const engine = await Engine.load(url, { backend: 'cpu', cache: false });
    const out = await engine.tokenize(text);
    await engine.unload();
    return out;
  }, [tinyUrl, PAYLOAD]);
  const eos = ggufInt(path.join(root, 'models', TINY), 'tokenizer.ggml.eos_token_id');
  withForcedOutput(path.join(root, 'models', TINY), path.join(fixturesDir, 'forced-html.gguf'), ids, eos);
  const forcedUrl = `${baseUrl}/fixtures/forced-html.gguf`;

  // The JS API answers exactly the payload, so the checks on the page below are not vacuous.
  const answer = await page.evaluate(async (url) => {
    const { Engine } = await import('./quantweb.js');
    const engine = await Engine.load(url, { backend: 'cpu', cache: false });
    const r = await engine.chat.completions.create({ messages: [{ role: 'user', content: 'Hello' }], max_tokens: 32, temperature: 0 });
    await engine.unload();
    return r.choices[0].message.content;
  }, forcedUrl);
  assert.equal(answer, PAYLOAD);

  // Calculator: a model's header by URL.
  await page.fill('#url', `${baseUrl}/models/${SMOL}`);
  await page.click('#inspect');
  await page.waitForSelector('#results:not([hidden])', { timeout: MINUTE });

  // Chat: the forced model answers with markup, and the page shows it as text.
  await page.goto(`${baseUrl}/#chat`);
  await page.reload();
  await page.fill('#max-tokens', '32');
  await page.fill('#chat-url', forcedUrl);
  await page.click('#chat-load');
  await page.waitForSelector('#chat-model-info:not([hidden])', { timeout: 2 * MINUTE });
  await page.fill('#chat-input', 'Hello');
  await page.press('#chat-input', 'Enter');
  await page.waitForFunction(() => document.querySelector('.msg.assistant') && !document.querySelector('.msg.streaming'), null, { timeout: 2 * MINUTE });
  assert.equal(await page.textContent('.msg.assistant .text'), PAYLOAD);
  assert.equal(await page.evaluate(() => document.querySelectorAll('#panel-chat svg').length), 0);
  assert.deepEqual(dialogs, []);

  // Quantize in the browser, then delete the result.
  const quantized = await page.evaluate(async (url) => {
    const { quantize, deleteQuantized } = await import('./quantweb.js');
    const r = await quantize(url, { type: 'Q8_0', allowRequantize: true, name: 'security-check.gguf' });
    await deleteQuantized(r.name);
    return r.name;
  }, tinyUrl);
  assert.match(quantized, /security-check/);

  // Nobody but the page's origin (the page, its modules, the models and fixtures) was asked.
  const elsewhere = requests.filter((u) => !u.startsWith(`${baseUrl}/`) && !/^(data|blob):/.test(u));
  assert.deepEqual(elsewhere, []);
  const modelRequests = new Set(requests.filter((u) => /\/(models|fixtures)\//.test(u)).map((u) => new URL(u).pathname));
  assert.deepEqual([...modelRequests].sort(), [`/fixtures/forced-html.gguf`, `/models/${SMOL}`, `/models/${TINY}`]);

  // The policy is enforced: eval is refused, nothing was blocked during the session.
  const csp = await page.getAttribute('meta[http-equiv=Content-Security-Policy]', 'content');
  const sources = csp.split(/[\s;]+/);
  assert.ok(!sources.includes("'unsafe-eval'") && !sources.includes("'unsafe-inline'"), csp);
  assert.deepEqual(violations, []);
  // Probes run as the page's own scripts would (DevTools' evaluate is exempt from the CSP): an
  // inline script must not run, and eval in a same-origin script must throw.
  writeFileSync(path.join(fixturesDir, 'csp-probe.js'), "try { window.__evalResult = String(eval('1 + 1')); } catch (e) { window.__evalResult = e.name; }\n");
  const probed = await page.evaluate(
    () =>
      new Promise((resolve) => {
        const inline = document.createElement('script');
        inline.textContent = 'window.__inlineRan = true;';
        document.body.append(inline);
        const probe = document.createElement('script');
        probe.src = '/fixtures/csp-probe.js';
        probe.onload = () => resolve({ inline: window.__inlineRan ?? false, evalResult: window.__evalResult });
        probe.onerror = () => resolve({ error: 'the probe did not load' });
        document.body.append(probe);
      }),
  );
  assert.deepEqual(probed, { inline: false, evalResult: 'EvalError' });
  assert.deepEqual(errors, []);
  await context.close();
});
