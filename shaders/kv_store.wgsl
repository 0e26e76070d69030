// Stores k, v: f32 [n_tokens, row] (row = n_kv · head_dim) into the f16 KV cache of one layer:
// cells of row/2 u32 words, two f16 per word (low half = even element). Position pos0 + t goes
// to cell (pos0 + t) % cells. One thread per word, converting both K and V; the f32 → f16
// conversion rounds to nearest even like ggml's (f16.wgsl).
//
// ROPE: one workgroup per (token, head) of q (f32 [n_tokens, n_head, head_dim], rewritten in
// place) and of k (whose workgroup also stores that head of v), doing in order what separate
// kernels would: BIAS adds qwen2's q/k/v biases; QK_NORM applies qwen3/gemma3's per-head
// RMSNorm (rmsnorm.wgsl's reduction and operation order); then rotary position embeddings of
// the first n_rot dims of q and k; q is then multiplied by q_scale (gemma3 and phi3 scale Q so;
// 1 elsewhere, an exact multiplication); k and v go to the cache. NEOX pairs (i, i + n_rot/2),
// otherwise (normal, ggml mode 0) pairs (2i, 2i + 1). FREQ_FACTORS divides pair i's angle by
// ff[i] (llama3 / phi3 rope factors); cos and sin are scaled by attn_factor (phi3 LongRoPE).
// Optional bindings sit at FF_AT, QN_AT (qn, kn) and BIAS_AT (bq, bk, bv).
//
// The angle is ggml-cpu's, operation for operation (ggml_rope_cache_init, ext_factor = 0): the
// f32 theta starts at the position and is multiplied by theta_scale = base^(-2/n_rot) once per
// pair (repeated f32 products, not a pow), then divided by the factor and multiplied by
// freq_scale. sin/cos come from `sincos` below, not the builtins: WGSL only bounds the builtins'
// error inside [-π, π] (absolute 2^-11) and angles here reach the context length.
struct Params {
    row_words: u32, n_tokens: u32, cells: u32, head_dim: u32,
    n_rot: u32, n_head: u32, theta_scale: f32, freq_scale: f32,
    attn_factor: f32, q_scale: f32, eps: f32,
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
@group(0) @binding(FF_AT) var<storage, read> ff: array<f32>;
#endif
#ifdef QK_NORM
@group(0) @binding(QN_AT) var<storage, read> qn: array<f32>;
@group(0) @binding(QN_AT_1) var<storage, read> kn: array<f32>;
#endif
#ifdef BIAS
@group(0) @binding(BIAS_AT) var<storage, read> bq: array<f32>;
@group(0) @binding(BIAS_AT_1) var<storage, read> bk: array<f32>;
@group(0) @binding(BIAS_AT_2) var<storage, read> bv: array<f32>;
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

var<workgroup> vals: array<f32, HEAD_DIM>;

// Element i of the head in `vals`, rotated for token t.
fn rotated(t: u32, i: u32) -> f32 {
    if (i >= p.n_rot) {
        return vals[i];
    }
    let pr = pair_of(i);
    let x0 = vals[pr.y];
    let x1 = vals[pr.z];
    let sc = angle(t, pr.x);
    if (pr.w == 1u) {
        return x0 * sc.y - x1 * sc.x;
    }
    return x0 * sc.x + x1 * sc.y;
}

#ifdef QK_NORM
#include "reduce.wgsl"
#endif

@compute @workgroup_size(WG_SIZE)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) tid: u32) {
    let heads = p.n_head + p.row_words * 2u / HEAD_DIM; // q heads, then k heads
    let item = wid.x + wid.y * nwg.x;
    if (item >= p.n_tokens * heads) {
        return; // uniform: the whole workgroup leaves
    }
    let t = item / heads;
    let h = item % heads;
    let is_q = h < p.n_head;
    let hk = h - select(p.n_head, 0u, is_q); // the k (and v) head
    let src = select(t * 2u * p.row_words + hk * HEAD_DIM, (t * p.n_head + h) * HEAD_DIM, is_q);
    var sum = 0.0;
    for (var i = tid; i < HEAD_DIM; i += WG_SIZE) {
        var v: f32;
        if (is_q) {
            v = q[src + i];
        } else {
            v = bitcast<f32>(k_in[src + i]);
        }
#ifdef BIAS
        if (is_q) {
            v = v + bq[h * HEAD_DIM + i];
        } else {
            v = v + bk[hk * HEAD_DIM + i];
        }
#endif
        sum += v * v;
        vals[i] = v;
    }
#ifdef QK_NORM
    let scale = 1.0 / sqrt(reduce_sum(tid, sum) / f32(HEAD_DIM) + p.eps);
    for (var i = tid; i < HEAD_DIM; i += WG_SIZE) {
        if (is_q) {
            vals[i] = (vals[i] * scale) * qn[i];
        } else {
            vals[i] = (vals[i] * scale) * kn[i];
        }
    }
#endif
    workgroupBarrier(); // rotation reads other threads' elements
    if (is_q) {
        for (var i = tid; i < HEAD_DIM; i += WG_SIZE) {
            q[src + i] = rotated(t, i) * p.q_scale;
        }
        return;
    }
    let dst = ((start.pos0 + t) % p.cells) * p.row_words + hk * HEAD_DIM / 2u;
    for (var w = tid; w < HEAD_DIM / 2u; w += WG_SIZE) {
        let k0 = bitcast<u32>(rotated(t, 2u * w));
        let k1 = bitcast<u32>(rotated(t, 2u * w + 1u));
        k_cache[dst + w] = f16_bits(k0) | (f16_bits(k1) << 16u);
        var v0 = v_in[src + 2u * w];
        var v1 = v_in[src + 2u * w + 1u];
#ifdef BIAS
        v0 = bitcast<u32>(bitcast<f32>(v0) + bv[hk * HEAD_DIM + 2u * w]);
        v1 = bitcast<u32>(bitcast<f32>(v1) + bv[hk * HEAD_DIM + 2u * w + 1u]);
#endif
        v_cache[dst + w] = f16_bits(v0) | (f16_bits(v1) << 16u);
    }
}
#else
@compute @workgroup_size(WG_SIZE)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = gid.x + gid.y * nwg.x * WG_SIZE;
    let stores = p.n_tokens * p.row_words;
    if (idx < stores) {
        let t = idx / p.row_words;
        let w = idx % p.row_words;
        let dst = ((start.pos0 + t) % p.cells) * p.row_words + w;
        k_cache[dst] = f16_bits(k_in[2u * idx]) | (f16_bits(k_in[2u * idx + 1u]) << 16u);
        v_cache[dst] = f16_bits(v_in[2u * idx]) | (f16_bits(v_in[2u * idx + 1u]) << 16u);
    }
}
#endif
