//! Gated activations of the feed-forward block, in place on the gate: `gate = act(gate) · up`.
//! SwiGLU (llama, qwen) and GeGLU with the tanh GELU (gemma).

use super::{grid, shader::defines, Buffer, Reads, Rec};
use crate::error::Result;

pub use crate::backend::Activation;

pub struct GatedAct;

const WG_SIZE: u32 = 256;

impl Activation {
    /// Its define in act_fn.wgsl.
    pub(super) fn define(self) -> &'static str {
        match self {
            Activation::Silu => "ACT_SILU",
            Activation::GeluTanh => "ACT_GELU_TANH",
        }
    }
}

impl GatedAct {
    /// Records `gate[i] = act(gate[i]) · up[i]` for `i < n`.
    pub fn record(
        rec: &mut Rec,
        gate: &Buffer,
        up: &Buffer,
        n: u32,
        act: Activation,
    ) -> Result<()> {
        Self::dispatch(rec, gate, up, n, act, false)
    }

    /// Records `out[i] = act(gu[2i]) · gu[2i + 1]` for `i < n`: the products of a matrix whose
    /// rows alternate gate and up.
    pub fn record_interleaved(
        rec: &mut Rec,
        gu: &Buffer,
        out: &Buffer,
        n: u32,
        act: Activation,
    ) -> Result<()> {
        Self::dispatch(rec, gu, out, n, act, true)
    }

    fn dispatch(
        rec: &mut Rec,
        a: &Buffer,
        b: &Buffer,
        n: u32,
        act: Activation,
        interleaved: bool,
    ) -> Result<()> {
        let wg = WG_SIZE.to_string();
        let mut defs = vec![("WG_SIZE", wg.as_str()), (act.define(), "")];
        if interleaved {
            defs.push(("INTERLEAVED", ""));
        }
        let pipeline = rec.pipeline("act.wgsl", &defines(&defs))?;
        let p = rec.params(&n);
        let reads = Reads::act(8 * n as u64);
        rec.dispatch(&pipeline, &[a, b, &p], grid(n.div_ceil(WG_SIZE)), reads);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::{nmse, test_gpu, test_random as random, Gpu, Rec};

    /// ggml's CPU functions, in the same operation order.
    fn reference(x: f32, act: Activation) -> f32 {
        match act {
            Activation::Silu => x / (1.0 + (-x).exp()),
            Activation::GeluTanh if x <= -10.0 => 0.0,
            Activation::GeluTanh if x >= 10.0 => x,
            Activation::GeluTanh => {
                let h = |v: f32| half::f16::from_f32(v).to_f32();
                let x = h(x);
                let sqrt_2_over_pi = (2.0 / std::f64::consts::PI).sqrt() as f32;
                h(0.5 * x * (1.0 + (sqrt_2_over_pi * x * (1.0 + 0.044715 * x * x)).tanh()))
            }
        }
    }

    fn run(gpu: &Gpu, g: &[f32], u: &[f32], act: Activation) -> Vec<f32> {
        let gate = gpu.upload("gate", bytemuck::cast_slice(g));
        let up = gpu.upload("up", bytemuck::cast_slice(u));
        let mut rec = Rec::new(gpu);
        GatedAct::record(&mut rec, &gate, &up, g.len() as u32, act).unwrap();
        rec.submit();
        pollster::block_on(gpu.read_f32(&gate, g.len())).unwrap()
    }

    #[test]
    fn gated_activations_match_ggml_formulas() {
        let Some(gpu) = test_gpu() else { return };
        for act in [Activation::Silu, Activation::GeluTanh] {
            for (n, scale) in [(1usize, 3.0), (255, 3.0), (257, 8.0), (70_000, 12.0)] {
                let g = random(n, 1 + n as u64, scale);
                let u = random(n, 2 + n as u64, 2.0);
                let got = run(&gpu, &g, &u, act);
                let want: Vec<f32> = g
                    .iter()
                    .zip(&u)
                    .map(|(&x, &u)| reference(x, act) * u)
                    .collect();
                let e = nmse(&got, &want);
                eprintln!("{act:?} n = {n} scale = {scale}: nmse {e:.2e}");
                // GELU's f16 result can land one f16 step away where the GPU's tanh differs
                // from the C library's in the last f32 bits; a lost f16 rounding would show
                // as ~1e-8.
                assert!(e < 1e-10, "{act:?} n = {n}: nmse {e}");
            }
        }
    }

    /// Large |x|: no NaN from exp/tanh overflow, and the limits are right (act(x) → x for large
    /// positive x, → 0 for large negative x).
    #[test]
    fn large_inputs_stay_finite() {
        let Some(gpu) = test_gpu() else { return };
        let g = [
            -1e30f32, -1000.0, -100.0, -89.0, -20.0, 0.0, 20.0, 89.0, 100.0, 1000.0, 1e30,
        ];
        let u = [1.0f32; 11];
        for act in [Activation::Silu, Activation::GeluTanh] {
            let got = run(&gpu, &g, &u, act);
            for (&x, &y) in g.iter().zip(&got) {
                assert!(y.is_finite(), "{act:?}({x}) = {y}");
                if x >= 20.0 {
                    assert_eq!(y, x, "{act:?}({x})");
                } else if x <= -20.0 {
                    assert!(y.abs() < 1e-6, "{act:?}({x}) = {y}");
                }
            }
        }
    }
}
