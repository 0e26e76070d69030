// llama.cpp's side of `quantweb compare`: SmolLM2's base (Q4_1) and two requantized files read
// the built-in text (crate/data/eval.txt) in llama-perplexity's windows, and this script
// computes llama-perplexity's KL-divergence statistics from the oracle's full next-token
// distributions (node-llama-cpp's controlledEvaluate with `probabilities`). Writes
// tests/golden/compare-smollm2.json, which crate/tests/compare.rs compares quantweb's figures
// with. See tests/oracle/README.md.
//
//   node tests/oracle/make_compare_golden.mjs [--out DIR] [--threads N]

import fs from "node:fs";
import path from "node:path";
import crypto from "node:crypto";
import { fileURLToPath } from "node:url";
import { getLlama } from "node-llama-cpp";
import { oracleInfo } from "./oracle_info.mjs";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(HERE, "..", "..");
const BASE = "SmolLM2-135M-Instruct.Q4_1.gguf";
const CANDIDATES = { Q8_0: "smollm2-Q8_0.gguf", Q4_K: "smollm2-Q4_K.gguf" };
const CTX = 128;
const CHUNKS = 2;

const args = process.argv.slice(2);
const opt = (name, dflt) => (args.includes(name) ? args[args.indexOf(name) + 1] : dflt);
const outDir = path.resolve(opt("--out", path.join(ROOT, "tests", "golden")));
const threads = Number(opt("--threads", "2"));

const sha256 = (file) => crypto.createHash("sha256").update(fs.readFileSync(file)).digest("hex");

/** Per window, per scored position j (CTX/2 ≤ j ≤ CTX−2): the log-probabilities after token j. */
async function distributions(llama, file, windows) {
  const model = await llama.loadModel({ modelPath: file });
  const context = await model.createContext({ contextSize: CTX, batchSize: CTX, threads });
  const sequence = context.getSequence();
  const nVocab = model.fileInfo.metadata.tokenizer.ggml.tokens.length;
  const out = [];
  for (const w of windows) {
    await sequence.clearHistory();
    const input = w.map((t, j) => (j >= CTX / 2 && j <= CTX - 2 ? [t, { generateNext: { probabilities: true } }] : t));
    const res = await sequence.controlledEvaluate(input);
    for (let j = CTX / 2; j <= CTX - 2; j++) {
      const lp = new Float64Array(nVocab).fill(-Infinity);
      for (const [id, p] of res[j].next.probabilities) lp[id] = Math.log(p);
      out.push({ lp, next: w[j + 1] });
    }
  }
  await context.dispose();
  await model.dispose();
  return { out, model: null };
}

/** llama-perplexity's statistics of one candidate against the base (perplexity.cpp). */
function statistics(base, cand) {
  let nll = 0, nll2 = 0, nllBase = 0, nllBase2 = 0, kld = 0, kld2 = 0, dp2 = 0, sameTop = 0;
  const n = base.length;
  for (let i = 0; i < n; i++) {
    const b = base[i].lp, c = cand[i].lp, next = base[i].next;
    let k = 0, ib = 0, ic = 0;
    for (let t = 0; t < b.length; t++) {
      if (b[t] > -Infinity) k += Math.exp(b[t]) * (b[t] - c[t]);
      if (b[t] > b[ib]) ib = t;
      if (c[t] > c[ic]) ic = t;
    }
    const a = -c[next], z = -b[next];
    nll += a; nll2 += a * a; nllBase += z; nllBase2 += z * z;
    kld += k; kld2 += k * k;
    const dp = Math.exp(-a) - Math.exp(-z);
    dp2 += dp * dp;
    sameTop += ib === ic ? 1 : 0;
  }
  const mean = (s, s2) => ({ value: s / n, err: Math.sqrt(Math.max(0, s2 / n - (s / n) ** 2) / (n - 1)) });
  const r6 = (x) => Math.round(x * 1e6) / 1e6;
  const m = mean(kld, kld2);
  return {
    positions: n,
    ppl: r6(Math.exp(nll / n)),
    ppl_base: r6(Math.exp(nllBase / n)),
    kld: { value: r6(m.value), err: r6(m.err) },
    same_top: r6(sameTop / n),
    rms_dp: r6(Math.sqrt(dp2 / n)),
  };
}

const llama = await getLlama({ gpu: false, build: "never" });
const baseFile = path.join(ROOT, "models", BASE);
const text = fs.readFileSync(path.join(ROOT, "crate", "data", "eval.txt"), "utf8");
const tokModel = await llama.loadModel({ modelPath: baseFile });
// SmolLM2 adds no BOS, so the windows are the text's tokens as they come.
const ids = Array.from(tokModel.tokenize(text));
await tokModel.dispose();
const windows = Array.from({ length: CHUNKS }, (_, i) => ids.slice(i * CTX, (i + 1) * CTX));
const base = (await distributions(llama, baseFile, windows)).out;
const candidates = {};
const files = { [BASE]: sha256(baseFile) };
for (const [type, name] of Object.entries(CANDIDATES)) {
  const file = path.join(ROOT, "models", name);
  files[name] = sha256(file);
  candidates[type] = { file: name, ...statistics(base, (await distributions(llama, file, windows)).out) };
}
const golden = {
  about: "llama-perplexity's KL-divergence statistics from llama.cpp's own next-token distributions; made by tests/oracle/make_compare_golden.mjs",
  oracle: oracleInfo(llama),
  settings: { ctx: CTX, chunks: CHUNKS, text: "crate/data/eval.txt", text_tokens: ids.length, batch: CTX, threads, scored: "positions ctx/2 .. ctx-2 of each window; exact f64 log-probabilities (llama-perplexity stores them as 16 bits)" },
  files,
  base: BASE,
  windows,
  candidates,
};
fs.mkdirSync(outDir, { recursive: true });
fs.writeFileSync(path.join(outDir, "compare-smollm2.json"), JSON.stringify(golden, null, 1) + "\n");
console.log(JSON.stringify(candidates, null, 1));
