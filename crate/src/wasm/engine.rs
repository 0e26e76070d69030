//! `WasmEngine`: a model loaded on WebGPU or the CPU engine, and its requests.

use super::{bad_arg, complete_options, js_err, js_error, to_js, JsResult, ProgressEvent};
use crate::chat::ChatMessage;
use crate::cpu::Cpu;
use crate::engine::Engine;
use crate::error::Error;
use crate::gguf::GgufModel;
use crate::gpu::Gpu;
use crate::inspect::ModelInfo;
use crate::memory::FitOptions;
use crate::model::{LoadProgress, Model};
use crate::source::browser::open_sources;
use serde::{Deserialize, Serialize};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;

/// A model loaded onto this page's GPU, ready for completions: the engine of `www/worker.js`.
/// Methods that run the GPU return Promises; while one runs, the others report that the engine
/// is busy instead of waiting.
#[wasm_bindgen]
pub struct WasmEngine {
    pub(super) inner: std::rc::Rc<std::cell::RefCell<Engine>>,
    info: EngineInfo,
    /// The file and the calculator's total, for `compare`.
    pub(super) size: crate::compare::Size,
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

pub(super) const BUSY: &str = "the engine is busy with another request; wait for it or abort it";

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
        crate::engine::check_runnable(&gguf).map_err(js_err)?;
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
