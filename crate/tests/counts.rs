//! What a token costs on the GPU, counted by the recording context (`gpu::Counts`): the decode
//! figures of both real models are pinned, so a change that adds dispatches, passes,
//! submissions or readbacks to a decode step fails here. The figures do not depend on the
//! machine, except that a matrix above the adapter's binding limit is one dispatch per buffer
//! (gemma's 178 MB embedding on llvmpipe), which the expected counts take from the model.

mod common;

use quantweb::generate::generate;
use quantweb::gguf::GgufModel;
use quantweb::model::{Model, Net};
use quantweb::sample::{Sampler, SamplerConfig};
use quantweb::source::open_args;

/// Dispatches of one decode step over all transformer blocks, by model.
///
/// SmolLM2, 8 per block × 30: norm with the q8_1 quantization; q, k and v as one matrix; RoPE
/// of q and k with the KV store; attention; the output projection quantizing its input itself,
/// with the residual add; norm with quantization; gate and up as one matrix with the SiLU·up
/// in passing; down quantizing its input, with the residual add.
const SMOLLM2_BLOCKS: u64 = 8 * 30;
/// gemma3, 8 per block where q, k and v share a type (9 blocks) and 10 where v is Q8_0 (9):
/// SmolLM2's steps, with the q/k norms and the Q scale in the RoPE and KV store dispatch, each
/// post-norm and its residual add in the next norm's; the two projections store their output
/// for the post-norm instead of adding it.
const GEMMA3_BLOCKS: u64 = 8 * 9 + 10 * 9;

/// Greedy decode of a few tokens; returns the model and the timings' counts.
fn decode(files: &[&str]) -> Option<(Model, GgufModel, quantweb::generate::Timings)> {
    let paths = common::model_paths(files)?;
    let gpu = common::gpu()?;
    let gguf = pollster::block_on(GgufModel::open(open_args(&paths).unwrap())).unwrap();
    let mut model = pollster::block_on(Model::load(gpu, &gguf, 64)).unwrap();
    // As the engine does after loading: pipelines and parameter uniforms exist before the
    // first token, so a decode step writes only its token id and position.
    model.compile().unwrap();
    let mut sampler = Sampler::new(SamplerConfig::default());
    let (tokens, t) = pollster::block_on(generate(
        &mut model,
        &[2, 1000, 2000],
        5,
        &mut sampler,
        None,
        None,
        |_| false,
        |_, _| true,
    ))
    .unwrap();
    assert_eq!((tokens.len(), t.decode_steps, t.prefill_batches), (5, 4, 1));
    Some((model, gguf, t))
}

/// Weight bytes a decode step must read: every matrix of every layer and the output projection
/// once, and one row of the token embeddings, from the file's tensor sizes.
fn weight_bytes_per_token(gguf: &GgufModel) -> u64 {
    let info = |name: &str| &gguf.tensor(name).unwrap().info;
    let embd = info("token_embd.weight");
    let blocks: u64 = gguf
        .tensors
        .iter()
        .filter(|t| t.info.name.starts_with("blk.") && t.info.dims.get(1).is_some_and(|&r| r > 1))
        .map(|t| t.info.n_bytes)
        .sum();
    let output = gguf
        .tensor("output.weight")
        .map_or(embd.n_bytes, |t| t.info.n_bytes);
    blocks + output + embd.n_bytes / embd.dims[1]
}

fn check(files: &[&str], blocks: u64) {
    let Some((model, gguf, t)) = decode(files) else {
        return;
    };
    let per_token = t.decode.per(t.decode_steps);
    eprintln!("{files:?}: per decoded token: {per_token}");
    eprintln!(
        "{files:?}: per prefill batch: {}",
        t.prefill.per(t.prefill_batches)
    );
    // Embedding lookup; final norm with the activation quantization, output projection, argmax.
    let Net::Gpu(net) = &model.net else {
        unreachable!("loaded on the GPU")
    };
    let embed = net.token_embd.buffer_count() as u64;
    let output = net
        .output
        .as_ref()
        .unwrap_or(&net.token_embd)
        .buffer_count() as u64;
    let head = embed + 2 + output;
    assert_eq!(
        per_token.dispatches,
        blocks + head,
        "dispatches per decoded token ({blocks} for the blocks + {head})"
    );
    // Every step of the decode is the same: exact totals, not averages.
    assert_eq!(t.decode.dispatches, per_token.dispatches * t.decode_steps);
    assert_eq!(
        (
            per_token.passes,
            per_token.submits,
            per_token.readbacks,
            per_token.readback_bytes,
            per_token.written_bytes
        ),
        (1, 1, 1, 4, 8),
        "one pass, one submission, one 4-byte readback (the token id); 8 bytes written (id, position)"
    );
    assert_eq!(per_token.weight_bytes, weight_bytes_per_token(&gguf));
    // The prefill (3 tokens, one batch) is one pass and one submission too.
    assert_eq!(
        (t.prefill.passes, t.prefill.submits, t.prefill.readbacks),
        (1, 1, 1)
    );
}

#[test]
fn smollm2_decode_step_counts() {
    check(&[common::SMOLLM2], SMOLLM2_BLOCKS);
}

#[test]
fn gemma3_decode_step_counts() {
    check(&common::GEMMA_PARTS, GEMMA3_BLOCKS);
}

/// GPU memory is the tensors, the KV cache and a small scratch, and requests leave it as they
/// found it: a soak in the browser (tests/browser/soak.test.mjs) checks the same over hundreds
/// of turns; this pins it natively, where a leak per token shows after a few.
#[test]
fn gpu_bytes_are_tensors_kv_and_scratch_and_stay_flat() {
    let Some((mut model, _gguf, _)) = decode(&[common::SMOLLM2]) else {
        return;
    };
    let live = |m: &Model| m.gpu().unwrap().live_bytes();
    let after_first = live(&model);
    let fixed = model.weight_bytes() + model.kv_bytes();
    let scratch = after_first - fixed;
    eprintln!("GPU bytes: {after_first} = tensors and KV {fixed} + scratch {scratch}");
    assert!(after_first >= fixed);
    assert!(
        scratch < 32 << 20,
        "scratch of {scratch} bytes beyond tensors and KV"
    );
    let mut sampler = Sampler::new(SamplerConfig::default());
    for prompt in [
        &[2u32, 1000, 2000][..],
        &[2, 7, 8, 9, 10, 11],
        &[2, 1000, 2000],
    ] {
        model.reset();
        pollster::block_on(generate(
            &mut model,
            prompt,
            6,
            &mut sampler,
            None,
            None,
            |_| false,
            |_, _| true,
        ))
        .unwrap();
    }
    let warm = live(&model);
    for _ in 0..3 {
        model.reset();
        pollster::block_on(generate(
            &mut model,
            &[2, 7, 8, 9, 10, 11],
            6,
            &mut sampler,
            None,
            None,
            |_| false,
            |_, _| true,
        ))
        .unwrap();
        assert_eq!(
            live(&model),
            warm,
            "GPU bytes grew across requests of seen shapes"
        );
    }
}
