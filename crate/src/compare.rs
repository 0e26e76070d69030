//! How far a quantization's next-token distributions are from a base model's, as
//! `llama-perplexity --kl-divergence` reports it: the same chunks, the same scored positions and
//! the same statistics, so the numbers can be set beside llama.cpp's.
//!
//! The base's distributions are never stored for a whole text. Every model is loaded at once
//! and they read the text together, one 64-token batch at a time: the base's log-probabilities
//! of one batch (64 × vocabulary f32) are computed once and compared with each candidate's
//! before the next batch. Peak memory beyond the models is two such batches (12.6 MB for a
//! 49 152-token vocabulary), whatever the length of the text.

use serde::Serialize;

use crate::backend::{Output, Want};
use crate::error::{Error, Result};
use crate::inspect::ModelInfo;
use crate::memory::{self, FitOptions};
use crate::model::{Model, BATCH};
use crate::tokenizer::Tokenizer;

/// The evaluation text shipped with the crate (CC0; crate/data/README.md says where it is from).
pub const BUILTIN_TEXT: &str = include_str!("../data/eval.txt");

/// Splits `tokens` as llama-perplexity does: consecutive windows of `ctx` tokens (the tail that
/// fills no window is dropped), at most `max_chunks` of them, each starting with BOS where the
/// tokenizer adds one (the window's first token is replaced, not shifted).
pub fn chunks(
    tokens: &[u32],
    ctx: u32,
    max_chunks: Option<usize>,
    bos: Option<u32>,
) -> Result<Vec<Vec<u32>>> {
    if ctx < 4 {
        return Err(Error::InvalidRequest {
            param: "ctx".into(),
            value: ctx.to_string(),
            reason: "a window needs at least 4 tokens: its second half is what is scored".into(),
        });
    }
    let available = tokens.len() / ctx as usize;
    if available == 0 {
        return Err(Error::InvalidRequest {
            param: "text".into(),
            value: format!("{} tokens", tokens.len()),
            reason: format!("shorter than one window of ctx = {ctx} tokens"),
        });
    }
    if max_chunks == Some(0) {
        return Err(Error::InvalidRequest {
            param: "chunks".into(),
            value: "0".into(),
            reason: "compare at least one chunk".into(),
        });
    }
    let n = max_chunks.map_or(available, |m| m.min(available));
    Ok(tokens
        .chunks_exact(ctx as usize)
        .take(n)
        .map(|w| {
            let mut w = w.to_vec();
            if let Some(bos) = bos {
                w[0] = bos;
            }
            w
        })
        .collect())
}

/// The first scored position of a window: llama-perplexity scores the second half only, so that
/// every scored token has at least half a window of context.
pub fn first_scored(ctx: usize) -> usize {
    ctx / 2
}

/// A candidate must read text exactly as the base does, token for token; a different tokenizer
/// makes every per-position comparison meaningless.
pub fn check_same_vocab(base: &Tokenizer, candidate: &Tokenizer, name: &str) -> Result<()> {
    let mismatch = |reason: String| Error::VocabMismatch {
        candidate: name.to_string(),
        reason,
    };
    if base.n_vocab() != candidate.n_vocab() {
        return Err(mismatch(format!(
            "{} tokens against the base's {}",
            candidate.n_vocab(),
            base.n_vocab()
        )));
    }
    for id in 0..base.n_vocab() as u32 {
        let (a, b) = (base.token_text(id)?, candidate.token_text(id)?);
        if a != b {
            return Err(mismatch(format!(
                "token {id} is {b:?}, the base's is {a:?}"
            )));
        }
    }
    if (base.bos(), base.add_bos()) != (candidate.bos(), candidate.add_bos()) {
        return Err(mismatch("it adds a different BOS token".into()));
    }
    Ok(())
}

/// What a compared model costs: its file, and the calculator's total at its defaults (a
/// 4096-token f16 KV cache), the figure "does it fit" is judged by.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Size {
    pub file_bytes: u64,
    pub total_bytes: u64,
}

impl Size {
    pub fn of(info: &ModelInfo) -> Result<Size> {
        Ok(Size {
            file_bytes: info.file_bytes,
            total_bytes: memory::estimate(info, &FitOptions::default())?.total_bytes,
        })
    }
}

/// A value with llama.cpp's one-sigma uncertainty.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Estimate {
    pub value: f64,
    pub err: f64,
}

/// One candidate against the base over the positions compared so far; each field as
/// llama-perplexity prints it (probabilities as fractions, not percent).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Report {
    pub positions: usize,
    pub ppl: Estimate,
    pub ppl_base: Estimate,
    /// PPL(candidate) / PPL(base).
    pub ppl_ratio: Estimate,
    /// Mean ln(PPL(candidate) / PPL(base)).
    pub ln_ppl_ratio: Estimate,
    /// Correlation of the candidate's and the base's per-token log-likelihoods.
    pub ppl_correlation: f64,
    /// Mean KL(base ‖ candidate) per position, in nats.
    pub kld: Estimate,
    pub kld_median: f64,
    pub kld_p90: f64,
    pub kld_p99: f64,
    pub kld_p999: f64,
    pub kld_max: f64,
    /// How often the two models' likeliest tokens are the same ("Same top p").
    pub same_top: Estimate,
    /// Root mean square of p_candidate(next) − p_base(next) ("RMS Δp").
    pub rms_dp: Estimate,
}

/// What the base says at one position besides its log-probabilities.
#[derive(Clone, Copy)]
struct BaseAt {
    argmax: usize,
    /// −log p(next), from the logits in f64: the f32 log-probabilities would move PPL(base) by
    /// ~1e-7.
    nll: f64,
}

/// Running sums for one candidate, as llama.cpp's `kl_divergence_result`.
#[derive(Default)]
struct Sums {
    nll: f64,
    nll2: f64,
    nll_base: f64,
    nll_base2: f64,
    nll_nll_base: f64,
    kld: f64,
    kld2: f64,
    dp2: f64,
    dp4: f64,
    same_top: usize,
    klds: Vec<f32>,
}

impl Sums {
    /// One position: `base` holds the base's log-probabilities (its argmax and its f64 NLL of
    /// the next token beside them), `logits` the candidate's raw logits, `next` the token that
    /// follows.
    fn add(&mut self, base: &[f32], base_at: BaseAt, logits: &[f32], next: usize) {
        let lse = crate::sample::log_sum_exp(logits);
        let mut kld = 0.0f64;
        let mut argmax = 0;
        for (i, (&lb, &l)) in base.iter().zip(logits).enumerate() {
            let lb = lb as f64;
            kld += lb.exp() * (lb - (l as f64 - lse));
            if l > logits[argmax] {
                argmax = i;
            }
        }
        let nll = lse - logits[next] as f64;
        let nll_base = base_at.nll;
        self.nll += nll;
        self.nll2 += nll * nll;
        self.nll_base += nll_base;
        self.nll_base2 += nll_base * nll_base;
        self.nll_nll_base += nll * nll_base;
        self.kld += kld;
        self.kld2 += kld * kld;
        let dp = (-nll).exp() - (-nll_base).exp();
        self.dp2 += dp * dp;
        self.dp4 += dp * dp * dp * dp;
        self.same_top += (argmax == base_at.argmax) as usize;
        self.klds.push(kld as f32);
    }

    fn report(&self) -> Report {
        let n = self.klds.len();
        let ppl = mean_and_err(self.nll, self.nll2, n);
        let ppl_base = mean_and_err(self.nll_base, self.nll_base2, n);
        let cov = covariance(self.nll, self.nll_base, self.nll_nll_base, n);
        let ratio_err = (ppl.err * ppl.err + ppl_base.err * ppl_base.err - 2.0 * cov)
            .max(0.0)
            .sqrt();
        let ratio = (ppl.value - ppl_base.value).exp();
        let dp = mean_and_err(self.dp2, self.dp4, n);
        let rms = dp.value.sqrt();
        let same = if n == 0 {
            0.0
        } else {
            self.same_top as f64 / n as f64
        };
        let mut sorted = self.klds.clone();
        sorted.sort_by(f32::total_cmp);
        Report {
            positions: n,
            ppl: Estimate {
                value: ppl.value.exp(),
                err: ppl.value.exp() * ppl.err,
            },
            ppl_base: Estimate {
                value: ppl_base.value.exp(),
                err: ppl_base.value.exp() * ppl_base.err,
            },
            ppl_ratio: Estimate {
                value: ratio,
                err: ratio * ratio_err,
            },
            ln_ppl_ratio: Estimate {
                value: ppl.value - ppl_base.value,
                err: ratio_err,
            },
            ppl_correlation: if ppl.err > 0.0 && ppl_base.err > 0.0 {
                cov / (ppl.err * ppl_base.err)
            } else {
                0.0
            },
            kld: mean_and_err(self.kld, self.kld2, n),
            kld_median: percentile(&sorted, 0.5),
            kld_p90: percentile(&sorted, 0.9),
            kld_p99: percentile(&sorted, 0.99),
            kld_p999: percentile(&sorted, 0.999),
            kld_max: sorted.last().map_or(0.0, |&v| v as f64),
            same_top: Estimate {
                value: same,
                err: if n > 1 {
                    (same * (1.0 - same) / (n - 1) as f64).sqrt()
                } else {
                    0.0
                },
            },
            rms_dp: Estimate {
                value: rms,
                err: if rms > 0.0 { 0.5 / rms * dp.err } else { 0.0 },
            },
        }
    }
}

/// llama.cpp's `mean_and_uncertainty`: the mean and the standard error of the mean (zero for
/// ten samples or fewer).
fn mean_and_err(sum: f64, sum2: f64, n: usize) -> Estimate {
    if n == 0 {
        return Estimate::default();
    }
    let mean = sum / n as f64;
    let var = sum2 / n as f64 - mean * mean;
    let err = if var > 0.0 && n > 10 {
        (var / (n - 1) as f64).sqrt()
    } else {
        0.0
    };
    Estimate { value: mean, err }
}

/// llama.cpp's `covariance` of two per-token series, as the variance of their means.
fn covariance(sum_a: f64, sum_b: f64, sum_ab: f64, n: usize) -> f64 {
    if n < 10 {
        return 0.0;
    }
    let n = n as f64;
    (sum_ab / n - (sum_a / n) * (sum_b / n)) / (n - 1.0)
}

/// llama.cpp's percentile of sorted values: linear between the two nearest ranks.
fn percentile(sorted: &[f32], fraction: f64) -> f64 {
    let Some(&last) = sorted.last() else {
        return 0.0;
    };
    if fraction >= 1.0 {
        return last as f64;
    }
    let p = fraction * (sorted.len() - 1) as f64;
    let i = p as usize;
    let t = p - i as f64;
    (1.0 - t) * sorted[i] as f64 + t * sorted[(i + 1).min(sorted.len() - 1)] as f64
}

/// The logits of every position of `tokens`, read at the model's current position.
async fn all_logits(model: &mut Model, tokens: &[u32]) -> Result<Vec<f32>> {
    match model
        .eval_in_batches(tokens, Want::AllLogits, BATCH)
        .await?
    {
        Output::AllLogits(rows) => Ok(rows),
        _ => unreachable!("AllLogits requested"),
    }
}

/// Where a comparison stands, after each batch of scored positions.
pub struct Progress<'a> {
    /// Windows finished, of `chunks`.
    pub chunk: usize,
    pub chunks: usize,
    /// Whether this call ends a window.
    pub window_end: bool,
    /// Each candidate against the base over the positions compared so far.
    pub reports: &'a [Report],
}

/// Compares each candidate with `base` on `chunks` (from [`chunks`]), calling `on_progress`
/// after every batch of scored positions; returns one report per candidate. When `on_progress`
/// returns false, the comparison stops there and the reports cover what was compared. All
/// models must share the base's vocabulary ([`check_same_vocab`]) and hold a context of at least
/// one chunk.
pub async fn compare(
    base: &mut Model,
    candidates: &mut [&mut Model],
    chunks: &[Vec<u32>],
    mut on_progress: impl FnMut(Progress) -> bool,
) -> Result<Vec<Report>> {
    let n_vocab = base.config.n_vocab as usize;
    if let Some(i) = candidates
        .iter()
        .position(|c| c.config.n_vocab as usize != n_vocab)
    {
        return Err(Error::VocabMismatch {
            candidate: format!("candidate {}", i + 1),
            reason: format!(
                "{} tokens against the base's {n_vocab}",
                candidates[i].config.n_vocab
            ),
        });
    }
    let mut sums: Vec<Sums> = candidates.iter().map(|_| Sums::default()).collect();
    let mut base_lp = Vec::new();
    'windows: for (ci, chunk) in chunks.iter().enumerate() {
        let first = first_scored(chunk.len());
        base.reset();
        for m in candidates.iter_mut() {
            m.reset();
        }
        // Batches fall as in `score` over the whole window, so that both see the same numerics
        // (attention depends on the batch size); only batches with scored positions return
        // logits. The last position predicts nothing inside the window.
        for start in (0..chunk.len()).step_by(BATCH as usize) {
            let block = &chunk[start..(start + BATCH as usize).min(chunk.len())];
            if start + block.len() <= first {
                base.eval_in_batches(block, Want::Argmax, BATCH).await?;
                for m in candidates.iter_mut() {
                    m.eval_in_batches(block, Want::Argmax, BATCH).await?;
                }
                continue;
            }
            let scored = first.saturating_sub(start)..block.len().min(chunk.len() - 1 - start);
            let rows = all_logits(base, block).await?;
            base_lp.clear();
            let mut base_at = vec![];
            for r in scored.clone() {
                let row = &rows[r * n_vocab..(r + 1) * n_vocab];
                let lse = crate::sample::log_sum_exp(row);
                base_lp.extend(row.iter().map(|&l| (l as f64 - lse) as f32));
                base_at.push(BaseAt {
                    argmax: crate::sample::argmax(row) as usize,
                    nll: lse - row[chunk[start + r + 1] as usize] as f64,
                });
            }
            drop(rows);
            for (cand, s) in candidates.iter_mut().zip(&mut sums) {
                let rows = all_logits(cand, block).await?;
                for (i, r) in scored.clone().enumerate() {
                    let row = &rows[r * n_vocab..(r + 1) * n_vocab];
                    let base_row = &base_lp[i * n_vocab..(i + 1) * n_vocab];
                    s.add(base_row, base_at[i], row, chunk[start + r + 1] as usize);
                }
            }
            let window_end = start + block.len() == chunk.len();
            let reports: Vec<Report> = sums.iter().map(Sums::report).collect();
            let go_on = on_progress(Progress {
                chunk: ci + window_end as usize,
                chunks: chunks.len(),
                window_end,
                reports: &reports,
            });
            if !go_on {
                break 'windows;
            }
        }
    }
    Ok(sums.iter().map(Sums::report).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log_softmax(l: &[f32]) -> Vec<f32> {
        let lse = crate::sample::log_sum_exp(l);
        l.iter().map(|&x| (x as f64 - lse) as f32).collect()
    }

    fn at(logits: &[f32], argmax: usize, next: usize) -> BaseAt {
        BaseAt {
            argmax,
            nll: -crate::sample::log_prob(logits, next as u32),
        }
    }

    #[test]
    fn kl_of_a_distribution_with_itself_is_zero_and_grows_with_distance() {
        let base = [1.0f32, 2.0, 0.5, -1.0];
        let mut same = Sums::default();
        same.add(&log_softmax(&base), at(&base, 1, 2), &base, 2);
        let r = same.report();
        assert!(r.kld.value.abs() < 1e-7, "{}", r.kld.value);
        assert_eq!(r.same_top.value, 1.0);
        assert!(r.rms_dp.value.abs() < 1e-7);
        assert!((r.ppl_ratio.value - 1.0).abs() < 1e-7);

        let mut near = Sums::default();
        near.add(
            &log_softmax(&base),
            at(&base, 1, 2),
            &[1.0, 1.9, 0.6, -1.0],
            2,
        );
        let mut far = Sums::default();
        far.add(
            &log_softmax(&base),
            at(&base, 1, 2),
            &[2.5, 1.0, 0.5, -1.0],
            2,
        );
        let (near, far) = (near.report(), far.report());
        assert!(0.0 < near.kld.value && near.kld.value < far.kld.value);
        assert_eq!(near.same_top.value, 1.0);
        assert_eq!(far.same_top.value, 0.0);
    }

    #[test]
    fn kl_is_the_textbook_sum() {
        let (p, q) = ([0.0f32, 1.0, 2.0], [0.3f32, 0.7, 2.2]);
        let (lp, lq) = (log_softmax(&p), log_softmax(&q));
        let want: f64 = lp
            .iter()
            .zip(&lq)
            .map(|(&a, &b)| (a as f64).exp() * (a as f64 - b as f64))
            .sum();
        let mut s = Sums::default();
        s.add(&lp, at(&p, 2, 0), &q, 0);
        assert!((s.report().kld.value - want).abs() < 1e-7);
        // Δp of the next token, and the candidate's perplexity from its own log-softmax.
        let r = s.report();
        let dp = (lq[0] as f64).exp() - (lp[0] as f64).exp();
        assert!((r.rms_dp.value - dp.abs()).abs() < 1e-7);
        assert!((r.ppl.value - (-lq[0] as f64).exp()).abs() < 1e-5);
    }

    #[test]
    fn percentiles_interpolate_like_llama_cpp() {
        let v = [0.0f32, 1.0, 2.0, 3.0, 4.0];
        assert_eq!(percentile(&v, 0.5), 2.0);
        assert!((percentile(&v, 0.9) - 3.6).abs() < 1e-12);
        assert_eq!(percentile(&v, 1.0), 4.0);
        assert_eq!(percentile(&[], 0.5), 0.0);
    }

    #[test]
    fn chunks_are_llama_perplexitys_windows() {
        let t: Vec<u32> = (10..30).collect();
        let c = chunks(&t, 8, None, Some(1)).unwrap();
        assert_eq!(c.len(), 2, "the 4-token tail is dropped");
        assert_eq!(c[0], [1, 11, 12, 13, 14, 15, 16, 17]);
        assert_eq!(c[1][..2], [1, 19]);
        assert_eq!(chunks(&t, 8, Some(1), None).unwrap(), [t[..8].to_vec()]);
        for bad in [chunks(&t, 32, None, None), chunks(&t, 8, Some(0), None)] {
            assert!(matches!(bad, Err(Error::InvalidRequest { .. })), "{bad:?}");
        }
    }
}
