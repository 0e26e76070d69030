//! Gated activations of the feed-forward block, as llama.cpp's CPU backend computes them (see
//! [`Activation`] and shaders/act_fn.wgsl for the rules).

use super::{f16_to_f32, f32_to_f16, Cpu};
use crate::backend::Activation;

/// act(x) for one gate value: element `i` of a row of `n` (ggml's vector loop takes SiLU's
/// exponential from its own polynomial for whole groups of eight, glibc's `expf` for the rest).
#[inline]
pub fn act(a: Activation, x: f32, i: usize, n: usize) -> f32 {
    match a {
        Activation::Silu if i < n / 8 * 8 => x / (1.0 + v_expf(-x)),
        Activation::Silu => x / (1.0 + (-x).exp()),
        Activation::GeluTanh => {
            if x <= -10.0 {
                0.0
            } else if x >= 10.0 {
                x
            } else {
                // GGML_GELU_FP16: its table, indexed by x as f16, holds f16 results.
                let x = f16_to_f32(f32_to_f16(x));
                let sqrt_2_over_pi = 0.797_884_6_f32;
                let y = 0.5 * x * (1.0 + (sqrt_2_over_pi * x * (1.0 + 0.044715 * x * x)).tanh());
                f16_to_f32(f32_to_f16(y))
            }
        }
    }
}

/// a · b + c rounded once (see cpu/matmul.rs `fma`).
#[inline(always)]
fn fma(a: f32, b: f32, c: f32) -> f32 {
    (a as f64 * b as f64 + c as f64) as f32
}

/// ggml-cpu's `ggml_v_expf` (AVX2), lane by lane: e^x as 2^n · (1 + p(b)) with n = round(x ·
/// log2 e) and b = x − n · ln 2 in two parts, a degree-5 polynomial, and the scaling split in
/// two near overflow. Its results differ from a correctly rounded exp by an ulp here and
/// there, and SwiGLU's output is quantized right after, so the engine takes the same values.
fn v_expf(x: f32) -> f32 {
    let c = |bits: u32| f32::from_bits(bits);
    let r = 12582912.0f32; // 0x1.8p23: adding it rounds to an integer
    let z = fma(x, c(0x3fb8_aa3b), r);
    let n = z - r;
    let b = fma(-n, c(0x35bf_be8e), fma(-n, c(0x3f31_7200), x));
    let e = z.to_bits() << 23;
    let k = c(e.wrapping_add(1f32.to_bits()));
    let u = b * b;
    let j = fma(
        fma(
            fma(c(0x3c07_2010), b, c(0x3d2b_9f17)),
            u,
            fma(c(0x3e2a_af33), b, c(0x3eff_fedb)),
        ),
        u,
        c(0x3f7f_fff6) * b,
    );
    if n.abs() <= 126.0 {
        return fma(k, j, k);
    }
    let g: u32 = if n <= 0.0 { 0x8200_0000 } else { 0 };
    let s1 = c(g.wrapping_add(0x7f00_0000));
    let s2 = c(e.wrapping_sub(g));
    if n.abs() > 192.0 {
        s1 * s1
    } else {
        fma(s2, j, s2) * s1
    }
}

/// Each row of gate (n_ff wide): gate[i] = act(gate[i]) · up[i]; a batch's tokens spread
/// over the pool.
pub fn gated(cpu: &Cpu, a: Activation, gate: &mut [f32], up: &[f32], n_ff: usize) {
    let per = cpu.pool.split(gate.len() / n_ff, 1);
    cpu.pool.chunks(gate, per * n_ff, |piece, gate| {
        let up = &up[piece * per * n_ff..];
        for (g, u) in gate.chunks_exact_mut(n_ff).zip(up.chunks_exact(n_ff)) {
            for (i, (g, &u)) in g.iter_mut().zip(u).enumerate() {
                *g = act(a, *g, i, n_ff) * u;
            }
        }
    });
}

/// gate[i] = act(gu[2i]) · gu[2i + 1]: the products of interleaved gate and up rows, n_ff
/// pairs per token; a batch's tokens spread over the pool.
pub fn gated_interleaved(cpu: &Cpu, a: Activation, gu: &[f32], gate: &mut [f32], n_ff: usize) {
    let per = cpu.pool.split(gate.len() / n_ff, 1);
    cpu.pool.chunks(gate, per * n_ff, |piece, gate| {
        let gu = &gu[piece * per * 2 * n_ff..];
        for (g, gu) in gate.chunks_exact_mut(n_ff).zip(gu.chunks_exact(2 * n_ff)) {
            for (i, (g, pair)) in g.iter_mut().zip(gu.chunks_exact(2)).enumerate() {
                *g = act(a, pair[0], i, n_ff) * pair[1];
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silu_and_gelu_match_their_formulas() {
        for x in [-20.0f32, -3.0, -0.5, 0.0, 0.25, 2.0, 9.5, 15.0] {
            let silu = x as f64 / (1.0 + (-x as f64).exp());
            for i in [0, 15] {
                let got = act(Activation::Silu, x, i, 15) as f64;
                assert!((got - silu).abs() < 1e-6 * silu.abs().max(1.0), "{x} {i}");
            }
            let g = act(Activation::GeluTanh, x, 0, 8) as f64;
            let xf = x as f64;
            let gelu = 0.5
                * xf
                * (1.0
                    + ((2.0 / std::f64::consts::PI).sqrt() * xf * (1.0 + 0.044715 * xf * xf))
                        .tanh());
            // f16 rounding of input and output: relative 2^-10.
            assert!(
                (g - gelu).abs() <= 2e-3 * gelu.abs().max(1e-3),
                "{x}: {g} vs {gelu}"
            );
        }
        assert_eq!(act(Activation::GeluTanh, -10.0, 0, 8), 0.0);
    }

    #[test]
    fn ggml_expf_is_within_two_ulp_and_saturates_as_ggml() {
        let mut x = -104.0f32;
        while x < 89.0 {
            let (got, want) = (v_expf(x) as f64, (x as f64).exp());
            if want > 1e-37 && want < 3e38 {
                assert!(
                    (got - want).abs() <= 2.5 * want * f32::EPSILON as f64,
                    "{x}: {got} vs {want}"
                );
            }
            x += 0.0137;
        }
        assert_eq!(v_expf(0.0), 1.0);
        assert_eq!(v_expf(-200.0), 0.0);
        assert_eq!(v_expf(200.0), f32::INFINITY);
    }
}
