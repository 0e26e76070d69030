//! Residual add and bias add, in place: `x += y`, `x[t, :] += b`.

use super::{shader::defines, Buffer, Reads, Rec};
use crate::error::Result;

pub struct Add;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    m: u32,
}

const WG_SIZE: u32 = 256;

impl Add {
    /// Records `x[i] += y[i]` for the first `n` elements.
    pub fn record(rec: &mut Rec, x: &Buffer, y: &Buffer, n: u32) -> Result<()> {
        Self::record_repeated(rec, x, y, n, n)
    }

    /// Records `x[t, i] += b[i]`: x f32 [n_tokens, width], b f32 [width] (qwen2's q/k/v biases).
    pub fn record_bias(
        rec: &mut Rec,
        x: &Buffer,
        b: &Buffer,
        n_tokens: u32,
        width: u32,
    ) -> Result<()> {
        Self::record_repeated(rec, x, b, n_tokens * width, width)
    }

    /// `x[i] += y[i % m]` for i < n.
    fn record_repeated(rec: &mut Rec, x: &Buffer, y: &Buffer, n: u32, m: u32) -> Result<()> {
        let pipeline = rec.pipeline("add.wgsl", &defines(&[("WG_SIZE", &WG_SIZE.to_string())]))?;
        let p = rec.params(&Params { n, m });
        let reads = Reads::act(4 * (n + m) as u64);
        rec.dispatch(&pipeline, &[x, y, &p], grid(n.div_ceil(WG_SIZE)), reads);
        Ok(())
    }
}

/// Splits a workgroup count over x and y: WebGPU caps each dimension at 65535.
pub fn grid(groups: u32) -> (u32, u32, u32) {
    let x = groups.min(65535);
    (x, groups.div_ceil(x.max(1)), 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::{nmse, test_gpu, Rec};

    #[test]
    fn adds_in_place() {
        let Some(gpu) = test_gpu() else { return };
        for n in [1usize, 255, 256, 257, 100_000] {
            let a: Vec<f32> = (0..n).map(|i| (i as f32).sin()).collect();
            let b: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).cos()).collect();
            let x = gpu.upload("x", bytemuck::cast_slice(&a));
            let y = gpu.upload("y", bytemuck::cast_slice(&b));
            let mut rec = Rec::new(&gpu);
            Add::record(&mut rec, &x, &y, n as u32).unwrap();
            rec.submit();
            let got = pollster::block_on(gpu.read_f32(&x, n)).unwrap();
            let want: Vec<f32> = a.iter().zip(&b).map(|(a, b)| a + b).collect();
            assert_eq!(nmse(&got, &want), 0.0, "n = {n}");
        }
    }

    #[test]
    fn adds_bias_to_every_token() {
        let Some(gpu) = test_gpu() else { return };
        let (tokens, width) = (5usize, 96usize);
        let a: Vec<f32> = (0..tokens * width).map(|i| (i as f32).sin()).collect();
        let b: Vec<f32> = (0..width).map(|i| i as f32 * 0.5 - 7.0).collect();
        let x = gpu.upload("x", bytemuck::cast_slice(&a));
        let y = gpu.upload("b", bytemuck::cast_slice(&b));
        let mut rec = Rec::new(&gpu);
        Add::record_bias(&mut rec, &x, &y, tokens as u32, width as u32).unwrap();
        rec.submit();
        let got = pollster::block_on(gpu.read_f32(&x, a.len())).unwrap();
        let want: Vec<f32> = a
            .iter()
            .enumerate()
            .map(|(i, v)| v + b[i % width])
            .collect();
        assert_eq!(got, want);
    }
}
