//! The KV cache of a layer, and the step that fills it: q/k/v biases (qwen2), per-head q/k
//! norms (qwen3, gemma3), rotary position embeddings of q and k, the q scale, and k and v
//! stored as f16. The same order of operations as the GPU's shaders/kv_store.wgsl, whose
//! comments give ggml's rules; the angles are ggml-cpu's `ggml_rope_cache_init`.

use super::f32_to_f16;
use super::rmsnorm::rmsnorm_in_place;
use crate::backend::{KvCells, Rope, RopeMode};
use std::cell::RefCell;

/// K and V of `cells` positions, f16 bits [cells, n_kv, head_dim] each; position p lives in
/// cell p % cells.
pub struct CpuKv {
    pub k: RefCell<Vec<u16>>,
    pub v: RefCell<Vec<u16>>,
    pub cells: u32,
    pub n_kv: u32,
    pub head_dim: u32,
}

impl CpuKv {
    pub fn new(cells: u32, n_kv: u32, head_dim: u32) -> CpuKv {
        let n = (cells * n_kv * head_dim) as usize;
        CpuKv {
            k: RefCell::new(vec![0; n]),
            v: RefCell::new(vec![0; n]),
            cells,
            n_kv,
            head_dim,
        }
    }

    fn row(&self) -> usize {
        (self.n_kv * self.head_dim) as usize
    }
}

impl KvCells for CpuKv {
    fn cells(&self) -> u32 {
        self.cells
    }

    fn bytes(&self) -> u64 {
        4 * self.cells as u64 * self.n_kv as u64 * self.head_dim as u64
    }
}

/// (cos, sin) · attn_factor of each rotated pair at position `pos`.
fn angles(r: &Rope<'_, Vec<f32>>, pos: u32) -> Vec<(f32, f32)> {
    let theta_scale = r.base.powf(-2.0 / r.n_rot as f32);
    let mut theta = pos as f32;
    (0..r.n_rot as usize / 2)
        .map(|i| {
            let ff = r.freq_factors.map_or(1.0, |f| f[i]);
            let th = r.freq_scale * (theta / ff);
            theta *= theta_scale;
            (th.cos() * r.attn_factor, th.sin() * r.attn_factor)
        })
        .collect()
}

/// Rotates the first n_rot dims of one head.
fn rotate(head: &mut [f32], cs: &[(f32, f32)], mode: RopeMode) {
    let half = cs.len();
    for (i, &(cos, sin)) in cs.iter().enumerate() {
        let (i0, i1) = match mode {
            RopeMode::Normal => (2 * i, 2 * i + 1),
            RopeMode::Neox => (i, i + half),
        };
        let (x0, x1) = (head[i0], head[i1]);
        head[i0] = x0 * cos - x1 * sin;
        head[i1] = x0 * sin + x1 * cos;
    }
}

/// q (f32 [n, n_head, head_dim], rotated in place), k and v (f32 [n, n_kv, head_dim], k
/// modified) of tokens at positions pos0.. into the cache.
#[allow(clippy::too_many_arguments)]
pub fn rope_store(
    kv: &CpuKv,
    r: &Rope<'_, Vec<f32>>,
    q: &mut [f32],
    k: &mut [f32],
    v: &mut [f32],
    n: usize,
    n_head: usize,
    pos0: u32,
) {
    let hd = kv.head_dim as usize;
    let row = kv.row();
    let add = |x: &mut [f32], b: Option<&Vec<f32>>| {
        if let Some(b) = b {
            for (x, b) in x
                .chunks_exact_mut(b.len())
                .flat_map(|x| x.iter_mut().zip(b))
            {
                *x += b;
            }
        }
    };
    add(&mut q[..n * n_head * hd], r.biases[0]);
    add(&mut k[..n * row], r.biases[1]);
    add(&mut v[..n * row], r.biases[2]);
    let cs: Vec<Vec<(f32, f32)>> = (0..n as u32).map(|t| angles(r, pos0 + t)).collect();
    let head = |x: &mut [f32], t: usize, norm: Option<(&Vec<f32>, f32)>, scale: f32| {
        if let Some((w, eps)) = norm {
            rmsnorm_in_place(x, w, eps);
        }
        rotate(x, &cs[t], r.mode);
        if scale != 1.0 {
            x.iter_mut().for_each(|x| *x *= scale);
        }
    };
    let (qn, kn) = match r.norms {
        Some(([qn, kn], eps)) => (Some((qn, eps)), Some((kn, eps))),
        None => (None, None),
    };
    // A few thousand multiplications: less than waking the pool would cost.
    for (i, x) in q[..n * n_head * hd].chunks_exact_mut(hd).enumerate() {
        head(x, i / n_head, qn, r.q_scale);
    }
    for (i, x) in k[..n * row].chunks_exact_mut(hd).enumerate() {
        head(x, i / kv.n_kv as usize, kn, 1.0);
    }
    let (mut kc, mut vc) = (kv.k.borrow_mut(), kv.v.borrow_mut());
    for t in 0..n {
        let cell = ((pos0 as usize + t) % kv.cells as usize) * row;
        let f16s = |dst: &mut [u16], src: &[f32]| {
            for (d, &s) in dst.iter_mut().zip(src) {
                *d = f32_to_f16(s);
            }
        };
        f16s(&mut kc[cell..cell + row], &k[t * row..(t + 1) * row]);
        f16s(&mut vc[cell..cell + row], &v[t * row..(t + 1) * row]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Rope;

    /// ggml-cpu's rope (ggml_rope_cache_init + rotate_pairs) in f64, for one head.
    fn reference(x: &[f32], pos: u32, n_rot: usize, base: f32, mode: RopeMode) -> Vec<f64> {
        let mut y: Vec<f64> = x.iter().map(|&v| v as f64).collect();
        for i in 0..n_rot / 2 {
            let th = pos as f64 * (base as f64).powf(-2.0 * i as f64 / n_rot as f64);
            let (i0, i1) = match mode {
                RopeMode::Normal => (2 * i, 2 * i + 1),
                RopeMode::Neox => (i, i + n_rot / 2),
            };
            let (x0, x1) = (x[i0] as f64, x[i1] as f64);
            y[i0] = x0 * th.cos() - x1 * th.sin();
            y[i1] = x0 * th.sin() + x1 * th.cos();
        }
        y
    }

    #[test]
    fn rotates_q_and_k_and_stores_k_v_as_f16() {
        let (hd, n_head, n_kv, n) = (64usize, 4usize, 2usize, 3usize);
        for mode in [RopeMode::Normal, RopeMode::Neox] {
            let kv = CpuKv::new(8, n_kv as u32, hd as u32);
            let r = Rope::<Vec<f32>> {
                n_rot: hd as u32,
                base: 10000.0,
                freq_scale: 1.0,
                attn_factor: 1.0,
                mode,
                freq_factors: None,
                q_scale: 1.0,
                biases: [None; 3],
                norms: None,
            };
            let vals = |len: usize, s: usize| -> Vec<f32> {
                (0..len)
                    .map(|i| (((i * 31 + s) % 17) as f32 - 8.0) / 4.0)
                    .collect()
            };
            let (q0, k0, v0) = (
                vals(n * n_head * hd, 1),
                vals(n * n_kv * hd, 2),
                vals(n * n_kv * hd, 3),
            );
            let (mut q, mut k, mut v) = (q0.clone(), k0.clone(), v0.clone());
            rope_store(&kv, &r, &mut q, &mut k, &mut v, n, n_head, 5);
            for t in 0..n {
                for h in 0..n_head {
                    let at = (t * n_head + h) * hd;
                    let want = reference(&q0[at..at + hd], 5 + t as u32, hd, 10000.0, mode);
                    for i in 0..hd {
                        assert!(
                            (q[at + i] as f64 - want[i]).abs() < 1e-4,
                            "{mode:?} q t{t} h{h} {i}"
                        );
                    }
                }
                let cell = (5 + t) % 8;
                for h in 0..n_kv {
                    let at = (t * n_kv + h) * hd;
                    let want = reference(&k0[at..at + hd], 5 + t as u32, hd, 10000.0, mode);
                    let stored = &kv.k.borrow()[(cell * n_kv + h) * hd..][..hd];
                    for i in 0..hd {
                        let got = super::super::f16_to_f32(stored[i]) as f64;
                        assert!(
                            (got - want[i]).abs() < 4e-3,
                            "{mode:?} k t{t} h{h} {i}: {got} vs {}",
                            want[i]
                        );
                    }
                    let vs = &kv.v.borrow()[(cell * n_kv + h) * hd..][..hd];
                    assert!(vs
                        .iter()
                        .zip(&v0[at..at + hd])
                        .all(|(&s, &x)| super::super::f16_to_f32(s) == x));
                }
            }
        }
    }
}
