// The docs-site widget's retrieval (www/widget/retrieve.js) in plain Node, no browser: tokenizer
// v1 against tests/docsite/tokenize-cases.json (which the Rust tokenizer is checked against too,
// crate/tests/site_index.rs), BM25 ranking and links on a hand-made index, and malformed or
// unreachable indexes refused with IndexError (load() against a local HTTP server).
//
// Run: node --test tests/browser/retrieve.test.mjs

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import { tokenize, SiteIndex, IndexError, MAX_INDEX_BYTES } from '../../www/widget/retrieve.js';

const INDEX_URL = 'https://example.org/site/quantweb-index.json';

// What `quantweb index` writes for these three sections, counted by hand: heading tokens twice,
// title once, text once; stopwords and one-letter words left out.
const INDEX = {
  format: 'quantweb-index',
  version: 1,
  base: null,
  sections: [
    { url: 'install/', anchor: 'requirements', title: 'Install', heading: 'Requirements', text: 'You need a GPU.' },
    { url: 'guide/', anchor: '', title: 'Guide', heading: '', text: 'Check the requirements first, then run it.' },
    { url: './', anchor: 'kv-cache', title: 'Home', heading: 'KV cache', text: 'The cache holds keys and values.' },
  ],
  lengths: [5, 6, 9],
  postings: {
    cache: [2, 3], check: [1, 1], first: [1, 1], gpu: [0, 1], guide: [1, 1], holds: [2, 1], home: [2, 1],
    install: [0, 1], keys: [2, 1], kv: [2, 2], need: [0, 1], requirements: [0, 2, 1, 1], run: [1, 1],
    then: [1, 1], values: [2, 1],
  },
};

test('tokenize() gives the cases shared with the Rust tokenizer', () => {
  const cases = JSON.parse(readFileSync(new URL('../docsite/tokenize-cases.json', import.meta.url), 'utf8'));
  assert.ok(cases.length >= 12);
  for (const { text, tokens } of cases) assert.deepEqual(tokenize(text), tokens, text);
});

test('a heading match ranks above a body match, scored as BM25', () => {
  const index = SiteIndex.fromJSON(INDEX, INDEX_URL);
  const hits = index.search('What are the requirements?');
  assert.deepEqual(index.search('requirements Requirements'), hits, 'query terms count once');
  assert.deepEqual(hits.map((h) => h.section.url), ['install/', 'guide/']);
  // BM25 by hand: N = 3, df = 2, average length 20/3; section 0 has tf 2 in 5 tokens.
  const idf = Math.log(1 + (3 - 2 + 0.5) / (2 + 0.5));
  const expected = (idf * 2 * 2.2) / (2 + 1.2 * (0.25 + (0.75 * 5) / (20 / 3)));
  assert.ok(Math.abs(hits[0].score - expected) < 1e-12, `${hits[0].score} vs ${expected}`);
  assert.ok(hits[1].score > 0 && hits[1].score < hits[0].score);

  assert.deepEqual(index.search('KV cache', { limit: 1 }).map((h) => h.section.anchor), ['kv-cache']);
  assert.deepEqual(index.search('the of and'), []);
  assert.deepEqual(index.search('nothing matches'), []);
});

test('equal scores keep index order', () => {
  const sections = ['a.html', 'b.html', 'c.html'].map((url) => ({ url, anchor: '', title: 'T', heading: '', text: 'same words' }));
  const postings = { same: [1, 1, 2, 1], words: [1, 1, 2, 1] };
  const index = SiteIndex.fromJSON({ ...INDEX, sections, lengths: [3, 3, 3], postings }, INDEX_URL);
  const hits = index.search('same words');
  assert.deepEqual(hits.map((h) => h.section.url), ['b.html', 'c.html']);
  assert.equal(hits[0].score, hits[1].score);
});

test('links resolve against the index URL or its base', () => {
  const hrefs = (base) =>
    SiteIndex.fromJSON({ ...INDEX, base }, INDEX_URL)
      .search('requirements cache')
      .map((h) => h.href)
      .sort();
  assert.deepEqual(hrefs(null), [
    'https://example.org/site/#kv-cache',
    'https://example.org/site/guide/',
    'https://example.org/site/install/#requirements',
  ]);
  assert.deepEqual(hrefs('/docs/'), [
    'https://example.org/docs/#kv-cache',
    'https://example.org/docs/guide/',
    'https://example.org/docs/install/#requirements',
  ]);
  assert.deepEqual(hrefs('https://docs.example.com/v2/'), [
    'https://docs.example.com/v2/#kv-cache',
    'https://docs.example.com/v2/guide/',
    'https://docs.example.com/v2/install/#requirements',
  ]);
});

test('malformed indexes are refused with IndexError', () => {
  const section = INDEX.sections[0];
  const bad = [
    [null, /not a quantweb index/],
    [[], /not a quantweb index/],
    [{ ...INDEX, format: 'lunr' }, /not a quantweb index/],
    [{ ...INDEX, version: 2 }, /version 2 is not supported/],
    [{ ...INDEX, base: 7 }, /"base"/],
    [{ ...INDEX, sections: {} }, /"sections"/],
    [{ ...INDEX, sections: [{ ...section, text: 1 }], lengths: [1] }, /sections\[0\]/],
    [{ ...INDEX, lengths: [5, 6] }, /"lengths"/],
    [{ ...INDEX, lengths: [5, 6, -1] }, /lengths\[2\]/],
    [{ ...INDEX, postings: [] }, /"postings"/],
    [{ ...INDEX, postings: { gpu: 'x' } }, /postings\["gpu"\]/],
    [{ ...INDEX, base: 'javascript:alert(1)//' }, /base links to javascript:/],
    [{ ...INDEX, sections: [{ ...section, url: 'data:text/html,x' }], lengths: [1] }, /data:/],
  ];
  for (const [obj, message] of bad) {
    assert.throws(() => SiteIndex.fromJSON(obj, INDEX_URL), (e) => e instanceof IndexError && e.name === 'IndexError' && message.test(e.message), JSON.stringify(obj));
  }
});

test('postings outside the sections or out of order are ignored', () => {
  const index = SiteIndex.fromJSON({ ...INDEX, postings: { gpu: [0, 1, 0, 5, 99, 1, -1, 1, 1.5, 1, 2, 0, 2, 'x', 1] } }, INDEX_URL);
  assert.deepEqual(index.search('gpu').map((h) => h.section.url), ['install/']);
  assert.deepEqual(index.search('requirements'), []);
});

let server;
let origin;
before(async () => {
  const valid = JSON.stringify(INDEX);
  server = http.createServer((req, res) => {
    if (req.url === '/site/quantweb-index.json') res.end(valid);
    else if (req.url === '/notjson') res.end('<html>');
    else if (req.url === '/wrong') res.end('{"format": "quantweb-index", "version": 9}');
    else if (req.url === '/declared-huge') {
      res.writeHead(200, { 'content-length': String(MAX_INDEX_BYTES + 1) });
      res.end();
    } else if (req.url === '/streamed-huge') {
      // Chunked, no Content-Length: the bound must hold on what arrives.
      res.on('error', () => {});
      const mib = Buffer.alloc(1 << 20, 32);
      for (let i = 0; i <= MAX_INDEX_BYTES >> 20; i++) res.write(mib);
      res.end();
    } else {
      res.statusCode = 404;
      res.end();
    }
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  origin = `http://127.0.0.1:${server.address().port}`;
});
after(() => {
  server.closeAllConnections();
  server.close();
});

test('load() fetches and checks an index', async () => {
  const index = await SiteIndex.load(`${origin}/site/quantweb-index.json`);
  assert.equal(index.search('requirements')[0].href, `${origin}/site/install/#requirements`);
});

test('load() refuses what it cannot fetch or read, naming the URL', async () => {
  const cases = [
    [`${origin}/missing.json`, /missing\.json: HTTP 404/],
    [`${origin}/notjson`, /notjson: not JSON/],
    [`${origin}/wrong`, /wrong: index version 9/],
    [`${origin}/declared-huge`, /larger than 33554432 bytes/],
    [`${origin}/streamed-huge`, /larger than 33554432 bytes/],
    ['http://127.0.0.1:1/quantweb-index.json', /127\.0\.0\.1:1\/quantweb-index\.json: network error/],
  ];
  for (const [url, message] of cases) {
    await assert.rejects(SiteIndex.load(url), (e) => e.name === 'IndexError' && message.test(e.message), url);
  }
});

test('load() passes an abort through', async () => {
  const controller = new AbortController();
  controller.abort();
  await assert.rejects(SiteIndex.load(`${origin}/site/quantweb-index.json`, { signal: controller.signal }), { name: 'AbortError' });
});
