// Lexical retrieval for the docs-site chat widget: BM25 over the index that `quantweb index`
// writes (crate/src/site_index.rs), to find the sections an answer is grounded in.
//
// The index comes from a URL, so it is untrusted input: its size is bounded, every field's type
// is checked, postings outside the sections are ignored, and the links it yields are http(s) only.

/** Words too common to tell sections apart; crate/src/site_index.rs has the same list. */
const STOPWORDS = new Set([
  'a', 'an', 'and', 'are', 'as', 'at', 'be', 'by', 'for', 'from', 'has', 'have', 'how', 'i', 'in',
  'is', 'it', 'its', 'of', 'on', 'or', 'that', 'the', 'this', 'to', 'was', 'what', 'when',
  'where', 'which', 'who', 'why', 'will', 'with', 'you', 'your',
]);

// Rust's char::is_alphanumeric is Unicode Alphabetic or general category N. \p{L} would not be
// the same: it leaves out the vowel signs of Indic scripts, which Alphabetic includes.
const TOKEN = /[\p{Alphabetic}\p{N}]+/gu;
const NUMBER = /^\p{N}$/u;

/** The largest index `load` reads: a big documentation site's is a few MiB. */
export const MAX_INDEX_BYTES = 32 * 1024 * 1024;

const K1 = 1.2;
const B = 0.75;

/**
 * Tokenizer v1, the same as the index's: lowercase, maximal runs of letters and numbers,
 * without one-character tokens other than numbers, without stopwords.
 * @param {string} text
 * @returns {string[]}
 */
export function tokenize(text) {
  const tokens = [];
  for (const [t] of String(text).toLowerCase().matchAll(TOKEN)) {
    const keep = [...t].length === 1 ? NUMBER.test(t) : !STOPWORDS.has(t);
    if (keep) tokens.push(t);
  }
  return tokens;
}

/** An index that cannot be fetched or read; the message names its URL and what is wrong. */
export class IndexError extends Error {
  constructor(message, options) {
    super(message, options);
    this.name = 'IndexError';
  }
}

export class SiteIndex {
  /**
   * Fetches and checks an index.
   * @param {string | URL} url relative to the page
   * @param {{signal?: AbortSignal}} [options]
   * @returns {Promise<SiteIndex>}
   */
  static async load(url, { signal } = {}) {
    const indexUrl = new URL(url, globalThis.location?.href).href;
    const text = await fetchText(indexUrl, signal);
    let obj;
    try {
      obj = JSON.parse(text);
    } catch (e) {
      throw new IndexError(`${indexUrl}: not JSON (${e.message})`, { cause: e });
    }
    return SiteIndex.fromJSON(obj, indexUrl);
  }

  /**
   * Checks a parsed index.
   * @param {unknown} obj
   * @param {string | URL} indexUrl the index's absolute URL, which a null `base` is relative to
   * @returns {SiteIndex}
   */
  static fromJSON(obj, indexUrl) {
    const fail = (what) => new IndexError(`${indexUrl}: ${what}`);
    if (!isObject(obj) || obj.format !== 'quantweb-index') {
      throw fail('not a quantweb index (its "format" is not "quantweb-index")');
    }
    if (obj.version !== 1) {
      throw fail(`index version ${JSON.stringify(obj.version)} is not supported (only 1): run a matching quantweb index`);
    }
    if (obj.base != null && typeof obj.base !== 'string') throw fail('"base" is not a string or null');
    let baseUrl;
    try {
      baseUrl = new URL(obj.base ?? './', indexUrl);
    } catch (e) {
      throw new IndexError(`${indexUrl}: base ${JSON.stringify(obj.base)} is not a URL`, { cause: e });
    }
    if (!isWeb(baseUrl)) throw fail(`base links to ${baseUrl.protocol} (only http and https)`);
    const { sections, lengths, postings } = obj;
    if (!Array.isArray(sections)) throw fail('"sections" is not a list');
    if (!Array.isArray(lengths) || lengths.length !== sections.length) {
      throw fail('"lengths" is not a list as long as "sections"');
    }
    if (!isObject(postings)) throw fail('"postings" is not an object');

    const hrefs = [];
    const checked = sections.map((s, i) => {
      const fields = ['url', 'anchor', 'title', 'heading', 'text'];
      if (!isObject(s) || fields.some((f) => typeof s[f] !== 'string')) {
        throw fail(`sections[${i}] is not {url, anchor, title, heading, text} of strings`);
      }
      const href = new URL(s.url, baseUrl);
      if (!isWeb(href)) {
        throw fail(`sections[${i}] links to ${href.protocol} (only http and https)`);
      }
      href.hash = s.anchor;
      hrefs.push(href.href);
      return Object.freeze({ url: s.url, anchor: s.anchor, title: s.title, heading: s.heading, text: s.text });
    });
    lengths.forEach((n, i) => {
      if (!Number.isInteger(n) || n < 0) throw fail(`lengths[${i}] is not a token count`);
    });

    const n = sections.length;
    const terms = new Map();
    for (const [term, list] of Object.entries(postings)) {
      if (!Array.isArray(list)) throw fail(`postings[${JSON.stringify(term)}] is not a list`);
      const pairs = [];
      // Pairs out of order, outside the sections or with no occurrences are the index's
      // corruption: dropped, so that they cannot count twice or point nowhere.
      for (let k = 0; k + 1 < list.length; k += 2) {
        const [s, tf] = [list[k], list[k + 1]];
        const last = pairs.length ? pairs[pairs.length - 2] : -1;
        if (Number.isInteger(s) && s > last && s < n && Number.isInteger(tf) && tf > 0) pairs.push(s, tf);
      }
      if (pairs.length) terms.set(term, Uint32Array.from(pairs));
    }
    return new SiteIndex(checked, hrefs, Float64Array.from(lengths), terms);
  }

  /** Use `load` or `fromJSON`, which check the index. */
  constructor(sections, hrefs, lengths, postings) {
    this.sections = sections;
    this.hrefs = hrefs;
    this.lengths = lengths;
    this.postings = postings;
    const total = lengths.reduce((a, b) => a + b, 0);
    this.avgLength = total > 0 ? total / lengths.length : 1;
  }

  /**
   * The sections that best match a query by BM25, best first (ties in index order).
   * @param {string} query
   * @param {{limit?: number}} [options]
   * @returns {{section: {url: string, anchor: string, title: string, heading: string, text: string}, score: number, href: string}[]}
   */
  search(query, { limit = 8 } = {}) {
    const n = this.sections.length;
    const scores = new Float64Array(n);
    for (const term of new Set(tokenize(query))) {
      const pairs = this.postings.get(term);
      if (!pairs) continue;
      const df = pairs.length / 2;
      const idf = Math.log(1 + (n - df + 0.5) / (df + 0.5));
      for (let k = 0; k < pairs.length; k += 2) {
        const [s, tf] = [pairs[k], pairs[k + 1]];
        const norm = K1 * (1 - B + (B * this.lengths[s]) / this.avgLength);
        scores[s] += (idf * tf * (K1 + 1)) / (tf + norm);
      }
    }
    const hits = [];
    scores.forEach((score, i) => {
      if (score > 0) hits.push(i);
    });
    hits.sort((a, b) => scores[b] - scores[a] || a - b);
    return hits.slice(0, Math.max(0, Math.floor(limit))).map((i) => ({
      section: this.sections[i],
      score: scores[i],
      href: this.hrefs[i],
    }));
  }
}

/** Links the widget shows must not run script (javascript:) or carry a document (data:). */
function isWeb(url) {
  return url.protocol === 'http:' || url.protocol === 'https:';
}

function isObject(v) {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** The body of `url` as text, at most MAX_INDEX_BYTES of it. */
async function fetchText(url, signal) {
  const network = (e) =>
    new IndexError(`${url}: network error: ${e.message} (offline, blocked by CORS, or the server is unreachable)`, { cause: e });
  let response;
  try {
    response = await fetch(url, { signal });
  } catch (e) {
    if (e?.name === 'AbortError') throw e;
    throw network(e);
  }
  if (!response.ok) throw new IndexError(`${url}: HTTP ${response.status}${response.status === 404 ? ' (no index there: run quantweb index on the site and publish its output)' : ''}`);
  const tooLarge = new IndexError(`${url}: the index is larger than ${MAX_INDEX_BYTES} bytes; refusing to read it`);
  if (Number(response.headers.get('content-length')) > MAX_INDEX_BYTES) throw tooLarge;
  // Content-Length is that of the compressed body, or absent: the bound is on what arrives.
  const reader = response.body?.getReader();
  const chunks = [];
  let size = 0;
  try {
    for (let r = await reader?.read(); r && !r.done; r = await reader.read()) {
      size += r.value.byteLength;
      if (size > MAX_INDEX_BYTES) {
        reader.cancel().catch(() => {});
        throw tooLarge;
      }
      chunks.push(r.value);
    }
  } catch (e) {
    if (e === tooLarge || e?.name === 'AbortError') throw e;
    throw network(e);
  }
  const bytes = new Uint8Array(size);
  let offset = 0;
  for (const chunk of chunks) {
    bytes.set(chunk, offset);
    offset += chunk.byteLength;
  }
  return new TextDecoder().decode(bytes);
}
