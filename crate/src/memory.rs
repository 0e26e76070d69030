//! The memory calculator: what a model needs on the GPU for a given context, computed from its
//! header, next to the rule of thumb users know (params × bytes per weight × 1.2).
//!
//! GPU bytes = weights (exact tensor bytes) + KV cache + scratch. The KV cache follows
//! llama.cpp's cache layout (GQA heads, key/value lengths, small caches for sliding-window
//! layers); scratch is what quantweb's engine allocates: one batch of activations plus logits for
//! the one position that is sampled (llama.cpp keeps logits for the whole batch, which for a
//! 262K vocabulary is 0.5 GiB at batch 512).

use crate::error::{Error, Result};
use crate::inspect::{HParams, ModelInfo, TensorSummary};
use crate::quant::GgmlType;
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KvType {
    F16,
    F32,
    Q8_0,
}

impl KvType {
    pub fn parse(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "f16" => Ok(KvType::F16),
            "f32" => Ok(KvType::F32),
            "q8_0" => Ok(KvType::Q8_0),
            _ => Err(Error::BadKvType(s.into())),
        }
    }

    fn ggml(self) -> GgmlType {
        match self {
            KvType::F16 => GgmlType::F16,
            KvType::F32 => GgmlType::F32,
            KvType::Q8_0 => GgmlType::Q8_0,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct FitOptions {
    /// Tokens of context the KV cache holds.
    pub context_length: u64,
    pub kv_type: KvType,
    /// Tokens per prefill step: sizes activations and the sliding-window caches.
    pub batch: u64,
}

impl Default for FitOptions {
    fn default() -> Self {
        FitOptions {
            context_length: 4096,
            kv_type: KvType::F16,
            batch: 512,
        }
    }
}

/// The quantization levels of the what-if table, as llama.cpp's `llama-quantize` names them.
pub const WHAT_IF: [&str; 7] = ["F16", "Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q3_K_M", "Q2_K"];

/// The seed's rule: bytes per weight by nominal bit width, plus 20 % for the KV cache at ~4K.
pub const RULE_OVERHEAD: f64 = 1.2;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MemoryEstimate {
    pub model: Option<String>,
    pub architecture: String,
    pub parameters: u64,
    pub context_length: u64,
    pub model_context_length: u64,
    pub kv_type: KvType,
    pub batch: u64,
    pub weights_bytes: u64,
    pub kv_cache_bytes: u64,
    pub scratch_bytes: u64,
    pub total_bytes: u64,
    /// params × rule_bytes_per_weight × 1.2.
    pub rule_of_thumb_bytes: u64,
    /// Nominal bits of this file's quantization (4 for Q4_K_M, 16 for F16).
    pub rule_bits: u32,
    pub kv_cache: KvBreakdown,
    pub scratch: ScratchBreakdown,
    pub largest_tensor: LargestTensor,
    pub by_quant: Vec<QuantRow>,
    pub warnings: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KvBreakdown {
    /// Layers attending over the whole context, and their cells (= context_length).
    pub full_layers: u32,
    pub full_cells: u64,
    /// Sliding-window layers and their cells (window + batch, at most the context).
    pub sliding_layers: u32,
    pub sliding_cells: u64,
    /// K + V bytes one cell takes in one layer (GQA: kv_heads × (key + value length)); layer 0's
    /// when the kv head count varies by layer.
    pub bytes_per_cell_per_layer: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScratchBreakdown {
    pub activations_bytes: u64,
    pub logits_bytes: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LargestTensor {
    pub name: String,
    pub bytes: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QuantRow {
    pub quant: String,
    pub rule_bits: u32,
    pub weights_bytes: u64,
    pub total_bytes: u64,
    pub rule_of_thumb_bytes: u64,
    pub largest_tensor: LargestTensor,
}

/// Everything `quantweb fit` and `estimateMemory` report.
pub fn estimate(info: &ModelInfo, opts: &FitOptions) -> Result<MemoryEstimate> {
    if opts.context_length == 0 || opts.context_length > 1 << 24 {
        return Err(Error::BadOption {
            name: "context length",
            value: opts.context_length.to_string(),
            reason: "must be between 1 and 16M tokens",
        });
    }
    if opts.batch == 0 || opts.batch > 1 << 16 {
        return Err(Error::BadOption {
            name: "batch",
            value: opts.batch.to_string(),
            reason: "must be between 1 and 65536",
        });
    }
    let hp = &info.hparams;
    let kv_cache = kv_breakdown(hp, opts)?;
    let kv_cache_bytes = (0..hp.layers)
        .map(|il| Ok(cells(hp, il, opts) * cell_bytes(hp, il as usize, opts.kv_type)?))
        .sum::<Result<u64>>()?;
    let scratch = scratch_breakdown(hp, opts);
    let scratch_bytes = scratch.activations_bytes + scratch.logits_bytes;
    let rule_bits = nominal_bits(
        info.file_type
            .as_deref()
            .unwrap_or_else(|| dominant_type(info)),
    );
    let largest_tensor = largest(info.tensors.iter().map(|t| (t.name.as_str(), t.bytes)));
    let tied_embedding = !info.tensors.iter().any(|t| t.name == "output.weight");
    let by_quant = WHAT_IF
        .iter()
        .map(|&q| {
            let sizes: Vec<(&str, u64)> = info
                .tensors
                .iter()
                .map(|t| (t.name.as_str(), requantized_bytes(t, q, hp, tied_embedding)))
                .collect();
            let weights_bytes = sizes.iter().map(|s| s.1).sum::<u64>();
            QuantRow {
                quant: q.into(),
                rule_bits: nominal_bits(q),
                weights_bytes,
                total_bytes: weights_bytes + kv_cache_bytes + scratch_bytes,
                rule_of_thumb_bytes: rule_of_thumb(info.parameters, nominal_bits(q)),
                largest_tensor: largest(sizes.into_iter()),
            }
        })
        .collect();
    let mut warnings = vec![];
    if opts.context_length > hp.context_length as u64 {
        warnings.push(format!(
            "context {} is longer than the {} tokens the model was trained for: quality degrades past it",
            opts.context_length, hp.context_length
        ));
    }
    if !info.unsupported_types.is_empty() {
        let types: Vec<&str> = info
            .unsupported_types
            .iter()
            .map(|u| u.ty.as_str())
            .collect();
        warnings.push(format!(
            "quantweb cannot run tensor type(s) {} yet",
            types.join(", ")
        ));
    }
    Ok(MemoryEstimate {
        model: info.name.clone(),
        architecture: info.architecture.clone(),
        parameters: info.parameters,
        context_length: opts.context_length,
        model_context_length: hp.context_length as u64,
        kv_type: opts.kv_type,
        batch: opts.batch,
        weights_bytes: info.tensor_bytes,
        kv_cache_bytes,
        scratch_bytes,
        total_bytes: info.tensor_bytes + kv_cache_bytes + scratch_bytes,
        rule_of_thumb_bytes: rule_of_thumb(info.parameters, rule_bits),
        rule_bits,
        kv_cache,
        scratch,
        largest_tensor,
        by_quant,
        warnings,
    })
}

/// K and V bytes of one cell in layer `il`: a row of kv_heads × key_length K values and one of
/// kv_heads × value_length V values, in the cache type's row size (Q8_0 blocks of 32).
fn cell_bytes(hp: &HParams, il: usize, kv: KvType) -> Result<u64> {
    let n_kv = hp.kv_heads[il] as u64;
    let row = |len: u32| {
        kv.ggml()
            .bytes_for(n_kv * len as u64)
            .ok_or(Error::BadOption {
                name: "kv type",
                value: "q8_0".into(),
                reason: "needs kv_heads × key/value length to be a multiple of 32",
            })
    };
    Ok(row(hp.key_length)? + row(hp.value_length)?)
}

fn cells(hp: &HParams, il: u32, opts: &FitOptions) -> u64 {
    match hp.sliding_window {
        Some(w) if hp.sliding_window_layers.contains(&il) => {
            opts.context_length.min(w as u64 + opts.batch)
        }
        _ => opts.context_length,
    }
}

fn kv_breakdown(hp: &HParams, opts: &FitOptions) -> Result<KvBreakdown> {
    let sliding_layers = hp.sliding_window_layers.len() as u32;
    Ok(KvBreakdown {
        full_layers: hp.layers - sliding_layers,
        full_cells: opts.context_length,
        sliding_layers,
        sliding_cells: hp
            .sliding_window
            .map_or(0, |w| opts.context_length.min(w as u64 + opts.batch)),
        bytes_per_cell_per_layer: cell_bytes(hp, 0, opts.kv_type)?,
    })
}

/// quantweb's plan for one batch: residual, normed input, attention output (embedding_length
/// each), q/k/v, two FFN rows (gate, up), all f32. Attention runs as an online softmax over KV
/// tiles, so no context-sized score matrix; logits are kept for one position.
fn scratch_breakdown(hp: &HParams, opts: &FitOptions) -> ScratchBreakdown {
    let n_kv = hp.kv_heads.iter().copied().max().unwrap_or(0) as u64;
    let per_token = 3 * hp.embedding_length as u64
        + hp.heads as u64 * (hp.key_length + hp.value_length) as u64
        + n_kv * (hp.key_length + hp.value_length) as u64
        + 2 * hp.feed_forward_length.unwrap_or(4 * hp.embedding_length) as u64;
    ScratchBreakdown {
        activations_bytes: per_token * opts.batch * 4,
        logits_bytes: hp.vocab_size * 4,
    }
}

fn dominant_type(info: &ModelInfo) -> &str {
    info.type_mix
        .first()
        .map(|t| t.ty.as_str())
        .unwrap_or("F32")
}

/// Nominal bit width of a quantization name, the number users apply the rule with:
/// Q4_K_M → 4, Q8_0 → 8, IQ4_XS → 4, F16/BF16 → 16, F32 → 32.
pub fn nominal_bits(name: &str) -> u32 {
    let upper = name.to_ascii_uppercase();
    if upper.contains("32") {
        return 32;
    }
    if upper.contains("16") {
        return 16;
    }
    upper
        .chars()
        .find_map(|c| c.to_digit(10))
        .filter(|&b| (1..=8).contains(&b))
        .unwrap_or(16)
}

/// params × bits/8 × 1.2.
pub fn rule_of_thumb(params: u64, bits: u32) -> u64 {
    (params as f64 * bits as f64 / 8.0 * RULE_OVERHEAD).round() as u64
}

fn largest<'a>(sizes: impl Iterator<Item = (&'a str, u64)>) -> LargestTensor {
    sizes
        .max_by_key(|s| s.1)
        .map(|(n, b)| LargestTensor {
            name: n.into(),
            bytes: b,
        })
        .unwrap_or(LargestTensor {
            name: String::new(),
            bytes: 0,
        })
}

/// Bytes of `t` if the model were quantized to `target` by llama.cpp's `llama-quantize`.
fn requantized_bytes(t: &TensorSummary, target: &str, hp: &HParams, tied_embedding: bool) -> u64 {
    let n_elements: u64 = t.dims.iter().product();
    let ty = quantized_type(t, target, hp, tied_embedding)
        .unwrap_or_else(|| GgmlType::from_name(&t.ty).unwrap_or(GgmlType::F32));
    ty.bytes_for(n_elements).unwrap_or(t.bytes)
}

/// The type llama.cpp's `llama_tensor_get_type` picks for this tensor under the file type
/// `target` (dense models; the MoE and 70B special cases are not modelled). `None` for tensors
/// it leaves alone (1-D tensors and norms).
fn quantized_type(
    t: &TensorSummary,
    target: &str,
    hp: &HParams,
    tied_embedding: bool,
) -> Option<GgmlType> {
    use GgmlType::*;
    let name = t.name.as_str();
    if t.dims.len() < 2 || !name.ends_with("weight") || name.contains("_norm") {
        return None;
    }
    let base = match target {
        "F16" => return Some(F16),
        "Q8_0" => Q8_0,
        "Q6_K" => Q6_K,
        "Q5_K_M" => Q5_K,
        "Q4_K_M" => Q4_K,
        "Q3_K_M" => Q3_K,
        "Q2_K" => Q2_K,
        _ => return None,
    };
    let n_layer = hp.layers as i64;
    let layer = name
        .strip_prefix("blk.")
        .and_then(|r| r.split('.').next())
        .and_then(|n| n.parse::<i64>().ok())
        .unwrap_or(0);
    let more_bits =
        layer < n_layer / 8 || layer >= 7 * n_layer / 8 || (layer - n_layer / 8) % 3 == 2;
    let n_gqa = hp.heads / hp.kv_heads.first().copied().unwrap_or(hp.heads).max(1);
    let row = t.dims[0];
    // A tied embedding is quantized as the output matrix.
    let is_output = name == "output.weight" || (name == "token_embd.weight" && tied_embedding);
    let mut ty = if is_output {
        if !row.is_multiple_of(base.block_size()) || base == Q8_0 {
            Q8_0
        } else {
            Q6_K
        }
    } else if name.contains("attn_v.weight") {
        match target {
            "Q2_K" if n_gqa >= 4 => Q4_K,
            "Q2_K" => Q3_K,
            "Q3_K_M" if layer < 2 => Q5_K,
            "Q3_K_M" => Q4_K,
            "Q4_K_M" | "Q5_K_M" if more_bits => Q6_K,
            _ => base,
        }
    } else if name.contains("ffn_down") {
        match target {
            "Q2_K" => Q3_K,
            "Q3_K_M" if layer < n_layer / 16 => Q5_K,
            "Q3_K_M" => Q4_K,
            "Q4_K_M" | "Q5_K_M" if more_bits => Q6_K,
            _ => base,
        }
    } else if name.contains("attn_output.weight") {
        match target {
            "Q2_K" => Q3_K,
            "Q3_K_M" => Q4_K,
            _ => base,
        }
    } else if name.contains("attn_qkv.weight") {
        match target {
            "Q3_K_M" => Q4_K,
            "Q4_K_M" => Q5_K,
            "Q5_K_M" => Q6_K,
            _ => base,
        }
    } else {
        base
    };
    // Rows that are not a whole number of 256-element super-blocks fall back as llama.cpp does.
    if !row.is_multiple_of(ty.block_size()) {
        ty = match ty {
            Q2_K | Q3_K | IQ4_XS => IQ4_NL,
            Q4_K => Q5_0,
            Q5_K => Q5_1,
            Q6_K => Q8_0,
            other => other,
        };
        if !row.is_multiple_of(ty.block_size()) {
            ty = F16;
        }
    }
    Some(ty)
}

/// A device as the calculator sees it. The browser does not expose GPU memory, so the user
/// enters it; the WebGPU limits and the storage quota come from the browser.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeviceBudget {
    pub gpu_memory_bytes: u64,
    pub max_storage_buffer_binding_size: Option<u64>,
    pub max_buffer_size: Option<u64>,
    /// Free storage for the offline cache (quota − usage).
    pub storage_available_bytes: Option<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FitLevel {
    Fits,
    Tight,
    DoesNotFit,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    pub level: FitLevel,
    pub reasons: Vec<String>,
}

/// Share of GPU memory above which a model is "tight": the browser, the compositor and other
/// tabs use the same memory.
pub const TIGHT_FRACTION: f64 = 0.8;

/// fits / tight / does not fit, with the reasons, for a total, its largest tensor and the bytes
/// to cache.
pub fn verdict(
    total_bytes: u64,
    largest: &LargestTensor,
    download_bytes: u64,
    dev: &DeviceBudget,
) -> Verdict {
    let mut no = vec![];
    let mut tight = vec![];
    let gib = |b: u64| format!("{:.2} GiB", b as f64 / (1u64 << 30) as f64);
    let mib = |b: u64| format!("{:.0} MiB", b as f64 / (1u64 << 20) as f64);
    if total_bytes > dev.gpu_memory_bytes {
        no.push(format!(
            "needs {} but the GPU has {}: pick a smaller quantization or a shorter context",
            gib(total_bytes),
            gib(dev.gpu_memory_bytes)
        ));
    } else if total_bytes as f64 > dev.gpu_memory_bytes as f64 * TIGHT_FRACTION {
        tight.push(format!(
            "needs {} of {} GPU memory, more than {:.0} %: other tabs and the desktop share it",
            gib(total_bytes),
            gib(dev.gpu_memory_bytes),
            TIGHT_FRACTION * 100.0
        ));
    }
    for (limit, what) in [
        (
            dev.max_storage_buffer_binding_size,
            "maxStorageBufferBindingSize",
        ),
        (dev.max_buffer_size, "maxBufferSize"),
    ] {
        if let Some(limit) = limit.filter(|&l| largest.bytes > l) {
            no.push(format!(
                "tensor {} is {}, above this device's {what} of {}",
                largest.name,
                mib(largest.bytes),
                mib(limit)
            ));
        }
    }
    tight.extend(storage_note(download_bytes, dev.storage_available_bytes));
    let level = if !no.is_empty() {
        FitLevel::DoesNotFit
    } else if !tight.is_empty() {
        FitLevel::Tight
    } else {
        FitLevel::Fits
    };
    no.extend(tight);
    Verdict { level, reasons: no }
}

/// Why a download that the browser's storage cannot hold makes a model "tight" (it still runs,
/// but downloads on every visit), or None.
fn storage_note(download_bytes: u64, storage_available: Option<u64>) -> Option<String> {
    let gib = |b: u64| format!("{:.2} GiB", b as f64 / (1u64 << 30) as f64);
    storage_available.filter(|&f| download_bytes > f).map(|free| {
        format!("the {} download does not fit the {} of browser storage left: it cannot be cached and will download on every visit", gib(download_bytes), gib(free))
    })
}

/// A CPU verdict with the storage check that `verdict` makes for the GPU.
pub fn cpu_verdict_with_storage(
    total_bytes: u64,
    device_memory_bytes: Option<u64>,
    download_bytes: u64,
    storage_available: Option<u64>,
) -> Verdict {
    let mut v = cpu_verdict(total_bytes, device_memory_bytes);
    if let Some(note) = storage_note(download_bytes, storage_available) {
        v.reasons.push(note);
        if v.level == FitLevel::Fits {
            v.level = FitLevel::Tight;
        }
    }
    v
}

/// What a wasm32 instance can address: the CPU engine in a browser holds weights, KV cache and
/// activations within it.
pub const WASM_MEMORY_BYTES: u64 = 4 << 30;

/// fits / tight / does not fit on the browser's CPU engine: against wasm's 4 GiB and, when the
/// browser says (`navigator.deviceMemory`), the device's memory. Tight from 40 % of it: the
/// browser reports at most 8 GiB, rounded down, and the tab shares it with the system.
pub fn cpu_verdict(total_bytes: u64, device_memory_bytes: Option<u64>) -> Verdict {
    let gib = |b: u64| format!("{:.2} GiB", b as f64 / (1u64 << 30) as f64);
    let (level, reasons) = if total_bytes > WASM_MEMORY_BYTES {
        let why = format!(
            "needs {} but the CPU engine in a browser holds at most {} (wasm memory): pick a smaller quantization or a shorter context",
            gib(total_bytes),
            gib(WASM_MEMORY_BYTES)
        );
        (FitLevel::DoesNotFit, vec![why])
    } else {
        match device_memory_bytes {
            Some(ram) if total_bytes > ram => (
                FitLevel::DoesNotFit,
                vec![format!(
                    "needs {} but this device has about {} of memory",
                    gib(total_bytes),
                    gib(ram)
                )],
            ),
            Some(ram) if total_bytes as f64 > ram as f64 * TIGHT_FRACTION / 2.0 => (
                FitLevel::Tight,
                vec![format!(
                    "needs {} of about {} of memory, shared with the browser and the system",
                    gib(total_bytes),
                    gib(ram)
                )],
            ),
            _ => (FitLevel::Fits, vec![]),
        }
    };
    Verdict { level, reasons }
}

/// "8B", "1.5b", "135M", "7e9", "350 000 000" → a parameter count.
pub fn parse_param_count(s: &str) -> Result<u64> {
    let t: String = s
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '_' && *c != ',')
        .collect();
    let (num, mult) = match t.chars().last().map(|c| c.to_ascii_uppercase()) {
        Some('K') => (&t[..t.len() - 1], 1e3),
        Some('M') => (&t[..t.len() - 1], 1e6),
        Some('B') | Some('G') => (&t[..t.len() - 1], 1e9),
        Some('T') => (&t[..t.len() - 1], 1e12),
        _ => (t.as_str(), 1.0),
    };
    match num.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 && v * mult < 1e15 => Ok((v * mult).round() as u64),
        _ => Err(Error::BadParamCount(s.into())),
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RuleRow {
    pub bits: u32,
    pub bytes_per_weight: f64,
    pub weights_bytes: u64,
    pub rule_of_thumb_bytes: u64,
}

/// The seed's quick table for a parameter count: 16, 8 and 4 bits.
pub fn rule_table(params: u64) -> Vec<RuleRow> {
    [16, 8, 4]
        .into_iter()
        .map(|bits| RuleRow {
            bits,
            bytes_per_weight: bits as f64 / 8.0,
            weights_bytes: params * bits as u64 / 8,
            rule_of_thumb_bytes: rule_of_thumb(params, bits),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cpu_engine_is_judged_against_wasm_memory_and_the_device() {
        let gib = 1u64 << 30;
        assert_eq!(cpu_verdict(gib, None).level, FitLevel::Fits);
        let big = cpu_verdict(5 * gib, Some(64 * gib));
        assert_eq!(big.level, FitLevel::DoesNotFit);
        assert!(big.reasons[0].contains("4.00 GiB"), "{:?}", big.reasons);
        assert_eq!(
            cpu_verdict(3 * gib, Some(2 * gib)).level,
            FitLevel::DoesNotFit
        );
        assert_eq!(
            cpu_verdict(7 * gib / 2, Some(8 * gib)).level,
            FitLevel::Tight
        );
        assert_eq!(cpu_verdict(gib, Some(8 * gib)).level, FitLevel::Fits);
    }

    #[test]
    fn a_download_the_storage_cannot_hold_makes_the_cpu_verdict_tight() {
        let gib = 1u64 << 30;
        let v = cpu_verdict_with_storage(gib, None, gib, Some(gib / 2));
        assert_eq!(v.level, FitLevel::Tight);
        assert!(v.reasons[0].contains("browser storage"), "{:?}", v.reasons);
        let v = cpu_verdict_with_storage(gib, None, gib, Some(2 * gib));
        assert_eq!(v, cpu_verdict(gib, None));
        let v = cpu_verdict_with_storage(5 * gib, None, gib, Some(0));
        assert_eq!((v.level, v.reasons.len()), (FitLevel::DoesNotFit, 2));
    }
}
