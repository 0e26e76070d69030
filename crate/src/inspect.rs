//! What a model is, read from its header alone: the figures `quantweb inspect` prints, the JS
//! `inspect()` returns and the memory calculator works from. Serializable both ways so the page
//! can hand an inspected model back to `estimateMemory`.

use crate::error::{Error, Result};
use crate::gguf::{GgufModel, Layout, Value};
use crate::quant::GgmlType;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ModelInfo {
    pub name: Option<String>,
    pub architecture: String,
    /// "single", "shards" or "chunks".
    pub layout: String,
    pub parts: Vec<PartInfo>,
    pub gguf_version: u32,
    /// Sum of the part sizes.
    pub file_bytes: u64,
    /// Sum of tensor data sizes: what the weights take in GPU memory.
    pub tensor_bytes: u64,
    pub tensor_count: usize,
    /// Total elements of all tensors, as llama.cpp counts parameters.
    pub parameters: u64,
    /// `general.file_type` as llama.cpp names it (`Q4_K_M`), when present.
    pub file_type: Option<String>,
    pub type_mix: Vec<TypeShare>,
    /// Types present that quantweb cannot run, with the tensors that use them.
    pub unsupported_types: Vec<UnsupportedType>,
    pub hparams: HParams,
    pub tensors: Vec<TensorSummary>,
    /// Reads the header parser made (each an HTTP Range request for URLs). Later parts also
    /// probe one byte for their size, not counted here.
    pub header_reads: u32,
    /// All metadata; long arrays summarized as `{"type", "len"}`.
    pub metadata: serde_json::Value,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PartInfo {
    pub name: String,
    pub bytes: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TypeShare {
    #[serde(rename = "type")]
    pub ty: String,
    pub tensors: usize,
    pub bytes: u64,
    pub parameters: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct UnsupportedType {
    #[serde(rename = "type")]
    pub ty: String,
    pub tensors: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TensorSummary {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: String,
    /// ggml order: dims[0] is the row length.
    pub dims: Vec<u64>,
    pub bytes: u64,
    /// Which part (shard) holds it; always 0 for a single file or byte chunks.
    pub part: usize,
}

/// The hyperparameters that size a run. Defaults follow llama.cpp's (`key_length` defaults to
/// `embedding_length / heads`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct HParams {
    pub layers: u32,
    pub embedding_length: u32,
    pub heads: u32,
    /// Per layer: some models (OpenELM) vary it, most repeat one value.
    pub kv_heads: Vec<u32>,
    pub key_length: u32,
    pub value_length: u32,
    pub feed_forward_length: Option<u32>,
    /// The context the model was trained for.
    pub context_length: u32,
    pub vocab_size: u64,
    /// Sliding-window attention size, when the model uses it.
    pub sliding_window: Option<u32>,
    /// Indices of layers that attend only over the window (their KV cache is small).
    pub sliding_window_layers: Vec<u32>,
    pub rope_freq_base: Option<f64>,
}

impl ModelInfo {
    pub fn from_model(m: &GgufModel) -> Result<Self> {
        let meta = Meta {
            m: &m.metadata,
            source: m.parts.first().map(|p| p.0.as_str()).unwrap_or(""),
        };
        let architecture = meta.str("general.architecture")?.to_string();
        let hparams = HParams::from_meta(&meta, &architecture, m)?;

        let mut mix: BTreeMap<GgmlType, TypeShare> = BTreeMap::new();
        for t in &m.tensors {
            let e = mix.entry(t.info.ty).or_insert_with(|| TypeShare {
                ty: t.info.ty.name().into(),
                tensors: 0,
                bytes: 0,
                parameters: 0,
            });
            e.tensors += 1;
            e.bytes += t.info.n_bytes;
            e.parameters += t.info.n_elements;
        }
        let mut type_mix: Vec<TypeShare> = mix.into_values().collect();
        type_mix.sort_by_key(|t| std::cmp::Reverse(t.bytes));
        let unsupported_types = unsupported(m);

        Ok(ModelInfo {
            name: m
                .metadata
                .get("general.name")
                .and_then(Value::as_str)
                .map(str::to_string),
            architecture,
            layout: serde_json::to_value(m.layout)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
            parts: m
                .parts
                .iter()
                .map(|(name, bytes)| PartInfo {
                    name: name.clone(),
                    bytes: *bytes,
                })
                .collect(),
            gguf_version: m.version,
            file_bytes: m.file_bytes(),
            tensor_bytes: m.tensors.iter().map(|t| t.info.n_bytes).sum(),
            tensor_count: m.tensors.len(),
            parameters: m.tensors.iter().map(|t| t.info.n_elements).sum(),
            file_type: m
                .metadata
                .get("general.file_type")
                .and_then(Value::as_u64)
                .and_then(file_type_name)
                .map(str::to_string),
            type_mix,
            unsupported_types,
            hparams,
            tensors: m
                .tensors
                .iter()
                .map(|t| TensorSummary {
                    name: t.info.name.clone(),
                    ty: t.info.ty.name().into(),
                    dims: t.info.dims.clone(),
                    bytes: t.info.n_bytes,
                    part: if m.layout == Layout::Shards {
                        t.file
                    } else {
                        0
                    },
                })
                .collect(),
            header_reads: m.header_reads,
            metadata: serde_json::to_value(&m.metadata).unwrap_or_default(),
        })
    }

    /// The named error to raise before loading a model with types quantweb cannot run.
    pub fn check_supported(&self) -> Result<()> {
        match self.unsupported_types.first() {
            None => Ok(()),
            Some(u) => Err(Error::UnsupportedType {
                ty: GgmlType::from_name(&u.ty).unwrap_or(GgmlType::F32),
                tensors: summarize_names(&u.tensors),
            }),
        }
    }
}

fn unsupported(m: &GgufModel) -> Vec<UnsupportedType> {
    let mut by_type: BTreeMap<GgmlType, Vec<String>> = BTreeMap::new();
    for t in m.tensors.iter().filter(|t| !t.info.ty.is_supported()) {
        by_type
            .entry(t.info.ty)
            .or_default()
            .push(t.info.name.clone());
    }
    by_type
        .into_iter()
        .map(|(ty, tensors)| UnsupportedType {
            ty: ty.name().into(),
            tensors,
        })
        .collect()
}

fn summarize_names(names: &[String]) -> String {
    match names.len() {
        0..=4 => names.join(", "),
        n => format!("{}, … and {} more", names[..3].join(", "), n - 3),
    }
}

/// Typed metadata access that names the key and file in its errors.
struct Meta<'a> {
    m: &'a BTreeMap<String, Value>,
    source: &'a str,
}

impl Meta<'_> {
    fn get(&self, key: &str) -> Result<&Value> {
        self.m.get(key).ok_or_else(|| Error::MissingKey {
            source_name: self.source.into(),
            key: key.into(),
        })
    }

    fn wrong(&self, key: &str, expected: &'static str, v: &Value) -> Error {
        Error::WrongValueType {
            source_name: self.source.into(),
            key: key.into(),
            expected,
            found: v.describe(),
        }
    }

    fn str(&self, key: &str) -> Result<&str> {
        let v = self.get(key)?;
        v.as_str().ok_or_else(|| self.wrong(key, "a string", v))
    }

    fn opt_u32(&self, key: &str) -> Result<Option<u32>> {
        match self.m.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .map(Some)
                .ok_or_else(|| self.wrong(key, "an unsigned 32-bit integer", v)),
        }
    }

    fn u32(&self, key: &str) -> Result<u32> {
        self.opt_u32(key)?.ok_or_else(|| Error::MissingKey {
            source_name: self.source.into(),
            key: key.into(),
        })
    }

    fn positive(&self, key: &str, v: u32) -> Result<u32> {
        if v == 0 {
            return Err(Error::BadValue {
                source_name: self.source.into(),
                key: key.into(),
                reason: "must be positive".into(),
            });
        }
        Ok(v)
    }

    /// A value that is either one integer or an array with one per layer.
    fn per_layer(&self, key: &str, layers: u32) -> Result<Option<Vec<u32>>> {
        let Some(v) = self.m.get(key) else {
            return Ok(None);
        };
        let expected = "an unsigned integer or one per layer";
        if let Some(n) = v.as_u64() {
            let n = u32::try_from(n).map_err(|_| self.wrong(key, expected, v))?;
            return Ok(Some(vec![n; layers as usize]));
        }
        let items = v.as_array().ok_or_else(|| self.wrong(key, expected, v))?;
        if items.len() != layers as usize {
            return Err(Error::BadValue {
                source_name: self.source.into(),
                key: key.into(),
                reason: format!("{} values for {layers} layers", items.len()),
            });
        }
        items
            .iter()
            .map(|x| {
                x.as_u64()
                    .and_then(|n| u32::try_from(n).ok())
                    .ok_or_else(|| self.wrong(key, expected, v))
            })
            .collect::<Result<_>>()
            .map(Some)
    }
}

/// Layers above this are not a real model; bounds per-layer vectors built from the header.
const MAX_LAYERS: u32 = 4096;

impl HParams {
    fn from_meta(meta: &Meta, arch: &str, m: &GgufModel) -> Result<Self> {
        let k = |name: &str| format!("{arch}.{name}");
        let layers = meta.positive(&k("block_count"), meta.u32(&k("block_count"))?)?;
        if layers > MAX_LAYERS {
            return Err(Error::BadValue {
                source_name: meta.source.into(),
                key: k("block_count"),
                reason: format!("{layers} layers is more than {MAX_LAYERS}"),
            });
        }
        let embedding_length =
            meta.positive(&k("embedding_length"), meta.u32(&k("embedding_length"))?)?;
        let heads = meta.positive(
            &k("attention.head_count"),
            meta.u32(&k("attention.head_count"))?,
        )?;
        let kv_heads = meta
            .per_layer(&k("attention.head_count_kv"), layers)?
            .unwrap_or_else(|| vec![heads; layers as usize]);
        let key_length = meta
            .opt_u32(&k("attention.key_length"))?
            .unwrap_or(embedding_length / heads);
        let value_length = meta
            .opt_u32(&k("attention.value_length"))?
            .unwrap_or(embedding_length / heads);
        let context_length = meta.u32(&k("context_length"))?;
        let vocab_size = match meta.opt_u32(&k("vocab_size"))? {
            Some(v) => v as u64,
            None => match m
                .metadata
                .get("tokenizer.ggml.tokens")
                .and_then(Value::as_array)
            {
                Some(tokens) => tokens.len() as u64,
                None => m
                    .tensor("token_embd.weight")
                    .and_then(|t| t.info.dims.get(1).copied())
                    .ok_or_else(|| Error::MissingKey {
                        source_name: meta.source.into(),
                        key: "tokenizer.ggml.tokens (or token_embd.weight)".into(),
                    })?,
            },
        };
        let sliding_window = meta
            .opt_u32(&k("attention.sliding_window"))?
            .filter(|&w| w > 0);
        let sliding_window_layers = match sliding_window {
            None => vec![],
            Some(_) => (0..layers)
                .filter(|&il| is_sliding_layer(meta, arch, il))
                .collect(),
        };
        Ok(HParams {
            layers,
            embedding_length,
            heads,
            kv_heads,
            key_length,
            value_length,
            feed_forward_length: meta
                .per_layer(&k("feed_forward_length"), layers)?
                .and_then(|v| v.into_iter().max()),
            context_length,
            vocab_size,
            sliding_window,
            sliding_window_layers,
            rope_freq_base: m.metadata.get(&k("rope.freq_base")).and_then(Value::as_f64),
        })
    }
}

/// Which layers use the sliding window, as llama.cpp decides per architecture: a per-layer
/// `sliding_window_pattern` array when the file has one; otherwise gemma3 has 5 local layers out
/// of every 6 (il % 6 < 5), gemma2 alternates (even layers local), cohere2 3 of 4. Every other
/// architecture attends over the whole context even when its file states a window: llama.cpp
/// ignores `llama.attention.sliding_window` (Mistral 7B v0.1) and disables it for phi3.
fn is_sliding_layer(meta: &Meta, arch: &str, il: u32) -> bool {
    let period = match arch {
        "gemma3" => 6,
        "gemma2" => 2,
        "cohere2" => 4,
        _ => return false,
    };
    if let Some(flags) = meta
        .m
        .get(&format!("{arch}.attention.sliding_window_pattern"))
        .and_then(Value::as_array)
    {
        return flags
            .get(il as usize)
            .and_then(Value::as_bool)
            .unwrap_or(false);
    }
    il % period < period - 1
}

/// llama.cpp's `llama_ftype` names.
pub fn file_type_name(id: u64) -> Option<&'static str> {
    Some(match id {
        0 => "F32",
        1 => "F16",
        2 => "Q4_0",
        3 => "Q4_1",
        7 => "Q8_0",
        8 => "Q5_0",
        9 => "Q5_1",
        10 => "Q2_K",
        11 => "Q3_K_S",
        12 => "Q3_K_M",
        13 => "Q3_K_L",
        14 => "Q4_K_S",
        15 => "Q4_K_M",
        16 => "Q5_K_S",
        17 => "Q5_K_M",
        18 => "Q6_K",
        19 => "IQ2_XXS",
        20 => "IQ2_XS",
        21 => "Q2_K_S",
        22 => "IQ3_XS",
        23 => "IQ3_XXS",
        24 => "IQ1_S",
        25 => "IQ4_NL",
        26 => "IQ3_S",
        27 => "IQ3_M",
        28 => "IQ2_S",
        29 => "IQ2_M",
        30 => "IQ4_XS",
        31 => "IQ1_M",
        32 => "BF16",
        36 => "TQ1_0",
        37 => "TQ2_0",
        38 => "MXFP4_MOE",
        _ => return None,
    })
}
