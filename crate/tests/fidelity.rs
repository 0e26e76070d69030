//! The whole engine against llama.cpp, on the golden prompts of tests/golden/*.json (made by
//! tests/oracle/make_model_goldens.mjs from llama.cpp's greedy decoding): the real models
//! (generate-*.json) and the tiny random models of other architectures (tiny-*.json):
//! - every prompt's tokens (chat prompts through the engine's template) equal llama.cpp's;
//! - on the checked cases, teacher-forced over llama.cpp's greedy continuation, our top token
//!   agrees with its (rates and near-tie rules in [`Tolerances`]), and our logprobs of its best
//!   first tokens are close;
//! - greedy generation through the engine gives its first 16 tokens exactly, or up to a step
//!   where llama.cpp's own top two are within a near-tie;
//! - for the real models, the mean KL divergence of our teacher-forced next-token distributions
//!   from llama.cpp's (tests/golden/topk-*.json) stays under a pinned bound ([`KlPin`]).
//!
//! Every check runs on both engines with the same tolerances: the GPU wgpu finds (Mesa
//! llvmpipe in CI) and the CPU engine (tests named `…_on_cpu`). `QUANTWEB_FIDELITY_ALL=1`
//! checks every golden case instead of two per model (slow on llvmpipe: for measuring, not for
//! CI).

use quantweb::chat::ChatMessage;
use quantweb::cpu::Cpu;
use quantweb::engine::{CompleteOptions, Engine};
use quantweb::gguf::GgufModel;
use quantweb::model::{Model, Output, Want};
use quantweb::sample::{argmax, log_prob, log_sum_exp};
use quantweb::source::open_args;
use serde::Deserialize;

mod common;

#[derive(Deserialize)]
struct Golden {
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    name: String,
    chat: bool,
    prompt: String,
    messages: Option<Vec<Message>>,
    prompt_tokens: Vec<u32>,
    tokens: Vec<u32>,
    first_top5: Vec<Top>,
    margins: Vec<f64>,
}

#[derive(Deserialize)]
struct Top {
    id: u32,
    logprob: f64,
}

#[derive(Deserialize)]
struct Message {
    role: String,
    content: String,
}

/// llama.cpp's top-K next-token distributions teacher-forced over the continuations of a
/// generate-*.json golden (tests/golden/topk-*.json, `make_model_goldens.mjs --topk`).
#[derive(Deserialize)]
struct TopkGolden {
    cases: Vec<TopkCase>,
}

#[derive(Deserialize)]
struct TopkCase {
    name: String,
    /// `positions[j]` predicts the golden's `tokens[j]`.
    positions: Vec<TopkPosition>,
}

#[derive(Deserialize)]
struct TopkPosition {
    /// llama.cpp's likeliest ids, likeliest first, and their ln softmax.
    ids: Vec<u32>,
    logprobs: Vec<f64>,
    /// ln of llama.cpp's probability mass outside `ids`; `None` when it underflowed to 0.
    rest: Option<f64>,
}

/// Which engine a check runs on.
#[derive(Clone, Copy)]
enum On {
    Gpu,
    Cpu,
}

/// The model loaded on `on` and its golden file, or `None` (skip) when the model or a GPU is
/// missing and the run does not require them.
fn setup(files: &[&str], golden: &str, on: On) -> Option<(GgufModel, Model, Golden)> {
    let paths = common::model_paths(files)?;
    let gguf = pollster::block_on(GgufModel::open(open_args(&paths).unwrap())).unwrap();
    let model = match on {
        On::Gpu => pollster::block_on(Model::load(common::gpu()?, &gguf, 512)),
        On::Cpu => pollster::block_on(Model::load(Cpu::new(0).unwrap(), &gguf, 512)),
    }
    .unwrap();
    Some((gguf, model, read_golden(golden)))
}

/// What counts as agreeing with llama.cpp for one family of goldens.
struct Tolerances {
    /// Our logprob of llama.cpp's likeliest first token may differ from its by less than this.
    top1: f64,
    /// The same for its next four candidates; `None`: not compared.
    top5: Option<f64>,
    /// Greedy tokens must equal llama.cpp's up to the first step where its own top two are
    /// closer than this (a near-tie that another correct engine may resolve the other way).
    near_tie: f64,
    /// Teacher-forced top-1 agreement over all positions must reach this.
    min_agreement: f64,
    /// Teacher-forced, every position where llama.cpp's margin is at least `near_tie` must agree.
    agree_beyond_near_ties: bool,
    /// Teacher-force over at most this many of llama.cpp's generated tokens.
    teacher_forced: usize,
}

/// The real models. Measured on the checked cases: logprobs within 0.116 / 0.178 (SmolLM2),
/// 0.050 / 0.160 (gemma3), where a wrong RoPE, norm or mask moves them by units; greedy flips
/// happened at llama.cpp margins 0.008, 0.013 and 0.063. ARCHITECTURE.md ("Matching llama.cpp")
/// explains why exactness stops at ulp-level order differences.
const REAL: Tolerances = Tolerances {
    top1: 0.15,
    top5: Some(0.25),
    near_tie: 0.1,
    min_agreement: 0.98,
    agree_beyond_near_ties: false,
    teacher_forced: 64,
};

/// The real models requantized by `quantweb quantize` (tests/golden/quant-*.json, one raw
/// prompt each, files made by `cargo xtask fetch-models --all`), over the first 32 tokens of
/// llama.cpp's continuation. Requantized twice, they are more sensitive than the originals:
/// measured teacher-forced agreement 93.8–100 % (misses where llama.cpp's margin is ≤ 0.23),
/// greedy partings at margins 0.13–0.23, logprob differences up to 0.18 / 0.48. That is
/// llama.cpp's own spread on these files: their Q4_0/IQ4_NL fallbacks are repacked on AVX2, and
/// llama.cpp through its plain kernels instead parts from its goldens at the same positions and
/// moves logprobs by up to 0.24 (tests/oracle/repack_spread.py; ARCHITECTURE.md, "llama.cpp
/// against itself"). SmolLM2 in Q2_K is left out: llama.cpp itself only loops on it ("by r,
/// by r"), with margins near 0.1 at every step.
const REQUANTIZED: Tolerances = Tolerances {
    top1: 0.25,
    top5: Some(0.6),
    near_tie: 0.25,
    min_agreement: 0.9,
    agree_beyond_near_ties: false,
    teacher_forced: 32,
};

/// The tiny random models: their logits have a standard deviation of 64 (tests/tiny/README.md),
/// so every relative error is 64× larger in logits than in a real model. An exact f64
/// forward pass of them disagrees with llama.cpp at margins up to 6.3 within 32 tokens and
/// moves low-ranked logprobs by units; our engine, which rounds as llama.cpp does, disagreed
/// only below a margin of 2.1 (measured: 0.11–2.04, the largest in the requantized tiny Llama
/// 3). So over 32 tokens every position where llama.cpp is surer than 2.5 must agree.
const TINY: Tolerances = Tolerances {
    top1: 0.15,
    top5: None,
    near_tie: 2.5,
    min_agreement: 0.85,
    agree_beyond_near_ties: true,
    teacher_forced: 32,
};

const GREEDY_TOKENS: usize = 16;
/// The cases checked in CI for the real models: one raw and one chat-templated prompt each.
const CHECKED: [&str; 2] = ["raw_0", "chat_4"];
/// Tokens per forward pass when teacher-forcing: under 64, so attention computes as in
/// llama.cpp's decode steps, which produced the goldens.
const SCORE_BATCH: u32 = 32;

/// The ceiling on the mean KL(llama.cpp ‖ quantweb) of one model on one engine, over the
/// teacher-forced positions of the cases checked.
struct KlPin {
    /// The top-K golden (tests/golden/topk-*.json) of the generate-*.json being checked.
    topk: &'static str,
    max_mean_kl: f64,
}

/// KL(P ‖ Q) at one position, P being llama.cpp's next-token distribution and Q ours, restricted
/// to P's K likeliest ids T plus one bucket for every other id:
///
///   Σ_{t∈T} p_t ln(p_t / q_t)  +  p_rest ln(p_rest / q_rest),
///
/// with p_rest llama.cpp's mass outside T (the golden's `rest`) and q_rest = Σ_{i∉T} q_i, ours,
/// summed over the tail rather than taken as 1 − Σ_T q_t so that a small remainder keeps its
/// digits. Merging ids into one bucket never raises a KL (log-sum inequality), so this is a lower
/// bound of the full KL that misses only how differently the two spread the tail among
/// themselves (llama.cpp's SmolLM2 Q8_0 against Q4_K: 0.062 here, 0.075 over the whole
/// vocabulary). `make_model_goldens.mjs --kl` computes the same figure between two llama.cpp
/// files.
fn kl_top_k(p: &TopkPosition, logits: &[f32]) -> f64 {
    let lse = log_sum_exp(logits);
    let mut in_top = vec![false; logits.len()];
    let mut kl = 0.0;
    for (&id, &lp) in p.ids.iter().zip(&p.logprobs) {
        in_top[id as usize] = true;
        kl += lp.exp() * (lp - (logits[id as usize] as f64 - lse));
    }
    if let Some(rest) = p.rest {
        let q_rest: f64 = logits
            .iter()
            .zip(&in_top)
            .filter(|(_, &top)| !top)
            .map(|(&l, _)| (l as f64 - lse).exp())
            .sum();
        kl += rest.exp() * (rest - q_rest.ln());
    }
    kl
}

/// Per-position KLs and top-1 agreement with llama.cpp's top-K distributions, over cases.
#[derive(Default)]
struct KlStats {
    kls: Vec<f64>,
    /// The largest KL and where it is.
    worst: (f64, String),
    agree: usize,
    /// Where our argmax is not llama.cpp's, with llama.cpp's margin ln p1 − ln p2 there.
    misses: Vec<String>,
    /// Each case's mean KL.
    per_case: Vec<String>,
}

impl KlStats {
    /// `rows[j]`: our logits at the position that predicts the golden's `tokens[j]`.
    fn add(&mut self, case: &TopkCase, rows: &[&[f32]]) {
        let first = self.kls.len();
        for (j, (p, row)) in case.positions.iter().zip(rows).enumerate() {
            let kl = kl_top_k(p, row);
            if kl > self.worst.0 {
                self.worst = (kl, format!("{} position {j}", case.name));
            }
            self.kls.push(kl);
            if argmax(row) == p.ids[0] {
                self.agree += 1;
            } else {
                self.misses.push(format!(
                    "{} {j} (margin {:.3})",
                    case.name,
                    p.logprobs[0] - p.logprobs[1]
                ));
            }
        }
        let case_kls = &self.kls[first..];
        self.per_case.push(format!(
            "{} {:.5}",
            case.name,
            case_kls.iter().sum::<f64>() / case_kls.len() as f64
        ));
    }

    /// Prints the figures and returns the failure, if the mean is over the pin.
    fn finish(&self, pin: &KlPin) -> Vec<String> {
        let n = self.kls.len();
        let mean = self.kls.iter().sum::<f64>() / n as f64;
        eprintln!(
            "{}: mean KL(llama.cpp ‖ quantweb) over top-K + rest {mean:.5} over {n} positions (pinned below {}; per case {:?}), largest {:.4} at {}; top-1 agreement {}/{n} = {:.1} %, misses at {:?}",
            pin.topk,
            pin.max_mean_kl,
            self.per_case,
            self.worst.0,
            self.worst.1,
            self.agree,
            100.0 * self.agree as f64 / n as f64,
            self.misses
        );
        if mean < pin.max_mean_kl {
            vec![]
        } else {
            vec![format!(
                "{}: mean KL(llama.cpp ‖ quantweb) {mean:.5} is not below {}",
                pin.topk, pin.max_mean_kl
            )]
        }
    }
}

fn read_golden<T: serde::de::DeserializeOwned>(name: &str) -> T {
    serde_json::from_str(
        &std::fs::read_to_string(common::root().join("tests/golden").join(name)).unwrap(),
    )
    .unwrap()
}

/// Our logits, `n_vocab` per row, teacher-forced over the golden's prompt and the first `n` of
/// its tokens: row j is the position that predicts `tokens[j]`.
fn teacher_forced(engine: &mut Engine, case: &Case, n: usize) -> Vec<f32> {
    let n0 = case.prompt_tokens.len();
    let seq: Vec<u32> = case
        .prompt_tokens
        .iter()
        .chain(&case.tokens[..n - 1])
        .copied()
        .collect();
    engine.reset();
    let Output::AllLogits(rows) = pollster::block_on(engine.model.eval_in_batches(
        &seq,
        Want::AllLogits,
        SCORE_BATCH,
    ))
    .unwrap() else {
        unreachable!()
    };
    let n_vocab = engine.model.config.n_vocab as usize;
    rows[(n0 - 1) * n_vocab..].to_vec()
}

/// Checks the golden cases named in `checked` (every case with QUANTWEB_FIDELITY_ALL=1) and
/// returns what failed (nothing when the model or GPU is missing and not required). With `kl`,
/// also the KL divergence from llama.cpp over the same teacher-forced positions.
fn check(
    files: &[&str],
    golden: &str,
    checked: &[&str],
    tol: &Tolerances,
    kl: Option<&KlPin>,
    on: On,
) -> Vec<String> {
    let Some((gguf, model, golden)) = setup(files, golden, on) else {
        return vec![];
    };
    let topk: Option<TopkGolden> = kl.map(|pin| read_golden(pin.topk));
    let mut kl_stats = KlStats::default();
    let mut engine = Engine::new(&gguf, model).unwrap();
    let all = std::env::var("QUANTWEB_FIDELITY_ALL").as_deref() == Ok("1");
    let (mut agree, mut total) = (0usize, 0usize);
    let mut worst = [0f64; 2];
    // Every failure is collected, so one run shows all of them.
    let mut failures: Vec<String> = vec![];
    for case in &golden.cases {
        // Prompt tokens, through the engine's template when it is a chat prompt (gemma-3-270m
        // ships none: the engine falls back to llama.cpp's built-in Gemma turns).
        let ids = match &case.messages {
            Some(msgs) if case.chat => {
                let msgs: Vec<ChatMessage> = msgs
                    .iter()
                    .map(|m| ChatMessage::new(m.role.clone(), m.content.clone()))
                    .collect();
                engine.chat_tokens(&msgs, None).unwrap()
            }
            _ => engine.prompt_tokens(&case.prompt, false),
        };
        assert_eq!(ids, case.prompt_tokens, "{}: prompt tokens", case.name);
        if !all && !checked.contains(&case.name.as_str()) {
            continue;
        }

        // Teacher-forced over llama.cpp's continuation.
        let forced = &case.tokens[..case.tokens.len().min(tol.teacher_forced)];
        let logits = teacher_forced(&mut engine, case, forced.len());
        let rows: Vec<&[f32]> = logits
            .chunks(engine.model.config.n_vocab as usize)
            .collect();
        if let Some(topk) = &topk {
            let t = topk.cases.iter().find(|t| t.name == case.name).unwrap();
            assert_eq!(t.positions.len(), case.tokens.len(), "{}", case.name);
            kl_stats.add(t, &rows);
        }
        let mut missed = vec![];
        for (j, (row, &want)) in rows.iter().zip(forced).enumerate() {
            total += 1;
            if argmax(row) == want {
                agree += 1;
            } else {
                missed.push(format!("{j} (llama.cpp margin {:.3})", case.margins[j]));
                if tol.agree_beyond_near_ties && case.margins[j] >= tol.near_tie {
                    failures.push(format!(
                        "{}: teacher-forced position {j} disagrees where llama.cpp's margin is {:.3} (not a near-tie)",
                        case.name, case.margins[j]
                    ));
                }
            }
        }
        eprintln!("{}: teacher-forced misses at {missed:?}", case.name);
        for (rank, t) in case.first_top5.iter().enumerate() {
            let ours = log_prob(rows[0], t.id);
            let Some(tolerance) = (if rank == 0 { Some(tol.top1) } else { tol.top5 }) else {
                continue;
            };
            let d = (ours - t.logprob).abs();
            if d >= tolerance {
                failures.push(format!(
                    "{}: logprob of {} is {ours:.4}, llama.cpp {:.4}",
                    case.name, t.id, t.logprob
                ));
            }
            worst[(rank > 0) as usize] = worst[(rank > 0) as usize].max(d);
        }

        // Greedy generation, exactly.
        engine.reset();
        let opts = CompleteOptions {
            max_tokens: GREEDY_TOKENS,
            ..CompleteOptions::default()
        };
        let done = pollster::block_on(engine.complete(&case.prompt_tokens, &opts, |_, _, _| true))
            .unwrap();
        // A golden that ended at an end-of-generation id has it as its last token, as ours does.
        let want = &case.tokens[..];
        let n = GREEDY_TOKENS.min(want.len());
        let same = done
            .tokens
            .iter()
            .zip(want)
            .take_while(|(a, b)| a == b)
            .count();
        if same < n {
            let margin = case.margins[same];
            eprintln!(
                "{}: greedy tokens equal llama.cpp's for {same}, then part where its margin is {margin:.3}",
                case.name
            );
            if margin >= tol.near_tie {
                failures.push(format!(
                    "{}: greedy tokens {:?} ({:?}) part from llama.cpp's {:?} at {same}, where its margin is {margin:.3} (not a near-tie)",
                    case.name,
                    done.tokens,
                    done.text,
                    &want[..n]
                ));
            }
        } else if want.len() < GREEDY_TOKENS && done.tokens.len() != want.len() {
            failures.push(format!(
                "{}: llama.cpp stopped after {} tokens, we gave {:?}",
                case.name,
                want.len(),
                done.tokens
            ));
        }
    }
    let rate = agree as f64 / total as f64;
    eprintln!(
        "teacher-forced top-1 agreement {agree}/{total} = {:.1} %; largest logprob difference from llama.cpp: top-1 {:.4}, top-5 {:.4}",
        100.0 * rate,
        worst[0],
        worst[1]
    );
    if rate < tol.min_agreement {
        failures.push(format!(
            "teacher-forced agreement {rate:.3} < {}",
            tol.min_agreement
        ));
    }
    if let Some(pin) = kl {
        failures.extend(kl_stats.finish(pin));
    }
    failures
}

fn assert_none(failures: Vec<String>) {
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A test per engine: `$name` on the GPU, `${name}_on_cpu` on the CPU.
macro_rules! on_both {
    ($(#[$doc:meta])* fn $gpu:ident / $cpu:ident ($on:ident) $body:block) => {
        $(#[$doc])*
        #[test]
        fn $gpu() {
            let $on = On::Gpu;
            $body
        }
        $(#[$doc])*
        #[test]
        fn $cpu() {
            let $on = On::Cpu;
            $body
        }
    };
}

/// The KL pins of the real models are this × the mean measured on the checked cases, per
/// engine (ARCHITECTURE.md, "Matching llama.cpp", has the figures over every case). The goldens
/// are fixed, so only our arithmetic moves the mean: the margin leaves room for another
/// machine's rounding (llvmpipe's LLVM and CPU features) and for kernels rewritten in another
/// order, while a regression that adds 1/50 of the KL between SmolLM2's Q8_0 and Q4_K files
/// (0.062), or 1/19 of gemma's (0.018), takes the mean past it.
const PIN_MARGIN: f64 = 1.5;

fn kl_pin(topk: &'static str, measured: f64) -> KlPin {
    KlPin {
        topk,
        max_mean_kl: PIN_MARGIN * measured,
    }
}

on_both! {
    fn smollm2_matches_llama_cpp / smollm2_matches_llama_cpp_on_cpu (on) {
        let kl = kl_pin("topk-smollm2.json", match on {
            On::Gpu => 0.00248,
            On::Cpu => 0.00149,
        });
        assert_none(check(&[common::SMOLLM2], "generate-smollm2.json", &CHECKED, &REAL, Some(&kl), on));
    }
}

#[test]
fn gemma3_matches_llama_cpp() {
    assert_none(check(
        &common::GEMMA_PARTS,
        "generate-gemma3.json",
        &CHECKED,
        &REAL,
        Some(&kl_pin("topk-gemma3.json", 0.00192)),
        On::Gpu,
    ));
}

/// Only the KL part of [`check`]: teacher forcing over the same cases, no greedy generation.
fn check_kl(files: &[&str], golden: &str, pin: &KlPin, on: On) -> Vec<String> {
    let Some((gguf, model, golden)) = setup(files, golden, on) else {
        return vec![];
    };
    let topk: TopkGolden = read_golden(pin.topk);
    let mut engine = Engine::new(&gguf, model).unwrap();
    let all = std::env::var("QUANTWEB_FIDELITY_ALL").as_deref() == Ok("1");
    let mut stats = KlStats::default();
    for (case, t) in golden.cases.iter().zip(&topk.cases) {
        assert_eq!(case.name, t.name);
        if !all && !CHECKED.contains(&case.name.as_str()) {
            continue;
        }
        let n = case.tokens.len().min(REAL.teacher_forced);
        let logits = teacher_forced(&mut engine, case, n);
        let rows: Vec<&[f32]> = logits
            .chunks(engine.model.config.n_vocab as usize)
            .collect();
        stats.add(t, &rows);
    }
    stats.finish(pin)
}

/// The KL pin of gemma3 on the CPU engine, which `gemma3_matches_llama_cpp_on_cpu` (ignored, a
/// known logprob miss) does not run.
#[test]
fn gemma3_kl_from_llama_cpp_on_cpu() {
    assert_none(check_kl(
        &common::GEMMA_PARTS,
        "generate-gemma3.json",
        &kl_pin("topk-gemma3.json", 0.00161),
        On::Cpu,
    ));
}

/// Not run by default: on chat_4's first generated position the CPU engine's logprobs are
/// 0.19 (top token) and 0.32 (fifth) from the goldens, past REAL's 0.15 / 0.25; greedy tokens
/// and teacher-forced agreement pass. llama.cpp's own AVX-512 build misses the same check there
/// (0.17 and 0.22 from its AVX2 goldens), and over 24 golden positions the CPU engine is closer
/// to llama.cpp than the GPU engine (mean |Δ logprob| of the top 10: 0.106 against 0.117).
/// ARCHITECTURE.md, "The CPU engine", has the measurements.
#[test]
#[ignore = "a known miss at chat_4, as llama.cpp's own AVX-512 build misses it; see the doc comment"]
fn gemma3_matches_llama_cpp_on_cpu() {
    assert_none(check(
        &common::GEMMA_PARTS,
        "generate-gemma3.json",
        &CHECKED,
        &REAL,
        None,
        On::Cpu,
    ));
}

/// Where Q is scaled decides the rounding (1/√96 is no power of two), and the tolerances above
/// are too loose to see it: llama.cpp scales gemma3's and phi3's Q after RoPE and q·k for the
/// others (tiny phi3 has Phi-3.5's head size 96).
#[test]
fn q_is_scaled_where_llama_cpp_scales_it() {
    use quantweb::inspect::ModelInfo;
    use quantweb::model::Config;
    for (files, q_scale, attn_scale) in [
        (&["tiny-phi3.gguf"][..], 1.0 / 96f32.sqrt(), 1.0),
        (&["tiny-llama3.gguf"][..], 1.0, 1.0 / 64f32.sqrt()),
        (&common::GEMMA_PARTS[..], 1.0 / 256f32.sqrt(), 1.0),
    ] {
        let Some(paths) = common::model_paths(files) else {
            return;
        };
        let gguf = pollster::block_on(GgufModel::open(open_args(&paths).unwrap())).unwrap();
        let c = Config::from_info(&ModelInfo::from_model(&gguf).unwrap()).unwrap();
        assert_eq!(
            (c.q_scale, c.attn_scale),
            (q_scale, attn_scale),
            "{files:?}"
        );
    }
}

/// The tiny random-weight models of tests/tiny (architectures with no real test model): both
/// golden cases each, a raw prompt and a chat-templated one.
fn check_tiny(arch: &str, on: On) {
    assert_none(check(
        &[&format!("tiny-{arch}.gguf")],
        &format!("tiny-{arch}.json"),
        &["raw_0", "chat_1"],
        &TINY,
        None,
        on,
    ));
}

on_both! {
    fn tiny_qwen2_matches_llama_cpp / tiny_qwen2_matches_llama_cpp_on_cpu (on) {
        check_tiny("qwen2", on);
    }
}

on_both! {
    fn tiny_qwen3_matches_llama_cpp / tiny_qwen3_matches_llama_cpp_on_cpu (on) {
        check_tiny("qwen3", on);
    }
}

on_both! {
    fn tiny_phi3_matches_llama_cpp / tiny_phi3_matches_llama_cpp_on_cpu (on) {
        check_tiny("phi3", on);
    }
}

on_both! {
    fn tiny_llama3_matches_llama_cpp / tiny_llama3_matches_llama_cpp_on_cpu (on) {
        check_tiny("llama3", on);
    }
}

on_both! {
    fn tiny_mistral_matches_llama_cpp / tiny_mistral_matches_llama_cpp_on_cpu (on) {
        check_tiny("mistral", on);
    }
}

/// Requantized models (`<name>.gguf` made by `quantweb quantize`, tests/golden/quant-<name>.json
/// from llama.cpp on the same file): every failure of every type, then one assertion.
fn check_quantized(model: &str, types: &[&str], tol: &Tolerances, on: On) {
    let failures: Vec<String> = types
        .iter()
        .flat_map(|t| {
            let name = format!("{model}-{t}");
            check(
                &[&format!("{name}.gguf")],
                &format!("quant-{name}.json"),
                &["raw_0"],
                tol,
                None,
                on,
            )
            .into_iter()
            .map(move |f| format!("{name}: {f}"))
        })
        .collect();
    assert_none(failures);
}

on_both! {
    fn requantized_smollm2_matches_llama_cpp / requantized_smollm2_matches_llama_cpp_on_cpu (on) {
        check_quantized("smollm2", &["Q3_K", "IQ4_NL"], &REQUANTIZED, on);
    }
}

on_both! {
    fn requantized_gemma3_matches_llama_cpp / requantized_gemma3_matches_llama_cpp_on_cpu (on) {
        check_quantized("gemma3", &["Q2_K", "Q5_K", "IQ4_XS"], &REQUANTIZED, on);
    }
}

on_both! {
    /// The tiny Llama 3 in every type the tiny models do not already use.
    fn requantized_tiny_llama3_matches_llama_cpp / requantized_tiny_llama3_matches_llama_cpp_on_cpu (on) {
        check_quantized(
            "tiny-llama3",
            &[
                "Q4_1", "Q5_0", "Q5_1", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "IQ4_NL", "IQ4_XS",
                "BF16",
            ],
            &TINY,
            on,
        );
    }
}
