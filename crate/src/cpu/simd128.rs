//! wasm `simd128` kernels for the blocks of 32 (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0): the same eight
//! integer lanes as ggml's AVX2 code (and avx2.rs), from widening multiplies and pairwise adds,
//! and the same per-lane FMA, done in f64 (wasm has no FMA) as the portable kernels do. Their
//! results equal the portable kernels' bit for bit; the browser tests hold them to llama.cpp.

use super::quantize::QAct;
use crate::quant::GgmlType;
use std::arch::wasm32::*;

/// `out[t]` = row · token t for the types with a kernel here; false for the others.
pub fn row(ty: GgmlType, w: &[u8], a: &QAct, out: &mut [f32]) -> bool {
    match ty {
        GgmlType::Q4_0 => blocks32(w, 18, a, out, false, |b| nibbles(&b[2..18], -8)),
        GgmlType::Q4_1 => blocks32(w, 20, a, out, true, |b| nibbles(&b[4..20], 0)),
        GgmlType::Q5_0 => blocks32(w, 22, a, out, false, |b| q5(&b[2..22], -16)),
        GgmlType::Q5_1 => blocks32(w, 24, a, out, true, |b| q5(&b[4..24], 0)),
        // SAFETY: b[2..34] is 32 bytes; v128 loads need no alignment.
        GgmlType::Q8_0 => blocks32(w, 34, a, out, false, |b| unsafe {
            (
                v128_load(b[2..].as_ptr() as *const v128),
                v128_load(b[18..].as_ptr() as *const v128),
            )
        }),
        _ => return false,
    }
    true
}

#[inline(always)]
fn f16(b: &[u8], at: usize) -> f32 {
    super::f16_to_f32(u16::from_le_bytes([b[at], b[at + 1]]))
}

/// A block of 32 nibbles as two i8x16 (low nibbles, then high ones), plus `offset`.
#[inline(always)]
fn nibbles(qs: &[u8], offset: i8) -> (v128, v128) {
    // SAFETY: qs is 16 bytes; v128 loads need no alignment.
    let v = unsafe { v128_load(qs.as_ptr() as *const v128) };
    let m = u8x16_splat(15);
    let o = i8x16_splat(offset);
    (i8x16_add(v128_and(v, m), o), i8x16_add(u8x16_shr(v, 4), o))
}

/// A Q5 block (qh, then qs): nibbles with their fifth bits, plus `offset`.
#[inline(always)]
fn q5(qh_qs: &[u8], offset: i8) -> (v128, v128) {
    let qh = u32::from_le_bytes([qh_qs[0], qh_qs[1], qh_qs[2], qh_qs[3]]);
    let bit = u64x2(0x8040_2010_0804_0201, 0x8040_2010_0804_0201);
    let high = |bytes: v128| v128_and(u8x16_eq(v128_and(bytes, bit), bit), u8x16_splat(0x10));
    // Byte i of each half holds qh's byte i / 8 of that half.
    let spread = |b0: u8, b1: u8| {
        u64x2(
            0x0101_0101_0101_0101 * b0 as u64,
            0x0101_0101_0101_0101 * b1 as u64,
        )
    };
    let [q0, q1, q2, q3] = qh.to_le_bytes();
    let (lo, hi) = nibbles(&qh_qs[4..20], 0);
    let o = i8x16_splat(offset);
    (
        i8x16_add(v128_or(lo, high(spread(q0, q1))), o),
        i8x16_add(v128_or(hi, high(spread(q2, q3))), o),
    )
}

/// Lanes 4j..4j+3 of one half: Σ x · y over each run of four elements, as i32x4.
#[inline(always)]
fn quads(x: v128, y: v128) -> v128 {
    let a = i32x4_extadd_pairwise_i16x8(i16x8_extmul_low_i8x16(x, y));
    let b = i32x4_extadd_pairwise_i16x8(i16x8_extmul_high_i8x16(x, y));
    i32x4_add(
        i32x4_shuffle::<0, 2, 4, 6>(a, b),
        i32x4_shuffle::<1, 3, 5, 7>(a, b),
    )
}

/// acc + s · d per lane, rounded once (in f64, exact products; see matmul.rs `fma`).
#[inline(always)]
fn fma4(acc: v128, s: v128, d: f64) -> v128 {
    let d = f64x2_splat(d);
    let lo = f64x2_add(
        f64x2_mul(f64x2_convert_low_i32x4(s), d),
        f64x2_promote_low_f32x4(acc),
    );
    let s_hi = i32x4_shuffle::<2, 3, 0, 1>(s, s);
    let acc_hi = i32x4_shuffle::<2, 3, 0, 1>(acc, acc);
    let hi = f64x2_add(
        f64x2_mul(f64x2_convert_low_i32x4(s_hi), d),
        f64x2_promote_low_f32x4(acc_hi),
    );
    let (lo, hi) = (f32x4_demote_f64x2_zero(lo), f32x4_demote_f64x2_zero(hi));
    i32x4_shuffle::<0, 1, 4, 5>(lo, hi)
}

/// ggml's `hsum_float_8` of lanes 0..3 (`a`) and 4..7 (`b`).
#[inline(always)]
fn hsum(a: v128, b: v128) -> f32 {
    let r = f32x4_add(b, a);
    (f32x4_extract_lane::<0>(r) + f32x4_extract_lane::<2>(r))
        + (f32x4_extract_lane::<1>(r) + f32x4_extract_lane::<3>(r))
}

/// Blocks of 32 (`size` bytes, f16 d first, then f16 m when `min`) against Q8_0/Q8_1
/// activations; `values(block)` unpacks a block to two i8x16.
#[inline(always)]
fn blocks32(
    w: &[u8],
    size: usize,
    a: &QAct,
    out: &mut [f32],
    min: bool,
    values: impl Fn(&[u8]) -> (v128, v128),
) {
    let nb = w.len() / size;
    for (t, out) in out.iter_mut().enumerate().take(a.n) {
        let (mut lo, mut hi, mut mins) = (f32x4_splat(0.0), f32x4_splat(0.0), 0f32);
        for (b, blk) in w.chunks_exact(size).enumerate() {
            let k = t * nb + b;
            let (x0, x1) = values(blk);
            // SAFETY: a.qs holds 32 values per block of every token.
            let (y0, y1) = unsafe {
                let p = a.qs[32 * k..].as_ptr() as *const v128;
                (v128_load(p), v128_load(p.add(1)))
            };
            if min {
                mins = ((f16(blk, 2) as f64) * (a.s[k] as f64) + mins as f64) as f32;
            }
            let d = (f16(blk, 0) * a.d[k]) as f64;
            lo = fma4(lo, quads(x0, y0), d);
            hi = fma4(hi, quads(x1, y1), d);
        }
        *out = hsum(lo, hi) + mins;
    }
}
