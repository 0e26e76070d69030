//! CPU quantization of f32 rows into every supported GGUF type: llama.cpp's reference algorithms
//! from `ggml-quants.c`, as `llama-quantize` runs them **without an importance matrix**
//! (`ggml_quantize_chunk` with `imatrix = NULL`):
//!
//! | type | ggml function |
//! |---|---|
//! | F16, BF16 | `ggml_fp32_to_fp16_row`, `ggml_fp32_to_bf16_row_ref` |
//! | Q4_0 … Q8_0 | `quantize_row_q4_0_ref` … `quantize_row_q8_0_ref` |
//! | Q2_K … Q6_K | `quantize_row_q2_K_ref` … (`make_qkx2_quants`, `make_q3_quants`, `make_qx_quants`) |
//! | IQ4_NL, IQ4_XS | `quantize_iq4_nl` / `quantize_iq4_xs` → `quantize_row_iq4_nl_impl(…, ntry = 7)` |
//!
//! The output is bit-exact with llama.cpp's oracle build (commit 5b4ebc5, GCC, x86-64 baseline:
//! plain SSE float arithmetic, no FMA contraction) for finite inputs; see the tests and
//! `tests/golden/make_quant_goldens.py`. Bit-exactness needs the same f32 operations in the same
//! order, so the code below keeps ggml's expression shapes; the details that matter:
//!
//! - `nearest_int` is ggml's `x + 12582912.0` trick (round half to even, then the low mantissa
//!   bits), not `f32::round` (half away from zero), which only Q8_0 uses (`roundf`).
//! - Reciprocals are f32 (`1/d`, `1/iscale`), computed from the *unrounded* f32 scale; the f16
//!   rounding of a block scale (`GGML_FP32_TO_FP16`, round to nearest even, NaN → `0x7E00 | sign`)
//!   happens when it is stored, and the K-quants then requantize every weight against the
//!   *stored* (rounded) scale and min.
//! - Products associate left to right as written in C (`w*x*l` is `(w*x)*l`); sums run in index
//!   order; integer quants convert to f32 where C converts them. Rust never fuses `a*b + c`
//!   unless `mul_add` is called, and it is not.
//! - Casts follow what GCC does on x86-64: `(int8_t)f` truncates towards zero through a 32-bit
//!   `cvttss2si` (NaN/overflow give `INT_MIN`, see [`cvtt`]), an `int` stored into a `uint8_t`
//!   keeps its low byte (`as u8`).
//! - IQ4 uses the 5b4ebc5 `best_index_int8` (binary search, then `x - v[i-1] < v[i] - x` in f32;
//!   the oracle's machine code has those two subtractions), not the later branchless version,
//!   which can pick the other level when `x` is within an ulp of a midpoint.
//!
//! Quantization is per block of [`GgmlType::block_size`] values, so any whole number of blocks
//! can be quantized in pieces and concatenated.

use super::blocks::*;
use super::GgmlType;
use crate::error::{Error, Result};
use bytemuck::Pod;

/// ggml's `GROUP_MAX_EPS`: a (sub-)block whose largest magnitude is below this is all zeros.
const GROUP_MAX_EPS: f32 = 1e-15;

/// Types [`quantize`] can produce: every type this crate dequantizes.
pub fn can_quantize(ty: GgmlType) -> bool {
    ty.is_supported()
}

/// Quantizes `x`, a whole number of `ty` blocks, to `ty` blocks as llama.cpp's `llama-quantize`
/// does without an importance matrix.
///
/// A length that is not a multiple of the block size is [`Error::BadBlockData`] (its byte counts
/// are those of the f32 input); a type outside [`can_quantize`] is [`Error::UnsupportedType`].
pub fn quantize(ty: GgmlType, x: &[f32]) -> Result<Vec<u8>> {
    use GgmlType::*;
    let n = ty.block_size() as usize;
    if !x.len().is_multiple_of(n) {
        return Err(Error::BadBlockData {
            ty,
            len: x.len() * 4,
            block_bytes: n as u64 * 4,
        });
    }
    Ok(match ty {
        F32 => x.iter().flat_map(|v| v.to_le_bytes()).collect(),
        F16 => x.iter().flat_map(|&v| f32_to_f16(v).0).collect(),
        BF16 => x.iter().flat_map(|&v| f32_to_bf16(v)).collect(),
        Q4_0 => per_block(ty, x, q4_0),
        Q4_1 => per_block(ty, x, q4_1),
        Q5_0 => per_block(ty, x, q5_0),
        Q5_1 => per_block(ty, x, q5_1),
        Q8_0 => per_block(ty, x, q8_0),
        Q2_K => per_block(ty, x, q2_k),
        Q3_K => per_block(ty, x, q3_k),
        Q4_K => per_block(ty, x, q4_k),
        Q5_K => per_block(ty, x, q5_k),
        Q6_K => per_block(ty, x, q6_k),
        IQ4_NL => per_block(ty, x, iq4_nl),
        IQ4_XS => per_block(ty, x, iq4_xs),
        _ => {
            return Err(Error::UnsupportedType {
                ty,
                tensors: "(as a quantization target)".into(),
            })
        }
    })
}

/// Zeroed output blocks `B`, each filled by `block` from its `ty.block_size()` inputs.
fn per_block<B: Pod>(ty: GgmlType, x: &[f32], block: fn(&[f32], &mut B)) -> Vec<u8> {
    debug_assert_eq!(size_of::<B>() as u64, ty.type_size(), "{ty}: block size");
    let n = ty.block_size() as usize;
    let mut out = vec![0u8; x.len() / n * size_of::<B>()];
    let blocks: &mut [B] = bytemuck::cast_slice_mut(&mut out);
    for (y, x) in blocks.iter_mut().zip(x.chunks_exact(n)) {
        block(x, y);
    }
    out
}

// ---- scalars ----

/// ggml's `GGML_FP32_TO_FP16` (`ggml_compute_fp32_to_fp16`, the portable bit-level version that
/// the oracle's base library uses): round to nearest even, overflow to ±inf, subnormals kept,
/// every NaN becomes `0x7E00` with the input's sign.
pub fn f32_to_f16(f: f32) -> F16 {
    let scale_to_inf = f32::from_bits(0x7780_0000); // 2^112
    let scale_to_zero = f32::from_bits(0x0880_0000); // 2^-110
    let mut base = (f.abs() * scale_to_inf) * scale_to_zero;
    let w = f.to_bits();
    let shl1_w = w.wrapping_add(w);
    let sign = w & 0x8000_0000;
    let bias = (shl1_w & 0xFF00_0000).max(0x7100_0000);
    base += f32::from_bits((bias >> 1) + 0x0780_0000);
    let bits = base.to_bits();
    let nonsign = ((bits >> 13) & 0x7C00) + (bits & 0x0FFF);
    let h = (sign >> 16)
        | if shl1_w > 0xFF00_0000 {
            0x7E00
        } else {
            nonsign
        };
    F16((h as u16).to_le_bytes())
}

/// ggml's `ggml_compute_fp32_to_bf16` as little-endian bytes: round to nearest even on the top
/// 16 bits; a NaN keeps its top bits and is forced quiet (`| 0x40`).
pub fn f32_to_bf16(f: f32) -> [u8; 2] {
    let u = f.to_bits();
    let h = if u & 0x7FFF_FFFF > 0x7F80_0000 {
        (u >> 16) | 64
    } else {
        (u + (0x7FFF + ((u >> 16) & 1))) >> 16
    };
    (h as u16).to_le_bytes()
}

/// ggml's `nearest_int`: adding 1.5 · 2^23 leaves the value rounded (half to even) in the low
/// mantissa bits. Exact for |x| ≤ 4194303; outside that (and for inf/NaN) it returns what ggml's
/// returns, which some clamps below rely on.
#[inline]
fn nearest_int(x: f32) -> i32 {
    ((x + 12_582_912.0).to_bits() & 0x007F_FFFF) as i32 - 0x0040_0000
}

/// C's float-to-integer conversion as GCC compiles it on x86-64 (`cvttss2si`, then the low byte
/// for an 8-bit destination): truncation towards zero, and NaN or out of range gives `i32::MIN`
/// (whose low byte is 0), where Rust's `as` would saturate. Reached by blocks of subnormal
/// values, whose reciprocal scale overflows to infinity.
#[inline]
fn cvtt(f: f32) -> i32 {
    if (-2_147_483_648.0..2_147_483_648.0).contains(&f) {
        f as i32
    } else {
        i32::MIN
    }
}

/// The inverse of dequant's `unpack`: ORs `value` (< 2^BITS) in as element `i` of a field array
/// packed the way ggml packs quants (each run of `group` elements owns `group * BITS / 8` bytes;
/// element `j` of a run sits in byte `j % len` at bit `BITS * (j / len)`). `bytes` starts zeroed.
#[inline]
fn pack<const BITS: usize>(bytes: &mut [u8], group: usize, i: usize, value: u8) {
    debug_assert!(value < 1 << BITS);
    let len = group * BITS / 8;
    let run = &mut bytes[i / group * len..][..len];
    let j = i % group;
    run[j % len] |= value << (BITS * (j / len));
}

/// The element of largest magnitude, with its sign (the first one on ties), and that magnitude.
#[inline]
fn signed_absmax(x: &[f32]) -> (f32, f32) {
    let (mut max, mut amax) = (0f32, 0f32);
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    (max, amax)
}

// ---- the legacy 32-weight blocks ----

/// Q4_0: ggml `quantize_row_q4_0_ref`; `d = max / -8` with the signed maximum, so the largest
/// magnitude maps to -8 exactly and the other end has 7 steps.
fn q4_0(x: &[f32], y: &mut BlockQ4_0) {
    let (max, _) = signed_absmax(x);
    let d = max / -8.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    y.d = f32_to_f16(d);
    for (i, &v) in x.iter().enumerate() {
        let q = (cvtt(v * id + 8.5) as i8).min(15) as u8;
        pack::<4>(&mut y.qs, QK, i, q);
    }
}

/// The min and max of a block as ggml's `_1` quantizers find them (strict comparisons from
/// ±FLT_MAX).
fn min_max(x: &[f32]) -> (f32, f32) {
    let (mut min, mut max) = (f32::MAX, -f32::MAX);
    for &v in x {
        if v < min {
            min = v;
        }
        if v > max {
            max = v;
        }
    }
    (min, max)
}

/// Q4_1: ggml `quantize_row_q4_1_ref`; `d = (max - min) / 15`, `m = min`.
fn q4_1(x: &[f32], y: &mut BlockQ4_1) {
    let (min, max) = min_max(x);
    let d = (max - min) / 15.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    y.d = f32_to_f16(d);
    y.m = f32_to_f16(min);
    for (i, &v) in x.iter().enumerate() {
        let q = (cvtt((v - min) * id + 0.5) as i8).min(15) as u8;
        pack::<4>(&mut y.qs, QK, i, q);
    }
}

/// Q5_0: ggml `quantize_row_q5_0_ref`; `d = max / -16`.
fn q5_0(x: &[f32], y: &mut BlockQ5_0) {
    let (max, _) = signed_absmax(x);
    let d = max / -16.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    y.d = f32_to_f16(d);
    for (i, &v) in x.iter().enumerate() {
        let q = (cvtt(v * id + 16.5) as i8).min(31) as u8;
        pack::<4>(&mut y.qs, QK, i, q & 0xF);
        pack::<1>(&mut y.qh, 8, i, q >> 4);
    }
}

/// Q5_1: ggml `quantize_row_q5_1_ref`; `d = (max - min) / 31` (no clamp in ggml: the top value
/// rounds to 31 at most).
fn q5_1(x: &[f32], y: &mut BlockQ5_1) {
    let (min, max) = min_max(x);
    let d = (max - min) / 31.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    y.d = f32_to_f16(d);
    y.m = f32_to_f16(min);
    for (i, &v) in x.iter().enumerate() {
        let q = cvtt((v - min) * id + 0.5) as u8;
        pack::<4>(&mut y.qs, QK, i, q & 0xF);
        pack::<1>(&mut y.qh, 8, i, (q >> 4) & 1);
    }
}

/// Q8_0: ggml `quantize_row_q8_0_ref`; `d = amax / 127`, `q = roundf(x / d)` (half away from
/// zero).
fn q8_0(x: &[f32], y: &mut BlockQ8_0) {
    // ggml's MAX(a, b) is `a > b ? a : b`.
    let amax = x
        .iter()
        .fold(0f32, |a, v| if a > v.abs() { a } else { v.abs() });
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    y.d = f32_to_f16(d);
    for (q, &v) in y.qs.iter_mut().zip(x) {
        *q = cvtt((v * id).round()) as i8;
    }
}

// ---- k-quant helpers (ggml-quants.c) ----

/// ggml `make_qkx2_quants`: an asymmetric fit `x ≈ scale * L - min` (L in 0..=nmax, min ≥ 0
/// returned separately) for one sub-block. Starts from the min/max grid, then tries `nstep + 1`
/// grid widths `(rmin + rdelta * is + nmax) / (max - min)`, each followed by a weighted
/// least-squares solve for scale and min, keeping the lowest weighted error (absolute with
/// `use_mad`, squared otherwise). Writes the best `L`, returns `(scale, min)`.
#[allow(clippy::too_many_arguments)]
fn make_qkx2_quants(
    nmax: i32,
    x: &[f32],
    weights: &[f32],
    l_out: &mut [u8],
    rmin: f32,
    rdelta: f32,
    nstep: i32,
    use_mad: bool,
) -> (f32, f32) {
    let n = x.len();
    let mut min = x[0];
    let mut max = x[0];
    let mut sum_w = weights[0];
    let mut sum_x = sum_w * x[0];
    for i in 1..n {
        if x[i] < min {
            min = x[i];
        }
        if x[i] > max {
            max = x[i];
        }
        let w = weights[i];
        sum_w += w;
        sum_x += w * x[i];
    }
    if min > 0.0 {
        min = 0.0;
    }
    if max == min {
        l_out.fill(0);
        return (0.0, -min);
    }
    let error = |diff: f32| if use_mad { diff.abs() } else { diff * diff };
    let mut iscale = nmax as f32 / (max - min);
    let mut scale = 1.0 / iscale;
    let mut best_error = 0f32;
    for i in 0..n {
        let l = nearest_int(iscale * (x[i] - min));
        l_out[i] = l.clamp(0, nmax) as u8;
        let diff = scale * l_out[i] as f32 + min - x[i];
        best_error += weights[i] * error(diff);
    }
    if nstep < 1 {
        return (scale, -min);
    }
    let mut laux = [0u8; 32];
    let laux = &mut laux[..n];
    for is in 0..=nstep {
        iscale = (rmin + rdelta * is as f32 + nmax as f32) / (max - min);
        let (mut sum_l, mut sum_l2, mut sum_xl) = (0f32, 0f32, 0f32);
        for i in 0..n {
            let l = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
            laux[i] = l as u8;
            let (w, l) = (weights[i], l as f32);
            sum_l += w * l;
            sum_l2 += w * l * l;
            sum_xl += w * l * x[i];
        }
        let det = sum_w * sum_l2 - sum_l * sum_l;
        if det > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / det;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let mut cur_error = 0f32;
            for i in 0..n {
                let diff = this_scale * laux[i] as f32 + this_min - x[i];
                cur_error += weights[i] * error(diff);
            }
            if cur_error < best_error {
                l_out.copy_from_slice(laux);
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    (scale, -min)
}

/// ggml `make_q3_quants` with `do_rmse`: a symmetric fit `x ≈ scale * (L - nmax)` weighted by
/// `x²`, then up to 5 passes that move single quants when that raises `sumlx² / suml2`. Writes
/// `L` (offset by `nmax`, so 0..2·nmax) and returns the scale.
fn make_q3_quants(nmax: i32, x: &[f32], l_out: &mut [i8]) -> f32 {
    let (max, amax) = signed_absmax(x);
    if amax < GROUP_MAX_EPS {
        l_out.fill(0);
        return 0.0;
    }
    let iscale = -(nmax as f32) / max;
    let (mut sumlx, mut suml2) = (0f32, 0f32);
    for (l_out, &x) in l_out.iter_mut().zip(x) {
        let l = nearest_int(iscale * x).clamp(-nmax, nmax - 1);
        *l_out = l as i8;
        let w = x * x;
        sumlx += w * x * l as f32;
        suml2 += w * l as f32 * l as f32;
    }
    for _ in 0..5 {
        let mut changed = false;
        for (l_i, &x) in l_out.iter_mut().zip(x) {
            let w = x * x;
            let old = *l_i as f32;
            let mut slx = sumlx - w * x * old;
            if slx > 0.0 {
                let mut sl2 = suml2 - w * old * old;
                let new_l = nearest_int(x * sl2 / slx).clamp(-nmax, nmax - 1);
                if new_l != *l_i as i32 {
                    slx += w * x * new_l as f32;
                    sl2 += w * new_l as f32 * new_l as f32;
                    if sl2 > 0.0 && slx * slx * suml2 > sumlx * sumlx * sl2 {
                        *l_i = new_l as i8;
                        sumlx = slx;
                        suml2 = sl2;
                        changed = true;
                    }
                }
            }
        }
        if !changed {
            break;
        }
    }
    for l in l_out.iter_mut() {
        *l += nmax as i8;
    }
    if suml2 > 0.0 {
        sumlx / suml2
    } else {
        0.0
    }
}

/// ggml `make_qx_quants` as Q6_K calls it (`rmse_type = 1`, no importance weights, so the
/// weights are `x²`): a symmetric fit `x ≈ scale * (L - nmax)`, trying 18 grid widths
/// `-(nmax + 0.1 * is) / max` and keeping the one with the best weighted least-squares scale.
/// Writes `L` (0..2·nmax) and returns the scale.
fn make_qx_quants(nmax: i32, x: &[f32], l_out: &mut [i8]) -> f32 {
    let (max, amax) = signed_absmax(x);
    if amax < GROUP_MAX_EPS {
        l_out.fill(0);
        return 0.0;
    }
    // One grid: the quants (already offset) and the weighted sums.
    let fit = |iscale: f32, l_out: Option<&mut [i8]>| {
        let (mut sumlx, mut suml2) = (0f32, 0f32);
        let mut l_out = l_out;
        for (i, &x) in x.iter().enumerate() {
            let l = nearest_int(iscale * x).clamp(-nmax, nmax - 1);
            if let Some(out) = l_out.as_deref_mut() {
                out[i] = (l + nmax) as i8;
            }
            let w = x * x;
            sumlx += w * x * l as f32;
            suml2 += w * l as f32 * l as f32;
        }
        (sumlx, suml2)
    };
    let (sumlx, suml2) = fit(-(nmax as f32) / max, Some(&mut *l_out));
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    let mut best = scale * sumlx;
    for is in (-9..=9).filter(|&is| is != 0) {
        let iscale = -(nmax as f32 + 0.1 * is as f32) / max;
        let (sumlx, suml2) = fit(iscale, None);
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            fit(iscale, Some(&mut *l_out));
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    scale
}

// ---- k-quants ----

/// Q2_K: ggml `quantize_row_q2_K_ref`. 16 sub-blocks of 16 fitted by `make_qkx2_quants` (3
/// levels above the min, weights `|x|`, absolute error); their scales and mins quantized to 4
/// bits against the largest of each (`d = max_scale / 15`, `dmin = max_min / 15`); then every
/// weight requantized against the stored f16 values.
fn q2_k(x: &[f32], y: &mut BlockQ2_K) {
    let mut l = [0u8; QK_K];
    let mut scales = [0f32; QK_K / 16];
    let mut mins = [0f32; QK_K / 16];
    let (mut max_scale, mut max_min) = (0f32, 0f32);
    for (j, (xs, ls)) in x.chunks_exact(16).zip(l.chunks_exact_mut(16)).enumerate() {
        let weights: [f32; 16] = std::array::from_fn(|i| xs[i].abs());
        (scales[j], mins[j]) = make_qkx2_quants(3, xs, &weights, ls, -0.5, 0.1, 15, true);
        if scales[j] > max_scale {
            max_scale = scales[j];
        }
        if mins[j] > max_min {
            max_min = mins[j];
        }
    }
    if max_scale > 0.0 {
        let iscale = 15.0 / max_scale;
        for (s, &scale) in y.scales.iter_mut().zip(&scales) {
            *s = nearest_int(iscale * scale) as u8;
        }
        y.d = f32_to_f16(max_scale / 15.0);
    } else {
        y.d = f32_to_f16(0.0);
    }
    if max_min > 0.0 {
        let iscale = 15.0 / max_min;
        for (s, &min) in y.scales.iter_mut().zip(&mins) {
            *s |= (nearest_int(iscale * min) << 4) as u8;
        }
        y.dmin = f32_to_f16(max_min / 15.0);
    } else {
        y.dmin = f32_to_f16(0.0);
    }
    let (d_all, dmin_all) = (y.d.to_f32(), y.dmin.to_f32());
    for (j, (xs, ls)) in x.chunks_exact(16).zip(l.chunks_exact_mut(16)).enumerate() {
        let d = d_all * (y.scales[j] & 0xF) as f32;
        if d == 0.0 {
            continue; // keeps the quants of the sub-block fit
        }
        let dm = dmin_all * (y.scales[j] >> 4) as f32;
        for (l, &x) in ls.iter_mut().zip(xs) {
            *l = nearest_int((x + dm) / d).clamp(0, 3) as u8;
        }
    }
    for (i, &q) in l.iter().enumerate() {
        pack::<2>(&mut y.qs, 128, i, q);
    }
}

/// The signed 6-bit scale of sub-block `j` of a Q3_K block as it was stored (biased by 32).
fn q3_k_scale(scales: &[u8; 12], j: usize) -> i8 {
    let low = if j < 8 {
        scales[j] & 0xF
    } else {
        scales[j - 8] >> 4
    };
    let high = (scales[8 + j % 4] >> (2 * (j / 4))) & 3;
    (low | high << 4) as i8 - 32
}

/// Q3_K: ggml `quantize_row_q3_K_ref`. 16 sub-blocks of 16 fitted by `make_q3_quants` (-4..3);
/// the signed scale of largest magnitude sets `d = -max_scale / 32` for 6-bit scales; then every
/// weight requantized against the stored values.
fn q3_k(x: &[f32], y: &mut BlockQ3_K) {
    let mut l = [0i8; QK_K];
    let mut scales = [0f32; QK_K / 16];
    let (mut max_scale, mut amax) = (0f32, 0f32);
    for (j, (xs, ls)) in x.chunks_exact(16).zip(l.chunks_exact_mut(16)).enumerate() {
        scales[j] = make_q3_quants(4, xs, ls);
        if scales[j].abs() > amax {
            amax = scales[j].abs();
            max_scale = scales[j];
        }
    }
    if max_scale != 0.0 {
        let iscale = -32.0 / max_scale;
        let (low, high) = y.scales.split_at_mut(8);
        for (j, &scale) in scales.iter().enumerate() {
            let q = ((nearest_int(iscale * scale) as i8).clamp(-32, 31) + 32) as u8;
            pack::<4>(low, 16, j, q & 0xF);
            pack::<2>(high, 16, j, q >> 4);
        }
        y.d = f32_to_f16(1.0 / iscale);
    } else {
        y.d = f32_to_f16(0.0);
    }
    let d_all = y.d.to_f32();
    for (j, (xs, ls)) in x.chunks_exact(16).zip(l.chunks_exact_mut(16)).enumerate() {
        let d = d_all * q3_k_scale(&y.scales, j) as f32;
        if d == 0.0 {
            continue;
        }
        for (l, &x) in ls.iter_mut().zip(xs) {
            *l = nearest_int(x / d).clamp(-4, 3) as i8 + 4;
        }
    }
    for (i, &q) in l.iter().enumerate() {
        let q = q as u8;
        pack::<1>(&mut y.hmask, QK_K, i, (q > 3) as u8);
        pack::<2>(&mut y.qs, 128, i, q & 3);
    }
}

/// Packs the 6-bit scale and min of sub-block `j` as ggml's `get_scale_min_k4` reads them.
fn set_scale_min_k4(scales: &mut [u8; 12], j: usize, ls: u8, lm: u8) {
    if j < 4 {
        scales[j] = ls;
        scales[j + 4] = lm;
    } else {
        scales[j + 4] = (ls & 0xF) | ((lm & 0xF) << 4);
        scales[j - 4] |= (ls >> 4) << 6;
        scales[j] |= (lm >> 4) << 6;
    }
}

/// ggml `get_scale_min_k4`.
fn scale_min_k4(scales: &[u8; 12], j: usize) -> (u8, u8) {
    if j < 4 {
        (scales[j] & 63, scales[j + 4] & 63)
    } else {
        (
            (scales[j + 4] & 0xF) | ((scales[j - 4] >> 6) << 4),
            (scales[j + 4] >> 4) | ((scales[j] >> 6) << 4),
        )
    }
}

/// Q4_K and Q5_K (ggml `quantize_row_q4_K_ref` / `quantize_row_q5_K_ref`) up to the bit
/// packing: 8 sub-blocks of 32 fitted by `make_qkx2_quants` (weights `rms + |x|`, squared
/// error), 6-bit scales and mins against the largest of each (`d = max_scale / 63`), every weight
/// requantized against the stored values. Returns the quants (0..=nmax) and `(d, dmin, scales)`.
fn k4_k5(x: &[f32], nmax: i32, rmin: f32, nstep: i32) -> ([u8; QK_K], F16, F16, [u8; 12]) {
    let mut l = [0u8; QK_K];
    let mut scales = [0f32; QK_K / 32];
    let mut mins = [0f32; QK_K / 32];
    let (mut max_scale, mut max_min) = (0f32, 0f32);
    for (j, (xs, ls)) in x.chunks_exact(32).zip(l.chunks_exact_mut(32)).enumerate() {
        let mut sum_x2 = 0f32;
        for &v in xs {
            sum_x2 += v * v;
        }
        let av_x = (sum_x2 / 32.0).sqrt();
        let weights: [f32; 32] = std::array::from_fn(|i| av_x + xs[i].abs());
        (scales[j], mins[j]) = make_qkx2_quants(nmax, xs, &weights, ls, rmin, 0.1, nstep, false);
        if scales[j] > max_scale {
            max_scale = scales[j];
        }
        if mins[j] > max_min {
            max_min = mins[j];
        }
    }
    let inv_scale = if max_scale > 0.0 {
        63.0 / max_scale
    } else {
        0.0
    };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    let mut packed = [0u8; 12];
    for j in 0..QK_K / 32 {
        let ls = (nearest_int(inv_scale * scales[j]) as u8).min(63);
        let lm = (nearest_int(inv_min * mins[j]) as u8).min(63);
        set_scale_min_k4(&mut packed, j, ls, lm);
    }
    let (d, dmin) = (f32_to_f16(max_scale / 63.0), f32_to_f16(max_min / 63.0));
    for (j, (xs, ls)) in x.chunks_exact(32).zip(l.chunks_exact_mut(32)).enumerate() {
        let (sc, m) = scale_min_k4(&packed, j);
        let dl = d.to_f32() * sc as f32;
        if dl == 0.0 {
            continue;
        }
        let dm = dmin.to_f32() * m as f32;
        for (l, &x) in ls.iter_mut().zip(xs) {
            *l = nearest_int((x + dm) / dl).clamp(0, nmax) as u8;
        }
    }
    (l, d, dmin, packed)
}

/// Q4_K: ggml `quantize_row_q4_K_ref` (`make_qkx2_quants(32, 15, …, -1, 0.1, 20, false)`).
fn q4_k(x: &[f32], y: &mut BlockQ4_K) {
    let (l, d, dmin, scales) = k4_k5(x, 15, -1.0, 20);
    (y.d, y.dmin, y.scales) = (d, dmin, scales);
    for (i, &q) in l.iter().enumerate() {
        pack::<4>(&mut y.qs, 64, i, q);
    }
}

/// Q5_K: ggml `quantize_row_q5_K_ref` (`make_qkx2_quants(32, 31, …, -0.5, 0.1, 15, false)`).
fn q5_k(x: &[f32], y: &mut BlockQ5_K) {
    let (l, d, dmin, scales) = k4_k5(x, 31, -0.5, 15);
    (y.d, y.dmin, y.scales) = (d, dmin, scales);
    for (i, &q) in l.iter().enumerate() {
        pack::<4>(&mut y.qs, 64, i, q & 0xF);
        pack::<1>(&mut y.qh, QK_K, i, q >> 4);
    }
}

/// Q6_K: ggml `quantize_row_q6_K_ref`. 16 sub-blocks of 16 fitted by `make_qx_quants` (-32..31);
/// the signed scale of largest magnitude sets `d = -max_scale / 128` for 8-bit scales; then every
/// weight requantized against the stored values. An all-(near-)zero block is all zero bytes.
fn q6_k(x: &[f32], y: &mut BlockQ6_K) {
    let mut l = [0i8; QK_K];
    let mut scales = [0f32; QK_K / 16];
    let (mut max_scale, mut max_abs_scale) = (0f32, 0f32);
    for (j, (xs, ls)) in x.chunks_exact(16).zip(l.chunks_exact_mut(16)).enumerate() {
        scales[j] = make_qx_quants(32, xs, ls);
        if scales[j].abs() > max_abs_scale {
            max_abs_scale = scales[j].abs();
            max_scale = scales[j];
        }
    }
    if max_abs_scale < GROUP_MAX_EPS {
        return; // the block stays all zero bytes
    }
    let iscale = -128.0 / max_scale;
    y.d = f32_to_f16(1.0 / iscale);
    for (s, &scale) in y.scales.iter_mut().zip(&scales) {
        *s = nearest_int(iscale * scale).min(127) as i8;
    }
    let d_all = y.d.to_f32();
    for (j, (xs, ls)) in x.chunks_exact(16).zip(l.chunks_exact_mut(16)).enumerate() {
        let d = d_all * y.scales[j] as f32;
        if d == 0.0 {
            continue;
        }
        for (l, &x) in ls.iter_mut().zip(xs) {
            *l = (nearest_int(x / d).clamp(-32, 31) + 32) as i8;
        }
    }
    for (i, &q) in l.iter().enumerate() {
        let q = q as u8;
        pack::<4>(&mut y.ql, 128, i, q & 0xF);
        pack::<2>(&mut y.qh, 128, i, q >> 4);
    }
}

// ---- IQ4_NL, IQ4_XS ----

/// ggml `best_index_int8` as in the oracle build: the index of the level of [`KVALUES_IQ4NL`]
/// nearest to `x` (binary search, then the closer neighbour by f32 distances; the upper one on
/// ties).
fn best_index_iq4(x: f32) -> u8 {
    let val = &KVALUES_IQ4NL;
    if x <= val[0] as f32 {
        return 0;
    }
    if x >= val[15] as f32 {
        return 15;
    }
    let (mut ml, mut mu) = (0usize, 15usize);
    while mu - ml > 1 {
        let mav = (ml + mu) / 2;
        if x < val[mav] as f32 {
            mu = mav;
        } else {
            ml = mav;
        }
    }
    if x - (val[mu - 1] as f32) < val[mu] as f32 - x {
        (mu - 1) as u8
    } else {
        mu as u8
    }
}

/// The scale of one 32-weight sub-block in ggml's `quantize_row_iq4_nl_impl` (no importance
/// weights, so the weights are `x²`; `ntry = 7`): a first grid from the signed maximum, then 15
/// more grid widths `(itry - 127) / max`, keeping the best weighted least-squares scale.
fn iq4_scale(xb: &[f32]) -> f32 {
    let values = &KVALUES_IQ4NL;
    let (max, amax) = signed_absmax(xb);
    if amax < GROUP_MAX_EPS {
        return 0.0;
    }
    let sums = |id: f32| {
        let (mut sumqx, mut sumq2) = (0f32, 0f32);
        for &x in xb {
            let q = values[best_index_iq4(id * x) as usize] as f32;
            let w = x * x;
            sumqx += w * q * x;
            sumq2 += w * q * q;
        }
        (sumqx, sumq2)
    };
    let d = -max / values[0] as f32;
    let (sumqx, sumq2) = sums(1.0 / d);
    // Unguarded in ggml; never 0/0: the largest weight is amax² ≥ 1e-30 and no level is 0.
    let mut d = sumqx / sumq2;
    let mut best = d * sumqx;
    for itry in -7..=7 {
        let id = (itry + values[0] as i32) as f32 / max;
        let (sumqx, sumq2) = sums(id);
        if sumq2 > 0.0 && sumqx * sumqx > best * sumq2 {
            d = sumqx / sumq2;
            best = d * sumqx;
        }
    }
    d
}

/// IQ4_NL: ggml `quantize_iq4_nl` (one sub-block per block): `d` is the fitted scale, stored as
/// f16, and the quants are the nearest levels of `x / d` (with the unrounded `d`).
fn iq4_nl(x: &[f32], y: &mut BlockIQ4_NL) {
    let d = iq4_scale(x);
    y.d = f32_to_f16(d);
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    for (i, &v) in x.iter().enumerate() {
        pack::<4>(&mut y.qs, 32, i, best_index_iq4(id * v));
    }
}

/// IQ4_XS: ggml `quantize_iq4_xs`: 8 sub-block scales as in IQ4_NL, quantized to 6 bits against
/// `d = -max_scale / 32` (the signed scale of largest magnitude), then the quants recomputed
/// against each sub-block's `d * l` (with the unrounded `d`).
fn iq4_xs(x: &[f32], y: &mut BlockIQ4_XS) {
    let mut scales = [0f32; QK_K / 32];
    let (mut max_scale, mut amax_scale) = (0f32, 0f32);
    for (s, xb) in scales.iter_mut().zip(x.chunks_exact(32)) {
        *s = iq4_scale(xb);
        if s.abs() > amax_scale {
            amax_scale = s.abs();
            max_scale = *s;
        }
    }
    let d = -max_scale / 32.0;
    y.d = f32_to_f16(d);
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    for (ib, (&scale, xb)) in scales.iter().zip(x.chunks_exact(32)).enumerate() {
        let l = nearest_int(id * scale).clamp(-32, 31);
        let dl = d * l as f32;
        let idl = if dl != 0.0 { 1.0 / dl } else { 0.0 };
        for (j, &v) in xb.iter().enumerate() {
            pack::<4>(&mut y.qs, 32, 32 * ib + j, best_index_iq4(idl * v));
        }
        let l = (l + 32) as u8;
        pack::<4>(&mut y.scales_l, 2, ib, l & 0xF);
        pack::<2>(&mut y.scales_h, 4, ib, l >> 4);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::dequantize;
    use bytemuck::Zeroable;

    fn f16_round(f: f32) -> f32 {
        f32_to_f16(f).to_f32()
    }

    /// Deterministic pseudo-random Gaussian values (xorshift + Box-Muller), no dependencies.
    pub(crate) fn gaussian(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut uniform = move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 11) as f64 + 0.5) / (1u64 << 53) as f64
        };
        (0..n)
            .map(|_| {
                let (u, v) = (uniform(), uniform());
                ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
            })
            .collect()
    }

    const QUANT_TYPES: [GgmlType; 12] = [
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q8_0,
        GgmlType::Q2_K,
        GgmlType::Q3_K,
        GgmlType::Q4_K,
        GgmlType::Q5_K,
        GgmlType::Q6_K,
        GgmlType::IQ4_NL,
        GgmlType::IQ4_XS,
    ];

    /// RMS of the round-trip error relative to the RMS of the input.
    fn relative_rmse(ty: GgmlType, x: &[f32]) -> f64 {
        let y = dequantize(ty, &quantize(ty, x).unwrap()).unwrap();
        let err: f64 = x
            .iter()
            .zip(&y)
            .map(|(&a, &b)| (a as f64 - b as f64).powi(2))
            .sum();
        let sig: f64 = x.iter().map(|&a| (a as f64).powi(2)).sum();
        (err / sig).sqrt()
    }

    #[test]
    fn every_supported_type_and_only_those_quantize() {
        for &ty in GgmlType::ALL {
            let x = vec![0.25f32; 2 * ty.block_size() as usize];
            match quantize(ty, &x) {
                Ok(bytes) => {
                    assert!(can_quantize(ty), "{ty}");
                    assert_eq!(
                        Some(bytes.len() as u64),
                        ty.bytes_for(x.len() as u64),
                        "{ty}"
                    );
                }
                Err(Error::UnsupportedType { ty: t, .. }) => {
                    assert_eq!(t, ty);
                    assert!(!can_quantize(ty), "{ty} is supported but not quantized");
                }
                Err(e) => panic!("{ty}: {e}"),
            }
        }
    }

    #[test]
    fn partial_block_is_an_error() {
        let err = quantize(GgmlType::Q4_K, &[0.0; 100]).unwrap_err();
        assert!(
            matches!(
                err,
                Error::BadBlockData {
                    ty: GgmlType::Q4_K,
                    len: 400,
                    block_bytes: 1024
                }
            ),
            "{err:?}"
        );
        assert_eq!(quantize(GgmlType::Q8_0, &[]).unwrap(), Vec::<u8>::new());
    }

    #[test]
    fn nearest_int_rounds_half_to_even() {
        let cases = [
            (0.5, 0),
            (1.5, 2),
            (2.5, 2),
            (-0.5, 0),
            (-1.5, -2),
            (-2.49, -2),
            (3.7, 4),
        ];
        for (x, n) in cases {
            assert_eq!(nearest_int(x), n, "{x}");
        }
        assert_eq!(nearest_int(4_194_303.0), 4_194_303);
        assert_eq!(nearest_int(-4_194_303.0), -4_194_303);
    }

    #[test]
    fn f16_conversion_matches_the_half_crate_on_non_nan_values() {
        // half's from_f32 also rounds to nearest even; ggml's bit trick must agree on every
        // non-NaN input. A stride through all 2^32 patterns plus the boundaries.
        let specials = [
            0x0000_0000u32,
            0x8000_0000,
            0x7F80_0000,
            0xFF80_0000,
            0x477F_E000,
            0x477F_EFFF,
            0x477F_F000,
            0x3380_0000,
            0x3380_0001,
            0x3300_0000,
            0x3300_0001,
            0x387F_E000,
            0x3880_0000,
            0x0000_0001,
            0x7F7F_FFFF,
        ];
        for bits in (0..u32::MAX).step_by(65_537).chain(specials) {
            let f = f32::from_bits(bits);
            if f.is_nan() {
                continue;
            }
            let ours = u16::from_le_bytes(f32_to_f16(f).0);
            assert_eq!(
                ours,
                half::f16::from_f32(f).to_bits(),
                "{bits:#010x} ({f:e})"
            );
        }
        // NaNs as the oracle's ggml_quantize_chunk(F16) writes them (numpy keeps payload bits
        // instead, so these are not in the gguf-py goldens).
        for (f, h) in [
            (0x7FC0_0000u32, 0x7E00u16),
            (0xFFC0_0000, 0xFE00),
            (0x7F80_0001, 0x7E00),
            (0xFF81_2345, 0xFE00),
        ] {
            assert_eq!(
                f32_to_f16(f32::from_bits(f)).0,
                h.to_le_bytes(),
                "{f:#010x}"
            );
        }
    }

    #[test]
    fn bf16_conversion_rounds_to_nearest_even_and_quiets_nans() {
        let cases = [
            (0x3F80_0000u32, 0x3F80u16),
            (0x3F80_8000, 0x3F80), // tie, even stays
            (0x3F81_8000, 0x3F82), // tie, odd rounds up
            (0x3F80_8001, 0x3F81),
            (0x7F7F_FFFF, 0x7F80), // rounds to inf
            (0x7F80_0001, 0x7FC0), // signalling NaN made quiet (as the oracle's ggml writes it)
            (0xFF81_2345, 0xFFC1),
            (0xFFC0_1234, 0xFFC0),
        ];
        for (f, h) in cases {
            assert_eq!(f32_to_bf16(f32::from_bits(f)), h.to_le_bytes(), "{f:#010x}");
        }
    }

    #[test]
    fn pack_is_the_inverse_of_the_dequantizers_layout() {
        // Q6_K: quants 0..63 in order must dequantize to d * sc * (q - 32).
        let mut b = BlockQ6_K::zeroed();
        for i in 0..QK_K {
            let q = (i % 64) as u8;
            pack::<4>(&mut b.ql, 128, i, q & 0xF);
            pack::<2>(&mut b.qh, 128, i, q >> 4);
        }
        b.scales = [1; 16];
        b.d = f32_to_f16(1.0);
        let y = dequantize(GgmlType::Q6_K, bytemuck::bytes_of(&b)).unwrap();
        for (i, y) in y.iter().enumerate() {
            assert_eq!(*y, (i % 64) as f32 - 32.0, "element {i}");
        }
    }

    #[test]
    fn zero_and_tiny_blocks_quantize_to_zeros() {
        for ty in QUANT_TYPES {
            let n = ty.block_size() as usize;
            for x in [vec![0f32; n], vec![1e-16f32; n]] {
                let y = dequantize(ty, &quantize(ty, &x).unwrap()).unwrap();
                assert!(y.iter().all(|&v| v.abs() <= 1e-15), "{ty}: {:?}", &y[..4]);
            }
        }
    }

    /// Relative RMSE of dequantize(quantize(x)) on 64 Ki Gaussian values (seed 1), each bound
    /// about 10 % above the measurement: the algorithms are deterministic, so exceeding one means
    /// a changed algorithm, not noise. Measured: Q4_0 0.0860, Q4_1 0.0781, Q5_0 0.0427, Q5_1
    /// 0.0379, Q8_0 0.00537, Q2_K 0.298, Q3_K 0.151, Q4_K 0.0714, Q5_K 0.0362, Q6_K 0.0178,
    /// IQ4_NL 0.0760, IQ4_XS 0.0766, F16 0.00021, BF16 0.00166.
    ///
    /// They are what uniform rounding noise (step / √12) predicts: Q8_0's step is amax / 127
    /// with E[max |x|] ≈ 2.33σ over 32 values, so 2.33 / 127 / √12 = 0.0053; Q4_0 and Q5_0 the
    /// same with 8 and 16 steps (0.084, 0.042); Q4_1 and Q5_1 spread max - min ≈ 4.1σ over 15
    /// and 31 steps (0.079, 0.038); Q6_K and Q3_K take amax ≈ 2.0σ of 16 values over 32 and 4
    /// steps (0.018, 0.144). The K-quants' fitted scales and mins beat their legacy cousins (Q4_K
    /// 0.071 < Q4_1, Q5_K 0.036 < Q5_1) and Q2_K's 3 steps over 16 values (≈ 0.34 unfitted);
    /// IQ4's non-uniform levels beat Q4_0. F16 and BF16 round an 11- and 8-bit significand:
    /// 2^-11 / √12 and 2^-8 / √12 times ≈ 1.5 for the mantissa's spread.
    #[test]
    fn round_trip_error_on_gaussian_data_is_within_measured_bounds() {
        let x = gaussian(1 << 16, 1);
        let bounds = [
            (GgmlType::Q4_0, 0.095),
            (GgmlType::Q4_1, 0.086),
            (GgmlType::Q5_0, 0.047),
            (GgmlType::Q5_1, 0.042),
            (GgmlType::Q8_0, 0.0059),
            (GgmlType::Q2_K, 0.33),
            (GgmlType::Q3_K, 0.167),
            (GgmlType::Q4_K, 0.079),
            (GgmlType::Q5_K, 0.040),
            (GgmlType::Q6_K, 0.020),
            (GgmlType::IQ4_NL, 0.084),
            (GgmlType::IQ4_XS, 0.084),
            (GgmlType::F16, 0.00024),
            (GgmlType::BF16, 0.0019),
        ];
        let mut report = String::new();
        let mut failed = false;
        for (ty, bound) in bounds {
            let e = relative_rmse(ty, &x);
            report += &format!("{ty:<7} {e:.5} (bound {bound})\n");
            failed |= e >= bound;
        }
        eprintln!("{report}");
        assert!(!failed, "relative RMSE above its bound:\n{report}");
    }

    #[test]
    fn values_already_on_a_grid_round_trip_exactly() {
        // Q8_0: integers -127..=127 times a power of two (the block max sets d = 2^-3 exactly).
        let x: Vec<f32> = (0..64)
            .map(|i| ((i * 37 % 255) as f32 - 127.0) * 0.125)
            .collect();
        let mut x = x;
        x[0] = 127.0 * 0.125;
        x[32] = -127.0 * 0.125;
        assert_eq!(
            dequantize(GgmlType::Q8_0, &quantize(GgmlType::Q8_0, &x).unwrap()).unwrap(),
            x
        );
        // Q4_0: -8..=7 times 0.5 with -8 present (max / -8 = 0.5 exactly).
        let x: Vec<f32> = (0..32).map(|i| ((i % 16) as f32 - 8.0) * 0.5).collect();
        assert_eq!(
            dequantize(GgmlType::Q4_0, &quantize(GgmlType::Q4_0, &x).unwrap()).unwrap(),
            x
        );
        // F16/BF16: values that are already f16/bf16.
        let x: Vec<f32> = gaussian(256, 3).iter().map(|&v| f16_round(v)).collect();
        assert_eq!(
            dequantize(GgmlType::F16, &quantize(GgmlType::F16, &x).unwrap()).unwrap(),
            x
        );
        let x: Vec<f32> = x
            .iter()
            .map(|v| f32::from_bits(v.to_bits() & 0xFFFF_0000))
            .collect();
        assert_eq!(
            dequantize(GgmlType::BF16, &quantize(GgmlType::BF16, &x).unwrap()).unwrap(),
            x
        );
        // IQ4_NL: the 16 levels times 2^-4, each twice (the scale fit is then exact).
        let x: Vec<f32> = (0..32)
            .map(|i| KVALUES_IQ4NL[i % 16] as f32 / 16.0)
            .collect();
        assert_eq!(
            dequantize(GgmlType::IQ4_NL, &quantize(GgmlType::IQ4_NL, &x).unwrap()).unwrap(),
            x
        );
    }

    /// Quantizing the dequantized values again. Measured on this data (8 Ki Gaussians): for
    /// F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q4_K and Q6_K the second pass gives the same
    /// values (dequantize ∘ quantize is a projection there; Q6_K's bytes can differ, e.g. a
    /// sub-block scale and its quants both negated); Q3_K, Q5_K, IQ4_NL and IQ4_XS refit
    /// their scales on the quantized values and move them by a relative RMS of 0.033, 0.0001,
    /// 0.0042 and 0.0043 (bounds 0.04, 0.001, 0.006, 0.006), and a third pass repeats the second.
    #[test]
    fn requantizing_is_idempotent_or_settles_after_one_more_pass() {
        use GgmlType::*;
        let x = gaussian(1 << 13, 2);
        let moving = [
            (Q3_K, 0.04),
            (Q5_K, 0.001),
            (IQ4_NL, 0.006),
            (IQ4_XS, 0.006),
        ];
        for ty in QUANT_TYPES.into_iter().chain([F16, BF16]) {
            let back = dequantize(ty, &quantize(ty, &x).unwrap()).unwrap();
            let back2 = dequantize(ty, &quantize(ty, &back).unwrap()).unwrap();
            match moving.iter().find(|(t, _)| *t == ty) {
                None => assert!(back2 == back, "{ty}: not idempotent"),
                Some(&(_, bound)) => {
                    let drift = relative_rmse(ty, &back);
                    assert!(
                        drift < bound,
                        "{ty}: second pass moved values by {drift:.5}"
                    );
                    let back3 = dequantize(ty, &quantize(ty, &back2).unwrap()).unwrap();
                    assert!(back3 == back2, "{ty}: no fixed point after two passes");
                }
            }
        }
    }
}
