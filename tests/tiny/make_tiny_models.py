#!/usr/bin/env python3
"""Writes tiny random-weight GGUF models of the architectures quantweb has no real file for.

    python3 tests/tiny/make_tiny_models.py [--models DIR] [--out DIR] [--only NAME ...] [--sums]

Reads the tokenizers of the two real test models in DIR (default <repo>/models; fetched by
`cargo xtask fetch-models --all`) and writes into --out (default: the same DIR):

    tiny-qwen2.gguf    qwen2  (q/k/v biases, NEOX RoPE, tied output)      SmolLM2 BPE vocab, pre qwen2
    tiny-qwen3.gguf    qwen3  (q/k RMSNorm, heads*head_dim != n_embd)     SmolLM2 BPE vocab, pre qwen2
    tiny-phi3.gguf     phi3   (fused qkv and gate+up, partial NEOX RoPE,  32064-token SPM vocab
                              rope_factors_short/long, attn_factor)       derived from gemma-3's
    tiny-llama3.gguf   llama  (rope_freqs.weight, Llama 3 specials, BOS)  SmolLM2 BPE + 5 specials, pre llama-bpe
    tiny-mistral.gguf  llama  (llama.attention.sliding_window = 8, which  32000-token SPM vocab
                              llama.cpp ignores for `llama`: full attention)

`--sums` prints `sha256  name` lines (the format of tests/tiny/SHA256SUMS). The output is a pure
function of the inputs (whose sha256 are checked), this script, and the pinned `gguf==0.19.0`,
`numpy==2.4.6`: running it twice gives byte-identical files. See tests/tiny/README.md for what
llama.cpp does with each of these architectures and why the weights are scaled as they are.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import gguf
from gguf import GGMLQuantizationType as T
from gguf import TokenType

ROOT = Path(__file__).resolve().parents[2]

# The real models whose tokenizers are copied: (files in concatenation order, sha256).
SMOLLM2 = (["SmolLM2-135M-Instruct.Q4_1.gguf"],
           "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53")
GEMMA3 = ([f"gemma-3-270m-q4_k_m.gguf.part0{i}" for i in range(4)],
          "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818")

# ---------------------------------------------------------------------------------------------
# Chat templates (short versions of the real ones; no raise_exception, so any Jinja renders them)

CHATML_QWEN2 = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
CHATML_QWEN3 = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
LLAMA3 = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}")
PHI3 = (
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\\n' + message['content'] + '<|end|>\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% else %}{{ eos_token }}{% endif %}")
MISTRAL = (
    "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}"
    "{{ '[INST] ' + message['content'] + ' [/INST]' }}{% else %}{{ message['content'] + eos_token }}"
    "{% endif %}{% endfor %}")


# ---------------------------------------------------------------------------------------------
# Tokenizers

@dataclass
class Vocab:
    model: str                      # tokenizer.ggml.model
    pre: str                        # tokenizer.ggml.pre
    tokens: list[str]
    types: list[int]
    scores: list[float] | None = None
    merges: list[str] | None = None
    bos: int | None = None
    eos: int | None = None
    unk: int | None = None
    pad: int | None = None
    add_bos: bool | None = None     # None: key not written (llama.cpp's default for the type)
    template: str | None = None


def sha256_of(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for p in paths:
        with open(p, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
    return h.hexdigest()


def read_fields(paths: list[Path], expect_sha: str, keys: list[str]) -> dict:
    """The given metadata values of a GGUF (byte chunks are joined into a temp file first)."""
    for p in paths:
        if not p.is_file():
            sys.exit(f"missing {p}: run `cargo xtask fetch-models --all` first")
    got = sha256_of(paths)
    if got != expect_sha:
        sys.exit(f"{paths[0].name}: sha256 {got}, expected {expect_sha}")
    tmp = None
    path = paths[0]
    if len(paths) > 1:
        tmp = tempfile.mkdtemp(prefix="quantweb-tiny-")
        path = Path(tmp) / "joined.gguf"
        with open(path, "wb") as out:
            for p in paths:
                with open(p, "rb") as f:
                    shutil.copyfileobj(f, out, 1 << 20)
    try:
        fields = gguf.GGUFReader(path).fields
        return {k: fields[k].contents() for k in keys}
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)


def smollm2_vocab(models: Path) -> dict:
    names, sha = SMOLLM2
    return read_fields([models / n for n in names], sha,
                       ["tokenizer.ggml.tokens", "tokenizer.ggml.token_type", "tokenizer.ggml.merges"])


def bpe_qwen(src: dict, template: str) -> Vocab:
    # Qwen2/Qwen3 GGUFs: bos = <|endoftext|>, eos = <|im_end|>, pad = <|endoftext|>, no BOS added.
    # In SmolLM2's vocab those are ids 0 and 2.
    toks = src["tokenizer.ggml.tokens"]
    assert toks[0] == "<|endoftext|>" and toks[2] == "<|im_end|>"
    return Vocab("gpt2", "qwen2", list(toks), list(src["tokenizer.ggml.token_type"]),
                 merges=list(src["tokenizer.ggml.merges"]), bos=0, eos=2, pad=0, add_bos=False,
                 template=template)


LLAMA3_SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>",
                   "<|end_header_id|>", "<|eot_id|>"]


def bpe_llama3(src: dict) -> Vocab:
    # SmolLM2's vocab and merges plus the Llama 3 special tokens (control) at the end, BOS added.
    toks = list(src["tokenizer.ggml.tokens"]) + LLAMA3_SPECIALS
    types = list(src["tokenizer.ggml.token_type"]) + [int(TokenType.CONTROL)] * len(LLAMA3_SPECIALS)
    n = len(src["tokenizer.ggml.tokens"])
    return Vocab("gpt2", "llama-bpe", toks, types, merges=list(src["tokenizer.ggml.merges"]),
                 bos=n + 0, eos=n + 4, add_bos=True, template=LLAMA3)


def gemma_pieces(models: Path) -> tuple[list[str], list[float], list[int]]:
    names, sha = GEMMA3
    f = read_fields([models / n for n in names], sha,
                    ["tokenizer.ggml.tokens", "tokenizer.ggml.scores", "tokenizer.ggml.token_type"])
    return f["tokenizer.ggml.tokens"], f["tokenizer.ggml.scores"], f["tokenizer.ggml.token_type"]


N_SINGLE_CHARS = 300


def spm_core(pieces) -> tuple[list[str], list[float], list[int]]:
    """A Llama-2-shaped 32000-token SPM vocab cut from gemma-3's (a BPE-trained SentencePiece
    model whose normal pieces are listed in merge order, score = -rank):
    0 <unk>, 1 <s>, 2 </s>, 3..258 the byte tokens <0x00>..<0xFF>, then gemma's first
    multi-character pieces in order (a prefix of the merges, so every piece stays reachable),
    then its 300 most frequent single characters (as Llama 2 lists characters last). Gemma's
    control and user-defined tokens (\\n, HTML tags, ...) are left out: a newline falls back to
    <0x0A> as in Llama 2."""
    toks, scores, types = pieces
    normal = int(TokenType.NORMAL)
    multi = [i for i, t in enumerate(toks) if types[i] == normal and len(t) > 1]
    single = [i for i, t in enumerate(toks) if types[i] == normal and len(t) == 1]
    n_multi = 32000 - 3 - 256 - N_SINGLE_CHARS
    ids = multi[:n_multi] + single[:N_SINGLE_CHARS]
    out_t = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)] + [toks[i] for i in ids]
    out_s = [0.0] * 259 + [float(scores[i]) for i in ids]
    out_y = ([int(TokenType.UNKNOWN), int(TokenType.CONTROL), int(TokenType.CONTROL)]
             + [int(TokenType.BYTE)] * 256 + [normal] * len(ids))
    assert len(out_t) == 32000 and len(set(out_t)) == 32000
    return out_t, out_s, out_y


PHI3_SPECIALS = ["<|endoftext|>", "<|assistant|>", "<|placeholder1|>", "<|placeholder2|>",
                 "<|placeholder3|>", "<|placeholder4|>", "<|system|>", "<|end|>",
                 "<|placeholder5|>", "<|placeholder6|>", "<|user|>"]


def spm_phi3(core) -> Vocab:
    # Phi-3's layout: 32000 Llama-2 tokens, its chat specials at 32000..32010 (control, score
    # -1000 as the converter writes added tokens), padding up to vocab_size 32064 ([PADi], unused).
    toks, scores, types = core
    toks = toks + PHI3_SPECIALS + [f"[PAD{i}]" for i in range(32011, 32064)]
    scores = scores + [-1000.0] * 11 + [-10000.0] * 53
    types = types + [int(TokenType.CONTROL)] * 11 + [int(TokenType.UNUSED)] * 53
    return Vocab("llama", "default", toks, types, scores=scores, bos=1, eos=32000, unk=0, pad=32000,
                 add_bos=True, template=PHI3)


def spm_mistral(core) -> Vocab:
    toks, scores, types = core
    # add_bos not written: llama.cpp's default for SPM (true), as is add_space_prefix.
    return Vocab("llama", "default", list(toks), list(types), scores=list(scores), bos=1, eos=2,
                 unk=0, template=MISTRAL)


# ---------------------------------------------------------------------------------------------
# Models

@dataclass
class Spec:
    name: str
    arch: str
    seed: int
    n_layer: int
    n_embd: int
    n_head: int
    n_head_kv: int
    head_dim: int
    n_ff: int
    n_ctx_train: int
    rope_base: float
    eps: float
    tied: bool
    embd_type: T
    out_type: T | None = None       # untied models only
    rope_dims: int | None = None    # written as rope.dimension_count when set
    rope_freqs: bool = False        # a Llama 3 rope_freqs.weight
    sliding_window: int | None = None  # {arch}.attention.sliding_window


# Weight matrices cycle through these types (layer il, k-th matrix of the layer: index il + k).
MATRIX_TYPES = (T.Q4_0, T.Q8_0, T.F16, T.Q4_0, T.Q8_0, T.F32)

SPECS = {
    "qwen2": Spec("tiny-qwen2", "qwen2", seed=2002, n_layer=3, n_embd=256, n_head=8, n_head_kv=2,
                  head_dim=32, n_ff=768, n_ctx_train=32768, rope_base=1_000_000.0, eps=1e-6,
                  tied=True, embd_type=T.Q8_0),
    "qwen3": Spec("tiny-qwen3", "qwen3", seed=3003, n_layer=3, n_embd=256, n_head=8, n_head_kv=2,
                  head_dim=64, n_ff=768, n_ctx_train=40960, rope_base=1_000_000.0, eps=1e-6,
                  tied=True, embd_type=T.Q4_0),
    "phi3": Spec("tiny-phi3", "phi3", seed=4004, n_layer=2, n_embd=384, n_head=4, n_head_kv=2,
                 head_dim=96, n_ff=1024, n_ctx_train=131072, rope_base=10000.0, eps=1e-5,
                 tied=False, embd_type=T.Q4_0, out_type=T.Q8_0, rope_dims=48,
                 sliding_window=16),  # llama.cpp disables SWA for phi3
    "llama3": Spec("tiny-llama3", "llama", seed=5006, n_layer=2, n_embd=256, n_head=4, n_head_kv=1,
                   head_dim=64, n_ff=768, n_ctx_train=131072, rope_base=500_000.0, eps=1e-5,
                   tied=True, embd_type=T.Q8_0, rope_dims=64, rope_freqs=True),
    "mistral": Spec("tiny-mistral", "llama", seed=6013, n_layer=2, n_embd=256, n_head=8, n_head_kv=4,
                    head_dim=32, n_ff=768, n_ctx_train=32768, rope_base=10000.0, eps=1e-5,
                    tied=False, embd_type=T.Q4_0, out_type=T.F16, rope_dims=32,
                    sliding_window=8),  # llama.cpp ignores it for `llama`
}

# phi3: the original (pre-LongRoPE) context; llama.cpp uses rope_factors_long when the context
# (n_ctx_seq) is larger than this, rope_factors_short otherwise.
PHI3_ORIG_CTX = 4096

# Scales, chosen so that a random model has clear greedy choices (see README.md):
EMBD_STD = 0.1      # token embeddings: small beside the layer outputs (rms ~RES_GAIN), so that a
                    # tied output does not keep predicting the input token
QK_GAIN = 2.0       # q and k components ~ N(0, QK_GAIN^2): attention scores with std ~4
RES_GAIN = 2.5      # attention and FFN outputs added to the residual stream with rms ~RES_GAIN
LOGIT_STD = 64.0    # standard deviation of the output logits


def llama3_rope_freqs(head_dim: int, base: float, factor=8.0, low=1.0, high=4.0, orig_ctx=64):
    """convert_hf_to_gguf's llama3 rope_freqs (LlamaModel.generate_extra_tensors) with a tiny
    original context (64 instead of 8192), so that the factors change the angles at the
    positions a test sees."""
    # Each power in double, rounded to f32: numpy's vectorized f32 power rounds differently
    # on AVX-512 machines, and the file must not depend on the CPU that makes it.
    exps = np.arange(0, head_dim, 2, dtype=np.float32) / head_dim
    freqs = 1.0 / np.array([math.pow(base, float(e)) for e in exps], dtype=np.float32)
    low_wavelen, high_wavelen = orig_ctx / low, orig_ctx / high
    out = []
    for f in freqs:
        wavelen = 2 * math.pi / f
        if wavelen < high_wavelen:
            out.append(1.0)
        elif wavelen > low_wavelen:
            out.append(factor)
        else:
            smooth = (orig_ctx / wavelen - low) / (high - low)
            out.append(1 / ((1 - smooth) / factor + smooth))
    return np.array(out, dtype=np.float32)


def build_tensors(s: Spec, n_vocab: int) -> list[tuple[str, np.ndarray, T]]:
    """(name, f32 array in numpy order = GGUF dims reversed, type). Drawn in a fixed order."""
    rng = np.random.default_rng(s.seed)

    def normal(shape, std):
        return (rng.standard_normal(shape, dtype=np.float32) * np.float32(std)).astype(np.float32)

    def norm_weight(n, gain=1.0):
        return (np.float32(gain) * (1.0 + normal((n,), 0.1))).astype(np.float32)

    d, hd = s.n_embd, s.head_dim
    n_q, n_kv = s.n_head * hd, s.n_head_kv * hd
    out = [("token_embd.weight", normal((n_vocab, d), EMBD_STD), s.embd_type)]
    if s.rope_freqs:
        out.append(("rope_freqs.weight", llama3_rope_freqs(hd, s.rope_base), T.F32))
    if s.arch == "phi3":
        half = s.rope_dims // 2
        # LongRoPE-like factors: short ones near 1, long ones growing with the dimension.
        short = (1.0 + np.abs(normal((half,), 0.5))).astype(np.float32)
        long_ = np.geomspace(1.0, 40.0, half).astype(np.float32) * (1.0 + normal((half,), 0.05))
        out.append(("rope_factors_long.weight", long_.astype(np.float32), T.F32))
        out.append(("rope_factors_short.weight", short, T.F32))

    for il in range(s.n_layer):
        p = f"blk.{il}."
        mats: list[tuple[str, np.ndarray]] = []
        out.append((p + "attn_norm.weight", norm_weight(d), T.F32))
        q_std = (1.0 if s.arch == "qwen3" else QK_GAIN) / math.sqrt(d)
        if s.arch == "phi3":
            mats.append(("attn_qkv.weight", np.concatenate([
                normal((n_q, d), q_std), normal((n_kv, d), q_std), normal((n_kv, d), 1 / math.sqrt(d))])))
        else:
            mats.append(("attn_q.weight", normal((n_q, d), q_std)))
            mats.append(("attn_k.weight", normal((n_kv, d), q_std)))
            mats.append(("attn_v.weight", normal((n_kv, d), 1 / math.sqrt(d))))
        mats.append(("attn_output.weight", normal((d, n_q), RES_GAIN / math.sqrt(n_q))))
        if s.arch == "phi3":
            # fused [gate; up]: llama.cpp's ggml_swiglu takes silu of the first half
            mats.append(("ffn_up.weight", normal((2 * s.n_ff, d), 1.5 / math.sqrt(d))))
        else:
            mats.append(("ffn_gate.weight", normal((s.n_ff, d), 1.5 / math.sqrt(d))))
            mats.append(("ffn_up.weight", normal((s.n_ff, d), 1.5 / math.sqrt(d))))
        mats.append(("ffn_down.weight", normal((d, s.n_ff), RES_GAIN / 1.6 / math.sqrt(s.n_ff))))
        for k, (name, a) in enumerate(mats):
            out.append((p + name, a, MATRIX_TYPES[(il + k) % len(MATRIX_TYPES)]))
        if s.arch == "qwen2":
            out.append((p + "attn_q.bias", normal((n_q,), 0.5), T.F32))
            out.append((p + "attn_k.bias", normal((n_kv,), 0.5), T.F32))
            out.append((p + "attn_v.bias", normal((n_kv,), 0.5), T.F32))
        if s.arch == "qwen3":
            out.append((p + "attn_q_norm.weight", norm_weight(hd, QK_GAIN), T.F32))
            out.append((p + "attn_k_norm.weight", norm_weight(hd, QK_GAIN), T.F32))
        out.append((p + "ffn_norm.weight", norm_weight(d), T.F32))

    # Logits = output · output_norm(x): with a tied output (rows ~ N(0, EMBD_STD)) the norm
    # weight sets their scale; an untied output matrix carries it itself.
    if s.tied:
        out.append(("output_norm.weight", norm_weight(d, LOGIT_STD / (EMBD_STD * math.sqrt(d))), T.F32))
    else:
        out.append(("output_norm.weight", norm_weight(d), T.F32))
        out.append(("output.weight", normal((n_vocab, d), LOGIT_STD / math.sqrt(d)), s.out_type))
    return out


def write_model(path: Path, s: Spec, v: Vocab) -> None:
    w = gguf.GGUFWriter(path, s.arch)
    w.add_type("model")
    w.add_name(s.name)
    w.add_description("random weights for tests; made by quantweb tests/tiny/make_tiny_models.py")
    w.add_context_length(s.n_ctx_train)
    w.add_embedding_length(s.n_embd)
    w.add_block_count(s.n_layer)
    w.add_feed_forward_length(s.n_ff)
    w.add_head_count(s.n_head)
    w.add_head_count_kv(s.n_head_kv)
    w.add_layer_norm_rms_eps(s.eps)
    w.add_rope_freq_base(s.rope_base)
    if s.head_dim * s.n_head != s.n_embd:
        w.add_key_length(s.head_dim)
        w.add_value_length(s.head_dim)
    if s.rope_dims is not None:
        w.add_rope_dimension_count(s.rope_dims)
    if s.arch == "llama":
        w.add_vocab_size(len(v.tokens))
    if s.arch == "phi3":
        scale = s.n_ctx_train / PHI3_ORIG_CTX
        # convert_hf_to_gguf Phi3MiniModel: longrope attn_factor = sqrt(1 + ln(scale)/ln(orig))
        w.add_rope_scaling_attn_factors(math.sqrt(1 + math.log(scale) / math.log(PHI3_ORIG_CTX)))
        w.add_rope_scaling_orig_ctx_len(PHI3_ORIG_CTX)
    if s.sliding_window is not None:
        w.add_sliding_window(s.sliding_window)

    w.add_tokenizer_model(v.model)
    w.add_tokenizer_pre(v.pre)
    w.add_token_list(v.tokens)
    w.add_token_types(v.types)
    if v.scores is not None:
        w.add_token_scores(v.scores)
    if v.merges is not None:
        w.add_token_merges(v.merges)
    if v.bos is not None:
        w.add_bos_token_id(v.bos)
    if v.eos is not None:
        w.add_eos_token_id(v.eos)
    if v.unk is not None:
        w.add_unk_token_id(v.unk)
    if v.pad is not None:
        w.add_pad_token_id(v.pad)
    if v.add_bos is not None:
        w.add_add_bos_token(v.add_bos)
        w.add_add_eos_token(False)
    if v.template is not None:
        w.add_chat_template(v.template)

    for name, a, qtype in build_tensors(s, len(v.tokens)):
        if qtype in (T.F32, T.F16):
            w.add_tensor(name, gguf.quants.quantize(a, qtype))
        else:
            w.add_tensor(name, gguf.quants.quantize(a, qtype), raw_dtype=qtype)
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file(progress=False)
    w.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", type=Path, default=ROOT / "models",
                    help="where the real models are (default <repo>/models)")
    ap.add_argument("--out", type=Path, default=None, help="output directory (default: --models)")
    ap.add_argument("--only", nargs="*", choices=sorted(SPECS), help="write only these models")
    ap.add_argument("--sums", action="store_true", help="print `sha256  file` lines at the end")
    args = ap.parse_args()
    out_dir = args.out or args.models
    out_dir.mkdir(parents=True, exist_ok=True)
    keys = args.only or list(SPECS)

    vocabs = {}
    if any(k in keys for k in ("qwen2", "qwen3", "llama3")):
        src = smollm2_vocab(args.models)
        vocabs["qwen2"] = bpe_qwen(src, CHATML_QWEN2)
        vocabs["qwen3"] = bpe_qwen(src, CHATML_QWEN3)
        vocabs["llama3"] = bpe_llama3(src)
    if any(k in keys for k in ("phi3", "mistral")):
        core = spm_core(gemma_pieces(args.models))
        vocabs["phi3"] = spm_phi3(core)
        vocabs["mistral"] = spm_mistral(core)

    sums = []
    for k in keys:
        s = SPECS[k]
        path = out_dir / f"{s.name}.gguf"
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        write_model(tmp, s, vocabs[k])
        os.replace(tmp, path)
        sha = sha256_of([path])
        sums.append(f"{sha}  {path.name}")
        print(f"wrote {path} ({path.stat().st_size} B) sha256 {sha}", file=sys.stderr)
    if args.sums:
        print("\n".join(sums))


if __name__ == "__main__":
    main()
