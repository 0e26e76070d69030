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
