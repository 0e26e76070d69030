//! Converting a whole model to one target type, the way `llama-quantize --pure` does it
//! (llama.cpp `src/llama-quant.cpp`, checked against the oracle build 5b4ebc5): which tensors
//! change type, the fallback for row lengths the target's blocks do not divide, the metadata of
//! the new file, and a writer that streams tensor by tensor, a few MiB of rows at a time.
//!
//! Policy, per tensor ([`plan`]):
//! - Only what llama.cpp quantizes changes type ([`allows_quantization`]): weights of two or more
//!   dimensions, except norms, MoE router gates, position/token-type embeddings and a few
//!   architecture-specific small tensors. 1-D tensors (norms, biases, rope factors) are copied.
//! - A matrix whose row length is not a multiple of the target's block size gets llama.cpp's
//!   fallback type ([`fallback_type`]).
//! - A tensor already of its new type is copied byte for byte, as llama.cpp does.
//! - Everything else goes through f32 ([`dequantize`] then [`quantize`]). From a block-quantized
//!   source to a block-quantized type that is requantization, which [`plan`] refuses unless
//!   asked (llama.cpp's `--allow-requantize`); widening a quantized model to F32/F16/BF16 needs
//!   no permission here (llama.cpp asks for it there too).
//!
//! Deliberate differences from llama.cpp: tensors keep the source order (llama.cpp sorts by
//! layer), metadata keys come in sorted order, the source's alignment is kept, and a row length
//! that fits no block of the target's family falls back to F16 where llama.cpp has no fallback
//! and stops (targets Q4_0 … Q8_0, IQ4_NL with rows not a multiple of 32).

use super::{dequantize, quantize, GgmlType};
use crate::error::{Error, Result};
use crate::gguf::writer::{assign_offsets, encode_header};
use crate::gguf::{GgufModel, TensorInfo, Value, DEFAULT_ALIGNMENT};
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::Write;

/// Values converted per step: 4 MiB of f32 (plus their source and output bytes) in memory.
const CHUNK_VALUES: u64 = 1 << 20;
/// Bytes per step when a tensor is copied as it is.
const COPY_BYTES: u64 = 8 << 20;
/// What a plan does, counted: for the CLI's report and the browser's result.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PlanSummary {
    pub tensors: usize,
    /// Tensors that change type.
    pub converted: usize,
    /// Of those, already block-quantized ones (errors of both formats add up).
    pub requantized: usize,
    /// Fallback type → the tensors that got it instead of the target.
    pub fallbacks: BTreeMap<GgmlType, Vec<String>>,
    /// Bytes of the new file.
    pub out_bytes: u64,
}

/// Counts [`plan`]'s decisions; `out_bytes` as [`write`] writes them (padding included).
pub fn summarize(model: &GgufModel, target: GgmlType, plans: &[TensorPlan]) -> PlanSummary {
    let align = alignment(model);
    let mut s = PlanSummary {
        tensors: plans.len(),
        out_bytes: header(model, target, plans).len() as u64,
        ..Default::default()
    };
    for p in plans {
        s.converted += usize::from(p.converts());
        s.requantized += usize::from(p.requantizes());
        if p.fallback_from.is_some() {
            s.fallbacks.entry(p.to).or_default().push(p.name.clone());
        }
        s.out_bytes += p.out_bytes().next_multiple_of(align);
    }
    s
}

/// ggml's `GGML_QNT_VERSION`, which llama.cpp writes as `general.quantization_version`.
const QUANTIZATION_VERSION: u32 = 2;

/// What happens to one tensor.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TensorPlan {
    pub name: String,
    /// ggml order: `dims[0]` is the row length.
    pub dims: Vec<u64>,
    pub from: GgmlType,
    pub to: GgmlType,
    /// The type asked for, when `to` is its fallback because rows of `dims[0]` values are not a
    /// whole number of its blocks.
    pub fallback_from: Option<GgmlType>,
}

impl TensorPlan {
    /// The tensor changes type (otherwise its bytes are copied).
    pub fn converts(&self) -> bool {
        self.from != self.to
    }

    /// Block-quantized data quantized again into a block type: the errors of both add up.
    pub fn requantizes(&self) -> bool {
        self.converts() && is_block_quantized(self.from) && is_block_quantized(self.to)
    }

    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }

    /// Bytes of the tensor in the new file.
    pub fn out_bytes(&self) -> u64 {
        self.to
            .bytes_for(self.n_elements())
            .expect("plan only picks types whose blocks divide the rows")
    }
}

fn is_block_quantized(ty: GgmlType) -> bool {
    ty.block_size() > 1
}

/// llama.cpp's `llama_ftype` that `llama-quantize` records in `general.file_type` for a target
/// type (`Q3_K`, `Q4_K`, `Q5_K` are its aliases for the `_M` mixes), `None` for types it has
/// no file type for.
pub fn file_type(target: GgmlType) -> Option<u32> {
    use GgmlType::*;
    Some(match target {
        F32 => 0,
        F16 => 1,
        Q4_0 => 2,
        Q4_1 => 3,
        Q8_0 => 7,
        Q5_0 => 8,
        Q5_1 => 9,
        Q2_K => 10,
        Q3_K => 12,
        Q4_K => 15,
        Q5_K => 17,
        Q6_K => 18,
        IQ4_NL => 25,
        IQ4_XS => 30,
        BF16 => 32,
        _ => return None,
    })
}

/// The number of dimensions as ggml counts them (`ggml_n_dims`): trailing dimensions of size 1
/// do not count, so a `[576, 1]` tensor is 1-D.
fn ggml_n_dims(dims: &[u64]) -> usize {
    dims.iter().rposition(|&d| d > 1).map_or(1, |i| i + 1)
}

/// llama.cpp's `tensor_allows_quantization` for its default parameters: which tensors
/// `llama-quantize` gives the target type at all.
pub fn allows_quantization(name: &str, dims: &[u64]) -> bool {
    const NEVER: &[&str] = &[
        "_norm.weight",
        "ffn_gate_inp.weight",
        "altup",
        "laurel",
        "per_layer_model_proj",
        "ssm_conv1d",
        "shortconv.conv.weight",
        "time_mix_first.weight",
        "time_mix_w0.weight",
        "time_mix_w1.weight",
        "time_mix_w2.weight",
        "time_mix_v0.weight",
        "time_mix_v1.weight",
        "time_mix_v2.weight",
        "time_mix_a0.weight",
        "time_mix_a1.weight",
        "time_mix_a2.weight",
        "time_mix_g1.weight",
        "time_mix_g2.weight",
        "time_mix_decay_w1.weight",
        "time_mix_decay_w2.weight",
        "time_mix_lerp_fused.weight",
        "attn_rel_b.weight",
        ".position_embd",
        ".rel_pos",
        ".patch_embd",
        ".patch_merger",
    ];
    ggml_n_dims(dims) >= 2
        && name.ends_with("weight")
        && name != "position_embd.weight"
        && name != "token_types.weight"
        && !NEVER.iter().any(|s| name.contains(s))
}

/// The type llama.cpp uses instead of `target` for rows of `ncols` values, `None` when the
/// target's blocks divide the rows. llama.cpp (`tensor_type_fallback`): IQ4_XS → IQ4_NL,
/// Q2_K and Q3_K → Q4_0, Q4_K → Q5_0, Q5_K → Q5_1, Q6_K → Q8_0, and F16 when that still does not
/// divide (also for the 32-blocks, where llama.cpp has no fallback and stops).
pub fn fallback_type(target: GgmlType, ncols: u64) -> Option<GgmlType> {
    use GgmlType::*;
    if ncols.is_multiple_of(target.block_size()) {
        return None;
    }
    let fallback = match target {
        IQ4_XS => IQ4_NL,
        Q2_K | Q3_K => Q4_0,
        Q4_K => Q5_0,
        Q5_K => Q5_1,
        Q6_K => Q8_0,
        _ => F16,
    };
    Some(if ncols.is_multiple_of(fallback.block_size()) {
        fallback
    } else {
        F16
    })
}

/// Decides every tensor's new type (see the module doc).
///
/// Errors: a target [`quantize`] cannot produce ([`Error::BadOption`] for `--type`), tensors
/// that must change type but whose type cannot be dequantized ([`Error::UnsupportedType`]
/// naming them), and requantization without `allow_requantize` ([`Error::BadOption`]).
pub fn plan(
    model: &GgufModel,
    target: GgmlType,
    allow_requantize: bool,
) -> Result<Vec<TensorPlan>> {
    if !super::can_quantize(target) || file_type(target).is_none() {
        return Err(Error::BadOption {
            name: "--type",
            value: target.name().into(),
            reason: "choose one of F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_NL, IQ4_XS",
        });
    }
    let plans: Vec<TensorPlan> = model
        .tensors
        .iter()
        .map(|t| {
            let (name, dims, from) = (&t.info.name, &t.info.dims, t.info.ty);
            let (to, fallback_from) = if allows_quantization(name, dims) {
                match fallback_type(target, dims[0]) {
                    Some(f) => (f, Some(target)),
                    None => (target, None),
                }
            } else {
                (from, None)
            };
            TensorPlan {
                name: name.clone(),
                dims: dims.clone(),
                from,
                to,
                fallback_from,
            }
        })
        .collect();
    // Types that cannot be read, with the tensors that would need it.
    let mut unreadable: BTreeMap<GgmlType, Vec<&str>> = BTreeMap::new();
    for p in plans
        .iter()
        .filter(|p| p.converts() && !p.from.is_supported())
    {
        unreadable.entry(p.from).or_default().push(&p.name);
    }
    if let Some((&ty, names)) = unreadable.iter().next() {
        return Err(Error::UnsupportedType {
            ty,
            tensors: names.join(", "),
        });
    }
    if !allow_requantize {
        let mut sources: BTreeMap<GgmlType, usize> = BTreeMap::new();
        for p in plans.iter().filter(|p| p.requantizes()) {
            *sources.entry(p.from).or_default() += 1;
        }
        if !sources.is_empty() {
            let list: Vec<String> = sources.iter().map(|(t, n)| format!("{n} {t}")).collect();
            return Err(Error::BadOption {
                name: "--type",
                value: format!("{target} for a model whose tensors are already quantized ({} tensors)", list.join(", ")),
                reason: "requantizing adds the errors of both formats; start from an F32/F16/BF16 model, or pass --allow-requantize",
            });
        }
    }
    Ok(plans)
}

/// The new file's metadata: the model's (split keys already dropped), with `general.file_type`
/// and `general.quantization_version` as llama.cpp writes them.
fn out_metadata(model: &GgufModel, target: GgmlType) -> Vec<(String, Value)> {
    let mut metadata = model.metadata.clone();
    let ftype = file_type(target).expect("plan checked the target");
    metadata.insert("general.file_type".into(), Value::U32(ftype));
    metadata.insert(
        "general.quantization_version".into(),
        Value::U32(QUANTIZATION_VERSION),
    );
    metadata.into_iter().collect()
}

fn alignment(model: &GgufModel) -> u64 {
    model
        .metadata
        .get("general.alignment")
        .and_then(Value::as_u64)
        .unwrap_or(DEFAULT_ALIGNMENT)
}

/// The header of the new file up to the start of the tensor data (padding included).
fn header(model: &GgufModel, target: GgmlType, plans: &[TensorPlan]) -> Vec<u8> {
    let align = alignment(model);
    let mut infos: Vec<TensorInfo> = plans
        .iter()
        .map(|p| TensorInfo {
            name: p.name.clone(),
            dims: p.dims.clone(),
            ty: p.to,
            offset: 0,
            n_elements: p.n_elements(),
            n_bytes: p.out_bytes(),
        })
        .collect();
    assign_offsets(&mut infos, align);
    let metadata = out_metadata(model, target);
    let metadata: Vec<(&str, &Value)> = metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
    encode_header(&metadata, &infos, align)
}

/// Writes the converted model to `out`: the header, then each tensor as [`plan`] decided, copied
/// or converted a few MiB at a time. `on_tensor(i, plan)` is called before tensor `i`. Returns the
/// bytes written. `out_name` names the output in I/O errors.
pub async fn write(
    model: &GgufModel,
    target: GgmlType,
    plans: &[TensorPlan],
    out: &mut impl Write,
    out_name: &str,
    mut on_tensor: impl FnMut(usize, &TensorPlan),
) -> Result<u64> {
    let io = |e: std::io::Error| Error::Io {
        source_name: out_name.to_string(),
        message: e.to_string(),
    };
    let align = alignment(model);
    let head = header(model, target, plans);
    out.write_all(&head).map_err(io)?;
    let mut written = head.len() as u64;
    for (i, p) in plans.iter().enumerate() {
        on_tensor(i, p);
        if p.converts() {
            convert_tensor(model, p, out, io).await?;
        } else {
            let n = model
                .tensor(&p.name)
                .ok_or_else(|| Error::NoSuchTensor(p.name.clone()))?
                .info
                .n_bytes;
            let mut at = 0;
            while at < n {
                let len = (n - at).min(COPY_BYTES);
                let bytes = model.read_tensor_range(&p.name, at, len as usize).await?;
                out.write_all(&bytes).map_err(io)?;
                at += len;
            }
        }
        let padded = p.out_bytes().next_multiple_of(align);
        out.write_all(&vec![0u8; (padded - p.out_bytes()) as usize])
            .map_err(io)?;
        written += padded;
    }
    Ok(written)
}

/// Reads whole rows of a tensor a chunk at a time, dequantizes, quantizes, writes.
async fn convert_tensor(
    model: &GgufModel,
    p: &TensorPlan,
    out: &mut impl Write,
    io: impl Fn(std::io::Error) -> Error,
) -> Result<()> {
    let ncols = p.dims[0];
    let rows = p.n_elements() / ncols.max(1);
    let row_bytes = p.from.bytes_for(ncols).ok_or_else(|| Error::BadBlockData {
        ty: p.from,
        len: ncols as usize,
        block_bytes: p.from.type_size(),
    })?;
    let rows_per_chunk = (CHUNK_VALUES / ncols.max(1)).max(1);
    let mut row = 0;
    while row < rows {
        let n = rows_per_chunk.min(rows - row);
        let src = model
            .read_tensor_range(&p.name, row * row_bytes, (n * row_bytes) as usize)
            .await?;
        let values = dequantize(p.from, &src)?;
        out.write_all(&quantize_rows(p.to, &values, ncols as usize)?)
            .map_err(&io)?;
        row += n;
    }
    Ok(())
}

/// [`quantize`] of whole rows, natively spread over the CPU cores (rows are independent, and
/// the IQ4 searches take minutes on one core for a 250M-weight model); the bytes are the same.
#[cfg_attr(target_arch = "wasm32", allow(unused_variables))]
fn quantize_rows(ty: GgmlType, values: &[f32], ncols: usize) -> Result<Vec<u8>> {
    #[cfg(not(target_arch = "wasm32"))]
    {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let rows = values.len() / ncols.max(1);
        if threads > 1 && rows > 1 {
            let per_thread = rows.div_ceil(threads) * ncols;
            let parts: Vec<Result<Vec<u8>>> = std::thread::scope(|s| {
                let handles: Vec<_> = values
                    .chunks(per_thread)
                    .map(|rows| s.spawn(move || quantize(ty, rows)))
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
                    .collect()
            });
            let mut out =
                Vec::with_capacity(parts.iter().map(|p| p.as_ref().map_or(0, Vec::len)).sum());
            for part in parts {
                out.extend(part?);
            }
            return Ok(out);
        }
    }
    quantize(ty, values)
}

/// Writes the converted model to `path` through a temporary file in the same folder, renamed
/// into place only when complete (removed on failure). Returns the bytes written.
#[cfg(not(target_arch = "wasm32"))]
pub fn write_file(
    model: &GgufModel,
    target: GgmlType,
    plans: &[TensorPlan],
    path: &std::path::Path,
    on_tensor: impl FnMut(usize, &TensorPlan),
) -> Result<u64> {
    let name = path.display().to_string();
    let io = |e: std::io::Error| Error::Io {
        source_name: name.clone(),
        message: e.to_string(),
    };
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(format!(".tmp-{}", std::process::id()));
    let tmp = std::path::PathBuf::from(tmp_name);
    let result = (|| -> Result<u64> {
        let mut file =
            std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&tmp).map_err(io)?);
        let n = pollster::block_on(write(model, target, plans, &mut file, &name, on_tensor))?;
        file.into_inner()
            .map_err(|e| io(e.into_error()))?
            .sync_all()
            .map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)?;
        Ok(n)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn which_tensors_llama_cpp_quantizes() {
        assert!(allows_quantization("blk.0.attn_q.weight", &[576, 576]));
        assert!(allows_quantization("token_embd.weight", &[576, 49152]));
        assert!(allows_quantization("output.weight", &[576, 49152]));
        assert!(allows_quantization(
            "blk.0.ffn_up_exps.weight",
            &[64, 128, 8]
        ));
        assert!(!allows_quantization("blk.0.attn_norm.weight", &[576]));
        assert!(!allows_quantization("blk.0.attn_q.bias", &[576, 2]));
        assert!(
            !allows_quantization("blk.0.attn_q.weight", &[576, 1]),
            "1-D as ggml counts"
        );
        assert!(!allows_quantization("blk.0.attn_q_norm.weight", &[64, 2]));
        assert!(!allows_quantization("blk.0.ffn_gate_inp.weight", &[576, 8]));
        assert!(!allows_quantization("position_embd.weight", &[768, 1024]));
        assert!(!allows_quantization("rope_freqs.weight", &[32]));
    }

    #[test]
    fn fallbacks_follow_the_oracle_build() {
        use GgmlType::*;
        let cases = [
            (Q2_K, 576, Some(Q4_0)),
            (Q3_K, 640, Some(Q4_0)),
            (Q4_K, 576, Some(Q5_0)),
            (Q5_K, 576, Some(Q5_1)),
            (Q6_K, 640, Some(Q8_0)),
            (IQ4_XS, 576, Some(IQ4_NL)),
            (Q4_K, 1536, None),
            (Q4_K, 100, Some(F16)),
            (Q8_0, 100, Some(F16)),
            (Q8_0, 576, None),
            (BF16, 7, None),
        ];
        for (target, ncols, want) in cases {
            assert_eq!(
                fallback_type(target, ncols),
                want,
                "{target} with {ncols} columns"
            );
        }
    }

    #[test]
    fn every_quantizable_type_has_a_file_type() {
        for &ty in GgmlType::ALL {
            assert_eq!(
                file_type(ty).is_some(),
                super::super::can_quantize(ty),
                "{ty}"
            );
        }
        assert_eq!(
            crate::inspect::file_type_name(file_type(GgmlType::Q4_K).unwrap() as u64),
            Some("Q4_K_M")
        );
    }

    #[test]
    fn n_dims_ignores_trailing_ones() {
        assert_eq!(ggml_n_dims(&[576]), 1);
        assert_eq!(ggml_n_dims(&[576, 1, 1]), 1);
        assert_eq!(ggml_n_dims(&[576, 3]), 2);
        assert_eq!(ggml_n_dims(&[576, 1, 4]), 3);
    }
}
