// `cargo xtask dist` as a docs site would host it: the bundle under a sub-path
// (/docs/assets/quantweb/) of a plain static server (python's http.server: no COOP/COEP), every
// response of that site sent with a strict `Content-Security-Policy: script-src 'self'
// 'wasm-unsafe-eval'`. The server sends the header itself: added by Playwright's page.route
// instead, a fulfilled response counts as coming from the public internet for Chromium's Local
// Network Access checks, which then block the model requests to the loopback test server. The
// page must inspect a model,
// the JS API must generate on the CPU engine without cross-origin isolation, the loader must
// place <quantweb-chat> on a docs page from one classic or module script tag, and nothing may
// violate the policy.
//
// Run (QUANTWEB_XTASK: the built xtask binary, which makes the bundle with --no-build):
//   QUANTWEB_BASE_URL=http://127.0.0.1:8080 QUANTWEB_XTASK=target/debug/xtask \
//     node --test tests/browser/dist.test.mjs

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { launch, baseUrl } from './lib.mjs';
import { root } from './fixtures.mjs';

const XTASK = process.env.QUANTWEB_XTASK;
const CSP = "script-src 'self' 'wasm-unsafe-eval'";
const SUB = 'docs/assets/quantweb';
const SMOL = `${baseUrl}/models/SmolLM2-135M-Instruct.Q4_1.gguf`;
const TINY = `${baseUrl}/models/tiny-llama3.gguf`;
const skip = XTASK ? false : 'QUANTWEB_XTASK is not set (the xtask binary that builds the bundle)';

let tmp;
let server;
let site;
let dir;
let browser;

/** python's http.server with every response carrying the policy; prints its port. */
const SERVER_PY = `
import functools, http.server, sys
class Handler(http.server.SimpleHTTPRequestHandler):
    def end_headers(self):
        self.send_header('Content-Security-Policy', sys.argv[2])
        super().end_headers()
    def log_message(self, *args):
        pass
server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), functools.partial(Handler, directory=sys.argv[1]))
print(server.server_address[1], flush=True)
server.serve_forever()
`;

/** Serves `docroot` on a free port; resolves to its origin. */
function staticServer(docroot) {
  server = spawn('python3', ['-c', SERVER_PY, docroot, CSP], { stdio: ['ignore', 'pipe', 'inherit'] });
  return new Promise((resolve, reject) => {
    server.stdout.once('data', (d) => resolve(`http://127.0.0.1:${String(d).trim()}`));
    server.on('exit', (code) => reject(new Error(`the static server exited (${code})`)));
  });
}

/**
 * The www/ to bundle: the repository's, or, until the <quantweb-chat> element is there, a copy
 * with a stand-in that only defines the element (dist refuses a tree without it).
 */
function wwwWithElement() {
  const www = path.join(root, 'www');
  if (existsSync(path.join(www, 'widget', 'quantweb-chat.js'))) return www;
  const copy = path.join(tmp, 'www');
  cpSync(www, copy, { recursive: true });
  writeFileSync(path.join(copy, 'widget', 'quantweb-chat.js'), "customElements.define('quantweb-chat', class extends HTMLElement {});\n");
  console.log('www/widget/quantweb-chat.js is missing: bundling a copy of www/ with a stand-in element');
  return copy;
}

/** A docs page two levels from the bundle that installs the chat with one script tag. */
function docsPage(name, type) {
  const file = path.join(tmp, 'site', 'docs', 'guide', name);
  mkdirSync(path.dirname(file), { recursive: true });
  writeFileSync(file, `<!doctype html>
<html><head><meta charset="utf-8"><link rel="icon" href="data:,"><title>Guide</title>
<script ${type ? `type="${type}" ` : ''}src="../assets/quantweb/quantweb-chat.js" data-model="${TINY}" data-starter-questions="What is it?|How do I start?"></script>
</head><body><h1>Guide</h1><p>Some documentation.</p></body></html>
`);
}

before(async () => {
  if (skip) return;
  tmp = mkdtempSync(path.join(tmpdir(), 'quantweb-dist-'));
  const out = path.join(tmp, 'site', ...SUB.split('/'));
  execFileSync(XTASK, ['dist', '--no-build', '--out', out], {
    env: { ...process.env, QUANTWEB_WWW_DIR: wwwWithElement() },
    stdio: ['ignore', 'inherit', 'inherit'],
  });
  dir = JSON.parse(readFileSync(path.join(out, 'manifest.json'), 'utf8')).dir;
  docsPage('classic.html');
  docsPage('module.html', 'module');
  site = await staticServer(path.join(tmp, 'site'));
  browser = await launch({ webgpu: false });
});

after(async () => {
  await browser?.close();
  server?.kill();
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

/** A page with the paths it requested from the site, the policy violations the document saw and the console errors. */
async function strictPage() {
  const page = await browser.newPage();
  const seen = { requested: [], violations: [], errors: [] };
  page.on('request', (r) => { if (r.url().startsWith(site)) seen.requested.push(new URL(r.url()).pathname); });
  await page.exposeFunction('reportViolation', (v) => seen.violations.push(v));
  await page.addInitScript(() => {
    document.addEventListener('securitypolicyviolation', (e) => window.reportViolation(`${e.violatedDirective}: ${e.blockedURI} (${e.sourceFile}:${e.lineNumber})`));
  });
  page.on('console', (m) => { if (m.type() === 'error') seen.errors.push(m.text()); });
  page.on('pageerror', (e) => seen.errors.push(e.message));
  return { page, seen };
}

function assertClean(seen) {
  assert.deepEqual(seen.violations, [], 'Content-Security-Policy violations');
  assert.deepEqual(seen.errors, [], 'console errors');
}

test('the bundle under a sub-path of a plain static server, with a strict CSP: the page inspects a model and the JS API generates on the CPU engine without isolation', { skip, timeout: 120_000 }, async () => {
  const { page, seen } = await strictPage();
  try {
    await page.goto(`${site}/${SUB}/index.html`);
    assert.equal(await page.evaluate(() => self.crossOriginIsolated), false);
    const sheet = await page.evaluate(() => [...document.styleSheets].map((s) => s.href).find((h) => h?.endsWith('/style.css')));
    assert.equal(sheet, `${site}/${SUB}/${dir}/style.css`);

    await page.fill('#url', SMOL);
    await page.click('#inspect');
    await Promise.race([
      page.waitForSelector('#results:not([hidden])', { timeout: 30_000 }),
      page.waitForSelector('#error:not([hidden])', { timeout: 30_000 }).then(async () => {
        throw new Error(`the page shows an error: ${await page.textContent('#error')}`);
      }),
    ]);
    assert.match(await page.textContent('#model-name'), /smollm2/i);

    const res = await page.evaluate(async ({ api, url }) => {
      const { Engine } = await import(api);
      const engine = await Engine.load(url, { backend: 'cpu', cache: false });
      const out = await engine.complete({ prompt: 'Once upon a time', max_tokens: 4, temperature: 0 });
      return { backend: engine.info.backend, threads: engine.info.threads, tokens: out.tokens };
    }, { api: `${site}/${SUB}/${dir}/quantweb.js`, url: TINY });
    assert.equal(res.backend, 'cpu');
    assert.equal(res.threads, 1, 'not cross-origin isolated: the single-threaded build');
    assert.equal(res.tokens.length, 4);

    assert.ok(seen.requested.includes(`/${SUB}/${dir}/pkg/quantweb_bg.wasm`), `the wasm was not loaded from ${dir}/pkg/: ${seen.requested.join(' ')}`);
    assertClean(seen);
  } finally {
    await page.close();
  }
});

for (const type of ['classic', 'module']) {
  test(`the loader as a ${type} script on a docs page places <quantweb-chat> with the script's data-* attributes`, { skip, timeout: 30_000 }, async () => {
    const { page, seen } = await strictPage();
    try {
      await page.goto(`${site}/docs/guide/${type}.html`);
      await page.waitForSelector('quantweb-chat', { state: 'attached', timeout: 10_000 });
      const el = await page.evaluate(async () => {
        await customElements.whenDefined('quantweb-chat');
        const all = document.querySelectorAll('quantweb-chat');
        return { count: all.length, parent: all[0].parentElement.tagName, model: all[0].getAttribute('model'), questions: all[0].getAttribute('starter-questions') };
      });
      assert.deepEqual(el, { count: 1, parent: 'BODY', model: TINY, questions: 'What is it?|How do I start?' });
      assert.ok(seen.requested.includes(`/${SUB}/${dir}/widget/quantweb-chat.js`), 'the element module was not loaded from the hashed directory');
      assertClean(seen);
    } finally {
      await page.close();
    }
  });
}
