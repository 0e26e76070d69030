// <quantweb-chat>: a docs assistant that runs a language model privately in the reader's
// browser, grounded in the site's pages, with links to the sections it used.
//
//   <script type="module" src="…/quantweb-chat.js"></script>
//   <quantweb-chat model="https://…/model.gguf" index="/quantweb-index.json"></quantweb-chat>
//
// Defining the element costs this module and its styles only. The JS API, the wasm and the
// worker load when the reader opens the widget; the model's header is read then (to show its
// size and the calculator's verdict), and the model itself only after the reader confirms, or
// at once when this site already cached it in the browser. All model work runs in the worker.
// Text from the model, the index and the page goes into the DOM as text, never as HTML.

import { css } from './styles.js';

const LEVEL_TEXT = { fits: 'Fits this device', tight: 'Tight on this device', does_not_fit: 'Does not fit this device' };
const ENGINE_TEXT = { webgpu: 'GPU (WebGPU)', cpu: 'CPU' };
const DEFAULT_CONTEXT = 2048;
const DEFAULT_MAX_TOKENS = 512;
/** Sections retrieved from the index per question, best first; what fits the context is used. */
const RETRIEVED = 8;
const IS_MAC = typeof navigator !== 'undefined' && /Mac|iPhone|iPad/.test(navigator.platform || navigator.userAgent || '');

/** What to tell a reader, by error name: the widget must say what went wrong in words. */
const ADVICE = {
  HttpError: 'The model file could not be fetched from the server. The site may have moved it.',
  NetworkError: 'The network failed, or the model server refused this site (CORS).',
  UnsupportedModelError: 'This model is not supported by quantweb.',
  InvalidModelError: 'The model file is damaged or is not a GGUF model.',
  QuotaExceededError: 'This browser has no room left to store the model.',
  OutOfMemoryError: 'This device has not enough memory for the model.',
  DeviceLostError: 'The GPU was lost (a driver reset or the tab was suspended). Try again.',
  NoWebGPUError: 'This browser cannot run the model.',
  ContextOverflowError: 'Ask a shorter question.',
  ConfigError: 'The site set up the assistant wrongly.',
};

let sheet = null;
/** One stylesheet for every instance (constructed, so no inline style is needed). */
function stylesheet() {
  if (!sheet) {
    sheet = new CSSStyleSheet();
    sheet.replaceSync(css);
  }
  return sheet;
}

let modules = null;
/** The JS API, the retriever and the prompt builder, loaded on first open. */
function loadModules() {
  modules ??= Promise.all([import('../quantweb.js'), import('./retrieve.js'), import('./grounding.js')]).then(
    ([api, retrieve, grounding]) => ({ api, retrieve, grounding }),
    (e) => {
      modules = null;
      throw e;
    },
  );
  return modules;
}

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') el.className = v;
    else if (k === 'text') el.textContent = v;
    else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) if (c !== null && c !== undefined && c !== false) el.append(c);
  return el;
}

function configError(message) {
  return Object.assign(new Error(message), { name: 'ConfigError' });
}

const fmtMB = (b) => (b >= 1e9 ? `${(b / 1e9).toFixed(2)} GB` : `${(b / 1e6).toFixed(b < 1e7 ? 1 : 0)} MB`);

/** "mod+i", "ctrl+shift+k", "none": `mod` is Cmd on Apple devices and Ctrl elsewhere. */
export function parseShortcut(text) {
  const s = String(text ?? 'mod+i').trim().toLowerCase();
  if (s === '' || s === 'none') return null;
  const parts = s.split('+').map((p) => p.trim());
  const key = parts.pop();
  const want = { ctrl: false, meta: false, alt: false, shift: false };
  for (const p of parts) {
    if (p === 'mod') want[IS_MAC ? 'meta' : 'ctrl'] = true;
    else if (p === 'ctrl' || p === 'control') want.ctrl = true;
    else if (p === 'meta' || p === 'cmd') want.meta = true;
    else if (p === 'alt' || p === 'option') want.alt = true;
    else if (p === 'shift') want.shift = true;
    else return null;
  }
  if (!key) return null;
  const label = [want.ctrl && 'Ctrl', want.meta && (IS_MAC ? '⌘' : 'Meta'), want.alt && (IS_MAC ? '⌥' : 'Alt'), want.shift && 'Shift', key.length === 1 ? key.toUpperCase() : key]
    .filter(Boolean)
    .join(IS_MAC ? '' : '+');
  return {
    label,
    matches: (e) => e.key.toLowerCase() === key && e.ctrlKey === want.ctrl && e.metaKey === want.meta && e.altKey === want.alt && e.shiftKey === want.shift,
  };
}

/** The host page's colour scheme: its own markers first, then the reader's preference. */
function hostScheme() {
  for (const el of [document.documentElement, document.body]) {
    if (!el) continue;
    const theme = (el.getAttribute('data-theme') || el.getAttribute('data-bs-theme') || '').toLowerCase();
    if (theme === 'dark' || theme === 'light') return theme;
    if (el.getAttribute('data-md-color-scheme') === 'slate') return 'dark';
    // mdBook's dark themes are classes on <html>.
    if (['dark', 'coal', 'navy', 'ayu'].some((c) => el.classList.contains(c))) return 'dark';
    if (el.classList.contains('light')) return 'light';
  }
  return matchMedia('(prefers-color-scheme: dark)').matches ? 'dark' : 'light';
}

/** Starter questions: a JSON array, or questions separated by `|`. */
function parseStarters(text) {
  if (!text) return [];
  const t = text.trim();
  if (t.startsWith('[')) {
    try {
      const list = JSON.parse(t);
      if (Array.isArray(list)) return list.map(String).filter((q) => q.trim());
    } catch {
      // fall through: a question may start with a bracket
    }
  }
  return t.split('|').map((q) => q.trim()).filter(Boolean);
}

/** Only web links are shown: an index is untrusted, and a `javascript:` link must not appear. */
function safeHref(href) {
  try {
    const u = new URL(href, location.href);
    return u.protocol === 'http:' || u.protocol === 'https:' ? u.href : null;
  } catch {
    return null;
  }
}

export class QuantwebChat extends HTMLElement {
  static observedAttributes = ['placement', 'shortcut', 'theme', 'starter-questions'];

  constructor() {
    super();
    this.attachShadow({ mode: 'open' });
    this.shadowRoot.adoptedStyleSheets = [stylesheet()];
    this._state = 'closed';
    this._history = [];
    this._engine = null;
    this._index = null;
    this._answering = null;
    this._loading = null;
    this._returnFocus = null;
    this._onKey = (e) => this._globalKey(e);
    this._onScheme = () => this._applyScheme();
    this._build();
  }

  connectedCallback() {
    document.addEventListener('keydown', this._onKey, true);
    this._schemeWatch = new MutationObserver(this._onScheme);
    for (const el of [document.documentElement, document.body]) {
      if (el) this._schemeWatch.observe(el, { attributes: true, attributeFilter: ['class', 'data-theme', 'data-bs-theme', 'data-md-color-scheme'] });
    }
    this._media = matchMedia('(prefers-color-scheme: dark)');
    this._media.addEventListener('change', this._onScheme);
    this._applyScheme();
    this._applyPlacement();
  }

  disconnectedCallback() {
    document.removeEventListener('keydown', this._onKey, true);
    this._schemeWatch?.disconnect();
    this._media?.removeEventListener('change', this._onScheme);
  }

  attributeChangedCallback(name) {
    if (!this._ui) return;
    if (name === 'placement') this._applyPlacement();
    else if (name === 'theme') this._applyScheme();
    else if (name === 'shortcut') this._applyPlacement();
    else if (name === 'starter-questions') this._renderStarters();
  }

  get placement() {
    return this.getAttribute('placement') === 'inline' ? 'inline' : 'launcher';
  }

  get contextLength() {
    const n = Number(this.getAttribute('context-length'));
    return Number.isInteger(n) && n >= 256 ? n : DEFAULT_CONTEXT;
  }

  get maxTokens() {
    const n = Number(this.getAttribute('max-tokens'));
    return Number.isInteger(n) && n >= 16 ? n : DEFAULT_MAX_TOKENS;
  }

  get isOpen() {
    return this._state !== 'closed';
  }

  /** Opens the widget; with `question`, asks it as soon as the model is ready. */
  open({ question } = {}) {
    if (question) this._pendingQuestion = String(question);
    if (this.placement === 'launcher' && this._ui.panel.hidden) {
      this._returnFocus = document.activeElement;
      this._ui.panel.hidden = false;
      this._ui.launcher.hidden = true;
    }
    const first = this._state === 'closed';
    if (first) this._state = 'intro';
    this.dispatchEvent(new CustomEvent('quantweb-open', { bubbles: true, composed: true }));
    if (first) this._prepare();
    else if (this._state === 'ready' && this._pendingQuestion) this._askPending();
    this._focusFirst();
  }

  /** Closes the launcher's panel (generation keeps going; reopening shows it). */
  close() {
    if (this.placement !== 'launcher' || this._ui.panel.hidden) return;
    this._ui.panel.hidden = true;
    this._ui.launcher.hidden = false;
    const back = this._returnFocus && this._returnFocus.isConnected ? this._returnFocus : this._ui.launcher;
    back.focus();
  }

  /** Stops the answer being generated, if any. */
  stop() {
    this._answering?.abort();
  }

  /** Unloads the model and deletes it from this browser's storage. */
  async removeModel() {
    this.stop();
    this._loading?.abort();
    const { api } = await loadModules();
    const engine = this._engine;
    this._engine = null;
    if (engine) await engine.unload();
    const entry = await api.Engine.cachedEntry(this._modelUrl()).catch(() => null);
    if (entry) await api.Engine.deleteCached(entry.key);
    this._history = [];
    this._ui.log.replaceChildren();
    this._ui.starters.hidden = false;
    this._state = 'intro';
    await this._prepare('The model was removed from this browser.');
  }

  // ------------------------------------------------------------------ building the UI

  _build() {
    const ui = {};
    ui.launcher = h('button', { class: 'launcher', type: 'button', part: 'launcher', onclick: () => this.open() }, 'Ask AI');
    ui.shortcut = h('kbd', {});
    ui.launcher.append(ui.shortcut);
    ui.title = h('h2', { id: 'qw-title' }, 'Ask the docs');
    ui.closeBtn = h('button', { class: 'close', type: 'button', 'aria-label': 'Close', onclick: () => this.close() }, '×');
    ui.privacy = h('p', { class: 'muted' }, 'This assistant runs a language model in your browser. Nothing you ask leaves this device.');
    ui.card = h('div', { class: 'card', hidden: true, part: 'model-card' });
    ui.notice = h('p', { class: 'muted', role: 'status' });
    ui.startBtn = h('button', { class: 'primary', type: 'button', hidden: true, onclick: () => this._startAction?.() });
    ui.removeBtn = h('button', { type: 'button', hidden: true, onclick: () => this.removeModel() }, 'Remove the model from this browser');
    ui.intro = h('div', { class: 'intro' }, ui.privacy, ui.card, h('div', { class: 'actions' }, ui.startBtn, ui.removeBtn), ui.notice);
    ui.progress = h('progress', { max: 1, value: 0 });
    ui.progressText = h('p', { class: 'muted', 'aria-live': 'polite' });
    ui.cancelBtn = h('button', { type: 'button', onclick: () => this._loading?.abort() }, 'Cancel');
    ui.loading = h('div', { class: 'loading', hidden: true }, h('p', {}, 'Downloading the model…'), ui.progress, ui.progressText, h('div', { class: 'actions' }, ui.cancelBtn));
    ui.starters = h('div', { class: 'starters' });
    ui.log = h('div', { class: 'log', role: 'log', 'aria-live': 'polite', 'aria-label': 'Conversation' });
    ui.chat = h('div', { class: 'chat', hidden: true }, ui.starters, ui.log);
    ui.error = h('div', { class: 'error', role: 'alert', hidden: true, part: 'error' });
    ui.body = h('div', { class: 'body' }, ui.intro, ui.loading, ui.chat, ui.error);
    ui.input = h('textarea', { rows: 1, 'aria-label': 'Your question', placeholder: 'Ask a question about these docs…' });
    ui.input.addEventListener('keydown', (e) => {
      if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
        e.preventDefault();
        this._send();
      }
    });
    ui.sendBtn = h('button', { class: 'primary', type: 'submit' }, 'Ask');
    ui.stopBtn = h('button', { type: 'button', hidden: true, onclick: () => this.stop() }, 'Stop');
    ui.form = h('form', { class: 'ask' }, ui.input, ui.sendBtn, ui.stopBtn);
    ui.form.addEventListener('submit', (e) => {
      e.preventDefault();
      this._send();
    });
    ui.pageOnly = h('input', { type: 'checkbox', id: 'qw-page-only' });
    ui.scope = h('label', { class: 'scope', for: 'qw-page-only' }, ui.pageOnly, 'Ask about this page only');
    ui.manage = h('button', { type: 'button', class: 'link', onclick: () => this.removeModel() }, 'Remove model');
    ui.foot = h('div', { class: 'foot', hidden: true }, ui.form, h('div', { class: 'actions' }, ui.scope, ui.manage));
    ui.panel = h('section', { class: 'panel', part: 'panel', 'aria-labelledby': 'qw-title' }, h('div', { class: 'head' }, ui.title, ui.closeBtn), ui.body, ui.foot);
    ui.panel.addEventListener('keydown', (e) => this._panelKey(e));
    // Keys typed in the widget are not the host's: the shadow root retargets them to this
    // element, and docs themes' one-key shortcuts (MkDocs: n, p, s) would fire on them. The
    // widget's own shortcut listens in the capture phase, before this.
    for (const type of ['keydown', 'keyup', 'keypress']) ui.panel.addEventListener(type, (e) => e.stopPropagation());
    ui.root = h('div', { class: 'root' }, ui.launcher, ui.panel);
    this.shadowRoot.append(ui.root);
    this._ui = ui;
    this._renderStarters();
  }

  _applyPlacement() {
    const ui = this._ui;
    const launcher = this.placement === 'launcher';
    ui.root.dataset.placement = this.placement;
    this._shortcut = parseShortcut(this.getAttribute('shortcut'));
    ui.shortcut.textContent = this._shortcut ? this._shortcut.label : '';
    ui.shortcut.hidden = !this._shortcut;
    ui.closeBtn.hidden = !launcher;
    if (launcher) {
      ui.panel.setAttribute('role', 'dialog');
      ui.panel.setAttribute('aria-modal', 'true');
      ui.panel.hidden = this._state === 'closed' || ui.panel.hidden;
      ui.launcher.hidden = !ui.panel.hidden;
    } else {
      ui.panel.setAttribute('role', 'region');
      ui.panel.removeAttribute('aria-modal');
      ui.panel.hidden = false;
      ui.launcher.hidden = true;
      // Inline, the widget is visible from the start; only its first use loads anything.
      if (this._state === 'closed') this._offer('Start the assistant', () => this.open());
    }
  }

  /** The intro's one primary button: what it says and does now. */
  _offer(label, action) {
    this._ui.startBtn.textContent = label;
    this._startAction = action;
    this._ui.startBtn.hidden = false;
  }

  _applyScheme() {
    const attr = (this.getAttribute('theme') || 'auto').toLowerCase();
    this._ui.root.dataset.scheme = attr === 'dark' || attr === 'light' ? attr : hostScheme();
  }

  _renderStarters() {
    const list = parseStarters(this.getAttribute('starter-questions'));
    this._ui.starters.replaceChildren(...list.map((q) => h('button', { type: 'button', onclick: () => this._ask(q) }, q)));
  }

  _focusFirst() {
    const ui = this._ui;
    const target = [ui.input, ui.startBtn, ui.cancelBtn, ui.closeBtn].find((el) => !el.hidden && el.offsetParent !== null && !el.disabled);
    (target || ui.panel).focus();
  }

  _focusable() {
    return [...this._ui.panel.querySelectorAll('button, textarea, input, a[href]')].filter((el) => !el.disabled && el.offsetParent !== null);
  }

  _globalKey(e) {
    if (!this._shortcut || !this._shortcut.matches(e)) return;
    e.preventDefault();
    e.stopPropagation();
    if (this.placement === 'launcher' && !this._ui.panel.hidden) this.close();
    else this.open();
  }

  _panelKey(e) {
    if (e.key === 'Escape' && this.placement === 'launcher') {
      e.preventDefault();
      this.close();
      return;
    }
    if (e.key !== 'Tab' || this.placement !== 'launcher') return;
    // A modal dialog keeps focus inside until it closes.
    const items = this._focusable();
    if (!items.length) return;
    const active = this.shadowRoot.activeElement;
    const first = items[0];
    const last = items[items.length - 1];
    if (e.shiftKey && (active === first || !items.includes(active))) {
      e.preventDefault();
      last.focus();
    } else if (!e.shiftKey && (active === last || !items.includes(active))) {
      e.preventDefault();
      first.focus();
    }
  }

  _show(view) {
    const ui = this._ui;
    ui.intro.hidden = view !== 'intro';
    ui.loading.hidden = view !== 'loading';
    ui.chat.hidden = view !== 'chat';
    ui.foot.hidden = view !== 'chat';
  }

  _error(e, title) {
    const name = (e && e.name) || 'Error';
    const ui = this._ui;
    ui.error.replaceChildren(h('strong', {}, title), h('span', {}, `${e && e.message ? e.message : String(e)} `), h('span', {}, ADVICE[name] || ''));
    ui.error.dataset.name = name;
    ui.error.hidden = false;
    this.dispatchEvent(new CustomEvent('quantweb-error', { bubbles: true, composed: true, detail: { name, message: e && e.message ? e.message : String(e), title } }));
  }

  _clearError() {
    this._ui.error.hidden = true;
    this._ui.error.replaceChildren();
  }

  _modelUrl() {
    const model = this.getAttribute('model');
    if (!model) throw configError('the <quantweb-chat> element has no model attribute (the URL of a GGUF file)');
    try {
      return new URL(model, location.href).href;
    } catch {
      throw configError(`the model attribute is not a URL: ${model}`);
    }
  }

  // ------------------------------------------------------------------ before the download

  /** Shows the model and the verdict for this device; starts at once if the site cached it. */
  async _prepare(notice = '') {
    const ui = this._ui;
    this._show('intro');
    this._clearError();
    ui.notice.textContent = notice || 'Reading the model’s description…';
    ui.startBtn.hidden = true;
    ui.removeBtn.hidden = true;
    ui.card.hidden = true;
    try {
      const url = this._modelUrl();
      const { api } = await loadModules();
      const cached = await api.Engine.cachedEntry(url).catch(() => null);
      if (cached) {
        ui.notice.textContent = `${notice} The model (${fmtMB(cached.size)}) is stored in this browser: starting it.`.trim();
        ui.removeBtn.hidden = false;
        return this._start();
      }
      // What `Engine.load` would refuse is refused here, before any download.
      const info = await api.checkRunnable(url);
      const fit = await api.fitForThisDevice(info, { contextLength: this.contextLength });
      this._renderCard(info, fit);
      ui.notice.textContent = notice;
      this._offer(`Download ${fmtMB(fit.downloadBytes)} and start`, () => this._start());
      this._focusFirst();
    } catch (e) {
      ui.notice.textContent = '';
      this._state = 'intro';
      this._error(e, 'The assistant cannot start');
      this._offer('Try again', () => this._prepare());
    }
  }

  _renderCard(info, fit) {
    const ui = this._ui;
    const name = info.name || info.architecture || 'model';
    ui.card.replaceChildren(
      h('strong', {}, name),
      h(
        'dl',
        {},
        h('dt', {}, 'Download'),
        h('dd', { 'data-field': 'download' }, `${fmtMB(fit.downloadBytes)}, stored in this browser for every page of this site`),
        h('dt', {}, 'Memory'),
        h('dd', { 'data-field': 'memory' }, `${fmtMB(fit.totalBytes)} with a ${fit.contextLength}-token context`),
        h('dt', {}, 'Runs on'),
        h('dd', { 'data-field': 'engine' }, ENGINE_TEXT[fit.engine] || fit.engine),
      ),
      h('div', { class: 'verdict', 'data-level': fit.level }, LEVEL_TEXT[fit.level] || fit.level),
      ...(fit.reasons.length ? [h('ul', { class: 'reasons' }, fit.reasons.map((r) => h('li', {}, r)))] : []),
    );
    ui.card.hidden = false;
  }

  // ------------------------------------------------------------------ loading

  async _start() {
    const ui = this._ui;
    if (this._loading) return;
    this._state = 'loading';
    this._clearError();
    this._show('loading');
    const ctl = new AbortController();
    this._loading = ctl;
    const onProgress = (p) => {
      if (!p.total) return;
      ui.progress.value = p.loaded / p.total;
      const eta = Number.isFinite(p.etaSec) && p.etaSec > 0 ? `, about ${Math.ceil(p.etaSec)} s left` : '';
      ui.progressText.textContent = `${fmtMB(p.loaded)} of ${fmtMB(p.total)}${eta}`;
    };
    try {
      const { api } = await loadModules();
      const url = this._modelUrl();
      const opts = { contextLength: this.contextLength, onProgress, signal: ctl.signal };
      let engine;
      try {
        engine = await api.Engine.load(url, opts);
      } catch (e) {
        if (e.name !== 'QuotaExceededError') throw e;
        ui.progressText.textContent = `${e.message} Loading without storing it.`;
        engine = await api.Engine.load(url, { ...opts, cache: false });
      }
      // No room, or no private file system (the engine then streams the model by itself): still
      // answer, but the reader should know it downloads on every visit.
      if (engine.info.cacheKey === null) this._storageNote = 'This browser could not store the model: it downloads again on the next visit.';
      this._engine = engine;
      this._state = 'ready';
      this._show('chat');
      ui.manage.hidden = engine.info.source === 'network' && engine.info.cacheKey === null;
      if (this._storageNote) this._addNote(this._storageNote);
      await this._loadIndex();
      this._focusFirst();
      if (this._pendingQuestion) this._askPending();
    } catch (e) {
      this._state = 'intro';
      this._show('intro');
      ui.notice.textContent = '';
      this._error(e, e.name === 'AbortError' ? 'The download was stopped' : 'The model could not be loaded');
      this._offer('Try again', () => this._start());
    } finally {
      this._loading = null;
    }
  }

  /** The site index, or a note that answers come from this page only. */
  async _loadIndex() {
    const src = this.getAttribute('index');
    this._index = null;
    if (!src) return;
    const { retrieve } = await loadModules();
    try {
      this._index = await retrieve.SiteIndex.load(new URL(src, location.href).href);
    } catch (e) {
      this._addNote(`The site index could not be loaded (${e.message}): answers use this page only.`, 'index-error');
      this.dispatchEvent(new CustomEvent('quantweb-error', { bubbles: true, composed: true, detail: { name: e.name || 'IndexError', message: e.message, title: 'The site index could not be loaded' } }));
    }
  }

  _addNote(text, kind = 'note') {
    this._ui.log.append(h('p', { class: 'muted note', 'data-kind': kind }, text));
  }

  // ------------------------------------------------------------------ asking

  _askPending() {
    const q = this._pendingQuestion;
    this._pendingQuestion = null;
    this._ask(q);
  }

  _send() {
    const q = this._ui.input.value.trim();
    if (!q || this._answering) return;
    this._ui.input.value = '';
    this._ask(q);
  }

  async _ask(question) {
    if (this._state !== 'ready' || this._answering) {
      this._pendingQuestion = question;
      if (this._state === 'closed') this.open();
      return;
    }
    const ui = this._ui;
    const { grounding } = await loadModules();
    const engine = this._engine;
    const ctl = new AbortController();
    this._answering = ctl;
    this._clearError();
    ui.starters.hidden = true;
    ui.sendBtn.hidden = true;
    ui.stopBtn.hidden = false;
    ui.log.append(h('div', { class: 'msg user' }, question));
    const answerEl = h('div', { class: 'msg assistant', 'aria-busy': 'true' });
    ui.log.append(answerEl);
    let answer = '';
    try {
      const pageOnly = ui.pageOnly.checked || !this._index;
      const candidates = pageOnly
        ? grounding.rankPageSections(grounding.pageSections(), question)
        : this._index.search(question, { limit: RETRIEVED }).map((r) => ({ ...r.section, href: r.href }));
      const ctx = engine.info.contextLength;
      const answerTokens = Math.min(this.maxTokens, Math.floor(ctx / 4));
      const { messages, used } = await grounding.buildMessages({
        question,
        candidates,
        history: this._history,
        systemPrompt: this.getAttribute('system-prompt'),
        contextLength: ctx,
        answerTokens,
        count: async (t) => (await engine.tokenize(t)).length,
      });
      // Every question is a fresh conversation for the KV cache: the excerpts change each time.
      const stream = await engine.chat.completions.create({ messages, stream: true, max_tokens: answerTokens, temperature: 0.2, signal: ctl.signal });
      for await (const chunk of stream) {
        const piece = chunk.choices[0]?.delta?.content;
        if (piece) {
          answer += piece;
          answerEl.textContent = answer;
          ui.body.scrollTop = ui.body.scrollHeight;
        }
      }
      const sources = this._renderSources(answerEl, used);
      this._history.push({ role: 'user', content: question }, { role: 'assistant', content: answer });
      this.dispatchEvent(new CustomEvent('quantweb-answer', { bubbles: true, composed: true, detail: { question, answer, sources, stopped: ctl.signal.aborted } }));
    } catch (e) {
      if (!answer) answerEl.remove();
      this._error(e, 'No answer');
    } finally {
      answerEl.removeAttribute('aria-busy');
      this._answering = null;
      ui.sendBtn.hidden = false;
      ui.stopBtn.hidden = true;
      if (this.isOpen) ui.input.focus();
    }
  }

  /** The links of the sections the answer was given, deduplicated, in the order used. */
  _renderSources(answerEl, used) {
    const seen = new Set();
    const sources = [];
    for (const s of used) {
      const href = safeHref(s.href);
      if (!href || seen.has(href)) continue;
      seen.add(href);
      sources.push({ href, title: s.title, heading: s.heading });
    }
    if (sources.length) {
      const list = h('ol', { class: 'sources' }, sources.map((s) => h('li', {}, h('a', { href: s.href }, [s.heading, s.title].filter(Boolean).join(' — ') || s.href))));
      answerEl.after(h('div', { class: 'sources-label' }, 'Sources'), list);
    }
    return sources;
  }
}

if (!customElements.get('quantweb-chat')) customElements.define('quantweb-chat', QuantwebChat);
