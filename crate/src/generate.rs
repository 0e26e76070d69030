//! Running a model over tokens: generation (prefill, then decode one token at a time), scoring
//! (one teacher-forced pass) and the timings both report.

use crate::constrain::Constrained;
use crate::error::Result;
use crate::gpu::Counts;
use crate::model::{Model, Output, Want};
use crate::sample::{log_prob, log_sum_exp, top_log_probs, Sampler};
use serde::Serialize;

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Timings {
    pub prefill_ms: f64,
    pub decode_ms: f64,
    pub prefill_tok_s: f64,
    pub decode_tok_s: f64,
    /// What the prefill cost on the GPU, over `prefill_batches` batches.
    pub prefill_batches: u64,
    pub prefill: Counts,
    /// What decoding cost on the GPU, over `decode_steps` steps of one token each.
    pub decode_steps: u64,
    pub decode: Counts,
    /// Of the decode and prefill time, what computing the masks of a constrained output took.
    pub mask_ms: f64,
}

impl Timings {
    fn new(prefill_ms: f64, prefill_tokens: usize, decode_ms: f64, decode_tokens: usize) -> Self {
        let rate = |n: usize, ms: f64| {
            if ms > 0.0 {
                n as f64 * 1000.0 / ms
            } else {
                0.0
            }
        };
        Timings {
            prefill_ms,
            decode_ms,
            prefill_tok_s: rate(prefill_tokens, prefill_ms),
            decode_tok_s: rate(decode_tokens, decode_ms),
            ..Timings::default()
        }
    }
}

/// Milliseconds from an arbitrary origin.
pub fn now_ms() -> f64 {
    #[cfg(not(target_arch = "wasm32"))]
    {
        use std::sync::OnceLock;
        static START: OnceLock<std::time::Instant> = OnceLock::new();
        START
            .get_or_init(std::time::Instant::now)
            .elapsed()
            .as_secs_f64()
            * 1000.0
    }
    #[cfg(target_arch = "wasm32")]
    {
        js_sys::Date::now()
    }
}

/// A generated token's log-probability under the model's own distribution (the logits before
/// temperature, penalties and truncation, as OpenAI reports them) and the likeliest ids at that
/// step, likeliest first.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenLogprob {
    pub logprob: f64,
    pub top: Vec<(u32, f64)>,
}

/// Generates up to `max_tokens` after `prompt` (the model continues from its current position),
/// calling `on_token` for each new id; stops early at a token for which `is_end` holds or for
/// which `on_token` returns false (that token is returned but not evaluated). With
/// `logprobs: Some(k)`, every step reads back its logits (greedy included) and `on_token` gets
/// the token's log-probability with the `k` likeliest alternatives. With a `constraint`, every
/// step reads back its logits too and samples only among the tokens the constraint allows
/// (log-probabilities stay the model's own).
#[allow(clippy::too_many_arguments)]
pub async fn generate(
    model: &mut Model,
    prompt: &[u32],
    max_tokens: usize,
    sampler: &mut Sampler,
    logprobs: Option<usize>,
    mut constraint: Option<&mut Constrained<'_>>,
    is_end: impl Fn(u32) -> bool,
    mut on_token: impl FnMut(u32, Option<TokenLogprob>) -> bool,
) -> Result<(Vec<u32>, Timings)> {
    let greedy = sampler.config().is_greedy() && logprobs.is_none() && constraint.is_none();
    let want = if greedy { Want::Argmax } else { Want::Logits };
    for &t in prompt {
        sampler.accept(t);
    }
    let c0 = model.counts();
    let t0 = now_ms();
    let mut out = model.eval(prompt, want).await?;
    let prefill_ms = now_ms() - t0;
    let c1 = model.counts();
    let t1 = now_ms();
    let mut tokens = Vec::new();
    let mut decode_steps = 0;
    while tokens.len() < max_tokens {
        let (next, lp) = match &mut out {
            Output::Token(t) => (*t, None),
            Output::Logits(l) => {
                // The model's own distribution, read before any mask (which leaves the sampled
                // token's logit as it was).
                let seen = logprobs.map(|k| (log_sum_exp(l), top_log_probs(l, k)));
                if let Some(c) = constraint.as_deref_mut() {
                    c.mask(l)?;
                }
                let next = sampler.sample(l);
                let lp = seen.map(|(lse, top)| TokenLogprob {
                    logprob: l[next as usize] as f64 - lse,
                    top,
                });
                (next, lp)
            }
            Output::AllLogits(_) => unreachable!("not requested"),
        };
        if let Some(c) = constraint.as_deref_mut() {
            c.accept(next)?;
        }
        sampler.accept(next);
        tokens.push(next);
        let go_on = on_token(next, lp);
        if !go_on || is_end(next) || tokens.len() == max_tokens {
            break;
        }
        out = model.eval(&[next], want).await?;
        decode_steps += 1;
    }
    let decode_ms = now_ms() - t1;
    // The first token comes out of the prefill; decode time covers the rest.
    let timings = Timings {
        prefill_batches: prompt.len().div_ceil(crate::model::BATCH as usize) as u64,
        prefill: c1.since(&c0),
        decode_steps,
        decode: model.counts().since(&c1),
        mask_ms: constraint.map_or(0.0, |c| c.mask_ms),
        ..Timings::new(
            prefill_ms,
            prompt.len(),
            decode_ms,
            tokens.len().saturating_sub(1),
        )
    };
    Ok((tokens, timings))
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Position {
    /// The model's top token after reading ids 0..=i.
    pub argmax: u32,
    /// log P(id i+1 | ids 0..=i); `None` for the last position.
    pub logprob: Option<f64>,
    /// The likeliest ids and their log-probabilities, likeliest first (`score --top-k`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub top: Vec<(u32, f64)>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Score {
    pub positions: Vec<Position>,
    /// exp(−mean logprob) over the positions that have a next id.
    pub perplexity: Option<f64>,
}

/// One teacher-forced pass over `tokens` from position 0, `batch` tokens per forward pass,
/// with the `top_k` likeliest ids at each position.
pub async fn score(model: &mut Model, tokens: &[u32], batch: u32, top_k: usize) -> Result<Score> {
    model.reset();
    let Output::AllLogits(all) = model
        .eval_in_batches(tokens, Want::AllLogits, batch)
        .await?
    else {
        unreachable!("AllLogits requested")
    };
    let n_vocab = model.config.n_vocab as usize;
    let positions: Vec<Position> = all
        .chunks(n_vocab)
        .enumerate()
        .map(|(i, row)| Position {
            argmax: crate::sample::argmax(row),
            logprob: tokens.get(i + 1).map(|&next| log_prob(row, next)),
            top: crate::sample::top_log_probs(row, top_k),
        })
        .collect();
    let lps: Vec<f64> = positions.iter().filter_map(|p| p.logprob).collect();
    let perplexity = (!lps.is_empty()).then(|| (-lps.iter().sum::<f64>() / lps.len() as f64).exp());
    Ok(Score {
        positions,
        perplexity,
    })
}
