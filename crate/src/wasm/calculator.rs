//! The calculator's functions: memory estimates and fit verdicts for a model's header.

use super::{bad_arg, js_err, to_js, JsResult};
use crate::inspect::ModelInfo;
use crate::memory::{self, DeviceBudget, FitOptions, KvType, LargestTensor};
use serde::{Deserialize, Serialize};
use wasm_bindgen::prelude::*;

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
