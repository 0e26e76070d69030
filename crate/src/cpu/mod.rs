//! The CPU engine: for devices without a usable GPU. Weights stay quantized in memory, as the
//! GGUF stores them; activations are quantized to each weight type's `vec_dot_type` and
//! multiplied with ggml's integer dot products, so the results track llama.cpp's CPU backend,
//! which the goldens come from.
//!
//! One file per op, as in `gpu/`. The kernels are plain Rust written so that the compiler
//! vectorizes their integer inner loops: natively they are compiled twice, portable and with
//! AVX2 (picked at run time, [`Simd`]); aarch64 has NEON in its baseline; the wasm build enables
//! `simd128`. Floating-point sums keep one fixed order in every build, so all of them give
//! bit-identical results. Work is split over rows (matmuls) or heads (attention) on a thread
//! pool ([`pool`]): all cores natively, one thread in the browser.

mod act;
mod attention;
#[cfg(target_arch = "x86_64")]
mod avx2;
mod matmul;
mod pass;
pub mod pool;
mod quantize;
mod rmsnorm;
mod rope;
#[cfg(target_arch = "wasm32")]
mod simd128;

pub use matmul::{dot, CpuMatrix};
pub use pass::{CpuPass, CpuState};
pub use quantize::QAct;
pub use rope::CpuKv;

/// The instruction set the kernels were compiled for, picked once at run time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Simd {
    /// Whatever the target's baseline offers: SSE2 on x86_64, NEON on aarch64, simd128 in the
    /// wasm builds (with relaxed SIMD in www/pkg*-relaxed).
    Baseline,
    /// x86_64 with AVX2, FMA and F16C.
    Avx2,
}

impl Simd {
    /// The best this CPU runs.
    pub fn detect() -> Simd {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma")
            && std::arch::is_x86_feature_detected!("f16c")
        {
            return Simd::Avx2;
        }
        Simd::Baseline
    }

    pub fn name(self) -> &'static str {
        match self {
            #[cfg(all(target_arch = "wasm32", target_feature = "relaxed-simd"))]
            Simd::Baseline => "relaxed-simd",
            #[cfg(all(target_arch = "wasm32", not(target_feature = "relaxed-simd")))]
            Simd::Baseline => "simd128",
            #[cfg(target_arch = "aarch64")]
            Simd::Baseline => "neon",
            #[cfg(not(any(target_arch = "wasm32", target_arch = "aarch64")))]
            Simd::Baseline => "baseline",
            Simd::Avx2 => "avx2",
        }
    }
}

/// In the browser: what lets the page's event loop run (the worker's abort messages) between
/// two forward passes, which otherwise run to the end of a generation without a break.
#[cfg(target_arch = "wasm32")]
pub type YieldHook = Box<dyn Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>>;

/// The CPU engine: its thread pool and instruction set.
pub struct Cpu {
    pub pool: pool::Pool,
    pub simd: Simd,
    #[cfg(target_arch = "wasm32")]
    pub yield_hook: Option<YieldHook>,
}

impl Cpu {
    /// `threads` workers (0: one per core), with the best instruction set this CPU has.
    pub fn new(threads: usize) -> crate::error::Result<Cpu> {
        Self::with_simd(threads, Simd::detect())
    }

    /// The same, with the baseline kernels (tests compare the two).
    pub fn with_simd(threads: usize, simd: Simd) -> crate::error::Result<Cpu> {
        Ok(Cpu {
            pool: pool::Pool::new(threads)?,
            simd,
            #[cfg(target_arch = "wasm32")]
            yield_hook: None,
        })
    }

    pub fn threads(&self) -> usize {
        self.pool.threads()
    }
}

/// ggml's `GGML_FP16_TO_FP32`, exact: the f16 bits moved into an f32's places and rebiased
/// with one multiplication by 2^112 (which also makes subnormals right). Branch-free (the
/// inf/NaN case is a select), so that loops over a head's values vectorize.
#[inline(always)]
pub(crate) fn f16_to_f32(h: u16) -> f32 {
    let h = h as u32;
    let magnitude = (h & 0x7fff) << 13;
    let finite = f32::from_bits(magnitude) * f32::from_bits(0x7780_0000);
    let special = f32::from_bits(magnitude | 0x7f80_0000); // inf, NaN
    let v = if magnitude >= 0x7c00 << 13 {
        special
    } else {
        finite
    };
    f32::from_bits(v.to_bits() | (h & 0x8000) << 16)
}

/// x rounded to the nearest f16 (ties to even), as an f32: `f16_to_f32(f32_to_f16(x))` in a
/// few integer operations, for the attention accumulator that ggml keeps in f16. Every case is
/// computed and the right one selected, without branches, so that the accumulator loops
/// vectorize.
#[inline(always)]
pub(crate) fn round_f16(x: f32) -> f32 {
    let a = x.abs();
    // f16 subnormals are multiples of 2^-24: adding 0.75 = 1.5 · 2^-1 leaves none finer.
    let subnormal = ((x + 0.75) - 0.75).copysign(x);
    // Drop 13 of the 23 mantissa bits, rounding half to even.
    let b = x.to_bits();
    let normal = f32::from_bits(b.wrapping_add(0x0fff + ((b >> 13) & 1)) & !0x1fff);
    let r = if a < 6.103_515_6e-5 {
        subnormal
    } else {
        normal
    };
    let r = if a >= 65520.0 {
        f32::INFINITY.copysign(x)
    } else {
        r
    };
    if a.is_nan() {
        x
    } else {
        r
    }
}

/// ggml's `GGML_FP32_TO_FP16`: round to nearest even.
#[inline(always)]
pub(crate) fn f32_to_f16(x: f32) -> u16 {
    half::f16::from_f32(x).to_bits()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_f16_equals_the_conversion_both_ways() {
        let mut x = 1e-9f32;
        while x < 1e6 {
            for v in [x, -x, x * 1.000_244_1, x * 0.999_511_7] {
                let want = half::f16::from_f32(v).to_f32();
                assert_eq!(round_f16(v).to_bits(), want.to_bits(), "{v:e}");
            }
            x *= 1.000_37;
        }
        // Exact ties round to even, in the normal and the subnormal range.
        for h in [0x3c00u16, 0x0001, 0x0200, 0x7bfe] {
            let (a, b) = (
                half::f16::from_bits(h).to_f32(),
                half::f16::from_bits(h + 1).to_f32(),
            );
            let mid = (a + b) / 2.0;
            assert_eq!(round_f16(mid), half::f16::from_f32(mid).to_f32(), "{h:#x}");
        }
        assert_eq!(round_f16(70000.0), f32::INFINITY);
        assert_eq!(round_f16(0.0), 0.0);
    }

    #[test]
    fn f16_conversion_is_exact_for_every_value() {
        for h in 0..=u16::MAX {
            let want = half::f16::from_bits(h).to_f32();
            let got = f16_to_f32(h);
            assert!(
                got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()),
                "{h:#06x}: {got} != {want}"
            );
        }
    }
}
