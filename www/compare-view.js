// The Compare view: quantizations of one model against a base, as llama-perplexity's
// KL-divergence statistics (quantweb.js `compare`), with a table and a memory-against-KL chart.
// Model names and error messages go in with textContent only.

import { h, fmtBytes } from './ui.js';
import { compare, quantize, quantizedModels } from './quantweb.js';

const $ = (id) => document.getElementById(id);
const SVG = 'http://www.w3.org/2000/svg';
const MAKE_TYPES = ['Q8_0', 'Q5_K', 'Q4_K'];

/** The page's hooks: `gpuMemoryBytes()` (the Calculator's field), error `advice(e)`, `messageOf(e)`. */
let page = null;
let running = null; // AbortController of the run in progress

function svg(tag, attrs, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  for (const c of children) el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return el;
}

function showError(title, e) {
  const box = $('cmp-error');
  box.dataset.name = (e && e.name) || 'Error';
  box.replaceChildren(h('strong', { class: 'error-title' }, title), h('p', { class: 'error-message' }, page.messageOf(e)), h('p', { class: 'error-advice' }, page.advice(e)));
  box.hidden = false;
}

function status(text, loaded, total) {
  $('cmp-progress').hidden = false;
  $('cmp-status').textContent = text;
  $('cmp-bar').max = total || 1;
  $('cmp-bar').value = loaded || 0;
}

/** The sources the form names: a picked file wins over a typed URL. */
function baseSource() {
  const f = $('cmp-base-file').files[0];
  const url = $('cmp-base').value.trim();
  return f || url || null;
}

async function candidateSources() {
  const urls = $('cmp-cands').value.split('\n').map((l) => l.trim()).filter(Boolean);
  const files = [...$('cmp-cand-files').files];
  const picked = [...$('cmp-quantized').querySelectorAll('input:checked')].map((i) => i.value);
  const stored = picked.length ? (await quantizedModels()).filter((m) => picked.includes(m.name)).map((m) => m.file) : [];
  return [...urls, ...files, ...stored];
}

async function renderQuantized(checked = []) {
  const list = await quantizedModels().catch(() => []);
  const box = $('cmp-quantized');
  box.replaceChildren(h('legend', {}, 'Quantized in this browser'));
  for (const m of list) {
    box.append(h('label', { class: 'check' }, h('input', { type: 'checkbox', value: m.name, checked: checked.includes(m.name) }), ` ${m.name} (${fmtBytes(m.size)})`));
  }
  box.hidden = list.length === 0;
}

function fmtEst(e, digits, scale = 1, unit = '') {
  return `${(e.value * scale).toFixed(digits)} ± ${(e.err * scale).toFixed(digits)}${unit}`;
}

function renderRows(result) {
  const rows = [h('tr', { dataset: { model: result.base.name } }, h('th', { scope: 'row' }, `${result.base.name} (base)`), h('td', {}, fmtBytes(result.base.fileBytes)), h('td', {}, fmtBytes(result.base.totalBytes)), h('td', {}, result.candidates.find((c) => c.report)?.report.ppl_base.value.toFixed(3) ?? '—'), h('td', {}, '1'), h('td', {}, '0'), h('td'), h('td'), h('td', {}, '100 %'), h('td', {}, '0 %'))];
  for (const c of result.candidates) {
    if (c.error) {
      rows.push(h('tr', { class: 'nofit', dataset: { model: c.name, error: c.error.name || 'Error' } }, h('th', { scope: 'row' }, c.name), h('td', { colspan: 9 }, `Not compared: ${page.messageOf(c.error)}`)));
      continue;
    }
    const r = c.report;
    rows.push(
      h('tr', { dataset: { model: c.name, kld: r.kld.value, ppl: r.ppl.value } },
        h('th', { scope: 'row' }, c.name),
        h('td', {}, fmtBytes(c.fileBytes)),
        h('td', {}, fmtBytes(c.totalBytes)),
        h('td', {}, fmtEst(r.ppl, 3)),
        h('td', {}, fmtEst(r.ppl_ratio, 4)),
        h('td', {}, fmtEst(r.kld, 5)),
        h('td', {}, r.kld_median.toFixed(5)),
        h('td', {}, r.kld_p99.toFixed(4)),
        h('td', {}, fmtEst(r.same_top, 2, 100, ' %')),
        h('td', {}, fmtEst(r.rms_dp, 2, 100, ' %')),
      ),
    );
  }
  $('cmp-rows').replaceChildren(...rows);
}

/** Memory (x) against mean KL divergence (y), one point per model, this device's memory as a line. */
function renderChart(result) {
  const W = 560, H = 300, L = 64, R = 16, T = 16, B = 44;
  const pts = [{ name: result.base.name, mem: result.base.totalBytes, kld: 0 }, ...result.candidates.filter((c) => c.report).map((c) => ({ name: c.name, mem: c.totalBytes, kld: c.report.kld.value }))];
  const device = page.gpuMemoryBytes();
  const maxMem = Math.max(...pts.map((p) => p.mem), device > 0 && device < 4 * Math.max(...pts.map((p) => p.mem)) ? device : 0) * 1.1;
  const maxKld = Math.max(...pts.map((p) => p.kld), 1e-6) * 1.15;
  const x = (m) => L + (m / maxMem) * (W - L - R);
  const y = (k) => H - B - (k / maxKld) * (H - T - B);
  const g = svg('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': 'Memory against mean KL divergence', class: 'chart' });
  g.append(svg('line', { x1: L, y1: H - B, x2: W - R, y2: H - B, class: 'axis' }), svg('line', { x1: L, y1: T, x2: L, y2: H - B, class: 'axis' }));
  g.append(svg('text', { x: (L + W - R) / 2, y: H - 8, 'text-anchor': 'middle', class: 'label' }, 'memory'), svg('text', { x: 14, y: (T + H - B) / 2, transform: `rotate(-90 14 ${(T + H - B) / 2})`, 'text-anchor': 'middle', class: 'label' }, 'mean KLD'));
  for (const f of [0, 0.5, 1]) {
    g.append(svg('text', { x: x(f * maxMem), y: H - B + 16, 'text-anchor': 'middle', class: 'tick' }, fmtBytes(f * maxMem)));
    g.append(svg('text', { x: L - 6, y: y(f * maxKld) + 4, 'text-anchor': 'end', class: 'tick' }, (f * maxKld).toPrecision(2)));
  }
  if (device > 0 && device <= maxMem) {
    g.append(svg('line', { x1: x(device), y1: T, x2: x(device), y2: H - B, class: 'device', 'data-testid': 'cmp-device-line' }), svg('text', { x: x(device) - 4, y: T + 10, 'text-anchor': 'end', class: 'tick' }, `this device: ${fmtBytes(device)}`));
  }
  for (const p of pts) {
    g.append(svg('circle', { cx: x(p.mem), cy: y(p.kld), r: 5, class: p.mem > device && device > 0 ? 'point nofit' : 'point', 'data-model': p.name }, svg('title', {}, `${p.name}: ${fmtBytes(p.mem)}, mean KLD ${p.kld.toFixed(5)}`)));
    g.append(svg('text', { x: x(p.mem) + 8, y: y(p.kld) - 6, class: 'tick' }, p.name));
  }
  $('cmp-chart').replaceChildren(g);
}

/** "…/dir/Model-Q4_K.gguf" or a File so named → "Model-Q4_K", as quantweb.js names results. */
function stem(src) {
  const raw = typeof src === 'string' ? decodeURIComponent(new URL(src, location.href).pathname.split('/').pop() || '') : src.name || '';
  return raw.replace(/\.gguf$/i, '').replace(/-\d{5}-of-\d{5}$/, '') || 'model';
}

/** The table so far, after each window (sizes and the chart come with the final result). */
function renderPartial(names, indices, reports) {
  renderRows({
    base: { name: names[0], fileBytes: NaN, totalBytes: NaN },
    candidates: indices.map((i, k) => ({ name: names[i], fileBytes: NaN, totalBytes: NaN, report: reports[k] })),
  });
  $('cmp-results').hidden = false;
}

function render(result) {
  renderRows(result);
  renderChart(result);
  const fit = page.gpuMemoryBytes();
  const good = result.candidates.filter((c) => c.report && (!fit || c.totalBytes <= fit)).sort((a, b) => a.totalBytes - b.totalBytes);
  $('cmp-summary').textContent = `${result.chunks} windows of ${result.ctx} tokens (${result.tokens} tokens of text), ${result.candidates[0]?.report?.positions ?? 0} positions scored.` + (good.length ? ` Smallest that fits: ${good[0].name} (mean KLD ${good[0].report.kld.value.toFixed(4)}).` : '');
  $('cmp-results').hidden = false;
}

async function run(base, candidates) {
  $('cmp-error').hidden = true;
  if (!base) return showError('No base model', new Error('Enter the URL of the base model or pick its file.'));
  if (!candidates.length) return showError('No candidates', new Error('Add at least one candidate: a URL, a file, a model quantized in this browser, or use "Make Q4_K, Q5_K and Q8_0".'));
  const pasted = document.querySelector('input[name="cmp-text"]:checked').value === 'pasted';
  const ctx = Number($('cmp-ctx').value);
  const chunks = Number($('cmp-chunks').value);
  running = new AbortController();
  $('cmp-chart').replaceChildren();
  $('cmp-summary').textContent = '';
  $('cmp-results').hidden = true;
  $('cmp-run').disabled = true;
  $('cmp-make').disabled = true;
  $('cmp-abort').disabled = false;
  const n = candidates.length + 1;
  const t0 = performance.now();
  // Models whose load finished, in order: the reports of a 'compare' event are theirs.
  const loaded = new Set();
  const names = [base, ...candidates].map(stem);
  try {
    const result = await compare(base, candidates, {
      text: pasted ? $('cmp-text').value : undefined,
      ctx,
      chunks: chunks > 0 ? chunks : undefined,
      signal: running.signal,
      onProgress: (p) => {
        if (p.phase !== 'compare') {
          if (p.phase === 'compile' && p.loaded === p.total) loaded.add(p.model);
          status(`Model ${p.model + 1} of ${n}: ${p.phase} ${fmtBytes(p.loaded)} of ${fmtBytes(p.total)}`, p.loaded, p.total);
          return;
        }
        if (p.windowEnd) renderPartial(names, [...loaded].filter((i) => i > 0), p.reports);
        const done = p.chunk + (p.windowEnd ? 0 : 0.5);
        const elapsed = (performance.now() - t0) / 1000;
        status(`Window ${Math.min(p.chunk + 1, p.chunks)} of ${p.chunks}` + (p.chunk > 0 ? ` · about ${Math.round((elapsed / done) * (p.chunks - done))} s left` : '') + ` · mean KLD so far: ${p.reports.map((r) => r.kld.value.toFixed(4)).join(', ')}`, done, p.chunks);
      },
    });
    render(result);
    status(`Done in ${((performance.now() - t0) / 1000).toFixed(1)} s.`, 1, 1);
  } catch (e) {
    if (e && e.name === 'AbortError') status('Stopped.', 0, 1);
    else showError('Could not compare', e);
  } finally {
    running = null;
    $('cmp-run').disabled = false;
    $('cmp-make').disabled = false;
    $('cmp-abort').disabled = true;
  }
}

/** One click: Q8_0, Q5_K and Q4_K of the base into this browser's storage, then compare them. */
async function makeAndCompare() {
  const base = baseSource();
  if (!base) return showError('No base model', new Error('Enter the URL of the base model or pick its file.'));
  $('cmp-error').hidden = true;
  $('cmp-make').disabled = true;
  const made = [];
  try {
    for (const type of MAKE_TYPES) {
      const r = await quantize(base, {
        type,
        // From an already quantized base the errors add up; the comparison then shows by how much.
        allowRequantize: true,
        onProgress: (p) => status(`Making ${type}: ${fmtBytes(p.loaded)} of ${fmtBytes(p.total)}`, p.loaded, p.total),
      });
      made.push(r);
    }
  } catch (e) {
    $('cmp-make').disabled = false;
    return showError('Could not make the quantizations', e);
  }
  await renderQuantized(made.map((r) => r.name));
  await run(base, made.map((r) => r.file));
}

export function setupCompare(hooks) {
  page = hooks;
  renderQuantized();
  $('cmp-run').addEventListener('click', async () => run(baseSource(), await candidateSources()));
  $('cmp-make').addEventListener('click', makeAndCompare);
  $('cmp-abort').addEventListener('click', () => running?.abort());
  $('cmp-text').addEventListener('input', () => {
    document.querySelector('input[name="cmp-text"][value="pasted"]').checked = true;
  });
}
