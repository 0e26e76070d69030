// Golden files for the engine's end-to-end fidelity tests, produced by the llama.cpp oracle
// (node-llama-cpp 3.21.1, prebuilt linux-x64 CPU build): greedy generations for the two real
// test models, or (--tiny) for the tiny random-weight models of tests/tiny/. See
// tests/oracle/README.md for setup, the choices made here and timings.
//
//   node tests/oracle/make_model_goldens.mjs                 # writes tests/golden/generate-*.json
//   node tests/oracle/make_model_goldens.mjs --out DIR       # writes DIR/generate-*.json instead
//   node tests/oracle/make_model_goldens.mjs --only gemma3   # one model (smollm2 | gemma3)
//   node tests/oracle/make_model_goldens.mjs --tiny          # writes tests/golden/tiny-*.json
//   node tests/oracle/make_model_goldens.mjs --tiny --only tiny-phi3
//   node tests/oracle/make_model_goldens.mjs --quantized target/quantized  # quant-<model>-<TYPE>.json
//   node tests/oracle/make_model_goldens.mjs --bench         # prefill/decode tok/s, writes nothing
//   node tests/oracle/make_model_goldens.mjs --topk          # tests/golden/topk-*.json: top 20 per position,
//                                                            # teacher-forced over generate-*.json
//   node tests/oracle/make_model_goldens.mjs --kl BASE.gguf CANDIDATE.gguf [--only smollm2]
//                                                            # KL(BASE || CANDIDATE) on those continuations, writes nothing
//   ... --threads N   # llama.cpp threads (default 2); the generated ids do not depend on it
//   ... --context N   # context size (default 512; tiny-phi3 switches to rope_factors_long above 4096)
//   ... --runs N      # --bench: timed runs per model after the warm-up (default 3)
//
// The output is a pure function of the models and the oracle build: no timestamps, no timings.

import { createHash } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { getLlama } from "node-llama-cpp";
// A dependency of node-llama-cpp itself (it uses it for JinjaTemplateChatWrapper).
import { Template } from "@huggingface/jinja";
import { oracleInfo } from "./oracle_info.mjs";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(HERE, "..", "..");

const TOP_K_DEBUG = 5;
// --topk: ids kept per position. With the rest of the distribution as one bucket, this is enough
// for a KL figure against another engine (README: "Top-K goldens") at ~140 KB per model.
const TOP_K = 20;

// What each set of models is asked: raw prompts, chat messages (one user turn each, rendered with
// the model's template plus the generation prompt) and the number of greedy tokens.
const REAL_CASES = {
  maxNewTokens: 64,
  raw: [
    "The capital of France is",
    "def fibonacci(n):",
    "Once upon a time, in a small village,",
    "1, 2, 3, 4, 5,",
  ],
  chat: [
    [{ role: "user", content: "What is the capital of France?" }],
    [{ role: "user", content: "Write a haiku about the sea." }],
  ],
};
// Tiny models: a raw prompt long enough (16-19 ids) that prompt + 32 tokens crosses tiny-mistral's
// 8-token sliding window several times over, and one chat turn.
const TINY_CASES = {
  maxNewTokens: 32,
  raw: ["Once upon a time, in a small village, there lived an old clockmaker who"],
  chat: [[{ role: "user", content: "What is the capital of France?" }]],
};

// Gemma 3 turn format for a single user message plus the generation prompt. It is what llama.cpp's
// built-in "gemma" template (llama_chat_apply_template / --chat-template gemma) and node-llama-cpp's
// GemmaChatWrapper produce; used only because the gemma-3-270m base GGUF has no
// tokenizer.chat_template. The leading <bos> is not part of the text: it is prepended as a token.
function renderGemmaTurns(messages) {
  let out = "";
  for (const m of messages) {
    const role = m.role === "assistant" ? "model" : m.role;
    if (role !== "user" && role !== "model") throw new Error(`gemma turns: unsupported role ${m.role}`);
    out += `<start_of_turn>${role}\n${m.content.trim()}<end_of_turn>\n`;
  }
  return out + "<start_of_turn>model\n";
}

const MODELS = {
  smollm2: {
    out: "generate-smollm2.json",
    file: "SmolLM2-135M-Instruct.Q4_1.gguf",
    parts: ["models/SmolLM2-135M-Instruct.Q4_1.gguf"],
    sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
  },
  gemma3: {
    out: "generate-gemma3.json",
    file: "gemma-3-270m-q4_k_m.gguf",
    parts: [0, 1, 2, 3].map((i) => `models/gemma-3-270m-q4_k_m.gguf.part0${i}`),
    sha256: "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
  },
};

// The tiny random-weight models written by tests/tiny/make_tiny_models.py (cargo xtask
// fetch-models --all), checked against tests/tiny/SHA256SUMS like the real ones above.
const TINY_NAMES = ["tiny-qwen2", "tiny-qwen3", "tiny-phi3", "tiny-llama3", "tiny-mistral"];
function tinyModels() {
  const sumsPath = path.join(ROOT, "tests", "tiny", "SHA256SUMS");
  const sums = new Map(fs.readFileSync(sumsPath, "utf8").split("\n").filter((l) => l.trim())
    .map((l) => { const [sha, file] = l.trim().split(/\s+/); return [file, sha]; }));
  return Object.fromEntries(TINY_NAMES.map((name) => {
    const file = `${name}.gguf`;
    if (!sums.has(file)) throw new Error(`${sumsPath}: no line for ${file}`);
    return [name, { out: `${name}.json`, file, parts: [`models/${file}`], sha256: sums.get(file),
      generator: "tests/tiny/make_tiny_models.py" }];
  }));
}

// Models converted by `quantweb quantize` (DIR/<model>-<TYPE>.gguf, e.g. smollm2-Q2_K.gguf from
// SmolLM2 Q4_1 with --type Q2_K --allow-requantize, or tiny-llama3-Q2_K.gguf): one raw prompt each, the file's sha256
// recorded as found. DIR must be inside the workspace (paths are recorded relative to it).
const QUANT_CASES = { maxNewTokens: 64, raw: [REAL_CASES.raw[0]], chat: [] };
function quantizedModels(dir) {
  const specs = {};
  const sources = { ...MODELS, ...tinyModels() };
  for (const file of fs.readdirSync(dir).filter((f) => /^[a-z0-9-]+-[A-Z0-9_]+\.gguf$/.test(f)).sort()) {
    const [model, type] = file.slice(0, -".gguf".length).split(/-(?=[A-Z0-9_]+$)/);
    if (!sources[model]) throw new Error(`${file}: ${model} is not one of ${Object.keys(sources).join(", ")}`);
    const rel = path.relative(ROOT, path.join(dir, file));
    if (rel.startsWith("..")) throw new Error(`--quantized: ${dir} is outside the workspace`);
    const sha256 = createHash("sha256").update(fs.readFileSync(path.join(dir, file))).digest("hex");
    specs[`${model}-${type}`] = { out: `quant-${model}-${type}.json`, file, parts: [rel], sha256,
      generator: `quantweb quantize ${sources[model].parts.join(" ")} ${rel} --type ${type} --allow-requantize` };
  }
  if (Object.keys(specs).length === 0) throw new Error(`--quantized: no <model>-<TYPE>.gguf in ${dir}`);
  return specs;
}

function parseArgs(argv) {
  const args = { out: path.join(ROOT, "tests", "golden"), only: null, bench: false, tiny: false, threads: 2, runs: 3, context: 512 };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === "--out") args.out = path.resolve(argv[++i]);
    else if (a === "--only") args.only = argv[++i];
    else if (a === "--bench") args.bench = true;
    else if (a === "--topk") args.topk = true;
    else if (a === "--kl") args.kl = [path.resolve(argv[++i]), path.resolve(argv[++i])];
    else if (a === "--tiny") args.tiny = true;
    else if (a === "--quantized") args.quantized = path.resolve(argv[++i]);
    else if (a === "--threads") args.threads = Number(argv[++i]);
    else if (a === "--runs") args.runs = Number(argv[++i]);
    else if (a === "--context") args.context = Number(argv[++i]);
    else throw new Error(`unknown argument ${a}`);
  }
  for (const k of ["threads", "runs", "context"])
    if (!(Number.isInteger(args[k]) && args[k] >= 1)) throw new Error(`--${k}: a positive integer`);
  args.models = args.tiny ? tinyModels() : MODELS;
  args.cases = args.tiny ? TINY_CASES : REAL_CASES;
  if (args.quantized) [args.models, args.cases] = [quantizedModels(args.quantized), QUANT_CASES];
  if (args.kl && (args.tiny || args.quantized || args.topk || args.bench))
    throw new Error("--kl: only with the real models' continuations (--only smollm2 | gemma3)");
  if (args.only && !args.models[args.only]) throw new Error(`--only: one of ${Object.keys(args.models).join(", ")}`);
  return args;
}

// Returns {path, sha256, size, cleanup}. A single file is used in place; byte chunks are
// concatenated into a temp file (node-llama-cpp loads split models only in llama.cpp's shard
// format, not raw byte chunks), which cleanup() removes.
function materializeModel(spec) {
  const hash = createHash("sha256");
  let size = 0;
  const files = spec.parts.map((p) => path.join(ROOT, p));
  for (const f of files) if (!fs.existsSync(f)) throw new Error(`missing ${f} (see models/README.md)`);
  let modelPath = files[0];
  let cleanup = () => {};
  if (files.length === 1) {
    const buf = fs.readFileSync(files[0]);
    hash.update(buf);
    size = buf.length;
  } else {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "quantweb-oracle-"));
    modelPath = path.join(dir, spec.file);
    const fd = fs.openSync(modelPath, "w");
    try {
      for (const f of files) {
        const buf = fs.readFileSync(f);
        hash.update(buf);
        fs.writeSync(fd, buf);
        size += buf.length;
      }
    } finally {
      fs.closeSync(fd);
    }
    const onSignal = (sig) => { fs.rmSync(dir, { recursive: true, force: true }); process.exit(sig === "SIGINT" ? 130 : 143); };
    process.once("SIGINT", onSignal).once("SIGTERM", onSignal);
    cleanup = () => {
      process.off("SIGINT", onSignal).off("SIGTERM", onSignal);
      fs.rmSync(dir, { recursive: true, force: true });
    };
  }
  const sha256 = hash.digest("hex");
  if (sha256 !== spec.sha256) {
    cleanup();
    throw new Error(`${spec.file}: sha256 ${sha256}, expected ${spec.sha256}`);
  }
  return { path: modelPath, sha256, size, cleanup };
}

// The prompt text exactly as it is tokenized, and how it was rendered.
function renderChat(model, messages) {
  const tpl = model.fileInfo.metadata?.tokenizer?.chat_template;
  const bosString = model.tokens.bosString ?? "";
  if (typeof tpl === "string" && tpl.length > 0) {
    let text = new Template(tpl).render({
      messages,
      add_generation_prompt: true,
      bos_token: bosString,
      eos_token: model.tokens.eosString ?? "",
    });
    // Like llama.cpp (common/chat.cpp): when the vocab adds BOS itself, a BOS the template
    // rendered at the start is stripped so it is not doubled.
    if (model.tokens.shouldPrependBosToken && bosString && text.startsWith(bosString))
      text = text.slice(bosString.length);
    return { text, source: "gguf tokenizer.chat_template (rendered with @huggingface/jinja)" };
  }
  if (model.fileInfo.metadata?.general?.architecture === "gemma3")
    return {
      text: renderGemmaTurns(messages),
      source: "none in the GGUF; Gemma turn format (llama.cpp built-in 'gemma' template)",
    };
  throw new Error("model has no chat template and no fallback is defined");
}

function promptTokens(model, text, special) {
  const ids = Array.from(model.tokenize(text, special));
  if (model.tokens.shouldPrependBosToken && model.tokens.bos != null) ids.unshift(model.tokens.bos);
  return ids;
}

// Greedy generation: up to maxNewTokens ids; an EOG id ends it and is kept as the last id.
async function generate(sequence, model, prompt, maxNewTokens) {
  await sequence.clearHistory();
  const tokens = [];
  let stop = "max_tokens";
  for await (const t of sequence.evaluate(prompt, { temperature: 0, yieldEogToken: true })) {
    tokens.push(t);
    if (model.isEogToken(t)) { stop = "eog"; break; }
    if (tokens.length >= maxNewTokens) break;
  }
  return { tokens, stop };
}

// A second greedy pass over the same prompt, with the next-token distribution at every step:
// top-5 at the first generated position and, per generated token, the margin ln p(top1) - ln p(top2)
// (= logit(top1) - logit(top2)), so a test can tell a real mismatch from a near-tie flip.
// node-llama-cpp reports softmax probabilities of the raw logits over the whole vocabulary (the
// greedy chain leaves the logits as they are), sorted highest first; ln(p) = logit - logsumexp.
// The pass must choose the same ids as generate(); it throws otherwise.
async function probePass(sequence, model, prompt, expect) {
  await sequence.clearHistory();
  const it = sequence.evaluateWithMetadata(prompt, { probabilities: true }, { temperature: 0, yieldEogToken: true });
  const top5 = [];
  const margins = [];
  try {
    for (let i = 0; i < expect.length; i++) {
      const { value, done } = await it.next();
      if (done) throw new Error(`probe pass ended after ${i} tokens, expected ${expect.length}`);
      if (value.token !== expect[i])
        throw new Error(`probe pass chose ${value.token} at step ${i}, generate() chose ${expect[i]}`);
      const entries = value.probabilities.entries();
      const first = entries.next().value, second = entries.next().value;
      if (first[0] !== value.token) throw new Error(`step ${i}: top-1 ${first[0]} is not the chosen ${value.token}`);
      const m = Math.log(first[1]) - Math.log(second[1]);
      margins.push(Number.isFinite(m) ? round(m, 4) : null);
      if (i === 0) {
        for (const [id, p] of value.probabilities) {
          top5.push({ id, logprob: round(Math.log(p), 4), piece: model.detokenize([id], true) });
          if (top5.length >= TOP_K_DEBUG) break;
        }
      }
    }
  } finally {
    await it.return();
  }
  return { top5, margins };
}

function round(x, digits) {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}

// Pretty JSON: arrays and objects holding only scalars go on one line.
function formatJson(value) {
  const isScalar = (v) => v === null || typeof v !== "object";
  const fmt = (v, indent) => {
    if (isScalar(v)) return JSON.stringify(v);
    const inner = indent + "  ";
    if (Array.isArray(v)) {
      if (v.length === 0) return "[]";
      if (v.every(isScalar)) return `[${v.map((x) => JSON.stringify(x)).join(", ")}]`;
      return `[\n${v.map((x) => inner + fmt(x, inner)).join(",\n")}\n${indent}]`;
    }
    const entries = Object.entries(v).filter(([, x]) => x !== undefined);
    if (entries.length === 0) return "{}";
    if (entries.every(([, x]) => isScalar(x)))
      return `{${entries.map(([k, x]) => `${JSON.stringify(k)}: ${JSON.stringify(x)}`).join(", ")}}`;
    return `{\n${entries.map(([k, x]) => `${inner}${JSON.stringify(k)}: ${fmt(x, inner)}`).join(",\n")}\n${indent}}`;
  };
  const out = fmt(value, "") + "\n";
  if (JSON.stringify(JSON.parse(out)) !== JSON.stringify(value)) throw new Error("formatJson: round trip failed");
  return out;
}

async function makeGolden(llama, key, spec, outDir, threads, CASES, contextSize) {
  const t0 = performance.now();
  const file = materializeModel(spec);
  try {
    const model = await llama.loadModel({ modelPath: file.path });
    const context = await model.createContext({ contextSize, threads });
    const sequence = context.getSequence();
    const md = model.fileInfo.metadata;

    const cases = [];
    const inputs = [
      ...CASES.raw.map((p) => ({ chat: false, prompt: p })),
      ...CASES.chat.map((messages) => {
        const r = renderChat(model, messages);
        return { chat: true, prompt: r.text, messages, template_source: r.source };
      }),
    ];
    for (const [i, inp] of inputs.entries()) {
      const tc = performance.now();
      const prompt_tokens = promptTokens(model, inp.prompt, inp.chat);
      const { tokens, stop } = await generate(sequence, model, prompt_tokens, CASES.maxNewTokens);
      const probe = await probePass(sequence, model, prompt_tokens, tokens);
      const c = { name: `${inp.chat ? "chat" : "raw"}_${i}`, chat: inp.chat, prompt: inp.prompt };
      if (inp.chat) { c.messages = inp.messages; c.template_source = inp.template_source; }
      Object.assign(c, {
        prompt_tokens,
        tokens,
        stop,
        text: model.detokenize(tokens, true),
        first_top5: probe.top5,
        margins: probe.margins,
        min_margin: Math.min(...probe.margins.filter((m) => m !== null)),
      });
      cases.push(c);
      console.log(`${key} ${c.name}: ${prompt_tokens.length} prompt tokens -> ${tokens.length} (${stop}) ` +
        `${JSON.stringify(c.text.slice(0, 60))} min margin ${c.min_margin}, ` +
        `${probe.margins.filter((m) => m !== null && m < 0.5).length} below 0.5 ` +
        `[${((performance.now() - tc) / 1000).toFixed(1)} s]`);
    }

    const golden = {
      about: "Greedy generations from the llama.cpp oracle; made by tests/oracle/make_model_goldens.mjs (see tests/oracle/README.md)",
      oracle: oracleInfo(llama),
      settings: {
        context_size: contextSize,
        threads,
        sampling: "greedy (temperature 0, no penalties), KV cache cleared between prompts",
        max_new_tokens: CASES.maxNewTokens,
        tokens: "generated ids; ends early only at an end-of-generation id, which is kept as the last id (stop: 'eog')",
        text: "detokenize(tokens, specialTokens = true): special tokens rendered as their text",
        prompt_tokens: "model.tokenize(prompt, specialTokens = chat), with BOS prepended when should_prepend_bos",
        margins: "per generated token: ln p(top1) - ln p(top2) = logit(top1) - logit(top2) at that step (null: top2 underflowed); small values mark near-ties where another correct engine may pick differently",
        first_top5: "highest 5 of the next-token distribution at the first generated position: ln softmax of the raw logits (logprob differences = logit differences)",
      },
      model: {
        file: spec.file,
        from: spec.parts,
        sha256: file.sha256,
        size: file.size,
        generator: spec.generator,
        architecture: md.general.architecture,
        n_vocab: llamaVocabSize(model),
        bos_id: model.tokens.bos,
        eos_id: model.tokens.eos,
        eot_id: model.tokens.eot,
        eog_ids: eogIds(model),
        bos_string: model.tokens.bosString,
        eos_string: model.tokens.eosString,
        should_prepend_bos: model.tokens.shouldPrependBosToken,
        has_chat_template: typeof md.tokenizer?.chat_template === "string",
      },
      cases,
    };

    await context.dispose();
    await model.dispose();
    fs.mkdirSync(outDir, { recursive: true });
    const outPath = path.join(outDir, spec.out);
    fs.writeFileSync(outPath, formatJson(golden));
    console.log(`${key}: wrote ${outPath} (${fs.statSync(outPath).size} B) in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  } finally {
    file.cleanup();
  }
}

// Teacher forcing: the prompt as one batch, then each golden id one at a time (passed back to the
// generator as the next input, whatever the sampler picked), exactly the decode calls that made
// the goldens. Yields, for j = 0 .. tokens.length - 1, the distribution that predicts tokens[j],
// with the greedy pick at that position.
async function* teacherForce(sequence, prompt, tokens) {
  await sequence.clearHistory();
  const it = sequence.evaluateWithMetadata(prompt, { probabilities: true }, { temperature: 0, yieldEogToken: true });
  try {
    for (let j = 0; j < tokens.length; j++) {
      const { value, done } = await it.next(j === 0 ? undefined : tokens[j - 1]);
      if (done) throw new Error(`teacher forcing ended after ${j} positions, expected ${tokens.length}`);
      yield value;
    }
  } finally {
    await it.return();
  }
}

// The k likeliest ids of a sorted probability map with their probabilities, and the mass of
// everything else, summed over the tail rather than taken as 1 - sum(top). All are divided by the
// map's own total (in f64): the f32 probabilities add up to as much as 1 + 3e-4 on SmolLM2, a
// common factor that would shift every logprob by as much.
function topK(probabilities, k) {
  const ids = [], probs = [];
  let rest = 0, total = 0;
  for (const [id, p] of probabilities) {
    total += p;
    if (ids.length < k) { ids.push(id); probs.push(p); } else rest += p;
  }
  return { ids, probs: probs.map((p) => p / total), rest: rest / total };
}

function generateGolden(key, spec) {
  const p = path.join(ROOT, "tests", "golden", spec.out);
  if (!fs.existsSync(p)) throw new Error(`missing ${p}: the continuations to teacher-force`);
  return { path: path.relative(ROOT, p), golden: JSON.parse(fs.readFileSync(p, "utf8")) };
}

// --topk: tests/golden/topk-<model>.json. Per case of generate-<model>.json and per generated
// position, llama.cpp's TOP_K likeliest next ids with their logprobs and the log of the remaining
// mass, teacher-forced over the golden continuation. Its own greedy pick must be the golden id at
// every position (same calls, same numerics as when the goldens were made); it throws otherwise.
async function makeTopkGolden(llama, key, spec, outDir, threads, contextSize) {
  const t0 = performance.now();
  const src = generateGolden(key, spec);
  const file = materializeModel(spec);
  try {
    if (src.golden.model.sha256 !== file.sha256) throw new Error(`${src.path} was made from another file`);
    const model = await llama.loadModel({ modelPath: file.path });
    const context = await model.createContext({ contextSize, threads });
    const sequence = context.getSequence();
    const nVocab = llamaVocabSize(model);
    const cases = [];
    for (const c of src.golden.cases) {
      const positions = [];
      let j = 0;
      for await (const value of teacherForce(sequence, c.prompt_tokens, c.tokens)) {
        if (value.token !== c.tokens[j])
          throw new Error(`${c.name}: llama.cpp picks ${value.token} at position ${j}, the golden has ${c.tokens[j]}`);
        if (value.probabilities.size !== nVocab) throw new Error(`${c.name}: ${value.probabilities.size} probabilities for ${nVocab} ids`);
        const top = topK(value.probabilities, TOP_K);
        if (top.probs.some((p) => !(p > 0))) throw new Error(`${c.name} position ${j}: a top-${TOP_K} probability is 0`);
        positions.push({
          ids: top.ids,
          logprobs: top.probs.map((p) => round(Math.log(p), 6)),
          rest: top.rest > 0 ? round(Math.log(top.rest), 6) : null,
        });
        j++;
      }
      cases.push({ name: c.name, positions });
      console.log(`${key} ${c.name}: ${positions.length} positions`);
    }
    const golden = {
      about: `Top-${TOP_K} next-token distributions from the llama.cpp oracle, teacher-forced over the continuations of ${src.path}; made by tests/oracle/make_model_goldens.mjs --topk (see tests/oracle/README.md)`,
      oracle: oracleInfo(llama),
      settings: {
        context_size: contextSize,
        threads,
        from: src.path,
        top_k: TOP_K,
        teacher_forcing: "prompt_tokens evaluated as one batch, then each golden token one at a time (the golden id passed back as the next input), the calls that made the goldens; llama.cpp's greedy pick equals the golden id at every position",
        positions: "per case, one entry per golden token: positions[j] is the distribution that predicts tokens[j]",
        ids: `the ${TOP_K} likeliest ids, likeliest first`,
        logprobs: "their ln softmax of the raw logits (6 decimals): llama.cpp's f32 probabilities divided by their total in f64, which removes the up to 3e-4 by which they miss summing to 1",
        rest: "ln of the probability mass of every other id, summed over the vocabulary's tail in f64 and divided by the same total (6 decimals; null if it underflowed to 0)",
      },
      model: { file: spec.file, sha256: file.sha256, size: file.size },
      cases,
    };
    await context.dispose();
    await model.dispose();
    fs.mkdirSync(outDir, { recursive: true });
    const outPath = path.join(outDir, `topk-${key}.json`);
    fs.writeFileSync(outPath, formatJson(golden));
    console.log(`${key}: wrote ${outPath} (${fs.statSync(outPath).size} B) in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  } finally {
    file.cleanup();
  }
}

// KL(P || Q) restricted to P's k likeliest ids plus one bucket for everything else:
//   sum over t in top_k(P) of p_t ln(p_t / q_t)  +  p_rest ln(p_rest / q_rest),
// p_rest and q_rest being each side's mass outside those ids. Merging ids into a bucket never
// raises a KL (log-sum inequality), so this is a lower bound of the full KL that misses only how
// differently the two spread their tail. crate/tests/fidelity.rs computes the same figure.
function klTopK(pIds, pProbs, pRest, qProb, qRest) {
  let kl = 0;
  for (let i = 0; i < pIds.length; i++) kl += pProbs[i] * Math.log(pProbs[i] / qProb(pIds[i]));
  if (pRest > 0) kl += pRest * Math.log(pRest / qRest);
  return kl;
}

// A probability map as an array indexed by id, divided by its total (see topK).
function normalizedRow(probabilities, nVocab) {
  const row = new Float64Array(nVocab);
  let total = 0;
  for (const [id, p] of probabilities) { row[id] = p; total += p; }
  for (let id = 0; id < nVocab; id++) row[id] /= total;
  return row;
}

// --kl BASE CANDIDATE: both files teacher-forced over the golden continuations of --only's model
// (default smollm2), the top-K-plus-rest KL and the full-vocabulary KL of the candidate from the
// base at every position, and how often their argmaxes agree. A figure for ARCHITECTURE.md:
// prints, writes nothing.
async function klBetween(llama, [basePath, candPath], key, spec, threads, contextSize) {
  const src = generateGolden(key, spec);
  const open = async (p) => {
    const model = await llama.loadModel({ modelPath: p });
    const context = await model.createContext({ contextSize, threads });
    const sha256 = createHash("sha256").update(fs.readFileSync(p)).digest("hex");
    console.log(`${path.basename(p)}: sha256 ${sha256}`);
    return { model, context, sequence: context.getSequence(), nVocab: llamaVocabSize(model) };
  };
  const base = await open(basePath), cand = await open(candPath);
  if (base.nVocab !== cand.nVocab) throw new Error(`vocabularies differ: ${base.nVocab} and ${cand.nVocab} ids`);
  const all = { kl: [], full: [], agree: 0 };
  for (const c of src.golden.cases) {
    // The base's whole distribution at every position of this case, indexed by id.
    const baseRows = [];
    for await (const value of teacherForce(base.sequence, c.prompt_tokens, c.tokens)) {
      baseRows.push({ row: normalizedRow(value.probabilities, base.nVocab), top: topK(value.probabilities, TOP_K) });
    }
    let j = 0, caseKl = 0;
    for await (const value of teacherForce(cand.sequence, c.prompt_tokens, c.tokens)) {
      const { row, top } = baseRows[j++];
      const q = normalizedRow(value.probabilities, cand.nVocab);
      const inTop = new Set(top.ids);
      let qRest = 0;
      for (let id = 0; id < q.length; id++) if (!inTop.has(id)) qRest += q[id];
      const kl = klTopK(top.ids, top.probs, top.rest, (id) => q[id], qRest);
      let full = 0;
      for (let id = 0; id < row.length; id++) if (row[id] > 0) full += row[id] * Math.log(row[id] / q[id]);
      all.kl.push(kl);
      all.full.push(full);
      caseKl += kl;
      if (value.probabilities.keys().next().value === top.ids[0]) all.agree++;
    }
    console.log(`${c.name}: mean KL (top-${TOP_K} + rest) ${(caseKl / j).toFixed(5)} over ${j} positions`);
  }
  const mean = (xs) => xs.reduce((a, b) => a + b, 0) / xs.length;
  const n = all.kl.length;
  console.log(`KL(${path.basename(basePath)} || ${path.basename(candPath)}) over ${n} positions of ${src.path}: ` +
    `mean ${mean(all.kl).toFixed(5)} (top-${TOP_K} + rest), ${mean(all.full).toFixed(5)} (full vocabulary), ` +
    `max ${Math.max(...all.kl).toFixed(4)}; top-1 agreement ${all.agree}/${n} = ${(100 * all.agree / n).toFixed(1)} %`);
  for (const m of [base, cand]) {
    await m.context.dispose();
    await m.model.dispose();
  }
}

// Every id llama.cpp treats as end of generation (llama_vocab_is_eog).
function eogIds(model) {
  const ids = [];
  for (let id = 0; id < llamaVocabSize(model); id++) if (model.isEogToken(id)) ids.push(id);
  return ids;
}

function llamaVocabSize(model) {
  const n = model.fileInfo.metadata?.tokenizer?.ggml?.tokens?.length;
  if (typeof n !== "number") throw new Error("no tokenizer.ggml.tokens in the GGUF");
  return n;
}

// Prefill and decode speed: a 128-token prompt, 64 generated tokens, `runs` runs after a warm-up.
// prefill = 128 / (time to the first sampled token); decode = 63 / (time from the first to the
// 64th sampled token), i.e. one token evaluated per step.
async function bench(llama, key, spec, threads, RUNS, contextSize) {
  const PROMPT_LEN = 128, GEN = 64;
  const file = materializeModel(spec);
  try {
    const model = await llama.loadModel({ modelPath: file.path });
    const context = await model.createContext({ contextSize, threads });
    const sequence = context.getSequence();
    const text = "The history of the printing press begins in the fifteenth century, when Johannes " +
      "Gutenberg combined movable metal type, oil-based inks and a wooden screw press into a system " +
      "that could produce books quickly and cheaply. Within a few decades printing shops had spread " +
      "across Europe, and the number of books in circulation grew from thousands to millions. " +
      "Scholars, merchants and religious reformers all used the new technology to spread their " +
      "ideas, and the consequences for science, politics and education were profound. In this essay " +
      "we look at how the press changed the way people read, wrote and thought, and why its effects " +
      "are still felt today, more than five hundred years after the first printed Bible appeared in " +
      "the German city of Mainz.";
    let prompt = promptTokens(model, text, false);
    if (prompt.length < PROMPT_LEN) throw new Error(`bench prompt has only ${prompt.length} tokens`);
    prompt = prompt.slice(0, PROMPT_LEN);
    const runs = [];
    for (let r = 0; r <= RUNS; r++) {
      await sequence.clearHistory();
      const start = performance.now();
      let first = 0, last = 0, n = 0;
      for await (const _t of sequence.evaluate(prompt, { temperature: 0 })) {
        n++;
        if (n === 1) first = performance.now();
        last = performance.now();
        if (n >= GEN) break;
      }
      if (n !== GEN) throw new Error(`bench: generated ${n} tokens, wanted ${GEN}`);
      const res = { prefill_tok_s: PROMPT_LEN / ((first - start) / 1000), decode_tok_s: (GEN - 1) / ((last - first) / 1000) };
      if (r > 0) runs.push(res); // run 0 is the warm-up
    }
    const med = (xs) => xs.slice().sort((a, b) => a - b)[Math.floor(xs.length / 2)];
    const p = runs.map((r) => r.prefill_tok_s), d = runs.map((r) => r.decode_tok_s);
    const f = (xs) => xs.map((x) => x.toFixed(1)).join(", ");
    console.log(`bench ${key}: prompt ${PROMPT_LEN}, gen ${GEN}, threads ${threads}, batch ${context.batchSize}: ` +
      `prefill median ${med(p).toFixed(1)} tok/s [${f(p)}], decode median ${med(d).toFixed(1)} tok/s [${f(d)}]`);
    await context.dispose();
    await model.dispose();
  } finally {
    file.cleanup();
  }
}

const args = parseArgs(process.argv.slice(2));
// build: "never": use the prebuilt binary only; never try to download or compile llama.cpp.
const llama = await getLlama({ gpu: false, build: "never" });
const keys = args.only ? [args.only] : Object.keys(args.models);
if (args.kl) {
  const key = args.only ?? "smollm2";
  await klBetween(llama, args.kl, key, args.models[key], args.threads, args.context);
} else for (const key of keys) {
  if (args.bench) await bench(llama, key, args.models[key], args.threads, args.runs, args.context);
  else if (args.topk) await makeTopkGolden(llama, key, args.models[key], args.out, args.threads, args.context);
  else await makeGolden(llama, key, args.models[key], args.out, args.threads, args.cases, args.context);
}
await llama.dispose();
