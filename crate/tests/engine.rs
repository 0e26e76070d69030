//! The engine on a real model: KV prefix reuse gives the same tokens as a fresh run, stop
//! strings and early stop end generation where they should, the context limit is a named
//! error or a "length" finish, never garbage, and a chat template past its limits fails one
//! conversation only.

mod common;

use quantweb::chat::{ChatMessage, ChatTemplate};
use quantweb::cpu::Cpu;
use quantweb::engine::{CompleteOptions, Engine, FinishReason};
use quantweb::error::Error;
use quantweb::gguf::{GgufModel, Value};
use quantweb::model::Model;
use quantweb::source::open_args;
use quantweb::tokenizer::Tokenizer;

fn engine(n_ctx: u32) -> Option<Engine> {
    let paths = common::model_paths(&[common::SMOLLM2])?;
    let gpu = common::gpu()?;
    let gguf = pollster::block_on(GgufModel::open(open_args(&paths).unwrap())).unwrap();
    let model = pollster::block_on(Model::load(gpu, &gguf, n_ctx)).unwrap();
    Some(Engine::new(&gguf, model).unwrap())
}

fn greedy(max_tokens: usize) -> CompleteOptions {
    CompleteOptions {
        max_tokens,
        ..CompleteOptions::default()
    }
}

#[test]
fn prefix_reuse_stop_strings_abort_and_context_limit() {
    let Some(mut e) = engine(16) else { return };
    let prompt = e.prompt_tokens("The capital of France is", false);

    // A fresh run, then the same prompt again: everything but the last prompt token is reused.
    let first = pollster::block_on(e.complete(&prompt, &greedy(6), |_, _, _| true)).unwrap();
    assert_eq!(first.finish_reason, FinishReason::Length);
    assert_eq!(first.tokens.len(), 6);
    assert_eq!(first.cached_tokens, 0);
    let again = pollster::block_on(e.complete(&prompt, &greedy(6), |_, _, _| true)).unwrap();
    assert_eq!(again.cached_tokens, prompt.len() - 1);
    assert_eq!(again.tokens, first.tokens);

    // A follow-up that extends the conversation continues from the cache and equals a run of
    // the whole sequence from scratch.
    let mut longer = prompt.clone();
    longer.extend_from_slice(&first.tokens);
    let followed = pollster::block_on(e.complete(&longer, &greedy(4), |_, _, _| true)).unwrap();
    assert_eq!(followed.cached_tokens, prompt.len() + 5);
    e.reset();
    let fresh = pollster::block_on(e.complete(&longer, &greedy(4), |_, _, _| true)).unwrap();
    assert_eq!(fresh.cached_tokens, 0);
    assert_eq!(followed.tokens, fresh.tokens);

    // A stop string inside the text: the text ends before it, and the streamed pieces never
    // show it.
    e.reset();
    let stop = first.text.trim_start()[2..5].to_string();
    let mut streamed = String::new();
    let opts = CompleteOptions {
        stop: vec![stop.clone()],
        ..greedy(6)
    };
    let stopped = pollster::block_on(e.complete(&prompt, &opts, |piece, _, _| {
        streamed.push_str(piece);
        true
    }))
    .unwrap();
    assert_eq!(stopped.finish_reason, FinishReason::Stop);
    let cut = first.text.find(&stop).unwrap();
    assert_eq!(stopped.text, first.text[..cut]);
    assert_eq!(streamed, stopped.text);

    // The callback stops it after two tokens.
    let mut seen = 0;
    let aborted = pollster::block_on(e.complete(&prompt, &greedy(6), |_, _, _| {
        seen += 1;
        seen < 2
    }))
    .unwrap();
    assert_eq!(aborted.finish_reason, FinishReason::Abort);
    assert_eq!(aborted.tokens, first.tokens[..2]);

    // The context (16) ends generation with "length"; a prompt that fills it is an error.
    let lots = pollster::block_on(e.complete(&prompt, &greedy(100), |_, _, _| true)).unwrap();
    assert_eq!(lots.finish_reason, FinishReason::Length);
    assert_eq!(prompt.len() + lots.tokens.len(), 16);
    let too_long: Vec<u32> = prompt.iter().cycle().take(16).copied().collect();
    assert!(matches!(
        pollster::block_on(e.complete(&too_long, &greedy(1), |_, _, _| true)),
        Err(Error::ContextFull { .. })
    ));

    // A lost device (here destroyed on purpose) is a named error, not garbage or a hang.
    e.model.gpu().expect("a GPU model").device.destroy();
    let lost = pollster::block_on(e.complete(&prompt, &greedy(2), |_, _, _| true));
    assert!(matches!(lost, Err(Error::DeviceLost { .. })), "{lost:?}");
    assert!(lost
        .unwrap_err()
        .to_string()
        .contains("load the model again"));
}

/// A chat template past its limits fails that conversation only: the engine renders the next
/// one as the model's own template does, and generates from it.
#[test]
fn a_template_past_its_limits_leaves_the_engine_usable() {
    let Some(paths) = common::model_paths(&[common::SMOLLM2]) else {
        return;
    };
    let Some(gpu) = common::gpu() else { return };
    let mut gguf = pollster::block_on(GgufModel::open(open_args(&paths).unwrap())).unwrap();
    let tokenizer = Tokenizer::from_model(&gguf).unwrap();
    let hi = [ChatMessage::new("user", "Hi")];
    let want = ChatTemplate::from_model(&gguf, &tokenizer)
        .unwrap()
        .encode(&tokenizer, &hi, None, true)
        .unwrap();
    let own = gguf.metadata["tokenizer.chat_template"].as_str().unwrap();
    let looping = "{% if messages[0].content == 'loop' %}{% for i in range(100000) %}\
                   {% for j in range(100000) %}{% endfor %}{% endfor %}{% endif %}";
    let hostile = Value::String(format!("{looping}{own}"));
    gguf.metadata
        .insert("tokenizer.chat_template".into(), hostile);
    let model = pollster::block_on(Model::load(gpu, &gguf, 64)).unwrap();
    let mut e = Engine::new(&gguf, model).unwrap();

    let loop_msg = [ChatMessage::new("user", "loop")];
    assert!(matches!(
        e.chat_tokens(&loop_msg, None),
        Err(Error::ChatTemplateLimit { .. })
    ));
    let ids = e.chat_tokens(&hi, None).unwrap();
    assert_eq!(ids, want);
    let done = pollster::block_on(e.complete(&ids, &greedy(3), |_, _, _| true)).unwrap();
    assert_eq!(done.tokens.len(), 3);
}

/// `logprobs`: each generated token's log-probability under the model, with its likeliest
/// alternatives, streamed and returned alike; the tokens do not change, and the values are
/// what a teacher-forced pass over the same ids gives. On the CPU engine, whose decode steps
/// and batches compute each row alike, so the two must agree to rounding (on the GPU, matvec
/// and matmul differ by ulps that grow to a few hundredths through SmolLM2's 30 layers).
#[test]
fn logprobs_are_the_models_own_and_change_nothing() {
    let Some(paths) = common::model_paths(&[common::SMOLLM2]) else {
        return;
    };
    let gguf = pollster::block_on(GgufModel::open(open_args(&paths).unwrap())).unwrap();
    let model = pollster::block_on(Model::load(Cpu::new(0).unwrap(), &gguf, 32)).unwrap();
    let mut e = Engine::new(&gguf, model).unwrap();
    let prompt = e.prompt_tokens("The capital of France is", false);
    let plain = pollster::block_on(e.complete(&prompt, &greedy(6), |_, _, _| true)).unwrap();
    assert!(plain.logprobs.is_none());
    let opts = CompleteOptions {
        logprobs: true,
        top_logprobs: 5,
        ..greedy(6)
    };
    let mut streamed = vec![];
    let done = pollster::block_on(e.complete(&prompt, &opts, |_, _, lp| {
        streamed.extend(lp.cloned());
        true
    }))
    .unwrap();
    assert_eq!(done.tokens, plain.tokens);
    let entries = done.logprobs.expect("asked for");
    assert_eq!(entries, streamed);
    let eog = done
        .tokens
        .iter()
        .filter(|&&t| e.tokenizer.is_eog(t))
        .count();
    assert_eq!(entries.len(), done.tokens.len() - eog);

    e.reset();
    let all: Vec<u32> = prompt.iter().chain(&done.tokens).copied().collect();
    let score = pollster::block_on(quantweb::generate::score(&mut e.model, &all, 64, 0)).unwrap();
    for (i, (entry, &id)) in entries.iter().zip(&done.tokens).enumerate() {
        let top = &entry.top_logprobs;
        assert_eq!(top.len(), 5);
        assert!(top.windows(2).all(|w| w[0].logprob >= w[1].logprob));
        // Greedy: the token is the likeliest one.
        assert_eq!(entry.token, top[0], "token {i}");
        assert_eq!(
            entry.token.bytes,
            e.tokenizer.token_piece(id, false).unwrap()
        );
        let forced = score.positions[prompt.len() + i - 1].logprob.unwrap();
        assert!(
            (entry.token.logprob - forced).abs() < 1e-6,
            "token {i}: {} generating, {forced} teacher-forced",
            entry.token.logprob
        );
    }

    let too_many = CompleteOptions {
        top_logprobs: 21,
        ..opts
    };
    assert!(matches!(
        pollster::block_on(e.complete(&prompt, &too_many, |_, _, _| true)),
        Err(Error::InvalidRequest { ref param, .. }) if param == "top_logprobs"
    ));
}
