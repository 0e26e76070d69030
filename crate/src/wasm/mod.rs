//! The wasm edge: JS-facing functions and browser byte sources (Blob/File, fetch with Range).
//! Errors become JS `Error`s here and nowhere else, each with a `name` that says its kind
//! (see [`error_name`]).

use crate::chat::ChatMessage;
use crate::cpu::Cpu;
use crate::engine::{self, CompleteOptions, Engine, RequestOptions};
use crate::error::{Error, Result};
use crate::gguf::{shard_names, GgufModel, INITIAL_WINDOW};
use crate::gpu::Gpu;
use crate::inspect::ModelInfo;
use crate::memory::{self, DeviceBudget, FitOptions, KvType, LargestTensor};
use crate::model::{LoadProgress, Model};
use crate::quant::{convert, GgmlType};
use crate::source::{check_range, window_slice, ByteSource, ReadFuture};
use js_sys::{Array, Uint8Array};
use serde::{Deserialize, Serialize};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;

#[wasm_bindgen]
extern "C" {
    /// `globalThis.fetch`: the same in a window and in a worker.
    #[wasm_bindgen(js_name = fetch)]
    fn global_fetch(req: &web_sys::Request) -> js_sys::Promise;
}

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

fn js_message(v: &JsValue) -> String {
    v.dyn_ref::<js_sys::Error>()
        .map(|e| String::from(e.message()))
        .or_else(|| v.as_string())
        .unwrap_or_else(|| format!("{v:?}"))
}

/// A `Blob` or `File` picked by the user: read locally, slice by slice.
struct BlobSource {
    name: String,
    blob: web_sys::Blob,
}

impl ByteSource for BlobSource {
    fn name(&self) -> &str {
        &self.name
    }
    fn size(&self) -> u64 {
        self.blob.size() as u64
    }
    fn read_at(&self, offset: u64, len: usize) -> ReadFuture<'_> {
        Box::pin(async move {
            check_range(self, offset, len)?;
            let io = |v: JsValue| Error::Io {
                source_name: self.name.clone(),
                message: js_message(&v),
            };
            let slice = self
                .blob
                .slice_with_f64_and_f64(offset as f64, (offset + len as u64) as f64)
                .map_err(io)?;
            let buf = JsFuture::from(slice.array_buffer()).await.map_err(io)?;
            Ok(Uint8Array::new(&buf).to_vec())
        })
    }
}

/// An HTTP(S) URL read with Range requests. Opening it fetches the first window, which also
/// gives the total size.
struct FetchSource {
    url: String,
    size: u64,
    prefetched: Vec<u8>,
}

impl FetchSource {
    /// `prefetch`: the header window for a model's first file, 1 byte (just the size) for the
    /// other parts.
    async fn open(url: &str, prefetch: u64) -> Result<Self> {
        let (prefetched, size) = fetch_range(url, 0, prefetch, None).await?;
        Ok(FetchSource {
            url: url.into(),
            size,
            prefetched,
        })
    }
}

async fn fetch_range(
    url: &str,
    offset: u64,
    len: u64,
    known_size: Option<u64>,
) -> Result<(Vec<u8>, u64)> {
    let net = |v: JsValue| Error::Network {
        url: url.into(),
        message: js_message(&v),
    };
    let headers = web_sys::Headers::new().map_err(net)?;
    headers
        .set(
            "Range",
            &format!("bytes={offset}-{}", offset + len.max(1) - 1),
        )
        .map_err(net)?;
    let init = web_sys::RequestInit::new();
    init.set_headers(&headers);
    let req = web_sys::Request::new_with_str_and_init(url, &init).map_err(net)?;
    let resp: web_sys::Response = JsFuture::from(global_fetch(&req))
        .await
        .map_err(net)?
        .unchecked_into();
    let status = resp.status();
    let header = |name: &str| resp.headers().get(name).ok().flatten();
    let content_length = header("content-length").and_then(|l| l.parse::<u64>().ok());
    let size = match status {
        206 => match header("content-range")
            .and_then(|cr| {
                cr.rsplit('/')
                    .next()
                    .and_then(|t| t.trim().parse::<u64>().ok())
            })
            .or(known_size)
        {
            Some(s) => s,
            // Cross-origin servers that do not expose Content-Range: ask for the length.
            None => head_length(url).await?,
        },
        200 if content_length.is_some_and(|l| l <= len) => content_length.unwrap_or(0),
        200 => {
            cancel_body(&resp);
            return Err(Error::RangeNotSupported {
                url: url.into(),
                status,
            });
        }
        416 => 0,
        _ => {
            cancel_body(&resp);
            let hint = match status {
                404 => " (not found: check the URL)",
                401 | 403 => " (access denied: the model may need a login or a token)",
                _ => "",
            };
            return Err(Error::Http {
                url: url.into(),
                status,
                hint,
            });
        }
    };
    let buf = JsFuture::from(resp.array_buffer().map_err(net)?)
        .await
        .map_err(net)?;
    let body = Uint8Array::new(&buf).to_vec();
    let want = len.min(size.saturating_sub(offset)) as usize;
    if body.len() < want {
        return Err(Error::Network {
            url: url.into(),
            message: format!("connection closed after {} of {want} bytes", body.len()),
        });
    }
    Ok((body[..want].to_vec(), size))
}

/// Stops the browser from downloading a body nobody will read (a whole model sent as a 200).
fn cancel_body(resp: &web_sys::Response) {
    if let Some(body) = resp.body() {
        // Dropping the promise is fine: there is nothing to do when the cancel completes.
        let _ = body.cancel();
    }
}

async fn head_length(url: &str) -> Result<u64> {
    let net = |v: JsValue| Error::Network {
        url: url.into(),
        message: js_message(&v),
    };
    let init = web_sys::RequestInit::new();
    init.set_method("HEAD");
    let req = web_sys::Request::new_with_str_and_init(url, &init).map_err(net)?;
    let resp: web_sys::Response = JsFuture::from(global_fetch(&req))
        .await
        .map_err(net)?
        .unchecked_into();
    resp.headers().get("content-length").ok().flatten().and_then(|l| l.parse().ok()).ok_or_else(|| Error::Network {
        url: url.into(),
        message: "the server exposes neither Content-Range nor Content-Length to this page (CORS Access-Control-Expose-Headers)".into(),
    })
}

impl ByteSource for FetchSource {
    fn name(&self) -> &str {
        &self.url
    }
    fn size(&self) -> u64 {
        self.size
    }
    fn read_at(&self, offset: u64, len: usize) -> ReadFuture<'_> {
        Box::pin(async move {
            check_range(self, offset, len)?;
            if let Some(bytes) = window_slice(&self.prefetched, offset, len) {
                return Ok(bytes.to_vec());
            }
            Ok(fetch_range(&self.url, offset, len as u64, Some(self.size))
                .await?
                .0)
        })
    }
}

/// `source`: a URL string, a Blob/File, or an array of them (shards or byte chunks, in order).
/// A lone URL or File name of a first shard (`-00001-of-0000N.gguf`) expands to all shards
/// for URLs; Files must all be given.
async fn open_sources(source: JsValue) -> Result<Vec<Box<dyn ByteSource>>> {
    let items: Vec<JsValue> = if Array::is_array(&source) {
        Array::from(&source).to_vec()
    } else {
        vec![source]
    };
    let items = match items.as_slice() {
        [one] => match one.as_string().and_then(|u| shard_names(&u)) {
            Some(names) => names.into_iter().map(JsValue::from).collect(),
            None => items,
        },
        _ => items,
    };
    let mut out: Vec<Box<dyn ByteSource>> = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        if let Some(url) = item.as_string() {
            out.push(Box::new(
                FetchSource::open(&url, if i == 0 { INITIAL_WINDOW } else { 1 }).await?,
            ));
        } else if let Some(blob) = item.dyn_ref::<web_sys::Blob>() {
            let name = item
                .dyn_ref::<web_sys::File>()
                .map(|f| f.name())
                .unwrap_or_else(|| "blob".into());
            out.push(Box::new(BlobSource {
                name,
                blob: blob.clone(),
            }));
        } else {
            return Err(Error::Io {
                source_name: format!("{item:?}"),
                message: "expected a URL string, a File or a Blob".into(),
            });
        }
    }
    Ok(out)
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
    to_js(&engine::check_runnable(&model).map_err(js_err)?)
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
struct EstimateOptions {
    context_length: Option<u64>,
    kv_type: Option<String>,
    batch: Option<u64>,
}

/// What `quantweb fit --json` prints, for an object returned by `inspect`.
#[wasm_bindgen(js_name = estimateMemory)]
pub fn estimate_memory(info: JsValue, options: JsValue) -> JsResult<JsValue> {
    let info: ModelInfo = serde_wasm_bindgen::from_value(info)
        .map_err(|e| bad_arg("not a model info object from inspect()", e))?;
    let o: EstimateOptions = if options.is_undefined() || options.is_null() {
        EstimateOptions::default()
    } else {
        serde_wasm_bindgen::from_value(options).map_err(|e| bad_arg("bad options", e))?
    };
    let d = FitOptions::default();
    let opts = FitOptions {
        context_length: o.context_length.unwrap_or(d.context_length),
        kv_type: o
            .kv_type
            .as_deref()
            .map(KvType::parse)
            .transpose()
            .map_err(js_err)?
            .unwrap_or(d.kv_type),
        batch: o.batch.unwrap_or(d.batch),
    };
    to_js(&memory::estimate(&info, &opts).map_err(js_err)?)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct FitQuery {
    total_bytes: u64,
    largest_tensor: LargestTensor,
    download_bytes: u64,
    device: DeviceBudget,
    /// "cpu": judge for the CPU engine instead (wasm memory, `deviceMemoryBytes`).
    #[serde(default)]
    engine: Option<String>,
    #[serde(default)]
    device_memory_bytes: Option<u64>,
}

/// fits / tight / does_not_fit with reasons, for a total (a row of `estimateMemory`) on a device.
#[wasm_bindgen(js_name = judgeFit)]
pub fn judge_fit(query: JsValue) -> JsResult<JsValue> {
    let q: FitQuery =
        serde_wasm_bindgen::from_value(query).map_err(|e| bad_arg("bad fit query", e))?;
    if q.engine.as_deref() == Some("cpu") {
        return to_js(&memory::cpu_verdict_with_storage(
            q.total_bytes,
            q.device_memory_bytes,
            q.download_bytes,
            q.device.storage_available_bytes,
        ));
    }
    to_js(&memory::verdict(
        q.total_bytes,
        &q.largest_tensor,
        q.download_bytes,
        &q.device,
    ))
}

#[derive(Serialize)]
struct RuleOfThumb {
    parameters: u64,
    rows: Vec<memory::RuleRow>,
}

/// The seed's quick rule for a typed parameter count ("8B", "135M").
#[wasm_bindgen(js_name = ruleOfThumb)]
pub fn rule_of_thumb(params: &str) -> JsResult<JsValue> {
    let parameters = memory::parse_param_count(params).map_err(js_err)?;
    to_js(&RuleOfThumb {
        parameters,
        rows: memory::rule_table(parameters),
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct QuantizeOptions {
    #[serde(rename = "type")]
    ty: String,
    #[serde(default)]
    allow_requantize: bool,
}

/// An OPFS file written from offset 0 through a sync access handle (dedicated workers only;
/// synchronous, which `convert::write` needs). `stop` makes the next write fail: how an abort
/// from JS ends a conversion between two chunks.
struct SyncHandleWriter<'a> {
    handle: &'a web_sys::FileSystemSyncAccessHandle,
    at: u64,
    stop: &'a std::cell::Cell<bool>,
}

impl std::io::Write for SyncHandleWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.stop.get() {
            // Not ErrorKind::Interrupted: write_all retries those.
            return Err(std::io::Error::other("the conversion was aborted"));
        }
        let options = web_sys::FileSystemReadWriteOptions::new();
        options.set_at(self.at as f64);
        let n = self
            .handle
            .write_with_u8_array_and_options(buf, &options)
            .map_err(|e| std::io::Error::other(js_message(&e)))?;
        // Chromium answers a write beyond the quota with a count that is not one (2^32 - 8).
        if n != buf.len() as f64 {
            return Err(std::io::Error::other(format!(
                "wrote {n} of {} bytes: the browser's storage quota is probably exceeded",
                buf.len()
            )));
        }
        self.at += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.handle
            .flush()
            .map_err(|e| std::io::Error::other(js_message(&e)))
    }
}

/// `quantweb quantize` in the browser: converts `source` (as `inspect`) to `options.type` with
/// the same bytes as the CLI (and so as llama.cpp's quantizer), tensor by tensor, a few MiB at a
/// time, into `out`, an OPFS file's sync access handle (the worker opens and closes it).
/// `onProgress({phase: "quantize", loaded, total, tensor})` counts output bytes: once with
/// `loaded` 0 before anything is written (the size is known: a full storage can refuse it),
/// then before each tensor; returning `false` from it aborts. Resolves to the plan's summary (`tensors`,
/// `converted`, `requantized`, `fallbacks` {type: tensor names}, `outBytes`) and `type`.
#[wasm_bindgen]
pub async fn quantize(
    source: JsValue,
    out: web_sys::FileSystemSyncAccessHandle,
    options: JsValue,
    on_progress: Option<js_sys::Function>,
) -> JsResult<JsValue> {
    let o: QuantizeOptions =
        serde_wasm_bindgen::from_value(options).map_err(|e| bad_arg("bad quantize options", e))?;
    let target = GgmlType::from_name(&o.ty).ok_or_else(|| {
        js_err(Error::BadOption {
            name: "type",
            value: o.ty.clone(),
            reason: "not a ggml type name (e.g. Q4_K, Q8_0, F16)",
        })
    })?;
    let gguf = GgufModel::open(open_sources(source).await.map_err(js_err)?)
        .await
        .map_err(js_err)?;
    let plans = convert::plan(&gguf, target, o.allow_requantize).map_err(js_err)?;
    let summary = convert::summarize(&gguf, target, &plans);
    let stop = std::cell::Cell::new(false);
    let report = |tensor: &str, loaded: u64| {
        let event = ProgressEvent {
            phase: "quantize",
            loaded,
            total: summary.out_bytes,
            tensor,
        };
        if let (Some(f), Ok(v)) = (&on_progress, to_js(&event)) {
            if f.call1(&JsValue::NULL, &v)
                .is_ok_and(|r| r.as_bool() == Some(false))
            {
                stop.set(true);
            }
        }
    };
    out.truncate_with_f64(0.0)
        .map_err(|e| js_error("Error", &js_message(&e)))?;
    let mut writer = SyncHandleWriter {
        handle: &out,
        at: 0,
        stop: &stop,
    };
    // The size is known before the first byte: the caller may refuse it here.
    report("", 0);
    if stop.get() {
        return Err(js_error("AbortError", "the conversion was aborted"));
    }
    let mut done = 0;
    convert::write(
        &gguf,
        target,
        &plans,
        &mut writer,
        "browser storage",
        |_, p| {
            report(&p.name, done);
            done += p.out_bytes();
        },
    )
    .await
    .map_err(|e| {
        if stop.get() {
            js_error("AbortError", "the conversion was aborted")
        } else {
            js_err(e)
        }
    })?;
    std::io::Write::flush(&mut writer).map_err(|e| js_error("Error", &e.to_string()))?;
    report("", summary.out_bytes);
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Done {
        #[serde(rename = "type")]
        ty: &'static str,
        #[serde(flatten)]
        summary: convert::PlanSummary,
    }
    to_js(&Done {
        ty: target.name(),
        summary,
    })
}

/// A model loaded onto this page's GPU, ready for completions: the engine of `www/worker.js`.
/// Methods that run the GPU return Promises; while one runs, the others report that the engine
/// is busy instead of waiting.
#[wasm_bindgen]
pub struct WasmEngine {
    inner: std::rc::Rc<std::cell::RefCell<Engine>>,
    info: EngineInfo,
    /// The file and the calculator's total, for `compare`.
    size: crate::compare::Size,
    /// GPU buffer bytes alive (the GPU engine only).
    gpu_bytes: Option<crate::gpu::LiveBytes>,
}

#[derive(Clone, Serialize)]
#[serde(rename_all = "camelCase")]
struct EngineInfo {
    architecture: String,
    name: Option<String>,
    context_length: u32,
    trained_context: u32,
    n_vocab: u32,
    weight_bytes: u64,
    kv_bytes: u64,
    chat_template: &'static str,
    adapter: String,
    /// "webgpu" or "cpu".
    backend: &'static str,
    /// Why that engine: the user's choice, or what `auto` found.
    backend_reason: String,
    /// Threads the CPU engine runs on (1 on the GPU: the page's worker).
    threads: usize,
}

/// Which engine `load` uses.
#[derive(Deserialize, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum BackendChoice {
    /// WebGPU on a hardware adapter; the CPU engine without WebGPU, with a CPU adapter
    /// (SwiftShader, llvmpipe, WARP) or when the model does not fit the GPU's limits.
    #[default]
    Auto,
    Webgpu,
    Cpu,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
struct LoadOptions {
    context_length: Option<u32>,
    backend: BackendChoice,
    /// CPU engine threads; more than one only in the threaded build (www/pkg-threads), with
    /// that many helper workers started.
    threads: Option<u32>,
    /// `() => Promise`: resolves after the worker's event loop had a turn (the CPU engine
    /// awaits it between forward passes, so that aborts get through).
    #[serde(with = "serde_wasm_bindgen::preserve")]
    yield_to_events: JsValue,
}

#[derive(Serialize)]
struct ProgressEvent<'a> {
    phase: &'static str,
    loaded: u64,
    total: u64,
    tensor: &'a str,
}

/// What this page's WebGPU adapter says of itself (wgpu's AdapterInfo keeps only the
/// description, which browsers leave empty).
struct BrowserAdapter {
    description: String,
    /// SwiftShader or another fallback: shaders run on the CPU.
    cpu: bool,
    /// Why there is no adapter to use: no `navigator.gpu`, or no adapter behind it.
    missing: Option<&'static str>,
}

async fn browser_adapter() -> BrowserAdapter {
    let get = |o: &JsValue, k: &str| {
        js_sys::Reflect::get(o, &JsValue::from_str(k)).unwrap_or(JsValue::UNDEFINED)
    };
    let text = |o: &JsValue, k: &str| get(o, k).as_string().unwrap_or_default();
    let gpu = get(&get(&js_sys::global(), "navigator"), "gpu");
    if gpu.is_undefined() || gpu.is_null() {
        return BrowserAdapter {
            description: String::new(),
            cpu: false,
            missing: Some("this browser has no WebGPU"),
        };
    }
    let adapter = match get(&gpu, "requestAdapter").dyn_into::<js_sys::Function>() {
        Ok(f) => match f.call0(&gpu).map(js_sys::Promise::from) {
            Ok(p) => JsFuture::from(p).await.unwrap_or(JsValue::NULL),
            Err(_) => JsValue::NULL,
        },
        Err(_) => JsValue::NULL,
    };
    let info = get(&adapter, "info");
    let (vendor, arch, desc) = (
        text(&info, "vendor"),
        text(&info, "architecture"),
        text(&info, "description"),
    );
    let description = [vendor.as_str(), arch.as_str(), desc.as_str()]
        .iter()
        .filter(|s| !s.is_empty())
        .copied()
        .collect::<Vec<_>>()
        .join(" ");
    BrowserAdapter {
        missing: adapter
            .is_null()
            .then_some("this browser offers WebGPU but no adapter (blocked or unsupported GPU)"),
        cpu: get(&info, "isFallbackAdapter").as_bool() == Some(true)
            || arch.eq_ignore_ascii_case("swiftshader")
            || desc.to_ascii_lowercase().contains("swiftshader"),
        description: if description.is_empty() {
            "WebGPU adapter".into()
        } else {
            description
        },
    }
}

mod compare;

const BUSY: &str = "the engine is busy with another request; wait for it or abort it";

#[wasm_bindgen]
impl WasmEngine {
    /// Opens `source` (as `inspect`), uploads its weights to a WebGPU device tensor by tensor,
    /// allocates the KV cache and compiles the kernels. `onProgress({phase, loaded, total,
    /// tensor})` follows the upload in tensor bytes (phase "upload"), then the compilation
    /// (phase "compile", 0 then 1 of 1).
    pub async fn load(
        source: JsValue,
        options: JsValue,
        on_progress: Option<js_sys::Function>,
    ) -> JsResult<WasmEngine> {
        let o: LoadOptions = if options.is_undefined() || options.is_null() {
            LoadOptions::default()
        } else {
            serde_wasm_bindgen::from_value(options).map_err(|e| bad_arg("bad load options", e))?
        };
        let gguf = GgufModel::open(open_sources(source).await.map_err(js_err)?)
            .await
            .map_err(js_err)?;
        engine::check_runnable(&gguf).map_err(js_err)?;
        let n_ctx = o
            .context_length
            .unwrap_or(FitOptions::default().context_length as u32);
        let report = |event: ProgressEvent| {
            if let (Some(f), Ok(v)) = (&on_progress, to_js(&event)) {
                // A throwing progress callback must not abort the load.
                let _ = f.call1(&JsValue::NULL, &v);
            }
        };
        let upload = |p: LoadProgress| {
            report(ProgressEvent {
                phase: "upload",
                loaded: p.loaded,
                total: p.total,
                tensor: p.tensor,
            })
        };
        let browser = browser_adapter().await;
        let threads = o.threads.unwrap_or(1) as usize;
        let gguf_ref = &gguf;
        let pause = o.yield_to_events.dyn_ref::<js_sys::Function>().cloned();
        let on_cpu = |reason: String| async move {
            let mut cpu = Cpu::new(threads).map_err(js_err)?;
            cpu.yield_hook = pause.map(|f| -> crate::cpu::YieldHook {
                Box::new(move || {
                    let promise = f.call0(&JsValue::NULL).ok().map(js_sys::Promise::from);
                    Box::pin(async move {
                        if let Some(p) = promise {
                            let _ = JsFuture::from(p).await;
                        }
                    })
                })
            });
            let n = cpu.threads();
            let adapter = format!(
                "CPU ({}, {n} thread{})",
                cpu.simd.name(),
                if n == 1 { "" } else { "s" }
            );
            let model = Model::load_with_progress(cpu, gguf_ref, n_ctx, upload)
                .await
                .map_err(js_err)?;
            Ok::<_, JsValue>((model, adapter, reason))
        };
        let (model, adapter, reason) = match (o.backend, browser.missing) {
            (BackendChoice::Cpu, _) => on_cpu("chosen by the page".into()).await?,
            (BackendChoice::Auto, Some(why)) => on_cpu(why.into()).await?,
            (BackendChoice::Auto, None) if browser.cpu => {
                let why = format!(
                    "WebGPU runs on the CPU here ({}), slower than the CPU engine",
                    browser.description
                );
                on_cpu(why).await?
            }
            (choice, _) => {
                let mut gpu = Gpu::new().await.map_err(js_err)?;
                // wgpu marks only a "fallback" adapter as a CPU one; SwiftShader may not say so.
                gpu.features.cpu |= browser.cpu;
                let reason = match choice {
                    BackendChoice::Webgpu => "chosen by the page".to_string(),
                    _ => format!("a WebGPU adapter: {}", browser.description),
                };
                match Model::load_with_progress(gpu, &gguf, n_ctx, upload).await {
                    Ok(model) => (model, browser.description, reason),
                    // The weights fit memory but not what this GPU lets one buffer hold.
                    Err(e @ Error::Gpu(_)) if choice == BackendChoice::Auto => {
                        on_cpu(format!("the model does not fit this GPU: {e}")).await?
                    }
                    Err(e) => return Err(js_err(e)),
                }
            }
        };
        let compiling = |loaded| ProgressEvent {
            phase: "compile",
            loaded,
            total: 1,
            tensor: "",
        };
        report(compiling(0));
        model.compile().map_err(js_err)?;
        report(compiling(1));
        let size = ModelInfo::from_model(&gguf)
            .and_then(|info| crate::compare::Size::of(&info))
            .map_err(js_err)?;
        let gpu_bytes = model.gpu().map(Gpu::live_counter);
        let engine = Engine::new(&gguf, model).map_err(js_err)?;
        let m = &engine.model;
        let info = EngineInfo {
            architecture: format!("{:?}", m.config.arch).to_lowercase(),
            name: gguf
                .metadata
                .get("general.name")
                .and_then(|v| v.as_str())
                .map(String::from),
            context_length: m.n_ctx,
            trained_context: m.config.n_ctx_train,
            n_vocab: m.config.n_vocab,
            weight_bytes: m.weight_bytes(),
            kv_bytes: m.kv_bytes(),
            chat_template: engine.template_source,
            adapter,
            backend: m.backend_name(),
            backend_reason: reason,
            threads: m.cpu().map_or(1, |c| c.threads()),
        };
        Ok(WasmEngine {
            inner: std::rc::Rc::new(std::cell::RefCell::new(engine)),
            info,
            size,
            gpu_bytes,
        })
    }

    /// `{architecture, name, contextLength, trainedContext, nVocab, weightBytes, kvBytes,
    /// chatTemplate ("model" | "gemma" | "chatml" | "custom"), adapter}`.
    pub fn info(&self) -> JsResult<JsValue> {
        to_js(&self.info)
    }

    /// Bytes of the GPU buffers the engine holds now (weights, KV cache, scratch, cached
    /// parameters), tracked by the engine as WebGPU reports none; undefined on the CPU engine.
    /// Readable while a request runs.
    #[wasm_bindgen(js_name = gpuBufferBytes)]
    pub fn gpu_buffer_bytes(&self) -> Option<f64> {
        self.gpu_bytes.as_ref().map(|l| l.get() as f64)
    }

    /// Token ids of `text` without BOS.
    pub fn tokenize(&self, text: &str, parse_special: bool) -> JsResult<Vec<u32>> {
        let e = self
            .inner
            .try_borrow()
            .map_err(|_| js_error("BusyError", BUSY))?;
        Ok(e.tokenizer.encode(text, false, parse_special))
    }

    pub fn detokenize(&self, ids: Vec<u32>) -> JsResult<String> {
        let e = self
            .inner
            .try_borrow()
            .map_err(|_| js_error("BusyError", BUSY))?;
        e.tokenizer.decode(&ids, false).map_err(js_err)
    }

    /// Prompt ids as llama.cpp makes them (BOS first when the model adds one).
    #[wasm_bindgen(js_name = promptTokens)]
    pub fn prompt_tokens(&self, text: &str, parse_special: bool) -> JsResult<Vec<u32>> {
        let e = self
            .inner
            .try_borrow()
            .map_err(|_| js_error("BusyError", BUSY))?;
        Ok(e.prompt_tokens(text, parse_special))
    }

    /// Prompt ids of `[{role, content, tool_calls?, tool_call_id?, name?}, …]` through the chat
    /// template, ready for the assistant's turn, as llama.cpp makes them (a BOS the template
    /// writes is not doubled). `options`: the request's, whose `tools` the template shows.
    #[wasm_bindgen(js_name = chatTokens)]
    pub fn chat_tokens(&self, messages: JsValue, options: JsValue) -> JsResult<Vec<u32>> {
        let msgs: Vec<ChatMessage> = serde_wasm_bindgen::from_value(messages)
            .map_err(|e| bad_arg("messages must be [{role, content}, …]", e))?;
        let opts = complete_options(options)?;
        let e = self
            .inner
            .try_borrow()
            .map_err(|_| js_error("BusyError", BUSY))?;
        e.chat_tokens(&msgs, opts.tools.as_ref()).map_err(js_err)
    }

    /// Replaces the model's chat template (as llama.cpp's `--chat-template-file`).
    #[wasm_bindgen(js_name = setChatTemplate)]
    pub fn set_chat_template(&self, source: &str) -> JsResult<()> {
        let mut e = self
            .inner
            .try_borrow_mut()
            .map_err(|_| js_error("BusyError", BUSY))?;
        e.set_chat_template(source).map_err(js_err)
    }

    /// Generates after `prompt` (ids). `options`: `{max_tokens, temperature, top_k, top_p,
    /// min_p, repeat_penalty, seed, stop, logprobs, top_logprobs}`. `onToken(piece, id,
    /// logprob)` is called per token (`logprob`: the token's entry with `logprobs`, else
    /// undefined); returning `false` stops. Resolves to `{prompt_tokens, tokens, text,
    /// finish_reason, timings, usage, cached_tokens, logprobs?}`.
    #[allow(clippy::await_holding_refcell_ref)] // see below
    pub fn complete(
        &self,
        prompt: Vec<u32>,
        options: JsValue,
        on_token: Option<js_sys::Function>,
    ) -> JsResult<js_sys::Promise> {
        let opts = complete_options(options)?;
        let inner = self.inner.clone();
        Ok(wasm_bindgen_futures::future_to_promise(async move {
            // Held across the awaits on purpose: it is the engine's lock, and every other
            // method only try-borrows, answering BUSY instead of panicking.
            let mut e = inner
                .try_borrow_mut()
                .map_err(|_| js_error("BusyError", BUSY))?;
            let done = e
                .complete(&prompt, &opts, |piece, id, logprob| match &on_token {
                    // `false` or a throw stops generation.
                    Some(f) => f
                        .call3(
                            &JsValue::NULL,
                            &JsValue::from_str(piece),
                            &JsValue::from(id),
                            &logprob
                                .map_or(Ok(JsValue::UNDEFINED), to_js)
                                .unwrap_or_default(),
                        )
                        .is_ok_and(|v| v.as_bool() != Some(false)),
                    None => true,
                })
                .await
                .map_err(js_err)?;
            to_js(&done)
        }))
    }

    /// Forgets the conversation in the KV cache.
    pub fn reset(&self) -> JsResult<()> {
        let mut e = self
            .inner
            .try_borrow_mut()
            .map_err(|_| js_error("BusyError", BUSY))?;
        e.reset();
        Ok(())
    }
}
