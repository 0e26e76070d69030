//! Constrained decoding: every output of a constrained generation parses and validates.
//!
//! - Random walks: a vocabulary of all 256 bytes plus multi-byte tokens that span several
//!   grammar symbols (`{"`, `": "`, …) and split UTF-8 sequences, sampled at random under each
//!   schema of tests/structured/schemas.json; every walk must end and validate.
//! - A GBNF test set: strings each grammar must accept or refuse, fed byte by byte and as
//!   multi-symbol tokens.
//! - The real models (SmolLM2 on the CPU and GPU engines, gemma3's 262 144-token vocabulary)
//!   and a tiny one answer every schema with JSON that validates.
//! - Named errors: unsupported schema keywords, broken grammars, bad `response_format`s.
//! - Forced tool calls: random walks under each tool-call format's grammar parse back into
//!   calls of allowed functions whose arguments validate.

mod common;

use quantweb::chat::tools::{ToolFormat, ToolUse};
use quantweb::constrain::{Constrained, Constraint, Vocabulary};
use quantweb::cpu::Cpu;
use quantweb::engine::{CompleteOptions, Engine, FinishReason, RequestOptions};
use quantweb::error::Error;
use quantweb::gguf::GgufModel;
use quantweb::model::Model;
use quantweb::sample::{Sampler, SamplerConfig};
use quantweb::source::open_args;
use serde_json::{json, Value};

struct Case {
    name: String,
    prompt: String,
    schema: Value,
    /// Allows output of any size (recursion, a free object): a small model in a greedy loop
    /// may nest until max_tokens, so only the random walks take these.
    open_ended: bool,
}

fn cases() -> Vec<Case> {
    let path = common::root().join("tests/structured/schemas.json");
    let all: Vec<Value> = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    all.into_iter()
        .map(|c| Case {
            name: c["name"].as_str().unwrap().into(),
            prompt: c["prompt"].as_str().unwrap().into(),
            schema: c["schema"].clone(),
            open_ended: c["open_ended"].as_bool().unwrap_or(false),
        })
        .collect()
}

fn check(schema: &Value, text: &str, what: &str) {
    let value: Value =
        serde_json::from_str(text).unwrap_or_else(|e| panic!("{what}: {text:?} is not JSON: {e}"));
    let validator = jsonschema::options()
        .should_validate_formats(true)
        .build(schema)
        .unwrap();
    let errors: Vec<String> = validator
        .iter_errors(&value)
        .map(|e| e.to_string())
        .collect();
    assert!(
        errors.is_empty(),
        "{what}: {text} fails its schema: {errors:?}"
    );
}

// ---- a synthetic vocabulary ----

const EOS: u32 = 0;

/// Token 0 is the end; then every byte; then pieces that span several grammar symbols or cut
/// a UTF-8 sequence anywhere.
fn words() -> Vec<Vec<u8>> {
    let mut w = vec![b"\xFF</s>".to_vec()];
    w.extend((0..=255u8).map(|b| vec![b]));
    for piece in [
        "{\"",
        "\"}",
        "\": \"",
        "\", \"",
        "\": ",
        ", \"",
        "[\"",
        "\"]",
        "[{",
        "}]",
        "}, {",
        "true",
        "false",
        "null",
        "12",
        "-0",
        "0.5",
        "e+",
        "name",
        "éa",
        "こん",
        "にちは",
        "héllo",
    ] {
        w.push(piece.as_bytes().to_vec());
    }
    // Cut UTF-8: the tail of "é" with more text, the head of a 3-byte character.
    w.push(vec![0xA9, b'"']);
    w.push(vec![b'"', 0xE3, 0x81]);
    // A control token, as Mistral's [TOOL_CALLS] is: no grammar reaches it as text.
    w.push(b"\xFF[TOOL_CALLS]".to_vec());
    w
}

fn vocabulary() -> Vocabulary {
    Vocabulary::from_words(&words(), Some(EOS), vec![EOS]).unwrap()
}

/// Ids of the tokens the constraint allows now.
fn allowed(c: &mut Constrained, n: usize) -> Vec<u32> {
    let mut logits = vec![0.0f32; n];
    c.mask(&mut logits).unwrap();
    (0..n as u32)
        .filter(|&i| logits[i as usize].is_finite())
        .collect()
}

/// Samples under `c` from a fixed preference for what closes things (quotes, brackets,
/// separators, the end), so that walks end; returns the bytes, or `None` after `limit` tokens.
fn walk(c: &mut Constrained, seed: u64, limit: usize) -> Option<Vec<u8>> {
    let words = words();
    let prefer: Vec<f32> = words
        .iter()
        .enumerate()
        .map(|(i, w)| match w.as_slice() {
            _ if i as u32 == EOS => 6.0,
            // Exponents are valid JSON, but one past ±308 does not fit serde_json's f64.
            b"e" | b"E" | b"e+" => -8.0,
            b"\"" | b"}" | b"]" | b"," | b"\"}" | b"\"]" => 3.0,
            _ if w.len() > 1 => 1.5,
            _ => 0.0,
        })
        .collect();
    let mut sampler = Sampler::new(SamplerConfig {
        temperature: 1.0,
        top_k: 0,
        top_p: 1.0,
        min_p: 0.0,
        repeat_penalty: 1.0,
        seed,
        ..SamplerConfig::default()
    });
    let mut out = Vec::new();
    for _ in 0..limit {
        let mut logits = prefer.clone();
        c.mask(&mut logits).unwrap();
        let t = sampler.sample(&logits);
        if t == EOS {
            return Some(out);
        }
        c.accept(t).unwrap();
        out.extend_from_slice(&words[t as usize]);
    }
    None
}

#[test]
fn random_walks_under_every_schema_parse_and_validate() {
    let vocab = vocabulary();
    let cases = cases();
    assert!(cases.len() >= 30, "the schema set shrank");
    for case in &cases {
        for seed in 0..6 {
            let mut c = Constrained::new(&vocab, &Constraint::JsonSchema(case.schema.clone()))
                .unwrap_or_else(|e| panic!("{}: {e}", case.name));
            let out = walk(&mut c, seed, 2000)
                .unwrap_or_else(|| panic!("{} (seed {seed}): no end in 2000 tokens", case.name));
            let text = String::from_utf8(out)
                .unwrap_or_else(|e| panic!("{} (seed {seed}): not UTF-8: {e}", case.name));
            check(&case.schema, &text, &format!("{} (seed {seed})", case.name));
        }
    }
}

#[test]
fn forced_tool_calls_parse_and_their_arguments_validate() {
    let vocab = vocabulary();
    let words = words();
    let open = (words.iter())
        .position(|w| w == b"\xFF[TOOL_CALLS]")
        .unwrap() as u32;
    let weather = json!({"type": "object", "properties": {
        "city": {"type": "string", "minLength": 1},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
        "required": ["city", "unit"], "additionalProperties": false});
    let tools = json!([
        {"type": "function", "function": {"name": "get_weather", "parameters": weather}},
        {"type": "function", "function": {"name": "now"}}]);
    let named = json!({"type": "function", "function": {"name": "get_weather"}});
    for format in [ToolFormat::Hermes, ToolFormat::Llama3, ToolFormat::Mistral] {
        for choice in [json!("required"), named.clone()] {
            let t = ToolUse::from_request(Some(&tools), Some(&choice), None)
                .unwrap()
                .unwrap();
            let grammar = t.grammar(format, Some(open)).unwrap();
            for seed in 0..6 {
                let what = format!("{format:?} {choice} (seed {seed})");
                let mut c = Constrained::new(&vocab, &Constraint::ToolCalls(grammar.clone()))
                    .unwrap_or_else(|e| panic!("{what}: {e}"));
                let out = walk(&mut c, seed, 2000).unwrap_or_else(|| panic!("{what}: no end"));
                // As the engine's text shows a control token: not at all.
                let text = String::from_utf8(
                    out.strip_prefix(b"\xFF[TOOL_CALLS]")
                        .unwrap_or(&out)
                        .to_vec(),
                )
                .unwrap_or_else(|e| panic!("{what}: not UTF-8: {e}"));
                assert_eq!(
                    out.starts_with(b"\xFF"),
                    format == ToolFormat::Mistral,
                    "{what}: {text}"
                );
                let (before, calls) = format
                    .parse(&text, &t.tools)
                    .unwrap_or_else(|| panic!("{what}: {text:?} is no call"));
                assert_eq!(before, "", "{what}");
                for (name, args) in calls {
                    let schema = match name.as_str() {
                        "get_weather" => &weather,
                        _ if choice == named => panic!("{what}: {name} was not chosen"),
                        _ => &json!({"type": "object"}),
                    };
                    check(schema, &args.to_string(), &what);
                }
            }
        }
    }
}

#[test]
fn json_mode_gives_an_object() {
    let vocab = vocabulary();
    for seed in 0..10 {
        let mut c = Constrained::new(&vocab, &Constraint::JsonObject).unwrap();
        let out = walk(&mut c, seed, 2000).expect("ends");
        let v: Value = serde_json::from_slice(&out).expect("parses");
        assert!(v.is_object(), "{v}");
    }
}

#[test]
fn masks_follow_tokens_across_symbols_and_inside_characters() {
    let vocab = vocabulary();
    let words = words();
    let id = |w: &[u8]| words.iter().position(|x| x == w).unwrap() as u32;
    let n = words.len();
    let schema = json!({"type": "object", "properties": {"name": {"enum": ["héllo", "こんにちは"]}},
        "required": ["name"], "additionalProperties": false});
    let mut c = Constrained::new(&vocab, &Constraint::JsonSchema(schema)).unwrap();
    let now = allowed(&mut c, n);
    // `{"` covers two symbols; a lone `"` cannot start an object, nor can the end.
    assert!(
        now.contains(&id(b"{\"")) && now.contains(&id(b"{")),
        "{now:?}"
    );
    assert!(!now.contains(&id(b"\"")) && !now.contains(&EOS));
    for t in [&b"{\""[..], b"name", b"\": "] {
        assert!(
            allowed(&mut c, n).contains(&id(t)),
            "{:?}",
            String::from_utf8_lossy(t)
        );
        c.accept(id(t)).unwrap();
    }
    // The value's opening quote may come with the first two bytes of こ.
    let now = allowed(&mut c, n);
    assert!(now.contains(&id(&[b'"', 0xE3, 0x81])) && now.contains(&id(b"\"")));
    c.accept(id(b"\"")).unwrap();
    // "h" then "é" cut in two: 0xC3 alone, then 0xA9 with the closing quote refused until
    // "llo" is there.
    for t in [&b"h"[..], &[0xC3]] {
        c.accept(id(t)).unwrap();
    }
    let now = allowed(&mut c, n);
    assert!(now.contains(&id(&[0xA9])), "{now:?}");
    assert!(!now.contains(&id(&[0xA9, b'"'])) && !now.contains(&id(&[0xA8])));
    for t in [&[0xA9][..], b"l", b"l", b"o", b"\"}"] {
        assert!(allowed(&mut c, n).contains(&id(t)), "{t:?}");
        c.accept(id(t)).unwrap();
    }
    assert_eq!(allowed(&mut c, n), vec![EOS]);
}

/// Whether `grammar` accepts `text` fed as `tokens` (greedy longest pieces when `multi`, else
/// byte by byte), ending with the end token.
fn accepts(vocab: &Vocabulary, grammar: &str, text: &str, multi: bool) -> bool {
    let words = words();
    let mut c = Constrained::new(vocab, &Constraint::Gbnf(grammar.into())).unwrap();
    let mut rest = text.as_bytes();
    while !rest.is_empty() {
        let t = (1..words.len())
            .filter(|&i| rest.starts_with(&words[i]) && (multi || words[i].len() == 1))
            .max_by_key(|&i| words[i].len())
            .unwrap() as u32;
        if !allowed(&mut c, words.len()).contains(&t) {
            return false;
        }
        c.accept(t).unwrap();
        rest = &rest[words[t as usize].len()..];
    }
    allowed(&mut c, words.len()).contains(&EOS)
}

#[test]
fn gbnf_test_set() {
    let vocab = vocabulary();
    let set: &[(&str, &[&str], &[&str])] = &[
        (
            r#"root ::= "true" | "false" | "null""#,
            &["true", "false", "null"],
            &["tru", "truefalse", "nul", ""],
        ),
        (
            // A rule over several lines inside brackets, comments, repetition bounds.
            "root ::= \"[\" (item (\", \" item){0,2})? \"]\" # a short list\nitem ::= [0-9]+ |\n  \"\\\"\" [a-z]* \"\\\"\"",
            &["[]", "[12]", "[\"name\", 12, \"\"]"],
            &["[1, 2, 3, 4]", "[\"A\"]", "[1,2]", "["],
        ),
        (
            // Code points beyond ASCII, in literals, ranges and escapes.
            "root ::= (\"é\" | [\\u3040-\\u309F] | \"\\x41\")+",
            &["é", "こんにちは", "Aéこ"],
            &["e", "こんにちはX", "ア"],
        ),
        (
            // Negated classes, `.` and optional parts.
            "root ::= \"\\\"\" [^\"\\n]* \"\\\"\" \" \"? .",
            &["\"héllo\" x", "\"\"é", "\"a\"\n"],
            &["\"a\nb\" x", "\"a\"", "\"a\"  x"],
        ),
        (
            // Nested rules with recursion.
            "root ::= value\nvalue ::= \"[\" ( value ( \",\" value )* )? \"]\" | [0-9]",
            &["[]", "[[1],[2,[3]]]", "7"],
            &["[", "[1,]", "[[1]"],
        ),
    ];
    for (grammar, good, bad) in set {
        for multi in [false, true] {
            for t in *good {
                assert!(
                    accepts(&vocab, grammar, t, multi),
                    "{grammar:?} refuses {t:?}"
                );
            }
            for t in *bad {
                assert!(
                    !accepts(&vocab, grammar, t, multi),
                    "{grammar:?} takes {t:?}"
                );
            }
        }
    }
}

fn refusal(c: Constraint) -> Error {
    match Constrained::new(&vocabulary(), &c) {
        Ok(_) => panic!("{c:?} was taken"),
        Err(e) => e,
    }
}

#[test]
fn bad_grammars_and_schemas_are_named_errors() {
    for (schema, keyword) in [
        (json!({"type": "array", "uniqueItems": true}), "uniqueItems"),
        (json!({"not": {"type": "string"}}), "not"),
        // Branches that overlap: as anyOf, an output could match both.
        (
            json!({"oneOf": [{"type": "string"}, {"type": "string", "maxLength": 3}]}),
            "oneOf",
        ),
        (
            json!({"type": "object", "properties": {"a": {"type": "string", "contentSchema": {}, "if": {}}}}),
            "if",
        ),
    ] {
        match refusal(Constraint::JsonSchema(schema.clone())) {
            Error::UnsupportedSchema { param, keywords } => {
                assert_eq!(param, "response_format.json_schema.schema");
                assert!(
                    keywords.iter().any(|k| k == keyword),
                    "{schema}: {keywords:?}"
                );
            }
            e => panic!("{schema}: {e}"),
        }
    }
    let e = refusal(Constraint::JsonSchema(json!(["not", "a", "schema"])));
    assert!(matches!(e, Error::BadConstraint { .. }), "{e}");

    for (grammar, says) in [
        ("item ::= \"a\"", "no root rule"),
        ("root ::= item", "item is used but not defined"),
        (
            "root ::= \"a\"\nroot ::= \"b\"",
            "line 2: rule root is defined twice",
        ),
        ("root ::= \"abc", "line 1: unterminated string"),
        ("root ::= \"a\" (\"b\"", "expected ) to close a group"),
        ("root ::= [z-a]", "reversed"),
        ("root ::= \"\\q\"", "unknown escape \\q"),
        ("root ::= \"a\"{3,1}", "repetition bounds"),
        ("root ::= <[1000]>", "token references"),
        ("root ::= \"a\"\n  \"b\"", "line 2: expected a rule name"),
    ] {
        match refusal(Constraint::Gbnf(grammar.into())) {
            Error::BadConstraint { param, reason } => {
                assert_eq!(param, "response_format.grammar");
                assert!(reason.contains(says), "{grammar:?}: {reason}");
            }
            e => panic!("{grammar:?}: {e}"),
        }
    }
}

#[test]
fn response_formats_of_openai_and_webllm() {
    let parse = |v: Value| -> quantweb::Result<CompleteOptions> {
        serde_json::from_value::<RequestOptions>(json!({ "response_format": v }))
            .unwrap()
            .into_options()
    };
    let schema = json!({"type": "object", "properties": {"a": {"type": "integer"}}});
    for (format, want) in [
        (json!({"type": "text"}), None),
        (json!({"type": null}), None),
        (json!({}), None),
        (json!({"type": "json_object"}), Some(Constraint::JsonObject)),
        (
            json!({"type": "json_schema", "json_schema": {"name": "x", "strict": true, "schema": schema}}),
            Some(Constraint::JsonSchema(schema.clone())),
        ),
        (
            json!({"type": "json_object", "schema": schema.to_string()}),
            Some(Constraint::JsonSchema(schema.clone())),
        ),
        (
            json!({"type": "grammar", "grammar": "root ::= \"a\""}),
            Some(Constraint::Gbnf("root ::= \"a\"".into())),
        ),
    ] {
        assert_eq!(parse(format.clone()).unwrap().constraint, want, "{format}");
    }
    for (format, param) in [
        (json!({"type": "yaml"}), "response_format.type"),
        (json!({"type": 5}), "response_format.type"),
        (json!("json_object"), "response_format"),
        (
            json!({"type": "json_schema"}),
            "response_format.json_schema",
        ),
        (
            json!({"type": "json_schema", "json_schema": {"schema": {}, "extra": 1}}),
            "response_format.json_schema.extra",
        ),
        (
            json!({"type": "json_object", "schema": "{"}),
            "response_format.schema",
        ),
        (json!({"type": "grammar"}), "response_format.grammar"),
        (
            json!({"type": "text", "grammar": "x"}),
            "response_format.grammar",
        ),
    ] {
        match parse(format.clone()) {
            Err(Error::BadConstraint { param: p, .. }) => assert_eq!(p, param, "{format}"),
            other => panic!("{format}: {other:?}"),
        }
    }
}

// ---- real models ----

fn engine(names: &[&str], on_cpu: bool) -> Option<Engine> {
    let paths = common::model_paths(names)?;
    let gguf = pollster::block_on(GgufModel::open(open_args(&paths).unwrap())).unwrap();
    let model = if on_cpu {
        pollster::block_on(Model::load(Cpu::new(0).unwrap(), &gguf, 1024)).unwrap()
    } else {
        pollster::block_on(Model::load(common::gpu()?, &gguf, 1024)).unwrap()
    };
    Some(Engine::new(&gguf, model).unwrap())
}

/// Each case answered greedily through the chat template, the schema in the system prompt as
/// an application would put it; the answer must end by itself and validate.
fn answers_validate(e: &mut Engine, cases: &[Case], model: &str) {
    let mut failed = Vec::new();
    for case in cases.iter().filter(|c| !c.open_ended) {
        let messages = [
            quantweb::chat::ChatMessage::new(
                "system",
                format!("Answer in JSON following this schema: {}", case.schema),
            ),
            quantweb::chat::ChatMessage::new("user", case.prompt.clone()),
        ];
        let prompt = e.chat_tokens(&messages, None).unwrap();
        let opts = CompleteOptions {
            max_tokens: 200,
            constraint: Some(Constraint::JsonSchema(case.schema.clone())),
            ..CompleteOptions::default()
        };
        let done = pollster::block_on(e.complete(&prompt, &opts, |_, _, _| true))
            .unwrap_or_else(|err| panic!("{model} {}: {err}", case.name));
        if done.finish_reason != FinishReason::Stop {
            failed.push(format!("{}: {:?} did not end", case.name, done.text));
            continue;
        }
        check(&case.schema, &done.text, &format!("{model} {}", case.name));
        eprintln!("{model} {}: {}", case.name, done.text);
    }
    assert!(failed.is_empty(), "{model}: {failed:#?}");
}

#[test]
fn smollm2_answers_every_schema_on_the_cpu() {
    let Some(mut e) = engine(&[common::SMOLLM2], true) else {
        return;
    };
    answers_validate(&mut e, &cases(), "SmolLM2");
}

#[test]
fn smollm2_answers_schemas_on_the_gpu() {
    let Some(mut e) = engine(&[common::SMOLLM2], false) else {
        return;
    };
    let cases: Vec<Case> = cases().into_iter().step_by(8).collect();
    answers_validate(&mut e, &cases, "SmolLM2 GPU");
}

#[test]
fn gemma3_answers_schemas_over_its_262k_vocabulary() {
    let Some(mut e) = engine(&common::GEMMA_PARTS, true) else {
        return;
    };
    let cases: Vec<Case> = cases().into_iter().step_by(2).collect();
    answers_validate(&mut e, &cases, "gemma3");
}

#[test]
fn a_tiny_random_model_still_gives_valid_json() {
    let Some(mut e) = engine(&["tiny-qwen2.gguf"], true) else {
        return;
    };
    let cases: Vec<Case> = cases().into_iter().step_by(4).collect();
    answers_validate(&mut e, &cases, "tiny-qwen2");
}
