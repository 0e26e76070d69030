// quantweb model cache in the Origin Private File System (OPFS).
//
// Layout: <OPFS>/quantweb-models/<key>/meta.json + part-000, part-001, … (one file per URL:
// a single file, each llama.cpp shard, or each raw byte chunk, in order).
//
// - An entry is found by its URL list (the key is a hash of it); meta.json records each part's
//   size and ETag (when the server exposes one). A complete entry is used without any network
//   request, so a cached model loads offline. A partial entry is resumed only if the server
//   still reports the same size and ETag (`If-Range` guards the resumed request too).
// - Downloads stream to disk (a sync access handle in a worker, a writable stream elsewhere),
//   so the model never sits in memory; parts download in parallel (3 at a time).
// - The storage quota is checked before any model byte is fetched; a quota exceeded anyway
//   while writing removes the partial entry, so no half-written model takes the space.
// - A server answering 500, 502, 503, 504 or 429 is tried again (Retry-After, else exponential
//   backoff), a few times, resuming from the bytes on disk; a server that sends nothing for
//   STALL_TIMEOUT_MS is given up with a NetworkError (the bytes so far are kept).
// - A resumed part is written only from a 206 whose Content-Range is the one asked for: a 200
//   with the same ETag (Range ignored) or a wrong Content-Range is an HttpError and stores
//   nothing; a 200 with another ETag or size (the file changed) restarts the part.
// - One download per model across tabs and workers: a Web Lock named after the cache key is held
//   while downloading; whoever waited for it then finds the model complete.
// - Cached parts come back as `File` objects (OPFS `getFile()`), read lazily by whoever takes
//   them (the engine slices them tensor by tensor).
//
// Used by worker.js (download, lookup) and by quantweb.js (list, remove); has no other imports.

const ROOT = 'quantweb-models';
const META = 'meta.json';
const META_VERSION = 1;
/** Parts downloaded at once. */
export const CONCURRENCY = 3;
/** Flush a sync access handle every this many bytes. */
const FLUSH_EVERY = 32 << 20;
/** A download that receives no byte for this long is given up (`download`'s `stallTimeout`). */
export const STALL_TIMEOUT_MS = 30_000;
/** Statuses that say "try again later": their requests are tried up to TRIES times. */
const TRANSIENT = new Set([500, 502, 503, 504, 429]);
const TRIES = 5;
/** The wait before the second try, doubled before each next one, unless Retry-After says. */
const BACKOFF_MS = 500;
/** A longer Retry-After is not waited for: the error says to try again later instead. */
const MAX_RETRY_AFTER_MS = 60_000;

const partName = (i) => `part-${String(i).padStart(3, '0')}`;

/** An Error with a name (messages say what happened and what to do). */
function named(name, message, extra) {
  const e = new Error(message);
  e.name = name;
  if (extra) Object.assign(e, extra);
  return e;
}

const fmtMB = (b) => `${(b / 1e6).toFixed(1)} MB`;

/** A short stable hash of a string (cyrb53), as 14 hex digits. */
function hash(str) {
  let h1 = 0xdeadbeef;
  let h2 = 0x41c6ce57;
  for (let i = 0; i < str.length; i++) {
    const ch = str.charCodeAt(i);
    h1 = Math.imul(h1 ^ ch, 2654435761);
    h2 = Math.imul(h2 ^ ch, 1597334677);
  }
  h1 = Math.imul(h1 ^ (h1 >>> 16), 2246822507) ^ Math.imul(h2 ^ (h2 >>> 13), 3266489909);
  h2 = Math.imul(h2 ^ (h2 >>> 16), 2246822507) ^ Math.imul(h1 ^ (h1 >>> 13), 3266489909);
  return (4294967296 * (2097151 & h2) + (h1 >>> 0)).toString(16).padStart(14, '0');
}

/** The cache key of a model given by these URLs (absolute, in order). */
export function cacheKey(urls) {
  return `m-${hash(urls.join('\n'))}`;
}

/**
 * All shard URLs from a llama.cpp first shard (`…-00001-of-00003.gguf`, query kept), or null.
 * Same rule as the crate's `gguf::shard_names`.
 */
export function shardUrls(first) {
  const cut = first.search(/[?#]/);
  const base = cut < 0 ? first : first.slice(0, cut);
  const query = cut < 0 ? '' : first.slice(cut);
  const m = /^(.*)-(\d{5})-of-(\d{5})\.gguf$/.exec(base);
  if (!m || m[2] !== '00001') return null;
  const n = Number(m[3]);
  if (n < 1) return null;
  return Array.from({ length: n }, (_, i) => `${m[1]}-${String(i + 1).padStart(5, '0')}-of-${m[3]}.gguf${query}`);
}

/** The cache's root directory; with `create` false, null when nothing was ever cached. */
async function rootDir(create = true, name = ROOT) {
  const storage = globalThis.navigator && navigator.storage;
  if (!storage || typeof storage.getDirectory !== 'function') {
    throw named('CacheUnavailableError', 'This browser offers no Origin Private File System (navigator.storage.getDirectory), so models cannot be cached: load with the cache turned off.');
  }
  let dir;
  try {
    dir = await storage.getDirectory();
  } catch (e) {
    throw named('CacheUnavailableError', `The browser refused its private file system (${e && e.message ? e.message : e}); in a private window storage may be off. Load with the cache turned off.`);
  }
  try {
    return await dir.getDirectoryHandle(name, { create });
  } catch (e) {
    if (!create && e && e.name === 'NotFoundError') return null;
    throw e;
  }
}

async function readMeta(dir) {
  try {
    const f = await (await dir.getFileHandle(META)).getFile();
    const meta = JSON.parse(await f.text());
    return meta && meta.version === META_VERSION ? meta : null;
  } catch {
    return null;
  }
}

async function writeMeta(dir, meta) {
  const fh = await dir.getFileHandle(META, { create: true });
  const w = await fh.createWritable();
  await w.write(JSON.stringify(meta));
  await w.close();
}

async function entryDir(key, create) {
  const root = await rootDir(create);
  if (!root) return null;
  try {
    return await root.getDirectoryHandle(key, { create });
  } catch (e) {
    if (e && e.name === 'NotFoundError') return null;
    throw e;
  }
}

/** Size of a part file on disk (0 when absent). */
async function partSize(dir, i) {
  try {
    return (await (await dir.getFileHandle(partName(i))).getFile()).size;
  } catch {
    return 0;
  }
}

async function partFiles(dir, n) {
  const files = [];
  for (let i = 0; i < n; i++) files.push(await (await dir.getFileHandle(partName(i))).getFile());
  return files;
}

/**
 * A complete cached copy of these URLs: `{key, files, meta}`, or null. Makes no network request.
 */
export async function lookup(urls) {
  const key = cacheKey(urls);
  const dir = await entryDir(key, false);
  if (!dir) return null;
  const meta = await readMeta(dir);
  if (!meta || !meta.complete || meta.parts.length !== urls.length || meta.parts.some((p, i) => p.url !== urls[i])) return null;
  let files;
  try {
    files = await partFiles(dir, urls.length);
  } catch {
    return null;
  }
  if (files.some((f, i) => f.size !== meta.parts[i].size)) return null;
  meta.lastUsed = Date.now();
  await writeMeta(dir, meta).catch(() => {});
  return { key, files, meta };
}

// ------------------------------------------------------------------ HTTP

function httpError(status, url, where) {
  const what = { 401: 'unauthorized', 403: 'forbidden', 404: 'not found', 410: 'gone', 416: 'range not satisfiable', 429: 'too many requests', 500: 'internal server error', 502: 'bad gateway', 503: 'service unavailable', 504: 'gateway timeout' }[status] || 'error';
  const later = TRANSIENT.has(status) ? '; the server still refused after being tried again: try again later (the bytes already downloaded are kept)' : '';
  return named('HttpError', `HTTP ${status} (${what}) for ${url}${where}${later}`, { status, url });
}

/** A Range request answered wrongly: nothing of the answer is stored. */
function rangeError(url, where, what, have) {
  return named('HttpError', `the server ${what} for ${url}${where}: it does not support Range requests properly, so the download cannot resume and nothing of that answer was stored. The ${fmtMB(have)} downloaded before are kept; if this persists, delete the partial copy (Engine.deleteCached) so that the model downloads whole.`, { url });
}

/** Milliseconds a Retry-After header asks for (seconds or an HTTP date), or null. */
function retryAfterMs(value) {
  if (value === null) return null;
  if (/^\s*\d+\s*$/.test(value)) return Number(value) * 1000;
  const at = Date.parse(value);
  return Number.isNaN(at) ? null : Math.max(0, at - Date.now());
}

function sleep(ms, signal) {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const t = setTimeout(resolve, ms);
    signal?.addEventListener('abort', () => {
      clearTimeout(t);
      reject(signal.reason);
    }, { once: true });
  });
}

/**
 * fetch(), tried again while the server answers with a transient status (TRANSIENT), up to
 * TRIES times: after its Retry-After, else after BACKOFF_MS doubling each time. The last
 * answer is returned whatever its status. `guard` (a stall guard) is armed for each try.
 */
async function fetchRetrying(url, init, where, signal, guard) {
  for (let tries = 1; ; tries++) {
    guard?.arm();
    let resp;
    try {
      resp = await fetch(url, init);
    } catch (e) {
      throw networkError(e, url, where);
    }
    if (!TRANSIENT.has(resp.status) || tries === TRIES) return resp;
    const wait = retryAfterMs(resp.headers.get('Retry-After')) ?? BACKOFF_MS * 2 ** (tries - 1);
    if (wait > MAX_RETRY_AFTER_MS) return resp;
    guard?.stop();
    await resp.body?.cancel().catch(() => {});
    await sleep(wait, signal);
  }
}

/**
 * Aborts a request that receives nothing for `ms`: `signal` goes to fetch, `arm()` (re)starts
 * the clock, `stalled` tells whether it fired.
 */
function stallGuard(ms) {
  const ctl = new AbortController();
  let timer;
  return {
    signal: ctl.signal,
    get stalled() {
      return ctl.signal.aborted;
    },
    arm() {
      clearTimeout(timer);
      timer = setTimeout(() => ctl.abort(named('TimeoutError', 'stalled')), ms);
    },
    stop() {
      clearTimeout(timer);
    },
  };
}

function networkError(e, url, where) {
  if (e && e.name === 'AbortError') return e;
  return named('NetworkError', `network error or CORS refusal fetching ${url}${where}: ${e && e.message ? e.message : e}. The server may be down, or may not allow this page to read it (CORS).`, { url });
}

function partLabel(i, n) {
  return n > 1 ? ` (part ${i + 1} of ${n})` : '';
}

/** Size and ETag of a URL from a 1-byte Range request (also tells whether Range works). */
async function probe(url, where, signal) {
  const resp = await fetchRetrying(url, { headers: { Range: 'bytes=0-0' }, cache: 'no-store', signal }, where, signal);
  const etag = resp.headers.get('ETag');
  if (resp.status === 206) {
    const m = /\/(\d+)\s*$/.exec(resp.headers.get('Content-Range') || '');
    await resp.body?.cancel().catch(() => {});
    if (!m) throw named('HttpError', `the server did not say the size of ${url}${where} (no readable Content-Range header; a cross-origin server must expose it)`, { url });
    return { size: Number(m[1]), etag, ranges: true };
  }
  await resp.body?.cancel().catch(() => {});
  if (resp.status === 200) {
    const len = resp.headers.get('Content-Length');
    if (len === null) throw named('HttpError', `the server did not say the size of ${url}${where} (no Content-Length)`, { url });
    return { size: Number(len), etag, ranges: false };
  }
  throw httpError(resp.status, url, where);
}

/** Writes at offsets into an OPFS file: a sync access handle in a worker, a writable elsewhere. */
async function openWriter(fileHandle) {
  if (typeof fileHandle.createSyncAccessHandle === 'function') {
    try {
      const h = await fileHandle.createSyncAccessHandle();
      let unflushed = 0;
      return {
        truncate: async (n) => h.truncate(n),
        write: async (chunk, at) => {
          const n = h.write(chunk, { at });
          if (n !== chunk.byteLength) throw new Error(`short write (${n} of ${chunk.byteLength} bytes)`);
          unflushed += n;
          if (unflushed >= FLUSH_EVERY) {
            h.flush();
            unflushed = 0;
          }
        },
        close: async () => {
          h.flush();
          h.close();
        },
      };
    } catch (e) {
      if (!(e && e.name === 'InvalidStateError')) throw e;
    }
  }
  const w = await fileHandle.createWritable({ keepExistingData: true });
  return {
    truncate: (n) => w.truncate(n),
    write: async (chunk, at) => {
      await w.write({ type: 'write', position: at, data: chunk });
    },
    close: () => w.close(),
  };
}

export function isQuotaError(e) {
  return e && (e.name === 'QuotaExceededError' || /quota/i.test(e.message || ''));
}

export function quotaError(needed, total, est, what = 'cache this model', advice = 'Delete cached models, free disk space, or load without the cache (it then streams from the server on every load).') {
  const free = Math.max(0, (est.quota || 0) - (est.usage || 0));
  return named(
    'QuotaExceededError',
    `Not enough browser storage to ${what}: it needs ${fmtMB(needed)} more (${fmtMB(total)} in all) but only ${fmtMB(free)} is free (quota ${fmtMB(est.quota || 0)}, used ${fmtMB(est.usage || 0)}). ${advice}`,
    { needed, free },
  );
}

/**
 * Downloads `urls` (absolute, in order) into the cache and returns `{key, files, meta, downloaded}`.
 * A complete entry is returned at once with no request. Otherwise: one 1-byte Range request per
 * part for its size and ETag, a quota check, then the missing bytes of each part (resumed with
 * `Range: bytes=N-` when a partial file is kept), CONCURRENCY parts at a time. While another tab
 * or worker downloads the same model, this waits for it and then returns its copy.
 *
 * `onProgress({loaded, total, part, parts})`: bytes on disk so far / in all (resumed bytes count
 * as loaded from the start).
 * `check(urls)`: awaited after the size probes and before anything is stored or downloaded (the
 * worker reads the model's header there, so an unrunnable model costs no download); what it
 * throws is thrown.
 * `stallTimeout`: milliseconds without a byte before a download is given up (STALL_TIMEOUT_MS).
 * Errors: HttpError (status in the message; also a server that answers Range requests wrongly),
 * NetworkError (network/CORS, download interrupted or stalled; the partial file is kept for the
 * next try), QuotaExceededError (a partial entry is removed), CacheUnavailableError, AbortError.
 */
export async function download(urls, options = {}) {
  const hit = await lookup(urls);
  if (hit) return { ...hit, downloaded: 0 };
  const locks = globalThis.navigator && navigator.locks;
  if (!locks) return fetchInto(urls, options);
  return locks.request(`quantweb-model-${cacheKey(urls)}`, { signal: options.signal }, async () => {
    const done = await lookup(urls);
    return done ? { ...done, downloaded: 0 } : fetchInto(urls, options);
  });
}

async function fetchInto(urls, { onProgress, signal, check, stallTimeout = STALL_TIMEOUT_MS }) {
  const key = cacheKey(urls);
  const n = urls.length;

  // Sizes and ETags, CONCURRENCY at a time.
  const heads = new Array(n);
  await pool(n, async (i) => {
    heads[i] = await probe(urls[i], partLabel(i, n), signal);
  });
  if (check) await check(urls);
  // Only now is the entry created: a model that failed the probes or the check leaves nothing.
  const dir = await entryDir(key, true);
  const old = await readMeta(dir);

  const parts = [];
  for (let i = 0; i < n; i++) {
    const prev = old && old.parts && old.parts[i];
    const same = prev && prev.url === urls[i] && prev.size === heads[i].size && (prev.etag || null) === (heads[i].etag || null);
    let have = same ? await partSize(dir, i) : 0;
    if (have > heads[i].size || (!heads[i].ranges && have < heads[i].size)) have = 0;
    parts.push({ url: urls[i], size: heads[i].size, etag: heads[i].etag || null, have });
  }
  let total = parts.reduce((s, p) => s + p.size, 0);
  const needed = parts.reduce((s, p) => s + (p.size - p.have), 0);
  if (navigator.storage && typeof navigator.storage.estimate === 'function') {
    const est = await navigator.storage.estimate();
    // The parts we keep already count in `usage`.
    if (needed > Math.max(0, (est.quota || 0) - (est.usage || 0))) throw quotaError(needed, total, est);
  }
  const meta = {
    version: META_VERSION,
    key,
    urls,
    name: decodeURIComponent(new URL(urls[0]).pathname.split('/').pop() || urls[0]),
    parts: parts.map(({ url, size, etag }) => ({ url, size, etag })),
    size: total,
    complete: false,
    created: (old && old.created) || Date.now(),
    lastUsed: Date.now(),
  };
  await writeMeta(dir, meta);

  // The first failing part stops the others (their bytes so far are kept).
  const stop = new AbortController();
  const fetchSignal = signal ? AbortSignal.any([signal, stop.signal]) : stop.signal;
  let loaded = parts.reduce((s, p) => s + p.have, 0);
  const resumedFrom = loaded;
  const report = (part) => onProgress && onProgress({ loaded, total, part, parts: n });
  report(0);

  try {
    await pool(n, async (i) => {
      const p = parts[i];
      const where = partLabel(i, n);
      const fh = await dir.getFileHandle(partName(i), { create: true });
      if (p.have === p.size) return;
      const headers = {};
      if (p.have > 0) {
        headers.Range = `bytes=${p.have}-`;
        if (p.etag && !p.etag.startsWith('W/')) headers['If-Range'] = p.etag;
      }
      const guard = stallGuard(stallTimeout);
      const stalled = (pos) => named('NetworkError', `the server stalled: no data for ${stallTimeout / 1000} s while downloading ${p.url}${where} (at ${pos} of ${p.size} bytes); the ${fmtMB(pos)} already downloaded are kept: try again to resume.`, { url: p.url, resumable: true });
      const init = { headers, cache: 'no-store', signal: AbortSignal.any([fetchSignal, guard.signal]) };
      let resp;
      try {
        resp = await fetchRetrying(p.url, init, where, fetchSignal, guard);
      } catch (e) {
        throw guard.stalled && !fetchSignal.aborted ? stalled(p.have) : e;
      }
      const etag = resp.headers.get('ETag');
      const length = Number(resp.headers.get('Content-Length'));
      let pos;
      if (p.have > 0 && resp.status === 206) {
        const range = resp.headers.get('Content-Range');
        const m = /^bytes (\d+)-(\d+)\/(\d+)$/.exec((range || '').trim());
        if (!m || Number(m[1]) !== p.have || Number(m[2]) !== p.size - 1 || Number(m[3]) !== p.size) {
          guard.stop();
          await resp.body?.cancel().catch(() => {});
          throw rangeError(p.url, where, `answered a request for bytes ${p.have}- with Content-Range ${range}`, p.have);
        }
        pos = p.have;
      } else if (resp.status === 200) {
        const changed = (etag && etag !== p.etag) || (resp.headers.has('Content-Length') && length !== p.size);
        if (p.have > 0 && !changed) {
          guard.stop();
          await resp.body?.cancel().catch(() => {});
          throw rangeError(p.url, where, `answered a request for bytes ${p.have}- with the whole file (HTTP 200)`, p.have);
        }
        if (changed) {
          // The file changed since it was probed: this part starts over with its new size and ETag.
          if (resp.headers.has('Content-Length')) {
            total += length - p.size;
            p.size = length;
          }
          p.etag = etag;
          meta.parts[i] = { url: p.url, size: p.size, etag: p.etag };
          meta.size = total;
          await writeMeta(dir, meta);
        }
        loaded -= p.have;
        p.have = 0;
        pos = 0;
      } else {
        guard.stop();
        await resp.body?.cancel().catch(() => {});
        throw httpError(resp.status, p.url, where);
      }
      const writer = await openWriter(fh);
      try {
        await writer.truncate(pos);
        const reader = resp.body.getReader();
        for (;;) {
          let r;
          try {
            guard.arm();
            r = await reader.read();
          } catch (e) {
            if (guard.stalled && !fetchSignal.aborted) throw stalled(pos);
            if (e && e.name === 'AbortError') throw e;
            throw named('NetworkError', `download of ${p.url}${where} was interrupted at ${pos} of ${p.size} bytes (${e && e.message ? e.message : e}); the ${fmtMB(pos)} already downloaded are kept: try again to resume.`, { url: p.url, resumable: true });
          }
          if (r.done) break;
          if (pos + r.value.byteLength > p.size) throw named('HttpError', `${p.url}${where} is longer than the ${p.size} bytes the server announced`);
          await writer.write(r.value, pos);
          pos += r.value.byteLength;
          loaded += r.value.byteLength;
          report(i);
        }
      } catch (e) {
        if (isQuotaError(e)) throw named('QuotaExceededError', e.message, { midWrite: true });
        throw e;
      } finally {
        guard.stop();
        await writer.close().catch(() => {});
      }
      if (pos !== p.size) {
        throw named('NetworkError', `download of ${p.url}${where} ended at ${pos} of ${p.size} bytes; the part already downloaded is kept: try again to resume.`, { url: p.url, resumable: true });
      }
      p.have = pos;
    }, signal, stop);
  } catch (e) {
    if (!(e && e.midWrite)) throw e;
    // Storage ran out while writing: a partial entry would hold space the user needs back.
    const freed = await remove(key).catch(() => false);
    const est = await navigator.storage.estimate().catch(() => ({}));
    throw quotaError(total, total, est, 'cache this model', `${freed ? 'The partial download was removed. ' : ''}Delete cached models, free disk space, or load without the cache (it then streams from the server on every load).`);
  }

  meta.complete = true;
  meta.lastUsed = Date.now();
  await writeMeta(dir, meta);
  return { key, files: await partFiles(dir, n), meta, downloaded: loaded - resumedFrom, resumedFrom };
}

/** Runs job(0..n-1), CONCURRENCY at a time; the first failure stops new jobs and is thrown. */
async function pool(n, job, signal, stop) {
  let next = 0;
  let failed = null;
  const worker = async () => {
    while (!failed && next < n) {
      if (signal && signal.aborted) throw signal.reason ?? named('AbortError', 'aborted');
      const i = next++;
      try {
        await job(i);
      } catch (e) {
        if (!failed) {
          failed = e;
          if (stop) stop.abort();
        }
        throw e;
      }
    }
  };
  const runs = Array.from({ length: Math.min(CONCURRENCY, n) }, worker);
  const results = await Promise.allSettled(runs);
  if (failed) throw failed;
  const bad = results.find((r) => r.status === 'rejected');
  if (bad) throw bad.reason;
}

/**
 * Cached models: `[{key, name, urls, size, storedBytes, complete, etags, created, lastUsed}]`,
 * most recently used first. Makes no network request.
 */
export async function list() {
  // Reading creates nothing: a page that only lists the cache leaves storage untouched.
  const root = await rootDir(false);
  const out = [];
  if (!root) return out;
  for await (const [key, handle] of root.entries()) {
    if (handle.kind !== 'directory') continue;
    const meta = await readMeta(handle);
    let stored = 0;
    const n = meta ? meta.parts.length : 0;
    for (let i = 0; i < n; i++) stored += await partSize(handle, i);
    out.push({
      key,
      name: meta ? meta.name : '(unreadable entry)',
      urls: meta ? meta.urls : [],
      size: meta ? meta.size : 0,
      storedBytes: stored,
      complete: Boolean(meta && meta.complete),
      etags: meta ? meta.parts.map((p) => p.etag) : [],
      created: meta ? meta.created : 0,
      lastUsed: meta ? meta.lastUsed : 0,
    });
  }
  out.sort((a, b) => b.lastUsed - a.lastUsed);
  return out;
}

/** Deletes one cached model (complete or partial). Resolves to true if it existed. */
export async function remove(key) {
  if (typeof key !== 'string' || !/^m-[0-9a-f]{14}$/.test(key)) throw named('TypeError', `not a cache key: ${key}`);
  const root = await rootDir(false);
  if (!root) return false;
  try {
    await root.removeEntry(key, { recursive: true });
    return true;
  } catch (e) {
    if (e && e.name === 'NotFoundError') return false;
    if (e && e.name === 'NoModificationAllowedError') throw named('CacheBusyError', 'this model is being downloaded or read right now; try again when it is done');
    throw e;
  }
}

// ---------------------------------------------------------------- models quantized here
//
// <OPFS>/quantweb-quantized/<name>.gguf: the outputs of quantweb.js `quantize` (written by the
// worker through a sync access handle), kept until deleted.

const QUANTIZED = 'quantweb-quantized';

/** A file name for a quantized model: letters, digits, `._-` only, ending in `.gguf`. */
export function quantizedName(name) {
  const base = String(name || 'model').replace(/\.gguf$/i, '').replace(/[^A-Za-z0-9._-]+/g, '_').slice(0, 120) || 'model';
  return `${base}.gguf`;
}

/** The folder of quantized models (created on demand). */
export async function quantizedDir() {
  return rootDir(true, QUANTIZED);
}

/** Models quantized in this browser: `[{name, size, lastModified, file}]`, newest first. */
export async function listQuantized() {
  const dir = await rootDir(false, QUANTIZED);
  const out = [];
  if (!dir) return out;
  for await (const [name, handle] of dir.entries()) {
    if (handle.kind !== 'file') continue;
    const file = await handle.getFile();
    out.push({ name, size: file.size, lastModified: file.lastModified, file });
  }
  out.sort((a, b) => b.lastModified - a.lastModified);
  return out;
}

/** Deletes one quantized model. Resolves to true if it existed. */
export async function removeQuantized(name) {
  const dir = await rootDir(false, QUANTIZED);
  if (!dir) return false;
  try {
    await dir.removeEntry(quantizedName(name));
    return true;
  } catch (e) {
    if (e && e.name === 'NotFoundError') return false;
    throw e;
  }
}
