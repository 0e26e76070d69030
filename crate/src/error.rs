//! The one error type of the crate. Every message names the offending values so that a user who
//! sees it in the CLI or the page knows what is wrong with which file.

use crate::quant::GgmlType;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    // ---- reading bytes ----
    #[error("{source_name}: {message}")]
    Io {
        source_name: String,
        message: String,
    },
    #[error("{url}: HTTP {status}{hint}")]
    Http {
        url: String,
        status: u16,
        hint: &'static str,
    },
    #[error("{url}: the server ignored the Range request (answered {status} instead of 206); it must support HTTP Range to read the header without downloading the model")]
    RangeNotSupported { url: String, status: u16 },
    #[error(
        "{url}: network error: {message} (offline, blocked by CORS, or the server is unreachable)"
    )]
    Network { url: String, message: String },
    #[error(
        "{source_name}: read of {len} bytes at offset {offset} is beyond its end ({size} bytes)"
    )]
    ReadPastEnd {
        source_name: String,
        offset: u64,
        len: u64,
        size: u64,
    },

    // ---- GGUF header ----
    #[error("{source_name}: not a GGUF file (starts with {found:02x?}, expected \"GGUF\")")]
    BadMagic { source_name: String, found: Vec<u8> },
    #[error("{source_name}: GGUF version {version} is not supported (only 2 and 3)")]
    UnsupportedVersion { source_name: String, version: u32 },
    #[error("{source_name}: truncated: the header needs bytes up to offset {needed}, but the file has only {size}")]
    Truncated {
        source_name: String,
        needed: u64,
        size: u64,
    },
    #[error("{source_name}: the header is larger than {limit} bytes; refusing to read it")]
    HeaderTooLarge { source_name: String, limit: u64 },
    #[error("{source_name}: {what} claims {claimed} {unit}, but only {available} bytes remain in the file")]
    LengthBeyondData {
        source_name: String,
        what: String,
        claimed: u64,
        unit: &'static str,
        available: u64,
    },
    #[error("{source_name}: metadata key {key:?} has unknown value type id {type_id}")]
    UnknownValueType {
        source_name: String,
        key: String,
        type_id: u32,
    },
    #[error("{source_name}: metadata arrays nest deeper than {limit} levels at key {key:?}")]
    NestingTooDeep {
        source_name: String,
        key: String,
        limit: u32,
    },
    #[error("{source_name}: {what} is not valid UTF-8")]
    BadUtf8 { source_name: String, what: String },
    #[error("{source_name}: duplicate {what} {name:?}")]
    Duplicate {
        source_name: String,
        what: &'static str,
        name: String,
    },
    #[error("{source_name}: tensor {tensor:?} has unknown ggml type id {type_id}")]
    UnknownTensorType {
        source_name: String,
        tensor: String,
        type_id: u32,
    },
    #[error("{source_name}: tensor {tensor:?} has invalid shape {dims:?}: {reason}")]
    BadShape {
        source_name: String,
        tensor: String,
        dims: Vec<u64>,
        reason: String,
    },
    #[error("{source_name}: tensor {tensor:?} data [{start}, {end}) {reason} (tensor data section is {data_size} bytes)")]
    BadTensorOffset {
        source_name: String,
        tensor: String,
        start: u64,
        end: u64,
        data_size: u64,
        reason: String,
    },
    #[error("{source_name}: tensors {a:?} and {b:?} overlap")]
    OverlappingTensors {
        source_name: String,
        a: String,
        b: String,
    },
    #[error("{source_name}: metadata key {key:?} has {found}, expected {expected}")]
    WrongValueType {
        source_name: String,
        key: String,
        expected: &'static str,
        found: String,
    },
    #[error("{source_name}: required metadata key {key:?} is missing")]
    MissingKey { source_name: String, key: String },
    #[error("{source_name}: invalid value for {key:?}: {reason}")]
    BadValue {
        source_name: String,
        key: String,
        reason: String,
    },

    // ---- models made of several parts ----
    #[error("{0}")]
    Shards(String),
    #[error("no model given")]
    NoSource,
    #[error("tensor {0:?} not found in the model")]
    NoSuchTensor(String),

    // ---- quant types ----
    #[error("type {ty} is not supported (tensors: {tensors}); supported: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_NL, IQ4_XS")]
    UnsupportedType { ty: GgmlType, tensors: String },
    #[error("{ty} data of {len} bytes is not a whole number of {block_bytes}-byte blocks")]
    BadBlockData {
        ty: GgmlType,
        len: usize,
        block_bytes: u64,
    },

    // ---- running a model ----
    #[error("architecture {arch:?} is not supported; supported: {supported}")]
    UnsupportedArchitecture { arch: String, supported: String },
    #[error("context full: {needed} tokens needed but the context holds {n_ctx}; start a new conversation or load with a longer context")]
    ContextFull { n_ctx: u32, needed: u64 },
    /// A request (its options or messages) the engine refuses before running anything; `param`
    /// names the field as the request spells it (`stop[1]`, `messages[0].role`).
    #[error("invalid request: {param} = {value}: {reason}")]
    InvalidRequest {
        param: String,
        value: String,
        reason: String,
    },

    /// A response format or grammar that cannot constrain the output: not a grammar, not a
    /// schema, or one whose language the parser cannot hold.
    #[error("invalid {param}: {reason}")]
    BadConstraint { param: String, reason: String },
    /// A JSON schema using keywords constrained decoding does not implement (docs/structured-output.md lists the ones it does).
    #[error("{param}: JSON schema keyword(s) {} not supported for constrained output", keywords.join(", "))]
    UnsupportedSchema {
        param: String,
        keywords: Vec<String>,
    },

    /// Tools asked of a model whose chat template cannot show them or whose calls it cannot
    /// read (docs/tools.md lists the formats).
    #[error("{param}: {reason}")]
    NoToolSupport { param: String, reason: String },

    /// `compare`: a candidate that reads text differently from the base.
    #[error("{candidate}: not the base model's vocabulary ({reason}); every candidate must be a quantization of the same model")]
    VocabMismatch { candidate: String, reason: String },

    // ---- tokenizer and chat template ----
    #[error("{source_name}: tokenizer model {model:?} (tokenizer.ggml.model) is not supported; supported: \"gpt2\" (byte-level BPE), \"llama\" (SentencePiece)")]
    UnsupportedTokenizer { source_name: String, model: String },
    #[error("{source_name}: pre-tokenizer {pre:?} (tokenizer.ggml.pre) is not supported; supported: {supported}")]
    UnsupportedPreTokenizer {
        source_name: String,
        pre: String,
        supported: String,
    },
    #[error("pre-tokenizer regex {regex:?}: {reason}")]
    BadRegex { regex: String, reason: String },
    #[error("token id {id} is out of range (the vocabulary has {n_vocab} tokens)")]
    TokenOutOfRange { id: u32, n_vocab: usize },
    #[error("{source_name}: the model has no chat template (tokenizer.chat_template); choose one explicitly, e.g. ChatTemplate::chatml()")]
    NoChatTemplate { source_name: String },
    #[error("chat template: {message}")]
    ChatTemplate { message: String },
    #[error("chat template{}: over its {limit} limit of {value} (the template loops, recurses or builds text without end); this model's template cannot be used: format the prompt yourself and use complete()", at_line(*line))]
    ChatTemplateLimit {
        limit: &'static str,
        value: u64,
        line: Option<usize>,
    },

    // ---- GPU ----
    #[error("GPU: {0}")]
    Gpu(String),

    #[error("the GPU device was lost ({reason}): load the model again (reload the page if it keeps happening)")]
    DeviceLost { reason: String },

    // ---- CPU ----
    #[error("not enough memory for {what}: the CPU engine holds the weights in this process's memory (at most 4 GiB in a browser); choose a smaller model or quantization")]
    OutOfMemory { what: String },

    // ---- calculator ----
    #[error("unknown KV cache type {0:?}; use f16, f32 or q8_0")]
    BadKvType(String),
    #[error("invalid option {name} = {value}: {reason}")]
    BadOption {
        name: &'static str,
        value: String,
        reason: &'static str,
    },
    #[error("cannot read {0:?} as a parameter count; write e.g. 135M, 7B or 8e9")]
    BadParamCount(String),

    // ---- site index (`quantweb index`, native only: the page never indexes a site) ----
    #[cfg(not(target_arch = "wasm32"))]
    #[error("{0}: not a directory; give the directory of the built site (the one holding its index.html)")]
    NotADirectory(String),
    #[cfg(not(target_arch = "wasm32"))]
    #[error("{dir}: no pages to index among its {files} .html files (404.html, pages marked noindex and pages without main text are left out)")]
    NoPages { dir: String, files: usize },
}

/// " at line N" where the error has one.
fn at_line(line: Option<usize>) -> String {
    line.map(|l| format!(" at line {l}")).unwrap_or_default()
}
