// The integer matvec (DOT4, devices with WGSL's `packed_4x8_integer_dot_product`), included by
// matvec.wgsl for Q4_0, Q4_1, Q5_0, Q5_1 and Q8_0 weights fed Q8_0 / Q8_1 activations. It is
// ggml's own dot product (`ggml_vec_dot_q4_0_q8_0` and kin): each workgroup holds x as q8
// blocks in workgroup memory (the signed bytes packed four to a word, each block's f16 scale
// and, for Q8_1, its f16 sum s), a unit of 16 weights and 16 activations is one integer sum of
// four `dot4I8Packed`, scaled once by d_w · d_x; Q4_1/Q5_1 add m · s once per block.
// x is either f32 to quantize here (QUANT_IN, quant_act.wgsl with PACKED) or already holds the
// q · d values of an earlier quantization (rmsnorm.wgsl, quantize.wgsl), whose q and d come back
// exactly: max |q| is 127, so d = f16(max |x| / 127) and q = round(x / d).

var<workgroup> xq: array<u32, XS_V4>;
var<workgroup> xd: array<f32, XS_V4 / 8u>;
#ifdef KIND_Q8_1
var<workgroup> xsum: array<f32, XS_V4 / 8u>;
#endif

#ifdef QUANT_IN
fn act_in(i: u32) -> f32 { return x[i / 4u][i % 4u]; }
fn act_word(k: u32, v: u32) { xq[k] = v; }
fn act_scale(b: u32, d: f32) { xd[b] = d; }
#ifdef KIND_Q8_1
fn act_sum(b: u32, s: f32) { xsum[b] = s; }
#endif
#include "quant_act.wgsl"
#else
#include "f16.wgsl"
#ifdef KIND_Q8_1
// f32 [cols / 32]: per block, f16(d · Σq) - f16(d) · Σq (quantize.wgsl), so s comes back too.
@group(0) @binding(DELTA_AT) var<storage, read> delta: array<f32>;
#endif
fn quantize_block(b: u32) {
    var amax = 0.0;
    for (var k = 0u; k < 8u; k++) {
        let v = abs(x[8u * b + k]);
        amax = max(amax, max(max(v.x, v.y), max(v.z, v.w)));
    }
    // Division may be off by ulps on a GPU; the f16 grid and round() absorb that.
    let d = round_f16(amax / 127.0);
    var sum = 0.0;
    for (var k = 0u; k < 8u; k++) {
        var q = vec4<f32>(0.0);
        if (d != 0.0) {
            q = round(x[8u * b + k] / d);
        }
        sum += q.x + q.y + q.z + q.w;
        xq[8u * b + k] = pack4xI8(vec4<i32>(q));
    }
    xd[b] = d;
#ifdef KIND_Q8_1
    xsum[b] = delta[b] + d * sum;
#endif
}
#endif

// Every invocation takes part, before any leaves: the barrier needs uniform control flow.
fn load_x(lid: u32) {
    for (var b = lid; b < XS_V4 / 8u; b += WG_SIZE) {
        quantize_block(b);
    }
    workgroupBarrier();
}

fn x_unit(u: u32) -> vec4<u32> {
    return vec4<u32>(xq[4u * u], xq[4u * u + 1u], xq[4u * u + 2u], xq[4u * u + 3u]);
}

// Per type: block_scale(b), the weights' d; unit_bytes(b, u), the 16 weights of unit u of
// block b as signed bytes packed four to a word. Units are half blocks: u = 0 takes elements
// 0..15, u = 1 elements 16..31.

// Bytes q in [0, 2 · half) to signed bytes q - half: flip the top bit, then copy it upwards.
fn biased(q: vec4<u32>, half: u32) -> vec4<u32> {
    let top = vec4<u32>(half * 0x01010101u);
    let t = q ^ top;
    return t | ((t & top) * (256u / half - 2u));
}

// The 4-bit quants of unit u from four words of qs (low nibbles, then high ones).
fn nibbles(qs: vec4<u32>, u: u32) -> vec4<u32> {
    return (qs >> vec4<u32>(4u * u)) & vec4<u32>(0x0F0F0F0Fu);
}

// Q5_0/Q5_1: the fifth bits of unit u's weights (bit e of qh for weight e) as bit 4 of each byte.
fn high_bits(qh: u32, u: u32) -> vec4<u32> {
    let h = vec4<u32>(qh >> (16u * u)) >> vec4<u32>(0u, 4u, 8u, 12u);
    return ((h & vec4<u32>(1u)) << vec4<u32>(4u)) | ((h & vec4<u32>(2u)) << vec4<u32>(11u))
        | ((h & vec4<u32>(4u)) << vec4<u32>(18u)) | ((h & vec4<u32>(8u)) << vec4<u32>(25u));
}

#ifdef TYPE_Q4_0
fn block_scale(b: u32) -> f32 { return block_d(b); }
fn unit_bytes(b: u32, u: u32) -> vec4<u32> { return biased(nibbles(words4(4u * b), u), 8u); }
#endif

#ifdef TYPE_Q4_1
fn block_scale(b: u32) -> f32 { return unpack2x16float(w[5u * b]).x; }
fn unit_bytes(b: u32, u: u32) -> vec4<u32> {
    let k = 5u * b + 1u;
    return nibbles(vec4<u32>(w[k], w[k + 1u], w[k + 2u], w[k + 3u]), u);
}
#endif

#ifdef TYPE_Q5_0
fn block_scale(b: u32) -> f32 { return block_d(b); }
fn unit_bytes(b: u32, u: u32) -> vec4<u32> {
    let k = 5u * b + 1u;
    let q = nibbles(vec4<u32>(w[k], w[k + 1u], w[k + 2u], w[k + 3u]), u) | high_bits(w[5u * b], u);
    return biased(q, 16u);
}
#endif

#ifdef TYPE_Q5_1
fn block_scale(b: u32) -> f32 { return unpack2x16float(w[6u * b]).x; }
fn unit_bytes(b: u32, u: u32) -> vec4<u32> {
    let k = 6u * b + 2u;
    return nibbles(vec4<u32>(w[k], w[k + 1u], w[k + 2u], w[k + 3u]), u) | high_bits(w[6u * b + 1u], u);
}
#endif

#ifdef TYPE_Q8_0
fn block_scale(b: u32) -> f32 { return block_d(b); }
fn unit_bytes(b: u32, u: u32) -> vec4<u32> { return words4(8u * b + 4u * u); }
#endif

fn dot4_unit(b: u32, u: u32, xv: vec4<u32>) -> i32 {
    let q = unit_bytes(b, u);
    return dot4I8Packed(q.x, xv.x) + dot4I8Packed(q.y, xv.y) + dot4I8Packed(q.z, xv.z)
        + dot4I8Packed(q.w, xv.w);
}

// Row r's unit u times x's unit u, as ggml scales an integer block sum.
fn unit_dot(r: u32, u: u32, xv: vec4<u32>) -> f32 {
    let unit = r * p.units_per_row + u;
    var s = f32(dot4_unit(unit / 2u, unit % 2u, xv)) * (block_scale(unit / 2u) * xd[u / 2u]);
#ifdef KIND_Q8_1
    if (u % 2u == 0u) {
        s += block_min(unit / 2u) * xsum[u / 2u];
    }
#endif
    return s;
}
