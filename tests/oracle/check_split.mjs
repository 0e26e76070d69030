// Checks `quantweb split` against llama.cpp and writes tests/golden/split.json.
//
//   node tests/oracle/check_split.mjs                  # builds target/release/quantweb first
//   node tests/oracle/check_split.mjs --bin PATH       # a quantweb binary already built
//   ... --threads N   # llama.cpp threads (default 2)
//   ... --tokens N    # greedy tokens per prompt (default 32)
//   ... --out FILE    # somewhere else than tests/golden/split.json
//
// For each case below it
// 1. runs `quantweb split INPUTS… OPTIONS OUT` into a temp dir and hashes every shard;
// 2. replays llama.cpp's gguf-split on the same model through llama.cpp's own gguf library
//    (gguf_split_ref.py over node-llama-cpp's libggml-base.so) and requires every shard to be
//    byte-identical (same sha256, same size);
// 3. loads the shards in node-llama-cpp from the first one, and the unsplit model, and requires
//    the same greedy ids for every prompt.
// Only when all of that holds is the golden written: the exact commands and each shard's sha256.
// crate/tests/split.rs re-runs the commands and compares the hashes, so a change to the splitter
// fails CI until this script has verified the new shards with llama.cpp again.
// The output is a pure function of the models, the splitter and the oracle build.

import { createHash } from "node:crypto";
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { getLlama } from "node-llama-cpp";
import { packageDir } from "./oracle_info.mjs";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(HERE, "..", "..");

const SMOLLM2 = ["models/SmolLM2-135M-Instruct.Q4_1.gguf"];
const GEMMA = [0, 1, 2, 3].map((i) => `models/gemma-3-270m-q4_k_m.gguf.part0${i}`);
const SOURCES = {
  smollm2: { parts: SMOLLM2, sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53" },
  gemma3: { parts: GEMMA, sha256: "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818" },
};
// Both ways of cutting (bytes, tensor count), a metadata-only first shard, a tensor larger than
// --max-size (gemma's 178 MB token_embd) alone in its shard, byte chunks as input.
const CASES = [
  { name: "smollm2-max-size", source: "smollm2", options: ["--max-size", "32M"] },
  { name: "smollm2-max-tensors", source: "smollm2", options: ["--max-tensors", "100", "--no-tensor-first-split"] },
  { name: "gemma3-chunks-max-size", source: "gemma3", options: ["--max-size", "20M"] },
];
const PROMPTS = ["The capital of France is", "Once upon a time, in a small village,"];
const CONTEXT_SIZE = 256;

function parseArgs(argv) {
  const args = { bin: null, threads: 2, tokens: 32, out: path.join(ROOT, "tests", "golden", "split.json") };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === "--bin") args.bin = path.resolve(argv[++i]);
    else if (a === "--threads") args.threads = Number(argv[++i]);
    else if (a === "--tokens") args.tokens = Number(argv[++i]);
    else if (a === "--out") args.out = path.resolve(argv[++i]);
    else throw new Error(`unknown argument ${a}`);
  }
  return args;
}

function run(cmd, args, opts = {}) {
  const r = spawnSync(cmd, args, { encoding: "utf8", maxBuffer: 1 << 26, ...opts });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(" ")}: exit ${r.status}\n${r.stderr}`);
  return r.stdout;
}

function sha256File(file) {
  const hash = createHash("sha256");
  const fd = fs.openSync(file, "r");
  const buf = Buffer.alloc(8 << 20);
  try {
    for (let n; (n = fs.readSync(fd, buf, 0, buf.length, null)) > 0;) hash.update(buf.subarray(0, n));
  } finally {
    fs.closeSync(fd);
  }
  return hash.digest("hex");
}

// The source as one file (llama.cpp reads no byte chunks): in place, or concatenated into `dir`.
function singleFile(source, dir) {
  const files = SOURCES[source].parts.map((p) => path.join(ROOT, p));
  for (const f of files) if (!fs.existsSync(f)) throw new Error(`missing ${f} (cargo xtask fetch-models --all)`);
  let file = files[0];
  if (files.length > 1) {
    file = path.join(dir, `${source}.gguf`);
    fs.writeFileSync(file, "");
    for (const f of files) fs.appendFileSync(file, fs.readFileSync(f));
  }
  const sha = sha256File(file);
  if (sha !== SOURCES[source].sha256) throw new Error(`${source}: sha256 ${sha}, expected ${SOURCES[source].sha256}`);
  return file;
}

// gguf-split's --split-max-size: M = 10^6 bytes, G = 10^9.
function refOptions(options) {
  const out = [];
  for (let i = 0; i < options.length; i++) {
    if (options[i] === "--max-size") {
      const s = options[++i];
      const mult = { K: 1e3, M: 1e6, G: 1e9 }[s.at(-1)] ?? 1;
      out.push("--max-size", String(parseInt(s, 10) * mult));
    } else out.push(options[i]);
  }
  return out;
}

async function greedy(llama, modelPath, threads, nTokens) {
  const model = await llama.loadModel({ modelPath });
  const context = await model.createContext({ contextSize: CONTEXT_SIZE, threads });
  const sequence = context.getSequence();
  const out = [];
  for (const prompt of PROMPTS) {
    const ids = Array.from(model.tokenize(prompt, false));
    if (model.tokens.shouldPrependBosToken && model.tokens.bos != null) ids.unshift(model.tokens.bos);
    await sequence.clearHistory();
    const tokens = [];
    for await (const t of sequence.evaluate(ids, { temperature: 0, yieldEogToken: true })) {
      tokens.push(t);
      if (model.isEogToken(t) || tokens.length >= nTokens) break;
    }
    out.push({ prompt, prompt_tokens: ids, tokens, text: model.detokenize(tokens, true) });
  }
  await context.dispose();
  await model.dispose();
  return out;
}

const args = parseArgs(process.argv.slice(2));
let bin = args.bin;
if (!bin) {
  run("cargo", ["build", "--release", "-p", "quantweb"], { cwd: ROOT, stdio: ["ignore", "ignore", "inherit"] });
  bin = path.join(ROOT, "target", "release", "quantweb");
}
const libDir = path.join(packageDir("@node-llama-cpp/linux-x64"), "bins", "linux-x64");
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "quantweb-split-oracle-"));
const cleanup = () => fs.rmSync(tmp, { recursive: true, force: true });
process.once("SIGINT", () => { cleanup(); process.exit(130); }).once("SIGTERM", () => { cleanup(); process.exit(143); });

const llama = await getLlama({ gpu: false, build: "never" });
const cases = [];
const singleRuns = {};
try {
  for (const c of CASES) {
    const src = SOURCES[c.source];
    const single = singleFile(c.source, tmp);
    const dir = fs.mkdtempSync(path.join(tmp, `${c.name}-`));
    const prefix = path.join(dir, "OUT");
    const t0 = Date.now();
    const stdout = run(bin, ["split", ...src.parts, ...c.options, prefix], { cwd: ROOT });
    const shards = stdout.trim().split("\n").map((line) => {
      const m = line.match(/^(\S+)\s+(\d+) tensors\s+(\d+) bytes$/);
      if (!m) throw new Error(`unexpected quantweb split output: ${line}`);
      const file = m[1];
      const size = fs.statSync(file).size;
      if (size !== Number(m[3])) throw new Error(`${file}: ${size} bytes, quantweb said ${m[3]}`);
      return { file: path.basename(file), n_tensors: Number(m[2]), bytes: size, sha256: sha256File(file) };
    });
    console.error(`${c.name}: ${shards.length} shards in ${Date.now() - t0} ms`);

    // llama.cpp's gguf-split, replayed through its gguf library, must give the same bytes.
    const ref = JSON.parse(run("python3", [path.join(HERE, "gguf_split_ref.py"), libDir, single, ...refOptions(c.options)],
      { env: { ...process.env, LD_LIBRARY_PATH: libDir } }));
    if (ref.length !== shards.length) throw new Error(`${c.name}: gguf-split makes ${ref.length} shards, quantweb ${shards.length}`);
    ref.forEach((r, i) => {
      const s = shards[i];
      if (r.sha256 !== s.sha256 || r.bytes !== s.bytes || r.n_tensors !== s.n_tensors)
        throw new Error(`${c.name}: shard ${i + 1} differs from gguf-split's: ${JSON.stringify(r)} vs ${JSON.stringify(s)}`);
    });

    // llama.cpp loads the shards from the first one; greedy output must equal the single file's.
    singleRuns[c.source] ??= await greedy(llama, single, args.threads, args.tokens);
    const split = await greedy(llama, path.join(dir, shards[0].file), args.threads, args.tokens);
    split.forEach((g, i) => {
      const want = singleRuns[c.source][i];
      if (JSON.stringify(g.tokens) !== JSON.stringify(want.tokens) ||
          JSON.stringify(g.prompt_tokens) !== JSON.stringify(want.prompt_tokens))
        throw new Error(`${c.name}: greedy ids for ${JSON.stringify(g.prompt)} differ: ${g.tokens} vs single file ${want.tokens}`);
    });
    console.error(`${c.name}: byte-identical to gguf-split; greedy equal to the single file`);
    cases.push({
      name: c.name,
      command: `quantweb split ${[...src.parts, ...c.options].join(" ")} OUT`,
      inputs: src.parts,
      options: c.options,
      source_sha256: src.sha256,
      shards: shards.map(({ file, ...s }) => ({ suffix: file.slice("OUT".length), ...s })),
      byte_identical_to_gguf_split: true,
      greedy: split.map((g) => ({ ...g, equal_to_single_file: true })),
    });
    fs.rmSync(dir, { recursive: true, force: true });
  }
} finally {
  cleanup();
}

const nlc = JSON.parse(fs.readFileSync(path.join(packageDir("node-llama-cpp"), "package.json"), "utf8"));
const golden = {
  about: "quantweb split, verified against llama.cpp by tests/oracle/check_split.mjs: each case's shards are byte-identical to what llama.cpp's gguf-split writes (replayed through llama.cpp's gguf library, gguf_split_ref.py), and node-llama-cpp loading them from the first shard gives the same greedy ids as the unsplit model. crate/tests/split.rs re-runs each command and requires these sha256s.",
  oracle: {
    node_llama_cpp: nlc.version,
    llama_cpp_release: llama.llamaCppRelease.release,
    gguf_library: "libggml-base.so of @node-llama-cpp/linux-x64",
  },
  settings: { context_size: CONTEXT_SIZE, threads: args.threads, max_new_tokens: args.tokens, sampling: "greedy" },
  cases,
};
await llama.dispose();
fs.writeFileSync(args.out, JSON.stringify(golden, null, 2) + "\n");
console.error(`wrote ${path.relative(ROOT, args.out)}`);
