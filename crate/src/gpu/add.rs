//! Residual add, in place: `x += y`.

use super::{params, shader::defines, Gpu};
use crate::error::Result;

pub struct Add;

const WG_SIZE: u32 = 256;

impl Add {
    /// Records `x[i] += y[i]` for the first `n` elements.
    pub fn record(
        gpu: &Gpu,
        enc: &mut wgpu::CommandEncoder,
        x: &wgpu::Buffer,
        y: &wgpu::Buffer,
        n: u32,
    ) -> Result<()> {
        let pipeline = gpu.pipeline("add.wgsl", &defines(&[("WG_SIZE", &WG_SIZE.to_string())]))?;
        let p = params(gpu, &[n]);
        let bind = gpu.bind(&pipeline, &[x, y, &p]);
        gpu.dispatch(enc, &pipeline, &bind, grid(n.div_ceil(WG_SIZE)));
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
    use crate::gpu::{nmse, test_gpu};

    #[test]
    fn adds_in_place() {
        let Some(gpu) = test_gpu() else { return };
        for n in [1usize, 255, 256, 257, 100_000] {
            let a: Vec<f32> = (0..n).map(|i| (i as f32).sin()).collect();
            let b: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).cos()).collect();
            let x = gpu.upload("x", bytemuck::cast_slice(&a));
            let y = gpu.upload("y", bytemuck::cast_slice(&b));
            let mut enc = gpu.encoder();
            Add::record(&gpu, &mut enc, &x, &y, n as u32).unwrap();
            gpu.queue.submit([enc.finish()]);
            let got = pollster::block_on(gpu.read_f32(&x, n)).unwrap();
            let want: Vec<f32> = a.iter().zip(&b).map(|(a, b)| a + b).collect();
            assert_eq!(nmse(&got, &want), 0.0, "n = {n}");
        }
    }
}
