//! Activation quantization before each matmul, as llama.cpp's CPU backend does it: a row of
//! f32 activations becomes the weight type's `vec_dot_type` (see [`ActKind`]), which the dot
//! products of matmul.rs then multiply with integer arithmetic. The same rules as the GPU's
//! shaders/quant_act.wgsl, which documents them.

use super::{f16_to_f32, f32_to_f16};
use crate::backend::ActKind;

/// Activations [n, cols] in one quantized form.
#[derive(Clone, Debug)]
pub struct QAct {
    pub kind: ActKind,
    pub n: usize,
    pub cols: usize,
    /// Q8_*: the 8-bit values, [n, cols].
    pub qs: Vec<i8>,
    /// Q8_*: the scale of each block (Q8_0/Q8_1: an f16 widened).
    pub d: Vec<f32>,
    /// Q8_1: f16(d · Σq) of each block, widened (what ggml's Q4_1/Q5_1 dot products multiply
    /// the weights' min by).
    pub s: Vec<f32>,
    /// Q8_K: Σq of each 16 values.
    pub bsums: Vec<i16>,
    /// F32, F16, BF16: the values, rounded to the kind (as f32).
    pub f: Vec<f32>,
}

/// One row of a [`QAct`], as a dot product reads it.
#[derive(Clone, Copy)]
pub struct ActRow<'a> {
    pub qs: &'a [i8],
    pub d: &'a [f32],
    pub s: &'a [f32],
    pub bsums: &'a [i16],
    pub f: &'a [f32],
}

impl QAct {
    pub fn new(kind: ActKind) -> QAct {
        QAct {
            kind,
            n: 0,
            cols: 0,
            qs: vec![],
            d: vec![],
            s: vec![],
            bsums: vec![],
            f: vec![],
        }
    }

    /// Quantizes x, f32 [n, cols] (cols a whole number of blocks), reusing the allocations.
    pub fn quantize(&mut self, x: &[f32], n: usize, cols: usize) {
        let x = &x[..n * cols];
        self.n = n;
        self.cols = cols;
        let block = self.kind.block() as usize;
        debug_assert!(
            cols.is_multiple_of(block),
            "{cols} columns of {:?}",
            self.kind
        );
        let blocks = n * cols / block;
        match self.kind {
            ActKind::Q8_0 | ActKind::Q8_1 | ActKind::Q8_K => {
                self.qs.resize(n * cols, 0);
                self.d.resize(blocks, 0.0);
            }
            _ => self.f.resize(n * cols, 0.0),
        }
        match self.kind {
            ActKind::Q8_0 => {
                for ((x, q), d) in x
                    .chunks_exact(32)
                    .zip(self.qs.chunks_exact_mut(32))
                    .zip(&mut self.d)
                {
                    *d = q8_0(x, q.try_into().unwrap()).0;
                }
            }
            ActKind::Q8_1 => {
                self.s.resize(blocks, 0.0);
                let blocks = x
                    .chunks_exact(32)
                    .zip(self.qs.chunks_exact_mut(32))
                    .zip(self.d.iter_mut().zip(&mut self.s));
                for ((x, q), (d, s)) in blocks {
                    let (dh, d32) = q8_0(x, q.try_into().unwrap());
                    let sum: i32 = q.iter().map(|&v| v as i32).sum();
                    *d = dh;
                    *s = f16_to_f32(f32_to_f16(d32 * sum as f32));
                }
            }
            ActKind::Q8_K => {
                self.bsums.resize(n * cols / 16, 0);
                let blocks = x
                    .chunks_exact(256)
                    .zip(self.qs.chunks_exact_mut(256))
                    .zip(self.d.iter_mut().zip(self.bsums.chunks_exact_mut(16)));
                for ((x, q), (d, bsums)) in blocks {
                    *d = q8_k(x, q);
                    for (b, q) in bsums.iter_mut().zip(q.chunks_exact(16)) {
                        *b = q.iter().map(|&v| v as i16).sum();
                    }
                }
            }
            ActKind::F16 => {
                for (y, &v) in self.f.iter_mut().zip(x) {
                    *y = f16_to_f32(f32_to_f16(v));
                }
            }
            ActKind::BF16 => {
                for (y, &v) in self.f.iter_mut().zip(x) {
                    let u = v.to_bits();
                    *y = f32::from_bits((u + 0x7fff + ((u >> 16) & 1)) & 0xffff_0000);
                }
            }
            ActKind::F32 => self.f.copy_from_slice(x),
        }
    }

    /// Row t.
    pub fn row(&self, t: usize) -> ActRow<'_> {
        fn slice<T>(v: &[T], t: usize, per_row: usize) -> &[T] {
            v.get(t * per_row..(t + 1) * per_row).unwrap_or(&[])
        }
        let blocks = self.cols / self.kind.block() as usize;
        ActRow {
            qs: slice(&self.qs, t, self.cols),
            d: slice(&self.d, t, blocks),
            s: slice(&self.s, t, blocks),
            bsums: slice(&self.bsums, t, self.cols / 16),
            f: slice(&self.f, t, self.cols),
        }
    }
}

/// Round half to even for |x| < 2^22, as `_mm256_round_ps` and ggml's `nearest_int` do:
/// adding 1.5 · 2^23 leaves no fraction bits, so the FPU's default rounding does it (and this
/// compiles to two additions where `round_ties_even` is a library call).
#[inline(always)]
fn round_even(x: f32) -> f32 {
    let magic = 12582912.0f32;
    (x + magic) - magic
}

/// x86 AVX2 `quantize_row_q8_0` of one block of 32: returns (f16(d) widened, d).
fn q8_0(x: &[f32], q: &mut [i8; 32]) -> (f32, f32) {
    let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
    for (q, &v) in q.iter_mut().zip(x) {
        *q = round_even(v * id) as i8;
    }
    (f16_to_f32(f32_to_f16(d)), d)
}

/// `quantize_row_q8_K_ref` of one block of 256: returns d.
fn q8_k(x: &[f32], q: &mut [i8]) -> f32 {
    let (mut amax, mut vmax) = (0f32, 0f32);
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            vmax = v;
        }
    }
    if amax == 0.0 {
        q.fill(0);
        return 0.0;
    }
    let iscale = -127.0 / vmax;
    for (q, &v) in q.iter_mut().zip(x) {
        *q = round_even(iscale * v).min(127.0) as i8;
    }
    1.0 / iscale
}
