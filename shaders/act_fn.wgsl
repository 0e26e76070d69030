// The gate activations of the feed-forward block, as llama.cpp's CPU backend computes them:
// `act(x)` for ACT_SILU or ACT_GELU_TANH. Included by act.wgsl and by matvec.wgsl (GATED).
// ACT_SILU:      x / (1 + exp(-x))                                   (ggml_silu_f32)
// ACT_GELU_TANH: 0.5·x·(1 + tanh(sqrt(2/π)·x·(1 + 0.044715·x²)))   (ggml_gelu_f32) as
//                llama.cpp's CPU backend applies it (GGML_GELU_FP16): x and the result
//                rounded to f16 (its lookup table) for −10 < x < 10; 0 below, x above.

#ifdef ACT_SILU
fn act(x: f32) -> f32 {
    // exp(-x) overflows f32 below x = -88.7, and WGSL leaves an overflowing exp undefined; the
    // clamp keeps it finite, where x / (1 + e^88) already rounds to -0 in f32 ... -5e-37.
    return x / (1.0 + exp(min(-x, 88.0)));
}
#endif

#ifdef ACT_GELU_TANH
// tanh(z) = sign(z)·(1 − e^(−2|z|)) / (1 + e^(−2|z|)): the exponent is never positive, so nothing
// overflows (a driver's tanh may compute (e^2z − 1)/(e^2z + 1) = inf/inf = NaN for large z).
// Its absolute error is a few 1e-8, which is what matters in 1 + tanh. |z| is capped at 20, where
// tanh is ±1 in f32 anyway, so that an infinite z (x² overflowing) never reaches exp.
fn tanh_safe(z: f32) -> f32 {
    let e = exp(-2.0 * min(abs(z), 20.0));
    return sign(z) * (1.0 - e) / (1.0 + e);
}

#include "f16.wgsl"

fn act(v: f32) -> f32 {
    if (v <= -10.0) {
        return 0.0;
    }
    if (v >= 10.0) {
        return v;
    }
    let x = round_f16(v);
    let sqrt_2_over_pi = 0.79788456080286535588;
    return round_f16(0.5 * x * (1.0 + tanh_safe(sqrt_2_over_pi * x * (1.0 + 0.044715 * x * x))));
}
#endif
