//! Greedy sampling on the GPU: only the token id is read back, not the logits.

use super::{shader::defines, Buffer, Reads, Rec};
use crate::error::{Error, Result};

pub struct Argmax;

const WG_SIZE: u32 = 256;

impl Argmax {
    /// `out[0]` (u32) = the index of the max of `x[0..n]`, the first one on ties as llama.cpp's
    /// greedy sampler; NaNs are skipped (all NaN gives 0). One workgroup: a 262K vocabulary is
    /// 1 MiB of logits, a few µs of bandwidth, and it avoids a second pass.
    pub fn record(rec: &mut Rec, x: &Buffer, n: u32, out: &Buffer) -> Result<()> {
        if n == 0 {
            return Err(Error::Gpu("argmax of 0 values".into()));
        }
        let pipeline = rec.pipeline(
            "argmax.wgsl",
            &defines(&[("WG_SIZE", &WG_SIZE.to_string())]),
        )?;
        let p = rec.params(&n);
        rec.dispatch(
            &pipeline,
            &[x, out, &p],
            (1, 1, 1),
            Reads::act(4 * n as u64),
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::{test_gpu, Gpu, Rec};

    /// llama.cpp's greedy choice: the first index whose value is strictly greater than all before.
    fn reference(x: &[f32]) -> u32 {
        let mut best = None;
        for (i, &v) in x.iter().enumerate() {
            if !v.is_nan() && best.is_none_or(|(_, b)| v > b) {
                best = Some((i, v));
            }
        }
        best.map_or(0, |(i, _)| i as u32)
    }

    fn run(gpu: &Gpu, xs: &[f32]) -> u32 {
        let x = gpu.upload("x", bytemuck::cast_slice(xs));
        let out = gpu.storage("out", 4);
        let mut rec = Rec::new(gpu);
        Argmax::record(&mut rec, &x, xs.len() as u32, &out).unwrap();
        rec.submit();
        let b = pollster::block_on(gpu.read(&out, 4)).unwrap();
        u32::from_le_bytes(b[..4].try_into().unwrap())
    }

    #[test]
    fn argmax_first_on_ties() {
        let Some(gpu) = test_gpu() else { return };
        let mut cases: Vec<Vec<f32>> = vec![
            vec![3.0],
            vec![f32::NEG_INFINITY, f32::NEG_INFINITY],
            vec![1.0, 5.0, 5.0, 2.0],
            vec![f32::NAN, -1.0, f32::NAN, -0.5],
            vec![f32::NAN; 3],
            vec![-3.0, -1.0, f32::INFINITY, 7.0],
        ];
        // Ties across threads and across the strided slices: maxima at 700, 300 (earlier, but
        // scanned by a different thread) and 1500, in a length not a multiple of 256.
        let mut v: Vec<f32> = (0..1001).map(|i| ((i * 37) % 101) as f32 * 0.01).collect();
        v[700] = 9.0;
        v[300] = 9.0;
        v[1000] = 9.0;
        cases.push(v);
        // A gemma3-sized vocabulary with its maximum late, then the same value early too.
        let mut big: Vec<f32> = (0..262_144u32)
            .map(|i| ((i.wrapping_mul(2_654_435_761)) >> 8) as f32 / 1.6e7)
            .collect();
        big[262_000] = 2.0;
        cases.push(big.clone());
        big[5] = 2.0;
        cases.push(big);
        // Everything equal: index 0; then a long run of equal values after a lower start.
        cases.push(vec![0.25; 777]);
        let mut run_of_ties = vec![1.0f32; 513];
        run_of_ties[0] = 0.0;
        cases.push(run_of_ties);
        for xs in &cases {
            let want = reference(xs);
            let got = run(&gpu, xs);
            eprintln!("argmax n = {}: {got}", xs.len());
            assert_eq!(got, want, "n = {}", xs.len());
        }
    }
}
