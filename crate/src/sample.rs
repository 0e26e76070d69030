//! Choosing the next token from logits: greedy, or llama.cpp's default chain (repetition
//! penalty → top-k → top-p → min-p → temperature → a seeded draw). Greedy decoding never gets
//! here with logits: the GPU's argmax gives the id and only the id is read back.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SamplerConfig {
    /// 0 means greedy.
    pub temperature: f32,
    /// 0 keeps all tokens.
    pub top_k: u32,
    /// 1 keeps all tokens.
    pub top_p: f32,
    /// 0 keeps all tokens.
    pub min_p: f32,
    /// 1 is off. Applied to the last `repeat_last_n` tokens as llama.cpp does: a positive logit
    /// is divided by it, a negative one multiplied.
    pub repeat_penalty: f32,
    pub repeat_last_n: usize,
    pub seed: u64,
}

impl Default for SamplerConfig {
    fn default() -> Self {
        SamplerConfig {
            temperature: 0.0,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            repeat_penalty: 1.0,
            repeat_last_n: 64,
            seed: 0,
        }
    }
}

impl SamplerConfig {
    pub fn is_greedy(&self) -> bool {
        self.temperature <= 0.0 && self.repeat_penalty == 1.0
    }
}

pub struct Sampler {
    cfg: SamplerConfig,
    rng: SplitMix64,
    recent: Vec<u32>,
}

impl Sampler {
    pub fn new(cfg: SamplerConfig) -> Self {
        Sampler {
            rng: SplitMix64(cfg.seed),
            cfg,
            recent: vec![],
        }
    }

    pub fn config(&self) -> &SamplerConfig {
        &self.cfg
    }

    /// Remembers a token (prompt or generated) for the repetition penalty.
    pub fn accept(&mut self, token: u32) {
        if self.cfg.repeat_last_n > 0 {
            if self.recent.len() == self.cfg.repeat_last_n {
                self.recent.remove(0);
            }
            self.recent.push(token);
        }
    }

    /// The next token from a row of logits.
    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        let mut cand: Vec<(u32, f32)> = logits
            .iter()
            .enumerate()
            .map(|(i, &l)| (i as u32, l))
            .collect();
        if self.cfg.repeat_penalty != 1.0 {
            for &t in &self.recent {
                if let Some(c) = cand.get_mut(t as usize) {
                    c.1 = if c.1 > 0.0 {
                        c.1 / self.cfg.repeat_penalty
                    } else {
                        c.1 * self.cfg.repeat_penalty
                    };
                }
            }
        }
        // Highest first; equal logits keep the lower id first, as the GPU argmax does.
        cand.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        if self.cfg.temperature <= 0.0 {
            return cand[0].0;
        }
        if self.cfg.top_k > 0 {
            cand.truncate(self.cfg.top_k as usize);
        }
        let probs = softmax(&cand);
        if self.cfg.top_p < 1.0 {
            let mut acc = 0.0;
            let keep = probs.iter().position(|p| {
                acc += p;
                acc >= self.cfg.top_p
            });
            cand.truncate(keep.map_or(cand.len(), |i| i + 1));
        }
        if self.cfg.min_p > 0.0 {
            let floor = cand[0].1 + self.cfg.min_p.ln();
            let n = cand.iter().take_while(|c| c.1 >= floor).count().max(1);
            cand.truncate(n);
        }
        for c in &mut cand {
            c.1 /= self.cfg.temperature;
        }
        let probs = softmax(&cand);
        let r = self.rng.next_f64();
        let mut acc = 0.0;
        for (c, p) in cand.iter().zip(&probs) {
            acc += *p as f64;
            if r < acc {
                return c.0;
            }
        }
        cand[cand.len() - 1].0
    }
}

fn softmax(cand: &[(u32, f32)]) -> Vec<f32> {
    let max = cand.iter().map(|c| c.1).fold(f32::NEG_INFINITY, f32::max);
    let e: Vec<f32> = cand.iter().map(|c| (c.1 - max).exp()).collect();
    let sum: f32 = e.iter().sum();
    e.into_iter().map(|x| x / sum).collect()
}

/// log-softmax of one entry: the log-probability the model gave `token`.
pub fn log_prob(logits: &[f32], token: u32) -> f64 {
    logits[token as usize] as f64 - log_sum_exp(logits)
}

/// ln Σ exp(logits), in f64.
pub fn log_sum_exp(logits: &[f32]) -> f64 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    logits
        .iter()
        .map(|&l| (l as f64 - max).exp())
        .sum::<f64>()
        .ln()
        + max
}

/// The `k` likeliest ids and their log-probabilities, likeliest first (lower id first on ties).
pub fn top_log_probs(logits: &[f32], k: usize) -> Vec<(u32, f64)> {
    let lse = log_sum_exp(logits);
    let mut ids: Vec<u32> = (0..logits.len() as u32).collect();
    let by_logit = |a: &u32, b: &u32| {
        logits[*b as usize]
            .total_cmp(&logits[*a as usize])
            .then(a.cmp(b))
    };
    let k = k.min(ids.len());
    if k > 0 && k < ids.len() {
        ids.select_nth_unstable_by(k - 1, by_logit);
    }
    ids.truncate(k);
    ids.sort_by(by_logit);
    ids.into_iter()
        .map(|id| (id, logits[id as usize] as f64 - lse))
        .collect()
}

/// Index of the largest logit, first on ties.
pub fn argmax(logits: &[f32]) -> u32 {
    logits
        .iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |best, (i, &l)| {
            if l > best.1 {
                (i, l)
            } else {
                best
            }
        })
        .0 as u32
}

/// A small deterministic generator: the same seed gives the same tokens on every platform.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logits() -> Vec<f32> {
        (0..100)
            .map(|i| ((i * 37 % 101) as f32 * 0.13).sin() * 5.0)
            .collect()
    }

    #[test]
    fn greedy_takes_the_first_maximum() {
        let mut s = Sampler::new(SamplerConfig::default());
        assert_eq!(s.sample(&[1.0, 3.0, 3.0, 2.0]), 1);
        assert_eq!(argmax(&[1.0, 3.0, 3.0, 2.0]), 1);
        assert_eq!(s.sample(&logits()), argmax(&logits()));
    }

    #[test]
    fn same_seed_same_tokens_other_seed_other_tokens() {
        let cfg = SamplerConfig {
            temperature: 1.5,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            seed: 42,
            ..Default::default()
        };
        let run = |cfg: &SamplerConfig| {
            let mut s = Sampler::new(cfg.clone());
            (0..50).map(|_| s.sample(&logits())).collect::<Vec<_>>()
        };
        assert_eq!(run(&cfg), run(&cfg));
        assert_ne!(
            run(&cfg),
            run(&SamplerConfig {
                seed: 43,
                ..cfg.clone()
            })
        );
        assert!(
            run(&cfg)
                .iter()
                .collect::<std::collections::HashSet<_>>()
                .len()
                > 5,
            "high temperature spreads"
        );
    }

    #[test]
    fn truncations_keep_only_the_head() {
        let l = logits();
        let mut order: Vec<u32> = (0..100).collect();
        order.sort_by(|&a, &b| l[b as usize].total_cmp(&l[a as usize]));
        let draw = |cfg: SamplerConfig| {
            let mut s = Sampler::new(cfg);
            (0..200)
                .map(|_| s.sample(&l))
                .collect::<std::collections::HashSet<_>>()
        };
        let base = SamplerConfig {
            temperature: 5.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            seed: 7,
            ..Default::default()
        };
        let k3 = draw(SamplerConfig {
            top_k: 3,
            ..base.clone()
        });
        assert!(k3.iter().all(|t| order[..3].contains(t)) && k3.len() == 3);
        // top_p: the smallest head whose mass reaches p (computed here from the definition).
        let p = softmax(
            &order
                .iter()
                .map(|&t| (t, l[t as usize]))
                .collect::<Vec<_>>(),
        );
        let need = p.iter().scan(0.0, |a, x| {
            *a += x;
            Some(*a)
        });
        let n = need.take_while(|&a| a < 0.5).count() + 1;
        let tp = draw(SamplerConfig {
            top_p: 0.5,
            ..base.clone()
        });
        assert!(
            tp.iter().all(|t| order[..n].contains(t)),
            "{tp:?} outside the first {n}"
        );
        // min_p: tokens with probability ≥ min_p × the top one's.
        let mp = draw(SamplerConfig {
            min_p: 0.5,
            ..base.clone()
        });
        assert!(mp
            .iter()
            .all(|&t| l[t as usize] >= l[order[0] as usize] + 0.5f32.ln()));
    }

    #[test]
    fn repetition_penalty_follows_llama_cpp() {
        let mut s = Sampler::new(SamplerConfig {
            repeat_penalty: 2.0,
            ..Default::default()
        });
        s.accept(0);
        // 4.0 / 2 = 2.0 < 3.0: token 1 wins; a negative logit gets more negative.
        assert_eq!(s.sample(&[4.0, 3.0]), 1);
        let mut s = Sampler::new(SamplerConfig {
            repeat_penalty: 2.0,
            ..Default::default()
        });
        s.accept(1);
        assert_eq!(s.sample(&[-1.0, -0.6]), 0);
    }

    #[test]
    fn log_prob_is_log_softmax() {
        let l = [1.0f32, 2.0, 3.0];
        let z: f64 = l.iter().map(|&x| (x as f64).exp()).sum();
        assert!((log_prob(&l, 2) - (3.0f64.exp() / z).ln()).abs() < 1e-12);
    }
}
