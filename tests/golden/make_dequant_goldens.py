#!/usr/bin/env python3
"""Writes tests/golden/dequant.json: dequantization goldens from the `gguf` package.

The reference is `gguf.quants.dequantize` (gguf-py's numpy dequantizer, tested bit-exact
against ggml). crate/tests/dequant.rs checks `quantweb::quant::dequantize` against this file
bit for bit.

(a) synthetic: for each supported type a few blocks of seeded pseudo-random bytes, with the f16
    scale fields overwritten by finite values (random modest ones plus the edges: negative,
    +0/-0, subnormal, the largest f16) and some blocks whose quant bytes are all 0xFF (max
    nibbles) or all 0x00. F32/F16/BF16 get ±0, ±inf, subnormals and random finite values (no
    NaN). Expected outputs are stored as the hex of their little-endian f32 bytes.
(b) real: up to 2 whole tensors of every type present in the two test models (preferring a
    tensor that spans two of the gemma part files), recorded by absolute byte offset, length and
    the sha256 of the dequantized little-endian f32 output.

Usage: python3 tests/golden/make_dequant_goldens.py   (from the workspace root; needs the
models in models/, see `cargo xtask fetch-models`). The output is deterministic.
"""

from __future__ import annotations

import hashlib
import json
import os
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
OUT = Path(__file__).resolve().parent / "dequant.json"

SEED = 20261130
N_BLOCKS = 6
MAX_REAL_TENSOR_BYTES = 32 << 20  # every SmolLM2 tensor; not gemma's 178 MB token_embd

SUPPORTED = ["F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0",
             "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "IQ4_NL", "IQ4_XS"]

# Byte offsets of the f16 fields inside each block (ggml-common.h): (scale, min-or-None).
F16_FIELDS = {
    "Q4_0": (0, None), "Q4_1": (0, 2), "Q5_0": (0, None), "Q5_1": (0, 2), "Q8_0": (0, None),
    "Q2_K": (80, 82), "Q3_K": (108, None), "Q4_K": (0, 2), "Q5_K": (0, 2), "Q6_K": (208, None),
    "IQ4_NL": (0, None), "IQ4_XS": (0, None),
}

MODEL_FILES = {
    "smollm2": ["SmolLM2-135M-Instruct.Q4_1.gguf"],
    "gemma3": [f"gemma-3-270m-q4_k_m.gguf.part{i:02d}" for i in range(4)],
}


def f32_hex(values: np.ndarray) -> str:
    assert values.dtype == np.float32, values.dtype
    return values.astype("<f4").tobytes().hex()


def modest_f16(rng: np.random.Generator) -> float:
    """A finite f16 of either sign, magnitude in about [2^-12, 2^4]."""
    return float(np.float16(rng.uniform(0.5, 1.0) * 2.0 ** int(rng.integers(-11, 5)) * rng.choice([-1, 1])))


def set_f16(block: np.ndarray, offset: int | None, value: float | int) -> None:
    """Writes an f16 field; an int is taken as raw bits (for -0 and subnormals)."""
    if offset is None:
        return
    bits = value if isinstance(value, int) else int(np.array(value, dtype=np.float16).view(np.uint16))
    block[offset:offset + 2] = np.array([bits], dtype="<u2").view(np.uint8)


def synthetic_blocks(name: str, rng: np.random.Generator) -> tuple[np.ndarray, list[str]]:
    """N_BLOCKS blocks of `name`, each with its own edge case (described in the returned notes)."""
    _, type_size = GGML_QUANT_SIZES[T[name]]
    d_off, m_off = F16_FIELDS[name]
    blocks = rng.integers(0, 256, size=(N_BLOCKS, type_size), dtype=np.uint8)
    notes = []
    for i, block in enumerate(blocks):
        if i == 0:
            d, m, note = modest_f16(rng), modest_f16(rng), "random bytes, random scales"
        elif i == 1:
            block[:] = 0xFF
            d, m, note = -1.5, -0.25, "all bytes 0xFF (max quants/scales), negative scales"
        elif i == 2:
            d, m, note = 0x0000, 0x8000, "random bytes, scale +0, min -0"
        elif i == 3:
            block[:] = 0x00
            d, m, note = 0x0001, 65504.0, "all bytes 0x00, subnormal scale 2^-24, min 65504"
        elif i == 4:
            d, m, note = 65504.0, 0x83FF, "random bytes, scale 65504, min largest negative subnormal"
        else:
            d, m, note = abs(modest_f16(rng)), -abs(modest_f16(rng)), "random bytes, d > 0, min < 0"
        set_f16(block, d_off, d)
        set_f16(block, m_off, m)
        notes.append(note)
    return blocks.reshape(-1), notes


def synthetic_floats(name: str, rng: np.random.Generator) -> tuple[np.ndarray, list[str]]:
    """Special values (no NaN) then random finite ones, as raw little-endian bytes."""
    if name == "F32":
        special = [0x00000000, 0x80000000, 0x7F800000, 0xFF800000, 0x00000001, 0x807FFFFF,
                   0x00800000, 0x7F7FFFFF, 0xFF7FFFFF, 0x3F800000, 0xBF800000]
        rand = rng.integers(0, 1 << 32, size=53, dtype=np.uint64).astype(np.uint32)
        rand = rand[(rand & 0x7F800000) != 0x7F800000]
        bits = np.concatenate([np.array(special, dtype=np.uint32), rand]).astype("<u4")
    else:
        exp_mask = 0x7C00 if name == "F16" else 0x7F80
        special = [0x0000, 0x8000, exp_mask, 0x8000 | exp_mask, 0x0001, 0x8001,
                   exp_mask - 1, 0x8000 | (exp_mask - 1)]
        special += [0x03FF, 0x0400, 0x3C00] if name == "F16" else [0x007F, 0x0080, 0x3F80]
        rand = rng.integers(0, 1 << 16, size=53, dtype=np.uint32).astype(np.uint16)
        rand = rand[(rand & exp_mask) != exp_mask]
        bits = np.concatenate([np.array(special, dtype=np.uint16), rand]).astype("<u2")
    return bits.view(np.uint8), ["±0, ±inf, subnormals, extremes, ±1, then random finite values"]


def reference(data: np.ndarray, name: str) -> np.ndarray:
    out = gguf.quants.dequantize(data, T[name])
    assert out.dtype == np.float32, (name, out.dtype)
    return out.reshape(-1)


def synthetic_cases() -> list[dict]:
    rng = np.random.default_rng(SEED)
    cases = []
    for name in SUPPORTED:
        make = synthetic_floats if name in ("F32", "F16", "BF16") else synthetic_blocks
        data, notes = make(name, rng)
        out = reference(data, name)
        assert not np.isnan(out).any(), name
        cases.append({
            "type": name,
            "blocks": notes,
            "input_hex": data.tobytes().hex(),
            "expected_f32_le_hex": f32_hex(out),
        })
    return cases


def concatenated(model: str, tmp: Path) -> Path:
    files = [MODELS / f for f in MODEL_FILES[model]]
    for f in files:
        if not f.exists():
            sys.exit(f"{f} is missing: run `cargo xtask fetch-models` first")
    if len(files) == 1:
        return files[0]
    joined = tmp / f"{model}.gguf"
    with open(joined, "wb") as out:
        for f in files:
            with open(f, "rb") as src:
                shutil.copyfileobj(src, out, 16 << 20)
    return joined


def real_cases(model: str, path: Path) -> list[dict]:
    part_ends = np.cumsum([os.path.getsize(MODELS / f) for f in MODEL_FILES[model]])

    def parts_spanned(t) -> int:
        start, end = int(t.data_offset), int(t.data_offset) + int(t.n_bytes)
        return int(np.searchsorted(part_ends, end - 1, side="right") - np.searchsorted(part_ends, start, side="right"))

    reader = gguf.GGUFReader(path)
    raw = np.memmap(path, dtype=np.uint8, mode="r")
    by_type: dict[str, list] = {}
    for t in reader.tensors:
        by_type.setdefault(t.tensor_type.name, []).append(t)
    cases = []
    for name in sorted(by_type):
        assert name in SUPPORTED, f"{model}: unexpected type {name}"
        candidates = [t for t in by_type[name] if int(t.n_bytes) <= MAX_REAL_TENSOR_BYTES]
        # Tensors spanning two part files first (a stable sort keeps file order otherwise).
        candidates.sort(key=lambda t: -parts_spanned(t))
        for t in candidates[:2]:
            offset, n_bytes = int(t.data_offset), int(t.n_bytes)
            data = np.array(raw[offset:offset + n_bytes])
            assert data.tobytes() == np.asarray(t.data).tobytes(), t.name
            out = reference(data, name)
            assert out.size == int(t.n_elements), t.name
            cases.append({
                "model": model,
                "tensor": t.name,
                "type": name,
                "offset": offset,
                "n_bytes": n_bytes,
                "n_elements": int(t.n_elements),
                "parts_spanned": 1 + parts_spanned(t),
                "sha256_f32_le": hashlib.sha256(out.astype("<f4").tobytes()).hexdigest(),
                "first8_bits": [int(b) for b in out[:8].view(np.uint32)],
            })
    return cases


def main() -> None:
    golden = {
        "about": "dequantization goldens from gguf.quants.dequantize; regenerate with "
                 "python3 tests/golden/make_dequant_goldens.py",
        "gguf_version": version("gguf"),
        "numpy_version": np.__version__,
        "seed": SEED,
        "model_files": MODEL_FILES,
        "synthetic": synthetic_cases(),
        "real": [],
    }
    with tempfile.TemporaryDirectory(prefix="quantweb-goldens-") as tmp:
        for model in MODEL_FILES:
            golden["real"] += real_cases(model, concatenated(model, Path(tmp)))
    text = json.dumps(golden, indent=1) + "\n"
    OUT.write_text(text)
    print(f"wrote {OUT} ({len(text)} bytes): {len(golden['synthetic'])} synthetic cases, "
          f"{len(golden['real'])} real tensors")
    for c in golden["real"]:
        print(f"  {c['model']:8} {c['type']:5} {c['tensor']:28} {c['n_bytes']:>9} B  parts {c['parts_spanned']}")


if __name__ == "__main__":
    main()
