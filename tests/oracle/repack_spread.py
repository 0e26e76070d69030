#!/usr/bin/env python3
"""How far llama.cpp is from itself: each golden's greedy continuation teacher-forced through the
oracle's own libllama twice, with weight repacking (the default; AVX2 repacks Q4_0, Q4_K and
IQ4_NL into interleaved blocks with their own dot-product kernels) and without it
(`use_extra_bufts = false`: the plain vec_dot kernels). Prints per case how often the two
argmaxes agree, where they part (with the top-2 margin there) and the largest move of the
forced token's logprob: the spread any other correct engine must be allowed.

    python3 tests/oracle/repack_spread.py tests/golden/generate-gemma3.json tests/golden/quant-*.json

Builds tests/oracle/teacher_forced.c into target/oracle-tools/ against the oracle's libraries
and the llama.cpp headers of the exact tree node-llama-cpp ships (its gitRelease.bundle).
Needs `npm ci` in tests/oracle, git and a C compiler.
"""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NLC = ROOT / "tests/oracle/node_modules/node-llama-cpp/llama/gitRelease.bundle"
LIBS = ROOT / "tests/oracle/node_modules/@node-llama-cpp/linux-x64/bins/linux-x64"
OUT = ROOT / "target/oracle-tools"


def build() -> Path:
    src, exe = OUT / "llama.cpp", OUT / "teacher_forced"
    if not src.exists():
        subprocess.run(["git", "-c", "advice.detachedHead=false", "-c", "init.defaultBranch=main", "clone", "-q", str(NLC), str(src)], check=True)
    if not exe.exists() or exe.stat().st_mtime < (ROOT / "tests/oracle/teacher_forced.c").stat().st_mtime:
        libs = [str(p) for n in ("libllama.v*.so", "libggml.v*.so", "libggml-base.so") for p in LIBS.glob(n)]
        subprocess.run(["gcc", "-O2", "-o", str(exe), str(ROOT / "tests/oracle/teacher_forced.c"),
                        f"-I{src}/include", f"-I{src}/ggml/include", *libs,
                        f"-Wl,-rpath,{LIBS}", "-lm"], check=True)
    return exe


def model_file(golden: dict) -> Path:
    """The golden's model; byte chunks are joined into target/oracle-tools once."""
    direct = ROOT / "models" / golden["model"]["file"]
    if direct.exists():
        return direct
    parts = [ROOT / p for p in golden["model"]["from"]]
    joined = OUT / golden["model"]["file"]
    if not joined.exists():
        with open(joined, "wb") as out:
            for p in parts:
                out.write(p.read_bytes())
    return joined


def run(exe: Path, model: Path, repack: bool, case: dict, n: int) -> list[list[str]]:
    ids = lambda v: ",".join(map(str, v))
    out = subprocess.run([str(exe), str(LIBS), str(model), str(int(repack)), ids(case["prompt_tokens"]),
                          ids(case["tokens"][:n])], capture_output=True, text=True, check=True)
    return [line.split() for line in out.stdout.strip().splitlines()]


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    exe = build()
    for path in sys.argv[1:]:
        golden = json.loads(Path(path).read_text())
        model = model_file(golden)
        for case in golden["cases"]:
            n = len(case["tokens"])
            on, off = run(exe, model, True, case, n), run(exe, model, False, case, n)
            parted = [(i, float(on[i][4])) for i in range(n) if on[i][1] != off[i][1]]
            move = max(abs(float(a[3]) - float(b[3])) for a, b in zip(on, off))
            where = ", ".join(f"{i} (margin {m:.3f})" for i, m in parted) or "nowhere"
            print(f"{Path(path).name} {case['name']}: {n - len(parted)}/{n} argmax equal; "
                  f"parted at {where}; forced-token logprob moved up to {move:.4f}")


if __name__ == "__main__":
    main()
