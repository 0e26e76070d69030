// The quantweb page: a memory calculator and a chat view.
// No framework. Every string that comes from a model, a URL or an error is put in the page with
// textContent, never as HTML.

import { h, fmtBytes } from './ui.js';
import { setupCompare } from './compare-view.js';
import { inspect, ready, deviceInfo, storageEstimate, deviceBudget, Engine, quantize, quantizedModels, deleteQuantized } from './quantweb.js';

const $ = (id) => document.getElementById(id);

const PRESETS = {
  smollm2: '/models/SmolLM2-135M-Instruct.Q4_1.gguf',
  'gemma-chunks': [0, 1, 2, 3].map((i) => `/models/gemma-3-270m-q4_k_m.gguf.part0${i}`),
};

const GIB = 2 ** 30;

const state = {
  /** ModelInfo of the model shown. */
  info: null,
  /** What the user asked for, for the page ("3 files: …"). */
  sourceLabel: '',
  /** Latest MemoryEstimate. */
  est: null,
  device: null,
  storage: null,
  /** Increments per inspect: a late answer for an older request is dropped. */
  seq: 0,
};

// ---------------------------------------------------------------- formatting

/** Decimal GB/MB, as the rule of thumb is usually quoted ("14 GB"). */
function fmtDecimal(b) {
  const [div, unit] = b >= 1e12 ? [1e12, 'TB'] : b >= 1e9 ? [1e9, 'GB'] : b >= 1e6 ? [1e6, 'MB'] : [1e3, 'kB'];
  const v = b / div;
  const s = v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2);
  return `${s.replace(/\.0+$|(\.\d*?)0+$/, '$1')} ${unit}`;
}

const exact = (b) => `${Math.round(b).toLocaleString('en-US')} bytes`;

function fmtCount(n) {
  if (n >= 1e9) return `${(n / 1e9).toFixed(2)}B`;
  if (n >= 1e6) return `${(n / 1e6).toFixed(1)}M`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(1)}K`;
  return String(n);
}

const fmtInt = (n) => Number(n).toLocaleString('en-US');

function fmtTokens(t) {
  return t >= 1024 && t % 1024 === 0 ? `${t / 1024}K` : fmtInt(t);
}

/** Sets an element to a byte figure: readable text, exact count in data-bytes and the tooltip. */
function setBytes(el, b) {
  el.textContent = fmtBytes(b);
  el.dataset.bytes = String(b);
  el.title = exact(b);
}

/** Builds an element: h('td', {class: 'num', dataset: {bytes: 1}}, 'text', child…). */
function bytesSpan(b, cls) {
  const s = h('span', { class: cls });
  setBytes(s, b);
  return s;
}

// ---------------------------------------------------------------- errors and status

function setStatus(text) {
  $('status').textContent = text || '';
}

/** What the user can do about an error, from its message. */
function adviceFor(message, source) {
  const m = message || '';
  const isUrl = typeof source === 'string' || (Array.isArray(source) && typeof source[0] === 'string');
  const firstUrl = Array.isArray(source) ? source[0] : source;
  if (/HTTP 404/.test(m)) {
    let s = 'The server has no file at this address. Check the URL for typos.';
    if (typeof firstUrl === 'string' && /huggingface\.co\/.+\/blob\//.test(firstUrl)) {
      s += ' On Hugging Face, use the download link (…/resolve/main/…), not the page link (…/blob/main/…).';
    }
    return s;
  }
  if (/HTTP 40[13]/.test(m)) return 'The model needs a login or an access token (a gated model). Download it with your account and pick the file locally below.';
  if (/HTTP \d{3}/.test(m)) return 'The server answered with an error. Try again later, or download the file and pick it locally below.';
  if (/not a GGUF file/i.test(m)) {
    return 'The address or file is not a GGUF model. Link to the .gguf file itself (on Hugging Face, the …/resolve/main/….gguf link), not to a web page, a safetensors file or an archive.';
  }
  if (/CORS|network error/i.test(m)) {
    return 'The page could not read that URL: you may be offline, the server may be unreachable, or it does not allow other websites to read its files (CORS). If the URL works in a new tab, download the file and pick it with the file picker below: it stays on your computer.';
  }
  if (/range/i.test(m)) {
    return 'The server does not support HTTP Range requests, so reading only the header would mean downloading the whole file. Download it once and pick it locally below.';
  }
  if (/truncated|ended|too short|unexpected end/i.test(m)) {
    return isUrl
      ? 'The file looks incomplete. For a model split in parts, give all parts (byte chunks) or the first shard.'
      : 'The file looks incomplete. If the model comes in several parts, pick all of them at once.';
  }
  return isUrl ? 'Check the URL, or download the file and pick it locally below.' : 'Check that this is a GGUF model file.';
}

function showError(title, message, advice, kind = 'inspect') {
  const box = $('error');
  box.dataset.kind = kind;
  box.replaceChildren(
    h('strong', { class: 'error-title' }, title),
    h('p', { class: 'error-message' }, message),
    advice ? h('p', { class: 'error-advice' }, advice) : null,
  );
  box.hidden = false;
}

function clearError() {
  $('error').hidden = true;
  $('error').replaceChildren();
}

const messageOf = (e) => (e && e.message ? e.message : String(e));

// ---------------------------------------------------------------- inspecting

function describeSource(source) {
  const names = (Array.isArray(source) ? source : [source]).map((s) => (typeof s === 'string' ? s : s.name || 'blob'));
  return names.length === 1 ? names[0] : `${names.length} parts: ${names[0]} … ${names[names.length - 1]}`;
}

async function runInspect(source) {
  const seq = ++state.seq;
  clearError();
  const local = (Array.isArray(source) ? source : [source]).some((s) => typeof s !== 'string');
  setStatus(local ? 'Reading the header from your file (locally)…' : 'Reading the header (HTTP Range requests)…');
  $('inspect').disabled = true;
  $('results').setAttribute('aria-busy', 'true');
  try {
    const info = await inspect(source);
    await ready();
    if (seq !== state.seq) return;
    state.info = info;
    state.sourceLabel = describeSource(source);
    renderModel(info);
    recompute();
    $('results').hidden = false;
    const reads = info.header_reads;
    setStatus(
      local
        ? `Read the header of ${fmtBytes(info.file_bytes)} locally: nothing was uploaded.`
        : `Read only the header (${reads} read${reads === 1 ? '' : 's'}); the ${fmtBytes(info.file_bytes)} model was not downloaded.`,
    );
  } catch (e) {
    if (seq !== state.seq) return;
    state.info = null;
    state.est = null;
    $('results').hidden = true;
    setStatus('');
    const message = messageOf(e);
    showError(local ? 'Could not read this file' : 'Could not read this model', message, adviceFor(message, source));
  } finally {
    if (seq === state.seq) {
      $('inspect').disabled = false;
      $('results').removeAttribute('aria-busy');
    }
  }
}

/** The URL field: one URL, or several separated by spaces/newlines (byte chunks, in order). */
/** A model source from a text field: one URL, or several (shards, byte chunks) separated by spaces. */
function sourceFromField(id) {
  const parts = $(id).value.trim().split(/\s+/).filter(Boolean);
  if (parts.length === 0) return null;
  return parts.length === 1 ? parts[0] : parts;
}

/**
 * Wires one model picker (the calculator's and the chat's share the shape): a URL form, preset
 * buttons, a file input and a drop zone, all ending in `use(source)`.
 */
function wireSourcePicker({ form, field, presetAttr, fileInput, dropZone, empty, use }) {
  $(form).addEventListener('submit', (e) => {
    e.preventDefault();
    const source = sourceFromField(field);
    if (source) use(source);
    else empty();
  });
  for (const b of document.querySelectorAll(`[data-${presetAttr}]`)) {
    b.addEventListener('click', () => {
      const source = PRESETS[b.dataset[presetAttr.replace(/-(\w)/g, (_, c) => c.toUpperCase())]];
      $(field).value = Array.isArray(source) ? source.join(' ') : source;
      use(source);
    });
  }
  const pick = (fileList) => {
    const files = [...fileList].sort((a, b) => a.name.localeCompare(b.name, 'en', { numeric: true }));
    if (files.length) use(files.length === 1 ? files[0] : files);
  };
  $(fileInput).addEventListener('change', (e) => pick(e.target.files));
  dropZone.addEventListener('dragover', (e) => {
    e.preventDefault();
    dropZone.classList.add('dragging');
  });
  dropZone.addEventListener('dragleave', () => dropZone.classList.remove('dragging'));
  dropZone.addEventListener('drop', (e) => {
    e.preventDefault();
    dropZone.classList.remove('dragging');
    pick(e.dataTransfer.files);
  });
}

// ---------------------------------------------------------------- model facts

function renderModel(info) {
  const hp = info.hparams;
  $('model-name').textContent = info.name || '(unnamed model)';
  $('model-source').textContent = state.sourceLabel;
  $('model-arch').textContent = info.architecture;
  $('model-filetype').textContent = info.file_type || 'file type not recorded';
  const params = $('model-params');
  params.textContent = `${fmtCount(info.parameters)} (${fmtInt(info.parameters)})`;
  params.dataset.value = String(info.parameters);
  $('model-layers').textContent = fmtInt(hp.layers);
  $('model-embd').textContent = fmtInt(hp.embedding_length);
  $('model-heads').textContent = fmtInt(hp.heads);
  const kvMin = Math.min(...hp.kv_heads);
  const kvMax = Math.max(...hp.kv_heads);
  const gqa = kvMin === kvMax && kvMin > 0 && hp.heads % kvMin === 0 && hp.heads / kvMin > 1 ? ` (GQA: ${hp.heads / kvMin} heads share one)` : '';
  $('model-kv-heads').textContent = kvMin === kvMax ? `${kvMin}${gqa}` : `${kvMin}–${kvMax} (varies by layer)`;
  $('model-head-dims').textContent = `${hp.key_length} / ${hp.value_length}`;
  $('model-context').textContent = `${fmtInt(hp.context_length)} tokens`;
  $('model-vocab').textContent = fmtInt(hp.vocab_size);
  const sliding = $('model-sliding');
  if (hp.sliding_window) {
    sliding.textContent = `${fmtInt(hp.sliding_window)} tokens on ${hp.sliding_window_layers.length} of ${hp.layers} layers`;
    sliding.dataset.window = String(hp.sliding_window);
    sliding.dataset.layers = String(hp.sliding_window_layers.length);
    sliding.title = 'these layers keep only the last window of tokens in their KV cache';
  } else {
    sliding.textContent = 'none';
    sliding.title = 'every layer attends over the whole context';
    delete sliding.dataset.window;
    delete sliding.dataset.layers;
  }
  setBytes($('model-file-bytes'), info.file_bytes);
  const parts = info.parts.length;
  if (parts > 1) $('model-file-bytes').append(` in ${parts} ${info.layout === 'shards' ? 'shards' : 'byte chunks'}`);

  $('mix-summary').textContent = info.type_mix.map((t) => t.type).join(', ');
  const total = info.tensor_bytes || 1;
  $('type-mix').replaceChildren(
    ...info.type_mix.map((t) =>
      h('tr', { dataset: { type: t.type } },
        h('th', { scope: 'row' }, t.type),
        h('td', { class: 'num' }, fmtInt(t.tensors)),
        h('td', { class: 'num' }, fmtCount(t.parameters)),
        h('td', { class: 'num' }, bytesSpan(t.bytes)),
        h('td', { class: 'num' }, `${((100 * t.bytes) / total).toFixed(1)} %`),
      ),
    ),
  );
  const unsupported = $('unsupported');
  if (info.unsupported_types.length) {
    unsupported.textContent = `quantweb cannot run ${info.unsupported_types.map((u) => `${u.type} (${u.tensors.length} tensors)`).join(', ')} yet: the figures still hold for llama.cpp-based runtimes.`;
    unsupported.hidden = false;
  } else {
    unsupported.hidden = true;
  }
}

// ---------------------------------------------------------------- the estimate

function contextTokens() {
  return 2 ** Number($('ctx').value);
}

function gpuMemoryBytes() {
  const v = Number($('gpu-mem').value);
  // Truncated like the CLI's --gpu-memory, so both judge the same byte count.
  return Number.isFinite(v) && v > 0 ? Math.floor(v * GIB) : 0;
}

function renderCtxLabel() {
  const t = contextTokens();
  const out = $('ctx-value');
  out.textContent = fmtTokens(t);
  out.dataset.tokens = String(t);
  $('ctx').setAttribute('aria-valuetext', `${fmtInt(t)} tokens`);
}

async function recompute() {
  renderCtxLabel();
  if (!state.info) return;
  const qw = await ready();
  let est;
  try {
    est = qw.estimateMemory(state.info, { contextLength: contextTokens(), kvType: $('kv-type').value });
  } catch (e) {
    showError('Cannot compute this setting', messageOf(e), 'Pick another KV cache type or context length.', 'setting');
    return;
  }
  if ($('error').dataset.kind === 'setting') clearError();
  state.est = est;
  renderBreakdown(est);
  renderQuants(est, qw);
  // What the figures on the page are for (tests and scripts wait on these).
  const r = $('results').dataset;
  r.contextLength = String(est.context_length);
  r.kvType = est.kv_type;
  r.gpuMemoryBytes = String(gpuMemoryBytes());
}

function renderBreakdown(est) {
  $('breakdown-ctx').textContent = `${fmtTokens(est.context_length)} (${est.kv_type} KV)`;
  setBytes($('weights-bytes'), est.weights_bytes);
  setBytes($('kv-bytes'), est.kv_cache_bytes);
  setBytes($('scratch-bytes'), est.scratch_bytes);
  setBytes($('total-bytes'), est.total_bytes);
  setBytes($('rule-bytes'), est.rule_of_thumb_bytes);
  const kv = est.kv_cache;
  let how = `${kv.full_layers} layers × ${fmtInt(kv.full_cells)} cells × ${fmtInt(kv.bytes_per_cell_per_layer)} B`;
  if (kv.sliding_layers > 0) {
    how += ` + ${kv.sliding_layers} sliding-window layers × ${fmtInt(kv.sliding_cells)} cells × ${fmtInt(kv.bytes_per_cell_per_layer)} B`;
  }
  const hp = state.info.hparams;
  how += ` (a cell: ${hp.kv_heads[0]} KV heads × (${hp.key_length} + ${hp.value_length}) values, ${est.kv_type})`;
  $('kv-how').textContent = how;
  $('scratch-how').textContent = `activations for a ${est.batch}-token batch ${fmtBytes(est.scratch.activations_bytes)} + logits ${fmtBytes(est.scratch.logits_bytes)} (${fmtInt(hp.vocab_size)} × 4 B)`;
  $('rule-how').textContent = `${fmtCount(est.parameters)} params × ${est.rule_bits / 8} B (${est.rule_bits}-bit) × 1.2`;

  const diff = est.rule_of_thumb_bytes - est.total_bytes;
  const pct = Math.abs(diff) / est.total_bytes * 100;
  const cmp = $('rule-compare');
  cmp.dataset.diffBytes = String(diff);
  if (pct < 5) {
    cmp.textContent = `The rule of thumb is within ${pct.toFixed(0)} % of the calculation here.`;
  } else {
    const kvShare = (100 * est.kv_cache_bytes) / est.total_bytes;
    cmp.textContent =
      `The rule of thumb ${diff > 0 ? 'over' : 'under'}estimates by ${fmtBytes(Math.abs(diff))} (${pct.toFixed(0)} %). ` +
      `Here the KV cache is ${kvShare.toFixed(0)} % of the total (the rule allows a flat 20 % of the weights), ` +
      `and the weights are ${fmtBytes(est.weights_bytes)} against the rule's ${fmtBytes(Math.round(est.parameters * est.rule_bits / 8))} for ${est.rule_bits}-bit.`;
  }
  $('warnings').replaceChildren(...est.warnings.map((w) => h('li', {}, w)));
}

const LEVEL_TEXT = { fits: 'fits', tight: 'tight', does_not_fit: 'does not fit' };

function renderQuants(est, qw) {
  const info = state.info;
  const dev = deviceBudget(gpuMemoryBytes(), state.device, state.storage);
  const rows = [
    {
      key: 'file',
      label: 'This file',
      sub: `${info.file_type ? `${info.file_type}, ` : ''}${est.rule_bits}-bit`,
      bits: est.rule_bits,
      weights: est.weights_bytes,
      total: est.total_bytes,
      rule: est.rule_of_thumb_bytes,
      largest: est.largest_tensor,
      download: info.file_bytes,
    },
    ...est.by_quant.map((r) => ({
      key: r.quant,
      label: r.quant,
      sub: `${r.rule_bits}-bit`,
      bits: r.rule_bits,
      weights: r.weights_bytes,
      total: r.total_bytes,
      rule: r.rule_of_thumb_bytes,
      largest: r.largest_tensor,
      download: r.weights_bytes,
    })),
  ];
  const maxRow = Math.max(...rows.map((r) => Math.max(r.total, r.rule)));
  const gpu = dev.gpuMemoryBytes;
  const showGpu = gpu > 0 && gpu <= maxRow * 1.5;
  const scale = showGpu ? Math.max(maxRow, gpu) : maxRow;
  $('gpu-legend').hidden = !showGpu;
  const pct = (b) => `${Math.min(100, (100 * b) / scale).toFixed(3)}%`;

  const list = rows.map((r) => {
    const verdict = qw.judgeFit({ totalBytes: r.total, largestTensor: r.largest, downloadBytes: r.download, device: dev });
    const deviceMemoryBytes = typeof navigator !== 'undefined' && navigator.deviceMemory ? navigator.deviceMemory * 2 ** 30 : undefined;
    const cpu = qw.judgeFit({ totalBytes: r.total, largestTensor: r.largest, downloadBytes: r.download, device: dev, engine: 'cpu', deviceMemoryBytes });
    const bar = h('div', { class: 'bar', title: `weights ${fmtBytes(r.weights)} + KV ${fmtBytes(est.kv_cache_bytes)} + scratch ${fmtBytes(est.scratch_bytes)} = ${exact(r.total)}; rule of thumb ${fmtBytes(r.rule)}` });
    const segs = [
      ['seg seg-weights', r.weights],
      ['seg seg-kv', est.kv_cache_bytes],
      ['seg seg-scratch', est.scratch_bytes],
    ].map(([cls, b]) => {
      const s = h('span', { class: cls });
      s.style.width = pct(b);
      return s;
    });
    const tick = h('span', { class: 'rule-tick' });
    tick.style.left = pct(r.rule);
    bar.append(...segs, tick);
    if (showGpu) {
      const line = h('span', { class: 'gpu-line' });
      line.style.left = pct(gpu);
      bar.append(line);
    }
    return h('div', {
      class: `qrow${r.key === 'file' ? ' is-file' : ''}`,
      role: 'listitem',
      dataset: {
        quant: r.key,
        totalBytes: String(r.total),
        weightsBytes: String(r.weights),
        ruleBytes: String(r.rule),
        level: verdict.level,
      },
    },
      h('div', { class: 'qname' }, h('span', { class: 'qlabel' }, r.label), h('small', { class: 'muted' }, r.sub)),
      bar,
      h('div', { class: 'qfig' }, bytesSpan(r.total, 'qtotal'), h('small', { class: 'muted' }, 'rule ', bytesSpan(r.rule, 'qrule'))),
      h('div', { class: 'verdict', dataset: { level: verdict.level } },
        h('span', { class: `vbadge v-${verdict.level}` }, LEVEL_TEXT[verdict.level] || verdict.level),
        verdict.reasons.length ? h('ul', { class: 'reasons' }, verdict.reasons.map((x) => h('li', {}, x))) : null,
        h('small', { class: 'cpu-verdict muted', dataset: { level: cpu.level }, title: cpu.reasons.join('; ') }, `CPU engine: ${LEVEL_TEXT[cpu.level] || cpu.level}`),
      ),
    );
  });
  $('quant-rows').replaceChildren(...list);
}

// ---------------------------------------------------------------- the quick rule

async function renderRule() {
  const text = $('param-count').value.trim();
  const err = $('param-error');
  if (!text) {
    $('rule-table').hidden = true;
    err.hidden = true;
    return;
  }
  const qw = await ready();
  let table;
  try {
    table = qw.ruleOfThumb(text);
  } catch (e) {
    err.textContent = `${messageOf(e)}: write a count such as 8B, 1.5B or 135M.`;
    err.hidden = false;
    $('rule-table').hidden = true;
    return;
  }
  err.hidden = true;
  $('rule-table').dataset.parameters = String(table.parameters);
  $('rule-rows').replaceChildren(
    ...table.rows.map((r) => {
      const w = h('span', { class: 'rule-weights', dataset: { bytes: r.weights_bytes }, title: `${exact(r.weights_bytes)} = ${fmtBytes(r.weights_bytes)}` }, fmtDecimal(r.weights_bytes));
      const t = h('span', { class: 'rule-total', dataset: { bytes: r.rule_of_thumb_bytes }, title: `${exact(r.rule_of_thumb_bytes)} = ${fmtBytes(r.rule_of_thumb_bytes)}` }, fmtDecimal(r.rule_of_thumb_bytes));
      return h('tr', { dataset: { bits: r.bits } },
        h('th', { scope: 'row' }, `${r.bits}-bit`),
        h('td', { class: 'num' }, `${r.bytes_per_weight} B`),
        h('td', { class: 'num' }, w),
        h('td', { class: 'num' }, t),
      );
    }),
  );
  $('rule-table').hidden = false;
}

// ---------------------------------------------------------------- device

function kvRow(label, value, attrs) {
  return h('div', attrs || {}, h('dt', {}, label), h('dd', {}, value));
}

function renderDevice(d) {
  const box = $('gpu-info');
  box.removeAttribute('aria-busy');
  box.dataset.available = String(d.available);
  if (!d.available) {
    box.replaceChildren(h('p', { class: 'warn', id: 'gpu-unavailable' }, d.reason));
    return;
  }
  const lim = d.limits;
  const name = [d.vendor, d.architecture].filter(Boolean).join(' / ') || '(the browser hides it)';
  const limitRow = (label, key, id) => {
    const v = lim[key];
    return kvRow(label, typeof v === 'number' ? bytesSpan(v) : '—', { id, dataset: typeof v === 'number' ? { bytes: v } : {} });
  };
  box.replaceChildren(
    h('dl', { class: 'facts small' },
      kvRow('Adapter', name, { id: 'gpu-adapter', dataset: { vendor: d.vendor, architecture: d.architecture } }),
      d.device ? kvRow('Device', d.device) : null,
      d.description ? kvRow('Description', d.description) : null,
      limitRow('Max storage binding', 'maxStorageBufferBindingSize', 'limit-max-storage-binding'),
      limitRow('Max buffer', 'maxBufferSize', 'limit-max-buffer'),
      kvRow('shader-f16', d.shaderF16 ? 'yes' : 'no (quantweb uses its f32 path)', { id: 'gpu-f16', dataset: { value: String(d.shaderF16) } }),
      kvRow('Integer dot product', d.wgslLanguageFeatures.includes('packed_4x8_integer_dot_product') ? 'yes (4-, 5- and 8-bit legacy types)' : 'no (quantweb uses its f32 path)', { id: 'gpu-dot4' }),
      d.isFallbackAdapter ? kvRow('Note', 'software (fallback) adapter: expect slow inference') : null,
    ),
    h('details', { class: 'features' },
      h('summary', {}, `${d.features.length} features, all limits`),
      h('p', { class: 'mono' }, d.features.join(', ') || '(none)'),
      h('dl', { class: 'facts small' }, Object.entries(lim).map(([k, v]) => kvRow(k, fmtInt(v)))),
    ),
    h('p', { class: 'hint' }, 'A tensor larger than the max storage binding cannot be bound in one piece. The browser does not report GPU memory: enter it above.'),
  );
}

function renderStorage(s) {
  const box = $('storage-info');
  box.dataset.available = String(s.available);
  if (!s.available) {
    box.replaceChildren(h('p', { class: 'warn' }, s.reason));
    return;
  }
  box.replaceChildren(
    h('dl', { class: 'facts small' },
      kvRow('Quota', bytesSpan(s.quota), { id: 'storage-quota', dataset: { bytes: s.quota } }),
      kvRow('Used', bytesSpan(s.usage), { id: 'storage-usage', dataset: { bytes: s.usage } }),
      kvRow('Free', bytesSpan(s.free), { id: 'storage-free', dataset: { bytes: s.free } }),
    ),
    h('p', { class: 'hint' }, 'A model is cached here for offline use; one that does not fit will download again on every visit.'),
  );
}

// ---------------------------------------------------------------- tabs

function selectTab(which) {
  for (const name of ['calc', 'chat', 'compare']) {
    const on = name === which;
    const tab = $(`tab-${name}`);
    tab.setAttribute('aria-selected', String(on));
    tab.tabIndex = on ? 0 : -1;
    $(`panel-${name}`).hidden = !on;
  }
}

function setupTabs() {
  const tabs = [$('tab-calc'), $('tab-chat'), $('tab-compare')];
  for (const tab of tabs) {
    tab.addEventListener('click', () => {
      const name = tab.id.slice(4);
      selectTab(name);
      history.replaceState(null, '', name === 'calc' ? '#' : `#${name}`);
    });
    tab.addEventListener('keydown', (e) => {
      if (e.key !== 'ArrowLeft' && e.key !== 'ArrowRight') return;
      const next = tabs[(tabs.indexOf(tab) + 1) % tabs.length];
      next.focus();
      next.click();
    });
  }
  if (location.hash === '#chat' || location.hash === '#compare') selectTab(location.hash.slice(1));
}

// ---------------------------------------------------------------- chat

const chat = {
  /** The loaded Engine, or null. */
  engine: null,
  /** The conversation so far: [{role, content}] (no system message). */
  messages: [],
  /** AbortController of the running load / answer. */
  loading: null,
  answering: null,
  /** Increments per load, so a cancelled load's late events are dropped. */
  seq: 0,
};

function fmtRate(bytesPerSec) {
  return bytesPerSec > 0 ? `${(bytesPerSec / 1e6).toFixed(1)} MB/s` : '';
}

function fmtEta(sec) {
  if (sec === null || sec === undefined || !Number.isFinite(sec)) return '';
  if (sec < 1) return 'under a second left';
  if (sec < 90) return `${Math.round(sec)} s left`;
  return `${Math.round(sec / 60)} min left`;
}

function fmtMs(ms) {
  return ms >= 1000 ? `${(ms / 1000).toFixed(1)} s` : `${Math.round(ms)} ms`;
}

/** What to do about a chat/load error, from its name and message. */
function chatAdvice(e, source) {
  const m = messageOf(e);
  if (e && e.name === 'NoWebGPUError') return 'Open this page in a recent Chrome or Edge (desktop, or Android 121+). In other browsers, enable WebGPU in the settings or flags. Use the Calculator tab meanwhile.';
  if (e && e.name === 'QuotaExceededError') return 'Delete cached models below, free disk space, or untick "Keep a copy in this browser" to stream the model without caching it.';
  if (e && e.name === 'CacheUnavailableError') return 'Untick "Keep a copy in this browser" and load again.';
  if (e && e.name === 'ContextFullError') return 'The conversation no longer fits the context: start a new chat, or raise the context length and reload the model.';
  if (e && e.name === 'UnsupportedModelError') return 'quantweb runs Llama (1–3), SmolLM2, Mistral, Qwen 2/2.5/3, Phi-3 and Gemma 3 models in F32, F16, BF16, Q4_0…Q8_0, Q2_K…Q6_K, IQ4_NL and IQ4_XS. Nothing was downloaded; pick another file of this model (e.g. its Q4_K_M) or another model.';
  if (e && e.name === 'InvalidModelError') return 'The file is not a complete GGUF model: check the URL points at the .gguf file itself (not a web page), or download it again.';
  if (e && e.name === 'ChatTemplateError') return 'The model\'s chat template refused this conversation or broke off (the message says where). Start a new chat; if every message fails, the file\'s template is unusable: pick another file of this model.';
  if (e && e.name === 'DeviceLostError') return 'The GPU was reset (driver crash or the tab was in the background too long). Reload the model.';
  if (e && e.name === 'OutOfMemoryError') return 'The CPU engine holds the weights in this tab\'s memory, at most 4 GiB: pick a smaller model or quantization (the Calculator shows the sizes).';
  if (e && e.name === 'VocabMismatchError') return 'Compare quantizations of one model only: every candidate needs the base\'s tokenizer. Remove the model the message names.';
  if (e && e.resumable) return 'The connection dropped. Load again: the download resumes where it stopped.';
  return adviceFor(m, source);
}

function showChatError(title, e, source) {
  const box = $('chat-error');
  box.dataset.name = (e && e.name) || 'Error';
  box.replaceChildren(
    h('strong', { class: 'error-title' }, title),
    h('p', { class: 'error-message' }, messageOf(e)),
    h('p', { class: 'error-advice' }, chatAdvice(e, source)),
  );
  box.hidden = false;
}

function clearChatError() {
  $('chat-error').hidden = true;
  $('chat-error').replaceChildren();
}

function setChatBusy() {
  const loaded = Boolean(chat.engine);
  const loading = Boolean(chat.loading);
  const answering = Boolean(chat.answering);
  $('send').disabled = !loaded || answering || loading;
  $('send').hidden = answering;
  $('stop').hidden = !answering;
  $('chat-load').disabled = loading;
  for (const b of document.querySelectorAll('[data-chat-preset]')) b.disabled = loading;
  $('load-progress').hidden = !loading;
  $('chat-unload').disabled = answering;
}

function renderProgress(p) {
  const bar = $('load-bar');
  bar.max = p.total || 1;
  bar.value = p.loaded || 0;
  const phase = { download: 'Downloading', upload: 'Uploading to the GPU', compile: 'Compiling GPU kernels' }[p.phase] ?? p.phase;
  $('load-phase').textContent = phase;
  $('load-progress').dataset.phase = p.phase;
  const pct = p.total ? `${((100 * p.loaded) / p.total).toFixed(0)} %` : '';
  $('load-text').textContent = [
    pct,
    `${(p.loaded / 1e6).toFixed(1)} / ${(p.total / 1e6).toFixed(1)} MB`,
    fmtRate(p.bytesPerSec),
    fmtEta(p.etaSec),
  ].filter(Boolean).join(' · ');
}

function renderMemory() {
  const info = chat.engine && chat.engine.info;
  const el = $('mem-use');
  if (!info) {
    el.textContent = '–';
    delete el.dataset.bytes;
    return;
  }
  const gpu = (info.weightBytes || 0) + (info.kvBytes || 0);
  el.textContent = `${fmtBytes(gpu)} GPU`;
  el.dataset.bytes = String(gpu);
  el.title = `weights ${exact(info.weightBytes || 0)} + KV cache ${exact(info.kvBytes || 0)}; wasm memory ${fmtBytes(info.wasmMemoryBytes || 0)}`;
}

function renderModelInfo(info, label) {
  const box = $('chat-model-info');
  if (!info) {
    box.hidden = true;
    return;
  }
  $('chat-model-name').textContent = info.name || label;
  $('chat-model-arch').textContent = info.architecture;
  const from = { cache: 'from the browser cache', network: 'downloaded', local: 'read locally' }[info.source] || info.source;
  $('chat-model-facts').textContent = [
    `${fmtInt(info.contextLength)} token context (trained ${fmtInt(info.trainedContext)})`,
    `${from} in ${fmtMs(info.loadMs)}`,
    info.backend === 'cpu'
      ? `Running on the CPU, ${info.threads} thread${info.threads === 1 ? '' : 's'}: ${info.backendReason}`
      : `on WebGPU (${info.adapter})`,
    info.chatTemplate && info.chatTemplate !== 'model' ? `chat format: ${info.chatTemplate} (the file has no chat template)` : '',
    info.cacheUnavailable ? 'not kept in this browser (no private storage here, as in some private windows): streamed from the server, and will be again on every load' : '',
  ].filter(Boolean).join(' · ');
  box.dataset.source = info.source;
  box.dataset.backend = info.backend;
  box.dataset.loadMs = String(Math.round(info.loadMs));
  box.hidden = false;
}

async function renderCached() {
  const list = $('cached-list');
  let entries;
  try {
    entries = await Engine.cached();
  } catch (e) {
    list.replaceChildren(h('li', { class: 'muted' }, `The cache is not available: ${messageOf(e)}`));
    return;
  }
  if (entries.length === 0) {
    list.replaceChildren(h('li', { class: 'muted' }, 'None yet: models you load from a URL are kept here.'));
  } else {
    list.replaceChildren(
      ...entries.map((c) => {
        const del = h('button', { type: 'button', class: 'small', dataset: { key: c.key }, 'aria-label': `Delete ${c.name}` }, 'Delete');
        del.addEventListener('click', async () => {
          del.disabled = true;
          try {
            await Engine.deleteCached(c.key);
          } catch (e) {
            showChatError('Could not delete the cached model', e);
          }
          renderCached();
        });
        const state = c.complete ? fmtBytes(c.size) : `partial: ${fmtBytes(c.storedBytes)} of ${fmtBytes(c.size)}`;
        return h('li', { dataset: { key: c.key, complete: String(c.complete) }, title: c.urls.join('\n') },
          h('span', {}, h('span', { class: 'cname' }, c.urls.length > 1 ? `${c.name} (+${c.urls.length - 1})` : c.name), h('br'), h('small', { class: 'muted' }, state)),
          del);
      }),
    );
  }
  const s = await storageEstimate();
  $('cached-storage').textContent = s.available ? `Browser storage: ${fmtBytes(s.usage)} used of ${fmtBytes(s.quota)}.` : '';
}

/** The models quantized here, each with Load, Save and Delete. */
async function renderQuantized() {
  const list = $('quantized-list');
  let entries;
  try {
    entries = await quantizedModels();
  } catch (e) {
    list.replaceChildren(h('li', { class: 'muted' }, `Browser storage is not available: ${messageOf(e)}`));
    return;
  }
  list.replaceChildren(
    ...entries.map((q) => {
      const load = h('button', { type: 'button', class: 'small' }, 'Load');
      load.addEventListener('click', () => loadModel(q.file));
      const save = h('a', { class: 'small button', download: q.name, href: '#' }, 'Save');
      // A blob URL made on demand (one per click, released after the download starts).
      save.addEventListener('click', () => {
        save.href = URL.createObjectURL(q.file);
        setTimeout(() => URL.revokeObjectURL(save.href), 60_000);
      });
      const del = h('button', { type: 'button', class: 'small', 'aria-label': `Delete ${q.name}` }, 'Delete');
      del.addEventListener('click', async () => {
        del.disabled = true;
        try {
          await deleteQuantized(q.name);
        } catch (e) {
          showChatError('Could not delete the quantized model', e);
        }
        renderQuantized();
      });
      return h('li', { dataset: { name: q.name } },
        h('span', {}, h('span', { class: 'cname' }, q.name), h('br'), h('small', { class: 'muted' }, fmtBytes(q.size))),
        h('span', {}, load, ' ', save, ' ', del));
    }),
  );
}

async function startQuantize() {
  const files = [...$('quantize-file').files];
  const url = $('quantize-url').value.trim();
  if (!files.length && !url) {
    showChatError('Nothing to quantize', new Error('Enter the URL of a GGUF model or pick a file.'));
    return;
  }
  clearChatError();
  const ctrl = new AbortController();
  const cancel = () => ctrl.abort();
  $('quantize-cancel').addEventListener('click', cancel, { once: true });
  $('quantize-start').disabled = true;
  $('quantize-progress').hidden = false;
  $('quantize-text').textContent = 'Reading the header';
  try {
    const r = await quantize(files.length ? files : url.split(/\s+/), {
      type: $('quantize-type').value,
      allowRequantize: $('quantize-requant').checked,
      signal: ctrl.signal,
      onProgress: (p) => {
        $('quantize-bar').max = p.total || 1;
        $('quantize-bar').value = p.loaded;
        $('quantize-text').textContent = [`${(p.loaded / 1e6).toFixed(1)} / ${(p.total / 1e6).toFixed(1)} MB`, p.tensor, fmtEta(p.etaSec)].filter(Boolean).join(' · ');
      },
    });
    const fellBack = Object.entries(r.fallbacks).map(([t, names]) => `${names.length} to ${t}`).join(', ');
    $('quantize-text').textContent = `Wrote ${r.name}: ${fmtBytes(r.outBytes)}, ${r.converted} of ${r.tensors} tensors converted${fellBack ? ` (${fellBack}: rows the blocks do not divide)` : ''}.`;
  } catch (e) {
    $('quantize-progress').hidden = true;
    if (e && e.name === 'AbortError') showChatError('Quantization cancelled', e);
    else showChatError('Could not quantize the model', e);
  } finally {
    $('quantize-cancel').removeEventListener('click', cancel);
    $('quantize-start').disabled = false;
    renderQuantized();
  }
}

function describeChatSource(source) {
  return describeSource(source);
}

async function loadModel(source) {
  const seq = ++chat.seq;
  clearChatError();
  if (chat.loading) chat.loading.abort();
  if (chat.answering) chat.answering.abort();
  if (chat.engine) {
    const old = chat.engine;
    chat.engine = null;
    renderMemory();
    await old.unload();
  }
  renderModelInfo(null);
  const ctrl = new AbortController();
  chat.loading = ctrl;
  renderProgress({ phase: 'download', loaded: 0, total: 0 });
  $('load-phase').textContent = 'Starting';
  setChatBusy();
  const label = describeChatSource(source);
  try {
    const engine = await Engine.load(source, {
      contextLength: Number($('chat-ctx').value),
      cache: $('chat-use-cache').checked,
      signal: ctrl.signal,
      onProgress: (p) => {
        if (seq === chat.seq) renderProgress(p);
      },
    });
    if (seq !== chat.seq) {
      engine.unload();
      return;
    }
    chat.engine = engine;
    renderModelInfo(engine.info, label);
    renderMemory();
    $('chat-input').focus();
  } catch (e) {
    if (seq !== chat.seq) return;
    if (e && e.name === 'AbortError') showChatError('Loading cancelled', e, source);
    else showChatError('Could not load the model', e, source);
  } finally {
    if (seq === chat.seq) {
      chat.loading = null;
      setChatBusy();
      renderCached();
    }
  }
}

function messageItem(role, text) {
  const li = h('li', { class: `msg ${role}`, dataset: { role } }, h('p', { class: 'text' }), h('div', { class: 'meta' }));
  li.querySelector('.text').textContent = text;
  $('messages-empty').hidden = true;
  $('messages').append(li);
  li.scrollIntoView({ block: 'end' });
  return li;
}

function numberSetting(id, fallback) {
  const v = Number($(id).value);
  return Number.isFinite(v) ? v : fallback;
}

async function sendMessage() {
  const text = $('chat-input').value.trim();
  if (!text || !chat.engine || chat.answering) return;
  clearChatError();
  $('chat-input').value = '';
  chat.messages.push({ role: 'user', content: text });
  messageItem('user', text);
  const li = messageItem('assistant', '');
  li.classList.add('streaming');
  const textEl = li.querySelector('.text');
  const meta = li.querySelector('.meta');
  const ctrl = new AbortController();
  chat.answering = ctrl;
  setChatBusy();
  const system = $('sys-prompt').value.trim();
  const messages = system ? [{ role: 'system', content: system }, ...chat.messages] : [...chat.messages];
  let answer = '';
  let pieces = 0;
  let first = 0;
  try {
    const stream = await chat.engine.chat.completions.create({
      messages,
      stream: true,
      max_tokens: Math.max(1, Math.floor(numberSetting('max-tokens', 256))),
      temperature: Math.max(0, numberSetting('temperature', 0.7)),
      top_p: Math.min(1, Math.max(0, numberSetting('top-p', 0.9))),
      signal: ctrl.signal,
    });
    let last = null;
    for await (const chunk of stream) {
      last = chunk;
      const piece = chunk.choices[0] && chunk.choices[0].delta.content;
      if (piece) {
        pieces++;
        if (!first) first = performance.now();
        else if (pieces > 2) $('tok-s').textContent = ((1000 * (pieces - 1)) / (performance.now() - first)).toFixed(1);
        answer += piece;
        textEl.textContent = answer; // model output is text, never HTML
        li.scrollIntoView({ block: 'end' });
      }
    }
    const t = last && last.timings;
    const u = last && last.usage;
    if (t && t.decode_tok_s) $('tok-s').textContent = t.decode_tok_s.toFixed(1);
    li.dataset.finish = last ? last.choices[0].finish_reason : '';
    if (last && last.aborted) li.dataset.aborted = 'true';
    meta.textContent = [
      u ? `${u.completion_tokens} tokens` : '',
      t ? `${t.decode_tok_s.toFixed(1)} tok/s (prompt ${t.prefill_tok_s.toFixed(1)} tok/s)` : '',
      last && last.aborted ? 'stopped' : last && last.choices[0].finish_reason === 'length' ? 'max tokens reached' : '',
    ].filter(Boolean).join(' · ');
    chat.messages.push({ role: 'assistant', content: answer });
  } catch (e) {
    li.dataset.finish = 'error';
    meta.textContent = 'failed';
    chat.messages.pop(); // the question, so it can be asked again
    showChatError('The model could not answer', e);
  } finally {
    li.classList.remove('streaming');
    chat.answering = null;
    setChatBusy();
    if (chat.engine) chat.engine.refreshInfo().then(renderMemory, () => {});
  }
}

function newChat() {
  if (chat.answering) chat.answering.abort();
  chat.messages = [];
  $('messages').replaceChildren($('messages-empty'));
  $('messages-empty').hidden = false;
  $('tok-s').textContent = '–';
  clearChatError();
}

function setupChat() {
  wireSourcePicker({
    form: 'chat-url-form',
    field: 'chat-url',
    presetAttr: 'chat-preset',
    fileInput: 'chat-file',
    dropZone: $('chat-drop'),
    empty: () => showChatError('No model', new Error('Enter the URL of a GGUF file, pick a preset, or choose a file from your computer.')),
    use: loadModel,
  });
  $('load-cancel').addEventListener('click', () => {
    if (chat.loading) chat.loading.abort();
  });
  $('chat-unload').addEventListener('click', async () => {
    const old = chat.engine;
    chat.engine = null;
    renderModelInfo(null);
    renderMemory();
    setChatBusy();
    if (old) await old.unload();
  });
  $('chat-form').addEventListener('submit', (e) => {
    e.preventDefault();
    sendMessage();
  });
  $('chat-input').addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      sendMessage();
    }
  });
  $('stop').addEventListener('click', () => {
    if (chat.answering) chat.answering.abort();
  });
  $('new-chat').addEventListener('click', newChat);
  setChatBusy();
  renderCached();
  $('quantize-form').addEventListener('submit', (e) => {
    e.preventDefault();
    startQuantize();
  });
  renderQuantized();
}

// ---------------------------------------------------------------- wiring

function main() {
  setupTabs();
  setupCompare({ gpuMemoryBytes, advice: chatAdvice, messageOf });
  setupChat();
  ready().catch((e) => showError('quantweb could not start', messageOf(e), 'Reload the page. If it keeps failing, this browser may not support WebAssembly.'));

  wireSourcePicker({
    form: 'url-form',
    field: 'url',
    presetAttr: 'preset',
    fileInput: 'file',
    dropZone: document.querySelector('.file-pick'),
    empty: () => {
      showError('No URL', 'Enter the URL of a GGUF file, pick an example, or choose a file from your computer.', null);
      $('url').focus();
    },
    use: runInspect,
  });

  $('ctx').addEventListener('input', recompute);
  $('kv-type').addEventListener('change', recompute);
  $('gpu-mem').addEventListener('input', recompute);

  $('params-form').addEventListener('submit', (e) => {
    e.preventDefault();
    renderRule();
  });
  $('param-count').addEventListener('change', renderRule);

  renderCtxLabel();

  deviceInfo().then((d) => {
    state.device = d;
    renderDevice(d);
    if (state.est) recompute();
  });
  storageEstimate().then((s) => {
    state.storage = s;
    renderStorage(s);
    if (state.est) recompute();
  });
}

main();
