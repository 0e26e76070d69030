//! The fuzz corpora as plain tests: every file of fuzz/corpus/TARGET goes through the harness
//! that the libFuzzer target TARGET runs (`quantweb::fuzzing`), on stable and in debug builds,
//! so CI checks every seed and every past finding without nightly or cargo-fuzz. The findings
//! also have a test each below, named after them (docs/fuzzing.md).
//!
//! The synthetic seeds are written by `write_seeds` (ignored; run it by name to regenerate them).

use quantweb::fuzzing::{self, SEPARATOR};
use quantweb::gguf::{GgufWriter, Value, ValueType};
use quantweb::quant::GgmlType;
use std::path::{Path, PathBuf};

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target)
}

/// Runs `harness` on every file of the target's corpus, naming the file that fails.
fn run_corpus(target: &str, harness: fn(&[u8])) {
    let dir = corpus_dir(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{} is empty", dir.display());
    for f in files {
        let data = std::fs::read(&f).unwrap();
        if std::panic::catch_unwind(|| harness(&data)).is_err() {
            panic!("fuzz input {} fails", f.display());
        }
    }
}

#[test]
fn gguf_header_corpus() {
    run_corpus("gguf_header", fuzzing::gguf_header);
}

#[test]
fn gguf_model_corpus() {
    run_corpus("gguf_model", fuzzing::gguf_model);
}

#[test]
fn tokenizer_corpus() {
    run_corpus("tokenizer", fuzzing::tokenizer);
}

#[test]
fn chat_template_corpus() {
    run_corpus("chat_template", fuzzing::chat_template);
}

#[test]
fn convert_plan_corpus() {
    run_corpus("convert_plan", fuzzing::convert_plan);
}

#[test]
fn byte_ranges_corpus() {
    run_corpus("byte_ranges", fuzzing::byte_ranges);
}

// ---- seeds ----

fn join(parts: &[&[u8]]) -> Vec<u8> {
    parts.join(SEPARATOR)
}

fn f32_bytes(n: usize) -> Vec<u8> {
    (0..n)
        .flat_map(|i| ((i as f32 * 0.37).sin() * 3.0).to_le_bytes())
        .collect()
}

/// A small model with every metadata value type and a few tensor types.
fn small_model() -> GgufWriter {
    GgufWriter::new()
        .kv("general.architecture", Value::String("llama".into()))
        .kv("general.alignment", Value::U32(32))
        .kv("u8", Value::U8(7))
        .kv("i8", Value::I8(-7))
        .kv("u16", Value::U16(700))
        .kv("i16", Value::I16(-700))
        .kv("i32", Value::I32(-70_000))
        .kv("f32", Value::F32(0.5))
        .kv("bool", Value::Bool(true))
        .kv("u64", Value::U64(1 << 40))
        .kv("i64", Value::I64(-1 << 40))
        .kv("f64", Value::F64(-0.25))
        .kv(
            "nested",
            Value::Array(
                ValueType::Array,
                vec![Value::Array(
                    ValueType::U8,
                    vec![Value::U8(1), Value::U8(2)],
                )],
            ),
        )
        .kv(
            "tokenizer.ggml.tokens",
            Value::Array(
                ValueType::String,
                ["<unk>", "<s>", "</s>", "▁a"]
                    .map(|t| Value::String(t.into()))
                    .to_vec(),
            ),
        )
        .tensor("token_embd.weight", &[32, 2], GgmlType::F32, f32_bytes(64))
        .tensor(
            "blk.0.attn_norm.weight",
            &[32],
            GgmlType::F32,
            f32_bytes(32),
        )
        .tensor(
            "blk.0.attn_q.weight",
            &[32, 2],
            GgmlType::Q8_0,
            vec![0x11; 2 * 34],
        )
        .tensor(
            "blk.0.ffn_up.weight",
            &[48, 2],
            GgmlType::F16,
            vec![0x3c; 192],
        )
}

/// Shard `no` of two, as `gguf-split` writes them.
fn shard(no: u16, tensor: &str) -> Vec<u8> {
    let mut w = GgufWriter::new()
        .kv("split.no", Value::U16(no))
        .kv("split.count", Value::U16(2))
        .kv("split.tensors.count", Value::I32(2));
    if no == 0 {
        w = w.kv("general.architecture", Value::String("llama".into()));
    }
    w.tensor(tensor, &[32, 2], GgmlType::F32, f32_bytes(64))
        .to_bytes()
}

/// A tokenizer input as `fuzzing::tokenizer` reads it: flags (u16), token count and tokens
/// (length-prefixed), merges (pairs of token indices), token types (`types` normal ones),
/// pre-tokenizer index, switches, text.
fn tokenizer_seed(
    flags: u16,
    tokens: &[&str],
    merges: &[(u8, u8)],
    types: usize,
    text: &str,
) -> Vec<u8> {
    let mut b = flags.to_le_bytes().to_vec();
    b.push(tokens.len() as u8);
    for t in tokens {
        b.push(t.len() as u8);
        b.extend_from_slice(t.as_bytes());
    }
    b.push(merges.len() as u8);
    for &(x, y) in merges {
        b.extend_from_slice(&[x, y]);
    }
    b.resize(b.len() + types, 0);
    // Pre-tokenizer 0, "default" (read for BPE only).
    if flags & 2 == 0 && flags & 1 != 0 || flags & (1 << 7) != 0 {
        b.push(0);
    }
    // add_space_prefix, add_bos_token, add_eos_token: absent.
    b.extend_from_slice(&[0, 0, 0]);
    b.extend_from_slice(text.as_bytes());
    b
}

fn write(target: &str, name: &str, data: &[u8]) {
    let dir = corpus_dir(target);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(name), data).unwrap();
}

#[test]
#[ignore = "writes the synthetic seeds into fuzz/corpus"]
fn write_seeds() {
    let model = small_model().to_bytes();
    write("gguf_header", "seed-small-model", &model);
    write("byte_ranges", "seed-small-model", &{
        // 3 cuts, 3 reads (one across the cuts, one past the end, one at u64::MAX - 2), file.
        let mut b = vec![3, 10, 0, 200, 0, 0x40, 1, 3];
        for read in [
            [0, 5, 0, 0xf4, 1],
            [0, 0xff, 0xff, 0x10, 0],
            [1, 2, 0, 4, 0],
        ] {
            b.extend_from_slice(&read);
        }
        b.extend_from_slice(&model);
        b
    });
    write("gguf_model", "seed-single", &model);
    let (a, rest) = model.split_at(100);
    let (b, c) = rest.split_at(300);
    write("gguf_model", "seed-three-chunks", &join(&[a, b, c]));
    write(
        "gguf_model",
        "seed-two-shards",
        &join(&[&shard(0, "a.weight"), &shard(1, "b.weight")]),
    );
    // Targets: F16 (1), Q8_0 (8), Q4_K (12) with the fallback for 48-value rows, and IQ4_XS
    // (23) allowed to requantize the Q8_0 tensor.
    for (name, choice) in [
        ("f16", 1u8),
        ("q8_0", 8),
        ("q4_k", 12),
        ("iq4_xs", 23 | 0x40),
    ] {
        let mut b = vec![choice];
        b.extend_from_slice(&model);
        write("convert_plan", &format!("seed-{name}"), &b);
    }
    let spm_tokens = ["<unk>", "<s>", "</s>", "▁the", "he", "▁t", "th"];
    // SentencePiece: byte tokens (bit 2), ▁ (bit 3), merged tokens (bit 4), distinct (bit 5),
    // token types (bit 6): the six normal ones, with the byte tokens as byte tokens.
    write(
        "tokenizer",
        "seed-spm",
        &tokenizer_seed(
            1 << 2 | 1 << 3 | 1 << 4 | 1 << 5 | 1 << 6,
            &spm_tokens,
            &[(5, 4), (3, 6)],
            9,
            "the theme, there!",
        ),
    );
    write(
        "tokenizer",
        "seed-spm-plain",
        &tokenizer_seed(
            1 << 2 | 1 << 3 | 1 << 4 | 1 << 5 | 1 << 6,
            &spm_tokens[3..],
            &[(2, 1), (0, 3)],
            6,
            "the theme, there! ü€",
        ),
    );
    // Byte-level BPE with the byte alphabet (bit 2), merges making their tokens (bit 4),
    // distinct tokens (bit 5).
    write(
        "tokenizer",
        "seed-bpe",
        &tokenizer_seed(
            1 | 1 << 2 | 1 << 4 | 1 << 5,
            &["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
            &[(3 + b'h', 3 + b'e'), (3 + b't', 3 + b'h')],
            0,
            "Hello the world 123 <|im_end|>",
        ),
    );
    write(
        "tokenizer",
        "seed-bpe-plain",
        &tokenizer_seed(
            1 | 1 << 2 | 1 << 4 | 1 << 5,
            &[],
            &[(b'h', b'e'), (b' ', b't')],
            0,
            "Hello there, 123 ü€",
        ),
    );
    let conversation: Vec<&[u8]> = vec![
        b"<s>",
        b"</s>",
        b"system",
        b"Be brief.",
        b"user",
        b"Hi",
        b"assistant",
        b"Hello!",
        b"user",
        b"Again",
    ];
    for (name, template) in [
        ("chatml", quantweb::chat::CHATML),
        ("gemma", quantweb::chat::GEMMA),
        ("features", FEATURES_TEMPLATE),
    ] {
        let mut fields = vec![template.as_bytes()];
        fields.extend(&conversation);
        let mut b = vec![1];
        b.extend(join(&fields));
        write("chat_template", &format!("seed-{name}"), &b);
    }
}

/// A template that uses what real ones do: macros, namespaces, loop variables, filters, tests,
/// slicing, `raise_exception`, `strftime_now` and Python string methods.
const FEATURES_TEMPLATE: &str = r#"{%- macro render(m) -%}<|{{ m.role }}|>{{ m['content'] | trim }}{%- endmacro -%}
{{- bos_token }}{% set ns = namespace(system='', n=0) %}
{%- if messages[0].role == 'system' %}{% set ns.system = messages[0].content %}{% set loop_messages = messages[1:] %}{% else %}{% set loop_messages = messages %}{% endif %}
{%- for m in loop_messages %}{% set ns.n = ns.n + 1 %}
{%- if m.role not in ['user', 'assistant'] %}{{ raise_exception('bad role ' ~ m.role) }}{% endif %}
{%- if loop.first and ns.system %}{{ ns.system | upper }}{{ '\n' }}{% endif %}
{{- render(m) }}{% if m.content.startswith('H') %}[{{ m.content | length }}]{% endif %}{{ eos_token if m.role == 'assistant' }}
{%- endfor %}
{%- if add_generation_prompt %}<|assistant|>{{ strftime_now('%d %b %Y') }} {{ messages | map(attribute='role') | join(',') }} {{ ns | tojson }}{% endif %}"#;

// ---- findings, one test each (docs/fuzzing.md) ----

/// Finding 1 (gguf_model): a file that ends inside the padding after its header opened when its
/// tensors hold no bytes, and reading one then failed: the data section started past the end.
#[test]
fn finding_1_data_section_past_end_of_file() {
    let mut bytes = GgufWriter::new()
        .tensor("empty", &[0], GgmlType::F32, vec![])
        .to_bytes();
    // Header 61 bytes, padded to 64: cut the padding.
    bytes.truncate(61);
    let open = pollster::block_on(quantweb::gguf::GgufModel::open(vec![Box::new(
        quantweb::source::MemorySource::new("m.gguf", bytes.clone()),
    )]));
    match open {
        Err(quantweb::Error::BadTensorOffset { tensor, .. }) => assert_eq!(tensor, "empty"),
        other => panic!("{:?}", other.map(|m| m.tensors.len())),
    }
    fuzzing::gguf_model(&bytes);
}
