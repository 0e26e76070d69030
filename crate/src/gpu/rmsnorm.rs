//! RMSNorm over rows: the block input norms, the final norm, per-head q/k norms (qwen3, gemma3)
//! and gemma3's post-norms.

use super::{grid, shader::defines, Buffer, QuantOut, Reads, Rec};
use crate::error::Result;

pub struct RmsNorm;

/// gemma3's post-norm of a sublayer's output o (f32 [rows, d]) with weight w, still to be added
/// to the residual stream: the next norm does it first (`RmsNorm::record_quantized`).
#[derive(Clone, Copy)]
pub struct PostNorm<'a> {
    pub o: &'a Buffer,
    pub w: &'a Buffer,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    d: u32,
    eps: f32,
    /// First row of x read (out and an in-place x start at row 0).
    x_row0: u32,
}

impl RmsNorm {
    /// `out[r, :] = x[r, :] / sqrt(mean(x[r, :]²) + eps) · w[:]` for `r < rows`; x, out:
    /// f32 [rows, d], w: f32 [d]. `x` and `out` must be distinct buffers (see `record_in_place`).
    /// Like ggml: `scale = 1/sqrt(mean + eps)`, then `(x·scale)·w`; the weight is used as stored
    /// (gemma's `1 + w` is already folded in by llama.cpp's converter).
    #[allow(clippy::too_many_arguments)]
    pub fn record(
        rec: &mut Rec,
        x: &Buffer,
        w: &Buffer,
        out: &Buffer,
        rows: u32,
        d: u32,
        eps: f32,
    ) -> Result<()> {
        Self::dispatch(rec, x, 0, w, Some(out), rows, d, eps, None, None)
    }

    /// [`record`](Self::record) of rows `x_row0..` of x, then `quant`: out quantized as
    /// quantize.wgsl does, by the same workgroups (one dispatch for both). With `residual`
    /// (o, w_post), each row of x first gets `x += norm(o) · w_post` (gemma3's post-norm and
    /// residual add), written back to x.
    #[allow(clippy::too_many_arguments)]
    pub fn record_quantized(
        rec: &mut Rec,
        x: &Buffer,
        x_row0: u32,
        w: &Buffer,
        out: &Buffer,
        rows: u32,
        d: u32,
        eps: f32,
        quant: Option<QuantOut>,
        residual: Option<PostNorm>,
    ) -> Result<()> {
        Self::dispatch(rec, x, x_row0, w, Some(out), rows, d, eps, quant, residual)
    }

    /// `x[r, :] = norm(x[r, :]) · w[:]` in place; for per-head norms `rows` = tokens × heads and
    /// `d` = head_dim.
    pub fn record_in_place(
        rec: &mut Rec,
        x: &Buffer,
        w: &Buffer,
        rows: u32,
        d: u32,
        eps: f32,
    ) -> Result<()> {
        Self::dispatch(rec, x, 0, w, None, rows, d, eps, None, None)
    }

    /// Threads per row of width d; the tree of partial sums, so the rounding, depends on it.
    /// Short rows (per-head norms: 64..256) would leave most of a 256-wide workgroup idle.
    pub(super) fn workgroup_size(d: u32) -> u32 {
        if d <= 256 {
            64
        } else {
            256
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn dispatch(
        rec: &mut Rec,
        x: &Buffer,
        x_row0: u32,
        w: &Buffer,
        out: Option<&Buffer>,
        rows: u32,
        d: u32,
        eps: f32,
        quant: Option<QuantOut>,
        residual: Option<PostNorm>,
    ) -> Result<()> {
        let wg = Self::workgroup_size(d);
        let mut defs = vec![("WG_SIZE", wg.to_string())];
        if out.is_none() {
            defs.push(("IN_PLACE", String::new()));
        }
        if let Some(q) = &quant {
            defs.push(("QUANT", String::new()));
            defs.push(("QBLOCK", format!("{}u", q.kind.block())));
        }
        // x, w, out, params, then xq and delta.
        let res_at = 4 + quant.map_or(0, |q| 1 + q.delta.is_some() as u32);
        if residual.is_some() {
            defs.push(("RESIDUAL", String::new()));
            defs.push(("RES_AT", res_at.to_string()));
            defs.push(("RES_AT_1", (res_at + 1).to_string()));
        }
        let defs: Vec<(&str, &str)> = defs.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let mut defs = defines(&defs);
        if let Some(q) = &quant {
            defs.extend(q.kind.defines());
        }
        let pipeline = rec.pipeline("rmsnorm.wgsl", &defs)?;
        let p = rec.params(&Params {
            rows,
            d,
            eps,
            x_row0,
        });
        let mut buffers = vec![x, w];
        if let Some(out) = out {
            buffers.push(out);
        }
        buffers.push(&p);
        if let Some(q) = &quant {
            buffers.push(q.xq);
            buffers.extend(q.delta);
        }
        if let Some(r) = &residual {
            buffers.push(r.o);
            buffers.push(r.w);
        }
        let extra = residual.map_or(0, |_| rows as u64 + 1);
        let reads = Reads::act(4 * (rows as u64 + 1 + extra) * d as u64);
        rec.dispatch(&pipeline, &buffers, grid(rows), reads);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::{nmse, test_gpu, test_random as random, Rec};

    /// ggml's `rms_norm` (sum of squares in double, mean, f32 scale) followed by `mul` with w.
    fn reference(x: &[f32], w: &[f32], d: usize, eps: f32) -> Vec<f32> {
        x.chunks(d)
            .flat_map(|row| {
                let sum: f64 = row.iter().map(|&v| (v * v) as f64).sum();
                let mean = (sum / d as f64) as f32;
                let scale = 1.0 / (mean + eps).sqrt();
                row.iter().zip(w).map(move |(&v, &w)| (v * scale) * w)
            })
            .collect()
    }

    #[test]
    fn rmsnorm_matches_reference() {
        let Some(gpu) = test_gpu() else { return };
        // (rows, d, eps): model widths, per-head widths, a width not a multiple of the workgroup,
        // a 1-element row and more rows than one grid dimension holds.
        for (rows, d, eps) in [
            (1u32, 576u32, 1e-5f32),
            (7, 640, 1e-6),
            (3, 1000, 1e-5),
            (40, 64, 1e-6),
            (9, 256, 1e-6),
            (5, 1, 1e-5),
            (70_000, 2, 1e-5),
        ] {
            let n = (rows * d) as usize;
            let xs = random(n, rows as u64 * 31 + d as u64, 3.0);
            let ws = random(d as usize, 7 + d as u64, 1.5);
            let want = reference(&xs, &ws, d as usize, eps);
            let x = gpu.upload("x", bytemuck::cast_slice(&xs));
            let w = gpu.upload("w", bytemuck::cast_slice(&ws));
            let out = gpu.storage("out", n as u64 * 4);
            let mut rec = Rec::new(&gpu);
            RmsNorm::record(&mut rec, &x, &w, &out, rows, d, eps).unwrap();
            rec.submit();
            let got = pollster::block_on(gpu.read_f32(&out, n)).unwrap();
            let e = nmse(&got, &want);
            eprintln!("rmsnorm rows {rows} d {d}: nmse {e:.2e}");
            assert!(e < 1e-12, "rows {rows} d {d}: nmse {e}");

            let mut rec = Rec::new(&gpu);
            RmsNorm::record_in_place(&mut rec, &x, &w, rows, d, eps).unwrap();
            rec.submit();
            let got_in_place = pollster::block_on(gpu.read_f32(&x, n)).unwrap();
            assert_eq!(got_in_place, got, "in place differs, rows {rows} d {d}");
        }
    }

    /// The post-norm and residual add done by the next norm's dispatch write x and out exactly
    /// as the norm in place on o, add.wgsl and the norm do, one dispatch instead of three.
    #[test]
    fn residual_post_norm_in_the_next_norm_is_exact() {
        let Some(gpu) = test_gpu() else { return };
        let (rows, d, eps) = (5u32, 640u32, 1e-6f32);
        let n = (rows * d) as usize;
        let (xs, os) = (random(n, 1, 3.0), random(n, 2, 50.0));
        let (wp, w) = (random(d as usize, 3, 1.5), random(d as usize, 4, 1.5));
        let up = |name: &str, v: &[f32]| gpu.upload(name, bytemuck::cast_slice(v));
        let (wp, w) = (up("w_post", &wp), up("w", &w));
        let mut results = vec![];
        for fused in [false, true] {
            let (x, o, out) = (up("x", &xs), up("o", &os), gpu.storage("out", n as u64 * 4));
            let mut rec = Rec::new(&gpu);
            let before = gpu.counts().dispatches;
            if fused {
                let post = PostNorm { o: &o, w: &wp };
                RmsNorm::record_quantized(
                    &mut rec,
                    &x,
                    0,
                    &w,
                    &out,
                    rows,
                    d,
                    eps,
                    None,
                    Some(post),
                )
                .unwrap();
            } else {
                RmsNorm::record_in_place(&mut rec, &o, &wp, rows, d, eps).unwrap();
                crate::gpu::Add::record(&mut rec, &x, &o, rows * d).unwrap();
                RmsNorm::record(&mut rec, &x, &w, &out, rows, d, eps).unwrap();
            }
            let dispatches = gpu.counts().dispatches - before;
            rec.submit();
            let read = |b: &Buffer| pollster::block_on(gpu.read_f32(b, n)).unwrap();
            let bits = |v: Vec<f32>| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            results.push((bits(read(&x)), bits(read(&out)), dispatches));
        }
        assert!(results[0].0 == results[1].0, "x after the residual add");
        assert!(results[0].1 == results[1].1, "the normed output");
        assert_ne!(results[1].0, bits_of(&xs), "the residual was added");
        assert_eq!((results[0].2, results[1].2), (3, 1));
    }

    fn bits_of(v: &[f32]) -> Vec<u32> {
        v.iter().map(|f| f.to_bits()).collect()
    }
}
