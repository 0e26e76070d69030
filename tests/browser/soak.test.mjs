// Soak: many chat turns with prefix reuse, aborts and model reloads in one page, on the GPU engine
// (WebGPU on SwiftShader) and on the threaded CPU engine, with the tiny Llama 3 model. After the
// first load cycle (the warm-up: every shape compiled, every buffer made), what a long session
// holds must stay flat: the worker's wasm memory, the GPU buffer bytes the engine tracks, and the
// number of workers alive. The page must stay responsive: no main-thread long task over 200 ms
// while answers stream (PerformanceObserver `longtask`).
//
// CI runs 100 turns, 10 aborts and 5 loads per engine; QUANTWEB_SOAK=full runs the issue's
// 200 turns, 20 aborts and 5 loads (reloads between them).
//
// Run: `cargo xtask test --browser-only`, or with a server already running:
//   QUANTWEB_BASE_URL=http://127.0.0.1:8080 node --test tests/browser/soak.test.mjs

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { launch, baseUrl } from './lib.mjs';
import { root } from './fixtures.mjs';

const MODEL = 'tiny-llama3.gguf';
const MINUTE = 60_000;
const FULL = process.env.QUANTWEB_SOAK === 'full';
const TURNS = FULL ? 200 : 100;
const ABORTS = FULL ? 20 : 10;
const LOADS = 5;
/** Growth allowed after the warm-up, as a fraction. */
const FLAT = 0.02;
const LONG_TASK_MS = 200;

let browser;

before(async () => {
  assert.ok(existsSync(path.join(root, 'models', MODEL)), `models/${MODEL} is missing: run \`cargo xtask fetch-models --all\``);
  browser = await launch();
});

after(async () => {
  await browser?.close();
});

/**
 * One load cycle in the page: loads the model, runs `turns` chat turns (every `abortEvery`-th
 * one streamed and aborted after its first token), reads the engine's memory figures, unloads.
 * A conversation grows turn by turn, so each request reuses the KV cache of the one before;
 * it starts over before it would outgrow the context.
 */
async function cycle({ url, backend, threads, turns, abortEvery, first }) {
  const { Engine } = await import('/quantweb.js');
  const engine = await Engine.load(url, { cache: false, backend, threads, contextLength: 512 });
  const spans = [];
  let messages = [];
  let reused = 0;
  let answered = 0;
  let aborted = 0;
  let warm = null;
  for (let i = 0; i < turns; i++) {
    messages.push({ role: 'user', content: `Turn ${first + i}: tell me one thing about the number ${(first + i) * 7}.` });
    const t0 = performance.now();
    if (i % abortEvery === abortEvery - 1) {
      const stop = new AbortController();
      const stream = await engine.chat.completions.create({ messages, max_tokens: 32, temperature: 0, stream: true }, { signal: stop.signal });
      let last = null;
      for await (const chunk of stream) {
        if (chunk.choices[0]?.delta?.content) stop.abort();
        last = chunk;
      }
      if (!last?.aborted) throw new Error(`turn ${first + i}: the stream ended without being aborted (${last?.choices?.[0]?.finish_reason})`);
      aborted++;
      messages.pop();
    } else {
      const r = await engine.chat.completions.create({ messages, max_tokens: 4, temperature: 0 });
      if (r.usage.prompt_tokens_details.cached_tokens > 0) reused++;
      answered++;
      messages.push({ role: 'assistant', content: r.choices[0].message.content });
      if (r.usage.prompt_tokens > 300) messages = [];
    }
    spans.push([t0, performance.now()]);
    if (i === Math.floor(turns / 4)) warm = await engine.refreshInfo();
  }
  const info = await engine.refreshInfo();
  const workers = await window.workerCount();
  await engine.unload();
  return {
    spans, reused, answered, aborted, workers, backend: info.backend,
    wasm: info.wasmMemoryBytes, gpu: info.gpuBufferBytes,
    warmWasm: warm.wasmMemoryBytes, warmGpu: warm.gpuBufferBytes,
  };
}

/** Dedicated workers alive in the browser (nested ones, the CPU engine's helpers, included). */
async function workerCount(cdp) {
  const { targetInfos } = await cdp.send('Target.getTargets');
  return targetInfos.filter((t) => t.type === 'worker').length;
}

/**
 * The worker count once it is `expected`, or what it is after 10 s: a terminated worker leaves
 * the browser's target list a moment after `terminate()` returns.
 */
async function settledWorkerCount(cdp, expected) {
  const until = Date.now() + 10_000;
  for (;;) {
    const n = await workerCount(cdp);
    if (n === expected || Date.now() > until) return n;
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function soak(t, { backend, threads, isolated }) {
  const context = await browser.newContext();
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  await page.addInitScript(() => {
    window.longTasks = [];
    new PerformanceObserver((list) => {
      for (const e of list.getEntries()) window.longTasks.push([e.startTime, e.duration]);
    }).observe({ type: 'longtask', buffered: true });
  });
  const cdp = await context.newCDPSession(page);
  // The engine's worker and its helpers (1 + threads - 1).
  const expected = 1 + (threads ? threads - 1 : 0);
  await page.exposeFunction('workerCount', () => settledWorkerCount(cdp, expected));
  try {
    await page.goto(`${baseUrl}/`);
    assert.equal(await page.evaluate(() => self.crossOriginIsolated), isolated);
    await page.evaluate(`window.cycle = ${cycle.toString()}`);
    // The observer must see a long task when there is one, or its silence below proves nothing
    // (a task of the page's own: work evaluated from the test is not one).
    await page.evaluate(() => new Promise((done) => setTimeout(() => {
      const t0 = performance.now();
      while (performance.now() - t0 < 300);
      done();
    })));
    await page.waitForFunction((ms) => window.longTasks.some(([, d]) => d > ms), LONG_TASK_MS);
    const perLoad = TURNS / LOADS;
    const samples = [];
    const spans = [];
    for (let l = 0; l < LOADS; l++) {
      const r = await page.evaluate((a) => window.cycle(a), {
        url: `/models/${MODEL}`,
        backend,
        threads,
        turns: perLoad,
        abortEvery: Math.round(TURNS / ABORTS),
        first: l * perLoad,
      });
      samples.push(r);
      spans.push(...r.spans);
    }
    const after = await settledWorkerCount(cdp, 0);
    const s0 = samples[0];
    assert.equal(s0.backend, backend === 'webgpu' ? 'webgpu' : 'cpu');
    const sum = (k) => samples.reduce((a, s) => a + s[k], 0);
    assert.equal(sum('aborted'), ABORTS, 'aborted turns');
    assert.equal(sum('answered'), TURNS - ABORTS, 'answered turns');
    // Every conversation's second and later turns reuse the cache; only its first does not.
    assert.ok(sum('reused') >= (TURNS - ABORTS) * 0.7, `only ${sum('reused')} of ${TURNS - ABORTS} turns reused a cached prefix`);
    // Within each load (from a quarter of its turns to its end) and from load to load (the
    // first one warms up): the largest growth of either.
    const growth = (k, warmKey) => {
      const warm = samples[1][k];
      const peak = Math.max(...samples.slice(1).map((s) => s[k]));
      const within = Math.max(...samples.map((s) => (s[k] - s[warmKey]) / s[warmKey]));
      return { warm, peak, growth: Math.max((peak - warm) / warm, within) };
    };
    const wasm = growth('wasm', 'warmWasm');
    const report = [`${backend}${threads ? ` (${threads} threads)` : ''}: ${TURNS} turns, ${ABORTS} aborts, ${LOADS} loads`, `wasm memory ${wasm.warm} → peak ${wasm.peak} (growth at most ${(100 * wasm.growth).toFixed(2)} %)`];
    assert.ok(wasm.growth < FLAT, report.join('; '));
    if (backend === 'webgpu') {
      const gpu = growth('gpu', 'warmGpu');
      report.push(`GPU buffers ${gpu.warm} → peak ${gpu.peak} (growth at most ${(100 * gpu.growth).toFixed(2)} %)`);
      assert.ok(gpu.growth < FLAT, report.join('; '));
      assert.ok(gpu.warm > 0);
    }
    // The same workers in every load; unloading stops them all.
    report.push(`workers while loaded: ${samples.map((s) => s.workers).join(', ')}; after the last unload: ${after}`);
    assert.ok(samples.every((s) => s.workers === expected), report.join('; '));
    assert.equal(after, 0, report.join('; '));
    const longTasks = await page.evaluate(() => window.longTasks);
    const whileAnswering = longTasks.filter(([start, d]) => spans.some(([a, b]) => start < b && start + d > a));
    const during = whileAnswering.filter(([, d]) => d > LONG_TASK_MS);
    const longest = Math.max(0, ...whileAnswering.map(([, d]) => d));
    report.push(`longest main-thread task while answering: ${longest.toFixed(0)} ms`);
    assert.deepEqual(during, [], report.join('; '));
    assert.deepEqual(errors, []);
    t.diagnostic(report.join('; '));
  } finally {
    await context.close();
  }
}

test(`soak on the GPU engine (WebGPU): ${TURNS} chat turns with prefix reuse, ${ABORTS} aborts, ${LOADS} loads; memory, GPU buffers and workers flat, no long task`, { timeout: 20 * MINUTE }, async (t) => {
  await soak(t, { backend: 'webgpu', isolated: true });
});

test(`soak on the threaded CPU engine: ${TURNS} chat turns with prefix reuse, ${ABORTS} aborts, ${LOADS} loads; memory and workers flat, no long task`, { timeout: 20 * MINUTE }, async (t) => {
  await soak(t, { backend: 'cpu', threads: 2, isolated: true });
});
