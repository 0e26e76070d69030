// quantweb: the public ES module.
//
// Everything runs in the browser. `inspect()` reads only a model's GGUF header (HTTP Range
// requests for URLs, local slices for Files): nothing is uploaded anywhere.
//
// The wasm module is initialized once, lazily, on the first call that needs it. All exported
// functions that need it are async. If you want the calculator functions synchronously (for
// instance to update figures on every slider move), `await ready()` once: it resolves to an
// object with synchronous `estimateMemory`, `judgeFit` and `ruleOfThumb`.
//
//   import { inspect, ready, deviceInfo } from './quantweb.js';
//   const info = await inspect('/models/SmolLM2-135M-Instruct.Q4_1.gguf');
//   const qw = await ready();
//   const est = qw.estimateMemory(info, { contextLength: 8192, kvType: 'q8_0' });
//
// Types: see quantweb.d.ts next to this file.

import init, * as wasm from './pkg/quantweb.js';

let initPromise = null;

/** The synchronous calculator functions, usable once the wasm module is initialized. */
const sync = Object.freeze({
  estimateMemory: (info, options) => wasm.estimateMemory(info, options ?? {}),
  judgeFit: (query) => wasm.judgeFit(query),
  ruleOfThumb: (params) => wasm.ruleOfThumb(String(params)),
});

/**
 * Initializes the wasm module (once; later calls return the same promise). Resolves to the
 * synchronous calculator functions. A failed initialization can be retried.
 */
export function ready() {
  if (!initPromise) {
    const url = new URL('./pkg/quantweb_bg.wasm', import.meta.url);
    initPromise = init({ module_or_path: url }).then(
      () => sync,
      (e) => {
        initPromise = null;
        throw new Error(`quantweb: could not load its WebAssembly module (${url}): ${e && e.message ? e.message : e}`);
      },
    );
  }
  return initPromise;
}

/**
 * Reads a model's header and describes it (what `quantweb inspect --json` prints).
 * `source`: a URL string, a Blob/File, or an array of them (llama.cpp shards, or byte chunks of
 * one file, in order). Rejects with an Error whose message says what went wrong (HTTP 404, a
 * network/CORS failure, not a GGUF file, …).
 */
export async function inspect(source) {
  await ready();
  return wasm.inspect(source);
}

/** GPU memory a model needs for a context (what `quantweb fit --json` prints). */
export async function estimateMemory(info, options) {
  return (await ready()).estimateMemory(info, options);
}

/** fits / tight / does_not_fit, with the reasons, for one total on one device. */
export async function judgeFit(query) {
  return (await ready()).judgeFit(query);
}

/** The quick rule (params × bytes per weight × 1.2) for a typed parameter count such as "8B". */
export async function ruleOfThumb(params) {
  return (await ready()).ruleOfThumb(params);
}

const LIMIT_NAMES = [
  'maxStorageBufferBindingSize',
  'maxBufferSize',
  'maxUniformBufferBindingSize',
  'maxComputeWorkgroupStorageSize',
  'maxComputeInvocationsPerWorkgroup',
  'maxComputeWorkgroupSizeX',
  'maxComputeWorkgroupSizeY',
  'maxComputeWorkgroupSizeZ',
  'maxComputeWorkgroupsPerDimension',
  'maxStorageBuffersPerShaderStage',
  'maxBindGroups',
  'minStorageBufferOffsetAlignment',
  'minUniformBufferOffsetAlignment',
];

/**
 * The WebGPU adapter this browser would use: its info, limits and features, or
 * `{available: false, reason}` when WebGPU is missing or no adapter is offered. Requests the
 * adapter only (no device), so it costs nothing.
 */
export async function deviceInfo() {
  const gpu = typeof navigator !== 'undefined' ? navigator.gpu : undefined;
  if (!gpu) {
    const secure = typeof isSecureContext === 'undefined' || isSecureContext;
    return {
      available: false,
      reason: secure
        ? 'This browser does not offer WebGPU (navigator.gpu is missing). Try a recent Chrome or Edge, or Firefox/Safari with WebGPU enabled.'
        : 'WebGPU needs a secure context: open this page over https:// or from localhost.',
    };
  }
  let adapter;
  try {
    adapter = await gpu.requestAdapter();
  } catch (e) {
    return { available: false, reason: `requesting a WebGPU adapter failed: ${e && e.message ? e.message : e}` };
  }
  if (!adapter) {
    return {
      available: false,
      reason: 'WebGPU is present but offered no adapter: the GPU or its driver may be blocklisted, or hardware acceleration is off.',
    };
  }
  let info = adapter.info;
  if (!info && typeof adapter.requestAdapterInfo === 'function') {
    try {
      info = await adapter.requestAdapterInfo();
    } catch {
      info = undefined;
    }
  }
  info = info || {};
  const limits = {};
  for (const name of LIMIT_NAMES) {
    const v = adapter.limits[name];
    if (typeof v === 'number') limits[name] = v;
  }
  // Any other limit this browser knows about (WebIDL attributes are enumerable).
  for (const name in adapter.limits) {
    const v = adapter.limits[name];
    if (typeof v === 'number' && !(name in limits)) limits[name] = v;
  }
  const features = [...adapter.features].sort();
  return {
    available: true,
    vendor: info.vendor || '',
    architecture: info.architecture || '',
    device: info.device || '',
    description: info.description || '',
    isFallbackAdapter: Boolean(info.isFallbackAdapter ?? adapter.isFallbackAdapter ?? false),
    shaderF16: adapter.features.has('shader-f16'),
    features,
    limits,
  };
}

/**
 * Browser storage for the offline model cache: `{available: true, quota, usage, free}` in bytes
 * (free = quota − usage), or `{available: false, reason}`.
 */
export async function storageEstimate() {
  const storage = typeof navigator !== 'undefined' ? navigator.storage : undefined;
  if (!storage || typeof storage.estimate !== 'function') {
    return { available: false, reason: 'This browser does not expose navigator.storage.estimate() (or the page is not in a secure context).' };
  }
  try {
    const e = await storage.estimate();
    const quota = Number(e.quota ?? 0);
    const usage = Number(e.usage ?? 0);
    return { available: true, quota, usage, free: Math.max(0, quota - usage) };
  } catch (e) {
    return { available: false, reason: `navigator.storage.estimate() failed: ${e && e.message ? e.message : e}` };
  }
}

/**
 * The `device` object `judgeFit` wants, from a GPU memory size the user typed (bytes) and what
 * `deviceInfo()` / `storageEstimate()` returned (either may be omitted or unavailable).
 */
export function deviceBudget(gpuMemoryBytes, device, storage) {
  const lim = device && device.available ? device.limits : null;
  const int = (v) => (typeof v === 'number' && Number.isFinite(v) ? Math.floor(v) : null);
  return {
    gpuMemoryBytes: Math.max(0, Math.floor(gpuMemoryBytes)),
    maxStorageBufferBindingSize: lim ? int(lim.maxStorageBufferBindingSize) : null,
    maxBufferSize: lim ? int(lim.maxBufferSize) : null,
    storageAvailableBytes: storage && storage.available ? int(storage.free) : null,
  };
}

// ================================================================ the engine (in a worker)
//
//   import { Engine } from './quantweb.js';
//   const engine = await Engine.load('/models/SmolLM2-135M-Instruct.Q4_1.gguf', {
//     onProgress: (p) => console.log(p.phase, p.loaded, p.total, p.bytesPerSec, p.etaSec),
//   });
//   const stream = await engine.chat.completions.create({
//     messages: [{ role: 'user', content: 'Hi!' }], stream: true, max_tokens: 64,
//   });
//   for await (const chunk of stream) out.textContent += chunk.choices[0]?.delta?.content ?? '';
//
// The model runs in a module worker (worker.js) on WebGPU; these methods proxy to it. URLs are
// downloaded into the browser's private file system (cache.js) unless `cache: false`; Files and
// Blobs are read locally and never touch the network or the cache.

import * as modelCache from './cache.js';

let nextRequestId = 1;

function rebuildError(e) {
  const err = new Error(e && e.message ? e.message : String(e));
  if (e && e.name) err.name = e.name;
  if (e && e.resumable) err.resumable = true;
  return err;
}

function abortError(signal) {
  const r = signal && signal.reason;
  if (r instanceof Error) return r;
  const e = new Error('the operation was aborted');
  e.name = 'AbortError';
  return e;
}

/** Absolute URLs (resolved against the page) for strings; Blobs pass through. */
function normalizeSource(source) {
  const one = (s) => {
    if (typeof s === 'string') return new URL(s, globalThis.location ? location.href : undefined).href;
    if (s instanceof URL) return s.href;
    if (typeof Blob !== 'undefined' && s instanceof Blob) return s;
    throw new TypeError('a model source is a URL string, a File/Blob, or an array of them');
  };
  if (Array.isArray(source)) {
    if (source.length === 0) throw new TypeError('the model source array is empty');
    return source.map(one);
  }
  return one(source);
}

function noWebGpuError() {
  const secure = typeof isSecureContext === 'undefined' || isSecureContext;
  const e = new Error(
    secure
      ? 'This browser does not offer WebGPU (navigator.gpu is missing), so quantweb cannot run a model here. Use a recent Chrome or Edge (113+), or a browser with WebGPU enabled.'
      : 'WebGPU needs a secure context: open this page over https:// or from localhost.',
  );
  e.name = 'NoWebGPUError';
  return e;
}

/** One worker and its pending requests. */
class WorkerLink {
  constructor() {
    this.worker = new Worker(new URL('./worker.js', import.meta.url), { type: 'module', name: 'quantweb-engine' });
    this.pending = new Map();
    this.dead = null;
    this.worker.onmessage = (e) => this.onMessage(e.data);
    this.worker.onerror = (e) => {
      e.preventDefault?.();
      this.fail(new Error(`the quantweb worker failed: ${e.message || 'it could not start (see the console)'}`));
    };
    this.worker.onmessageerror = () => this.fail(new Error('the quantweb worker sent an unreadable message'));
  }

  onMessage(m) {
    const p = this.pending.get(m.id);
    if (!p) return;
    if (m.type === 'progress') p.onProgress?.(m);
    else if (m.type === 'token') p.onToken?.(m.piece, m.token);
    else {
      this.pending.delete(m.id);
      if (m.type === 'result') p.resolve(m.value);
      else p.reject(rebuildError(m.error));
    }
  }

  fail(err) {
    this.dead = err;
    for (const p of this.pending.values()) p.reject(err);
    this.pending.clear();
  }

  /** Sends a request; `signal` aborts it in the worker (the promise still settles from there). */
  request(type, body = {}, { onProgress, onToken, signal } = {}) {
    if (this.dead) return Promise.reject(this.dead);
    const id = nextRequestId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject, onProgress, onToken });
      this.worker.postMessage({ id, type, ...body });
      if (signal) {
        const onAbort = () => this.worker.postMessage({ type: 'abort', target: id });
        if (signal.aborted) onAbort();
        else signal.addEventListener('abort', onAbort, { once: true });
      }
    });
  }

  terminate(err) {
    this.worker.terminate();
    this.fail(err || new Error('the engine was unloaded'));
  }
}

let completionSeq = 0;
const completionId = (prefix) => `${prefix}-${Date.now().toString(36)}${(completionSeq++).toString(36)}`;

const finishReason = (r) => (r === 'length' ? 'length' : 'stop');

function usageOf(res) {
  return res.usage || { prompt_tokens: res.prompt_tokens.length, completion_tokens: res.tokens.length, total_tokens: res.prompt_tokens.length + res.tokens.length };
}

/** Sampling options in the engine's snake_case names. */
function samplingOptions(req) {
  const out = {};
  for (const k of ['max_tokens', 'temperature', 'top_k', 'top_p', 'min_p', 'repeat_penalty', 'seed', 'stop']) {
    if (req[k] !== undefined && req[k] !== null) out[k] = req[k];
  }
  if (out.max_tokens === undefined && req.max_completion_tokens != null) out.max_tokens = req.max_completion_tokens;
  if (typeof out.stop === 'string') out.stop = [out.stop];
  return out;
}

/** An async iterable fed by push(); `onReturn` runs when the consumer stops early. */
function channel(onReturn) {
  const items = [];
  let waiting = null;
  let done = false;
  let error = null;
  const wake = () => {
    if (waiting) {
      const w = waiting;
      waiting = null;
      w();
    }
  };
  return {
    push(v) {
      items.push(v);
      wake();
    },
    end(err) {
      done = true;
      error = err || null;
      wake();
    },
    iterable: {
      [Symbol.asyncIterator]() {
        return {
          async next() {
            for (;;) {
              if (items.length) return { value: items.shift(), done: false };
              if (error) {
                const e = error;
                error = null;
                throw e;
              }
              if (done) return { value: undefined, done: true };
              await new Promise((r) => (waiting = r));
            }
          },
          async return() {
            if (!done) onReturn();
            done = true;
            items.length = 0;
            return { value: undefined, done: true };
          },
        };
      },
    },
  };
}

/** "…/Model-F16.gguf" or a File named so → "Model-F16"; shards lose their "-00001-of-0000N". */
function sourceStem(src) {
  const first = Array.isArray(src) ? src[0] : src;
  const raw = typeof first === 'string' ? decodeURIComponent(new URL(first).pathname.split('/').pop() || '') : first.name || '';
  return raw.replace(/\.gguf$/i, '').replace(/-\d{5}-of-\d{5}$/, '') || 'model';
}

/**
 * `quantweb quantize` in the browser: converts a model (URL, File/Blob, or shards/chunks, as
 * `Engine.load` takes) to `type` (F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K…Q6_K,
 * IQ4_NL, IQ4_XS) with the same bytes as the CLI and llama.cpp's quantizer, in a worker, into
 * the browser's private storage. Already quantized sources need `allowRequantize: true`.
 * Needs no GPU. Resolves to `{name, file, type, outBytes, tensors, converted, requantized,
 * fallbacks}`; `file` loads with `Engine.load(file)` or saves with a download link.
 * `onProgress({phase: 'quantize', loaded, total, tensor, bytesPerSec, etaSec})` counts output
 * bytes; `signal` aborts between tensors (nothing is kept).
 */
export async function quantize(source, { type, allowRequantize = false, name, onProgress, signal } = {}) {
  if (typeof type !== 'string' || !type) throw new TypeError('quantize needs a target type, e.g. { type: "Q4_K" }');
  const src = normalizeSource(source);
  if (signal?.aborted) throw abortError(signal);
  const link = new WorkerLink();
  try {
    return await link.request('quantize', { source: src, target: type, allowRequantize: Boolean(allowRequantize), name: name || `${sourceStem(src)}-${type}` }, { onProgress, signal });
  } finally {
    link.terminate();
  }
}

/** Models quantized in this browser, newest first: `[{name, size, lastModified, file}]`. */
export function quantizedModels() {
  return modelCache.listQuantized();
}

/** Deletes a model quantized in this browser; true if it existed. */
export function deleteQuantized(name) {
  return modelCache.removeQuantized(name);
}

/**
 * A model loaded on the GPU, in its own worker. Create with `Engine.load`. Requests run one at a
 * time, in order.
 */
export class Engine {
  /**
   * Loads a model. `source`: a URL, a File/Blob, or an array (llama.cpp shards, or byte chunks
   * of one file, in order); a lone first shard URL (`…-00001-of-0000N.gguf`) brings the others.
   * Options: `onProgress({phase: 'download'|'upload', loaded, total, bytesPerSec, etaSec, …})`,
   * `contextLength` (default: the engine's, 4096 or the trained context if smaller), `cache`
   * (default true: URLs are downloaded into the browser's private storage once, resumably, and
   * later loads make no request; false: the weights stream from the server with Range requests
   * on every load), `signal` (aborting stops the load and its worker; downloaded bytes are kept).
   */
  static async load(source, { onProgress, contextLength, cache = true, signal } = {}) {
    if (typeof navigator === 'undefined' || !navigator.gpu) throw noWebGpuError();
    const src = normalizeSource(source);
    if (signal?.aborted) throw abortError(signal);
    const link = new WorkerLink();
    let onAbort = null;
    try {
      const loading = link.request('load', { source: src, contextLength, cache: Boolean(cache) }, { onProgress });
      const aborted = new Promise((_, reject) => {
        if (!signal) return;
        onAbort = () => reject(abortError(signal));
        signal.addEventListener('abort', onAbort, { once: true });
      });
      const info = await Promise.race([loading, aborted]);
      return new Engine(link, info);
    } catch (e) {
      link.terminate(e);
      throw e;
    } finally {
      if (onAbort) signal.removeEventListener('abort', onAbort);
    }
  }

  /** Cached models (no network): `[{key, name, urls, size, storedBytes, complete, …}]`. */
  static cached() {
    return modelCache.list();
  }

  /** Deletes a cached model by its `key` (from `Engine.cached()`); true if it existed. */
  static deleteCached(key) {
    return modelCache.remove(key);
  }

  constructor(link, info) {
    this._link = link;
    /** What the engine reported at load (see quantweb.d.ts `EngineInfo`). */
    this.info = info;
    this.model = info.name || (Array.isArray(info.urls) ? info.urls[0] : '') || info.architecture;
    const self = this;
    this.chat = {
      completions: {
        create(req) {
          return self._chat(req);
        },
      },
    };
  }

  _req(type, body, extra) {
    if (!this._link) return Promise.reject(Object.assign(new Error('the engine was unloaded'), { name: 'NotLoadedError' }));
    return this._link.request(type, body, extra);
  }

  /** Refreshes and returns `info` (memory figures change as the KV cache fills). */
  async refreshInfo() {
    const info = await this._req('info');
    if (info) this.info = info;
    return this.info;
  }

  /**
   * Raw completion: the prompt is tokenized as plain text (special-token text is not parsed),
   * with BOS when the model adds one. Resolves `{text, tokens, prompt_tokens, finish_reason,
   * aborted, usage, timings, cached_tokens}`. Aborting via `signal` stops after the current token
   * and resolves with what was generated (`aborted: true`).
   */
  async complete(req) {
    if (!req || typeof req !== 'object') throw new TypeError('complete({prompt, ...}) takes an object');
    const { prompt, tokens, signal, onToken } = req;
    if (signal?.aborted) throw abortError(signal);
    const body = { options: samplingOptions(req), stream: Boolean(onToken) };
    if (tokens) body.tokens = Array.from(tokens);
    else body.prompt = String(prompt ?? '');
    const res = await this._req('complete', body, { signal, onToken });
    return { ...res, aborted: res.finish_reason === 'abort' };
  }

  async _chat(req) {
    if (!req || !Array.isArray(req.messages)) throw new TypeError('chat.completions.create needs {messages: [{role, content}, …]}');
    const { signal } = req;
    if (signal?.aborted) throw abortError(signal);
    const messages = req.messages.map((m) => ({ role: String(m.role), content: typeof m.content === 'string' ? m.content : Array.isArray(m.content) ? m.content.map((p) => p.text ?? '').join('') : String(m.content ?? '') }));
    const options = samplingOptions(req);
    const id = completionId('chatcmpl');
    const created = Math.floor(Date.now() / 1000);
    const model = this.model;
    if (!req.stream) {
      const res = await this._req('chat', { messages, options, stream: false }, { signal });
      return {
        id,
        object: 'chat.completion',
        created,
        model,
        choices: [{ index: 0, message: { role: 'assistant', content: res.text }, finish_reason: finishReason(res.finish_reason), logprobs: null }],
        usage: usageOf(res),
        timings: res.timings,
        aborted: res.finish_reason === 'abort',
      };
    }
    const local = new AbortController();
    const both = signal ? AbortSignal.any([signal, local.signal]) : local.signal;
    const ch = channel(() => local.abort());
    const chunk = (delta, finish, extra) => ({ id, object: 'chat.completion.chunk', created, model, choices: [{ index: 0, delta, finish_reason: finish, logprobs: null }], ...extra });
    ch.push(chunk({ role: 'assistant', content: '' }, null));
    this._req('chat', { messages, options, stream: true }, {
      signal: both,
      onToken: (piece) => {
        if (piece) ch.push(chunk({ content: piece }, null));
      },
    }).then(
      (res) => {
        ch.push(chunk({}, finishReason(res.finish_reason), { usage: usageOf(res), timings: res.timings, aborted: res.finish_reason === 'abort' }));
        ch.end();
      },
      (err) => ch.end(err),
    );
    return ch.iterable;
  }

  /** Token ids of `text` (no BOS); `parseSpecial` turns special-token text into its ids. */
  tokenize(text, { parseSpecial = false } = {}) {
    return this._req('tokenize', { text, parseSpecial });
  }

  /** Text of token ids. */
  detokenize(ids) {
    return this._req('detokenize', { ids: Array.from(ids) });
  }

  /** Forgets the KV cache (the next request evaluates its whole prompt). */
  reset() {
    return this._req('reset');
  }

  /** Frees the GPU memory and stops the worker. The engine cannot be used afterwards. */
  async unload() {
    const link = this._link;
    if (!link) return;
    this._link = null;
    try {
      await link.request('unload');
    } catch {
      // the worker is going away anyway
    }
    link.terminate();
  }
}
