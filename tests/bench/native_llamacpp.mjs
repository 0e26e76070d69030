// llama.cpp native (node-llama-cpp 3.21.1, prebuilt linux-x64 CPU build) for `cargo xtask bench`.
// node-llama-cpp lives in tests/oracle/node_modules (`npm ci` there; the bench does it on demand).
//
//   node tests/bench/native_llamacpp.mjs --model FILE.gguf --prompt-file TEXT.txt -p 128 -n 64
//        [--threads 2] [--gpu vulkan|cuda] [--tokenize-only]
//
// --gpu: llama.cpp's Vulkan or CUDA backend (node-llama-cpp's prebuilt linux-x64-vulkan /
// -cuda packages) with every layer on the GPU; it fails when that backend does not load.
//
// Prints one JSON object on the last line of stdout:
// - prompt_ids: BOS (when the vocab adds one) + the tokens of the prompt text, repeated until
//   there are enough (copies joined by a blank line), cut to -p ids in all (one or two fewer if
//   the cut does not survive detokenize + tokenize); prompt_text: those ids as text (without the
//   BOS), which tokenizes back to them. The browser engines are given these ids / this text.
// - without --tokenize-only, also the timings of one greedy run over those ids, after a short
//   warm-up (8 prompt ids, 2 generated tokens):
//   load_s       getLlama + loadModel + createContext, wall clock
//   prefill_tok_s  p / (time from the call to the first sampled token)
//   decode_tok_s   (tokens - 1) / (time from the first to the last sampled token): one token
//                  evaluated per step
//   peak_rss_mb  the node process's peak resident set size (getrusage maxRSS) minus its RSS
//                before the llama.cpp binary was loaded: what llama.cpp added (model weights are
//                mmap'ed, so their pages count once touched)
//   End-of-generation ids are biased to "never", so decode always runs -n tokens (as
//   llama.cpp's ignore_eos does).

import fs from "node:fs";
import path from "node:path";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ORACLE = path.resolve(HERE, "..", "oracle");
// Resolve node-llama-cpp from tests/oracle/node_modules, where it is installed.
const require = createRequire(path.join(ORACLE, "package.json"));

function parseArgs(argv) {
  const a = { model: null, promptFile: null, p: 128, n: 64, threads: 2, gpu: false, tokenizeOnly: false };
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i];
    const next = () => {
      if (i + 1 >= argv.length) throw new Error(`${k} needs a value`);
      return argv[++i];
    };
    if (k === "--model") a.model = next();
    else if (k === "--prompt-file") a.promptFile = next();
    else if (k === "-p") a.p = Number(next());
    else if (k === "-n") a.n = Number(next());
    else if (k === "--threads") a.threads = Number(next());
    else if (k === "--gpu") a.gpu = next();
    else if (k === "--tokenize-only") a.tokenizeOnly = true;
    else throw new Error(`unknown argument ${k}`);
  }
  if (!a.model || !a.promptFile) throw new Error("--model and --prompt-file are required");
  if (!(a.p >= 1 && a.n >= 2)) throw new Error("-p must be >= 1 and -n >= 2");
  if (![false, "vulkan", "cuda"].includes(a.gpu)) throw new Error(`--gpu ${a.gpu}: vulkan or cuda`);
  return a;
}

/** The prompt: BOS (when the vocab wants one) + the ids of the text repeated (joined by a blank
 * line) until there are at least p ids, cut to p; and that cut as text (detokenized), shortened
 * by a token at a time until it tokenizes back to the same ids, so engines that take text (wllama)
 * see the same ids. */
function buildPrompt(model, text, p) {
  const bos = model.tokens.shouldPrependBosToken && model.tokens.bos != null ? [model.tokens.bos] : [];
  const once = model.tokenize(text, false).length;
  if (once === 0) throw new Error("the prompt text has no tokens");
  const copies = Math.ceil(p / once) + 1;
  let body = Array.from(model.tokenize(Array(copies).fill(text).join("\n\n"), false)).slice(0, p - bos.length);
  for (let tries = 0; tries < 16 && body.length > 0; tries++) {
    const cut = model.detokenize(body, false);
    const back = Array.from(model.tokenize(cut, false));
    if (back.length === body.length && back.every((t, i) => t === body[i]))
      return { prompt_ids: [...bos, ...body], prompt_text: cut };
    body = body.slice(0, -1);
  }
  throw new Error("no prefix of the prompt tokenizes back to itself");
}

const mb = (bytes) => bytes / (1024 * 1024);

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const text = fs.readFileSync(args.promptFile, "utf8");
  const rssBefore = process.memoryUsage().rss;
  const t0 = performance.now();
  const { getLlama, TokenBias } = await import(require.resolve("node-llama-cpp"));
  // build: "never": the prebuilt binary only; never download or compile llama.cpp.
  const llama = await getLlama({ gpu: args.gpu, build: "never", logLevel: "error" });
  if (llama.gpu !== args.gpu) throw new Error(`asked for ${args.gpu}, got ${llama.gpu}`);
  const model = await llama.loadModel({ modelPath: args.model, vocabOnly: args.tokenizeOnly });
  const { prompt_ids, prompt_text } = buildPrompt(model, text, args.p);
  const nlc = JSON.parse(fs.readFileSync(path.join(ORACLE, "node_modules", "node-llama-cpp", "package.json"), "utf8"));
  const out = {
    engine: "llama.cpp native",
    version: `node-llama-cpp ${nlc.version}, llama.cpp ${llama.llamaCppRelease.release}, ${llama.buildType} ${args.gpu || "CPU"}`,
    devices: args.gpu ? await llama.getGpuDeviceNames() : [],
    prompt_ids,
    prompt_text,
  };
  if (args.tokenizeOnly) {
    await model.dispose();
    await llama.dispose();
    console.log(JSON.stringify(out));
    return;
  }
  const context = await model.createContext({ contextSize: Math.max(512, args.p + args.n + 16), threads: args.threads });
  const load_s = (performance.now() - t0) / 1000;
  const sequence = context.getSequence();
  const bias = new TokenBias(model.tokenizer);
  const vocab = model.fileInfo.metadata?.tokenizer?.ggml?.tokens?.length ?? 0;
  for (let id = 0; id < vocab; id++) if (model.isEogToken(id)) bias.set(id, "never");

  async function run(ids, n) {
    await sequence.clearHistory();
    const start = performance.now();
    let first = 0, last = 0, count = 0;
    for await (const _t of sequence.evaluate(ids, { temperature: 0, tokenBias: bias })) {
      count++;
      last = performance.now();
      if (count === 1) first = last;
      if (count >= n) break;
    }
    return { start, first, last, count };
  }
  await run(prompt_ids.slice(0, Math.min(8, prompt_ids.length)), 2); // warm-up
  const r = await run(prompt_ids, args.n);
  const peak = process.resourceUsage().maxRSS * 1024;
  Object.assign(out, {
    threads: args.threads,
    prompt_tokens: prompt_ids.length,
    gen_tokens: r.count,
    load_s,
    prefill_ms: r.first - r.start,
    decode_ms: r.last - r.first,
    prefill_tok_s: prompt_ids.length / ((r.first - r.start) / 1000),
    decode_tok_s: r.count > 1 ? (r.count - 1) / ((r.last - r.first) / 1000) : null,
    peak_mem_mb: mb(peak - rssBefore),
    mem_what: "peak RSS of the node process minus its RSS before llama.cpp was loaded",
  });
  await context.dispose();
  await model.dispose();
  await llama.dispose();
  console.log(JSON.stringify(out));
}

main().catch((e) => {
  console.error(`native_llamacpp: ${e.stack || e}`);
  process.exit(1);
});
