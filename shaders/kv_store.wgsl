// Stores k, v: f32 [n_tokens, row] (row = n_kv · head_dim) into the f16 KV cache of one layer:
// cells of row/2 u32 words, two f16 per word (low half = even element). Position pos0 + t goes
// to cell (pos0 + t) % cells. One thread per word, converting both K and V; the f32 → f16
// conversion rounds to nearest even like ggml's (f16.wgsl).
//
// ROPE also applies rotary position embeddings in the same dispatch: k as it is stored, and q
// (f32 [n_tokens, n_head, head_dim]) in place, scaled by q_scale after the rotation (gemma3 and
// phi3 scale Q so; 1 elsewhere, an exact multiplication). Only the first n_rot dims of a head
// rotate; NEOX pairs (i, i + n_rot/2), otherwise (normal, ggml mode 0) pairs (2i, 2i + 1).
// FREQ_FACTORS divides pair i's angle by ff[i] (llama3 / phi3 rope factors); cos and sin are
// scaled by attn_factor (phi3 LongRoPE).
//
// The angle is ggml-cpu's, operation for operation (ggml_rope_cache_init, ext_factor = 0): the
// f32 theta starts at the position and is multiplied by theta_scale = base^(-2/n_rot) once per
// pair (repeated f32 products, not a pow), then divided by the factor and multiplied by
// freq_scale. sin/cos come from `sincos` below, not the builtins: WGSL only bounds the builtins'
// error inside [-π, π] (absolute 2^-11) and angles here reach the context length.
struct Params {
    row_words: u32, n_tokens: u32, cells: u32, head_dim: u32,
    n_rot: u32, n_head: u32, theta_scale: f32, freq_scale: f32,
    attn_factor: f32, q_scale: f32,
}
// The batch's first position (crate::gpu::Pos), rewritten before each batch.
struct Pos { pos0: u32 }

@group(0) @binding(0) var<storage, read> k_in: array<u32>; // f32 bits
@group(0) @binding(1) var<storage, read> v_in: array<u32>;
@group(0) @binding(2) var<storage, read_write> k_cache: array<u32>;
@group(0) @binding(3) var<storage, read_write> v_cache: array<u32>;
@group(0) @binding(4) var<uniform> p: Params;
@group(0) @binding(5) var<uniform> start: Pos;
#ifdef ROPE
@group(0) @binding(6) var<storage, read_write> q: array<f32>;
#ifdef FREQ_FACTORS
@group(0) @binding(7) var<storage, read> ff: array<f32>;
#endif
#endif

#include "f16.wgsl"

#ifdef ROPE
// sin and cos of an f32 angle to about 1 ulp (max abs error 8e-8, measured against f64 over
// 2M random angles in [0, 2e5) and all rope angles of 4096 positions).
// Range reduction by π/2 (Cody-Waite): π/2 = C1 + C2 + C3 + C4 with C1..C3 of 7 significant bits,
// so k·C1, k·C2, k·C3 are exact for k < 2^17 (|a| < 2e5) and the reduced angle r is exact to
// ~1e-9 there; beyond, accuracy degrades gradually. Then the Cephes sinf/cosf polynomials on
// |r| ≤ π/4 and the quadrant k mod 4.
fn sincos(a: f32) -> vec2<f32> {
    let k = round(a * 0.63661977236758134308);
    var r = a - k * 1.5625;
    r = r - k * 0.0081787109375;
    r = r - k * 0.00011730194091796875;
    r = r - k * 3.1391647326017846e-07;
    let z = r * r;
    let s = ((-1.9515295891e-4 * z + 8.3321608736e-3) * z - 1.6666654611e-1) * z * r + r;
    let c = ((2.443315711809948e-5 * z - 1.388731625493765e-3) * z + 4.166664568298827e-2) * z * z
        - 0.5 * z + 1.0;
    switch (u32(i32(k)) & 3u) {
        case 0u: { return vec2<f32>(s, c); }
        case 1u: { return vec2<f32>(c, -s); }
        case 2u: { return vec2<f32>(-s, -c); }
        default: { return vec2<f32>(-c, s); }
    }
}

// (sin, cos) · attn_factor of pair `pair` at the position of token t.
fn angle(t: u32, pair: u32) -> vec2<f32> {
    var theta = f32(start.pos0 + t);
    for (var j = 0u; j < pair; j++) {
        theta *= p.theta_scale;
    }
#ifdef FREQ_FACTORS
    theta = theta / ff[pair];
#endif
    theta = p.freq_scale * theta;
    return sincos(theta) * p.attn_factor;
}

// Where element i (< n_rot) of a head pairs: (pair, index of x0, index of x1, i is x0).
fn pair_of(i: u32) -> vec4<u32> {
#ifdef NEOX
    let half = p.n_rot / 2u;
    if (i < half) {
        return vec4<u32>(i, i, i + half, 1u);
    }
    return vec4<u32>(i - half, i - half, i, 0u);
#else
    let pair = i / 2u;
    return vec4<u32>(pair, 2u * pair, 2u * pair + 1u, select(0u, 1u, i % 2u == 0u));
#endif
}

// The element that is x0 of pair k.
fn first_of_pair(k: u32) -> u32 {
#ifdef NEOX
    return k;
#else
    return 2u * k;
#endif
}

// The bits of element i of the k head row at `base` of token t, rotated.
fn k_bits(t: u32, base: u32, i: u32) -> u32 {
    if (i >= p.n_rot) {
        return k_in[base + i];
    }
    let pr = pair_of(i);
    let x0 = bitcast<f32>(k_in[base + pr.y]);
    let x1 = bitcast<f32>(k_in[base + pr.z]);
    let sc = angle(t, pr.x);
    if (pr.w == 1u) {
        return bitcast<u32>(x0 * sc.y - x1 * sc.x);
    }
    return bitcast<u32>(x0 * sc.x + x1 * sc.y);
}
#else
fn k_bits(t: u32, base: u32, i: u32) -> u32 {
    return k_in[base + i];
}
#endif

@compute @workgroup_size(WG_SIZE)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = gid.x + gid.y * nwg.x * WG_SIZE;
    let stores = p.n_tokens * p.row_words;
    if (idx < stores) {
        let t = idx / p.row_words;
        let w = idx % p.row_words;
        let e = 2u * w; // even element of the row: e and e + 1 are in the same head
        let base = t * 2u * p.row_words + e / p.head_dim * p.head_dim;
        let i = e % p.head_dim;
        let dst = ((start.pos0 + t) % p.cells) * p.row_words + w;
        k_cache[dst] = f16_bits(k_bits(t, base, i)) | (f16_bits(k_bits(t, base, i + 1u)) << 16u);
        v_cache[dst] = f16_bits(v_in[2u * idx]) | (f16_bits(v_in[2u * idx + 1u]) << 16u);
        return;
    }
#ifdef ROPE
    // Then q, per head: a thread per rotated pair, then one per element past n_rot (scaled only).
    let half = p.n_rot / 2u;
    let per_head = half + p.head_dim - p.n_rot;
    let j = idx - stores;
    if (j >= p.n_tokens * p.n_head * per_head) {
        return;
    }
    let row = j / per_head; // token · n_head + head
    let base = row * p.head_dim;
    let k = j % per_head;
    if (k >= half) {
        let i = base + p.n_rot + k - half;
        q[i] = q[i] * p.q_scale;
        return;
    }
    let pr = pair_of(first_of_pair(k));
    let x0 = q[base + pr.y];
    let x1 = q[base + pr.z];
    let sc = angle(row / p.n_head, pr.x);
    q[base + pr.y] = (x0 * sc.y - x1 * sc.x) * p.q_scale;
    q[base + pr.z] = (x0 * sc.x + x1 * sc.y) * p.q_scale;
#endif
}
