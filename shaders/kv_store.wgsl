// Stores k, v: f32 [n_tokens, row] (row = n_kv · head_dim) into the f16 KV cache of one layer:
// cells of row/2 u32 words, two f16 per word (low half = even element). Position pos0 + t goes
// to cell (pos0 + t) % cells. One thread per word, converting both K and V.
//
// The f32 → f16 conversion rounds to nearest even like ggml's (f16.wgsl).
struct Params { row_words: u32, n_tokens: u32, cells: u32 }
// The batch's first position (crate::gpu::Pos), rewritten before each batch.
struct Pos { pos0: u32 }

@group(0) @binding(0) var<storage, read> k_in: array<u32>; // f32 bits
@group(0) @binding(1) var<storage, read> v_in: array<u32>;
@group(0) @binding(2) var<storage, read_write> k_cache: array<u32>;
@group(0) @binding(3) var<storage, read_write> v_cache: array<u32>;
@group(0) @binding(4) var<uniform> p: Params;
@group(0) @binding(5) var<uniform> start: Pos;

#include "f16.wgsl"

@compute @workgroup_size(WG_SIZE)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = gid.x + gid.y * nwg.x * WG_SIZE;
    if (idx >= p.n_tokens * p.row_words) {
        return;
    }
    let t = idx / p.row_words;
    let w = idx % p.row_words;
    let dst = ((start.pos0 + t) % p.cells) * p.row_words + w;
    k_cache[dst] = f16_bits(k_in[2u * idx]) | (f16_bits(k_in[2u * idx + 1u]) << 16u);
    v_cache[dst] = f16_bits(v_in[2u * idx]) | (f16_bits(v_in[2u * idx + 1u]) << 16u);
}
