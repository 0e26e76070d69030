#!/usr/bin/env python3
"""Writes tests/golden/quant.json: quantization goldens from llama.cpp itself.

References (both must agree wherever both exist; the script checks it):
- llama.cpp's own quantizer: `ggml_quantize_chunk` (with imatrix = NULL, what llama-quantize
  calls per tensor) in `libggml-base.so` of the oracle build (node-llama-cpp 3.21.1, llama.cpp
  commit 5b4ebc5, in tests/oracle/node_modules), called through ctypes. Every type.
- the `gguf` PyPI package (`gguf.quants.quantize`, numpy): F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0
  (gguf 0.19.0 raises NotImplementedError for the K-quants and IQ4).

(a) synthetic: rows of 512 f32 values from a generator that crate/tests/quantize.rs reproduces
    bit for bit (splitmix64 and exact f32 operations only, no libm): edge-case rows (zeros,
    constants, all-negative, one outlier, sub-blocks of zeros, ties, values on the grids, f16
    overflow and subnormal scales, …), each with the sha256 of its quantized bytes per type, and a
    bulk of random rows with one sha256 per type.
(b) real: llama.cpp's `llama_model_quantize` (libllama of the same build, params `pure` and
    `allow_requantize`, i.e. `llama-quantize --pure --allow-requantize IN OUT TYPE`) applied to
    the two test models for each target type; for a few tensors per model and type (a row length
    that needs llama.cpp's fallback type and one that does not) the sha256 of llama.cpp's output
    bytes, plus the type it chose. crate/tests/quantize.rs requantizes the same tensors.

Usage: python3 tests/golden/make_quant_goldens.py [--keep DIR] [--only synthetic|real]
(from the workspace root; needs
`npm ci` in tests/oracle and the models in models/). --keep DIR also keeps llama.cpp's requantized
model files there (named <model>-<TYPE>.gguf) for comparing whole files with `quantweb quantize`;
--only regenerates one part (the real part takes ~15 minutes on 2 cores, mostly IQ4 on gemma).
The output is deterministic.
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import json
import shutil
import sys
import tempfile
from importlib.metadata import version
from pathlib import Path

import numpy as np
import gguf
from gguf import GGMLQuantizationType as T
from gguf.constants import GGML_QUANT_SIZES

ROOT = Path(__file__).resolve().parents[2]
MODELS = ROOT / "models"
OUT = Path(__file__).resolve().parent / "quant.json"
BINS = ROOT / "tests/oracle/node_modules/@node-llama-cpp/linux-x64/bins/linux-x64"

TYPES = ["F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0",
         "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "IQ4_NL", "IQ4_XS"]
GGUF_PY_TYPES = ["F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0"]
# llama_ftype for a single target type, as llama-quantize names them (Q3_K/Q4_K/Q5_K are its
# aliases for the _M mixes; with --pure only the default type matters).
FTYPE = {"F32": 0, "F16": 1, "Q4_0": 2, "Q4_1": 3, "Q8_0": 7, "Q5_0": 8, "Q5_1": 9, "Q2_K": 10,
         "Q3_K": 12, "Q4_K": 15, "Q5_K": 17, "Q6_K": 18, "IQ4_NL": 25, "IQ4_XS": 30, "BF16": 32}

ROW = 512
SEED = 20261201
N_BULK_ROWS = 256

MODEL_FILES = {
    "smollm2": ["SmolLM2-135M-Instruct.Q4_1.gguf"],
    "gemma3": [f"gemma-3-270m-q4_k_m.gguf.part{i:02d}" for i in range(4)],
}
# Tensors whose requantization is recorded: row lengths 576 / 640 (not a multiple of 256, so
# K-quants fall back) and 1536 / 2048 (ffn_down), plus a 1-D norm that must stay as it is.
REAL_TENSORS = {
    "smollm2": ["blk.0.attn_q.weight", "blk.3.ffn_down.weight", "blk.0.attn_norm.weight"],
    "gemma3": ["blk.0.attn_k.weight", "blk.5.ffn_down.weight", "blk.0.attn_norm.weight"],
}
REAL_TYPES = ["Q8_0", "Q6_K", "Q5_K", "Q4_K", "Q3_K", "Q2_K", "IQ4_NL", "IQ4_XS"]


# ---- the input generator (mirrored in crate/tests/quantize.rs) ----

MASK = (1 << 64) - 1


class SplitMix64:
    def __init__(self, seed: int):
        self.s = seed & MASK

    def next(self) -> int:
        self.s = (self.s + 0x9E3779B97F4A7C15) & MASK
        z = self.s
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
        return z ^ (z >> 31)

    def uniform(self, n: int) -> np.ndarray:
        """n values in [0, 1): the top 24 bits times 2^-24 (exact in f32)."""
        return np.array([self.next() >> 40 for _ in range(n)], dtype=np.float32) * np.float32(2.0 ** -24)

    def gauss(self, n: int) -> np.ndarray:
        """Irwin-Hall: (u1 + u2 + u3 + u4 - 2) * 1.7320508, each step an f32 operation."""
        u = [self.uniform(n) for _ in range(4)]
        s = ((u[0] + u[1]) + u[2]) + u[3]
        return (s - np.float32(2.0)) * np.float32(1.7320508)


F = np.float32
KVALUES = np.array([-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113], dtype=np.float32)
DECADES = np.array([1e-4, 1e-3, 1e-2, 1e-1, 1.0, 1e1, 1e2, 1e3], dtype=np.float32)
idx = np.arange(ROW)

# name -> row, given a generator seeded for that row. Everything is an f32 op on f32 arrays.
EDGE_ROWS = {
    "gauss_1": lambda g: g.gauss(ROW),
    "gauss_0.02": lambda g: g.gauss(ROW) * F(0.02),
    "gauss_1e4": lambda g: g.gauss(ROW) * F(1e4),
    "gauss_1e-6": lambda g: g.gauss(ROW) * F(1e-6),
    "gauss_1e-14": lambda g: g.gauss(ROW) * F(1e-14),
    "uniform_positive": lambda g: g.uniform(ROW),
    "uniform_negative": lambda g: g.uniform(ROW) - F(1.0),
    "zeros": lambda g: np.zeros(ROW, np.float32),
    "constant_0.7": lambda g: np.full(ROW, 0.7, np.float32),
    "constant_-3": lambda g: np.full(ROW, -3.0, np.float32),
    "below_group_eps": lambda g: np.full(ROW, 5e-16, np.float32),
    "sparse_outliers": lambda g: np.where(idx % 37 == 0, g.gauss(ROW) * F(5.0), F(0.0)).astype(np.float32),
    "zero_subblocks": lambda g: np.where((idx // 16) % 3 == 0, F(0.0), g.gauss(ROW)).astype(np.float32),
    "one_outlier": lambda g: np.where(idx == 77, F(1000.0), g.gauss(ROW) * F(0.01)).astype(np.float32),
    "negative_outlier": lambda g: np.where(idx == 300, F(-50.0), g.gauss(ROW)).astype(np.float32),
    "ties_quarter": lambda g: ((idx % 16).astype(np.float32) - F(7.5)) * F(0.25),
    "integers_-8_7": lambda g: (idx % 16).astype(np.float32) - F(8.0),
    "iq4_grid": lambda g: KVALUES[idx % 16] * F(0.01),
    "f16_overflow": lambda g: g.gauss(ROW) * F(1e5),
    "near_f16_max": lambda g: g.gauss(ROW) * F(2e4),
    "decades": lambda g: g.gauss(ROW) * DECADES[(idx // 16) % 8],
    "near_constant": lambda g: F(1.0) + g.gauss(ROW) * F(1e-7),
    "f32_subnormal": lambda g: g.gauss(ROW) * F(1e-39),
    "alternating_sign": lambda g: np.where(idx % 2 == 0, F(1.0), F(-1.0)).astype(np.float32) * (F(1.0) + g.uniform(ROW)),
}


def synthetic_rows() -> tuple[list[tuple[str, np.ndarray]], np.ndarray]:
    edge = []
    for i, (name, make) in enumerate(EDGE_ROWS.items()):
        row = make(SplitMix64(SEED + i)).astype(np.float32)
        assert row.shape == (ROW,) and np.isfinite(row).all(), name
        edge.append((name, row))
    g = SplitMix64(SEED + 1000)
    # Per row a power of two 2^-10 .. 2^5 (exact), from the top 4 bits of one draw.
    scales = np.array([2.0 ** ((g.next() >> 60) - 10) for _ in range(N_BULK_ROWS)], dtype=np.float32)
    bulk = np.stack([g.gauss(ROW) * scales[r] for r in range(N_BULK_ROWS)]).astype(np.float32)
    return edge, bulk


# ---- the references ----

class Ggml:
    """ggml_quantize_chunk from the oracle build's libggml-base.so."""

    def __init__(self):
        lib = BINS / "libggml-base.so"
        if not lib.exists():
            sys.exit(f"{lib} is missing: run `npm ci` in tests/oracle first")
        self.lib = ctypes.CDLL(str(lib), mode=ctypes.RTLD_GLOBAL)
        f = self.lib.ggml_quantize_chunk
        f.restype = ctypes.c_size_t
        f.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64,
                      ctypes.c_int64, ctypes.c_void_p]

    def quantize(self, x: np.ndarray, name: str) -> bytes:
        x = np.ascontiguousarray(x, dtype=np.float32).reshape(-1, ROW)
        block, size = (1, 2) if name in ("F16", "BF16") else GGML_QUANT_SIZES[T[name]]
        out = np.zeros(x.size // block * size, dtype=np.uint8)
        n = self.lib.ggml_quantize_chunk(int(T[name]), x.ctypes.data, out.ctypes.data, 0, x.shape[0], ROW, None)
        assert n == out.size, (name, n, out.size)
        return out.tobytes()


def reference(ggml: Ggml, x: np.ndarray, name: str) -> bytes:
    ours = ggml.quantize(x, name)
    if name in GGUF_PY_TYPES:
        with np.errstate(all="ignore"):
            py = gguf.quants.quantize(x.reshape(-1, ROW), T[name]).tobytes()
        assert py == ours, f"{name}: gguf-py and ggml disagree"
    return ours


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def synthetic_cases(ggml: Ggml) -> dict:
    edge, bulk = synthetic_rows()
    cases = {
        "edge_rows": [name for name, _ in edge],
        "edge_input_sha256_16": [sha(row.astype("<f4").tobytes())[:16] for _, row in edge],
        "bulk_input_sha256": sha(bulk.astype("<f4").tobytes()),
        "types": {},
    }
    for name in TYPES:
        per_row = [sha(reference(ggml, row, name))[:16] for _, row in edge]
        cases["types"][name] = {
            "edge_sha256_16": per_row,
            "bulk_sha256": sha(reference(ggml, bulk, name)),
            "first_edge_row_hex": reference(ggml, edge[0][1], name)[:64].hex(),
        }
    return cases


# ---- whole models through llama_model_quantize ----

class LlamaQuantize:
    """llama_model_quantize of the oracle build's libllama, params patched at their offsets in
    llama_model_quantize_params (5b4ebc5: int32 nthread, ftype, output_tensor_type,
    token_embedding_type, then bools allow_requantize, quantize_output_tensor, only_copy, pure,
    keep_split, …); the defaults come from llama_model_quantize_default_params()."""

    class Params(ctypes.Structure):
        _fields_ = [("raw", ctypes.c_uint8 * 128)]

    def __init__(self):
        ctypes.CDLL(str(BINS / "libggml-base.so"), mode=ctypes.RTLD_GLOBAL)
        ctypes.CDLL(str(BINS / "libggml.v0.4.0.so"), mode=ctypes.RTLD_GLOBAL)
        self.lib = ctypes.CDLL(str(BINS / "libllama.v0.4.0.so"))
        self.lib.llama_model_quantize_default_params.restype = self.Params
        self.lib.llama_model_quantize.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.POINTER(self.Params)]
        self.lib.llama_model_quantize.restype = ctypes.c_uint32

    def run(self, src: Path, dst: Path, name: str) -> None:
        raw = bytearray(bytes(self.lib.llama_model_quantize_default_params().raw))
        assert raw[4:8] == (7).to_bytes(4, "little") and raw[17] == 1, "unexpected default params layout"
        raw[0:4] = (1).to_bytes(4, "little")  # nthread
        raw[4:8] = FTYPE[name].to_bytes(4, "little")
        raw[16] = 1  # allow_requantize
        raw[19] = 1  # pure
        params = self.Params.from_buffer_copy(bytes(raw))
        rc = self.lib.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
        assert rc == 0, f"llama_model_quantize {src} -> {name} failed"


def concatenated(model: str, tmp: Path) -> Path:
    files = [MODELS / f for f in MODEL_FILES[model]]
    for f in files:
        if not f.exists():
            sys.exit(f"{f} is missing: run `cargo xtask fetch-models --all` first")
    if len(files) == 1:
        return files[0]
    joined = tmp / f"{model}.gguf"
    with open(joined, "wb") as out:
        for f in files:
            with open(f, "rb") as src:
                shutil.copyfileobj(src, out, 16 << 20)
    return joined


def real_cases(tmp: Path, keep: Path | None) -> list[dict]:
    llama = LlamaQuantize()
    cases = []
    for model in MODEL_FILES:
        src = concatenated(model, tmp)
        source = {t.name: t for t in gguf.GGUFReader(src).tensors}
        for name in REAL_TYPES:
            dst = (keep or tmp) / f"{model}-{name}.gguf"
            llama.run(src, dst, name)
            out = {t.name: t for t in gguf.GGUFReader(dst).tensors}
            for tensor in REAL_TENSORS[model]:
                t = out[tensor]
                cases.append({
                    "model": model,
                    "target": name,
                    "tensor": tensor,
                    "dims": [int(d) for d in t.shape],
                    "source_type": source[tensor].tensor_type.name,
                    "type": t.tensor_type.name,
                    "sha256": sha(np.asarray(t.data).tobytes()),
                })
            if keep is None:
                dst.unlink()
            print(f"  {model} {name}: " + ", ".join(f"{c['tensor']} -> {c['type']}" for c in cases[-len(REAL_TENSORS[model]):]))
    return cases


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--keep", type=Path, help="keep llama.cpp's requantized models in this folder")
    ap.add_argument("--only", choices=["synthetic", "real"],
                    help="regenerate one part, keeping the other from the existing file")
    args = ap.parse_args()
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
    ggml = Ggml()
    golden = {
        "about": "quantization goldens from llama.cpp's ggml_quantize_chunk / llama_model_quantize "
                 "(oracle build 5b4ebc5) and gguf.quants.quantize; regenerate with "
                 "python3 tests/golden/make_quant_goldens.py",
        "oracle": {"llama_cpp_commit": "5b4ebc5", "node_llama_cpp": "3.21.1"},
        "gguf_version": version("gguf"),
        "numpy_version": np.__version__,
        "gguf_py_types": GGUF_PY_TYPES,
        "seed": SEED,
        "row": ROW,
        "bulk_rows": N_BULK_ROWS,
        "model_files": MODEL_FILES,
    }
    old = json.loads(OUT.read_text()) if args.only else {}
    golden["synthetic"] = old["synthetic"] if args.only == "real" else synthetic_cases(ggml)
    if args.only == "synthetic":
        golden["real"] = old["real"]
    else:
        with tempfile.TemporaryDirectory(prefix="quantweb-quant-goldens-") as tmp:
            golden["real"] = real_cases(Path(tmp), args.keep)
    text = json.dumps(golden, indent=1) + "\n"
    OUT.write_text(text)
    print(f"wrote {OUT} ({len(text)} bytes)")


if __name__ == "__main__":
    main()
