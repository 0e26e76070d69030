// A real docs site with the assistant, as a site owner would set it up: MkDocs builds the
// fixture pages of tests/docsite (the element added as README's "Embed in your docs" says),
// `cargo xtask dist` puts the bundle in the site, `quantweb index` indexes the built site, and
// a plain static server (python3 -m http.server: no COOP/COEP) serves it. The model comes from
// another origin, with CORS: a second `xtask serve`, whose request log the test reads.
//
// Run by `cargo xtask test`, which sets QUANTWEB_XTASK, QUANTWEB_CLI and QUANTWEB_MKDOCS.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, cpSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { launch } from './lib.mjs';
import { root, fixturesDir, retypeTensors } from './fixtures.mjs';

const { QUANTWEB_XTASK: xtask, QUANTWEB_CLI: cli, QUANTWEB_MKDOCS: mkdocs } = process.env;
const missing = !xtask || !cli || !mkdocs;
const skip = missing && !process.env.CI ? 'needs QUANTWEB_XTASK, QUANTWEB_CLI and QUANTWEB_MKDOCS (cargo xtask test sets them)' : false;

const MODEL = 'SmolLM2-135M-Instruct.Q4_1.gguf';
let tmp;
let site;
let modelServer;
let siteServer;
let modelLog = [];
let browser;
let context;

/** Starts a program and resolves with the first match of `pattern` in its output. */
function startServer(cmd, args, pattern, onLine) {
  const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  return new Promise((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error(`${cmd} did not start: ${out}`)), 60_000);
    const feed = (buf) => {
      const text = buf.toString();
      out += text;
      for (const line of text.split('\n')) if (line) onLine?.(line);
      const m = pattern.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve({ child, match: m });
      }
    };
    child.stdout.on('data', feed);
    child.stderr.on('data', feed);
    child.on('exit', (code) => reject(new Error(`${cmd} exited (${code}): ${out}`)));
  });
}

const modelRequests = () => modelLog.filter((l) => l.includes('/models/'));

before(async () => {
  if (skip) return;
  assert.ok(!missing, 'QUANTWEB_XTASK, QUANTWEB_CLI and QUANTWEB_MKDOCS must be set (cargo xtask test sets them)');
  tmp = mkdtempSync(path.join(tmpdir(), 'quantweb-docsite-'));
  const src = path.join(tmp, 'src');
  site = path.join(tmp, 'site');
  cpSync(path.join(root, 'tests/docsite'), src, { recursive: true });

  const models = await startServer(xtask, ['serve', '--host', '127.0.0.1', '--port', '0', '--no-build'], /open (http:\/\/127\.0\.0\.1:\d+)\//, (l) => {
    if (l.startsWith('serve:')) modelLog.push(l);
  });
  modelServer = models.child;
  const modelUrl = `${models.match[1]}/models/${MODEL}`;

  execFileSync(xtask, ['dist', '--no-build', '--out', path.join(src, 'docs/assets/quantweb')], { stdio: 'inherit' });
  // A short context keeps the single-threaded CPU prefill of the excerpts short.
  execFileSync(mkdocs, ['build', '--quiet', '-f', path.join(src, 'mkdocs.yml'), '-d', site], {
    stdio: 'inherit',
    env: { ...process.env, QUANTWEB_MODEL_URL: modelUrl, QUANTWEB_CONTEXT: '512' },
  });
  execFileSync(cli, ['index', site], { stdio: 'inherit' });

  const served = await startServer('python3', ['-u', '-m', 'http.server', '0', '--bind', '127.0.0.1', '--directory', site], /port (\d+)/);
  siteServer = { child: served.child, url: `http://127.0.0.1:${served.match[1]}` };

  browser = await launch();
  context = await browser.newContext();
});

after(async () => {
  await browser?.close();
  modelServer?.kill();
  siteServer?.child.kill();
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

/** Runs `fn(element, arg)` in the page on the (first) <quantweb-chat>. */
async function widget(page, fn, arg) {
  return (await page.$('quantweb-chat')).evaluate(fn, arg);
}

/**
 * Adds an inline <quantweb-chat> with `attrs` to the page, starts it and resolves with its first
 * `quantweb-error` and what the widget showed then (its error box, the index-error note); the
 * element is removed again, so the site's own stays the first.
 */
function firstError(page, attrs) {
  return page.evaluate(async (a) => {
    const el = document.createElement('quantweb-chat');
    for (const [k, v] of Object.entries({ ...a, placement: 'inline', shortcut: 'none' })) el.setAttribute(k, v);
    document.querySelector('[role=main]').append(el);
    const err = new Promise((resolve) => el.addEventListener('quantweb-error', (e) => resolve(e.detail), { once: true }));
    // Inline, the widget shows a start button; nothing loads before it is pressed.
    el.shadowRoot.querySelector('.intro button.primary').click();
    const detail = await err;
    const box = el.shadowRoot.querySelector('.error');
    const shown = { detail, visible: !box.hidden, text: box.textContent, note: el.shadowRoot.querySelector('[data-kind=index-error]')?.textContent };
    el.remove();
    return shown;
  }, attrs);
}

/** Computed styles of host elements the widget must leave alone. */
function hostStyles(page) {
  return page.evaluate(() => {
    const pick = (sel) => {
      const el = document.querySelector(sel);
      if (!el) return null;
      const s = getComputedStyle(el);
      return [s.fontFamily, s.fontSize, s.color, s.backgroundColor, s.lineHeight, s.margin, s.padding].join('|');
    };
    return ['body', 'h1', 'h2', 'p', 'a', 'code', '.navbar', '.container'].map(pick);
  });
}

test('quantweb index on the built site: sections with anchors, no navigation text', { skip }, () => {
  const index = JSON.parse(readFileSync(path.join(site, 'quantweb-index.json'), 'utf8'));
  assert.equal(index.format, 'quantweb-index');
  const flush = index.sections.find((s) => s.heading === 'Flush interval');
  assert.ok(flush, 'the Flush interval section');
  assert.equal(flush.url, 'configuration/');
  assert.equal(flush.anchor, 'flush-interval');
  assert.match(flush.text, /flush_interval_ms/);
  const calib = index.sections.find((s) => s.heading === 'Calibration files');
  assert.ok(calib && calib.anchor === 'calibration-files', 'an h3 is a section of its own');
  const urls = new Set(index.sections.map((s) => s.url));
  assert.deepEqual([...urls].sort(), ['./', 'configuration/', 'install/', 'troubleshooting/']);
  const all = index.sections.map((s) => s.text).join('\n');
  // MkDocs' chrome: the navbar, the search and keyboard dialogs, the footer.
  for (const chrome of ['Documentation built with', 'Keyboard Shortcuts', 'Search', 'Previous', 'Next', 'Edit on']) {
    assert.ok(!all.includes(chrome), `navigation text "${chrome}" is not indexed`);
  }
});

test('the assistant: shortcut, verdict before download, grounded answer with links, cache reused, starters, stop, host styles kept, dark mode, errors, remove', { skip, timeout: 600_000 }, async () => {
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));

  // The host page as it looks without the widget, for the style check.
  await page.route('**/quantweb-chat.js', (r) => r.abort());
  await page.goto(`${siteServer.url}/`);
  const bare = await hostStyles(page);
  await page.unroute('**/quantweb-chat.js');

  const requests = [];
  page.on('request', (r) => requests.push({ url: r.url(), range: r.headers().range }));
  await page.goto(`${siteServer.url}/`);
  await page.waitForFunction(() => customElements.get('quantweb-chat') && document.querySelector('quantweb-chat').shadowRoot);
  // Nothing but the element is loaded before the reader opens it.
  assert.equal(modelRequests().length, 0, 'no model request before opening');
  const ours = requests.filter((r) => r.url.includes('/assets/quantweb/')).map((r) => r.url.replace(/.*\/assets\/quantweb\//, '').replace(/^q-[0-9a-f]+\//, ''));
  assert.deepEqual(ours.sort(), ['quantweb-chat.js', 'widget/quantweb-chat.js', 'widget/styles.js'], 'nothing of the engine before opening');

  // The shortcut opens it; the model's size and the verdict show from the header alone.
  await page.keyboard.press('Control+i');
  await page.waitForFunction(() => !document.querySelector('quantweb-chat').shadowRoot.querySelector('.card').hidden, null, { timeout: 60_000 });
  const card = await widget(page, (el) => ({
    download: el.shadowRoot.querySelector('[data-field=download]').textContent,
    level: el.shadowRoot.querySelector('.verdict').dataset.level,
    start: el.shadowRoot.querySelector('.intro button.primary').textContent,
    open: !el.shadowRoot.querySelector('.panel').hidden,
    dialog: el.shadowRoot.querySelector('.panel').getAttribute('role'),
  }));
  assert.ok(card.open);
  assert.equal(card.dialog, 'dialog');
  assert.match(card.download, /\d+(\.\d)? MB/);
  assert.ok(['fits', 'tight'].includes(card.level), card.level);
  assert.match(card.start, /^Download \d+(\.\d)? MB and start$/);
  const modelGets = requests.filter((r) => r.url.includes('/models/'));
  assert.ok(modelGets.length > 0 && modelGets.every((r) => r.range), `only Range requests for the header: ${JSON.stringify(modelGets)}`);
  for (const r of modelGets) {
    const [, a, b] = /bytes=(\d+)-(\d+)/.exec(r.range) || [];
    assert.ok(b !== undefined && b - a < 16 << 20, `a header read, not the model: ${r.range}`);
  }

  // Focus stays inside while open; Escape closes and the shortcut reopens.
  for (let i = 0; i < 6; i++) await page.keyboard.press('Tab');
  assert.equal(await page.evaluate(() => document.activeElement?.tagName), 'QUANTWEB-CHAT');
  await page.keyboard.press('Escape');
  assert.ok(await widget(page, (el) => el.shadowRoot.querySelector('.panel').hidden));
  await page.keyboard.press('Control+i');

  // Confirm: the model downloads and loads; a question gets a streamed answer with its sources.
  const answered = page.evaluate(
    () => new Promise((resolve) => document.querySelector('quantweb-chat').addEventListener('quantweb-answer', (e) => resolve(e.detail), { once: true })),
  );
  await widget(page, (el) => el.shadowRoot.querySelector('.intro button.primary').click());
  await page.waitForFunction(() => !document.querySelector('quantweb-chat').shadowRoot.querySelector('.chat').hidden, null, { timeout: 300_000 });
  await widget(page, (el) => el.open({ question: 'How do I change the flush interval?' }));
  const detail = await answered;
  assert.ok(detail.answer.length > 0, 'an answer');
  assert.ok(
    detail.sources.some((s) => s.href === `${siteServer.url}/configuration/#flush-interval`),
    `the configuration page is cited: ${JSON.stringify(detail.sources)}`,
  );
  const shown = await widget(page, (el) => ({
    links: [...el.shadowRoot.querySelectorAll('.sources a')].map((a) => a.href),
    answer: el.shadowRoot.querySelector('.msg.assistant').textContent,
    live: el.shadowRoot.querySelector('[aria-live=polite][role=log]') !== null,
  }));
  assert.ok(shown.links.includes(`${siteServer.url}/configuration/#flush-interval`));
  assert.equal(shown.answer, detail.answer);
  assert.ok(shown.live, 'the answer streams into an aria-live log');
  assert.ok(modelRequests().some((l) => / -> 20[06]$/.test(l)), 'the model was downloaded from its server');

  // Typing in the widget does not reach the host's one-key shortcuts (MkDocs: n = next page).
  await page.keyboard.type('n p s');
  assert.equal(await widget(page, (el) => el.shadowRoot.querySelector('textarea').value), 'n p s');
  assert.equal(new URL(page.url()).pathname, '/');

  // The host page's own styles are what they were without the widget.
  assert.deepEqual(await hostStyles(page), bare);

  // Dark mode follows the host: MkDocs' own colour-mode switch (it sets data-bs-theme), then,
  // on a page with no marker, the reader's preference.
  const scheme = () => widget(page, (el) => [el.shadowRoot.querySelector('.root').dataset.scheme, getComputedStyle(el.shadowRoot.querySelector('.panel')).backgroundColor]);
  const waitScheme = (want) => page.waitForFunction((w) => document.querySelector('quantweb-chat').shadowRoot.querySelector('.root').dataset.scheme === w, want);
  const [light, lightBg] = await scheme();
  assert.equal(light, 'light');
  await page.evaluate(() => document.querySelector('[data-bs-theme-value=dark]').click());
  await waitScheme('dark');
  const [, darkBg] = await scheme();
  assert.notEqual(darkBg, lightBg);
  await page.evaluate(() => document.querySelector('[data-bs-theme-value=light]').click());
  await waitScheme('light');
  await page.evaluate(() => document.documentElement.removeAttribute('data-bs-theme'));
  await page.emulateMedia({ colorScheme: 'dark' });
  await waitScheme('dark');
  await page.emulateMedia({ colorScheme: 'light' });
  await waitScheme('light');

  // Another page of the site: the model comes from this browser's storage, with no request.
  const before = modelRequests().length;
  await page.goto(`${siteServer.url}/install/`);
  await page.waitForFunction(() => customElements.get('quantweb-chat'));
  await page.keyboard.press('Control+i');
  await page.waitForFunction(() => !document.querySelector('quantweb-chat').shadowRoot.querySelector('.chat').hidden, null, { timeout: 120_000 });
  assert.deepEqual(modelRequests().slice(before), [], 'no model request on the second page');

  // A starter question is asked with a click; Stop ends an answer early.
  const nextAnswer = () => page.evaluate(() => new Promise((resolve) => document.querySelector('quantweb-chat').addEventListener('quantweb-answer', (e) => resolve(e.detail), { once: true })));
  let got = nextAnswer();
  await widget(page, (el) => el.shadowRoot.querySelector('.starters button').click());
  const starter = await got;
  assert.equal(starter.question, 'How do I install Tidepool?');
  assert.ok(starter.sources.some((s) => s.href.startsWith(`${siteServer.url}/install/#`)), JSON.stringify(starter.sources));
  got = nextAnswer();
  await widget(page, (el) => el.open({ question: 'What does Tidepool do with the readings of a buoy?' }));
  await page.waitForFunction(() => document.querySelector('quantweb-chat').shadowRoot.querySelectorAll('.msg.assistant')[1]?.textContent.length > 0, null, { timeout: 120_000 });
  await widget(page, (el) => el.shadowRoot.querySelector('.ask button:not(.primary)').click());
  const stopped = await got;
  assert.equal(stopped.stopped, true);

  // Bad input shows inside the widget, and the page keeps working: a missing model, a server
  // that refuses CORS, a missing index.
  const origin = new URL(readFileSync(path.join(site, 'index.html'), 'utf8').match(/model="([^"]+)"/)[1]).origin;
  const unsupported = `${origin}/fixtures/${path.basename(retypeTensors(path.join(root, 'models', MODEL), path.join(fixturesDir, 'docsite-iq2xxs.gguf'), ['blk.0.ffn_down.weight'], 16))}`;
  for (const [model, name] of [[`${origin}/models/no-such-model.gguf`, 'HttpError'], [`${origin}/nocors/${MODEL}`, 'NetworkError'], [unsupported, 'UnsupportedModelError']]) {
    const got = await firstError(page, { model });
    assert.equal(got.detail.name, name, JSON.stringify(got));
    assert.ok(got.visible && got.text.length > 20, JSON.stringify(got));
  }
  const noIndex = await firstError(page, { model: `${origin}/models/${MODEL}`, index: '/no-such-index.json' });
  assert.match(noIndex.note, /index could not be loaded.*this page only/);

  // "Remove the model from this browser": the stored copy goes, and the widget offers the
  // download again.
  await widget(page, (el) => el.removeModel());
  const stored = await page.evaluate(async () => {
    const root = await navigator.storage.getDirectory();
    const dir = await root.getDirectoryHandle('quantweb-models');
    const keys = [];
    for await (const key of dir.keys()) keys.push(key);
    return keys;
  });
  assert.deepEqual(stored, []);
  await page.waitForFunction(() => !document.querySelector('quantweb-chat').shadowRoot.querySelector('.intro button.primary').hidden);
  assert.match(await widget(page, (el) => el.shadowRoot.querySelector('.intro button.primary').textContent), /^Download .* and start$/);
  assert.equal(await widget(page, (el) => el.shadowRoot.querySelector('.starters').hidden), false, 'the starter questions come back');
  assert.equal(await page.evaluate(() => document.title.length > 0 && document.querySelector('h1').textContent), 'Install');
  assert.deepEqual(errors, []);
  await page.close();
});
