//! x86_64 AVX2 kernels for the hot weight types: the instructions of ggml's own AVX2 dot
//! products (`maddubs` + `madd` into eight i32 lanes, one FMA per block), so their results are
//! ggml's bit for bit. Each takes one weight row against every token of a batch at once: the
//! row's blocks are unpacked once and reused for all tokens (prefill), and one token is the
//! decode step. The portable kernels of matmul.rs compute the same lanes; tests compare them.

use super::quantize::QAct;
use crate::quant::GgmlType;
use std::arch::x86_64::*;

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

/// Blocks of 32 (`size` bytes, f16 d first, then f16 m when `min`) against Q8_0/Q8_1
/// activations; `values(block)` unpacks a block to 32 i8.
#[inline(always)]
unsafe fn blocks32(
    w: &[u8],
    size: usize,
    a: &QAct,
    out: &mut [f32],
    min: bool,
    values: impl Fn(*const u8) -> __m256i,
) {
    let nb = w.len() / size;
    if a.n == 1 {
        // The decode step: nothing to keep per token.
        let (mut acc, mut mins) = (_mm256_setzero_ps(), 0f32);
        for b in 0..nb {
            let blk = w.as_ptr().add(b * size);
            let y = _mm256_loadu_si256(a.qs.as_ptr().add(32 * b) as *const __m256i);
            if min {
                mins = f16(blk.add(2)).mul_add(a.s[b], mins);
            }
            let q = _mm256_cvtepi32_ps(lane_sums(values(blk), y));
            acc = _mm256_fmadd_ps(_mm256_set1_ps(f16(blk) * a.d[b]), q, acc);
        }
        out[0] = hsum(acc) + mins;
        return;
    }
    for t0 in (0..a.n).step_by(TOKENS) {
        let tn = TOKENS.min(a.n - t0);
        let mut acc = [_mm256_setzero_ps(); TOKENS];
        let mut mins = [0f32; TOKENS];
        for b in 0..nb {
            let blk = w.as_ptr().add(b * size);
            let (d, m) = (f16(blk), if min { f16(blk.add(2)) } else { 0.0 });
            let x = values(blk);
            for t in 0..tn {
                let k = (t0 + t) * nb + b;
                let y = _mm256_loadu_si256(a.qs.as_ptr().add(32 * k) as *const __m256i);
                if min {
                    mins[t] = m.mul_add(a.s[k], mins[t]);
                }
                let q = _mm256_cvtepi32_ps(lane_sums(x, y));
                acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(d * a.d[k]), q, acc[t]);
            }
        }
        for t in 0..tn {
            out[t0 + t] = hsum(acc[t]) + mins[t];
        }
    }
}
