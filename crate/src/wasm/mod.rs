//! The wasm edge: JS-facing functions (the browser's byte sources are `source::browser`).
//! Errors become JS `Error`s here and nowhere else, each with a `name` that says its kind
//! (see [`error_name`]).

use crate::engine::{CompleteOptions, RequestOptions};
use crate::error::Error;
use crate::gguf::GgufModel;
use crate::inspect::ModelInfo;
use crate::source::browser::open_sources;
use serde::Serialize;
use wasm_bindgen::prelude::*;

mod calculator;
mod compare;
mod engine;
mod quantize;

/// A panic is a bug, but its message must not be lost: wasm reports a panic only as
/// "unreachable", so the message and its stack go to the console first.
#[wasm_bindgen(start)]
fn start() {
    console_error_panic_hook::set_once();
}

/// Threaded build only: a helper Web Worker (www/cpu-helper.js) that instantiated this module
/// on the engine worker's memory registers itself and gets its index; it then reports itself
/// ready and calls [`cpu_helper_run`]. Two calls, so that the engine worker can wait for the
/// helpers before a model load counts them.
#[cfg(target_feature = "atomics")]
#[wasm_bindgen(js_name = cpuHelperJoin)]
pub fn cpu_helper_join() -> u32 {
    crate::cpu::pool::join_helper() as u32
}

/// Threaded build only: the helper's share of the CPU engine's work, forever (it spins, then
/// parks on `memory.atomic.wait32`, between jobs).
#[cfg(target_feature = "atomics")]
#[wasm_bindgen(js_name = cpuHelperRun)]
pub fn cpu_helper_run(index: u32) {
    crate::cpu::pool::run_helper(index as usize)
}

/// A failure as JS sees it: an `Error` with a `name`.
type JsResult<T> = std::result::Result<T, JsValue>;

fn js_error(name: &str, message: &str) -> JsValue {
    let e = js_sys::Error::new(message);
    e.set_name(name);
    e.into()
}

/// The JS `name` of an engine error, so that pages can react to a kind of failure without
/// parsing messages (quantweb.d.ts lists them).
fn error_name(e: &Error) -> &'static str {
    match e {
        Error::Http { .. } | Error::RangeNotSupported { .. } => "HttpError",
        Error::Network { .. } => "NetworkError",
        Error::UnsupportedType { .. }
        | Error::UnsupportedArchitecture { .. }
        | Error::UnsupportedTokenizer { .. }
        | Error::UnsupportedPreTokenizer { .. }
        | Error::UnsupportedVersion { .. } => "UnsupportedModelError",
        Error::BadMagic { .. }
        | Error::Truncated { .. }
        | Error::HeaderTooLarge { .. }
        | Error::LengthBeyondData { .. }
        | Error::UnknownValueType { .. }
        | Error::NestingTooDeep { .. }
        | Error::BadUtf8 { .. }
        | Error::Duplicate { .. }
        | Error::UnknownTensorType { .. }
        | Error::BadShape { .. }
        | Error::BadTensorOffset { .. }
        | Error::OverlappingTensors { .. }
        | Error::WrongValueType { .. }
        | Error::MissingKey { .. }
        | Error::BadValue { .. }
        | Error::Shards(_)
        | Error::NoSuchTensor(_)
        | Error::BadBlockData { .. } => "InvalidModelError",
        Error::ChatTemplate { .. } | Error::ChatTemplateLimit { .. } => "ChatTemplateError",
        Error::ContextFull { .. } => "ContextFullError",
        Error::InvalidRequest { .. } => "InvalidRequestError",
        Error::BadConstraint { .. } => "GrammarError",
        Error::UnsupportedSchema { .. } => "UnsupportedSchemaError",
        Error::NoToolSupport { .. } => "UnsupportedOptionError",
        Error::VocabMismatch { .. } => "VocabMismatchError",
        Error::DeviceLost { .. } => "DeviceLostError",
        Error::OutOfMemory { .. } => "OutOfMemoryError",
        // Listed rather than matched by `_`, so that a new variant has to be given a name.
        Error::Io { .. }
        | Error::ReadPastEnd { .. }
        | Error::NoSource
        | Error::BadRegex { .. }
        | Error::TokenOutOfRange { .. }
        | Error::NoChatTemplate { .. }
        | Error::Gpu(_)
        | Error::BadKvType(_)
        | Error::BadOption { .. }
        | Error::BadParamCount(_) => "Error",
    }
}

/// A request's options as JS sends them, checked.
fn complete_options(options: JsValue) -> JsResult<CompleteOptions> {
    if options.is_undefined() || options.is_null() {
        return Ok(CompleteOptions::default());
    }
    serde_wasm_bindgen::from_value::<RequestOptions>(options)
        .map_err(|e| bad_arg("bad completion options", e))?
        .into_options()
        .map_err(js_err)
}

fn to_js<T: Serialize>(v: &T) -> JsResult<JsValue> {
    v.serialize(&serde_wasm_bindgen::Serializer::json_compatible())
        .map_err(|e| js_error("Error", &e.to_string()))
}

fn js_err(e: Error) -> JsValue {
    let err = js_error(error_name(&e), &e.to_string());
    // As UnsupportedOptionError's: the field to fix, without parsing the message.
    if let Error::InvalidRequest { param, .. }
    | Error::BadConstraint { param, .. }
    | Error::UnsupportedSchema { param, .. }
    | Error::NoToolSupport { param, .. } = &e
    {
        let _ = js_sys::Reflect::set(&err, &"param".into(), &param.into());
    }
    if let Error::UnsupportedSchema { keywords, .. } = &e {
        let list: js_sys::Array = keywords.iter().map(|k| JsValue::from_str(k)).collect();
        let _ = js_sys::Reflect::set(&err, &"keywords".into(), &list);
    }
    err
}

/// An argument that did not deserialize; serde-wasm-bindgen's message already starts "Error: ".
fn bad_arg(what: &str, e: serde_wasm_bindgen::Error) -> JsValue {
    js_error(
        "TypeError",
        &format!("{what}: {}", e.to_string().trim_start_matches("Error: ")),
    )
}

/// Reads a model's header (only the header: HTTP Range for URLs, slices for files) and returns
/// what `quantweb inspect --json` prints.
#[wasm_bindgen]
pub async fn inspect(source: JsValue) -> JsResult<JsValue> {
    let model = GgufModel::open(open_sources(source).await.map_err(js_err)?)
        .await
        .map_err(js_err)?;
    to_js(&ModelInfo::from_model(&model).map_err(js_err)?)
}

/// Reads only the header of `source` (as `inspect`) and rejects, with the error `WasmEngine.load`
/// would give (UnsupportedModelError, InvalidModelError, …), a model this engine cannot run;
/// resolves to the `inspect` object otherwise. The worker calls it before downloading a model.
#[wasm_bindgen(js_name = checkRunnable)]
pub async fn check_runnable(source: JsValue) -> JsResult<JsValue> {
    let model = GgufModel::open(open_sources(source).await.map_err(js_err)?)
        .await
        .map_err(js_err)?;
    to_js(&crate::engine::check_runnable(&model).map_err(js_err)?)
}

/// A `load` or `quantize` progress report.
#[derive(Serialize)]
struct ProgressEvent<'a> {
    phase: &'static str,
    loaded: u64,
    total: u64,
    tensor: &'a str,
}
