// What the docs assistant puts in front of the model: sections of the site (from the index) or
// of the current page, fitted into the context with the model's own tokenizer, as quoted
// material under the chat template. Docs text is data here: it is only ever read as text.

import { tokenize } from './retrieve.js';

/** Elements that hold the page's main text, most specific first (as `quantweb index` looks). */
const MAIN = ['main', '[role=main]', 'article', 'body'];
/** Page chrome that is not documentation. */
const CHROME = [
  'nav', 'header', 'footer', 'aside', 'script', 'style', 'noscript', 'template', 'svg', 'form',
  'button', 'select', 'quantweb-chat', '[role=navigation]', '[role=search]', '[aria-hidden=true]',
  '.headerlink', '.sidebar', '#menu-bar', '.nav-chapters', '.mobile-nav-chapters', '.md-sidebar',
  '.md-header', '.md-footer',
].join(',');
const HEADINGS = new Set(['H1', 'H2', 'H3']);
/** Words of one page section at most, so one long section cannot take the whole context. */
const SECTION_WORDS = 300;

const squash = (s) => s.replace(/\s+/g, ' ').trim();

/**
 * The current page's main content as sections `{href, title, heading, text}`, split at h1–h3:
 * what "ask about this page" and a site without an index answer from.
 */
export function pageSections(doc = document) {
  const root = MAIN.map((s) => doc.querySelector(s)).find(Boolean);
  if (!root) return [];
  const copy = root.cloneNode(true);
  for (const el of copy.querySelectorAll(CHROME)) el.remove();
  const title = squash(doc.title || '');
  const page = doc.location ? doc.location.href.split('#')[0] : '';
  const out = [];
  let current = { anchor: '', heading: '', parts: [] };
  const flush = () => {
    const words = squash(current.parts.join(' ')).split(' ').filter(Boolean);
    for (let i = 0; i < words.length; i += SECTION_WORDS) {
      out.push({
        href: current.anchor ? `${page}#${current.anchor}` : page,
        title,
        heading: current.heading,
        text: words.slice(i, i + SECTION_WORDS).join(' '),
      });
    }
  };
  const walk = (node) => {
    for (const child of node.childNodes) {
      if (child.nodeType === 3) current.parts.push(child.data);
      else if (child.nodeType === 1 && HEADINGS.has(child.tagName)) {
        flush();
        const id = child.id || child.querySelector('[id]')?.id || '';
        current = { anchor: id, heading: squash(child.textContent), parts: [] };
      } else if (child.nodeType === 1) {
        walk(child);
        // Block boundaries separate words that the markup ran together.
        current.parts.push(' ');
      }
    }
  };
  walk(copy);
  flush();
  return out;
}

/** Page sections ordered by how many of the question's words they contain (then page order). */
export function rankPageSections(sections, question) {
  const terms = new Set(tokenize(question));
  const hits = (s) => tokenize(`${s.heading} ${s.text}`).filter((t) => terms.has(t)).length;
  return sections
    .map((s, i) => ({ s, i, n: hits(s) }))
    .sort((a, b) => b.n - a.n || a.i - b.i)
    .map((x) => x.s);
}

/** A section as quoted material: numbered, titled, fenced so the model reads it as data. */
function quote(section, n) {
  const where = [section.title, section.heading].filter(Boolean).join(' — ');
  return `[${n}] ${where}\n"""\n${section.text.replaceAll('"""', '"\u200b""')}\n"""`;
}

export const DEFAULT_SYSTEM_PROMPT =
  'You are the documentation assistant of this website. Answer the question from the quoted documentation excerpts only, briefly. If they do not contain the answer, say that you do not know.';

/** Tokens the chat template adds per message, at most, for the models quantweb runs. */
const TEMPLATE_TOKENS = 16;

/**
 * The chat messages for a question, with as many of `candidates` (best first) as fit in the
 * context: `{messages, used}`. `count(text)` is the model's token count. The budget leaves
 * `answerTokens` for the answer; earlier turns (`history`, oldest first) are kept while they
 * take at most a quarter of what is left, so follow-up questions keep their context.
 */
export async function buildMessages({ question, candidates, history = [], systemPrompt, contextLength, answerTokens, count }) {
  const system = systemPrompt || DEFAULT_SYSTEM_PROMPT;
  const ask = `Question: ${question}`;
  let budget = contextLength - answerTokens - (await count(system)) - (await count(ask)) - 3 * TEMPLATE_TOKENS - 8;
  if (budget < 0) {
    const e = new Error(`the question does not fit in the model's ${contextLength}-token context with room for an answer: ask a shorter question`);
    e.name = 'ContextOverflowError';
    throw e;
  }
  const kept = [];
  let historyBudget = Math.floor(budget / 4);
  for (let i = history.length - 2; i >= 0; i -= 2) {
    const pair = history.slice(i, i + 2);
    const cost = (await count(pair.map((m) => m.content).join('\n'))) + 2 * TEMPLATE_TOKENS;
    if (cost > historyBudget) break;
    historyBudget -= cost;
    budget -= cost;
    kept.unshift(...pair);
  }
  const used = [];
  const blocks = [];
  for (const section of candidates) {
    const block = quote(section, used.length + 1);
    const cost = (await count(block)) + 2;
    if (cost > budget) continue;
    budget -= cost;
    used.push(section);
    blocks.push(block);
  }
  const content = blocks.length
    ? `Documentation excerpts:\n\n${blocks.join('\n\n')}\n\n${ask}`
    : `No documentation excerpt matched this question.\n\n${ask}`;
  return {
    messages: [{ role: 'system', content: system }, ...kept, { role: 'user', content }],
    used,
  };
}
