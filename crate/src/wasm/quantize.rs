//! `quantize` in the browser: the CLI's conversion, written into an OPFS file.

use super::{bad_arg, js_err, js_error, to_js, JsResult, ProgressEvent};
use crate::error::Error;
use crate::gguf::GgufModel;
use crate::quant::{convert, GgmlType};
use crate::source::browser::{js_message, open_sources};
use serde::{Deserialize, Serialize};
use wasm_bindgen::prelude::*;

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
