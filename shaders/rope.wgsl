// Rotary position embedding, in place on x: [n_tokens, n_heads, head_dim], one thread per rotated
// pair. Token t has position pos0 + t; only the first n_rot dims of a head rotate.
// NEOX pairs (i, i + n_rot/2), otherwise (normal, ggml mode 0) pairs (2i, 2i + 1).
// FREQ_FACTORS divides pair i's angle by ff[i] (llama3 / phi3 rope factors); cos and sin are
// scaled by attn_factor (phi3 LongRoPE).
//
// The angle is ggml-cpu's, operation for operation (ggml_rope_cache_init, ext_factor = 0): the
// f32 theta starts at the position and is multiplied by theta_scale = base^(-2/n_rot) once per
// pair (repeated f32 products, not a pow), then divided by the factor and multiplied by
// freq_scale. sin/cos come from `sincos` below, not the builtins: WGSL only bounds the builtins'
// error inside [-π, π] (absolute 2^-11) and angles here reach the context length.
struct Params {
    n_tokens: u32, n_heads: u32, head_dim: u32, n_rot: u32,
    theta_scale: u32, freq_scale: u32, attn_factor: u32,
}
// The batch's first position (crate::gpu::Pos), rewritten before each batch.
struct Pos { pos0: u32 }

@group(0) @binding(0) var<storage, read_write> x: array<f32>;
#ifdef FREQ_FACTORS
@group(0) @binding(1) var<storage, read> ff: array<f32>;
@group(0) @binding(2) var<uniform> p: Params;
@group(0) @binding(3) var<uniform> start: Pos;
#else
@group(0) @binding(1) var<uniform> p: Params;
@group(0) @binding(2) var<uniform> start: Pos;
#endif

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

@compute @workgroup_size(WG_SIZE)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = gid.x + gid.y * nwg.x * WG_SIZE;
    let half_rot = p.n_rot / 2u;
    if (idx >= p.n_tokens * p.n_heads * half_rot) {
        return;
    }
    let i = idx % half_rot;
    let row = idx / half_rot; // token · n_heads + head
    let t = row / p.n_heads;

    var theta = f32(start.pos0 + t);
    let theta_scale = bitcast<f32>(p.theta_scale);
    for (var j = 0u; j < i; j++) {
        theta *= theta_scale;
    }
#ifdef FREQ_FACTORS
    theta = theta / ff[i];
#endif
    theta = bitcast<f32>(p.freq_scale) * theta;
    // ggml's rope_yarn: cos and sin times mscale (attn_factor), then the rotation.
    let sc = sincos(theta) * bitcast<f32>(p.attn_factor);

    let base = row * p.head_dim;
#ifdef NEOX
    let i0 = base + i;
    let i1 = i0 + half_rot;
#else
    let i0 = base + 2u * i;
    let i1 = i0 + 1u;
#endif
    let x0 = x[i0];
    let x1 = x[i1];
    x[i0] = x0 * sc.y - x1 * sc.x;
    x[i1] = x0 * sc.x + x1 * sc.y;
}
