//! RMSNorm of rows, as ggml-cpu's `ggml_compute_forward_rms_norm_f32` computes it: the squares
//! summed in double precision (`ggml_float`), `scale = 1/sqrtf(mean + eps)`, then `(x·scale)·w`
//! (ggml_mul by the weight is a separate op there).

/// y = rmsnorm(x) · w for one row.
pub fn rmsnorm(x: &[f32], w: &[f32], eps: f32, y: &mut [f32]) {
    let scale = inv_rms(x, eps);
    for ((y, &x), &w) in y.iter_mut().zip(x).zip(w) {
        *y = (x * scale) * w;
    }
}

/// The same in place.
pub fn rmsnorm_in_place(x: &mut [f32], w: &[f32], eps: f32) {
    let scale = inv_rms(x, eps);
    for (x, &w) in x.iter_mut().zip(w) {
        *x = (*x * scale) * w;
    }
}

fn inv_rms(x: &[f32], eps: f32) -> f32 {
    let sum: f64 = x.iter().map(|&v| (v * v) as f64).sum();
    let mean = (sum / x.len() as f64) as f32;
    1.0 / (mean + eps).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_definition_in_f64() {
        let x: Vec<f32> = (0..576)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0)
            .collect();
        let w: Vec<f32> = (0..576).map(|i| 1.0 + (i % 5) as f32 / 10.0).collect();
        let mut y = vec![0f32; 576];
        rmsnorm(&x, &w, 1e-5, &mut y);
        let ms: f64 = x.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / 576.0;
        for i in 0..576 {
            let want = x[i] as f64 / (ms + 1e-5).sqrt() * w[i] as f64;
            assert!(
                (y[i] as f64 - want).abs() <= 1e-6 * want.abs().max(1.0),
                "{i}"
            );
        }
        let mut z = x.clone();
        rmsnorm_in_place(&mut z, &w, 1e-5);
        assert_eq!(y, z);
    }
}
