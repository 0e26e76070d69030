//! Scaling in place: `x *= s`.

use super::{grid, params, shader::defines, Gpu};
use crate::error::Result;

pub struct Scale;

const WG_SIZE: u32 = 256;

impl Scale {
    /// Records `x[i] *= s` for the first `n` elements.
    pub fn record(
        gpu: &Gpu,
        enc: &mut wgpu::CommandEncoder,
        x: &wgpu::Buffer,
        n: u32,
        s: f32,
    ) -> Result<()> {
        let pipeline =
            gpu.pipeline("scale.wgsl", &defines(&[("WG_SIZE", &WG_SIZE.to_string())]))?;
        let p = params(gpu, &[n, s.to_bits()]);
        let bind = gpu.bind(&pipeline, &[x, &p]);
        gpu.dispatch(enc, &pipeline, &bind, grid(n.div_ceil(WG_SIZE)));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::test_gpu;

    #[test]
    fn scales_in_place_with_one_f32_rounding() {
        let Some(gpu) = test_gpu() else { return };
        let s = 1.0 / 96f32.sqrt();
        for n in [1usize, 257, 100_000] {
            let a: Vec<f32> = (0..n).map(|i| (i as f32 * 0.731).sin() * 3.0).collect();
            let x = gpu.upload("x", bytemuck::cast_slice(&a));
            let mut enc = gpu.encoder();
            Scale::record(&gpu, &mut enc, &x, n as u32 - 1, s).unwrap();
            gpu.queue.submit([enc.finish()]);
            let got = pollster::block_on(gpu.read_f32(&x, n)).unwrap();
            let mut want: Vec<f32> = a.iter().map(|v| v * s).collect();
            want[n - 1] = a[n - 1];
            assert_eq!(got, want, "n = {n}");
        }
    }
}
