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

/**
 * `inspect`, but rejecting a model the engine cannot run with the error `Engine.load` would give
 * (UnsupportedModelError, InvalidModelError, ChatTemplateError, …): from the header alone, so a
 * page can say so before anything is downloaded.
 */
export async function checkRunnable(source) {
  await ready();
  return wasm.checkRunnable(source);
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
    wgslLanguageFeatures: [...(navigator.gpu.wgslLanguageFeatures ?? [])].sort(),
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

/** Whether an adapter is a software one (SwiftShader, llvmpipe, WARP): `auto` then runs on the CPU. */
export function isSoftwareAdapter(device) {
  return Boolean(device.isFallbackAdapter) || /swiftshader|llvmpipe|lavapipe|warp|software/i.test(`${device.architecture} ${device.description} ${device.device}`);
}

/** GPU memory assumed when nothing better is known: browsers do not expose it. */
const ASSUMED_GPU_BYTES = 4 * 2 ** 30;

/**
 * The calculator's verdict for this browser, from a model's header alone (what `inspect`
 * returned): the engine `Engine.load` with backend 'auto' would pick, the memory the model
 * needs at `contextLength`, and fits / tight / does_not_fit with the reasons. The GPU's memory
 * is not exposed to pages, so the GPU verdict assumes the device memory the browser reports
 * (`navigator.deviceMemory`, shared on integrated GPUs) or 4 GiB, and says so.
 */
export async function fitForThisDevice(info, { contextLength } = {}) {
  const qw = await ready();
  const [device, storage] = await Promise.all([deviceInfo(), storageEstimate()]);
  const est = qw.estimateMemory(info, contextLength ? { contextLength } : {});
  const ram = typeof navigator !== 'undefined' && navigator.deviceMemory ? navigator.deviceMemory * 2 ** 30 : undefined;
  const engine = device.available && !isSoftwareAdapter(device) ? 'webgpu' : 'cpu';
  const query = { totalBytes: est.total_bytes, largestTensor: est.largest_tensor, downloadBytes: info.file_bytes };
  let verdict;
  if (engine === 'webgpu') {
    const gpu = ram ?? ASSUMED_GPU_BYTES;
    verdict = qw.judgeFit({ ...query, device: deviceBudget(gpu, device, storage) });
    verdict.reasons.push(`GPU memory assumed to be ${(gpu / 2 ** 30).toFixed(0)} GiB: browsers do not report it`);
  } else {
    verdict = qw.judgeFit({ ...query, device: deviceBudget(0, device, storage), engine: 'cpu', deviceMemoryBytes: ram });
  }
  return { engine, level: verdict.level, reasons: verdict.reasons, totalBytes: est.total_bytes, downloadBytes: info.file_bytes, contextLength: est.context_length };
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
  if (e && e.param) err.param = e.param;
  if (e && e.keywords) err.keywords = e.keywords;
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
    else if (m.type === 'token') p.onToken?.(m.piece, m.token, m.logprob);
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

const finishReason = (r) => (r === 'length' || r === 'tool_calls' ? r : 'stop');

/** OpenAI's usage with its cached-prompt detail, and WebLLM's `extra` figures from the timings. */
function chatUsage(res, startedMs) {
  const t = res.timings; // null when the request was aborted before generation began
  return {
    ...res.usage,
    prompt_tokens_details: { cached_tokens: res.cached_tokens },
    extra: {
      e2e_latency_s: (performance.now() - startedMs) / 1000,
      prefill_tokens_per_s: t ? t.prefill_tok_s : 0,
      decode_tokens_per_s: t ? t.decode_tok_s : 0,
      time_to_first_token_s: t ? t.prefill_ms / 1000 : 0,
      time_per_output_token_s: t && t.decode_steps ? t.decode_ms / 1000 / t.decode_steps : 0,
    },
  };
}

/** A request field this engine does not implement: refused by name, never silently ignored. */
function unsupported(param, reason) {
  const e = new Error(`${param}: ${reason}`);
  e.name = 'UnsupportedOptionError';
  e.param = param;
  return e;
}

const absent = (v) => v === undefined || v === null;

/** A request's options that the engine takes (engine.rs `RequestOptions`, which refuses others). */
const SAMPLING_KEYS = ['max_tokens', 'temperature', 'top_k', 'top_p', 'min_p', 'repeat_penalty', 'seed', 'stop', 'logprobs', 'top_logprobs', 'response_format'];
/** A chat's tools go to the template and the engine; a raw completion has no template to show them. */
const CHAT_KEYS = [...SAMPLING_KEYS, 'tools', 'tool_choice', 'parallel_tool_calls'];
/** Fields of a chat request that the engine reads (the options go to it as they are). */
const CHAT_FIELDS = new Set([...CHAT_KEYS, 'messages', 'stream', 'stream_options', 'signal', 'max_completion_tokens']);
/** OpenAI fields about its service, not the answer: accepted with no effect (see quantweb.d.ts). */
const NO_EFFECT_FIELDS = new Set(['model', 'user', 'metadata', 'service_tier', 'prediction']);
const FUNCTIONS = "OpenAI's deprecated function calling: use tools and tool_choice";
const PENALTY = "use repeat_penalty (llama.cpp's, over the last 64 tokens)";
/**
 * The rest of OpenAI's and WebLLM's request fields: [does the value equal the default, so that
 * ignoring it changes nothing; why another value is refused].
 */
const REFUSED_FIELDS = {
  n: [(v) => v === 1, 'one choice per request'],
  frequency_penalty: [(v) => v === 0, PENALTY],
  presence_penalty: [(v) => v === 0, PENALTY],
  repetition_penalty: [(v) => v === 1, PENALTY],
  logit_bias: [(v) => typeof v === 'object' && Object.keys(v).length === 0, 'not implemented'],
  functions: [(v) => Array.isArray(v) && v.length === 0, FUNCTIONS],
  function_call: [(v) => v === 'none', FUNCTIONS],
  audio: [() => false, 'text output only'],
  modalities: [(v) => Array.isArray(v) && v.every((m) => m === 'text'), 'text output only'],
  store: [(v) => v === false, 'nothing is stored: the model runs in this browser'],
  reasoning_effort: [() => false, 'not supported'],
  web_search_options: [() => false, 'no web search here'],
  ignore_eos: [(v) => v === false, 'not implemented'],
};

/** Throws UnsupportedOptionError for the first field of `req` the engine would not honour. */
function checkChatRequest(req) {
  for (const [k, v] of Object.entries(req)) {
    if (absent(v) || CHAT_FIELDS.has(k) || NO_EFFECT_FIELDS.has(k)) continue;
    if (k === 'extra_body') {
      for (const [x, xv] of Object.entries(v)) {
        if (!absent(xv)) throw unsupported(`extra_body.${x}`, "WebLLM's extra_body options are not supported");
      }
      continue;
    }
    const rule = REFUSED_FIELDS[k];
    if (!rule) throw unsupported(k, 'not an option of chat.completions.create (its options are listed in quantweb.d.ts)');
    // Scalars are shown; a tools list or a schema would drown the reason.
    if (!rule[0](v)) throw unsupported(k, `${typeof v === 'object' ? '' : `${JSON.stringify(v)} is `}not supported: ${rule[1]}`);
  }
  if (req.response_format?.type === 'structural_tag') {
    throw unsupported('response_format.type', "WebLLM's structural tags are not supported: use json_schema, or a grammar");
  }
  const so = req.stream_options;
  if (!absent(so)) {
    // As OpenAI's API and WebLLM: a non-streamed answer has no chunks to add usage to.
    if (!req.stream) throw unsupported('stream_options', 'only for stream: true');
    for (const [k, v] of Object.entries(so)) {
      if (k !== 'include_usage' && !absent(v)) throw unsupported(`stream_options.${k}`, 'not supported (only include_usage)');
    }
  }
}

const MESSAGE_FIELD_REASONS = {
  name: 'participant names are not passed to the chat template',
  function_call: FUNCTIONS,
  audio: 'text only',
};

/**
 * `[{role, content, tool_calls?, tool_call_id?}]` for the chat template, from OpenAI- or
 * WebLLM-shaped messages; throws UnsupportedOptionError for what the template would not see.
 */
function templateMessages(messages) {
  return messages.map((m, i) => {
    const at = `messages[${i}]`;
    if (m.role === 'function') throw unsupported(`${at}.role`, `'function' messages are not supported: ${FUNCTIONS}`);
    const out = {};
    for (const [k, v] of Object.entries(m)) {
      if (absent(v) || k === 'role' || k === 'content' || k === 'refusal') continue;
      if (k === 'tool_calls' && Array.isArray(v)) {
        if (v.length) out.tool_calls = v.map((c) => ({ id: c?.id, type: c?.type ?? 'function', function: { name: c?.function?.name, arguments: c?.function?.arguments } }));
        continue;
      }
      if (k === 'tool_call_id' && m.role === 'tool') {
        out.tool_call_id = String(v);
        continue;
      }
      throw unsupported(`${at}.${k}`, `not supported: ${MESSAGE_FIELD_REASONS[k] || 'not a message field'}`);
    }
    const parts = typeof m.content === 'string' ? [m.content] : absent(m.content) ? [] : Array.from(m.content, (p, j) => {
      if (p.type === 'text') return p.text;
      // What the assistant said, as its text.
      if (p.type === 'refusal') return p.refusal;
      throw unsupported(`${at}.content[${j}]`, `${JSON.stringify(p.type)} parts are not supported: the engine runs text-only models`);
    });
    // `developer` is OpenAI's newer name for `system`, which is the one chat templates know.
    return { role: m.role === 'developer' ? 'system' : String(m.role), content: parts.join('') + (m.refusal ?? ''), ...out };
  });
}

/** The answer's message: with calls, `content` is the text before them, or null without any. */
function answerMessage(res) {
  if (!res.tool_calls) return { role: 'assistant', content: res.text, refusal: null };
  return { role: 'assistant', content: res.text || null, refusal: null, tool_calls: res.tool_calls };
}

/** `choices[i].logprobs` in OpenAI's shape, from the engine's entries (absent without `logprobs`). */
function choiceLogprobs(entries) {
  return entries ? { content: entries, refusal: null } : null;
}

/** Sampling options in the engine's snake_case names (`keys`: which the request may set). */
function samplingOptions(req, keys = SAMPLING_KEYS) {
  const out = {};
  for (const k of keys) {
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

/**
 * `quantweb compare` in the browser: how far each candidate (a quantization of the same model)
 * is from `base`, as llama-perplexity's KL-divergence statistics, over the same windows of
 * `text` (default: the built-in CC0 text). Sources are what `Engine.load` takes. All models are
 * loaded at once in one worker (the base's distributions are streamed, never stored whole); a
 * candidate that cannot load is returned with its `error` instead of a report. Options: `ctx`
 * (tokens per window, default 512), `chunks` (at most this many windows), `onProgress` (load
 * events with `model`: 0 for the base, i for candidate i; then `{phase: 'compare', chunk,
 * chunks, windowEnd, reports}` after every batch of scored positions), `signal`, `backend`,
 * `threads`, `cache` (as `Engine.load`). See quantweb.d.ts `Comparison`.
 */
export async function compare(base, candidates, { text, ctx = 512, chunks, onProgress, signal, backend = 'auto', threads, cache = true } = {}) {
  if (!Array.isArray(candidates) || candidates.length === 0) throw new TypeError('compare needs at least one candidate');
  if (!(Number.isInteger(ctx) && ctx >= 4)) throw new TypeError(`ctx must be a whole number of tokens from 4, not ${JSON.stringify(ctx)}`);
  if (chunks !== undefined && !(Number.isInteger(chunks) && chunks >= 1)) throw new TypeError(`chunks must be a whole number from 1, not ${JSON.stringify(chunks)}`);
  if (text !== undefined && typeof text !== 'string') throw new TypeError('text must be a string');
  const b = normalizeSource(base);
  const cs = candidates.map(normalizeSource);
  if (signal?.aborted) throw abortError(signal);
  const link = new WorkerLink();
  try {
    const r = await link.request('compare', { base: b, candidates: cs, text, ctx, chunks, cache: Boolean(cache), backend, threads }, { onProgress, signal });
    const loaded = new Map(r.models.map((m) => [m.index, m.info]));
    const failed = new Map(r.failed.map((f) => [f.index, f.error]));
    let next = 0;
    return {
      ctx: r.ctx,
      chunks: r.chunks,
      tokens: r.tokens,
      base: { name: sourceStem(b), fileBytes: r.base.file_bytes, totalBytes: r.base.total_bytes, info: loaded.get(0) },
      candidates: cs.map((src, k) => {
        const i = k + 1;
        if (failed.has(i)) return { name: sourceStem(src), error: rebuildError(failed.get(i)) };
        const j = next++;
        return { name: sourceStem(src), fileBytes: r.sizes[j].file_bytes, totalBytes: r.sizes[j].total_bytes, info: loaded.get(i), report: r.reports[j] };
      }),
    };
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
 * A model loaded on WebGPU or the CPU engine, in its own worker. Create with `Engine.load`. Requests run one at a
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
   * on every load), `signal` (aborting stops the load and its worker; downloaded bytes are kept),
   * `backend` ('auto' by default, 'webgpu' or 'cpu'), `threads`, `relaxedSimd` and
   * `chatTemplate` (a Jinja template used instead of the model's; see quantweb.d.ts).
   */
  static async load(source, { onProgress, contextLength, cache = true, signal, backend = 'auto', threads, relaxedSimd = true, chatTemplate } = {}) {
    if (!['auto', 'webgpu', 'cpu'].includes(backend)) {
      throw new TypeError(`backend must be 'auto', 'webgpu' or 'cpu', not ${JSON.stringify(backend)}`);
    }
    if (threads !== undefined && !(Number.isInteger(threads) && threads >= 1)) {
      throw new TypeError(`threads must be a whole number from 1, not ${JSON.stringify(threads)}`);
    }
    if (typeof relaxedSimd !== 'boolean') throw new TypeError(`relaxedSimd must be true or false, not ${JSON.stringify(relaxedSimd)}`);
    if (chatTemplate !== undefined && typeof chatTemplate !== 'string') throw new TypeError('chatTemplate must be a Jinja template string');
    if (backend === 'webgpu' && (typeof navigator === 'undefined' || !navigator.gpu)) throw noWebGpuError();
    const src = normalizeSource(source);
    if (signal?.aborted) throw abortError(signal);
    const link = new WorkerLink();
    let onAbort = null;
    try {
      const loading = link.request('load', { source: src, contextLength, cache: Boolean(cache), backend, threads, relaxedSimd, chatTemplate }, { onProgress });
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

  /**
   * The complete cached entry of a model URL (a lone first shard stands for all its shards), or
   * null. Makes no network request: a page can tell whether loading will download.
   */
  static async cachedEntry(url) {
    const abs = normalizeSource(String(url));
    const urls = modelCache.shardUrls(abs) || [abs];
    const entries = await modelCache.list();
    return entries.find((c) => c.complete && c.urls.length === urls.length && c.urls.every((u, i) => u === urls[i])) || null;
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
        create(req, options) {
          return self._chat(req, options);
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

  async _chat(req, requestOptions) {
    if (!req || !Array.isArray(req.messages)) throw new TypeError('chat.completions.create needs {messages: [{role, content}, …]}');
    checkChatRequest(req);
    for (const [k, v] of Object.entries(requestOptions ?? {})) {
      if (k !== 'signal' && !absent(v)) throw unsupported(`options.${k}`, 'not supported (only signal)');
    }
    const signals = [req.signal, requestOptions?.signal].filter(Boolean);
    const signal = signals.length > 1 ? AbortSignal.any(signals) : signals[0];
    if (signal?.aborted) throw abortError(signal);
    const messages = templateMessages(req.messages);
    const options = samplingOptions(req, CHAT_KEYS);
    const id = completionId('chatcmpl');
    const startedMs = performance.now();
    const created = Math.floor(Date.now() / 1000);
    const model = this.model;
    if (!req.stream) {
      const res = await this._req('chat', { messages, options, stream: false }, { signal });
      return {
        id,
        object: 'chat.completion',
        created,
        model,
        choices: [{ index: 0, message: answerMessage(res), finish_reason: finishReason(res.finish_reason), logprobs: choiceLogprobs(res.logprobs) }],
        usage: chatUsage(res, startedMs),
        timings: res.timings,
        aborted: res.finish_reason === 'abort',
      };
    }
    const local = new AbortController();
    const both = signal ? AbortSignal.any([signal, local.signal]) : local.signal;
    const ch = channel(() => local.abort());
    const chunk = (choices, extra) => ({ id, object: 'chat.completion.chunk', created, model, choices, ...extra });
    const choice = (delta, finish, logprobs = null) => [{ index: 0, delta, finish_reason: finish, logprobs }];
    // A token's entry goes out with the chunk of the text it completes (text held back while a
    // UTF-8 sequence or a possible stop string is incomplete comes with a later token).
    let pending = [];
    const take = () => {
      const content = pending;
      pending = [];
      return options.logprobs ? choiceLogprobs(content) : null;
    };
    ch.push(chunk(choice({ role: 'assistant', content: '' }, null)));
    let streamed = 0;
    this._req('chat', { messages, options, stream: true }, {
      signal: both,
      onToken: (piece, token, logprob) => {
        if (logprob) pending.push(logprob);
        if (piece) {
          streamed += piece.length;
          ch.push(chunk(choice({ content: piece }, null, take())));
        }
      },
    }).then(
      (res) => {
        // Text held back while it might have been a tool call, and was not one.
        if (res.text.length > streamed) ch.push(chunk(choice({ content: res.text.slice(streamed) }, null)));
        (res.tool_calls || []).forEach((c, index) => ch.push(chunk(choice({ tool_calls: [{ index, ...c }] }, null))));
        const usage = chatUsage(res, startedMs);
        ch.push(chunk(choice({}, finishReason(res.finish_reason), take()), { usage, timings: res.timings, aborted: res.finish_reason === 'abort' }));
        if (req.stream_options?.include_usage) ch.push(chunk([], { usage }));
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
