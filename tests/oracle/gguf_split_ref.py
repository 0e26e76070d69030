"""llama.cpp's `gguf-split --split`, replayed through llama.cpp's own gguf library.

node-llama-cpp ships no gguf-split binary, but its prebuilt `libggml-base.so` holds gguf.cpp.
This script drives it exactly as tools/gguf-split/gguf-split.cpp (split_strategy) does:
gguf_init_empty, gguf_set_kv from the input into shard 1, split.no / split.count (placeholder) /
split.tensors.count, gguf_add_tensor per tensor, split.count set again at the end; each shard is
gguf_get_meta_data followed by every tensor's bytes padded with zeros to 32
(GGUF_DEFAULT_ALIGNMENT). It writes nothing: it prints, as JSON, each shard's size and sha256
and the sha256 of its header, so `check_split.mjs` can compare them with quantweb's shards.

    python3 gguf_split_ref.py LIBDIR INPUT.gguf (--max-size BYTES | --max-tensors N) [--no-tensor-first-split]

LIBDIR: node_modules/@node-llama-cpp/linux-x64/bins/linux-x64. INPUT: one GGUF file (llama.cpp
reads neither byte chunks nor, in gguf-split, shards).
"""

import ctypes
import hashlib
import json
import os
import sys

GGUF_DEFAULT_ALIGNMENT = 32


class GgufInitParams(ctypes.Structure):
    _fields_ = [("no_alloc", ctypes.c_bool), ("ctx", ctypes.POINTER(ctypes.c_void_p))]


def load(libdir):
    lib = ctypes.CDLL(os.path.join(libdir, "libggml-base.so"))
    sig = {
        "gguf_init_from_file": (ctypes.c_void_p, [ctypes.c_char_p, GgufInitParams]),
        "gguf_init_empty": (ctypes.c_void_p, []),
        "gguf_free": (None, [ctypes.c_void_p]),
        "gguf_get_n_tensors": (ctypes.c_int64, [ctypes.c_void_p]),
        "gguf_get_tensor_name": (ctypes.c_char_p, [ctypes.c_void_p, ctypes.c_int64]),
        "gguf_get_tensor_offset": (ctypes.c_size_t, [ctypes.c_void_p, ctypes.c_int64]),
        "gguf_get_data_offset": (ctypes.c_size_t, [ctypes.c_void_p]),
        "gguf_find_tensor": (ctypes.c_int64, [ctypes.c_void_p, ctypes.c_char_p]),
        "gguf_set_kv": (None, [ctypes.c_void_p, ctypes.c_void_p]),
        "gguf_set_val_u16": (None, [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_uint16]),
        "gguf_set_val_i32": (None, [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int32]),
        "gguf_add_tensor": (None, [ctypes.c_void_p, ctypes.c_void_p]),
        "gguf_get_meta_size": (ctypes.c_size_t, [ctypes.c_void_p]),
        "gguf_get_meta_data": (None, [ctypes.c_void_p, ctypes.c_void_p]),
        "ggml_get_tensor": (ctypes.c_void_p, [ctypes.c_void_p, ctypes.c_char_p]),
        "ggml_nbytes": (ctypes.c_size_t, [ctypes.c_void_p]),
    }
    for name, (res, args) in sig.items():
        f = getattr(lib, name)
        f.restype, f.argtypes = res, args
    return lib


def pad(n, a=GGUF_DEFAULT_ALIGNMENT):
    return (n + a - 1) // a * a


def main():
    args = sys.argv[1:]
    libdir, src = args[0], args[1]
    mode, limit = None, 128
    no_tensor_first_split = "--no-tensor-first-split" in args
    if "--max-size" in args:
        mode, limit = "size", int(args[args.index("--max-size") + 1])
    elif "--max-tensors" in args:
        mode, limit = "tensor", int(args[args.index("--max-tensors") + 1])
    else:
        mode = "tensor"

    lib = load(libdir)
    ctx_meta = ctypes.c_void_p()
    g = lib.gguf_init_from_file(src.encode(), GgufInitParams(True, ctypes.pointer(ctx_meta)))
    if not g:
        sys.exit(f"gguf_init_from_file failed for {src}")
    n_tensors = lib.gguf_get_n_tensors(g)

    # split_strategy::split_strategy
    outs, groups = [], []
    state = {"ctx": None, "group": None}

    def new_ctx_out(allow_no_tensors):
        if state["ctx"] is not None:
            if not state["group"] and not allow_no_tensors:
                sys.exit("error: one of splits have 0 tensors. Maybe size or tensors limit is too small")
            outs.append(state["ctx"])
            groups.append(state["group"])
        ctx = lib.gguf_init_empty()
        if not outs:
            lib.gguf_set_kv(ctx, g)
        lib.gguf_set_val_u16(ctx, b"split.no", len(outs))
        lib.gguf_set_val_u16(ctx, b"split.count", 0)
        lib.gguf_set_val_i32(ctx, b"split.tensors.count", n_tensors)
        state["ctx"], state["group"] = ctx, []

    def should_split(i, next_size):
        if mode == "size":
            return next_size > limit
        return 0 < i < n_tensors and i % limit == 0

    new_ctx_out(False)
    if no_tensor_first_split:
        new_ctx_out(True)
    curr = 0
    for i in range(n_tensors):
        name = lib.gguf_get_tensor_name(g, i)
        t = lib.ggml_get_tensor(ctx_meta, name)
        n = pad(lib.ggml_nbytes(t))
        if should_split(i, curr + n):
            new_ctx_out(False)
            curr = n
        else:
            curr += n
        lib.gguf_add_tensor(state["ctx"], t)
        state["group"].append(name)
    outs.append(state["ctx"])
    groups.append(state["group"])
    for ctx in outs:
        lib.gguf_set_val_u16(ctx, b"split.count", len(outs))

    # split_strategy::write, hashed instead of written
    data_offset = lib.gguf_get_data_offset(g)
    shards = []
    with open(src, "rb") as f:
        for ctx, names in zip(outs, groups):
            meta = ctypes.create_string_buffer(lib.gguf_get_meta_size(ctx))
            lib.gguf_get_meta_data(ctx, meta)
            h = hashlib.sha256(meta.raw)
            size = len(meta.raw)
            for name in names:
                t = lib.ggml_get_tensor(ctx_meta, name)
                nbytes = lib.ggml_nbytes(t)
                f.seek(data_offset + lib.gguf_get_tensor_offset(g, lib.gguf_find_tensor(g, name)))
                left = nbytes
                while left:
                    chunk = f.read(min(left, 8 << 20))
                    if not chunk:
                        sys.exit(f"{src}: short read in tensor {name.decode()}")
                    h.update(chunk)
                    left -= len(chunk)
                h.update(bytes(pad(nbytes) - nbytes))
                size += pad(nbytes)
            shards.append({
                "n_tensors": len(names),
                "bytes": size,
                "sha256": h.hexdigest(),
                "header_sha256": hashlib.sha256(meta.raw).hexdigest(),
                "header_bytes": len(meta.raw),
            })
            lib.gguf_free(ctx)
    lib.gguf_free(g)
    print(json.dumps(shards))


if __name__ == "__main__":
    main()
