// The browser half of `cargo xtask bench`: one headless Chromium run, three engines on the same
// model, the same prompt ids and the same number of generated tokens, greedy:
//   wllama-cpu     wllama 3.8.1, CPU wasm (n_gpu_layers 0, n_threads from the config)
//   wllama-webgpu  wllama 3.8.1, WebGPU (n_gpu_layers 99)
//   quantweb       quantweb's WasmEngine (www/pkg/quantweb.js), WebGPU
//   quantweb-cpu   quantweb's WasmEngine, its CPU engine (one thread; quantweb_cpu_js, the
//                  relaxed SIMD build that the worker picks in Chromium)
//   quantweb-cpu-threads  quantweb's Engine (its worker), the threaded CPU engine build with
//                  `threads` threads (helper workers on shared memory)
//
//   node tests/bench/bench.mjs CONFIG.json OUT.json
//
// CONFIG (written by xtask/src/bench.rs): base_url, page (a blank cross-origin-isolated page on
// that server), wllama_js, wllama_wasm, quantweb_js, quantweb_cpu_js, model_url (one GGUF file, for wllama),
// quantweb_model (a URL or an array of byte-chunk URLs), prompt_text (tokenizes to prompt_ids),
// prompt_ids (llama.cpp's tokens, BOS included; null when node-llama-cpp was not available: then
// quantweb tokenizes prompt_text itself and the counts are whatever the text gives),
// quantweb_engine_js (quantweb.js, the Engine API), p, n, threads, ctx, engines (which of the three to run), timeout_s (per engine).
//
// Each engine gets a fresh browser context (its own renderer process), a warm-up (a short prompt,
// 2 tokens: pipelines compiled, caches touched), then one timed run. What is measured:
//   load_s         wall clock of the engine's load call: fetching the model from the local
//                  server, parsing, uploading weights, creating the context
//   prefill_tok_s  wllama: llama.cpp's timings.prompt_per_second (prompt_n / prompt_ms);
//                  quantweb: timings.prefill_tok_s
//   decode_tok_s   wllama: timings.predicted_per_second (predicted_n / predicted_ms);
//                  quantweb: timings.decode_tok_s
//   peak_mem_mb    peak, over the load and both runs, of the summed resident set size (VmRSS,
//                  /proc/PID/status) of every Chromium process (browser, renderer, GPU process
//                  with SwiftShader's "GPU" buffers, utilities) minus the same sum on the blank
//                  page just before the load, sampled every 100 ms. It counts what the engine
//                  made the OS give Chromium: wasm heap, JS, GPU buffers on a software adapter
//                  (on a real GPU, VRAM is not in it); memory shared between two Chromium
//                  processes (e.g. buffer uploads) counts twice.
// wllama is asked for ignore_eos, so decode always runs n tokens. quantweb's counts are reported
// as it gives them: it stops at an end-of-generation token (finish_reason "stop"), and then its
// rates are over fewer tokens.
// The result, one object per engine (ok: false with an error when it failed), goes to OUT.json.

import fs from 'node:fs';
import { launch } from '../browser/lib.mjs';

const [configPath, outPath] = process.argv.slice(2);
if (!configPath || !outPath) {
  console.error('usage: node tests/bench/bench.mjs CONFIG.json OUT.json');
  process.exit(2);
}
const cfg = JSON.parse(fs.readFileSync(configPath, 'utf8'));

// --- memory: the Chromium process tree under this node process -------------------------------

function childrenMap() {
  const kids = new Map();
  for (const name of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    let stat;
    try {
      stat = fs.readFileSync(`/proc/${name}/stat`, 'utf8');
    } catch {
      continue; // exited meanwhile
    }
    // "pid (comm) state ppid ...": comm may hold spaces and parentheses; take the last ')'.
    const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
    if (!kids.has(ppid)) kids.set(ppid, []);
    kids.get(ppid).push(Number(name));
  }
  return kids;
}

function descendants(root) {
  const kids = childrenMap();
  const out = [];
  const todo = [...(kids.get(root) || [])];
  while (todo.length) {
    const pid = todo.pop();
    out.push(pid);
    todo.push(...(kids.get(pid) || []));
  }
  return out;
}

/** Summed resident set size (VmRSS, /proc/PID/status) of the given processes, in bytes.
 * status is read from counters (cheap, no page-table walk, unlike smaps' PSS, whose reading every
 * 100 ms slowed the engines down measurably). */
function sumRss(pids) {
  let kb = 0;
  for (const pid of pids) {
    try {
      const m = /^VmRSS:\s+(\d+) kB/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
      if (m) kb += Number(m[1]);
    } catch { /* exited */ }
  }
  return kb * 1024;
}

/** Peak over time of the summed RSS of the Chromium processes, minus the sum at the start. */
function memorySampler() {
  let pids = descendants(process.pid);
  const base = sumRss(pids);
  let peak = base, ticks = 0;
  const timer = setInterval(() => {
    if (++ticks % 20 === 0) pids = descendants(process.pid); // new processes (GPU, utility)
    peak = Math.max(peak, sumRss(pids));
  }, 100);
  return {
    stop() {
      clearInterval(timer);
      peak = Math.max(peak, sumRss(descendants(process.pid)));
      return pids.length ? (peak - base) / (1024 * 1024) : null;
    },
  };
}

// --- in the page -------------------------------------------------------------------------------

/** Runs in the page: one wllama engine. */
async function pageWllama({ cfg, ngl }) {
  const { Wllama } = await import(cfg.wllama_js);
  // llama.cpp's own log says where the weights went ("WebGPU model buffer size" / "CPU ...").
  const backendLines = [];
  const keep = (...a) => {
    const line = a.map(String).join(' ');
    if (/model buffer size|ggml_webgpu/i.test(line)) backendLines.push(line.trim());
  };
  const logger = { debug: keep, log: keep, warn: (...a) => { keep(...a); console.warn(...a); }, error: (...a) => { keep(...a); console.error(...a); } };
  const w = new Wllama({ default: cfg.wllama_wasm }, { logger });
  const t0 = performance.now();
  await w.loadModelFromUrl(cfg.model_url, {
    n_gpu_layers: ngl, n_ctx: cfg.ctx, n_threads: cfg.threads, useCache: false,
  });
  const load_s = (performance.now() - t0) / 1000;
  console.log(`bench-phase: loaded in ${load_s.toFixed(1)} s`);
  // Text, not ids: wllama's completion glue only takes a string prompt. prompt_text tokenizes to
  // prompt_ids (checked by native_llamacpp.mjs); llama.cpp adds the BOS itself.
  const opts = { temperature: 0, ignore_eos: true, cache_prompt: false };
  await w.createCompletion({ ...opts, prompt: cfg.prompt_text.slice(0, 32), max_tokens: 2 });
  console.log('bench-phase: warm-up done');
  const r = await w.createCompletion({ ...opts, prompt: cfg.prompt_text, max_tokens: cfg.n });
  const t = r.timings || {};
  const buffers = backendLines.filter((l) => /model buffer size/i.test(l)).map((l) => l.replace(/^.*?:\s*/, ''));
  const out = {
    load_s,
    prompt_tokens: t.prompt_n ?? r.usage?.prompt_tokens,
    gen_tokens: t.predicted_n ?? r.usage?.completion_tokens,
    prefill_ms: t.prompt_ms,
    decode_ms: t.predicted_ms,
    prefill_tok_s: t.prompt_per_second,
    decode_tok_s: t.predicted_per_second,
    text: r.choices?.[0]?.text,
    multithread: w.isMultithread(),
    threads: w.getNumThreads(),
    // Where llama.cpp put the weights: "CPU" means no WebGPU device was used.
    weights_on: buffers.map((l) => l.split(/\s+/)[0]).join('+') || 'unknown',
    backend_log: backendLines.slice(0, 6),
    libllama: Wllama.getLibllamaVersion?.(),
  };
  await w.exit();
  return out;
}

/** Runs in the page: quantweb's WasmEngine. */
async function pageQuantweb({ cfg, backend }) {
  const js = (backend === 'cpu' && cfg.quantweb_cpu_js) || cfg.quantweb_js;
  const mod = await import(js);
  await mod.default({ module_or_path: new URL(js.replace(/\.js$/, '_bg.wasm'), location.href) });
  if (!mod.WasmEngine) throw new Error(`${js} has no WasmEngine export (not built yet?)`);
  const t0 = performance.now();
  let shown = 0;
  const eng = await mod.WasmEngine.load(cfg.quantweb_model, { contextLength: cfg.ctx, backend }, (e) => {
    if (e.total && e.loaded / e.total >= shown) {
      console.log(`bench-phase: upload ${Math.round((100 * e.loaded) / e.total)} %`);
      shown += 0.25;
    }
  });
  const load_s = (performance.now() - t0) / 1000;
  console.log(`bench-phase: loaded in ${load_s.toFixed(1)} s`);
  let prompt = cfg.prompt_ids;
  if (!prompt) {
    // No ids from llama.cpp's tokenizer: tokenize the same text with quantweb's.
    prompt = Array.from(eng.promptTokens(cfg.prompt_text, false));
  }
  const u32 = Uint32Array.from(prompt);
  await eng.complete(u32.slice(0, 8), { max_tokens: 2, temperature: 0 }, () => {});
  console.log('bench-phase: warm-up done');
  eng.reset(); // no prefix reuse from the warm-up
  let got = 0;
  const r = await eng.complete(u32, { max_tokens: cfg.n, temperature: 0 }, () => {
    got++;
    if (got === 1 || got % 16 === 0) console.log(`bench-phase: ${got} tokens generated`);
  });
  const t = r.timings || {};
  const info = eng.info?.() ?? {};
  const len = (x) => (typeof x === 'number' ? x : x?.length);
  const out = {
    load_s,
    prompt_tokens: len(r.prompt_tokens) ?? u32.length,
    gen_tokens: len(r.tokens),
    prefill_ms: t.prefill_ms,
    decode_ms: t.decode_ms,
    prefill_tok_s: t.prefill_tok_s,
    decode_tok_s: t.decode_tok_s,
    text: r.text,
    finish_reason: r.finish_reason,
    cached_tokens: r.cached_tokens,
    adapter: info.adapter,
    weight_mb: info.weightBytes != null ? Number(info.weightBytes) / 2 ** 20 : undefined,
    kv_mb: info.kvBytes != null ? Number(info.kvBytes) / 2 ** 20 : undefined,
    cross_origin_isolated: self.crossOriginIsolated,
  };
  eng.free?.();
  return out;
}

/**
 * Runs in the page: quantweb's JS API (`Engine`, the engine in its worker), for the threaded CPU
 * engine: its helper workers share the engine worker's memory, and that worker, unlike the page,
 * may block on it. `threads` CPU threads, the worker's included.
 */
async function pageQuantwebEngine({ cfg }) {
  const { threads } = cfg;
  const { Engine } = await import(cfg.quantweb_engine_js);
  const t0 = performance.now();
  const eng = await Engine.load(cfg.quantweb_model, { contextLength: cfg.ctx, backend: 'cpu', threads, cache: false });
  const load_s = (performance.now() - t0) / 1000;
  console.log(`bench-phase: loaded in ${load_s.toFixed(1)} s`);
  const prompt = cfg.prompt_ids || eng.tokenize(cfg.prompt_text);
  const tokens = Array.from(await prompt);
  await eng.complete({ tokens: tokens.slice(0, 8), max_tokens: 2, temperature: 0 });
  console.log('bench-phase: warm-up done');
  await eng.reset(); // no prefix reuse from the warm-up
  const r = await eng.complete({ tokens, max_tokens: cfg.n, temperature: 0 });
  const t = r.timings || {};
  const info = eng.info;
  const out = {
    load_s,
    prompt_tokens: r.prompt_tokens.length,
    gen_tokens: r.tokens.length,
    prefill_ms: t.prefill_ms,
    decode_ms: t.decode_ms,
    prefill_tok_s: t.prefill_tok_s,
    decode_tok_s: t.decode_tok_s,
    text: r.text,
    finish_reason: r.finish_reason,
    cached_tokens: r.cached_tokens,
    adapter: info.adapter,
    threads: info.threads,
    cross_origin_isolated: self.crossOriginIsolated,
  };
  await eng.unload();
  return out;
}

// --- driver ------------------------------------------------------------------------------------

const ENGINES = {
  'wllama-cpu': { label: 'wllama 3.8.1 CPU wasm (browser)', fn: pageWllama, args: { ngl: 0 } },
  'wllama-webgpu': { label: 'wllama 3.8.1 WebGPU (browser)', fn: pageWllama, args: { ngl: 99 } },
  quantweb: { label: 'quantweb WebGPU (browser)', fn: pageQuantweb, args: { backend: 'webgpu' } },
  'quantweb-cpu': { label: 'quantweb CPU wasm (browser, 1 thread)', fn: pageQuantweb, args: { backend: 'cpu' } },
  'quantweb-cpu-threads': { label: 'quantweb CPU wasm (browser, threaded)', fn: pageQuantwebEngine, args: {} },
};

function withTimeout(promise, s, what) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, rej) => { timer = setTimeout(() => rej(new Error(`${what}: no result after ${s} s`)), s * 1000); }),
  ]).finally(() => clearTimeout(timer));
}

async function runEngine(browser, key) {
  const e = ENGINES[key];
  const res = { key, engine: e.label };
  const context = await browser.newContext();
  const page = await context.newPage();
  const logs = [];
  let phase = 'loading', tPhase = performance.now();
  page.on('console', (m) => {
    if (m.type() === 'log' && m.text().startsWith('bench-phase: ')) {
      phase = m.text().slice(13);
      tPhase = performance.now();
      console.log(`  ${key}: ${phase}`);
      return;
    }
    if (m.type() !== 'error' && m.type() !== 'warning') return;
    if (/favicon\.ico$/.test(m.location()?.url || '')) return;
    logs.push(`${m.type()}: ${m.text()}`);
  });
  page.on('pageerror', (err) => logs.push(`pageerror: ${err.message}`));
  let mem = null;
  try {
    await page.goto(cfg.page);
    const isolated = await page.evaluate(() => self.crossOriginIsolated);
    if (!isolated) logs.push('warning: the page is not cross-origin isolated (no COOP/COEP?)');
    await new Promise((r) => setTimeout(r, 500)); // let the blank page settle before the baseline
    mem = memorySampler();
    const t0 = performance.now();
    const r = await withTimeout(page.evaluate(e.fn, { cfg, ...e.args }), cfg.timeout_s, key);
    Object.assign(res, { ok: true, ...r, wall_s: (performance.now() - t0) / 1000 });
  } catch (err) {
    const since = ((performance.now() - tPhase) / 1000).toFixed(0);
    Object.assign(res, { ok: false, error: `${String(err.message || err).split('\n')[0]} (last step: ${phase}, ${since} s before)` });
  } finally {
    const peak = mem?.stop();
    res.peak_mem_mb = peak;
    res.mem_what = 'peak summed RSS of the Chromium processes minus that on the blank page before loading';
    if (logs.length) res.console = logs.slice(-10);
    await context.close().catch(() => {});
  }
  const show = res.ok
    ? `load ${res.load_s.toFixed(2)} s, prefill ${res.prompt_tokens} tok ${res.prefill_tok_s?.toFixed(1)} tok/s, ` +
      `decode ${res.gen_tokens} tok ${res.decode_tok_s?.toFixed(1)} tok/s, peak +${res.peak_mem_mb?.toFixed(0)} MB`
    : `FAILED: ${res.error}`;
  console.log(`bench ${key}: ${show}`);
  if (res.console) for (const l of res.console) console.log(`  [page] ${l.slice(0, 300)}`);
  return res;
}

const browser = await launch({ args: cfg.chromium_args || [] });
const results = [];
const chromiumVersion = browser.version();
try {
  for (const key of cfg.engines) results.push(await runEngine(browser, key));
} finally {
  await browser.close();
}
fs.writeFileSync(outPath, JSON.stringify({ chromium: chromiumVersion, results }, null, 2));
