// quantweb engine worker (a module worker started by quantweb.js's Engine): owns one WasmEngine,
// the model cache downloads, and generation. Nothing here touches the page.
//
// Protocol. Requests (page → worker) are `{id, type, ...}`; every request gets exactly one
// `{id, type: 'result', value}` or `{id, type: 'error', error: {name, message}}`, and before that
// possibly `{id, type: 'progress', ...}` (load) or `{id, type: 'token', piece, token, logprob}`
// (stream; `logprob` with the `logprobs` option).
//
//   load        {source, contextLength, cache, backend, threads, chatTemplate}  → info (see Engine.info in quantweb.d.ts)
//   complete    {prompt | tokens, options, stream} → the WasmEngine.complete result
//   chat        {messages, options, stream}    → same; the prompt is the model's chat template
//   tokenize    {text, parseSpecial}           → number[]
//   detokenize  {ids}                          → string
//   info | reset | unload
//   cache-list | cache-delete {key}
//   compare     {base, candidates, text, ctx, chunks, cache, backend, threads} → {ctx, chunks,
//               tokens, stopped, base, sizes, reports, models, failed} (see compareModels;
//               abortable; frees the chat engine)
//   quantize    {source, target, allowRequantize, name} → {type, tensors, converted, requantized,
//               fallbacks, outBytes, name, file}: the model converted into OPFS (progress phase
//               "quantize"; abortable)
//   abort       {target}: stop request `target` (a generation stops after its current token;
//               a download stops now; the WasmEngine stays usable). Gets no answer itself.
//
// Engine calls run one at a time, in arrival order (the WasmEngine is not re-entrant); `abort`
// is handled at once, between tokens, because the engine awaits every GPU readback.

import * as cache from './cache.js';

/**
 * The builds of the module: 'single' (www/pkg, stable Rust, one thread) and 'threads'
 * (www/pkg-threads, wasm atomics on shared memory, a pinned nightly; ARCHITECTURE.md, "The CPU
 * engine"), each also with relaxed SIMD (www/pkg-relaxed, www/pkg-threads-relaxed). The threaded
 * one needs SharedArrayBuffer, so a cross-origin isolated page, and is only used for a CPU engine
 * with more than one thread. Directory → promise of
 * {kind, dir, lib (the JS bindings), exports, helpers (Workers)}.
 */
const builds = new Map();
/**
 * Whether this browser runs relaxed SIMD: a module using `i32x4.relaxed_dot_i8x16_i7x16_add_s`
 * (the CPU engine's integer dot product) validates. Chrome 114+ and Edge do; where it does not,
 * the plain simd128 builds run.
 */
const RELAXED_SIMD = WebAssembly.validate(new Uint8Array([
  0, 97, 115, 109, 1, 0, 0, 0, // magic, version
  1, 5, 1, 96, 0, 1, 123, // one type: [] → [v128]
  3, 2, 1, 0, // one function of it
  10, 19, 1, 17, 0, // its code, no locals:
  65, 1, 253, 15, 65, 1, 253, 15, 65, 1, 253, 15, // three i8x16.splat(i32.const 1)
  253, 147, 2, 11, // i32x4.relaxed_dot_i8x16_i7x16_add_s, end
]));
let current = null; // the build the loaded engine (or the last one) runs in
let engine = null;
let engineInfo = null;
let queue = Promise.resolve();
/** Request id → {aborted, controller?} for the requests that can be aborted. */
const live = new Map();

const post = (m) => self.postMessage(m);

function errorOut(e) {
  if (e && typeof e === 'object' && 'message' in e) {
    // The engine's errors arrive as plain Errors; a lost GPU device gets its own name.
    const name = /GPU device was lost/.test(e.message) ? 'DeviceLostError' : e.name || 'Error';
    return {
      name,
      message: String(e.message),
      resumable: Boolean(e.resumable),
      ...(typeof e.param === 'string' ? { param: e.param } : {}),
      ...(Array.isArray(e.keywords) ? { keywords: e.keywords.map(String) } : {}),
    };
  }
  return { name: 'Error', message: String(e) };
}

/** The build of `kind` ('single' or 'threads'), with relaxed SIMD unless `relaxed` is false. */
function ready(kind = current ? current.kind : 'single', relaxed = current ? current.relaxed : RELAXED_SIMD) {
  const dir = `./pkg${kind === 'threads' ? '-threads' : ''}${relaxed ? '-relaxed' : ''}/`;
  if (!builds.has(dir)) {
    const loading = (async () => {
      const lib = await import(`${dir}quantweb.js`);
      // Compiled here, not by the bindings, so that the helpers can instantiate the same module.
      const module = await WebAssembly.compileStreaming(fetch(new URL(`${dir}quantweb_bg.wasm`, import.meta.url)));
      const exports = await lib.default({ module_or_path: module });
      return { kind, relaxed, dir, lib, module, exports, helpers: [] };
    })().catch((e) => {
      builds.delete(dir);
      throw new Error(`quantweb: could not load its WebAssembly module (${kind === 'threads' ? 'threaded' : 'single-threaded'} build${relaxed ? ', relaxed SIMD' : ''}): ${e && e.message ? e.message : e}`);
    });
    builds.set(dir, loading);
  }
  return builds.get(dir);
}

/**
 * Starts helper workers in the threaded build until it has `n`; resolves once each has joined
 * the engine's pool (cpu-helper.js). They stay for later loads.
 */
async function startHelpers(build, n) {
  const starting = [];
  while (build.helpers.length < n) {
    const w = new Worker(new URL('./cpu-helper.js', import.meta.url), { type: 'module', name: `quantweb-cpu-${build.helpers.length + 1}` });
    build.helpers.push(w);
    starting.push(
      new Promise((resolve, reject) => {
        // One that failed never joined the pool: drop it, so that a later load starts another.
        const fail = (why) => {
          w.terminate();
          build.helpers = build.helpers.filter((h) => h !== w);
          reject(new Error(`a CPU helper worker failed to start: ${why}`));
        };
        w.onmessage = ({ data }) => (data.error ? fail(data.error) : resolve());
        w.onerror = (e) => fail(e.message || 'no message');
      }),
    );
    w.postMessage({ dir: build.dir, module: build.module, memory: build.exports.memory });
  }
  await Promise.all(starting);
}

/** Whether `backend` will put the engine on the CPU: mirrors wasm/engine.rs's choice for 'auto'. */
async function picksCpu(backend) {
  if (backend !== 'auto') return backend === 'cpu';
  const gpu = self.navigator && navigator.gpu;
  if (!gpu) return true;
  const adapter = await gpu.requestAdapter().catch(() => null);
  if (!adapter) return true;
  const info = adapter.info || {};
  return Boolean(info.isFallbackAdapter) || /swiftshader/i.test(`${info.architecture} ${info.description}`);
}

/** Threads when the page gives none: the cores, at most 4 (more rarely pays on a small model). */
const defaultThreads = () => (self.crossOriginIsolated ? Math.max(1, Math.min(4, navigator.hardwareConcurrency || 1)) : 1);

/** Bytes of wasm linear memory right now (it only grows, so this is also the peak). */
async function wasmMemoryBytes() {
  const { exports } = await ready();
  return exports && exports.memory ? exports.memory.buffer.byteLength : 0;
}

/** Throughput and ETA over the last few seconds of one phase. */
class Meter {
  constructor(phase, post) {
    this.phase = phase;
    this.post = post;
    this.t0 = performance.now();
    this.samples = []; // [time, loaded]
    this.lastPost = 0;
  }
  update(loaded, total, extra, force) {
    const now = performance.now();
    this.samples.push([now, loaded]);
    while (this.samples.length > 2 && now - this.samples[0][0] > 3000) this.samples.shift();
    if (!force && now - this.lastPost < 100 && loaded < total) return;
    this.lastPost = now;
    const [t1, l1] = this.samples[0];
    const bytesPerSec = now - t1 > 50 ? ((loaded - l1) * 1000) / (now - t1) : 0;
    const etaSec = bytesPerSec > 0 ? Math.max(0, (total - loaded) / bytesPerSec) : null;
    this.post({ phase: this.phase, loaded, total, bytesPerSec, etaSec, elapsedMs: now - this.t0, ...extra });
  }
}

const hasUrls = (list) => list.every((s) => typeof s === 'string');

async function load(id, msg) {
  if (msg.backend === 'webgpu' && (!self.navigator || !navigator.gpu)) {
    throw Object.assign(new Error('This browser does not offer WebGPU in workers (navigator.gpu is missing), so the WebGPU engine cannot run here. Load with backend "auto" or "cpu" to run on the CPU.'), { name: 'NoWebGPUError' });
  }
  if (live.get(id)?.aborted) throw Object.assign(new Error('the load was aborted'), { name: 'AbortError' });
  const state = { aborted: false, controller: new AbortController() };
  live.set(id, state);
  try {
    const run = await buildFor(msg.backend ?? 'auto', msg.threads, msg.relaxedSimd ?? RELAXED_SIMD);
    freeEngine();
    current = run.build;
    const opened = await openEngine(state, run, msg, (p) => post({ id, type: 'progress', ...p }));
    if (msg.chatTemplate !== undefined) {
      try {
        opened.eng.setChatTemplate(msg.chatTemplate);
      } catch (e) {
        opened.eng.free();
        throw e;
      }
      opened.info.chatTemplate = 'custom';
    }
    engine = opened.eng;
    engineInfo = opened.info;
    return engineInfo;
  } finally {
    live.delete(id);
  }
}

/**
 * The build and threads a load runs with. Without cross-origin isolation there is no shared
 * memory: one thread, whatever was asked. `relaxed`: relaxed SIMD where the browser has it.
 */
async function buildFor(backend, threads, relaxed) {
  const cpu = await picksCpu(backend);
  const n = cpu && self.crossOriginIsolated ? threads ?? defaultThreads() : 1;
  const build = await ready(n > 1 ? 'threads' : 'single', relaxed && RELAXED_SIMD);
  if (n > 1) await startHelpers(build, n - 1);
  return { build, threads: n };
}

function freeEngine() {
  if (engine) engine.free();
  engine = null;
  engineInfo = null;
}

/**
 * Downloads a model into the cache (or finds it there) and loads it; the caller owns the
 * WasmEngine. Progress events: download, upload, compile.
 */
async function openEngine(state, { build, threads }, { source, contextLength, cache: useCache = true, backend = 'auto' }, progress) {
  const { WasmEngine, checkRunnable } = build.lib;
  const t0 = performance.now();
  const list = Array.isArray(source) ? source : [source];
  if (list.length === 0) throw new TypeError('no model source given');
  let loadSource = source;
  let from = 'local';
  let cacheKey = null;
  let cacheUnavailable = null;
  let downloaded = 0;
  if (hasUrls(list)) {
    from = 'network';
    if (useCache) {
      const urls = list.length === 1 ? cache.shardUrls(list[0]) || list : list;
      const meter = new Meter('download', progress);
      try {
        const got = await cache.download(urls, {
          signal: state.controller.signal,
          check: (urls) => checkRunnable(urls),
          onProgress: ({ loaded, total, part, parts }) => meter.update(loaded, total, { part, parts }),
        });
        from = got.downloaded > 0 ? 'network' : 'cache';
        downloaded = got.downloaded;
        cacheKey = got.key;
        loadSource = got.files.length === 1 ? got.files[0] : got.files;
      } catch (e) {
        // No private file system (some private windows): stream with Range requests, as with
        // `cache: false`, and say so in the info.
        if (!(e && e.name === 'CacheUnavailableError')) throw e;
        cacheUnavailable = e.message;
      }
    }
  } else if (!list.every((s) => s instanceof Blob)) {
    throw new TypeError('a model source is a URL string, a File/Blob, or an array of them');
  }
  const tUpload = performance.now();
  const meters = {}; // 'upload' (tensor bytes), then 'compile' (0 of 1, then 1 of 1)
  // The CPU engine computes without awaiting anything: it yields a macrotask between forward
  // passes so that an abort message gets in (postTask is not clamped like a nested setTimeout).
  const yieldToEvents = () => new Promise((resolve) => (self.scheduler?.postTask ? self.scheduler.postTask(resolve) : setTimeout(resolve, 0)));
  const options = { backend, yieldToEvents, ...(contextLength ? { contextLength } : {}), threads };
  const eng = await WasmEngine.load(loadSource, options, (p) => {
    meters[p.phase] ??= new Meter(p.phase, progress);
    meters[p.phase].update(p.loaded, p.total, { tensor: p.tensor }, p.phase === 'compile');
  });
  const tDone = performance.now();
  const info = {
    ...eng.info(),
    source: from,
    cacheKey,
    cacheUnavailable,
    downloadedBytes: downloaded,
    loadMs: tDone - t0,
    downloadMs: tUpload - t0,
    uploadMs: tDone - tUpload,
    wasmMemoryBytes: await wasmMemoryBytes(),
  };
  return { eng, info };
}

/**
 * `quantweb compare` in the page: loads the base and every candidate (all at once: the base's
 * distributions are never stored whole, see compare.rs), then compares them. The chat engine,
 * if any, is freed first. A candidate that cannot load (too large, unsupported) is reported in
 * `failed` and left out; the base must load. Progress: the loads' events with `model` (0 = base),
 * then `{phase: 'compare', chunk, chunks, windowEnd, reports}`.
 */
async function compareModels(id, { base, candidates, text, ctx = 512, chunks, cache: useCache, backend, threads }) {
  if (live.get(id)?.aborted) throw Object.assign(new Error('the comparison was aborted'), { name: 'AbortError' });
  const state = { aborted: false, controller: new AbortController() };
  live.set(id, state);
  const opened = [];
  let consumed = false;
  try {
    // One build for all: compare() takes engines of one module instance.
    const run = await buildFor(backend ?? 'auto', threads);
    freeEngine();
    current = run.build;
    const failed = [];
    const sources = [base, ...candidates];
    for (let i = 0; i < sources.length; i++) {
      try {
        const o = await openEngine(state, run, { source: sources[i], contextLength: ctx, cache: useCache, backend }, (p) => post({ id, type: 'progress', model: i, ...p }));
        opened.push({ index: i, ...o });
      } catch (e) {
        if (i === 0 || state.aborted || e?.name === 'AbortError') throw e;
        failed.push({ index: i, error: errorOut(e) });
      }
    }
    const [b, ...cs] = opened;
    consumed = true; // compare() takes the candidates' engines and frees them
    const result = await b.eng.compare(
      cs.map((c) => c.eng),
      typeof text === 'string' ? text : undefined,
      { ctx, ...(chunks ? { chunks } : {}) },
      (p) => {
        post({ id, type: 'progress', ...p });
        return !state.aborted;
      },
    );
    if (state.aborted && result.stopped) throw Object.assign(new Error('the comparison was aborted'), { name: 'AbortError' });
    return { ...result, models: opened.map((o) => ({ index: o.index, info: o.info })), failed };
  } finally {
    for (const o of opened) if (o.index === 0 || !consumed) o.eng.free();
    live.delete(id);
  }
}

/**
 * `quantweb quantize` into OPFS (cache.js's quantized folder): the new file is written through
 * a sync access handle, tensor by tensor, never whole in memory; a failed or aborted run leaves
 * no file behind. Resolves to wasm `quantize`'s summary plus `{name, file}`.
 */
async function quantizeModel(id, { source, target, allowRequantize = false, name }) {
  const state = live.get(id) || { aborted: false };
  live.set(id, state);
  try {
    // The single-threaded build: the sync access handle's write takes no view of shared memory.
    const { lib } = await ready('single');
    const dir = await cache.quantizedDir();
    name = cache.quantizedName(name);
    const est = navigator.storage && navigator.storage.estimate ? await navigator.storage.estimate() : null;
    const fh = await dir.getFileHandle(name, { create: true });
    const handle = await fh.createSyncAccessHandle();
    const meter = new Meter('quantize', (p) => post({ id, type: 'progress', ...p }));
    const quotaError = (needed, est) => cache.quotaError(needed, needed, est, 'store the quantized model', 'Delete cached or quantized models, or free disk space.');
    let quotaFull = null;
    let total = 0;
    let summary = null;
    try {
      summary = await lib.quantize(source, handle, { type: target, allowRequantize }, (p) => {
        total = p.total;
        // The output size is known from the first event on: refuse what cannot fit.
        if (p.loaded === 0 && est && p.total > Math.max(0, (est.quota || 0) - (est.usage || 0))) {
          quotaFull = quotaError(p.total, est);
          return false;
        }
        meter.update(p.loaded, p.total, { tensor: p.tensor }, p.loaded === p.total);
        return !state.aborted;
      });
    } catch (e) {
      if (quotaFull) throw quotaFull;
      if (state.aborted) throw Object.assign(new Error('the quantization was aborted'), { name: 'AbortError' });
      if (cache.isQuotaError(e)) throw quotaError(total, await navigator.storage.estimate());
      throw e;
    } finally {
      handle.close();
      if (!summary) await dir.removeEntry(name).catch(() => {});
    }
    return { ...summary, name, file: await fh.getFile() };
  } finally {
    live.delete(id);
  }
}

function need() {
  if (!engine) throw Object.assign(new Error('no model is loaded (call Engine.load first, or the engine was unloaded)'), { name: 'NotLoadedError' });
  return engine;
}

async function generate(id, promptTokens, options, stream) {
  const eng = need();
  const state = live.get(id) || { aborted: false };
  live.set(id, state);
  try {
    if (state.aborted) {
      return { prompt_tokens: Array.from(promptTokens), tokens: [], text: '', finish_reason: 'abort', timings: null, usage: { prompt_tokens: promptTokens.length, completion_tokens: 0, total_tokens: promptTokens.length }, cached_tokens: 0 };
    }
    const result = await eng.complete(promptTokens, options, (piece, token, logprob) => {
      if (stream) post({ id, type: 'token', piece, token, logprob });
      return !state.aborted;
    });
    const kv = eng.info();
    engineInfo = { ...engineInfo, ...kv, wasmMemoryBytes: await wasmMemoryBytes() };
    return result;
  } finally {
    live.delete(id);
  }
}

async function handle(msg) {
  const { id, type } = msg;
  switch (type) {
    case 'load':
      return load(id, msg);
    case 'complete': {
      const eng = need();
      const tokens = msg.tokens ? Uint32Array.from(msg.tokens) : eng.promptTokens(String(msg.prompt ?? ''), false);
      return generate(id, tokens, msg.options, msg.stream);
    }
    case 'chat': {
      const eng = need();
      const tokens = eng.chatTokens(msg.messages, msg.options);
      return generate(id, tokens, msg.options, msg.stream);
    }
    case 'tokenize':
      return Array.from(need().tokenize(String(msg.text ?? ''), Boolean(msg.parseSpecial)));
    case 'detokenize':
      return need().detokenize(Uint32Array.from(msg.ids || []));
    case 'info':
      return engineInfo ? { ...engineInfo, wasmMemoryBytes: await wasmMemoryBytes(), gpuBufferBytes: engine?.gpuBufferBytes() ?? null } : null;
    case 'reset':
      need().reset();
      return null;
    case 'unload':
      freeEngine();
      return null;
    case 'compare':
      return compareModels(id, msg);
    case 'quantize':
      return quantizeModel(id, msg);
    case 'cache-list':
      return cache.list();
    case 'cache-delete':
      return cache.remove(msg.key);
    default:
      throw new TypeError(`unknown request type ${type}`);
  }
}

self.onmessage = (e) => {
  const msg = e.data || {};
  if (msg.type === 'abort') {
    const state = live.get(msg.target);
    if (state) {
      state.aborted = true;
      if (state.controller) state.controller.abort(Object.assign(new Error('the load was aborted'), { name: 'AbortError' }));
    } else {
      // Not started yet (queued): remember, so it stops before its first token.
      live.set(msg.target, { aborted: true });
    }
    return;
  }
  const run = () =>
    handle(msg).then(
      (value) => post({ id: msg.id, type: 'result', value }),
      (err) => post({ id: msg.id, type: 'error', error: errorOut(err) }),
    );
  // Cache listing/deleting does not touch the engine: answer at once.
  if (msg.type === 'cache-list' || msg.type === 'cache-delete') run();
  else queue = queue.then(run);
};
