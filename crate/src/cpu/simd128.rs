//! wasm `simd128` kernels for the blocks of 32 (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0) and Q4_K, Q5_K,
//! Q6_K: the same eight integer lanes as ggml's AVX2 code (and avx2.rs), from widening
//! multiplies and pairwise adds, and the same per-lane FMA, done in f64 (wasm has no FMA) as
//! the portable kernels do; Q4_K and Q5_K sum each block's integers exactly and scale once, as
//! matmul.rs does. Their results equal the portable kernels' bit for bit; the browser tests
//! hold them to llama.cpp. As in avx2.rs, a row's blocks are unpacked once for every token.

use super::matmul::scale_min_k4;
use super::quantize::QAct;
use crate::quant::GgmlType;
use std::arch::wasm32::*;

/// Tokens whose accumulators live on the stack at once.
const TOKENS: usize = 64;

/// `out[t]` = row · token t for the types with a kernel here; false for the others.
pub fn row(ty: GgmlType, w: &[u8], a: &QAct, out: &mut [f32]) -> bool {
    match ty {
        GgmlType::Q4_0 => blocks32(w, 18, a, out, false, |b| nibbles(&b[2..18], -8)),
        GgmlType::Q4_1 => blocks32(w, 20, a, out, true, |b| nibbles(&b[4..20], 0)),
        GgmlType::Q5_0 => blocks32(w, 22, a, out, false, |b| q5(&b[2..22], -16)),
        GgmlType::Q5_1 => blocks32(w, 24, a, out, true, |b| q5(&b[4..24], 0)),
        GgmlType::Q8_0 => blocks32(w, 34, a, out, false, |b| (load(&b[2..]), load(&b[18..]))),
        GgmlType::Q4_K => blocks256(w, 144, a, out, true, |b| q4_q5_k(b, false)),
        GgmlType::Q5_K => blocks256(w, 176, a, out, true, |b| q4_q5_k(b, true)),
        GgmlType::Q6_K => blocks256(w, 210, a, out, false, q6_k),
        _ => return false,
    }
    true
}

#[inline(always)]
fn f16(b: &[u8], at: usize) -> f32 {
    super::f16_to_f32(u16::from_le_bytes([b[at], b[at + 1]]))
}

/// The first 16 bytes of `b`.
#[inline(always)]
fn load<T: Copy>(b: &[T]) -> v128 {
    assert!(std::mem::size_of_val(b) >= 16);
    // SAFETY: b holds 16 bytes; v128 loads need no alignment.
    unsafe { v128_load(b.as_ptr() as *const v128) }
}

/// A block of 32 nibbles as two i8x16 (low nibbles, then high ones), plus `offset`.
#[inline(always)]
fn nibbles(qs: &[u8], offset: i8) -> (v128, v128) {
    let v = load(qs);
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

/// Lanes 4j..4j+3 of 16 values from their pair sums: `a` holds pairs 0..3, `b` pairs 4..7.
#[inline(always)]
fn quads_of_pairs(a: v128, b: v128) -> v128 {
    i32x4_add(
        i32x4_shuffle::<0, 2, 4, 6>(a, b),
        i32x4_shuffle::<1, 3, 5, 7>(a, b),
    )
}

/// Lanes 4j..4j+3 of one half: Σ x · y over each run of four elements, as i32x4.
#[cfg(not(target_feature = "relaxed-simd"))]
#[inline(always)]
fn quads(x: v128, y: v128) -> v128 {
    quads_of_pairs(
        i32x4_extadd_pairwise_i16x8(i16x8_extmul_low_i8x16(x, y)),
        i32x4_extadd_pairwise_i16x8(i16x8_extmul_high_i8x16(x, y)),
    )
}

/// `quads` in one relaxed dot (pmaddubsw + pmaddwd on x86), whose second operand must lie in
/// 0..=127 for the result not to depend on the engine: so |x| there and x's sign moved onto y,
/// as ggml's AVX2 code does (activations lie in -127..=127, weights in -127..=127). Pair sums
/// stay below 2 · 127² and never saturate: the same integers as `quads`.
#[cfg(target_feature = "relaxed-simd")]
#[inline(always)]
fn quads(x: v128, y: v128) -> v128 {
    let signed_y = v128_bitselect(i8x16_neg(y), y, i8x16_lt(x, i8x16_splat(0)));
    i32x4_relaxed_dot_i8x16_i7x16_add(signed_y, i8x16_abs(x), i32x4_splat(0))
}

/// acc + s · d per lane, rounded once (in f64, exact products; see matmul.rs `fma`). s is
/// below 2^24 in magnitude, so the same number as its f32 that the portable kernels multiply.
#[cfg(not(target_feature = "relaxed-simd"))]
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

/// `fma4` in one relaxed multiply-add: fused where the CPU has FMA (V8 on x86 with FMA3, and
/// ARM), as ggml's `_mm256_fmadd_ps`; d is an f32 product (see the callers).
#[cfg(target_feature = "relaxed-simd")]
#[inline(always)]
fn fma4(acc: v128, s: v128, d: f64) -> v128 {
    f32x4_relaxed_madd(f32x4_convert_i32x4(s), f32x4_splat(d as f32), acc)
}

/// ggml's `hsum_float_8` of lanes 0..3 (`a`) and 4..7 (`b`).
#[inline(always)]
fn hsum(a: v128, b: v128) -> f32 {
    let r = f32x4_add(b, a);
    (f32x4_extract_lane::<0>(r) + f32x4_extract_lane::<2>(r))
        + (f32x4_extract_lane::<1>(r) + f32x4_extract_lane::<3>(r))
}

/// The sum of four i32 lanes (exact, so in any order).
#[inline(always)]
fn hsum_i32(x: v128) -> i32 {
    let x = i32x4_add(x, i32x4_shuffle::<2, 3, 0, 1>(x, x));
    i32x4_extract_lane::<0>(x) + i32x4_extract_lane::<1>(x)
}

/// The accumulators of one token: lanes 0..3, lanes 4..7, and a scalar sum.
type Acc = (v128, v128, f32);

/// The row times every token: the row's `nb` blocks unpacked once each by `unpack(b)`, then
/// `step(block, k, acc)` for each token, k being the block's index in `a`;
/// out[t] = hsum(lanes) + sum.
#[inline(always)]
fn tokens<B>(
    nb: usize,
    a: &QAct,
    out: &mut [f32],
    unpack: impl Fn(usize) -> B,
    step: impl Fn(&B, usize, &mut Acc),
) {
    let zero = (f32x4_splat(0.0), f32x4_splat(0.0), 0f32);
    if a.n == 1 {
        // The decode step: nothing to keep per token.
        let mut acc = zero;
        for b in 0..nb {
            step(&unpack(b), b, &mut acc);
        }
        out[0] = hsum(acc.0, acc.1) + acc.2;
        return;
    }
    for t0 in (0..a.n).step_by(TOKENS) {
        let tn = TOKENS.min(a.n - t0);
        let mut acc = [zero; TOKENS];
        for b in 0..nb {
            let x = unpack(b);
            for (t, acc) in acc[..tn].iter_mut().enumerate() {
                step(&x, (t0 + t) * nb + b, acc);
            }
        }
        for (out, (lo, hi, sum)) in out[t0..t0 + tn].iter_mut().zip(acc) {
            *out = hsum(lo, hi) + sum;
        }
    }
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
    let unpack = |b: usize| {
        let blk = &w[b * size..(b + 1) * size];
        let m = if min { f16(blk, 2) } else { 0.0 };
        (f16(blk, 0), m, values(blk))
    };
    tokens(
        w.len() / size,
        a,
        out,
        unpack,
        |&(d, m, (x0, x1)), k, acc| {
            let y = &a.qs[32 * k..32 * k + 32];
            if min {
                acc.2 = ((m as f64) * (a.s[k] as f64) + acc.2 as f64) as f32;
            }
            let d = (d * a.d[k]) as f64;
            acc.0 = fma4(acc.0, quads(x0, load(y)), d);
            acc.1 = fma4(acc.1, quads(x1, load(&y[16..])), d);
        },
    );
}

/// A K-quant block unpacked against Q8_K: its 256 values as i8, eight runs of 32 in Q8_K's
/// order, each run two i8x16, and the i16 scale of each half run.
struct KBlock {
    q: [v128; 16],
    scales: [v128; 16],
    d: f32,
    /// Q4_K/Q5_K: dmin and the mins of the eight runs, each twice as i16 (one per sum of 16).
    dmin: f32,
    mins: [v128; 2],
}

/// K-quant blocks of 256 (`size` bytes) against Q8_K; `unpack(block)`. With `min` (Q4_K,
/// Q5_K) each block's integers are summed exactly and scaled once, minus dmin · Σ min · Σq
/// (matmul.rs `k4_k5`); without (Q6_K) ggml's eight lanes are fused into the accumulators with
/// the block's scale (matmul.rs `dot_q6_k`).
#[inline(always)]
fn blocks256(
    w: &[u8],
    size: usize,
    a: &QAct,
    out: &mut [f32],
    min: bool,
    unpack: impl Fn(&[u8]) -> KBlock,
) {
    let unpack = |b: usize| unpack(&w[b * size..(b + 1) * size]);
    tokens(w.len() / size, a, out, unpack, |x, k, acc| {
        let y = &a.qs[256 * k..256 * k + 256];
        // Pair sums times the scale, for values 0..7 (`pairs[h][0]`) and 8..15 of each half
        // run h, summed over the runs: four pairs make a lane.
        let mut pairs = [[i32x4_splat(0); 2]; 2];
        for (i, ((&x, &s), y)) in
            x.q.iter()
                .zip(&x.scales)
                .zip(y.chunks_exact(16))
                .enumerate()
        {
            let (y, p) = (load(y), &mut pairs[i % 2]);
            p[0] = i32x4_add(p[0], i32x4_dot_i16x8(i16x8_extmul_low_i8x16(x, y), s));
            p[1] = i32x4_add(p[1], i32x4_dot_i16x8(i16x8_extmul_high_i8x16(x, y), s));
        }
        let lo = quads_of_pairs(pairs[0][0], pairs[0][1]);
        let hi = quads_of_pairs(pairs[1][0], pairs[1][1]);
        let ad = a.d[k];
        if min {
            let bs = &a.bsums[16 * k..16 * k + 16];
            let ms = hsum_i32(i32x4_add(
                i32x4_dot_i16x8(load(bs), x.mins[0]),
                i32x4_dot_i16x8(load(&bs[8..]), x.mins[1]),
            ));
            let is = hsum_i32(i32x4_add(lo, hi));
            acc.2 += (ad * x.d) * is as f32 - (ad * x.dmin) * ms as f32;
        } else {
            let d = (ad * x.d) as f64;
            acc.0 = fma4(acc.0, lo, d);
            acc.1 = fma4(acc.1, hi, d);
        }
    });
}

/// Q4_K (d, dmin, scales[12], qs[128]) or, with `fifth`, Q5_K (qh[32] before qs): run
/// 2r + k is the low (k = 0) or high nibbles of qs[32r..32r+32], plus bit 2r + k of qh as 16.
#[inline(always)]
fn q4_q5_k(b: &[u8], fifth: bool) -> KBlock {
    let mut scales = [i16x8_splat(0); 16];
    let mut mins = [0i16; 16];
    for j in 0..8 {
        let (s, m) = scale_min_k4(&b[4..16], j);
        scales[2 * j] = i16x8_splat(s as i16);
        scales[2 * j + 1] = scales[2 * j];
        mins[2 * j] = m as i16;
        mins[2 * j + 1] = m as i16;
    }
    let qs = &b[if fifth { 48 } else { 16 }..];
    let m4 = u8x16_splat(15);
    let mut q = [i8x16_splat(0); 16];
    for r in 0..4 {
        for h in 0..2 {
            let bits = load(&qs[32 * r + 16 * h..]);
            q[4 * r + h] = v128_and(bits, m4);
            q[4 * r + 2 + h] = u8x16_shr(bits, 4);
        }
    }
    if fifth {
        let qh = [load(&b[16..]), load(&b[32..])];
        for (i, q) in q.iter_mut().enumerate() {
            let bit = u8x16_splat(1 << (i / 2));
            let set = u8x16_eq(v128_and(qh[i % 2], bit), bit);
            *q = v128_or(*q, v128_and(set, u8x16_splat(16)));
        }
    }
    KBlock {
        q,
        scales,
        d: f16(b, 0),
        dmin: f16(b, 2),
        mins: [load(&mins[..8]), load(&mins[8..])],
    }
}

/// Q6_K (ql[128], qh[64], scales[16] as i8, d) less 32: in each half, run k is the low
/// (k = 0, 1) or high nibbles of ql[32k % 64..][..32] with bits 2k, 2k + 1 of qh[..32] above
/// them; each 16 values have their own scale.
#[inline(always)]
fn q6_k(b: &[u8]) -> KBlock {
    let (m4, m2) = (u8x16_splat(15), u8x16_splat(3));
    let join = |low: v128, high: v128| {
        let v = v128_or(v128_and(low, m4), i8x16_shl(v128_and(high, m2), 4));
        i8x16_sub(v, i8x16_splat(32))
    };
    let mut q = [i8x16_splat(0); 16];
    let mut scales = [i16x8_splat(0); 16];
    for half in 0..2 {
        for h in 0..2 {
            let l0 = load(&b[64 * half + 16 * h..]);
            let l1 = load(&b[64 * half + 32 + 16 * h..]);
            let hb = load(&b[128 + 32 * half + 16 * h..]);
            let i = 8 * half + h;
            q[i] = join(l0, hb);
            q[i + 2] = join(l1, u8x16_shr(hb, 2));
            q[i + 4] = join(u8x16_shr(l0, 4), u8x16_shr(hb, 4));
            q[i + 6] = join(u8x16_shr(l1, 4), u8x16_shr(hb, 6));
        }
    }
    for (s, &v) in scales.iter_mut().zip(&b[192..208]) {
        *s = i16x8_splat(v as i8 as i16);
    }
    KBlock {
        q,
        scales,
        d: f16(b, 208),
        dmin: 0.0,
        mins: [i16x8_splat(0); 2],
    }
}
