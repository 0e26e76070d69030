//! Quantized matrices and their products with quantized activations: ggml's integer dot
//! products (`ggml_vec_dot_<type>_<vec_dot_type>`), one function per weight type.
//!
//! Each block's integer sum Σ q_w · q_a is exact, whatever order the vectorized loop takes;
//! the floating-point part (block scales, mins, the running sum over blocks) is written in one
//! fixed order, which the compiler may not change, so every build gives the same bits. ggml's
//! own SIMD kernels sum blocks in other orders: the two agree to float rounding.

use super::quantize::{ActRow, QAct};
#[cfg(target_arch = "x86_64")]
use super::Simd;
use super::{f16_to_f32, Cpu};
use crate::error::{Error, Result};
use crate::quant::{GgmlType, KVALUES_IQ4NL};

/// A matrix of `rows` rows of `cols` weights of `ty`, in ggml's bytes, row after row.
pub struct CpuMatrix {
    pub ty: GgmlType,
    pub cols: usize,
    pub rows: usize,
    pub row_bytes: usize,
    pub data: Vec<u8>,
}

impl CpuMatrix {
    pub fn new(label: &str, ty: GgmlType, dims: &[u64]) -> Result<CpuMatrix> {
        let (cols, rows) = (dims[0], dims.get(1).copied().unwrap_or(1));
        let bad = |reason: &str| Error::BadShape {
            source_name: String::new(),
            reason: reason.to_string(),
            tensor: label.to_string(),
            dims: dims.to_vec(),
        };
        if !ty.is_supported() {
            return Err(Error::UnsupportedType {
                ty,
                tensors: label.to_string(),
            });
        }
        let row_bytes = ty
            .bytes_for(cols)
            .ok_or_else(|| bad("rows are not whole blocks"))?;
        let bytes = row_bytes
            .checked_mul(rows)
            .filter(|&b| usize::try_from(b).is_ok())
            .ok_or_else(|| bad("too large for this address space"))?;
        let mut data = Vec::new();
        data.try_reserve_exact(bytes as usize)
            .map_err(|_| Error::OutOfMemory {
                what: format!("{label} ({bytes} bytes)"),
            })?;
        data.resize(bytes as usize, 0);
        Ok(CpuMatrix {
            ty,
            cols: cols as usize,
            rows: rows as usize,
            row_bytes: row_bytes as usize,
            data,
        })
    }

    pub fn write_rows(&mut self, row0: usize, bytes: &[u8]) -> Result<()> {
        let at = row0 * self.row_bytes;
        let dst = self
            .data
            .get_mut(at..at + bytes.len())
            .filter(|_| bytes.len().is_multiple_of(self.row_bytes))
            .ok_or_else(|| Error::BadShape {
                source_name: String::new(),
                reason: format!(
                    "{} bytes at row {row0} are not whole rows inside it",
                    bytes.len()
                ),
                tensor: format!("{} matrix", self.ty),
                dims: vec![self.cols as u64, self.rows as u64],
            })?;
        dst.copy_from_slice(bytes);
        Ok(())
    }

    pub fn row(&self, r: usize) -> &[u8] {
        &self.data[r * self.row_bytes..(r + 1) * self.row_bytes]
    }

    /// y = W · a for every row of a: y is f32 [a.n, rows].
    pub fn matmul(&self, cpu: &Cpu, a: &QAct, y: &mut [f32]) {
        let n = a.n;
        debug_assert_eq!(a.cols, self.cols);
        let y = &mut y[..n * self.rows];
        if n == 1 {
            self.fill(cpu, a, y);
            return;
        }
        // Rows are computed as [rows, n] (each weight row read once for all tokens), then
        // transposed.
        let mut yt = vec![0f32; n * self.rows];
        self.fill(cpu, a, &mut yt);
        // In blocks of rows: a block's [rows, n] is read from cache while each token's part
        // of it is written as one run (row by row, every write went to another cache line).
        const BLOCK: usize = 64;
        for (b, block) in yt.chunks(BLOCK * n).enumerate() {
            let r0 = b * BLOCK;
            let rows = block.len() / n;
            for t in 0..n {
                let dst = &mut y[t * self.rows + r0..][..rows];
                for (r, d) in dst.iter_mut().enumerate() {
                    *d = block[r * n + t];
                }
            }
        }
    }

    /// yt [rows, n] = W · a, rows split over the pool.
    fn fill(&self, cpu: &Cpu, a: &QAct, yt: &mut [f32]) {
        let n = a.n;
        let rows_per = cpu.pool.split(self.rows, 16);
        cpu.pool.chunks(yt, rows_per * n, |i, out| {
            let r0 = i * rows_per;
            let w = &self.data[r0 * self.row_bytes..];
            match cpu.simd {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: Simd::Avx2 is only chosen where the CPU reports AVX2, FMA and F16C.
                Simd::Avx2 => unsafe { fill_avx2(self.ty, w, self.row_bytes, a, out) },
                _ => fill_baseline(self.ty, w, self.row_bytes, a, out),
            }
        });
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn fill_avx2(ty: GgmlType, w: &[u8], row_bytes: usize, a: &QAct, out: &mut [f32]) {
    for (wr, y) in w.chunks_exact(row_bytes).zip(out.chunks_exact_mut(a.n)) {
        if !super::avx2::row(ty, wr, a, y) {
            fill_rows(ty, wr, row_bytes, a, y);
        }
    }
}

/// out [rows, n] with the target's baseline instructions: the simd128 kernels in the browser,
/// the portable ones elsewhere.
fn fill_baseline(ty: GgmlType, w: &[u8], row_bytes: usize, a: &QAct, out: &mut [f32]) {
    #[cfg(target_arch = "wasm32")]
    for (wr, y) in w.chunks_exact(row_bytes).zip(out.chunks_exact_mut(a.n)) {
        if !super::simd128::row(ty, wr, a, y) {
            fill_rows(ty, wr, row_bytes, a, y);
        }
    }
    #[cfg(not(target_arch = "wasm32"))]
    fill_rows(ty, w, row_bytes, a, out)
}

/// out [rows, n]: each row of w times each row of a.
#[inline(always)]
fn fill_rows(ty: GgmlType, w: &[u8], row_bytes: usize, a: &QAct, out: &mut [f32]) {
    for (wr, y) in w.chunks_exact(row_bytes).zip(out.chunks_exact_mut(a.n)) {
        for (t, y) in y.iter_mut().enumerate() {
            *y = dot(ty, wr, a.row(t));
        }
    }
}

/// One weight row (ggml bytes) times one activation row of its `vec_dot_type`.
#[inline(always)]
pub fn dot(ty: GgmlType, w: &[u8], a: ActRow) -> f32 {
    use GgmlType::*;
    match ty {
        F32 => dot_f32(w, a),
        F16 => dot_f16(w, a),
        BF16 => dot_bf16(w, a),
        Q4_0 => dot_q4_0(w, a),
        Q4_1 => dot_q4_1(w, a),
        Q5_0 => dot_q5_0(w, a),
        Q5_1 => dot_q5_1(w, a),
        Q8_0 => dot_q8_0(w, a),
        IQ4_NL => dot_iq4_nl(w, a),
        Q2_K => dot_q2_k(w, a),
        Q3_K => dot_q3_k(w, a),
        Q4_K => dot_q4_k(w, a),
        Q5_K => dot_q5_k(w, a),
        Q6_K => dot_q6_k(w, a),
        IQ4_XS => dot_iq4_xs(w, a),
        _ => unreachable!("CpuMatrix::new refuses {ty}"),
    }
}

#[inline(always)]
fn h(b: &[u8], at: usize) -> f32 {
    f16_to_f32(u16::from_le_bytes([b[at], b[at + 1]]))
}

/// Σ w · a over f32 values in 8 running sums (ggml's F32 vectors), added up at the end.
#[inline(always)]
fn dot_lanes(n: usize, w: impl Fn(usize) -> f32, a: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let whole = n / 8 * 8;
    for i in (0..whole).step_by(8) {
        for l in 0..8 {
            acc[l] += w(i + l) * a[i + l];
        }
    }
    let mut sum = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
    for (i, &a) in a.iter().enumerate().take(n).skip(whole) {
        sum += w(i) * a;
    }
    sum
}

#[inline(always)]
fn dot_f32(w: &[u8], a: ActRow) -> f32 {
    let w: &[f32] = bytemuck::cast_slice(w);
    dot_lanes(a.f.len(), |i| w[i], a.f)
}

#[inline(always)]
fn dot_f16(w: &[u8], a: ActRow) -> f32 {
    dot_lanes(a.f.len(), |i| h(w, 2 * i), a.f)
}

#[inline(always)]
fn dot_bf16(w: &[u8], a: ActRow) -> f32 {
    let bf = |i: usize| f32::from_bits((u16::from_le_bytes([w[2 * i], w[2 * i + 1]]) as u32) << 16);
    dot_lanes(a.f.len(), bf, a.f)
}

/// The blocks of 32 of a row and of its Q8_0/Q8_1 activations.
#[inline(always)]
fn blocks32<'a>(
    w: &'a [u8],
    size: usize,
    a: ActRow<'a>,
) -> impl Iterator<Item = (&'a [u8], &'a [i8; 32], f32, usize)> + 'a {
    w.chunks_exact(size)
        .zip(a.qs.chunks_exact(32))
        .zip(a.d)
        .enumerate()
        .map(|(b, ((w, q), &d))| (w, q.try_into().unwrap(), d, b))
}

/// ggml's x86 AVX2 accumulation over blocks of 32 (`ggml_vec_dot_q4_0_q8_0` and its
/// siblings): eight f32 lanes, where lane j of a block is the integer sum of its products
/// 4j..4j+3 (`maddubs` then `madd`), fused into the lane with the block's scale by an FMA; the
/// lanes are added at the end in `hsum_float_8`'s order. Replaying that order makes these
/// types' rows agree with the llama.cpp goldens to the bit far more often than one sum per
/// block does (ARCHITECTURE.md, "The CPU engine").
struct Lanes([f32; 8]);

impl Lanes {
    #[inline(always)]
    fn new() -> Lanes {
        Lanes([0.0; 8])
    }

    #[inline(always)]
    fn add(&mut self, sums: [i32; 8], d: f32) {
        for (acc, s) in self.0.iter_mut().zip(sums) {
            *acc = fma(s as f32, d, *acc);
        }
    }

    #[inline(always)]
    fn sum(&self) -> f32 {
        let a = &self.0;
        let r: [f32; 4] = std::array::from_fn(|i| a[i + 4] + a[i]);
        (r[0] + r[2]) + (r[1] + r[3])
    }
}

/// a · b + c rounded once, as x86's FMA does. In f64, where a · b is exact (a is an integer
/// sum under 2^17 or an f16 value, b an f32), which rounds like the FMA except at exact ties of
/// the double rounding; wasm has no FMA instruction, and this keeps every build identical.
#[inline(always)]
fn fma(a: f32, b: f32, c: f32) -> f32 {
    (a as f64 * b as f64 + c as f64) as f32
}

/// The eight lane sums of a block: Σ x[i] · a[i] over i in 4j..4j+3, x[i] = `x(i)`.
#[inline(always)]
fn lane_sums(a: &[i8; 32], x: impl Fn(usize) -> i32) -> [i32; 8] {
    let mut p = [0i32; 32];
    for (i, p) in p.iter_mut().enumerate() {
        *p = x(i) * a[i] as i32;
    }
    std::array::from_fn(|j| p[4 * j] + p[4 * j + 1] + p[4 * j + 2] + p[4 * j + 3])
}

/// Element i of a block of 32 nibbles: low nibbles first, then high ones.
#[inline(always)]
fn nibble(qs: &[u8], i: usize) -> i32 {
    ((qs[i % 16] >> (4 * (i / 16))) & 15) as i32
}

// ---- blocks of 32 × Q8_0 / Q8_1 ----

#[inline(always)]
fn dot_q4_0(w: &[u8], a: ActRow) -> f32 {
    let mut acc = Lanes::new();
    for (b, q, ad, _) in blocks32(w, 18, a) {
        let qs = &b[2..18];
        acc.add(lane_sums(q, |i| nibble(qs, i) - 8), h(b, 0) * ad);
    }
    acc.sum()
}

#[inline(always)]
fn dot_q4_1(w: &[u8], a: ActRow) -> f32 {
    let (mut acc, mut mins) = (Lanes::new(), 0f32);
    for (b, q, ad, k) in blocks32(w, 20, a) {
        let qs = &b[4..20];
        mins = fma(h(b, 2), a.s[k], mins);
        acc.add(lane_sums(q, |i| nibble(qs, i)), h(b, 0) * ad);
    }
    acc.sum() + mins
}

/// Element i of a Q5 block: its nibble and its fifth bit from qh.
#[inline(always)]
fn q5(qh: &[u8], qs: &[u8], i: usize) -> i32 {
    let qh = u32::from_le_bytes([qh[0], qh[1], qh[2], qh[3]]);
    nibble(qs, i) | (((qh >> i) & 1) << 4) as i32
}

#[inline(always)]
fn dot_q5_0(w: &[u8], a: ActRow) -> f32 {
    let mut acc = Lanes::new();
    for (b, q, ad, _) in blocks32(w, 22, a) {
        let (qh, qs) = (&b[2..6], &b[6..22]);
        acc.add(lane_sums(q, |i| q5(qh, qs, i) - 16), h(b, 0) * ad);
    }
    acc.sum()
}

#[inline(always)]
fn dot_q5_1(w: &[u8], a: ActRow) -> f32 {
    let (mut acc, mut mins) = (Lanes::new(), 0f32);
    for (b, q, ad, k) in blocks32(w, 24, a) {
        let (qh, qs) = (&b[4..8], &b[8..24]);
        mins = fma(h(b, 2), a.s[k], mins);
        acc.add(lane_sums(q, |i| q5(qh, qs, i)), h(b, 0) * ad);
    }
    acc.sum() + mins
}

#[inline(always)]
fn dot_q8_0(w: &[u8], a: ActRow) -> f32 {
    let mut acc = Lanes::new();
    for (b, q, ad, _) in blocks32(w, 34, a) {
        acc.add(lane_sums(q, |i| b[2 + i] as i8 as i32), h(b, 0) * ad);
    }
    acc.sum()
}

#[inline(always)]
fn dot_iq4_nl(w: &[u8], a: ActRow) -> f32 {
    let mut acc = Lanes::new();
    for (b, q, ad, _) in blocks32(w, 18, a) {
        let qs = &b[2..18];
        acc.add(
            lane_sums(q, |i| KVALUES_IQ4NL[nibble(qs, i) as usize] as i32),
            ad * h(b, 0),
        );
    }
    acc.sum()
}

// ---- K-quants (blocks of 256) × Q8_K ----

/// The blocks of 256 of a row and of its Q8_K activations: (weights, values, d, bsums).
#[inline(always)]
fn blocks256<'a>(
    w: &'a [u8],
    size: usize,
    a: ActRow<'a>,
) -> impl Iterator<Item = (&'a [u8], &'a [i8], f32, &'a [i16])> + 'a {
    w.chunks_exact(size)
        .zip(a.qs.chunks_exact(256))
        .zip(a.d.iter().zip(a.bsums.chunks_exact(16)))
        .map(|((w, q), (&d, bs))| (w, q, d, bs))
}

/// Σ v(l) · a[l] over l < N.
#[inline(always)]
fn isum<const N: usize>(a: &[i8], v: impl Fn(usize) -> i32) -> i32 {
    let mut s = 0i32;
    for (l, &a) in a[..N].iter().enumerate() {
        s += v(l) * a as i32;
    }
    s
}

#[inline(always)]
fn dot_q2_k(w: &[u8], a: ActRow) -> f32 {
    // scales[16] (low nibble scale, high nibble min), qs[64], d, dmin.
    let mut sum = 0f32;
    for (b, q, ad, bs) in blocks256(w, 84, a) {
        let (sc, qs) = (&b[..16], &b[16..80]);
        let (mut is, mut ms) = (0i32, 0i32);
        for half in 0..2 {
            for k in 0..4 {
                for part in 0..2 {
                    let s = 8 * half + 2 * k + part;
                    let (i0, q0) = (128 * half + 32 * k + 16 * part, 32 * half + 16 * part);
                    let dot = isum::<16>(&q[i0..], |l| ((qs[q0 + l] >> (2 * k)) & 3) as i32);
                    is += (sc[s] & 15) as i32 * dot;
                    ms += (sc[s] >> 4) as i32 * bs[s] as i32;
                }
            }
        }
        sum += (ad * h(b, 80)) * is as f32 - (ad * h(b, 82)) * ms as f32;
    }
    sum
}

#[inline(always)]
fn dot_q3_k(w: &[u8], a: ActRow) -> f32 {
    // hmask[32], qs[64], scales[12] (6-bit, offset 32), d.
    let mut sum = 0f32;
    for (b, q, ad, _) in blocks256(w, 110, a) {
        let (hm, qs, sc) = (&b[..32], &b[32..96], &b[96..108]);
        let scale = |s: usize| {
            let low = (sc[s % 8] >> (4 * (s / 8))) & 15;
            let high = (sc[8 + s % 4] >> (2 * (s / 4))) & 3;
            (low | high << 4) as i32 - 32
        };
        let mut is = 0i32;
        for half in 0..2 {
            for k in 0..4 {
                let bit = 4 * half + k;
                for part in 0..2 {
                    let s = 8 * half + 2 * k + part;
                    let (i0, l0) = (128 * half + 32 * k + 16 * part, 16 * part);
                    let dot = isum::<16>(&q[i0..], |l| {
                        let low = ((qs[32 * half + l0 + l] >> (2 * k)) & 3) as i32;
                        low - if (hm[l0 + l] >> bit) & 1 == 0 { 4 } else { 0 }
                    });
                    is += scale(s) * dot;
                }
            }
        }
        sum += (ad * h(b, 108)) * is as f32;
    }
    sum
}

/// ggml's `get_scale_min_k4`: the 6-bit scale and min of sub-block j of Q4_K/Q5_K.
#[inline(always)]
pub(super) fn scale_min_k4(s: &[u8], j: usize) -> (i32, i32) {
    if j < 4 {
        ((s[j] & 63) as i32, (s[j + 4] & 63) as i32)
    } else {
        (
            ((s[j + 4] & 15) | ((s[j - 4] >> 6) << 4)) as i32,
            ((s[j + 4] >> 4) | ((s[j] >> 6) << 4)) as i32,
        )
    }
}

/// Q4_K and Q5_K: d, dmin, scales[12], then (Q5_K) qh[32], then qs[128].
#[inline(always)]
fn k4_k5(w: &[u8], a: ActRow, size: usize, fifth: bool) -> f32 {
    let mut sum = 0f32;
    for (b, q, ad, bs) in blocks256(w, size, a) {
        let sc = &b[4..16];
        let (qh, qs) = if fifth {
            (&b[16..48], &b[48..176])
        } else {
            (&b[0..0], &b[16..144])
        };
        let (mut is, mut ms) = (0i32, 0i32);
        for r in 0..4 {
            for k in 0..2 {
                let j = 2 * r + k;
                let (scale, min) = scale_min_k4(sc, j);
                let dot = isum::<32>(&q[32 * j..], |l| {
                    let low = ((qs[32 * r + l] >> (4 * k)) & 15) as i32;
                    if fifth {
                        low | (((qh[l] >> j) & 1) as i32) << 4
                    } else {
                        low
                    }
                });
                is += scale * dot;
                ms += min * (bs[2 * j] as i32 + bs[2 * j + 1] as i32);
            }
        }
        sum += (ad * h(b, 0)) * is as f32 - (ad * h(b, 2)) * ms as f32;
    }
    sum
}

#[inline(always)]
fn dot_q4_k(w: &[u8], a: ActRow) -> f32 {
    k4_k5(w, a, 144, false)
}

#[inline(always)]
fn dot_q5_k(w: &[u8], a: ActRow) -> f32 {
    k4_k5(w, a, 176, true)
}

#[inline(always)]
fn dot_q6_k(w: &[u8], a: ActRow) -> f32 {
    // ql[128], qh[64], scales[16] (i8), d. In ggml's AVX2 order: per block eight integer lanes,
    // lane l summing bytes 4l..4l+3 of each run of 32 values times its sub-block's scale.
    let mut acc = Lanes::new();
    for (b, q, ad, _) in blocks256(w, 210, a) {
        let (ql, qh, sc) = (&b[..128], &b[128..192], &b[192..208]);
        let mut p = [0i32; 32];
        for half in 0..2 {
            let (ql, qh) = (&ql[64 * half..], &qh[32 * half..]);
            for k in 0..4 {
                let q = &q[128 * half + 32 * k..][..32];
                for (l, p) in p.iter_mut().enumerate() {
                    let low = (ql[l + 32 * (k % 2)] >> (4 * (k / 2))) & 15;
                    let high = (qh[l] >> (2 * k)) & 3;
                    let scale = sc[8 * half + 2 * k + l / 16] as i8 as i32;
                    *p += scale * (((low | high << 4) as i32 - 32) * q[l] as i32);
                }
            }
        }
        let lanes = std::array::from_fn(|l| p[4 * l] + p[4 * l + 1] + p[4 * l + 2] + p[4 * l + 3]);
        acc.add(lanes, ad * h(b, 208));
    }
    acc.sum()
}

#[inline(always)]
fn dot_iq4_xs(w: &[u8], a: ActRow) -> f32 {
    // d, scales_h (u16), scales_l[4], qs[128].
    let kv = |v: u8| KVALUES_IQ4NL[v as usize] as i32;
    let mut sum = 0f32;
    for (b, q, ad, _) in blocks256(w, 136, a) {
        let sh = u16::from_le_bytes([b[2], b[3]]);
        let (sl, qs) = (&b[4..8], &b[8..136]);
        let mut is = 0i32;
        for s in 0..8 {
            let low = (sl[s / 2] >> (4 * (s % 2))) & 15;
            let high = ((sh >> (2 * s)) & 3) as u8;
            let scale = (low | high << 4) as i32 - 32;
            let q32: &[i8; 32] = q[32 * s..32 * s + 32].try_into().unwrap();
            let qs = &qs[16 * s..16 * s + 16];
            let dot: i32 = (0..32)
                .map(|i| kv(nibble(qs, i) as u8) * q32[i] as i32)
                .sum();
            is += scale * dot;
        }
        sum += (ad * h(b, 0)) * is as f32;
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::ActKind;
    use crate::quant::{dequantize, quantize};

    /// Deterministic values in [-scale, scale), with outliers and exact zeros (edge cases of
    /// the block scales).
    pub(crate) fn values(n: usize, seed: u64, scale: f32) -> Vec<f32> {
        let mut s = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..n)
            .map(|i| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let u = ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0;
                match i % 97 {
                    0 => 0.0,
                    13 => u * scale * 8.0,
                    _ => u * scale,
                }
            })
            .collect()
    }

    /// The activation row as the dot product sees it, dequantized.
    fn act_values(a: &QAct) -> Vec<f64> {
        match a.kind {
            ActKind::Q8_0 | ActKind::Q8_1 | ActKind::Q8_K => {
                let block = a.kind.block() as usize;
                a.qs.iter()
                    .enumerate()
                    .map(|(i, &q)| q as f64 * a.d[i / block] as f64)
                    .collect()
            }
            _ => a.f.iter().map(|&v| v as f64).collect(),
        }
    }

    pub(crate) const TYPES: [GgmlType; 15] = [
        GgmlType::F32,
        GgmlType::F16,
        GgmlType::BF16,
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q8_0,
        GgmlType::IQ4_NL,
        GgmlType::Q2_K,
        GgmlType::Q3_K,
        GgmlType::Q4_K,
        GgmlType::Q5_K,
        GgmlType::Q6_K,
        GgmlType::IQ4_XS,
    ];

    #[test]
    fn a_matrix_too_large_for_memory_is_a_named_error() {
        let err = CpuMatrix::new("huge", GgmlType::Q8_0, &[1 << 20, 1 << 40])
            .err()
            .unwrap();
        assert!(matches!(err, Error::OutOfMemory { .. }), "{err:?}");
        assert!(err.to_string().contains("huge"), "{err}");
        let err = CpuMatrix::new("partial", GgmlType::Q4_K, &[100, 2])
            .err()
            .unwrap();
        assert!(matches!(err, Error::BadShape { .. }), "{err:?}");
    }

    #[test]
    fn every_dot_product_matches_the_dequantized_reference() {
        let cols = 512;
        for ty in TYPES {
            for seed in 0..4 {
                let w = quantize(ty, &values(cols, seed, 1.0)).unwrap();
                let wf = dequantize(ty, &w).unwrap();
                let mut a = QAct::new(ActKind::for_weights(ty));
                a.quantize(&values(cols, 100 + seed, 3.0), 1, cols);
                let af = act_values(&a);
                let want: f64 = wf.iter().zip(&af).map(|(&w, &a)| w as f64 * a).sum();
                let scale: f64 = wf
                    .iter()
                    .zip(&af)
                    .map(|(&w, &a)| (w as f64 * a).abs())
                    .sum();
                let got = dot(ty, &w, a.row(0)) as f64;
                // Q8_1's block sums are f16 (ggml's `s`): the min term is that far off.
                let tol = if a.kind == ActKind::Q8_1 { 2e-3 } else { 1e-5 };
                assert!(
                    (got - want).abs() <= tol * scale,
                    "{ty} seed {seed}: {got} vs {want} (scale {scale})"
                );
            }
        }
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod avx2_tests {
    use super::tests::{values, TYPES};
    use super::*;
    use crate::backend::ActKind;
    use crate::quant::quantize;

    /// Where a block of `ty` keeps its f16 scales (d, and dmin or m): set to finite values in
    /// the made-up blocks, whose other bytes are arbitrary.
    fn f16_fields(ty: GgmlType) -> &'static [usize] {
        use GgmlType::*;
        match ty {
            Q4_1 | Q5_1 | Q4_K | Q5_K => &[0, 2],
            Q2_K => &[80, 82],
            Q3_K => &[108],
            Q6_K => &[208],
            _ => &[0],
        }
    }

    /// Rows of `ty`: quantized values, then (for the block types) random bytes and blocks
    /// filled with 0x00, 0xff, 0x80 and 0x7f, which hold every field at its extremes (scales,
    /// mins, high bits), with d and dmin at 1, at f16's largest and at 0.
    fn rows(ty: GgmlType, cols: usize) -> Vec<u8> {
        let mut w = quantize(ty, &values(cols * 4, 7, 1.0)).unwrap();
        if matches!(ty, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16) {
            return w;
        }
        let size = ty.type_size() as usize;
        let row = ty.bytes_for(cols as u64).unwrap() as usize;
        let mut s = 1u64;
        let random = (0..row).map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1);
            (s >> 56) as u8
        });
        let mut made: Vec<u8> = random.collect();
        for fill in [0x00, 0xff, 0x80, 0x7f] {
            made.extend(std::iter::repeat_n(fill, row));
        }
        for (r, d) in made
            .chunks_exact_mut(row)
            .zip([0x3c00u16, 0x3c00, 0x7bff, 0x3c00, 0])
        {
            for b in r.chunks_exact_mut(size) {
                for &at in f16_fields(ty) {
                    b[at..at + 2].copy_from_slice(&d.to_le_bytes());
                }
            }
        }
        w.extend(made);
        w
    }

    /// Token t: random values, zeros, all at the positive or negative extreme of the
    /// activation codes, alternating extremes, large random values (by t % 6).
    fn activations(n: usize, cols: usize, first: usize) -> Vec<f32> {
        (0..n)
            .flat_map(|t| match (first + t) % 6 {
                0 => values(cols, 9 + t as u64, 2.0),
                1 => vec![0.0; cols],
                2 => vec![1e4; cols],
                3 => vec![-1e4; cols],
                4 => (0..cols)
                    .map(|i| if i % 3 == 0 { 1e4 } else { -1e4 })
                    .collect(),
                _ => values(cols, 11 + t as u64, 1e4),
            })
            .collect()
    }

    /// The AVX2 kernels against the portable ones, bit for bit, on quantized, random and
    /// extreme blocks, with batches of 1 (each kind of token) and 70 tokens (past the kernels'
    /// 64-token stack).
    #[test]
    fn avx2_kernels_equal_the_portable_ones() {
        if !std::arch::is_x86_feature_detected!("avx2") {
            eprintln!("skipping: no AVX2");
            return;
        }
        let cols = 768;
        let fast = Cpu::with_simd(1, Simd::Avx2).unwrap();
        let plain = Cpu::with_simd(1, Simd::Baseline).unwrap();
        for ty in TYPES {
            let w = rows(ty, cols);
            let n_rows = w.len() / ty.bytes_for(cols as u64).unwrap() as usize;
            let mut m = CpuMatrix::new("w", ty, &[cols as u64, n_rows as u64]).unwrap();
            m.write_rows(0, &w).unwrap();
            let batches = (0..6).map(|first| (1, first)).chain([(70, 0)]);
            for (n, first) in batches {
                let mut a = QAct::new(ActKind::for_weights(ty));
                a.quantize(&activations(n, cols, first), n, cols);
                let (mut y1, mut y2) = (vec![0f32; n * n_rows], vec![0f32; n * n_rows]);
                m.matmul(&fast, &a, &mut y1);
                m.matmul(&plain, &a, &mut y2);
                let bits = |y: &[f32]| y.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&y1), bits(&y2), "{ty}, {n} tokens from kind {first}");
            }
        }
    }
}
