// Network and storage faults while a model downloads into the cache (www/cache.js), each through
// a fault route of the test server (`/fault/TAG/KIND@N/…`, xtask/src/serve.rs). Each ends in
// transparent recovery (the cached bytes hash as the server's file) or a named error that says
// what to do, with the cache consistent (`Engine.cached()`).
//
// Most tests drive cache.download on the page's thread; the tab tests load through the engine's
// worker, whose sync access handle keeps the bytes of a tab closed mid-download.
//
// Run: `cargo xtask test --browser-only`, or with a server already running:
//   QUANTWEB_BASE_URL=http://127.0.0.1:8080 node --test tests/browser/faults.test.mjs

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { launch, baseUrl } from './lib.mjs';
import { root } from './fixtures.mjs';

const SMOL = 'SmolLM2-135M-Instruct.Q4_1.gguf';
const TINY = 'tiny-llama3-Q4_1.gguf';
const MB = 1 << 20;
const MINUTE = 60_000;

const modelPath = (name) => path.join(root, 'models', name);
const sha256 = (name) => createHash('sha256').update(readFileSync(modelPath(name))).digest('hex');
const SIZE = statSync(modelPath(SMOL)).size;
let SMOL_SHA;

let browser;
let tag = 0;
/** A fault path no earlier request has touched. */
const fault = (spec, model = SMOL) => `/fault/t${Date.now()}-${tag++}/${spec}/${model}`;

before(async () => {
  SMOL_SHA = sha256(SMOL);
  browser = await launch();
});

after(async () => {
  await browser?.close();
});

/** A page of a context (fresh unless given: an empty OPFS) that records its requests. */
async function openPage(context) {
  context = context || (await browser.newContext());
  const page = await context.newPage();
  const log = [];
  page.on('request', (r) => log.push({ url: r.url(), range: r.headers().range, req: r }));
  await page.goto(`${baseUrl}/`);
  return { context, page, log };
}

/**
 * cache.download of `url` on the page's thread: `{downloaded, resumedFrom, sha256, ms}`, or
 * `{error: {name, message}, ms}`. `abortAt`: abort once this many bytes are on disk.
 */
function download(page, url, { abortAt, stallTimeout } = {}) {
  return page.evaluate(async ({ url, abortAt, stallTimeout }) => {
    const cache = await import('/cache.js');
    const ctl = new AbortController();
    const t0 = performance.now();
    try {
      const got = await cache.download([new URL(url, location.href).href], {
        signal: ctl.signal,
        stallTimeout,
        onProgress: ({ loaded }) => abortAt && loaded >= abortAt && ctl.abort(),
      });
      const digest = await crypto.subtle.digest('SHA-256', await got.files[0].arrayBuffer());
      const hex = [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, '0')).join('');
      return { downloaded: got.downloaded, resumedFrom: got.resumedFrom, sha256: hex, ms: performance.now() - t0 };
    } catch (e) {
      return { error: { name: e.name, message: e.message }, ms: performance.now() - t0 };
    }
  }, { url, abortAt, stallTimeout });
}

const cached = (page) => page.evaluate(async () => (await import('/quantweb.js')).Engine.cached());

/** The one cache entry, partial, with `stored` bytes kept. */
async function assertPartial(page, what) {
  const entries = await cached(page);
  assert.equal(entries.length, 1, what);
  assert.equal(entries[0].complete, false, what);
  assert.ok(entries[0].storedBytes > 0 && entries[0].storedBytes < SIZE, `${what}: kept ${entries[0].storedBytes} bytes`);
  return entries[0].storedBytes;
}

async function assertComplete(page, what) {
  const entries = await cached(page);
  assert.equal(entries.length, 1, what);
  assert.equal(entries[0].complete, true, what);
  assert.equal(entries[0].storedBytes, SIZE, what);
  return entries[0];
}

/** Downloads `url` stopped after 2 MiB: a partial entry, as a download cut short leaves it. */
async function partial(page, url) {
  const first = await download(page, url, { abortAt: 2 * MB });
  assert.equal(first.error?.name, 'AbortError', JSON.stringify(first));
  return assertPartial(page, 'after the abort');
}

/** The requests for the model's bytes after `from` (not the 1-byte size probes). */
const bodyRequests = (log, from, url) => log.slice(from).filter((r) => r.url.includes(url) && r.range !== 'bytes=0-0');

for (const [status, minMs] of [[500, 400], [503, 900], [429, 900]]) {
  test(`HTTP ${status} in the middle of a part: tried again after ${status === 500 ? 'a backoff' : 'Retry-After'}, then resumed from the bytes on disk`, { timeout: 2 * MINUTE }, async () => {
    const { context, page, log } = await openPage();
    try {
      const url = fault(`status${status}@${8 * MB}`);
      const kept = await partial(page, url);
      const from = log.length;
      const done = await download(page, url);
      assert.equal(done.sha256, SMOL_SHA, JSON.stringify(done));
      assert.equal(done.resumedFrom, kept);
      assert.ok(done.ms >= minMs, `waited ${done.ms} ms before trying again`);
      const tries = bodyRequests(log, from, url);
      assert.deepEqual(tries.map((r) => r.range), [`bytes=${kept}-`, `bytes=${kept}-`]);
      assert.deepEqual(await Promise.all(tries.map(async (r) => (await r.req.response()).status())), [status, 206]);
      await assertComplete(page, 'after the retry');
    } finally {
      await context.close();
    }
  });
}

test('a server that stays down (HTTP 503 on every try): after 5 tries an HttpError that says to try again later, the bytes so far kept', { timeout: 2 * MINUTE }, async () => {
  const { context, page, log } = await openPage();
  try {
    const url = fault(`status503@${8 * MB}*`);
    const kept = await partial(page, url);
    const from = log.length;
    const down = await download(page, url);
    assert.equal(down.error?.name, 'HttpError', JSON.stringify(down));
    assert.match(down.error.message, /^HTTP 503 \(service unavailable\) .*still refused after being tried again: try again later \(the bytes already downloaded are kept\)$/);
    // Retry-After: 1 between the tries.
    assert.ok(down.ms >= 4 * 1000, `gave up after ${down.ms} ms`);
    assert.deepEqual(bodyRequests(log, from, url).map((r) => r.range), Array(5).fill(`bytes=${kept}-`));
    assert.equal(await assertPartial(page, 'after giving up'), kept);
  } finally {
    await context.close();
  }
});

test('a stalled server: a NetworkError after the stall timeout, the bytes before are kept and resume', { timeout: 2 * MINUTE }, async () => {
  const { context, page, log } = await openPage();
  try {
    const at = 3 * MB;
    const url = fault(`stall@${at}`);
    const stalled = await download(page, url, { stallTimeout: 1500 });
    assert.equal(stalled.error?.name, 'NetworkError', JSON.stringify(stalled));
    assert.match(stalled.error.message, /the server stalled: no data for 1\.5 s .*\(at 3145728 of 98362432 bytes\).*try again to resume/);
    assert.ok(stalled.ms < 20_000, `gave up after ${stalled.ms} ms`);
    assert.equal(await assertPartial(page, 'after the stall'), at);
    const from = log.length;
    const done = await download(page, url);
    assert.equal(done.sha256, SMOL_SHA);
    assert.equal(done.resumedFrom, at);
    assert.deepEqual(bodyRequests(log, from, url).map((r) => r.range), [`bytes=${at}-`]);
    await assertComplete(page, 'after the resume');
  } finally {
    await context.close();
  }
});

for (const [kind, message] of [
  ['ignore-range', /answered a request for bytes \d+- with the whole file \(HTTP 200\).*does not support Range requests properly/],
  ['bad-content-range', /answered a request for bytes (\d+)- with Content-Range bytes \d+-98362432\/98362432.*does not support Range requests properly/],
]) {
  test(`${kind}: a resumed download answered wrongly is an HttpError and stores nothing of it`, { timeout: 2 * MINUTE }, async () => {
    const { context, page } = await openPage();
    try {
      const url = fault(`${kind}@${8 * MB}`);
      const kept = await partial(page, url);
      const wrong = await download(page, url);
      assert.equal(wrong.error?.name, 'HttpError', JSON.stringify(wrong));
      assert.match(wrong.error.message, message);
      assert.equal(await assertPartial(page, 'after the wrong answer'), kept, 'nothing of the wrong answer was written');
      const done = await download(page, url);
      assert.equal(done.sha256, SMOL_SHA);
      assert.equal(done.resumedFrom, kept);
      await assertComplete(page, 'after a proper answer');
    } finally {
      await context.close();
    }
  });
}

test('an ETag that changes between sessions: the part restarts from byte 0', { timeout: 2 * MINUTE }, async () => {
  const { context, page, log } = await openPage();
  try {
    const url = fault(`etag-change@${8 * MB}`);
    await partial(page, url);
    const [{ etags: [before] }] = await cached(page);
    const from = log.length;
    const done = await download(page, url);
    assert.equal(done.sha256, SMOL_SHA);
    assert.equal(done.resumedFrom, 0);
    assert.deepEqual(bodyRequests(log, from, url).map((r) => r.range), [undefined], 'one whole-file request');
    const entry = await assertComplete(page, 'after the restart');
    assert.notEqual(entry.etags[0], before);
    assert.match(entry.etags[0], /-changed"$/);
  } finally {
    await context.close();
  }
});

test('an ETag that changes within one session (between the size probe and the download): the download keeps the new ETag and the right bytes', { timeout: 2 * MINUTE }, async () => {
  const { context, page, log } = await openPage();
  try {
    // The probe (bytes 0-0) fires the fault; every answer after it carries the changed ETag.
    const url = fault('etag-change@0');
    const done = await download(page, url);
    assert.equal(done.sha256, SMOL_SHA, JSON.stringify(done));
    assert.deepEqual(bodyRequests(log, 0, url).map((r) => r.range), [undefined], 'one whole-file request');
    const entry = await assertComplete(page, 'after the download');
    assert.match(entry.etags[0], /-changed"$/, 'the entry records the ETag its bytes came with');
  } finally {
    await context.close();
  }
});

test('storage running out mid-write: a QuotaExceededError and the partial entry is removed', { timeout: 2 * MINUTE }, async () => {
  const { context, page } = await openPage();
  try {
    // The quota estimate says there is room; the writes then fail after 4 MiB, as when other
    // data fills the disk meanwhile.
    await page.evaluate(() => {
      const write = FileSystemWritableFileStream.prototype.write;
      let written = 0;
      FileSystemWritableFileStream.prototype.write = function (chunk) {
        written += chunk?.data?.byteLength || 0;
        if (written > 4 << 20) return Promise.reject(new DOMException('the quota has been exceeded', 'QuotaExceededError'));
        return write.call(this, chunk);
      };
    });
    const full = await download(page, `/models/${SMOL}`);
    assert.equal(full.error?.name, 'QuotaExceededError', JSON.stringify(full));
    assert.match(full.error.message, /needs 98\.4 MB more .*The partial download was removed\./);
    assert.deepEqual(await cached(page), []);
  } finally {
    await context.close();
  }
});

test('storage running out mid-write in the engine\'s worker (sync access handle): Engine.load fails with a QuotaExceededError and the partial entry is removed', { timeout: 2 * MINUTE }, async () => {
  const { context, page } = await openPage();
  try {
    const url = new URL(`/models/${SMOL}`, baseUrl).href;
    // The page holds the model's Web Lock, so the worker's download waits until its writes are
    // made to fail after 4 MiB (the worker's own storage API, not the page's).
    await page.evaluate(async (url) => {
      const { cacheKey } = await import('/cache.js');
      await new Promise((held) => {
        navigator.locks.request(`quantweb-model-${cacheKey([url])}`, () => {
          held();
          return new Promise((release) => { window.releaseLock = release; });
        });
      });
    }, url);
    const worker = page.waitForEvent('worker');
    const loading = page.evaluate(async (url) => {
      const { Engine } = await import('/quantweb.js');
      try {
        await Engine.load(url, { backend: 'cpu' });
        return null;
      } catch (e) {
        return { name: e.name, message: e.message };
      }
    }, url);
    await (await worker).evaluate(() => {
      const write = FileSystemSyncAccessHandle.prototype.write;
      let written = 0;
      FileSystemSyncAccessHandle.prototype.write = function (chunk, options) {
        written += chunk.byteLength;
        if (written > 4 << 20) throw new DOMException('the quota has been exceeded', 'QuotaExceededError');
        return write.call(this, chunk, options);
      };
    });
    await page.evaluate(() => window.releaseLock());
    const failed = await loading;
    assert.equal(failed?.name, 'QuotaExceededError', JSON.stringify(failed));
    assert.match(failed.message, /The partial download was removed\./);
    assert.deepEqual(await cached(page), []);
  } finally {
    await context.close();
  }
});

test('two tabs loading the same uncached model at once: one download, both end with the model', { timeout: 3 * MINUTE }, async () => {
  const context = await browser.newContext();
  try {
    const [a, b] = [await openPage(context), await openPage(context)];
    const url = `/models/${SMOL}?two-tabs`;
    const [ra, rb] = await Promise.all([download(a.page, url), download(b.page, url)]);
    for (const r of [ra, rb]) assert.equal(r.sha256, SMOL_SHA, JSON.stringify(r));
    assert.deepEqual([ra.downloaded, rb.downloaded].sort((x, y) => x - y), [0, SIZE], 'one tab downloaded, the other found it cached');
    const bodies = [...a.log, ...b.log].filter((r) => r.url.includes('two-tabs') && r.range !== 'bytes=0-0');
    assert.equal(bodies.length, 1, `model body requests: ${JSON.stringify(bodies.map((r) => r.range))}`);
    await assertComplete(a.page, 'tab A');
    await assertComplete(b.page, 'tab B');
  } finally {
    await context.close();
  }
});

test('a tab closed mid-download and reopened: the download resumes from the bytes stored', { timeout: 3 * MINUTE }, async () => {
  const context = await browser.newContext();
  try {
    const at = 6 * MB;
    const url = fault(`stall@${at}`);
    const first = await openPage(context);
    const body = first.page.waitForRequest((r) => r.url().includes(url) && !r.headers().range);
    await first.page.evaluate((url) => {
      import('/quantweb.js').then(({ Engine }) => Engine.load(url, { backend: 'cpu' })).catch(() => {});
    }, url);
    // The bytes before the stall come at once; progress events are too sparse to wait for.
    await body;
    await first.page.waitForTimeout(2000);
    await first.page.close();

    const second = await openPage(context);
    const stored = await assertPartial(second.page, 'after the tab closed');
    assert.ok(stored >= at - 2 * MB && stored <= at, `stored ${stored} bytes`);
    const info = await second.page.evaluate(async (url) => {
      const { Engine } = await import('/quantweb.js');
      const engine = await Engine.load(url, { backend: 'cpu' });
      const info = engine.info;
      await engine.unload();
      return info;
    }, url);
    assert.equal(info.downloadedBytes, SIZE - stored);
    assert.equal(bodyRequests(second.log, 0, url).at(-1).range, `bytes=${stored}-`);
    await assertComplete(second.page, 'after the resume');
  } finally {
    await context.close();
  }
});

test('no private file system (as in some private windows): the model streams with Range and the info says so', { timeout: 2 * MINUTE }, async () => {
  const { context, page, log } = await openPage();
  try {
    // The engine's worker downloads: it is the one whose file system goes missing.
    await page.route('**/worker.js', async (route) => {
      const resp = await route.fetch();
      const body = `navigator.storage.getDirectory = () => Promise.reject(new DOMException('The operation is insecure.', 'SecurityError'));\n${await resp.text()}`;
      await route.fulfill({ response: resp, body });
    });
    const info = await page.evaluate(async (url) => {
      const { Engine } = await import('/quantweb.js');
      const engine = await Engine.load(url, { backend: 'cpu' });
      const info = engine.info;
      await engine.unload();
      return info;
    }, `/models/${TINY}`);
    assert.equal(info.source, 'network');
    assert.equal(info.cacheKey, null);
    assert.match(info.cacheUnavailable, /refused its private file system .*SecurityError|operation is insecure/);
    const reads = log.filter((r) => r.url.endsWith(TINY));
    assert.ok(reads.length > 0 && reads.every((r) => /^bytes=\d+-\d+$/.test(r.range || '')), `reads: ${JSON.stringify(reads.map((r) => r.range))}`);
    assert.deepEqual(await cached(page), [], 'the page (whose file system works) finds nothing cached');
  } finally {
    await context.close();
  }
});
