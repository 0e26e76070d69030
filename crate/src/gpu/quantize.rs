//! Activation quantization before each matmul, as llama.cpp's CPU backend does it.
//!
//! ggml never multiplies a quantized weight by an f32 activation: it first converts the
//! activation row to the weight type's `vec_dot_type` (Q8_0 for Q4_0/Q5_0/Q8_0/IQ4_NL, Q8_1 for
//! Q4_1/Q5_1, Q8_K for the K-quants and IQ4_XS, f16 for F16, bf16 for BF16) and takes integer dot
//! products. That rounding moves logits by a few hundredths — enough to flip greedy choices
//! between near-tied tokens — so the engine applies the same quantization (`shaders/
//! quantize.wgsl`, written back dequantized) and its outputs track the oracle's instead of an
//! idealized f32 model. See ARCHITECTURE.md, "Matching llama.cpp".

use super::{grid, shader::defines, Buffer, Gpu, PostNorm, QMatrix, Reads, Rec, RmsNorm};
use crate::error::{Error, Result};

pub use crate::backend::ActKind;

impl ActKind {
    pub(super) fn defines(self) -> super::shader::Defines {
        let kind = format!("KIND_{self:?}").to_uppercase();
        match self {
            ActKind::Q8_0 | ActKind::Q8_1 => defines(&[(&kind, "1"), ("BLOCK_32", "1")]),
            _ => defines(&[(&kind, "1")]),
        }
    }
}

/// The input of a matmul: f32 activations [n_tokens, cols], and for Q4_1/Q5_1 weights fed Q8_1
/// activations the per-block correction of their min term, f32 [n_tokens, cols / 32].
#[derive(Clone, Copy)]
pub struct MatIn<'a> {
    pub x: &'a Buffer,
    pub delta: Option<&'a Buffer>,
    /// x is not yet quantized: the matvec quantizes it to this kind as it starts (matvec.wgsl
    /// QUANT_IN), which saves a decode step the quantization's own dispatch.
    pub quantize: Option<ActKind>,
    /// x already holds the values of this kind's quantization (rmsnorm.wgsl, quantize.wgsl),
    /// from which the integer matvec recovers the quants (dot4.wgsl).
    pub quantized: Option<ActKind>,
}

impl<'a> MatIn<'a> {
    /// Activations used as they are (f32 × weights).
    pub fn plain(x: &'a Buffer) -> Self {
        MatIn {
            x,
            delta: None,
            quantize: None,
            quantized: None,
        }
    }
}

/// One quantized copy of an activation buffer per kind a model's matrices need, allocated once
/// for the largest input (`max_elements` = tokens × cols).
pub struct ActQuant {
    // (kind, xq f32 [max_elements], delta f32 [max_elements / 32] for Q8_1)
    bufs: Vec<(ActKind, Buffer, Option<Buffer>)>,
}

impl ActQuant {
    pub fn new<'m>(
        gpu: &Gpu,
        matrices: impl IntoIterator<Item = &'m QMatrix>,
        max_elements: u64,
    ) -> Self {
        let mut kinds: Vec<ActKind> = matrices
            .into_iter()
            .map(|m| ActKind::for_weights(m.ty))
            .filter(|&k| k != ActKind::F32)
            .collect();
        kinds.sort();
        kinds.dedup();
        let bufs = kinds
            .into_iter()
            .map(|k| {
                let xq = gpu.storage(&format!("x {k:?}"), max_elements * 4);
                let delta = (k == ActKind::Q8_1)
                    .then(|| gpu.storage("x Q8_1 delta", max_elements / 32 * 4));
                (k, xq, delta)
            })
            .collect();
        ActQuant { bufs }
    }

    /// Records the quantization of x (f32 [n_tokens, cols]) into every kind `for_matrices` need
    /// and returns where each matrix finds its input.
    pub fn record<'a>(
        &'a self,
        rec: &mut Rec,
        x: &'a Buffer,
        n_tokens: u32,
        cols: u32,
        for_matrices: &[&QMatrix],
    ) -> Result<ActInputs<'a>> {
        // One token for matrices that quantize their input as they go: nothing to record.
        let in_kernel = for_matrices
            .iter()
            .all(|m| m.quantizes_input(rec.gpu, n_tokens));
        if !in_kernel {
            for kind in kinds(for_matrices) {
                self.record_kind(rec, x, n_tokens, cols, kind)?;
            }
        }
        Ok(ActInputs {
            x,
            quant: self,
            in_kernel,
        })
    }

    /// RMSNorm of rows `x_row0..x_row0 + n_tokens` of x into xb (see [`RmsNorm::record`]),
    /// then [`record`](Self::record) of xb: the first kind in the norm's own dispatch. A
    /// pending `residual` post-norm is added to x first, in that dispatch too.
    #[allow(clippy::too_many_arguments)]
    pub fn record_norm<'a>(
        &'a self,
        rec: &mut Rec,
        x: &Buffer,
        x_row0: u32,
        w: &Buffer,
        xb: &'a Buffer,
        n_tokens: u32,
        cols: u32,
        eps: f32,
        for_matrices: &[&QMatrix],
        residual: Option<PostNorm>,
    ) -> Result<ActInputs<'a>> {
        let kinds = kinds(for_matrices);
        let fused = match kinds.first() {
            Some(&kind) => {
                let (xq, delta) = self.checked_buffers(kind, xb, n_tokens, cols)?;
                Some(QuantOut { kind, xq, delta })
            }
            None => None,
        };
        RmsNorm::record_quantized(rec, x, x_row0, w, xb, n_tokens, cols, eps, fused, residual)?;
        for &kind in kinds.iter().skip(1) {
            self.record_kind(rec, xb, n_tokens, cols, kind)?;
        }
        Ok(ActInputs {
            x: xb,
            quant: self,
            in_kernel: false,
        })
    }

    fn record_kind(
        &self,
        rec: &mut Rec,
        x: &Buffer,
        n_tokens: u32,
        cols: u32,
        kind: ActKind,
    ) -> Result<()> {
        let (xq, delta) = self.checked_buffers(kind, x, n_tokens, cols)?;
        let pipeline = rec.pipeline("quantize.wgsl", &kind.defines())?;
        let n = n_tokens as u64 * cols as u64;
        let n_blocks = (n / kind.block() as u64) as u32;
        let p = rec.params(&n_blocks);
        let mut entries = vec![x, xq, &p];
        entries.extend(delta);
        rec.dispatch(
            &pipeline,
            &entries,
            grid(n_blocks.div_ceil(64)),
            Reads::act(4 * n),
        );
        Ok(())
    }

    /// The buffers of `kind`, checked to hold [n_tokens, cols] quantized from `x`.
    fn checked_buffers(
        &self,
        kind: ActKind,
        x: &Buffer,
        n_tokens: u32,
        cols: u32,
    ) -> Result<(&Buffer, Option<&Buffer>)> {
        let n = n_tokens as u64 * cols as u64;
        let (xq, delta) = self.buffers(kind)?;
        if xq.size() < n * 4 || x.size() < n * 4 || !cols.is_multiple_of(kind.block()) {
            return Err(Error::Gpu(format!(
                "activation quantization of [{n_tokens} x {cols}] to {kind:?}: buffers too \
                 small or row not whole blocks"
            )));
        }
        Ok((xq, delta))
    }

    fn buffers(&self, kind: ActKind) -> Result<(&Buffer, Option<&Buffer>)> {
        self.bufs
            .iter()
            .find(|(k, ..)| *k == kind)
            .map(|(_, xq, d)| (xq, d.as_ref()))
            .ok_or_else(|| Error::Gpu(format!("no {kind:?} activation buffer allocated")))
    }
}

/// The distinct activation kinds `matrices` need (none for f32 weights), in order.
fn kinds(matrices: &[&QMatrix]) -> Vec<ActKind> {
    let mut kinds: Vec<ActKind> = vec![];
    for m in matrices {
        let kind = ActKind::for_weights(m.ty);
        if kind != ActKind::F32 && !kinds.contains(&kind) {
            kinds.push(kind);
        }
    }
    kinds
}

/// Where a kernel writes quantized activations as it goes (rmsnorm.wgsl's QUANT).
#[derive(Clone, Copy)]
pub struct QuantOut<'a> {
    pub kind: ActKind,
    pub xq: &'a Buffer,
    pub delta: Option<&'a Buffer>,
}

/// The quantized forms of one activation buffer (see [`ActQuant::record`]).
pub struct ActInputs<'a> {
    x: &'a Buffer,
    quant: &'a ActQuant,
    /// x stays f32 and each matrix quantizes it in its own kernel.
    in_kernel: bool,
}

impl<'a> ActInputs<'a> {
    /// The input for `m`: f32 weights take x itself.
    pub fn for_matrix(&self, m: &QMatrix) -> Result<MatIn<'a>> {
        match ActKind::for_weights(m.ty) {
            ActKind::F32 => Ok(MatIn::plain(self.x)),
            kind if self.in_kernel => Ok(MatIn {
                x: self.x,
                delta: None,
                quantize: Some(kind),
                quantized: None,
            }),
            kind => {
                let (x, delta) = self.quant.buffers(kind)?;
                Ok(MatIn {
                    x,
                    delta,
                    quantize: None,
                    quantized: Some(kind),
                })
            }
        }
    }
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;
    use crate::gpu::{nmse, test_gpu, test_random, Rec};
    use crate::quant::GgmlType;
    use half::{bf16, f16};

    /// A weight type for each quantized activation kind: Q8_0, Q8_1, Q8_K, F16, BF16.
    const ONE_PER_KIND: [GgmlType; 5] = [
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q4_K,
        GgmlType::F16,
        GgmlType::BF16,
    ];

    /// ggml's quantizers on the CPU (x86 AVX2 `quantize_row_q8_0/_1`, `quantize_row_q8_K_ref`),
    /// written back dequantized, plus the Q8_1 block-sum correction.
    fn reference(kind: ActKind, x: &[f32]) -> (Vec<f32>, Vec<f32>) {
        let mut out = vec![0.0f32; x.len()];
        let mut delta = vec![];
        match kind {
            ActKind::Q8_0 | ActKind::Q8_1 => {
                for (xb, ob) in x.chunks(32).zip(out.chunks_mut(32)) {
                    let amax = xb.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                    let d = amax / 127.0;
                    let dh = f16::from_f32(d).to_f32();
                    let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
                    let mut sum = 0i32;
                    for (v, o) in xb.iter().zip(ob.iter_mut()) {
                        let q = (v * id).round_ties_even();
                        sum += q as i32;
                        *o = q * dh;
                    }
                    delta.push(f16::from_f32(d * sum as f32).to_f32() - dh * sum as f32);
                }
            }
            ActKind::Q8_K => {
                for (xb, ob) in x.chunks(256).zip(out.chunks_mut(256)) {
                    let (mut amax, mut max) = (0.0f32, 0.0f32);
                    for &v in xb {
                        if v.abs() > amax {
                            amax = v.abs();
                            max = v;
                        }
                    }
                    if amax == 0.0 {
                        continue;
                    }
                    let iscale = -127.0 / max;
                    let d = 1.0 / iscale;
                    for (v, o) in xb.iter().zip(ob.iter_mut()) {
                        *o = (iscale * v).round_ties_even().min(127.0) * d;
                    }
                }
            }
            ActKind::F16 => {
                for (v, o) in x.iter().zip(out.iter_mut()) {
                    *o = f16::from_f32(*v).to_f32();
                }
            }
            ActKind::BF16 => {
                for (v, o) in x.iter().zip(out.iter_mut()) {
                    *o = bf16::from_f32(*v).to_f32();
                }
            }
            ActKind::F32 => out.copy_from_slice(x),
        }
        (out, delta)
    }

    fn weights(ty: GgmlType) -> QMatrix {
        let gpu = test_gpu().unwrap();
        let cols = 256u64;
        let data = vec![0u8; (cols / ty.block_size() * ty.type_size()) as usize];
        QMatrix::upload(&gpu, "w", ty, &[cols, 1], &data).unwrap()
    }

    #[test]
    fn quantize_matches_ggml_bit_for_bit() {
        let Some(gpu) = test_gpu() else { return };
        let (n_tokens, cols) = (3u32, 512u32);
        let mut x = test_random((n_tokens * cols) as usize, 7, 3.0);
        // Exact halves after scaling, an all-zero block, subnormal and large magnitudes.
        x[5] = 127.0 / 2.0;
        x[6] = -0.5 / 127.0 * 127.0;
        for v in &mut x[256..512] {
            *v = 0.0;
        }
        x[600] = 1e-7;
        x[700] = -7.0e4;
        x[800] = 3.0e-5;
        for ty in ONE_PER_KIND {
            let kind = ActKind::for_weights(ty);
            let m = weights(ty);
            let aq = ActQuant::new(&gpu, [&m], (n_tokens * cols) as u64);
            let xb = gpu.upload("x", bytemuck::cast_slice(&x));
            let mut rec = Rec::new(&gpu);
            let inputs = aq.record(&mut rec, &xb, n_tokens, cols, &[&m]).unwrap();
            let input = inputs.for_matrix(&m).unwrap();
            rec.submit();
            let got = pollster::block_on(gpu.read_f32(input.x, x.len())).unwrap();
            let (want, want_delta) = reference(kind, &x);
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&got), bits(&want), "{kind:?}");
            if let Some(d) = input.delta {
                let got = pollster::block_on(gpu.read_f32(d, want_delta.len())).unwrap();
                assert_eq!(bits(&got), bits(&want_delta), "{kind:?} delta");
                assert!(want_delta.iter().any(|&v| v != 0.0));
            }
        }
    }

    /// The norm with the quantization in its own dispatch writes exactly what the norm and
    /// then the quantizer write, for every kind and from a row offset.
    #[test]
    fn norm_then_quantize_in_one_dispatch_is_bit_exact() {
        let Some(gpu) = test_gpu() else { return };
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        let (rows, cols, eps) = (5u32, 768u32, 1e-5f32);
        let x = gpu.upload(
            "x",
            bytemuck::cast_slice(&test_random((rows * cols) as usize, 3, 4.0)),
        );
        let w = gpu.upload(
            "w",
            bytemuck::cast_slice(&test_random(cols as usize, 4, 2.0)),
        );
        for ty in ONE_PER_KIND.into_iter().chain([GgmlType::F32]) {
            for (row0, n) in [(0u32, rows), (rows - 1, 1)] {
                let m = weights(ty);
                let read = |b: &Buffer, len: u32| {
                    pollster::block_on(gpu.read_f32(b, len as usize)).unwrap()
                };
                let mut outs = vec![];
                for fused in [false, true] {
                    let aq = ActQuant::new(&gpu, [&m], (rows * cols) as u64);
                    let xb = gpu.storage("xb", (rows * cols) as u64 * 4);
                    let mut rec = Rec::new(&gpu);
                    let inputs = if fused {
                        aq.record_norm(&mut rec, &x, row0, &w, &xb, n, cols, eps, &[&m], None)
                            .unwrap()
                    } else {
                        let src = gpu.storage("src", (n * cols) as u64 * 4);
                        rec.copy(&x, (row0 * cols) as u64 * 4, &src, 0, (n * cols) as u64 * 4);
                        RmsNorm::record(&mut rec, &src, &w, &xb, n, cols, eps).unwrap();
                        for kind in kinds(&[&m]) {
                            aq.record_kind(&mut rec, &xb, n, cols, kind).unwrap();
                        }
                        ActInputs {
                            x: &xb,
                            quant: &aq,
                            in_kernel: false,
                        }
                    };
                    rec.submit();
                    let input = inputs.for_matrix(&m).unwrap();
                    let delta = input.delta.map(|d| read(d, n * cols / 32));
                    outs.push((read(&xb, n * cols), read(input.x, n * cols), delta));
                }
                let ((xb0, q0, d0), (xb1, q1, d1)) = (&outs[0], &outs[1]);
                assert!(bits(xb0) == bits(xb1), "{ty} rows {row0}+{n}: normed");
                assert!(bits(q0) == bits(q1), "{ty} rows {row0}+{n}: quantized");
                assert!(
                    d0.as_deref().map(bits) == d1.as_deref().map(bits),
                    "{ty}: delta"
                );
                assert_eq!(
                    bits(q1) != bits(xb1),
                    ty != GgmlType::F32,
                    "{ty}: quantization visible"
                );
            }
        }
    }

    /// A decode step's matvec quantizing its f32 input itself (QUANT_IN) gives, bit for bit,
    /// what the quantization's own dispatch and the matvec give, in both matvec variants.
    #[test]
    fn matvec_quantizing_its_input_is_bit_exact() {
        let Some(mut gpu) = test_gpu() else { return };
        let cpu = gpu.features.cpu;
        let cols = 512u32;
        let x = test_random(cols as usize, 9, 3.0);
        for ty in ONE_PER_KIND {
            for as_cpu in [cpu, !cpu] {
                gpu.features.cpu = as_cpu;
                let gpu = &gpu;
                let rows = 70u32;
                let len = (cols as u64 / ty.block_size() * ty.type_size()) as usize * rows as usize;
                let noise = test_random(len, 10, 1.0);
                let mut data: Vec<u8> = noise.iter().map(|v| (v.to_bits() >> 7) as u8).collect();
                // Small finite f16 scales, whatever the random bits.
                for b in data.chunks_exact_mut(ty.type_size() as usize) {
                    if ty.block_size() > 1 {
                        b[1] &= 0x3b;
                        if ty == GgmlType::Q4_1 || ty == GgmlType::Q4_K {
                            b[3] &= 0x3b;
                        }
                    }
                }
                if ty.block_size() == 1 {
                    for b in data.chunks_exact_mut(2) {
                        b[1] &= 0x3b;
                    }
                }
                let m = QMatrix::upload(gpu, "w", ty, &[cols as u64, rows as u64], &data).unwrap();
                assert!(m.quantizes_input(gpu, 1) && !m.quantizes_input(gpu, 2));
                let aq = ActQuant::new(gpu, [&m], cols as u64);
                let xb = gpu.upload("x", bytemuck::cast_slice(&x));
                let mut outs = vec![];
                for in_kernel in [false, true] {
                    let y = gpu.storage("y", rows as u64 * 4);
                    let mut rec = Rec::new(gpu);
                    let before = gpu.counts().dispatches;
                    if !in_kernel {
                        for kind in kinds(&[&m]) {
                            aq.record_kind(&mut rec, &xb, 1, cols, kind).unwrap();
                        }
                    }
                    let inputs = ActInputs {
                        x: &xb,
                        quant: &aq,
                        in_kernel,
                    };
                    m.record_matmul(&mut rec, inputs.for_matrix(&m).unwrap(), &y, 1)
                        .unwrap();
                    let dispatches = gpu.counts().dispatches - before;
                    rec.submit();
                    outs.push((
                        pollster::block_on(gpu.read_f32(&y, rows as usize)).unwrap(),
                        dispatches,
                    ));
                }
                let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                assert!(bits(&outs[0].0) == bits(&outs[1].0), "{ty} cpu {as_cpu}");
                assert!(outs[0].0.iter().any(|&v| v != 0.0 && v.is_finite()), "{ty}");
                assert_eq!((outs[0].1, outs[1].1), (2, 1), "{ty}: dispatches");
            }
        }
    }

    #[test]
    fn kinds_follow_ggml_vec_dot_types() {
        use GgmlType::*;
        let kinds: Vec<ActKind> = [F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q6_K, IQ4_XS]
            .into_iter()
            .map(ActKind::for_weights)
            .collect();
        use ActKind as A;
        assert_eq!(
            kinds,
            [
                A::F32,
                A::F16,
                A::BF16,
                A::Q8_0,
                A::Q8_1,
                A::Q8_0,
                A::Q8_1,
                A::Q8_0,
                A::Q8_K,
                A::Q8_K
            ]
        );
    }

    #[test]
    fn min_correction_reproduces_ggml_q4_1_dot() {
        // ggml: Σ_b d_w·d_y·Σ q_w·q_y + m_b·f16(d_y·Σ q_y). The GPU's f32 dot over fake-quantized
        // activations plus the correction must equal it up to summation order.
        let Some(gpu) = test_gpu() else { return };
        for (ty, n_tokens) in [
            (GgmlType::Q4_1, 1u32),
            (GgmlType::Q4_1, 40),
            (GgmlType::Q5_1, 3),
        ] {
            let (rows, cols) = (70u32, 256u32);
            // Random blocks: small f16 d and m, random quant bits.
            let size = ty.type_size() as usize;
            let noise = test_random((rows * cols / 32) as usize * size, 11, 1.0);
            let mut data: Vec<u8> = noise.iter().map(|v| (v.to_bits() >> 5) as u8).collect();
            for (i, b) in data.chunks_exact_mut(size).enumerate() {
                b[..2].copy_from_slice(&f16::from_f32(0.01 * noise[i]).to_le_bytes());
                b[2..4].copy_from_slice(&f16::from_f32(-0.1 * noise[i + 1].abs()).to_le_bytes());
            }
            let wd = crate::quant::dequantize(ty, &data).unwrap();
            let m = QMatrix::upload(&gpu, "w", ty, &[cols as u64, rows as u64], &data).unwrap();
            let x = test_random((n_tokens * cols) as usize, 12, 2.0);
            let (xq, delta) = reference(ActKind::Q8_1, &x);
            let mins: Vec<f32> = data
                .chunks(ty.type_size() as usize)
                .map(|b| f16::from_le_bytes([b[2], b[3]]).to_f32())
                .collect();
            let mut want = vec![0f32; (n_tokens * rows) as usize];
            let bpr = (cols / 32) as usize;
            for t in 0..n_tokens as usize {
                for r in 0..rows as usize {
                    let mut s = 0f64;
                    for k in 0..cols as usize {
                        s += wd[r * cols as usize + k] as f64 * xq[t * cols as usize + k] as f64;
                    }
                    for b in 0..bpr {
                        s += mins[r * bpr + b] as f64 * delta[t * bpr + b] as f64;
                    }
                    want[t * rows as usize + r] = s as f32;
                }
            }
            let aq = ActQuant::new(&gpu, [&m], (n_tokens * cols) as u64);
            let xb = gpu.upload("x", bytemuck::cast_slice(&x));
            let yb = gpu.storage("y", (n_tokens * rows) as u64 * 4);
            let mut rec = Rec::new(&gpu);
            let inputs = aq.record(&mut rec, &xb, n_tokens, cols, &[&m]).unwrap();
            m.record_matmul(&mut rec, inputs.for_matrix(&m).unwrap(), &yb, n_tokens)
                .unwrap();
            rec.submit();
            let got = pollster::block_on(gpu.read_f32(&yb, want.len())).unwrap();
            let e = nmse(&got, &want);
            assert!(e < 1e-11, "{ty} × {n_tokens} tokens: nmse {e}");
            // Without the correction the result is measurably different.
            let plain: Vec<f32> = (0..want.len())
                .map(|i| {
                    let (t, r) = (i / rows as usize, i % rows as usize);
                    let s: f64 = (0..bpr)
                        .map(|b| mins[r * bpr + b] as f64 * delta[t * bpr + b] as f64)
                        .sum();
                    (want[i] as f64 - s) as f32
                })
                .collect();
            assert!(
                nmse(&plain, &want) > 100.0 * e.max(1e-14),
                "{ty}: correction is visible"
            );
        }
    }
}
