//! Rotary position embedding (RoPE): how a layer rotates q and k. The rotation runs inside the
//! KV store (`KvCache::record_store`, shaders/kv_store.wgsl), one dispatch for q, k and v.

pub use crate::backend::RopeMode;

use super::Buffer;

/// How a layer rotates its q and k.
#[derive(Clone, Copy)]
pub struct RopeSpec<'a> {
    /// Rotated dimensions per head (even, ≤ head_dim); the rest stay.
    pub n_rot: u32,
    pub base: f32,
    pub freq_scale: f32,
    /// Multiplies cos and sin (ggml's `mscale`; phi3 LongRoPE's `rope.scaling.attn_factor`).
    pub attn_factor: f32,
    pub mode: RopeMode,
    /// f32 [n_rot / 2] divisors of the frequencies (llama3 `rope_freqs`, phi3 rope factors).
    pub freq_factors: Option<&'a Buffer>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::{nmse, test_gpu, test_random as random, KvCache, Pos, Rec, RopeQ};
    use half::f16;

    struct Case {
        n_tokens: usize,
        n_heads: usize,
        head_dim: usize,
        n_rot: usize,
        pos0: usize,
        base: f32,
        freq_scale: f32,
        mode: RopeMode,
        factors: Option<Vec<f32>>,
        attn_factor: f32,
    }

    /// ggml-cpu's rope (ggml_rope_cache_init + rotate_pairs), written out plainly.
    fn reference(c: &Case, x: &[f32]) -> Vec<f32> {
        let mut y = x.to_vec();
        let theta_scale = c.base.powf(-2.0 / c.n_rot as f32);
        for t in 0..c.n_tokens {
            // The cache of (cos, sin) per pair for this token's position.
            let mut theta = (c.pos0 + t) as f32;
            let cache: Vec<(f32, f32)> = (0..c.n_rot / 2)
                .map(|i| {
                    let ff = c.factors.as_ref().map_or(1.0, |f| f[i]);
                    let th = c.freq_scale * (theta / ff);
                    theta *= theta_scale;
                    (th.cos() * c.attn_factor, th.sin() * c.attn_factor)
                })
                .collect();
            for h in 0..c.n_heads {
                let row = &mut y[(t * c.n_heads + h) * c.head_dim..][..c.head_dim];
                for (i, &(cos, sin)) in cache.iter().enumerate() {
                    let (i0, i1) = match c.mode {
                        RopeMode::Normal => (2 * i, 2 * i + 1),
                        RopeMode::Neox => (i, i + c.n_rot / 2),
                    };
                    let (x0, x1) = (row[i0], row[i1]);
                    row[i0] = x0 * cos - x1 * sin;
                    row[i1] = x0 * sin + x1 * cos;
                }
            }
        }
        y
    }

    #[test]
    fn rope_matches_ggml() {
        let Some(gpu) = test_gpu() else { return };
        let llama3_factors: Vec<f32> = (0..32).map(|i| 1.0 + (i as f32) * 0.25).collect();
        use RopeMode::{Neox, Normal};
        let llama3 = Some(llama3_factors.clone());
        // (tokens, heads, head_dim, n_rot, pos0, base, freq_scale, mode, factors)
        let cases = [
            // SmolLM2-like decode step: normal mode, 1 token deep into the context.
            (1, 9, 64, 64, 1000, 10000.0, 1.0, Normal, None),
            // Prefill of many tokens from 0.
            (37, 3, 64, 64, 0, 100000.0, 1.0, Normal, None),
            // gemma3-like: neox, head_dim 256, global base 1e6 with a linear scale.
            (5, 4, 256, 256, 4090, 1_000_000.0, 0.125, Neox, None),
            // Partial rotation (phi-like): n_rot < head_dim, both modes.
            (6, 2, 96, 32, 17, 10000.0, 1.0, Neox, None),
            (6, 2, 96, 32, 17, 10000.0, 1.0, Normal, None),
            // llama3 rope factors.
            (4, 8, 64, 64, 8000, 500000.0, 1.0, Normal, llama3.clone()),
            // phi3 LongRoPE: partial NEOX with factors and an attention factor.
            (
                3,
                6,
                64,
                48,
                40,
                10000.0,
                1.0,
                Neox,
                Some(llama3_factors[..24].to_vec()),
            ),
            // Long context: angles near 1.3e5 rad.
            (2, 2, 128, 128, 131_000, 10000.0, 1.0, Neox, None),
        ]
        .map(
            |(n_tokens, n_heads, head_dim, n_rot, pos0, base, freq_scale, mode, factors)| Case {
                n_tokens,
                n_heads,
                head_dim,
                n_rot,
                pos0,
                base,
                freq_scale,
                mode,
                // phi3's factor for a 32× longer context: sqrt(1 + ln 32 / ln 4096).
                attn_factor: if n_rot == 48 { 1.190_238_1 } else { 1.0 },
                factors,
            },
        );
        for c in &cases {
            // q has n_heads heads; k and v one head fewer where there are several (GQA).
            let n_kv = c.n_heads.div_ceil(2);
            let n = c.n_tokens * c.n_heads * c.head_dim;
            let n_k = c.n_tokens * n_kv * c.head_dim;
            let seed = (c.pos0 + c.head_dim) as u64;
            let (qs, ks, vs) = (
                random(n, seed, 2.0),
                random(n_k, seed + 1, 2.0),
                random(n_k, seed + 2, 2.0),
            );
            let kv = KvCache::new(
                &gpu,
                "kv",
                (c.pos0 + c.n_tokens) as u32,
                n_kv as u32,
                c.head_dim as u32,
            );
            let ff = c
                .factors
                .as_ref()
                .map(|f| gpu.upload("ff", bytemuck::cast_slice(f)));
            let spec = RopeSpec {
                n_rot: c.n_rot as u32,
                base: c.base,
                freq_scale: c.freq_scale,
                attn_factor: c.attn_factor,
                mode: c.mode,
                freq_factors: ff.as_ref(),
            };
            // Q rotated, and rotated then scaled by 1/√96 (gemma3, phi3): one more rounding.
            let scale = 1.0 / 96f32.sqrt();
            let mut got = vec![];
            for q_scale in [1.0, scale] {
                let (q, k, v) = (
                    gpu.upload("q", bytemuck::cast_slice(&qs)),
                    gpu.upload("k", bytemuck::cast_slice(&ks)),
                    gpu.upload("v", bytemuck::cast_slice(&vs)),
                );
                let rope = RopeQ {
                    q: &q,
                    n_head: c.n_heads as u32,
                    q_scale,
                    spec: &spec,
                    norms: None,
                    biases: None,
                };
                let mut rec = Rec::new(&gpu);
                let pos = Pos::new(&gpu, c.pos0 as u32);
                kv.record_store(&mut rec, &k, &v, c.n_tokens as u32, &pos, Some(rope))
                    .unwrap();
                rec.submit();
                got.push(pollster::block_on(gpu.read_f32(&q, n)).unwrap());
            }
            let scaled: Vec<u32> = got[0].iter().map(|v| (v * scale).to_bits()).collect();
            assert!(
                got[1].iter().map(|v| v.to_bits()).eq(scaled),
                "q_scale after the rotation"
            );
            let got = &got[0];
            let want = reference(c, &qs);
            let e = nmse(got, &want);
            let max = got
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f32::max);
            eprintln!(
                "rope {:?} tokens {} heads {} head_dim {} n_rot {} pos0 {}: nmse {e:.2e}, max abs diff {max:.1e}",
                c.mode, c.n_tokens, c.n_heads, c.head_dim, c.n_rot, c.pos0
            );
            assert!(e < 1e-12, "nmse {e}");
            // Dims past n_rot are untouched, bit for bit.
            for row in 0..c.n_tokens * c.n_heads {
                let r = row * c.head_dim;
                assert_eq!(
                    got[r + c.n_rot..r + c.head_dim],
                    qs[r + c.n_rot..r + c.head_dim]
                );
            }
            // The cache holds k rotated the same way and v, rounded to f16, from cell pos0.
            let cells = |b: &Buffer| {
                let bytes = pollster::block_on(
                    gpu.read(b, (kv.cells as usize * n_kv * c.head_dim * 2) as u64),
                )
                .unwrap();
                bytemuck::cast_slice::<u8, u16>(&bytes)[c.pos0 * n_kv * c.head_dim..][..n_k]
                    .iter()
                    .map(|&h| f16::from_bits(h).to_f32())
                    .collect::<Vec<f32>>()
            };
            let k_want: Vec<f32> = reference(
                &Case {
                    n_heads: n_kv,
                    factors: c.factors.clone(),
                    ..*c
                },
                &ks,
            )
            .iter()
            .map(|&x| f16::from_f32(x).to_f32())
            .collect();
            let ek = nmse(&cells(&kv.k), &k_want);
            assert!(ek < 1e-7, "k in the cache: nmse {ek}");
            let v_want: Vec<f32> = vs.iter().map(|&x| f16::from_f32(x).to_f32()).collect();
            assert_eq!(cells(&kv.v), v_want, "v in the cache");
        }
    }

    /// qwen2's biases and qwen3/gemma3's q/k norms inside the store's dispatch give, bit for
    /// bit, what add.wgsl and rmsnorm.wgsl in place followed by the store give.
    #[test]
    fn biases_and_qk_norms_in_the_store_are_exact() {
        let Some(gpu) = test_gpu() else { return };
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        // (tokens, q heads, kv heads, head_dim, n_rot, mode): qwen-like, gemma-like, phi-like.
        for (n, n_head, n_kv, hd, n_rot, mode) in [
            (3u32, 4u32, 2u32, 64u32, 64u32, RopeMode::Neox),
            (2, 4, 1, 256, 256, RopeMode::Neox),
            (5, 2, 2, 96, 32, RopeMode::Normal),
        ] {
            let (q_len, kv_len) = ((n * n_head * hd) as usize, (n * n_kv * hd) as usize);
            let seed = hd as u64;
            let data = [
                random(q_len, seed, 2.0),
                random(kv_len, seed + 1, 2.0),
                random(kv_len, seed + 2, 2.0),
            ];
            let up = |name: &str, v: &[f32]| gpu.upload(name, bytemuck::cast_slice(v));
            let (bq, bk, bv) = (
                up("bq", &random((n_head * hd) as usize, seed + 3, 1.0)),
                up("bk", &random((n_kv * hd) as usize, seed + 4, 1.0)),
                up("bv", &random((n_kv * hd) as usize, seed + 5, 1.0)),
            );
            let (qn, kn) = (
                up("qn", &random(hd as usize, seed + 6, 1.5)),
                up("kn", &random(hd as usize, seed + 7, 1.5)),
            );
            let spec = RopeSpec {
                n_rot,
                base: 1e6,
                freq_scale: 1.0,
                attn_factor: 1.0,
                mode,
                freq_factors: None,
            };
            let eps = 1e-6;
            let mut outs = vec![];
            for fused in [false, true] {
                let kv = KvCache::new(&gpu, "kv", 16, n_kv, hd);
                let (q, k, v) = (up("q", &data[0]), up("k", &data[1]), up("v", &data[2]));
                let mut rec = Rec::new(&gpu);
                if !fused {
                    crate::gpu::Add::record_bias(&mut rec, &q, &bq, n, n_head * hd).unwrap();
                    crate::gpu::Add::record_bias(&mut rec, &k, &bk, n, n_kv * hd).unwrap();
                    crate::gpu::Add::record_bias(&mut rec, &v, &bv, n, n_kv * hd).unwrap();
                    crate::gpu::RmsNorm::record_in_place(&mut rec, &q, &qn, n * n_head, hd, eps)
                        .unwrap();
                    crate::gpu::RmsNorm::record_in_place(&mut rec, &k, &kn, n * n_kv, hd, eps)
                        .unwrap();
                }
                let rope = RopeQ {
                    q: &q,
                    n_head,
                    q_scale: 0.125,
                    spec: &spec,
                    norms: fused.then_some(([&qn, &kn], eps)),
                    biases: fused.then_some([&bq, &bk, &bv]),
                };
                let pos = Pos::new(&gpu, 7);
                kv.record_store(&mut rec, &k, &v, n, &pos, Some(rope))
                    .unwrap();
                rec.submit();
                let read =
                    |b: &Buffer, len: usize| pollster::block_on(gpu.read(b, len as u64)).unwrap();
                outs.push((
                    read(&q, q_len * 4),
                    read(&kv.k, kv.k.size() as usize),
                    read(&kv.v, kv.v.size() as usize),
                ));
            }
            let what = format!("head_dim {hd} n_rot {n_rot} {mode:?}");
            assert!(outs[0].0 == outs[1].0, "{what}: q");
            assert!(outs[0].1 == outs[1].1, "{what}: k cache");
            assert!(outs[0].2 == outs[1].2, "{what}: v cache");
            let q: &[f32] = bytemuck::cast_slice(&outs[1].0);
            assert_ne!(bits(q), bits(&data[0]), "{what}: q changed");
        }
    }

    #[test]
    fn rejects_bad_n_rot() {
        let Some(gpu) = test_gpu() else { return };
        let x = gpu.storage("x", 256);
        let kv = KvCache::new(&gpu, "kv", 1, 1, 64);
        let mut rec = Rec::new(&gpu);
        for n_rot in [0, 3, 66] {
            let spec = RopeSpec {
                n_rot,
                base: 1e4,
                freq_scale: 1.0,
                attn_factor: 1.0,
                mode: RopeMode::Normal,
                freq_factors: None,
            };
            let rope = RopeQ {
                q: &x,
                n_head: 1,
                q_scale: 1.0,
                spec: &spec,
                norms: None,
                biases: None,
            };
            assert!(kv
                .record_store(&mut rec, &x, &x, 1, &Pos::new(&gpu, 0), Some(rope))
                .is_err());
        }
    }
}
