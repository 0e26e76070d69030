//! The KV cache of a layer and causal attention over it (GQA, sliding window, online softmax).

use super::{grid, shader::defines, Buffer, Gpu, Pos, Reads, Rec, RmsNorm, RopeMode, RopeSpec};
use crate::error::{Error, Result};

/// KV cache of one layer: `cells` slots of `n_kv × head_dim` values each for K and for V, stored
/// as f16 pairs in u32 words (low half = even element), so it works without `shader-f16`.
/// Position p lives in cell `p % cells`: a ring for sliding-window layers (cells ≥ window +
/// batch − 1), `cells = n_ctx` for global layers.
pub struct KvCache {
    /// f16 [cells, n_kv, head_dim], packed in pairs.
    pub k: Buffer,
    /// f16 [cells, n_kv, head_dim], packed in pairs.
    pub v: Buffer,
    pub cells: u32,
    pub n_kv: u32,
    pub head_dim: u32,
}

const STORE_WG: u32 = 256;
const ATTN_WG: u32 = 64;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct StoreParams {
    row_words: u32,
    n_tokens: u32,
    cells: u32,
    head_dim: u32,
    // With ROPE: rotated dims per head, query heads, then the angles' terms (see RopeSpec).
    n_rot: u32,
    n_head: u32,
    theta_scale: f32,
    freq_scale: f32,
    attn_factor: f32,
    q_scale: f32,
    eps: f32,
}

/// The query side of [`KvCache::record_store`]: q, f32 [n_tokens, n_head, head_dim], is
/// rotated in place and then multiplied by `q_scale`.
pub struct RopeQ<'a> {
    pub q: &'a Buffer,
    pub n_head: u32,
    pub q_scale: f32,
    pub spec: &'a RopeSpec<'a>,
    /// Per-head RMSNorm weights of q and k, f32 [head_dim] each, applied before the rotation
    /// (qwen3, gemma3), with this eps.
    pub norms: Option<([&'a Buffer; 2], f32)>,
    /// Biases added to q, k and v first (qwen2), f32 [heads · head_dim] each.
    pub biases: Option<[&'a Buffer; 3]>,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n_tokens: u32,
    n_head: u32,
    n_kv: u32,
    cells: u32,
    window: u32,
    scale: f32,
    /// Query heads per KV head.
    group: u32,
}

impl KvCache {
    /// A zeroed cache. Panics unless `head_dim` is even (every model's is): a head row must be
    /// whole u32 words.
    pub fn new(gpu: &Gpu, label: &str, cells: u32, n_kv: u32, head_dim: u32) -> KvCache {
        assert!(
            head_dim.is_multiple_of(2),
            "KvCache {label}: head_dim = {head_dim} must be even (f16 pairs in u32 words)"
        );
        let bytes = cells as u64 * n_kv as u64 * head_dim as u64 * 2;
        KvCache {
            k: gpu.storage(&format!("{label}.k"), bytes),
            v: gpu.storage(&format!("{label}.v"), bytes),
            cells,
            n_kv,
            head_dim,
        }
    }

    /// Stores k, v: f32 [n_tokens, n_kv, head_dim] for positions pos.. into their cells,
    /// rounded to f16 to nearest even (as ggml's f32 → f16). With `rope`, rotary position
    /// embeddings run in the same dispatch: k is rotated as it is stored, and `rope.q` in
    /// place, then scaled. Token t has position pos + t; pair i turns by `theta_i = freq_scale
    /// · (pos · theta_scale^i) / ff[i]`, `theta_scale = base^(-2/n_rot)`, scaled by
    /// attn_factor, computed as ggml-cpu does (f32, repeated products; YaRN's ramp off:
    /// ext_factor 0). Angles are accurate for positions·freq_scale below 2e5.
    pub fn record_store(
        &self,
        rec: &mut Rec,
        k: &Buffer,
        v: &Buffer,
        n_tokens: u32,
        pos: &Pos,
        rope: Option<RopeQ>,
    ) -> Result<()> {
        if n_tokens > self.cells {
            return Err(Error::Gpu(format!(
                "KV store: {n_tokens} tokens do not fit in a cache of {} cells",
                self.cells
            )));
        }
        let row_words = self.n_kv * self.head_dim / 2;
        let mut p = StoreParams {
            row_words,
            n_tokens,
            cells: self.cells,
            head_dim: self.head_dim,
            n_rot: 0,
            n_head: 0,
            theta_scale: 0.0,
            freq_scale: 0.0,
            attn_factor: 0.0,
            q_scale: 1.0,
            eps: 0.0,
        };
        let Some(r) = &rope else {
            let wg = STORE_WG.to_string();
            let pipeline = rec.pipeline("kv_store.wgsl", &defines(&[("WG_SIZE", &wg)]))?;
            let p = rec.params(&p);
            let threads = n_tokens * row_words;
            // Reads k and v in f32, writes them in f16.
            let reads = Reads {
                act: 8 * threads as u64,
                kv: 8 * threads as u64,
                ..Reads::default()
            };
            let buffers = [k, v, &self.k, &self.v, &p, &pos.buf];
            rec.dispatch(&pipeline, &buffers, grid(threads.div_ceil(STORE_WG)), reads);
            return Ok(());
        };
        let n_rot = r.spec.n_rot;
        if n_rot == 0 || !n_rot.is_multiple_of(2) || n_rot > self.head_dim {
            return Err(Error::Gpu(format!(
                "rope: n_rot = {n_rot} must be even, positive and at most head_dim = {}",
                self.head_dim
            )));
        }
        // A workgroup per head: the q/k norms reduce as rmsnorm.wgsl does for that width.
        let (wg, head_dim) = (
            RmsNorm::workgroup_size(self.head_dim).to_string(),
            self.head_dim.to_string(),
        );
        let mut defs = vec![
            ("WG_SIZE", wg.as_str()),
            ("ROPE", ""),
            ("HEAD_DIM", head_dim.as_str()),
        ];
        if r.spec.mode == RopeMode::Neox {
            defs.push(("NEOX", ""));
        }
        p.n_rot = n_rot;
        p.n_head = r.n_head;
        // ggml: powf(freq_base, -2.0f/n_dims), in f32 (Rust's powf is the C library's).
        p.theta_scale = r.spec.base.powf(-2.0 / n_rot as f32);
        p.freq_scale = r.spec.freq_scale;
        p.attn_factor = r.spec.attn_factor;
        p.q_scale = r.q_scale;
        let params = rec.params(&StoreParams {
            eps: r.norms.map_or(0.0, |(_, eps)| eps),
            ..p
        });
        let mut buffers = vec![k, v, &self.k, &self.v, &params, &pos.buf, r.q];
        // Optional bindings follow in this order, each at the index its define names.
        let at = |buffers: &Vec<&Buffer>, i: usize| (buffers.len() + i).to_string();
        let mut numbered: Vec<(&str, String)> = vec![];
        if let Some(ff) = r.spec.freq_factors {
            defs.push(("FREQ_FACTORS", ""));
            numbered.push(("FF_AT", at(&buffers, 0)));
            buffers.push(ff);
        }
        if let Some((norms, _)) = r.norms {
            defs.push(("QK_NORM", ""));
            numbered.push(("QN_AT", at(&buffers, 0)));
            numbered.push(("QN_AT_1", at(&buffers, 1)));
            buffers.extend(norms);
        }
        if let Some(biases) = r.biases {
            defs.push(("BIAS", ""));
            for (i, name) in ["BIAS_AT", "BIAS_AT_1", "BIAS_AT_2"]
                .into_iter()
                .enumerate()
            {
                numbered.push((name, at(&buffers, i)));
            }
            buffers.extend(biases);
        }
        defs.extend(numbered.iter().map(|(k, v)| (*k, v.as_str())));
        let pipeline = rec.pipeline("kv_store.wgsl", &defines(&defs))?;
        let q_len = n_tokens * r.n_head * self.head_dim;
        // Reads q, k and v in f32, writes q back and k, v in f16.
        let reads = Reads {
            act: 4 * (q_len + 2 * n_tokens * row_words) as u64,
            kv: 8 * (n_tokens * row_words) as u64,
            ..Reads::default()
        };
        let heads = n_tokens * (r.n_head + self.n_kv);
        rec.dispatch(&pipeline, &buffers, grid(heads), reads);
        Ok(())
    }
}

pub struct Attention;

pub use crate::backend::GGML_FA_TILE_Q;

impl Attention {
    /// `out[t, h, :] = softmax_j(scale · q[t, h, :]·K[j, h/(n_head/n_kv), :]) · V[j, …]` over
    /// positions j ≤ p = pos0 + t with `window == 0 || p − j < window` (causal, GQA, sliding
    /// window as llama.cpp masks it). q, out: f32 [n_tokens, n_head, head_dim]. The positions
    /// pos0..pos0+n_tokens must already be stored; every key a query needs must still be in the
    /// cache (for a ring: cells ≥ window + n_tokens − 1).
    ///
    /// Numerics follow llama.cpp's CPU flash attention (see attention.wgsl): batches of fewer
    /// than [`GGML_FA_TILE_Q`] tokens round q and the output accumulator to f16 as its
    /// `one_chunk` path does, larger ones are f32 like its tiled path. One workgroup per
    /// (token, head) walks its keys in tiles of 64 with an online softmax.
    #[allow(clippy::too_many_arguments)]
    pub fn record(
        rec: &mut Rec,
        q: &Buffer,
        cache: &KvCache,
        out: &Buffer,
        n_tokens: u32,
        pos: &Pos,
        n_head: u32,
        scale: f32,
        window: u32,
    ) -> Result<()> {
        if cache.n_kv == 0 || !n_head.is_multiple_of(cache.n_kv) {
            return Err(Error::Gpu(format!(
                "attention: {n_head} query heads are not a multiple of {} KV heads",
                cache.n_kv
            )));
        }
        if n_tokens == 0 {
            return Ok(());
        }
        let pos0 = pos.get();
        // The oldest key of the first query, against the newest position stored.
        let oldest = if window > 0 {
            (pos0 + 1).saturating_sub(window)
        } else {
            0
        };
        if (oldest as u64) + (cache.cells as u64) < pos0 as u64 + n_tokens as u64 {
            return Err(Error::Gpu(format!(
                "attention: positions {oldest}..{} are needed but a cache of {} cells keeps only the last {} (window {window}, {n_tokens} tokens from {pos0})",
                pos0 + n_tokens,
                cache.cells,
                cache.cells
            )));
        }
        let mut defs = defines(&[
            ("WG_SIZE", &ATTN_WG.to_string()),
            ("HEAD_DIM", &cache.head_dim.to_string()),
        ]);
        if n_tokens < GGML_FA_TILE_Q {
            defs.insert("F16_ACC".into(), "1".into());
        }
        let pipeline = rec.pipeline("attention.wgsl", &defs)?;
        let p = rec.params(&Params {
            n_tokens,
            n_head,
            n_kv: cache.n_kv,
            cells: cache.cells,
            window,
            scale,
            group: n_head / cache.n_kv,
        });
        // Every KV head's keys and values from the oldest position any query sees to the last.
        let keys = (pos0 + n_tokens - oldest.min(pos0)).min(cache.cells) as u64;
        let row = 2 * (cache.n_kv * cache.head_dim) as u64;
        let reads = Reads {
            kv: 2 * keys * row,
            act: 4 * (n_tokens * n_head * cache.head_dim) as u64,
            ..Reads::default()
        };
        rec.dispatch(
            &pipeline,
            &[q, &cache.k, &cache.v, out, &p, &pos.buf],
            grid(n_tokens * n_head),
            reads,
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::{nmse, test_gpu, test_random as random, Rec};
    use half::f16;

    /// A layer's shape and the K/V of every position so far (f32, as the model produced them).
    struct Layer {
        n_head: usize,
        n_kv: usize,
        head_dim: usize,
        window: usize,
        scale: f32,
        k: Vec<f32>,
        v: Vec<f32>,
    }

    impl Layer {
        /// Attention for queries q of positions pos0.., in f64 over K/V rounded through f16.
        fn exact(&self, q: &[f32], pos0: usize) -> Vec<f32> {
            let (hd, row) = (self.head_dim, self.n_kv * self.head_dim);
            let h16 = |x: f32| f16::from_f32(x).to_f64();
            let mut out = vec![0f32; q.len()];
            for (i, (qh, o)) in q.chunks(hd).zip(out.chunks_mut(hd)).enumerate() {
                let (t, h) = (i / self.n_head, i % self.n_head);
                let kvh = h / (self.n_head / self.n_kv);
                let p = pos0 + t;
                let lo = if self.window > 0 {
                    (p + 1).saturating_sub(self.window)
                } else {
                    0
                };
                let keys = lo..=p;
                let s: Vec<f64> = keys
                    .clone()
                    .map(|j| {
                        let kj = &self.k[j * row + kvh * hd..][..hd];
                        let dot: f64 = qh.iter().zip(kj).map(|(&a, &b)| a as f64 * h16(b)).sum();
                        dot * self.scale as f64
                    })
                    .collect();
                let max = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = s.iter().map(|x| (x - max).exp()).collect();
                let sum: f64 = e.iter().sum();
                for (d, o) in o.iter_mut().enumerate() {
                    let acc: f64 = keys
                        .clone()
                        .zip(&e)
                        .map(|(j, w)| w * h16(self.v[j * row + kvh * hd + d]))
                        .sum();
                    *o = (acc / sum) as f32;
                }
            }
            out
        }

        /// ggml-cpu's `one_chunk` flash attention: q rounded to f16, keys folded in order with
        /// a per-key max into an f16 accumulator, in f32 arithmetic.
        fn ggml_f16(&self, q: &[f32], pos0: usize) -> Vec<f32> {
            let (hd, row) = (self.head_dim, self.n_kv * self.head_dim);
            let h = |x: f32| f16::from_f32(x).to_f32();
            let mut out = vec![0f32; q.len()];
            for (i, (qh, o)) in q.chunks(hd).zip(out.chunks_mut(hd)).enumerate() {
                let (t, head) = (i / self.n_head, i % self.n_head);
                let kvh = head / (self.n_head / self.n_kv);
                let p = pos0 + t;
                let lo = if self.window > 0 {
                    (p + 1).saturating_sub(self.window)
                } else {
                    0
                };
                let (mut m, mut l) = (f32::NEG_INFINITY, 0f32);
                let mut acc = vec![0f32; hd];
                for j in lo..=p {
                    let kj = &self.k[j * row + kvh * hd..][..hd];
                    let dot: f32 = qh.iter().zip(kj).map(|(&a, &b)| h(a) * h(b)).sum();
                    let s = dot * self.scale;
                    let (mut ms, mut vs) = (1f32, 1f32);
                    if s > m {
                        ms = (m - s).exp();
                        m = s;
                        acc.iter_mut().for_each(|a| *a = h(*a * ms));
                    } else {
                        vs = (s - m).exp();
                    }
                    l = l * ms + vs;
                    let vj = &self.v[j * row + kvh * hd..][..hd];
                    for (a, &v) in acc.iter_mut().zip(vj) {
                        *a = h(h(v).mul_add(vs, *a));
                    }
                }
                let inv = 1.0 / l;
                for (o, a) in o.iter_mut().zip(&acc) {
                    *o = a * inv;
                }
            }
            out
        }
    }

    /// Runs the layer through `batches` (token counts) with a cache of `cells`, storing each
    /// batch's K/V then attending, and checks every batch against the reference.
    fn check(gpu: &Gpu, name: &str, mut layer: Layer, cells: usize, batches: &[usize]) {
        let (hd, row) = (layer.head_dim, layer.n_kv * layer.head_dim);
        let cache = KvCache::new(gpu, name, cells as u32, layer.n_kv as u32, hd as u32);
        let mut pos0 = 0;
        let pos = Pos::new(gpu, 0);
        let mut worst = 0f64;
        for (b, &n) in batches.iter().enumerate() {
            let seed = (b as u64 + 1) * 1000 + hd as u64;
            let q = random(n * layer.n_head * hd, seed, 1.0);
            let k = random(n * row, seed + 1, 1.0);
            // V of a wide range, including values that are not exact in f16.
            let v = random(n * row, seed + 2, 3.0);
            layer.k.extend_from_slice(&k);
            layer.v.extend_from_slice(&v);
            let qb = gpu.upload("q", bytemuck::cast_slice(&q));
            let kb = gpu.upload("k", bytemuck::cast_slice(&k));
            let vb = gpu.upload("v", bytemuck::cast_slice(&v));
            let out = gpu.storage("out", q.len() as u64 * 4);
            pos.set(gpu, pos0 as u32);
            let mut rec = Rec::new(gpu);
            cache
                .record_store(&mut rec, &kb, &vb, n as u32, &pos, None)
                .unwrap();
            Attention::record(
                &mut rec,
                &qb,
                &cache,
                &out,
                n as u32,
                &pos,
                layer.n_head as u32,
                layer.scale,
                layer.window as u32,
            )
            .unwrap();
            rec.submit();
            let got = pollster::block_on(gpu.read_f32(&out, q.len())).unwrap();
            let exact = layer.exact(&q, pos0);
            let (e, tolerance) = if (n as u32) < GGML_FA_TILE_Q {
                // The f16 path tracks ggml's rounding (up to an f16 step where the GPU's exp
                // or summation order lands on the other side of a rounding boundary), not the
                // exact result.
                let e = nmse(&got, &layer.ggml_f16(&q, pos0));
                let off = nmse(&got, &exact);
                assert!(
                    off == 0.0 || off > 10.0 * e,
                    "{name}: batch {b}: f16 path not taken ({e:.1e} vs exact {off:.1e})"
                );
                (e, 1e-8)
            } else {
                (nmse(&got, &exact), 1e-10)
            };
            assert!(
                e < tolerance,
                "{name}: batch {b} ({n} tokens from {pos0}): nmse {e}"
            );
            worst = worst.max(e);
            pos0 += n;
        }
        eprintln!(
            "attention {name}: worst nmse {worst:.2e} over {} batches",
            batches.len()
        );
    }

    fn layer(n_head: usize, n_kv: usize, head_dim: usize, window: usize) -> Layer {
        Layer {
            n_head,
            n_kv,
            head_dim,
            window,
            // Sharper than 1/sqrt(d) so the softmax is far from uniform.
            scale: 4.0 / (head_dim as f32).sqrt(),
            k: vec![],
            v: vec![],
        }
    }

    #[test]
    fn prefill_then_decode_gqa_9_3() {
        let Some(gpu) = test_gpu() else { return };
        // SmolLM2-135M's shape: prefill 37 tokens, then single-token decode steps.
        check(&gpu, "smollm2", layer(9, 3, 64, 0), 128, &[37, 1, 1, 1]);
    }

    #[test]
    fn many_tiles_gqa_4_1_head_dim_256() {
        let Some(gpu) = test_gpu() else { return };
        // gemma3-like global layer: 150 tokens (three key tiles, f32 path), then decode.
        check(&gpu, "global256", layer(4, 1, 256, 0), 160, &[150, 1, 2]);
    }

    #[test]
    fn single_token_from_zero() {
        let Some(gpu) = test_gpu() else { return };
        check(&gpu, "one", layer(2, 2, 64, 0), 4, &[1, 1]);
    }

    #[test]
    fn sliding_window_ring_wraps() {
        let Some(gpu) = test_gpu() else { return };
        // Window 16 in a ring of 16 + 8 − 1 = 23 cells, fed in batches of up to 8 then decode
        // steps: positions run to 110, wrapping the ring several times; the first batches see
        // fewer keys than the window.
        let batches = [8, 8, 8, 5, 8, 1, 1, 8, 8, 8, 8, 8, 8, 8, 8, 1, 1, 1, 1];
        check(&gpu, "ring", layer(4, 2, 64, 16), 23, &batches);
        // A window wider than one tile (64) in a ring, head_dim 256, GQA 4/1.
        check(
            &gpu,
            "ring256",
            layer(4, 1, 256, 80),
            80 + 32 - 1,
            &[32, 32, 32, 1, 32, 1],
        );
        // Batches of 64 (the f32 path) through a ring.
        check(
            &gpu,
            "ring64",
            layer(2, 1, 64, 70),
            70 + 64 - 1,
            &[64, 64, 1, 64],
        );
    }

    #[test]
    fn store_rounds_to_nearest_even_f16() {
        let Some(gpu) = test_gpu() else { return };
        let mut xs = vec![
            0.0f32,
            -0.0,
            1.0,
            -2.5,
            65504.0,
            65519.0,
            65520.0,
            -70000.0,
            1e10,
            f32::INFINITY,
            f32::NEG_INFINITY,
            6.1035156e-5,
            6.0e-5,
            5.9604645e-8,
            2.9802322e-8,
            2.9802326e-8,
            4.4703484e-8,
            8.940697e-8,
            1e-9,
            1e-40,
            1.0 + 1.0 / 2048.0,
            1.0 + 3.0 / 2048.0,
            1.0 + 1.0 / 4096.0,
        ];
        // Ties at every binade and random values across the whole f16 range.
        xs.extend((-24..16).map(|e| 2f32.powi(e) * (1.0 + 1.0 / 2048.0)));
        xs.extend(
            random(4000, 5, 1.0)
                .iter()
                .enumerate()
                .map(|(i, &r)| r * 2f32.powi(i as i32 % 40 - 25)),
        );
        xs.push(f32::NAN);
        if xs.len() % 2 == 1 {
            xs.push(0.5);
        }
        let n = xs.len() as u32;
        let cache = KvCache::new(&gpu, "bits", 1, 1, n);
        let x = gpu.upload("x", bytemuck::cast_slice(&xs));
        let mut rec = Rec::new(&gpu);
        cache
            .record_store(&mut rec, &x, &x, 1, &Pos::new(&gpu, 0), None)
            .unwrap();
        rec.submit();
        let words = pollster::block_on(gpu.read(&cache.k, n as u64 * 2)).unwrap();
        let got: &[u16] = bytemuck::cast_slice(&words);
        for (&x, &h) in xs.iter().zip(got) {
            let want = f16::from_f32(x);
            if x.is_nan() {
                assert!(f16::from_bits(h).is_nan(), "NaN stored as {h:#06x}");
            } else {
                assert_eq!(
                    h,
                    want.to_bits(),
                    "{x:e}: got {h:#06x}, want {:#06x}",
                    want.to_bits()
                );
            }
        }
    }

    #[test]
    fn rejects_bad_shapes() {
        let Some(gpu) = test_gpu() else { return };
        let cache = KvCache::new(&gpu, "small", 8, 2, 64);
        let (q, out) = (
            gpu.storage("q", 64 * 4 * 16),
            gpu.storage("out", 64 * 4 * 16),
        );
        let mut rec = Rec::new(&gpu);
        let at = |p: u32| Pos::new(&gpu, p);
        // 5 query heads over 2 KV heads.
        assert!(Attention::record(&mut rec, &q, &cache, &out, 1, &at(0), 5, 1.0, 0).is_err());
        // A global layer past its cells, and a ring too small for window + batch.
        assert!(Attention::record(&mut rec, &q, &cache, &out, 1, &at(8), 2, 1.0, 0).is_err());
        assert!(Attention::record(&mut rec, &q, &cache, &out, 4, &at(20), 2, 1.0, 6).is_err());
        assert!(Attention::record(&mut rec, &q, &cache, &out, 3, &at(20), 2, 1.0, 6).is_ok());
        assert!(cache
            .record_store(&mut rec, &q, &q, 9, &at(0), None)
            .is_err());
    }
}
