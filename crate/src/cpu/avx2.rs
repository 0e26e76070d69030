//! x86_64 AVX2 kernels for the hot weight types: the instructions of ggml's own AVX2 dot
//! products (`maddubs` + `madd` into eight i32 lanes, one FMA per block), so their results are
//! ggml's bit for bit wherever the portable kernels of matmul.rs replay ggml's order (the blocks
//! of 32, Q6_K); Q4_K and Q5_K sum each block's integers exactly and scale once, as matmul.rs
//! does. Each takes one weight row against every token of a batch at once: the row's blocks are
//! unpacked once and reused for all tokens (prefill), and one token is the decode step. The
//! portable kernels compute the same numbers; tests compare them bit for bit.

use super::matmul::scale_min_k4;
use super::quantize::QAct;
use crate::quant::GgmlType;
use std::arch::x86_64::*;

// The functions that define closures carry the target features themselves: a closure takes its
// enclosing function's features, and in one without them every intrinsic is a call (ten times
// slower).

/// Tokens whose accumulators live on the stack at once.
const TOKENS: usize = 64;

/// `out[t]` = row · token t for the types with a kernel here; false for the others.
///
/// # Safety
/// The CPU must have AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn row(ty: GgmlType, w: &[u8], a: &QAct, out: &mut [f32]) -> bool {
    match ty {
        GgmlType::Q4_0 => blocks32(w, 18, a, out, false, |b| nibbles(b.add(2), -8)),
        GgmlType::Q4_1 => blocks32(w, 20, a, out, true, |b| nibbles(b.add(4), 0)),
        GgmlType::Q5_0 => blocks32(w, 22, a, out, false, |b| q5(b.add(2), -16)),
        GgmlType::Q5_1 => blocks32(w, 24, a, out, true, |b| q5(b.add(4), 0)),
        GgmlType::Q8_0 => blocks32(w, 34, a, out, false, |b| {
            _mm256_loadu_si256(b.add(2) as *const __m256i)
        }),
        GgmlType::Q4_K => blocks256(w, 144, a, out, true, |b| q4_q5_k(b, false)),
        GgmlType::Q5_K => blocks256(w, 176, a, out, true, |b| q4_q5_k(b, true)),
        GgmlType::Q6_K => blocks256(w, 210, a, out, false, |b| q6_k(b)),
        _ => return false,
    }
    true
}

#[inline(always)]
unsafe fn f16(p: *const u8) -> f32 {
    let h = u16::from_le_bytes([*p, *p.add(1)]);
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(h as i32)))
}

/// The 32 values of a block of nibbles as i8, low nibbles first, plus `offset`.
#[inline(always)]
unsafe fn nibbles(qs: *const u8, offset: i8) -> __m256i {
    let tmp = _mm_loadu_si128(qs as *const __m128i);
    let bytes = _mm256_set_m128i(_mm_srli_epi16(tmp, 4), tmp);
    let v = _mm256_and_si256(bytes, _mm256_set1_epi8(0x0f));
    _mm256_add_epi8(v, _mm256_set1_epi8(offset))
}

/// A Q5 block (qh, then qs) as i8, plus `offset`.
#[inline(always)]
unsafe fn q5(qh_qs: *const u8, offset: i8) -> __m256i {
    let qh = u32::from_le_bytes([*qh_qs, *qh_qs.add(1), *qh_qs.add(2), *qh_qs.add(3)]);
    // Byte i gets bit i of qh: broadcast the four bytes so that byte i holds qh's byte i / 8,
    // then test bit i % 8.
    let shuffle = _mm256_set_epi64x(
        0x0303_0303_0303_0303,
        0x0202_0202_0202_0202,
        0x0101_0101_0101_0101,
        0,
    );
    let bytes = _mm256_shuffle_epi8(_mm256_set1_epi32(qh as i32), shuffle);
    let bit = _mm256_set1_epi64x(0x8040_2010_0804_0201u64 as i64);
    let set = _mm256_cmpeq_epi8(_mm256_and_si256(bytes, bit), bit);
    let high = _mm256_and_si256(set, _mm256_set1_epi8(0x10));
    let low = nibbles(qh_qs.add(4), 0);
    _mm256_add_epi8(_mm256_or_si256(low, high), _mm256_set1_epi8(offset))
}

/// Eight i32 lanes: lane j = Σ x[i] · y[i] over i in 4j..4j+3 (ggml's
/// `mul_sum_i8_pairs`: maddubs takes an unsigned first operand, so signs move to y).
#[inline(always)]
unsafe fn lane_sums(x: __m256i, y: __m256i) -> __m256i {
    let ax = _mm256_sign_epi8(x, x);
    let sy = _mm256_sign_epi8(y, x);
    _mm256_madd_epi16(_mm256_maddubs_epi16(ax, sy), _mm256_set1_epi16(1))
}

/// ggml's `hsum_float_8`.
#[inline(always)]
unsafe fn hsum(x: __m256) -> f32 {
    let mut r = _mm_add_ps(_mm256_extractf128_ps(x, 1), _mm256_castps256_ps128(x));
    r = _mm_add_ps(r, _mm_movehl_ps(r, r));
    r = _mm_add_ss(r, _mm_movehdup_ps(r));
    _mm_cvtss_f32(r)
}

/// The sum of four i32 lanes (exact, so in any order).
#[inline(always)]
unsafe fn hsum_i32(x: __m128i) -> i32 {
    let x = _mm_add_epi32(x, _mm_unpackhi_epi64(x, x));
    _mm_cvtsi128_si32(_mm_add_epi32(x, _mm_shuffle_epi32(x, 1)))
}

/// The row times every token: the row's `nb` blocks unpacked once each by `unpack(b)`, then
/// `step(block, k, lanes, sum)` for each token, k being the block's index in `a`;
/// out[t] = hsum(lanes) + sum.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn tokens<B>(
    nb: usize,
    a: &QAct,
    out: &mut [f32],
    unpack: impl Fn(usize) -> B,
    step: impl Fn(&B, usize, &mut __m256, &mut f32),
) {
    if a.n == 1 {
        // The decode step: nothing to keep per token.
        let (mut acc, mut sum) = (_mm256_setzero_ps(), 0f32);
        for b in 0..nb {
            step(&unpack(b), b, &mut acc, &mut sum);
        }
        out[0] = hsum(acc) + sum;
        return;
    }
    for t0 in (0..a.n).step_by(TOKENS) {
        let tn = TOKENS.min(a.n - t0);
        let mut acc = [_mm256_setzero_ps(); TOKENS];
        let mut sum = [0f32; TOKENS];
        for b in 0..nb {
            let x = unpack(b);
            for t in 0..tn {
                step(&x, (t0 + t) * nb + b, &mut acc[t], &mut sum[t]);
            }
        }
        for t in 0..tn {
            out[t0 + t] = hsum(acc[t]) + sum[t];
        }
    }
}

/// Blocks of 32 (`size` bytes, f16 d first, then f16 m when `min`) against Q8_0/Q8_1
/// activations; `values(block)` unpacks a block to 32 i8.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn blocks32(
    w: &[u8],
    size: usize,
    a: &QAct,
    out: &mut [f32],
    min: bool,
    values: impl Fn(*const u8) -> __m256i,
) {
    let unpack = |b: usize| {
        let blk = w.as_ptr().add(b * size);
        let m = if min { f16(blk.add(2)) } else { 0.0 };
        (f16(blk), m, values(blk))
    };
    tokens(
        w.len() / size,
        a,
        out,
        unpack,
        |&(d, m, x), k, acc, mins| {
            let y = _mm256_loadu_si256(a.qs.as_ptr().add(32 * k) as *const __m256i);
            if min {
                *mins = m.mul_add(a.s[k], *mins);
            }
            let q = _mm256_cvtepi32_ps(lane_sums(x, y));
            *acc = _mm256_fmadd_ps(_mm256_set1_ps(d * a.d[k]), q, *acc);
        },
    );
}

/// A K-quant block unpacked against Q8_K: its 256 values as unsigned bytes in Q8_K's order,
/// eight runs of 32, and for each run the i16 scale of each of maddubs' pairs.
struct KBlock {
    q: [__m256i; 8],
    scales: [__m256i; 8],
    d: f32,
    /// Q4_K/Q5_K: dmin and the eight runs' mins as i16.
    dmin: f32,
    mins: __m128i,
}

/// K-quant blocks of 256 (`size` bytes) against Q8_K; `unpack(block)`. With `min` (Q4_K,
/// Q5_K) each block's integers are summed exactly and scaled once, minus dmin · Σ min · Σq
/// (matmul.rs `k4_k5`); without (Q6_K, values stored + 32) ggml's eight lanes are fused into
/// the accumulators with the block's scale (matmul.rs `dot_q6_k`).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn blocks256(
    w: &[u8],
    size: usize,
    a: &QAct,
    out: &mut [f32],
    min: bool,
    unpack: impl Fn(*const u8) -> KBlock,
) {
    let unpack = |b: usize| unpack(w.as_ptr().add(b * size));
    tokens(w.len() / size, a, out, unpack, |x, k, acc, sum| {
        let y = a.qs.as_ptr().add(256 * k) as *const __m256i;
        let mut lanes = _mm256_setzero_si256();
        for j in 0..8 {
            let y = _mm256_loadu_si256(y.add(j));
            let mut pairs = _mm256_maddubs_epi16(x.q[j], y);
            if !min {
                pairs = _mm256_sub_epi16(pairs, _mm256_maddubs_epi16(_mm256_set1_epi8(32), y));
            }
            lanes = _mm256_add_epi32(lanes, _mm256_madd_epi16(pairs, x.scales[j]));
        }
        let ad = a.d[k];
        if min {
            // Σq of each run of 32: the sums of 16 added in pairs.
            let bs = a.bsums.as_ptr().add(16 * k) as *const __m128i;
            let runs = _mm_hadd_epi16(_mm_loadu_si128(bs), _mm_loadu_si128(bs.add(1)));
            let ms = hsum_i32(_mm_madd_epi16(x.mins, runs));
            let is = hsum_i32(_mm_add_epi32(
                _mm256_castsi256_si128(lanes),
                _mm256_extracti128_si256(lanes, 1),
            ));
            *sum += (ad * x.d) * is as f32 - (ad * x.dmin) * ms as f32;
        } else {
            let q = _mm256_cvtepi32_ps(lanes);
            *acc = _mm256_fmadd_ps(_mm256_set1_ps(ad * x.d), q, *acc);
        }
    });
}

/// Q4_K (d, dmin, scales[12], qs[128]) or, with `fifth`, Q5_K (qh[32] before qs): run
/// 2r + k is the low (k = 0) or high nibbles of qs[32r..32r+32], plus bit 2r + k of qh as 16.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q4_q5_k(b: *const u8, fifth: bool) -> KBlock {
    let sc = std::slice::from_raw_parts(b.add(4), 12);
    let mut scales = [_mm256_setzero_si256(); 8];
    let mut mins = [0i16; 8];
    for j in 0..8 {
        let (s, m) = scale_min_k4(sc, j);
        scales[j] = _mm256_set1_epi16(s as i16);
        mins[j] = m as i16;
    }
    let qs = b.add(if fifth { 48 } else { 16 });
    let qh = _mm256_loadu_si256(b.add(16) as *const __m256i);
    let m4 = _mm256_set1_epi8(15);
    let mut q = [_mm256_setzero_si256(); 8];
    for r in 0..4 {
        let bits = _mm256_loadu_si256(qs.add(32 * r) as *const __m256i);
        q[2 * r] = _mm256_and_si256(bits, m4);
        q[2 * r + 1] = _mm256_and_si256(_mm256_srli_epi16(bits, 4), m4);
    }
    if fifth {
        for (j, q) in q.iter_mut().enumerate() {
            let bit = _mm256_set1_epi8((1u8 << j) as i8);
            let set = _mm256_cmpeq_epi8(_mm256_and_si256(qh, bit), bit);
            *q = _mm256_or_si256(*q, _mm256_and_si256(set, _mm256_set1_epi8(16)));
        }
    }
    KBlock {
        q,
        scales,
        d: f16(b),
        dmin: f16(b.add(2)),
        mins: _mm_loadu_si128(mins.as_ptr() as *const __m128i),
    }
}

/// Q6_K (ql[128], qh[64], scales[16] as i8, d): in each half, run k is the low (k = 0, 1) or
/// high nibbles of ql[32k % 64..][..32] with bits 2k, 2k + 1 of qh[..32] above them; each
/// 16 values have their own scale.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q6_k(b: *const u8) -> KBlock {
    let (m4, m2) = (_mm256_set1_epi8(15), _mm256_set1_epi8(3));
    let load = |p: *const u8| _mm256_loadu_si256(p as *const __m256i);
    let join = |low: __m256i, high: __m256i| {
        _mm256_or_si256(
            _mm256_and_si256(low, m4),
            _mm256_slli_epi16(_mm256_and_si256(high, m2), 4),
        )
    };
    let mut q = [_mm256_setzero_si256(); 8];
    let mut scales = [_mm256_setzero_si256(); 8];
    for half in 0..2 {
        let (l0, l1) = (load(b.add(64 * half)), load(b.add(64 * half + 32)));
        let h = load(b.add(128 + 32 * half));
        q[4 * half] = join(l0, h);
        q[4 * half + 1] = join(l1, _mm256_srli_epi16(h, 2));
        q[4 * half + 2] = join(_mm256_srli_epi16(l0, 4), _mm256_srli_epi16(h, 4));
        q[4 * half + 3] = join(_mm256_srli_epi16(l1, 4), _mm256_srli_epi16(h, 6));
        for k in 0..4 {
            let s = |i: usize| _mm_set1_epi16(*b.add(192 + 8 * half + 2 * k + i) as i8 as i16);
            scales[4 * half + k] = _mm256_set_m128i(s(1), s(0));
        }
    }
    KBlock {
        q,
        scales,
        d: f16(b.add(208)),
        dmin: 0.0,
        mins: _mm_setzero_si128(),
    }
}
