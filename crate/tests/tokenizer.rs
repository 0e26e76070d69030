//! The tokenizer and chat templates against llama.cpp goldens
//! (tests/oracle/make_tokenizer_goldens.mjs): for every golden string, the ids with special-token
//! parsing off and on, the decoded text of those ids, round trips, and streaming decoding; the
//! same for every pre-tokenizer family on SmolLM2's vocabulary; chat templates rendered by
//! @huggingface/jinja and tokenized by llama.cpp. Models live in <workspace>/models.

use quantweb::chat::{ChatMessage, ChatTemplate};
use quantweb::engine::check_runnable;
use quantweb::error::Error;
use quantweb::gguf::{GgufModel, GgufWriter, Value};
use quantweb::quant::GgmlType;
use quantweb::source::{open_args, MemorySource};
use quantweb::tokenizer::{TokenAttr, Tokenizer, TokenizerKind};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

const SMOLLM2: &[&str] = &["SmolLM2-135M-Instruct.Q4_1.gguf"];
const GEMMA3: &[&str] = &[
    "gemma-3-270m-q4_k_m.gguf.part00",
    "gemma-3-270m-q4_k_m.gguf.part01",
    "gemma-3-270m-q4_k_m.gguf.part02",
    "gemma-3-270m-q4_k_m.gguf.part03",
];

/// The model, or `None` (skip) when its files are missing and not required.
fn open(names: &[&str]) -> Option<GgufModel> {
    let paths: Vec<PathBuf> = names
        .iter()
        .map(|n| workspace().join("models").join(n))
        .collect();
    if let Some(missing) = paths.iter().find(|p| !p.exists()) {
        if std::env::var("QUANTWEB_REQUIRE_MODELS").as_deref() == Ok("1") {
            panic!(
                "{} is missing: run `cargo xtask fetch-models --all`",
                missing.display()
            );
        }
        eprintln!("skipping: {} missing", missing.display());
        return None;
    }
    let paths: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    Some(pollster::block_on(GgufModel::open(open_args(&paths).unwrap())).unwrap())
}

#[derive(Deserialize)]
struct Golden {
    bos: Option<u32>,
    eos: Option<u32>,
    should_prepend_bos: bool,
    cases: Vec<Case>,
    chat: Vec<Chat>,
}

#[derive(Deserialize)]
struct Case {
    text: String,
    ids: Vec<u32>,
    ids_special: Vec<u32>,
    decoded: String,
    decoded_special: String,
}

#[derive(Deserialize)]
struct Chat {
    template: String,
    conversation: usize,
    add_generation_prompt: bool,
    rendered: String,
    ids: Vec<u32>,
}

#[derive(Deserialize)]
struct Variants {
    variants: Vec<Variant>,
}

#[derive(Deserialize)]
struct Variant {
    base: String,
    set: BTreeMap<String, serde_json::Value>,
    #[serde(default)]
    parse_special: bool,
    cases: Vec<VariantCase>,
}

#[derive(Deserialize)]
struct VariantCase {
    text: String,
    ids: Vec<u32>,
    decoded: Option<String>,
}

fn golden<T: for<'de> Deserialize<'de>>(name: &str) -> T {
    let path = workspace().join("tests/golden").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// Concatenation of a stream decoder's output over `ids`.
fn streamed(tok: &Tokenizer, ids: &[u32], special: bool) -> String {
    let mut d = tok.stream_decoder(special);
    let mut out = String::new();
    for &id in ids {
        out.push_str(&d.push(id).unwrap());
    }
    out + &d.finish()
}

/// Every golden case; returns the number of checks that failed (with a message each).
fn check_cases(tok: &Tokenizer, cases: &[Case], failures: &mut Vec<String>) -> usize {
    let mut checks = 0;
    let mut check = |ok: bool, what: String| {
        checks += 1;
        if !ok {
            failures.push(what);
        }
    };
    for c in cases {
        let ids = tok.encode(&c.text, false, false);
        check(
            ids == c.ids,
            format!("{:?}: ids {ids:?}, llama.cpp {:?}", c.text, c.ids),
        );
        let ids_s = tok.encode(&c.text, false, true);
        check(
            ids_s == c.ids_special,
            format!(
                "{:?} (parse_special): ids {ids_s:?}, llama.cpp {:?}",
                c.text, c.ids_special
            ),
        );
        let dec = tok.decode(&c.ids, false).unwrap();
        check(
            dec == c.decoded,
            format!("{:?}: decoded {dec:?}, llama.cpp {:?}", c.text, c.decoded),
        );
        let dec_s = tok.decode(&c.ids_special, true).unwrap();
        check(
            dec_s == c.decoded_special,
            format!(
                "{:?} (special): decoded {dec_s:?}, llama.cpp {:?}",
                c.text, c.decoded_special
            ),
        );
        if c.decoded == c.text {
            check(
                tok.decode(&ids, false).unwrap() == c.text,
                format!("{:?}: no round trip", c.text),
            );
        }
        for (ids, special) in [(&c.ids, false), (&c.ids_special, true)] {
            let s = streamed(tok, ids, special);
            let whole = tok.decode(ids, special).unwrap();
            check(
                s == whole,
                format!("{:?}: streamed {s:?} but decoded {whole:?}", c.text),
            );
        }
    }
    checks
}

fn check_model(names: &[&str], golden_name: &str) {
    let Some(model) = open(names) else {
        return;
    };
    let g: Golden = golden(golden_name);
    let tok = Tokenizer::from_model(&model).unwrap();
    assert_eq!(tok.bos(), g.bos);
    assert_eq!(tok.eos(), g.eos);
    assert_eq!(tok.add_bos(), g.should_prepend_bos);
    // add_special = true: llama.cpp's ids with BOS in front where the model wants it.
    for c in &g.cases {
        let mut want = c.ids.clone();
        if g.should_prepend_bos {
            want.insert(0, g.bos.unwrap());
        }
        assert_eq!(tok.encode(&c.text, true, false), want, "{:?}", c.text);
    }
    let mut failures = Vec::new();
    let checks = check_cases(&tok, &g.cases, &mut failures);
    println!(
        "{golden_name}: {} strings, {checks} checks, {} passed ({:.1} %)",
        g.cases.len(),
        checks - failures.len(),
        100.0 * (checks - failures.len()) as f64 / checks as f64
    );
    assert!(
        failures.is_empty(),
        "{} of {checks} checks failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(g.cases.len() >= 200);

    // Chat templates: our rendering equals @huggingface/jinja's, and its tokens llama.cpp's.
    let conversations = conversations();
    for c in &g.chat {
        let t = match c.template.as_str() {
            "model" => ChatTemplate::from_model(&model, &tok).unwrap(),
            "chatml" => ChatTemplate::chatml(&tok).unwrap(),
            "gemma" => ChatTemplate::gemma(&tok).unwrap(),
            other => panic!("unknown template {other}"),
        };
        let rendered = t
            .render(&conversations[c.conversation], c.add_generation_prompt)
            .unwrap();
        assert_eq!(rendered, c.rendered, "{} #{}", c.template, c.conversation);
        assert_eq!(tok.encode(&rendered, false, true), c.ids);
        // The chat path: BOS once, whether the template writes it or the tokenizer adds it.
        let ids = t
            .encode(
                &tok,
                &conversations[c.conversation],
                None,
                c.add_generation_prompt,
            )
            .unwrap();
        assert_eq!(ids, c.ids, "{} #{}", c.template, c.conversation);
    }
}

fn conversations() -> Vec<Vec<ChatMessage>> {
    vec![
        vec![ChatMessage::new("user", "Hello!")],
        vec![
            ChatMessage::new("system", "You are terse."),
            ChatMessage::new("user", "What is 2+2?"),
            ChatMessage::new("assistant", "4."),
            ChatMessage::new("user", "And 3+3?"),
        ],
        vec![
            ChatMessage::new("user", "Write \"hi\" in 中文 😀\n"),
            ChatMessage::new("assistant", "  你好  "),
            ChatMessage::new("user", "  spaces  and <b>tags</b>"),
        ],
    ]
}

#[test]
fn smollm2_matches_llama_cpp() {
    check_model(SMOLLM2, "tokenizer-smollm2.json");
}

#[test]
fn gemma3_matches_llama_cpp() {
    check_model(GEMMA3, "tokenizer-gemma3.json");
}

fn to_value(v: &serde_json::Value) -> Value {
    match v {
        serde_json::Value::Bool(b) => Value::Bool(*b),
        serde_json::Value::String(s) => Value::String(s.clone()),
        other => panic!("unsupported override {other}"),
    }
}

#[test]
fn every_pre_tokenizer_family_matches_llama_cpp() {
    let (Some(smol), Some(gemma)) = (open(SMOLLM2), open(GEMMA3)) else {
        return;
    };
    let v: Variants = golden("tokenizer-variants.json");
    let mut total = 0;
    let mut failures = Vec::new();
    for var in &v.variants {
        let base = if var.base == "smollm2" { &smol } else { &gemma };
        let mut md = base.metadata.clone();
        for (k, val) in &var.set {
            md.insert(k.clone(), to_value(val));
        }
        let tok = Tokenizer::from_metadata("variant", &md).unwrap();
        for c in &var.cases {
            total += 2;
            let ids = tok.encode(&c.text, false, var.parse_special);
            if ids != c.ids {
                failures.push(format!(
                    "{:?} {:?}: ids {ids:?}, llama.cpp {:?}",
                    var.set, c.text, c.ids
                ));
            }
            let want = c.decoded.as_deref().unwrap_or(&c.text);
            let dec = tok.decode(&c.ids, var.parse_special).unwrap();
            if dec != want {
                failures.push(format!(
                    "{:?} {:?}: decoded {dec:?}, llama.cpp {want:?}",
                    var.set, c.text
                ));
            }
        }
    }
    println!(
        "variants: {} configurations, {total} checks, {} passed",
        v.variants.len(),
        total - failures.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn model_facts() {
    let (Some(smol), Some(gemma)) = (open(SMOLLM2), open(GEMMA3)) else {
        return;
    };
    let s = Tokenizer::from_model(&smol).unwrap();
    assert_eq!(
        (s.kind(), s.pre(), s.n_vocab()),
        (TokenizerKind::Bpe, "smollm", 49152)
    );
    assert!(s.is_eog(2) && s.is_eog(0)); // <|im_end|>, <|endoftext|>
    assert!(!s.is_eog(1));
    assert_eq!(s.token_text(1).unwrap(), "<|im_start|>");
    assert!(s.token_attr(1).unwrap().has(TokenAttr::CONTROL));

    let g = Tokenizer::from_model(&gemma).unwrap();
    assert_eq!((g.kind(), g.n_vocab()), (TokenizerKind::Spm, 262_144));
    let end_of_turn = g.token_id("<end_of_turn>").unwrap();
    assert!(g.is_eog(end_of_turn) && g.is_eog(1));
    // "</s>" is a user-defined token that llama.cpp turns into a control one.
    let s_close = g.token_id("</s>").unwrap();
    assert!(g.token_attr(s_close).unwrap().has(TokenAttr::CONTROL));
    // Control tokens named "unused" are marked unused.
    let unused = g.token_id("<unused0>").unwrap();
    assert!(g.token_attr(unused).unwrap().has(TokenAttr::UNUSED));
    assert!(matches!(
        ChatTemplate::from_model(&gemma, &g),
        Err(Error::NoChatTemplate { .. })
    ));
}

#[test]
fn stream_decoder_holds_back_split_characters() {
    let Some(gemma) = open(GEMMA3) else {
        return;
    };
    let tok = Tokenizer::from_model(&gemma).unwrap();
    // Byte tokens of "€" (E2 82 AC): nothing until the last one.
    let bytes: Vec<u32> = [0xE2u8, 0x82, 0xAC]
        .iter()
        .map(|b| tok.token_id(&format!("<0x{b:02X}>")).unwrap())
        .collect();
    let mut d = tok.stream_decoder(false);
    assert_eq!(d.push(bytes[0]).unwrap(), "");
    assert_eq!(d.push(bytes[1]).unwrap(), "");
    assert_eq!(d.push(bytes[2]).unwrap(), "€");
    // An unfinished character at the end becomes U+FFFD, like decode() of the same ids.
    let mut d = tok.stream_decoder(false);
    assert_eq!(d.push(bytes[0]).unwrap(), "");
    assert_eq!(d.finish(), "\u{FFFD}");
    assert_eq!(tok.decode(&bytes[..1], false).unwrap(), "\u{FFFD}");
    // A stray continuation byte in the middle.
    let x = tok.token_id("x").unwrap();
    let mut d = tok.stream_decoder(false);
    assert_eq!(d.push(bytes[1]).unwrap(), "\u{FFFD}");
    assert_eq!(d.push(x).unwrap(), "x");
}

// ---- errors, on small hand-made vocabularies ----

fn strings(v: &[&str]) -> Value {
    Value::Array(
        quantweb::gguf::ValueType::String,
        v.iter().map(|s| Value::String(s.to_string())).collect(),
    )
}

fn tiny_bpe() -> BTreeMap<String, Value> {
    let mut md = BTreeMap::new();
    md.insert("tokenizer.ggml.model".into(), Value::String("gpt2".into()));
    md.insert("tokenizer.ggml.pre".into(), Value::String("gpt-2".into()));
    md.insert(
        "tokenizer.ggml.tokens".into(),
        strings(&["<|endoftext|>", "a", "b", "ab", "Ġ", "Ġab"]),
    );
    md.insert("tokenizer.ggml.merges".into(), strings(&["a b", "Ġ ab"]));
    md
}

#[test]
fn tiny_bpe_vocabulary_works() {
    let tok = Tokenizer::from_metadata("tiny", &tiny_bpe()).unwrap();
    assert_eq!(tok.encode("ab ab", false, false), [3, 5]);
    assert_eq!(tok.encode("ab<|endoftext|>", false, true), [3, 0]);
    assert_eq!(tok.decode(&[3, 5, 0], false).unwrap(), "ab ab");
    assert_eq!(tok.decode(&[3, 5, 0], true).unwrap(), "ab ab<|endoftext|>");
    // Characters not in the vocabulary (no byte tokens for them) are dropped, as in llama.cpp.
    assert_eq!(tok.encode("abc", false, false), [3]);
}

#[test]
fn unknown_tokenizer_model_is_named() {
    let mut md = tiny_bpe();
    md.insert("tokenizer.ggml.model".into(), Value::String("t5".into()));
    let e = Tokenizer::from_metadata("x.gguf", &md).err().unwrap();
    let msg = e.to_string();
    assert!(matches!(e, Error::UnsupportedTokenizer { .. }));
    assert!(
        msg.contains("\"t5\"") && msg.contains("\"gpt2\"") && msg.contains("\"llama\""),
        "{msg}"
    );
}

#[test]
fn unknown_pre_tokenizer_lists_the_supported_ones() {
    let mut md = tiny_bpe();
    md.insert(
        "tokenizer.ggml.pre".into(),
        Value::String("deepseek-llm".into()),
    );
    let msg = Tokenizer::from_metadata("x.gguf", &md)
        .err()
        .unwrap()
        .to_string();
    assert!(msg.contains("\"deepseek-llm\""), "{msg}");
    assert!(
        msg.contains("llama-bpe") && msg.contains("qwen2") && msg.contains("smollm"),
        "{msg}"
    );
    // An absent pre-tokenizer means "default", as in llama.cpp.
    md.remove("tokenizer.ggml.pre");
    assert_eq!(Tokenizer::from_metadata("x.gguf", &md).unwrap().pre(), "");
}

#[test]
fn missing_and_malformed_vocabularies_are_named() {
    let mut md = tiny_bpe();
    md.remove("tokenizer.ggml.merges");
    let msg = Tokenizer::from_metadata("x.gguf", &md)
        .err()
        .unwrap()
        .to_string();
    assert!(
        msg.contains("tokenizer.ggml.merges") && msg.contains("x.gguf"),
        "{msg}"
    );

    let mut md = tiny_bpe();
    md.remove("tokenizer.ggml.tokens");
    let msg = Tokenizer::from_metadata("x.gguf", &md)
        .err()
        .unwrap()
        .to_string();
    assert!(msg.contains("tokenizer.ggml.tokens"), "{msg}");

    let mut md = tiny_bpe();
    md.insert("tokenizer.ggml.tokens".into(), Value::U32(7));
    let msg = Tokenizer::from_metadata("x.gguf", &md)
        .err()
        .unwrap()
        .to_string();
    assert!(
        msg.contains("tokenizer.ggml.tokens") && msg.contains("u32"),
        "{msg}"
    );

    let mut md = tiny_bpe();
    md.insert("tokenizer.ggml.tokens".into(), strings(&["a", "b", "a"]));
    let msg = Tokenizer::from_metadata("x.gguf", &md)
        .err()
        .unwrap()
        .to_string();
    assert!(msg.contains("\"a\" appears twice (ids 0 and 2)"), "{msg}");

    let mut md = tiny_bpe();
    md.insert(
        "tokenizer.ggml.token_type".into(),
        Value::Array(quantweb::gguf::ValueType::I32, vec![Value::I32(1)]),
    );
    let msg = Tokenizer::from_metadata("x.gguf", &md)
        .err()
        .unwrap()
        .to_string();
    assert!(msg.contains("1 token types for 6 tokens"), "{msg}");

    md.remove("tokenizer.ggml.token_type");
    md.remove("tokenizer.ggml.model");
    let msg = Tokenizer::from_metadata("x.gguf", &md)
        .err()
        .unwrap()
        .to_string();
    assert!(msg.contains("tokenizer.ggml.model"), "{msg}");
}

#[test]
fn out_of_range_ids_are_errors() {
    let tok = Tokenizer::from_metadata("tiny", &tiny_bpe()).unwrap();
    let e = tok.decode(&[1, 6], false).unwrap_err().to_string();
    assert!(e.contains("token id 6") && e.contains("6 tokens"), "{e}");
    assert!(tok.token_piece(99, true).is_err());
    assert!(tok.stream_decoder(false).push(1000).is_err());
}

#[test]
fn chat_template_errors_are_named() {
    let tok = Tokenizer::from_metadata("tiny", &tiny_bpe()).unwrap();
    let e = ChatTemplate::with_tokenizer("{{ raise_exception('no tools here') }}", &tok)
        .unwrap()
        .render(&[ChatMessage::new("user", "x")], true)
        .unwrap_err()
        .to_string();
    assert!(e.contains("no tools here"), "{e}");
    let e = ChatTemplate::with_tokenizer("{% if %}", &tok)
        .err()
        .unwrap();
    assert!(matches!(e, Error::ChatTemplate { .. }));
}

/// The error of the tiny vocabulary with `key` set to `value`.
fn error_with(key: &str, value: Value) -> String {
    let mut md = tiny_bpe();
    md.insert(key.into(), value);
    let e = Tokenizer::from_metadata("x.gguf", &md).err().unwrap();
    assert!(matches!(e, Error::BadValue { .. }), "{e}");
    e.to_string()
}

fn f32s(v: &[f32]) -> Value {
    Value::Array(
        quantweb::gguf::ValueType::F32,
        v.iter().map(|&x| Value::F32(x)).collect(),
    )
}

#[test]
fn scores_and_types_must_be_one_per_token() {
    let msg = error_with("tokenizer.ggml.scores", f32s(&[0.0; 7]));
    assert!(
        msg.contains("\"tokenizer.ggml.scores\": 7 scores for 6 tokens"),
        "{msg}"
    );
    let msg = error_with("tokenizer.ggml.token_type", f32s(&[1.0; 5]));
    assert!(
        msg.contains("\"tokenizer.ggml.token_type\": 5 token types for 6 tokens"),
        "{msg}"
    );
}

#[test]
fn nan_and_infinite_scores_are_named() {
    for (bad, shown) in [
        (f32::NAN, "NaN"),
        (f32::INFINITY, "inf"),
        (f32::NEG_INFINITY, "-inf"),
    ] {
        let msg = error_with(
            "tokenizer.ggml.scores",
            f32s(&[0.0, -1.0, bad, -3.0, -4.0, -5.0]),
        );
        assert!(
            msg.contains(&format!("token 2 (\"b\") has score {shown}")),
            "{msg}"
        );
    }
    // An f64 beyond f32's range is infinite once read.
    let big = Value::Array(
        quantweb::gguf::ValueType::F64,
        [0.0, 0.0, 0.0, 1e300, 0.0, 0.0].map(Value::F64).to_vec(),
    );
    let msg = error_with("tokenizer.ggml.scores", big);
    assert!(msg.contains("token 3 (\"ab\") has score 1e300"), "{msg}");
}

#[test]
fn token_types_out_of_range_are_named() {
    let i32s =
        |v: [i32; 6]| Value::Array(quantweb::gguf::ValueType::I32, v.map(Value::I32).to_vec());
    let msg = error_with("tokenizer.ggml.token_type", i32s([3, 1, 1, 7, 1, 1]));
    assert!(
        msg.contains("token 3 (\"ab\") has type 7; types are 0 to 6"),
        "{msg}"
    );
    let msg = error_with("tokenizer.ggml.token_type", i32s([3, -1, 1, 1, 1, 1]));
    assert!(msg.contains("token 1 (\"a\") has type -1"), "{msg}");
    let msg = error_with(
        "tokenizer.ggml.token_type",
        f32s(&[3.0, 1.0, 1.5, 1.0, 1.0, 1.0]),
    );
    assert!(msg.contains("token 2 (\"b\") has type 1.5"), "{msg}");
    // 0 (undefined) to 6 (byte) are all types.
    let mut md = tiny_bpe();
    md.insert("tokenizer.ggml.token_type".into(), i32s([3, 0, 2, 4, 5, 6]));
    assert!(Tokenizer::from_metadata("x.gguf", &md).is_ok());
}

#[test]
fn merges_naming_missing_tokens_are_named() {
    for (merges, want) in [
        (
            ["a b", "a c"],
            "merge 1 \"a c\" names \"c\", which is not a token",
        ),
        (
            ["a b", "x b"],
            "merge 1 \"x b\" names \"x\", which is not a token",
        ),
        (
            ["b a", "a b"],
            "merge 0 \"b a\" makes \"ba\", which is not a token",
        ),
        (
            ["a b", "ab"],
            "merge 1 \"ab\" is not two tokens separated by a space",
        ),
    ] {
        let msg = error_with("tokenizer.ggml.merges", strings(&merges));
        assert!(
            msg.contains("\"tokenizer.ggml.merges\"") && msg.contains(want),
            "{msg}"
        );
    }
}

#[test]
fn special_ids_beyond_the_vocabulary_are_named() {
    for key in [
        "bos", "eos", "unknown", "padding", "eot", "eom", "fim_pre", "fim_suf", "fim_mid",
        "fim_pad", "fim_rep", "fim_sep", "prefix", "suffix", "middle",
    ] {
        let key = format!("tokenizer.ggml.{key}_token_id");
        let msg = error_with(&key, Value::U32(6));
        assert!(
            msg.contains(&format!(
                "{key:?}: token id 6 is beyond the vocabulary (6 tokens)"
            )),
            "{msg}"
        );
        // The last token is in range; -1 is how some converters write "none".
        for ok in [Value::U32(5), Value::I32(-1)] {
            let mut md = tiny_bpe();
            md.insert(key.clone(), ok);
            assert!(Tokenizer::from_metadata("x.gguf", &md).is_ok(), "{key}");
        }
    }
}

/// A llama model with the tiny vocabulary (6 tokens): its embedding and output rows, and the
/// vocabulary size it declares, if any.
fn tiny_model(embd_rows: u64, output_rows: u64, declared: Option<u32>) -> GgufModel {
    let f32_bytes = |n: u64| vec![0u8; n as usize * 4];
    let mut w = GgufWriter::new()
        .kv("general.architecture", Value::String("llama".into()))
        .kv("llama.block_count", Value::U32(1))
        .kv("llama.embedding_length", Value::U32(8))
        .kv("llama.attention.head_count", Value::U32(2))
        .kv("llama.context_length", Value::U32(64))
        .tensor(
            "token_embd.weight",
            &[8, embd_rows],
            GgmlType::F32,
            f32_bytes(8 * embd_rows),
        )
        .tensor(
            "output.weight",
            &[8, output_rows],
            GgmlType::F32,
            f32_bytes(8 * output_rows),
        );
    for (k, v) in tiny_bpe() {
        w = w.kv(&k, v);
    }
    if let Some(n) = declared {
        w = w.kv("llama.vocab_size", Value::U32(n));
    }
    let bytes = w.to_bytes();
    pollster::block_on(GgufModel::open(vec![Box::new(MemorySource::new(
        "tiny.gguf",
        bytes,
    ))]))
    .unwrap()
}

#[test]
fn the_vocabulary_must_fit_the_model() {
    assert!(check_runnable(&tiny_model(6, 6, None)).is_ok());
    assert!(check_runnable(&tiny_model(6, 6, Some(6))).is_ok());
    let e = check_runnable(&tiny_model(6, 6, Some(8))).unwrap_err();
    assert!(matches!(e, Error::BadValue { .. }));
    assert!(
        e.to_string()
            .contains("\"llama.vocab_size\": 8 tokens, but tokenizer.ggml.tokens has 6"),
        "{e}"
    );
    for (embd, output, tensor) in [(8, 6, "token_embd.weight"), (6, 5, "output.weight")] {
        let e = check_runnable(&tiny_model(embd, output, None)).unwrap_err();
        assert!(matches!(e, Error::BadShape { .. }));
        let msg = e.to_string();
        assert!(
            msg.contains(&format!("tensor {tensor:?}")) && msg.contains("6 rows expected"),
            "{msg}"
        );
    }
}
