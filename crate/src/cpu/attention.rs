//! Causal attention over a layer's f16 cache (GQA, sliding window), with llama.cpp's CPU flash
//! attention numerics: batches under [`GGML_FA_TILE_Q`] queries take its `one_chunk` path (q
//! and the output accumulator rounded to f16, keys folded one at a time), larger ones its
//! tiled f32 path (a running max per tile of 64 keys). shaders/attention.wgsl is the GPU twin
//! and documents both.

use super::rope::CpuKv;
use super::{f16_to_f32, round_f16, Cpu};
use crate::backend::{Attend, GGML_FA_TILE_Q};

/// Keys per tile of the f32 path.
const TILE: usize = 64;

/// out (f32 [n, n_head, head_dim]) for queries q of positions pos0.. (already stored).
pub fn attention(
    cpu: &Cpu,
    kv: &CpuKv,
    a: Attend,
    q: &[f32],
    out: &mut [f32],
    n: usize,
    pos0: u32,
) {
    let hd = kv.head_dim as usize;
    let n_head = a.n_head as usize;
    let group = n_head / kv.n_kv as usize;
    let row = kv.n_kv as usize * hd;
    let (k, v) = (kv.k.borrow(), kv.v.borrow());
    let (k, v, cells): (&[u16], &[u16], usize) = (&k, &v, kv.cells as usize);
    let f16_acc = (n as u32) < GGML_FA_TILE_Q;
    let item_head = |item: usize, o: &mut [f32]| {
        let (t, head) = (item / n_head, item % n_head);
        let pos = pos0 as usize + t;
        let lo = if a.window > 0 {
            (pos + 1).saturating_sub(a.window as usize)
        } else {
            0
        };
        let off = head / group * hd;
        let at = |j: usize| (j % cells) * row + off;
        let h = Head {
            q: &q[item * hd..(item + 1) * hd],
            k,
            v,
            keys: lo..pos + 1,
            at,
            scale: a.scale,
        };
        #[cfg(target_arch = "x86_64")]
        if cpu.simd == super::Simd::Avx2 {
            // SAFETY: Simd::Avx2 is only detected on CPUs with AVX2.
            return unsafe { head_avx2(h, f16_acc, o) };
        }
        h.run(f16_acc, o)
    };
    // Heads per piece of work: all of them while the context is very short. A key costs a
    // head far more than its `hd` multiply-adds (f16 conversions and roundings of llama.cpp's
    // numerics), so the pool pays off from a few dozen keys on: measured on SmolLM2 at 128
    // to 192 keys, one piece left a sixth of a decode step on one thread.
    let keys = pos0 as usize + n;
    let per = if keys * n * n_head * hd < 1 << 14 {
        n * n_head
    } else {
        1
    };
    cpu.pool
        .chunks(&mut out[..n * n_head * hd], per * hd, |piece, o| {
            for (i, o) in o.chunks_exact_mut(hd).enumerate() {
                item_head(piece * per + i, o);
            }
        });
}

/// One query head over `keys` of the cache; `at(j)` is where key j's head starts in `k`/`v`.
struct Head<'a, F> {
    q: &'a [f32],
    k: &'a [u16],
    v: &'a [u16],
    keys: std::ops::Range<usize>,
    at: F,
    scale: f32,
}

impl<F: Fn(usize) -> usize> Head<'_, F> {
    /// By the path llama.cpp takes for the batch's size.
    #[inline(always)]
    fn run(self, f16_acc: bool, out: &mut [f32]) {
        let Head {
            q,
            k,
            v,
            keys,
            at,
            scale,
        } = self;
        if f16_acc {
            one_chunk(q, k, v, keys, at, scale, out)
        } else {
            tiled(q, k, v, keys, at, scale, out)
        }
    }
}

/// [`Head::run`] compiled for AVX2: twice as many f64 lanes for the exact multiply-adds and f16
/// roundings. FMA is not enabled, so nothing is contracted: the results are the baseline's,
/// bit for bit.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn head_avx2<F: Fn(usize) -> usize>(h: Head<'_, F>, f16_acc: bool, out: &mut [f32]) {
    h.run(f16_acc, out)
}

/// Σ q · k over a head in `ggml_vec_dot_f16`'s AVX2 order: four accumulators of eight lanes
/// fed by FMAs over steps of 32, folded pairwise, then the lanes added as `_mm_hadd_ps` does.
#[inline(always)]
fn score(q: &[f32], k: &[u16]) -> f32 {
    let mut acc = [[0f32; 8]; 4];
    let whole = q.len() / 32 * 32;
    for (q, k) in q[..whole].chunks_exact(32).zip(k.chunks_exact(32)) {
        for (j, acc) in acc.iter_mut().enumerate() {
            for l in 0..8 {
                acc[l] = fma(q[8 * j + l], f16_to_f32(k[8 * j + l]), acc[l]);
            }
        }
    }
    let add = |a: [f32; 8], b: [f32; 8]| -> [f32; 8] { std::array::from_fn(|l| a[l] + b[l]) };
    let v = add(add(acc[0], acc[2]), add(acc[1], acc[3]));
    let t: [f32; 4] = std::array::from_fn(|l| v[l] + v[l + 4]);
    let mut s = ((t[0] + t[1]) + (t[2] + t[3])) as f64;
    for i in whole..q.len() {
        s += (q[i] * f16_to_f32(k[i])) as f64;
    }
    s as f32
}

/// a · b + c rounded once (see cpu/matmul.rs `fma`).
#[inline(always)]
fn fma(a: f32, b: f32, c: f32) -> f32 {
    (a as f64 * b as f64 + c as f64) as f32
}

#[inline(always)]
fn one_chunk(
    q: &[f32],
    k: &[u16],
    v: &[u16],
    keys: std::ops::Range<usize>,
    at: impl Fn(usize) -> usize,
    scale: f32,
    out: &mut [f32],
) {
    let hd = q.len();
    let q16: Vec<f32> = q.iter().map(|&x| round_f16(x)).collect();
    // The f16 accumulator, held as the f32 values of its f16s.
    let mut acc = vec![0f32; hd];
    let (mut m, mut l) = (f32::NEG_INFINITY, 0f32);
    for j in keys {
        let s = score(&q16, &k[at(j)..at(j) + hd]) * scale;
        let (mut ms, mut vs) = (1f32, 1f32);
        if s > m {
            ms = if m == f32::NEG_INFINITY {
                0.0
            } else {
                (m - s).exp()
            };
            m = s;
            for a in acc.iter_mut() {
                *a = round_f16(*a * ms);
            }
        } else {
            vs = (s - m).exp();
        }
        for (a, &vv) in acc.iter_mut().zip(&v[at(j)..at(j) + hd]) {
            *a = round_f16(fma(f16_to_f32(vv), vs, *a));
        }
        l = l * ms + vs;
    }
    let inv = 1.0 / l;
    for (o, &a) in out.iter_mut().zip(&acc) {
        *o = a * inv;
    }
}

#[inline(always)]
fn tiled(
    q: &[f32],
    k: &[u16],
    v: &[u16],
    keys: std::ops::Range<usize>,
    at: impl Fn(usize) -> usize,
    scale: f32,
    out: &mut [f32],
) {
    let hd = q.len();
    let mut acc = vec![0f32; hd];
    let (mut m, mut l) = (0f32, 0f32);
    let mut scores = [0f32; TILE];
    let first = keys.start;
    for start in keys.clone().step_by(TILE) {
        let cnt = TILE.min(keys.end - start);
        for (i, s) in scores[..cnt].iter_mut().enumerate() {
            *s = score(q, &k[at(start + i)..at(start + i) + hd]) * scale;
        }
        let mut m_new = scores[..cnt].iter().copied().fold(scores[0], f32::max);
        let mut alpha = 0.0; // first tile: l and acc are still 0
        if start > first {
            m_new = m_new.max(m);
            alpha = (m - m_new).exp();
        }
        l *= alpha;
        acc.iter_mut().for_each(|a| *a *= alpha);
        for (i, &s) in scores[..cnt].iter().enumerate() {
            let p = (s - m_new).exp();
            l += p;
            for (a, &vv) in acc.iter_mut().zip(&v[at(start + i)..at(start + i) + hd]) {
                *a += p * f16_to_f32(vv);
            }
        }
        m = m_new;
    }
    let inv = 1.0 / l;
    for (o, &a) in out.iter_mut().zip(&acc) {
        *o = a * inv;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::f32_to_f16;

    /// Attention in f64 over the cache's f16 values, for query t of positions pos0.. .
    fn exact(kv: &CpuKv, a: Attend, q: &[f32], n: usize, pos0: usize) -> Vec<f64> {
        let (hd, n_head) = (kv.head_dim as usize, a.n_head as usize);
        let group = n_head / kv.n_kv as usize;
        let row = kv.n_kv as usize * hd;
        let (k, v) = (kv.k.borrow(), kv.v.borrow());
        let mut out = vec![0f64; n * n_head * hd];
        for t in 0..n {
            for h in 0..n_head {
                let p = pos0 + t;
                let lo = if a.window > 0 {
                    (p + 1).saturating_sub(a.window as usize)
                } else {
                    0
                };
                let qh = &q[(t * n_head + h) * hd..][..hd];
                let at = |j: usize| (j % kv.cells as usize) * row + h / group * hd;
                let s: Vec<f64> = (lo..=p)
                    .map(|j| {
                        (0..hd)
                            .map(|i| qh[i] as f64 * f16_to_f32(k[at(j) + i]) as f64)
                            .sum::<f64>()
                            * a.scale as f64
                    })
                    .collect();
                let m = s.iter().copied().fold(f64::MIN, f64::max);
                let w: Vec<f64> = s.iter().map(|s| (s - m).exp()).collect();
                let sum: f64 = w.iter().sum();
                for (jj, j) in (lo..=p).enumerate() {
                    for i in 0..hd {
                        out[(t * n_head + h) * hd + i] +=
                            w[jj] / sum * f16_to_f32(v[at(j) + i]) as f64;
                    }
                }
            }
        }
        out
    }

    #[test]
    fn both_paths_match_exact_attention() {
        let cpu = Cpu::new(2).unwrap();
        let (hd, n_kv, n_head) = (64u32, 2u32, 4u32);
        for (n, window) in [(3usize, 0u32), (70, 0), (5, 4), (66, 40)] {
            let pos0 = 7usize;
            let cells = 160u32;
            let kv = CpuKv::new(cells, n_kv, hd);
            let val =
                |i: usize, s: usize| (((i * 2654435761 + s) >> 7) % 1000) as f32 / 500.0 - 1.0;
            for (i, x) in kv.k.borrow_mut().iter_mut().enumerate() {
                *x = f32_to_f16(val(i, 1) * 2.0);
            }
            for (i, x) in kv.v.borrow_mut().iter_mut().enumerate() {
                *x = f32_to_f16(val(i, 2));
            }
            let q: Vec<f32> = (0..n * (n_head * hd) as usize).map(|i| val(i, 3)).collect();
            let a = Attend {
                n_head,
                scale: 0.125,
                window,
            };
            let mut out = vec![0f32; q.len()];
            attention(&cpu, &kv, a, &q, &mut out, n, pos0 as u32);
            // Every instruction set gives the same bits: the browser's build must agree
            // with the native one.
            let baseline = Cpu::with_simd(2, crate::cpu::Simd::Baseline).unwrap();
            let mut same = vec![0f32; q.len()];
            attention(&baseline, &kv, a, &q, &mut same, n, pos0 as u32);
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(
                bits(&out),
                bits(&same),
                "n {n} window {window}: {:?}",
                cpu.simd
            );
            let want = exact(&kv, a, &q, n, pos0);
            // The f16 path rounds q and the accumulator to f16.
            let tol = if n < 64 { 4e-3 } else { 1e-5 };
            for (i, (&g, &w)) in out.iter().zip(&want).enumerate() {
                assert!(
                    (g as f64 - w).abs() <= tol,
                    "n {n} window {window} [{i}]: {g} vs {w}"
                );
            }
        }
    }
}
