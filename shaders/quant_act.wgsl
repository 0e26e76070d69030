// Activation quantization as llama.cpp's CPU backend does it before a matmul (ggml's
// `vec_dot_type` of the weight type), written back dequantized: the matmul kernels then multiply
// exactly the activation values that ggml's integer dot products see. `quantize_block(b)`
// quantizes block b (BLOCK elements) of the kernel's activations; the including kernel says
// where they are with `act_in(i) -> f32`, `act_out(i, v)` and, for Q8_1, `act_delta(b, v)`.
//
// KIND_Q8_0, KIND_Q8_1 (blocks of 32; x86 AVX2 `quantize_row_q8_0/_1`): amax = max |x|,
//   d = amax / 127 stored as f16, q = round-half-even(x * (127 / amax)); value q * f16(d).
//   Q8_1 also writes delta[block] = f16(d * Σq) - f16(d) * Σq: ggml keeps the block sum `s`
//   rounded to f16 and Q4_1/Q5_1 dot products multiply their min by it, so the matmul adds
//   min * delta per block (MIN_CORRECTION in matvec.wgsl/matmul.wgsl).
// KIND_Q8_K (blocks of 256; `quantize_row_q8_K_ref`): max = the first element of largest
//   magnitude (signed), iscale = -127 / max, q = min(127, round-half-even(iscale * x)),
//   d = 1 / iscale kept in f32; value q * d.
// KIND_F16, KIND_BF16 (blocks of 4): each element rounded to f16 / bf16, nearest even.
// BLOCK_32 is set with KIND_Q8_0 and KIND_Q8_1.
// PACKED (BLOCK_32 only): the kernel keeps q itself, four to a word (`act_word(k, v)`), with
//   `act_scale(b, f16(d))` and, for Q8_1, `act_sum(b, f16(d * Σq))` (dot4.wgsl).

#include "f16.wgsl"

fn quantize_block(b: u32) {
#ifdef BLOCK_32
    let i0 = b * 32u;
    var amax = 0.0;
    for (var i = 0u; i < 32u; i++) {
        amax = max(amax, abs(act_in(i0 + i)));
    }
    let d = amax / 127.0;
    let dh = round_f16(d);
    var id = 0.0;
    if (amax != 0.0) {
        id = 127.0 / amax;
    }
    var sum = 0.0;
    for (var k = 0u; k < 8u; k++) {
        var q: vec4<f32>;
        for (var l = 0u; l < 4u; l++) {
            q[l] = round(act_in(i0 + 4u * k + l) * id);
        }
        sum += q.x + q.y + q.z + q.w;
#ifdef PACKED
        act_word(8u * b + k, pack4xI8(vec4<i32>(q)));
#else
        for (var l = 0u; l < 4u; l++) {
            act_out(i0 + 4u * k + l, q[l] * dh);
        }
#endif
    }
#ifdef PACKED
    act_scale(b, dh);
#ifdef KIND_Q8_1
    act_sum(b, round_f16(d * sum));
#endif
#else
#ifdef KIND_Q8_1
    act_delta(b, round_f16(d * sum) - dh * sum);
#endif
#endif
#endif
#ifdef KIND_Q8_K
    let i0 = b * 256u;
    var amax = 0.0;
    var vmax = 0.0;
    for (var i = 0u; i < 256u; i++) {
        let v = act_in(i0 + i);
        if (abs(v) > amax) {
            amax = abs(v);
            vmax = v;
        }
    }
    if (amax == 0.0) {
        for (var i = 0u; i < 256u; i++) {
            act_out(i0 + i, 0.0);
        }
        return;
    }
    let iscale = -127.0 / vmax;
    let d = 1.0 / iscale;
    for (var i = 0u; i < 256u; i++) {
        act_out(i0 + i, min(127.0, round(iscale * act_in(i0 + i))) * d);
    }
#endif
#ifdef KIND_F16
    for (var i = 4u * b; i < 4u * b + 4u; i++) {
        act_out(i, round_f16(act_in(i)));
    }
#endif
#ifdef KIND_BF16
    for (var i = 4u * b; i < 4u * b + 4u; i++) {
        let u = bitcast<u32>(act_in(i));
        act_out(i, bitcast<f32>((u + 0x7FFFu + ((u >> 16u) & 1u)) & 0xFFFF0000u));
    }
#endif
}
