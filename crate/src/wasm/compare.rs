//! `WasmEngine.compare`: the page's Compare view and the JS `compare()` over engines the worker
//! has loaded (one per model, all at once: compare.rs streams the base's distributions).

use super::engine::{WasmEngine, BUSY};
use super::{bad_arg, js_err, js_error, to_js};
use crate::compare::{self, Report, Size};
use crate::error::Error;
use crate::model::Model;
use serde::{Deserialize, Serialize};
use wasm_bindgen::prelude::*;

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
struct CompareOptions {
    /// Tokens per window (default 512).
    ctx: Option<u32>,
    /// At most this many windows.
    chunks: Option<usize>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ProgressEvent<'a> {
    phase: &'static str,
    chunk: usize,
    chunks: usize,
    window_end: bool,
    reports: &'a [Report],
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Comparison {
    ctx: u32,
    chunks: usize,
    tokens: usize,
    /// Whether `onProgress` stopped it before the last window.
    stopped: bool,
    base: Size,
    /// One per candidate, in order.
    sizes: Vec<Size>,
    reports: Vec<Report>,
}

#[wasm_bindgen]
impl WasmEngine {
    /// Compares `candidates` (consumed: their engines are freed at the end) with this engine's
    /// model on `text` (the built-in CC0 text when absent), as `quantweb compare`.
    /// `onProgress({phase: 'compare', chunk, chunks, windowEnd, reports})` follows every batch of
    /// scored positions; returning `false` stops. Resolves to `{ctx, chunks, tokens, stopped,
    /// base, sizes, reports}`.
    #[allow(clippy::await_holding_refcell_ref)] // the engine's lock, as in `complete`
    pub fn compare(
        &self,
        candidates: Vec<WasmEngine>,
        text: Option<String>,
        options: JsValue,
        on_progress: Option<js_sys::Function>,
    ) -> Result<js_sys::Promise, JsValue> {
        let o: CompareOptions = if options.is_undefined() || options.is_null() {
            CompareOptions::default()
        } else {
            serde_wasm_bindgen::from_value(options)
                .map_err(|e| bad_arg("bad compare options", e))?
        };
        let ctx = o.ctx.unwrap_or(512);
        let inner = self.inner.clone();
        let base_size = self.size.clone();
        let (sizes, engines): (Vec<Size>, Vec<_>) =
            candidates.into_iter().map(|c| (c.size, c.inner)).unzip();
        Ok(wasm_bindgen_futures::future_to_promise(async move {
            let mut base = inner
                .try_borrow_mut()
                .map_err(|_| js_error("BusyError", BUSY))?;
            let mut cands = vec![];
            for (i, e) in engines.into_iter().enumerate() {
                let e = std::rc::Rc::try_unwrap(e)
                    .map_err(|_| js_error("BusyError", BUSY))?
                    .into_inner();
                compare::check_same_vocab(
                    &base.tokenizer,
                    &e.tokenizer,
                    &format!("candidate {}", i + 1),
                )
                .map_err(js_err)?;
                cands.push(e);
            }
            let tok = &base.tokenizer;
            let text = text.as_deref().unwrap_or(compare::BUILTIN_TEXT);
            let ids = tok.encode(text, true, false);
            let bos = tok.add_bos().then(|| tok.bos()).flatten();
            let windows = compare::chunks(&ids, ctx, o.chunks, bos).map_err(js_err)?;
            if let Some(c) = std::iter::once(&base.model)
                .chain(cands.iter().map(|e| &e.model))
                .find(|m| m.n_ctx < ctx)
            {
                return Err(js_err(Error::InvalidRequest {
                    param: "ctx".into(),
                    value: ctx.to_string(),
                    reason: format!("a model was loaded with a context of {} tokens", c.n_ctx),
                }));
            }
            let mut stopped = false;
            let mut models: Vec<&mut Model> = cands.iter_mut().map(|e| &mut e.model).collect();
            let reports = compare::compare(&mut base.model, &mut models, &windows, |p| {
                let go_on = match &on_progress {
                    Some(f) => to_js(&ProgressEvent {
                        phase: "compare",
                        chunk: p.chunk,
                        chunks: p.chunks,
                        window_end: p.window_end,
                        reports: p.reports,
                    })
                    .and_then(|v| f.call1(&JsValue::NULL, &v))
                    .is_ok_and(|v| v.as_bool() != Some(false)),
                    None => true,
                };
                let last = p.window_end && p.chunk == p.chunks;
                stopped |= !(go_on || last);
                go_on
            })
            .await
            .map_err(js_err)?;
            to_js(&Comparison {
                ctx,
                chunks: windows.len(),
                tokens: ids.len(),
                stopped,
                base: base_size,
                sizes,
                reports,
            })
        }))
    }
}
