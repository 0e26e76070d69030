//! CPU dequantization of every supported GGUF type to f32: the reference the GPU kernels are
//! checked against.
//!
//! The result is bit-exact with the `gguf` Python package (`gguf.quants.dequantize`, whose numpy
//! code is itself tested bit-exact against ggml's `dequantize_row_*`). Bit-exact means the same
//! f32 operations in the same order, each rounded on its own:
//! - f16 scales are widened to f32 first (exactly), then every product and sum is an f32 one;
//! - per-sub-block factors are formed first and rounded, then applied: Q4_K/Q5_K compute
//!   `d * sc` and `dmin * m`, then `(d * sc) * q - (dmin * m)`; Q2_K the same with its 4-bit
//!   scales; Q3_K, Q6_K and IQ4_XS compute `d * sc` and then `(d * sc) * q`, never `d * (sc * q)`;
//! - Q4_1/Q5_1 are `d * q + m`.
//!
//! Rust never contracts `a * b + c` into a fused multiply-add unless `mul_add` is called (and it
//! must not be here), so each step rounds exactly as numpy's float32 ufuncs do.

use super::blocks::*;
use super::GgmlType;
use crate::error::{Error, Result};
use bytemuck::Pod;

/// Dequantizes `data`, a whole number of `ty` blocks, to f32 in ggml element order.
///
/// Types outside [`GgmlType::is_supported`] are [`Error::UnsupportedType`]; a length that is not
/// a multiple of the block size in bytes is [`Error::BadBlockData`].
pub fn dequantize(ty: GgmlType, data: &[u8]) -> Result<Vec<f32>> {
    use GgmlType::*;
    match ty {
        F32 => per_block(ty, data, f32_le),
        F16 => per_block(ty, data, f16_le),
        BF16 => per_block(ty, data, bf16_le),
        Q4_0 => per_block(ty, data, q4_0),
        Q4_1 => per_block(ty, data, q4_1),
        Q5_0 => per_block(ty, data, q5_0),
        Q5_1 => per_block(ty, data, q5_1),
        Q8_0 => per_block(ty, data, q8_0),
        Q2_K => per_block(ty, data, q2_k),
        Q3_K => per_block(ty, data, q3_k),
        Q4_K => per_block(ty, data, q4_k),
        Q5_K => per_block(ty, data, q5_k),
        Q6_K => per_block(ty, data, q6_k),
        IQ4_NL => per_block(ty, data, iq4_nl),
        IQ4_XS => per_block(ty, data, iq4_xs),
        _ => Err(Error::UnsupportedType {
            ty,
            tensors: String::new(),
        }),
    }
}

/// Views `data` as blocks `B` (alignment 1, so any slice of the right length works) and lets
/// `block` write each block's `ty.block_size()` outputs.
fn per_block<B: Pod>(ty: GgmlType, data: &[u8], block: fn(&B, &mut [f32])) -> Result<Vec<f32>> {
    debug_assert_eq!(
        size_of::<B>() as u64,
        ty.type_size(),
        "{ty}: block struct size"
    );
    let blocks: &[B] = bytemuck::try_cast_slice(data).map_err(|_| Error::BadBlockData {
        ty,
        len: data.len(),
        block_bytes: ty.type_size(),
    })?;
    let n = ty.block_size() as usize;
    let mut out = vec![0f32; blocks.len() * n];
    for (b, y) in blocks.iter().zip(out.chunks_exact_mut(n)) {
        block(b, y);
    }
    Ok(out)
}

/// Element `i` of an array of `BITS`-bit fields stored the way ggml packs quants: each run of
/// `group` elements owns `group * BITS / 8` bytes, and within a run element `j` sits in byte
/// `j % len` at bit `BITS * (j / len)` — low nibbles first, then high nibbles (4 bits, 2 planes),
/// or 4 planes of 2-bit fields, or 8 planes of single bits.
///
/// With `group == 8 / BITS` (one byte per run) this is plain little-endian bit order, e.g.
/// bit `i` of Q5_0's `u32 qh` is `unpack::<1>(qh, 8, i)`.
#[inline]
fn unpack<const BITS: usize>(bytes: &[u8], group: usize, i: usize) -> u8 {
    let len = group * BITS / 8;
    let run = &bytes[i / group * len..][..len];
    let j = i % group;
    (run[j % len] >> (BITS * (j / len))) & ((1u8 << BITS) - 1)
}

/// F32: the little-endian bytes as they are (ggml: a copy).
fn f32_le(b: &[u8; 4], y: &mut [f32]) {
    y[0] = f32::from_le_bytes(*b);
}

/// F16: exact widening, as ggml's `ggml_fp16_to_fp32_row` and numpy's `astype(np.float32)`.
fn f16_le(b: &F16, y: &mut [f32]) {
    y[0] = b.to_f32();
}

/// BF16: the 16 bits become the top of an f32, as ggml's `ggml_bf16_to_fp32_row`.
fn bf16_le(b: &[u8; 2], y: &mut [f32]) {
    y[0] = f32::from_bits((u16::from_le_bytes(*b) as u32) << 16);
}

/// Q4_0: ggml `dequantize_row_q4_0`; `d * (q - 8)`.
fn q4_0(b: &BlockQ4_0, y: &mut [f32]) {
    let d = b.d.to_f32();
    for (i, y) in y.iter_mut().enumerate() {
        *y = d * (unpack::<4>(&b.qs, QK, i) as i8 - 8) as f32;
    }
}

/// Q4_1: ggml `dequantize_row_q4_1`; `d * q + m`.
fn q4_1(b: &BlockQ4_1, y: &mut [f32]) {
    let (d, m) = (b.d.to_f32(), b.m.to_f32());
    for (i, y) in y.iter_mut().enumerate() {
        *y = d * unpack::<4>(&b.qs, QK, i) as f32 + m;
    }
}

/// The 5-bit quant `i` of Q5_0/Q5_1: a nibble of `qs` plus bit `i` of `qh`.
#[inline]
fn q5(qs: &[u8; QK / 2], qh: &[u8; 4], i: usize) -> u8 {
    unpack::<4>(qs, QK, i) | unpack::<1>(qh, 8, i) << 4
}

/// Q5_0: ggml `dequantize_row_q5_0`; `d * (q - 16)`.
fn q5_0(b: &BlockQ5_0, y: &mut [f32]) {
    let d = b.d.to_f32();
    for (i, y) in y.iter_mut().enumerate() {
        *y = d * (q5(&b.qs, &b.qh, i) as i8 - 16) as f32;
    }
}

/// Q5_1: ggml `dequantize_row_q5_1`; `d * q + m`.
fn q5_1(b: &BlockQ5_1, y: &mut [f32]) {
    let (d, m) = (b.d.to_f32(), b.m.to_f32());
    for (i, y) in y.iter_mut().enumerate() {
        *y = d * q5(&b.qs, &b.qh, i) as f32 + m;
    }
}

/// Q8_0: ggml `dequantize_row_q8_0`; `q * d`.
fn q8_0(b: &BlockQ8_0, y: &mut [f32]) {
    let d = b.d.to_f32();
    for (y, &q) in y.iter_mut().zip(&b.qs) {
        *y = q as f32 * d;
    }
}

/// Q2_K: ggml `dequantize_row_q2_K`; per sub-block of 16 `dl = d * sc`, `ml = dmin * m`, then
/// `dl * q - ml`.
fn q2_k(b: &BlockQ2_K, y: &mut [f32]) {
    let (d, dmin) = (b.d.to_f32(), b.dmin.to_f32());
    for (s, (y, &sc)) in y.chunks_exact_mut(16).zip(&b.scales).enumerate() {
        let dl = d * (sc & 0xF) as f32;
        let ml = dmin * (sc >> 4) as f32;
        for (l, y) in y.iter_mut().enumerate() {
            *y = dl * unpack::<2>(&b.qs, 128, 16 * s + l) as f32 - ml;
        }
    }
}

/// Q3_K: ggml `dequantize_row_q3_K`; per sub-block of 16 `dl = d * (sc - 32)`, then `dl * q`
/// with `q = low2 - 4 * !hbit`.
fn q3_k(b: &BlockQ3_K, y: &mut [f32]) {
    let d = b.d.to_f32();
    let (low, high) = b.scales.split_at(8);
    for (s, y) in y.chunks_exact_mut(16).enumerate() {
        let sc = (unpack::<4>(low, 16, s) | unpack::<2>(high, 16, s) << 4) as i8 - 32;
        let dl = d * sc as f32;
        for (l, y) in y.iter_mut().enumerate() {
            let i = 16 * s + l;
            let offset = if unpack::<1>(&b.hmask, QK_K, i) == 0 {
                4
            } else {
                0
            };
            *y = dl * (unpack::<2>(&b.qs, 128, i) as i8 - offset) as f32;
        }
    }
}

/// The 6-bit scale and min of sub-block `j` of Q4_K/Q5_K: ggml `get_scale_min_k4`.
#[inline]
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

/// Q4_K and Q5_K for one block: per sub-block of 32 `dl = d * sc`, `ml = dmin * m`, then
/// `dl * q - ml`, where `q(i)` gives the 4- or 5-bit quant of element `i`.
#[inline]
fn k4_k5(d: F16, dmin: F16, scales: &[u8; 12], y: &mut [f32], q: impl Fn(usize) -> u8) {
    let (d, dmin) = (d.to_f32(), dmin.to_f32());
    for (j, y) in y.chunks_exact_mut(32).enumerate() {
        let (sc, m) = scale_min_k4(scales, j);
        let dl = d * sc as f32;
        let ml = dmin * m as f32;
        for (l, y) in y.iter_mut().enumerate() {
            *y = dl * q(32 * j + l) as f32 - ml;
        }
    }
}

/// Q4_K: ggml `dequantize_row_q4_K`.
fn q4_k(b: &BlockQ4_K, y: &mut [f32]) {
    k4_k5(b.d, b.dmin, &b.scales, y, |i| unpack::<4>(&b.qs, 64, i));
}

/// Q5_K: ggml `dequantize_row_q5_K` (Q4_K plus one high bit per weight from `qh`).
fn q5_k(b: &BlockQ5_K, y: &mut [f32]) {
    k4_k5(b.d, b.dmin, &b.scales, y, |i| {
        unpack::<4>(&b.qs, 64, i) | unpack::<1>(&b.qh, QK_K, i) << 4
    });
}

/// Q6_K: ggml `dequantize_row_q6_K`; per sub-block of 16 `dl = d * sc`, then `dl * (q - 32)`.
fn q6_k(b: &BlockQ6_K, y: &mut [f32]) {
    let d = b.d.to_f32();
    for (s, (y, &sc)) in y.chunks_exact_mut(16).zip(&b.scales).enumerate() {
        let dl = d * sc as f32;
        for (l, y) in y.iter_mut().enumerate() {
            let i = 16 * s + l;
            let q = unpack::<4>(&b.ql, 128, i) | unpack::<2>(&b.qh, 128, i) << 4;
            *y = dl * (q as i8 - 32) as f32;
        }
    }
}

/// IQ4_NL: ggml `dequantize_row_iq4_nl`; `d * kvalues[q]`.
fn iq4_nl(b: &BlockIQ4_NL, y: &mut [f32]) {
    let d = b.d.to_f32();
    for (i, y) in y.iter_mut().enumerate() {
        *y = d * KVALUES_IQ4NL[unpack::<4>(&b.qs, QK, i) as usize] as f32;
    }
}

/// IQ4_XS: ggml `dequantize_row_iq4_xs`; per sub-block of 32 `dl = d * (sc - 32)`, then
/// `dl * kvalues[q]`.
fn iq4_xs(b: &BlockIQ4_XS, y: &mut [f32]) {
    let d = b.d.to_f32();
    for (s, y) in y.chunks_exact_mut(32).enumerate() {
        let sc = (unpack::<4>(&b.scales_l, 2, s) | unpack::<2>(&b.scales_h, 4, s) << 4) as i8 - 32;
        let dl = d * sc as f32;
        for (l, y) in y.iter_mut().enumerate() {
            *y = dl * KVALUES_IQ4NL[unpack::<4>(&b.qs, 32, 32 * s + l) as usize] as f32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_supported_type_and_only_those_dequantize() {
        for &ty in GgmlType::ALL {
            let data = vec![0u8; 2 * ty.type_size() as usize];
            match dequantize(ty, &data) {
                Ok(y) => {
                    assert!(
                        ty.is_supported(),
                        "{ty} dequantized but is not listed as supported"
                    );
                    assert_eq!(y.len() as u64, 2 * ty.block_size(), "{ty} output length");
                    assert!(
                        y.iter().all(|&x| x == 0.0),
                        "{ty}: zero blocks must give zeros"
                    );
                }
                Err(Error::UnsupportedType { ty: t, .. }) => {
                    assert_eq!(t, ty);
                    assert!(
                        !ty.is_supported(),
                        "{ty} is listed as supported but not dequantized"
                    );
                }
                Err(e) => panic!("{ty}: unexpected error {e}"),
            }
        }
    }

    #[test]
    fn partial_block_is_bad_block_data() {
        let err = dequantize(GgmlType::Q4_K, &[0u8; 145]).unwrap_err();
        assert!(
            matches!(
                err,
                Error::BadBlockData {
                    ty: GgmlType::Q4_K,
                    len: 145,
                    block_bytes: 144
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("145 bytes"), "{err}");
        for ty in [GgmlType::F32, GgmlType::F16, GgmlType::Q6_K, GgmlType::Q8_0] {
            assert!(
                matches!(
                    dequantize(ty, &[0u8; 1]),
                    Err(Error::BadBlockData { len: 1, .. })
                ),
                "{ty}"
            );
        }
    }

    #[test]
    fn empty_input_is_empty_output() {
        assert_eq!(dequantize(GgmlType::Q4_0, &[]).unwrap(), Vec::<f32>::new());
    }

    #[test]
    fn unsupported_type_is_an_error() {
        let err = dequantize(GgmlType::IQ2_XXS, &[0u8; 66]).unwrap_err();
        assert!(
            matches!(
                err,
                Error::UnsupportedType {
                    ty: GgmlType::IQ2_XXS,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("IQ2_XXS"), "{err}");
    }

    #[test]
    fn unpack_matches_ggml_layouts() {
        // Nibbles: low halves first.
        let qs: [u8; 16] = std::array::from_fn(|j| (j as u8) | 0xA0);
        assert_eq!(unpack::<4>(&qs, 32, 3), 3);
        assert_eq!(unpack::<4>(&qs, 32, 19), 0xA);
        // Little-endian bit order of a u32.
        let qh = 0x8000_0001u32.to_le_bytes();
        assert_eq!(
            (0..32).map(|i| unpack::<1>(&qh, 8, i)).collect::<Vec<_>>()[..],
            {
                let mut v = [0u8; 32];
                v[0] = 1;
                v[31] = 1;
                v
            }
        );
        // 2-bit planes with 32-byte runs per 128 elements (Q2_K): element 128 + 32 * 3 + 5 is
        // bits 6..8 of byte 32 + 5.
        let mut q2 = [0u8; 64];
        q2[37] = 0b1100_0000;
        assert_eq!(unpack::<2>(&q2, 128, 128 + 96 + 5), 3);
        assert_eq!(unpack::<2>(&q2, 128, 128 + 5), 0);
    }

    #[test]
    fn small_examples_by_hand() {
        // Q4_0, d = 0.5: byte 0 = 0x9F -> element 0 nibble 15 -> 0.5 * 7, element 16 nibble 9 -> 0.5.
        let mut b = [0u8; 18];
        b[..2].copy_from_slice(&half::f16::from_f32(0.5).to_le_bytes());
        b[2] = 0x9F;
        let y = dequantize(GgmlType::Q4_0, &b).unwrap();
        assert_eq!((y[0], y[16], y[1]), (3.5, 0.5, -4.0));
        // BF16 0xC0A0 -> -5.0.
        assert_eq!(dequantize(GgmlType::BF16, &[0xA0, 0xC0]).unwrap(), [-5.0]);
    }
}
