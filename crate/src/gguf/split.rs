//! `quantweb split`: a model (one file, llama.cpp shards or raw byte chunks) rewritten as the
//! shards llama.cpp's `gguf-split --split` writes, `PREFIX-00001-of-0000N.gguf` …
//!
//! What gguf-split writes (tools/gguf-split/gguf-split.cpp over ggml/src/gguf.cpp), and so what
//! this writes, byte for byte for a model with the default alignment of 32:
//! - every shard is a GGUF v3 file of its own: header, tensor infos with offsets into its own
//!   data section, the header padded to the alignment, and every tensor (the last one too)
//!   padded with zeros to the alignment;
//! - shard 1 carries all metadata of the model in the model's order, then `split.no` (u16,
//!   0-based), `split.tensors.count` (i32, all shards together) and `split.count` (u16), in that
//!   order: gguf.cpp's `gguf_set_val_*` removes a key and appends it, and gguf-split sets
//!   `split.count` a second time once it knows it. The other shards carry only these three keys;
//! - tensors keep the model's order; a shard ends before the tensor that would take its tensor
//!   data (each tensor counted padded to the alignment; headers are not counted) past
//!   `--max-size`, or after `--max-tensors` tensors. A tensor larger than `--max-size` is never
//!   cut: it gets a shard of its own;
//! - dimensions are written as `ggml_n_dims` counts them (trailing 1s dropped).
//!
//! Where we differ on purpose: a *first* tensor larger than `--max-size` also gets a shard of its
//! own (gguf-split stops with "one of splits have 0 tensors"); and a `general.alignment` other
//! than 32 is kept in every shard and used for its padding (gguf-split copies the key into
//! shard 1 but pads at 32, which makes that shard unreadable).
//!
//! Tensor data is streamed [`COPY_CHUNK`] bytes at a time from the model's sources into the
//! shard files, which are written under a `.partial` name and renamed once all are complete.

use super::model::GgufModel;
use super::parse::{TensorInfo, DEFAULT_ALIGNMENT, GGUF_MAGIC};
use super::value::{Value, ValueType};
use super::writer::{assign_offsets, encode_header};
use crate::error::{Error, Result};
use crate::source::ByteSource;
use serde::Serialize;

pub const KEY_SPLIT_NO: &str = "split.no";
pub const KEY_SPLIT_COUNT: &str = "split.count";
pub const KEY_SPLIT_TENSORS_COUNT: &str = "split.tensors.count";
const KEY_ALIGNMENT: &str = "general.alignment";

/// Tensor bytes read and written at once: all a split holds in memory besides the headers.
pub const COPY_CHUNK: u64 = 8 << 20;

/// Where a shard ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SplitLimit {
    /// Tensor data bytes per shard, each tensor counted padded to the alignment.
    MaxBytes(u64),
    /// Tensors per shard.
    MaxTensors(u64),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SplitOptions {
    pub limit: SplitLimit,
    /// Shard 1 holds only the metadata (gguf-split's `--no-tensor-first-split`).
    pub no_tensor_first_split: bool,
}

impl Default for SplitOptions {
    /// gguf-split's defaults: 128 tensors per shard.
    fn default() -> Self {
        SplitOptions {
            limit: SplitLimit::MaxTensors(128),
            no_tensor_first_split: false,
        }
    }
}

/// `--max-size` as gguf-split reads it: a whole number followed by `M` (10^6 bytes) or `G`
/// (10^9); `K` (10^3) and a bare number of bytes are accepted too.
pub fn parse_max_size(s: &str) -> Result<u64> {
    let t = s.trim();
    let (num, mult) = match t.as_bytes().last() {
        Some(b'K' | b'k') => (&t[..t.len() - 1], 1_000),
        Some(b'M' | b'm') => (&t[..t.len() - 1], 1_000_000),
        Some(b'G' | b'g') => (&t[..t.len() - 1], 1_000_000_000),
        _ => (t, 1),
    };
    num.parse::<u64>()
        .ok()
        .filter(|&n| n > 0)
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| Error::BadOption {
            name: "--max-size",
            value: s.into(),
            reason: "write a positive whole number with M (10^6 bytes) or G (10^9), as llama.cpp's gguf-split, e.g. 512M or 2G",
        })
}

/// One shard as it will be written.
#[derive(Clone, Debug, Serialize)]
pub struct ShardInfo {
    /// Indices into the model's tensors.
    #[serde(skip)]
    pub tensors: Vec<usize>,
    pub n_tensors: usize,
    /// The whole file: header and padded tensor data.
    pub file_bytes: u64,
}

/// A model and how it is split: every shard's header is made up front (so sizes are known before
/// anything is written); tensor data is streamed by [`Split::write_shard`].
pub struct Split<'a> {
    model: &'a GgufModel,
    alignment: u64,
    headers: Vec<Vec<u8>>,
    shards: Vec<ShardInfo>,
}

impl<'a> Split<'a> {
    /// Plans the shards of `model`. `key_order` lists its metadata keys in file order (see
    /// [`metadata_order`]); keys missing from it are written after the others, sorted.
    pub fn new(model: &'a GgufModel, key_order: &[String], opts: &SplitOptions) -> Result<Self> {
        let alignment = match model.metadata.get(KEY_ALIGNMENT) {
            None => DEFAULT_ALIGNMENT,
            Some(v) => v.as_u64().ok_or_else(|| {
                Error::Shards(format!(
                    "{KEY_ALIGNMENT} is {}, not an integer",
                    v.describe()
                ))
            })?,
        };
        if let SplitLimit::MaxTensors(0) | SplitLimit::MaxBytes(0) = opts.limit {
            return Err(Error::BadOption {
                name: "--max-tensors/--max-size",
                value: "0".into(),
                reason: "a shard must hold at least one tensor",
            });
        }
        let groups = plan(model, alignment, opts);
        let count = u16::try_from(groups.len()).map_err(|_| {
            Error::Shards(format!(
                "{} shards planned, but split.count is a u16 (at most 65535): raise --max-size or --max-tensors",
                groups.len()
            ))
        })?;
        let total = i32::try_from(model.tensors.len()).map_err(|_| {
            Error::Shards(format!(
                "{} tensors do not fit split.tensors.count (an i32)",
                model.tensors.len()
            ))
        })?;

        let mut ordered: Vec<(&str, &Value)> = Vec::with_capacity(model.metadata.len() + 3);
        for k in key_order {
            if let Some((k, v)) = model.metadata.get_key_value(k.as_str()) {
                if !ordered.iter().any(|(o, _)| *o == k) {
                    ordered.push((k, v));
                }
            }
        }
        for (k, v) in &model.metadata {
            if !ordered.iter().any(|(o, _)| o == k) {
                ordered.push((k, v));
            }
        }
        let first_meta = ordered.len();
        let align_value = Value::U32(alignment as u32);
        let (mut headers, mut shards) = (Vec::new(), Vec::new());
        for (no, group) in groups.into_iter().enumerate() {
            let split_keys = [
                (KEY_SPLIT_NO, Value::U16(no as u16)),
                (KEY_SPLIT_TENSORS_COUNT, Value::I32(total)),
                (KEY_SPLIT_COUNT, Value::U16(count)),
            ];
            let mut kv: Vec<(&str, &Value)> = if no == 0 {
                ordered[..first_meta].to_vec()
            } else if alignment != DEFAULT_ALIGNMENT {
                vec![(KEY_ALIGNMENT, &align_value)]
            } else {
                vec![]
            };
            kv.extend(split_keys.iter().map(|(k, v)| (*k, v)));
            let mut infos: Vec<TensorInfo> = group
                .iter()
                .map(|&i| {
                    let mut t = model.tensors[i].info.clone();
                    // ggml_n_dims: trailing 1s are not written.
                    while t.dims.len() > 1 && t.dims.last() == Some(&1) {
                        t.dims.pop();
                    }
                    t
                })
                .collect();
            let data_bytes = assign_offsets(&mut infos, alignment);
            let header = encode_header(&kv, &infos, alignment);
            shards.push(ShardInfo {
                n_tensors: group.len(),
                file_bytes: header.len() as u64 + data_bytes,
                tensors: group,
            });
            headers.push(header);
        }
        Ok(Split {
            model,
            alignment,
            headers,
            shards,
        })
    }

    pub fn shards(&self) -> &[ShardInfo] {
        &self.shards
    }

    /// Writes shard `i` (0-based) to `out`: its header, then its tensors read from the model
    /// [`COPY_CHUNK`] bytes at a time, each padded to the alignment. `out_name` is for errors.
    pub async fn write_shard(
        &self,
        i: usize,
        out: &mut impl std::io::Write,
        out_name: &str,
    ) -> Result<()> {
        let io = |e: std::io::Error| Error::Io {
            source_name: out_name.to_string(),
            message: e.to_string(),
        };
        out.write_all(&self.headers[i]).map_err(io)?;
        for &t in &self.shards[i].tensors {
            let info = &self.model.tensors[t].info;
            let mut offset = 0;
            while offset < info.n_bytes {
                let len = COPY_CHUNK.min(info.n_bytes - offset);
                let data = self
                    .model
                    .read_tensor_range(&info.name, offset, len as usize)
                    .await?;
                out.write_all(&data).map_err(io)?;
                offset += len;
            }
            let pad = info.n_bytes.next_multiple_of(self.alignment) - info.n_bytes;
            out.write_all(&vec![0u8; pad as usize]).map_err(io)?;
        }
        Ok(())
    }
}

/// Which tensors go to which shard, as gguf-split decides (see the module docs).
fn plan(model: &GgufModel, alignment: u64, opts: &SplitOptions) -> Vec<Vec<usize>> {
    let mut groups = Vec::new();
    if opts.no_tensor_first_split {
        groups.push(vec![]);
    }
    let mut current: Vec<usize> = vec![];
    let mut bytes = 0u64;
    for (i, t) in model.tensors.iter().enumerate() {
        let n = t.info.n_bytes.next_multiple_of(alignment);
        let full = match opts.limit {
            SplitLimit::MaxBytes(max) => bytes + n > max,
            SplitLimit::MaxTensors(max) => current.len() as u64 >= max,
        };
        if full && !current.is_empty() {
            groups.push(std::mem::take(&mut current));
            bytes = 0;
        }
        current.push(i);
        bytes += n;
    }
    if !current.is_empty() || groups.is_empty() {
        groups.push(current);
    }
    groups
}

/// Bytes `v` takes in a header (after its type id).
fn encoded_len(v: &Value) -> u64 {
    match v {
        Value::String(s) => 8 + s.len() as u64,
        Value::Array(_, items) => 12 + items.iter().map(encoded_len).sum::<u64>(),
        v => v.value_type().min_encoded_size(),
    }
}

/// The metadata keys of `model` in the order its first header lists them (`GgufModel::metadata`
/// is a sorted map, and llama.cpp keeps a model's order). `first` is the model's first file, or
/// its byte chunks as one [`crate::source::ConcatSource`]; only the metadata section is read.
/// Keys the walk does not reach come back sorted after the others.
pub async fn metadata_order(model: &GgufModel, first: &dyn ByteSource) -> Result<Vec<String>> {
    // The metadata section: 24 bytes of counts, every pair, and room for split.* keys that the
    // model's map no longer holds.
    let known: u64 = model
        .metadata
        .iter()
        .map(|(k, v)| 12 + k.len() as u64 + encoded_len(v))
        .sum();
    let len = (24 + known + 1024).min(first.size());
    let buf = first.read_at(0, len as usize).await?;
    let mut order = walk_keys(&buf).unwrap_or_default();
    order.retain(|k| model.metadata.contains_key(k));
    order.extend(
        model
            .metadata
            .keys()
            .filter(|k| !order.contains(k))
            .cloned()
            .collect::<Vec<_>>(),
    );
    Ok(order)
}

/// Keys of a GGUF header in order, as far as `buf` holds them.
fn walk_keys(buf: &[u8]) -> Option<Vec<String>> {
    let u64_at = |p: usize| Some(u64::from_le_bytes(buf.get(p..p + 8)?.try_into().ok()?));
    let u32_at = |p: usize| Some(u32::from_le_bytes(buf.get(p..p + 4)?.try_into().ok()?));
    fn skip(buf: &[u8], p: usize, ty: u32, depth: u32) -> Option<usize> {
        let u64_at = |p: usize| Some(u64::from_le_bytes(buf.get(p..p + 8)?.try_into().ok()?));
        match ValueType::from_id(ty)? {
            ValueType::String => p.checked_add(8)?.checked_add(u64_at(p)? as usize),
            ValueType::Array if depth < 8 => {
                let elem = u32::from_le_bytes(buf.get(p..p + 4)?.try_into().ok()?);
                let n = u64_at(p + 4)?;
                let mut q = p + 12;
                match ValueType::from_id(elem)? {
                    ValueType::String | ValueType::Array => {
                        for _ in 0..n {
                            q = skip(buf, q, elem, depth + 1)?;
                        }
                    }
                    t => {
                        q = q.checked_add(
                            usize::try_from(n.checked_mul(t.min_encoded_size())?).ok()?,
                        )?
                    }
                }
                Some(q)
            }
            ValueType::Array => None,
            t => Some(p + t.min_encoded_size() as usize),
        }
    }
    if buf.get(..4)? != GGUF_MAGIC {
        return None;
    }
    let n_kv = u64_at(16)?;
    let mut keys = Vec::new();
    let mut p = 24usize;
    for _ in 0..n_kv {
        let len = usize::try_from(u64_at(p)?).ok()?;
        let key = std::str::from_utf8(buf.get(p + 8..p.checked_add(8 + len)?)?).ok()?;
        p += 8 + len;
        let ty = u32_at(p)?;
        p = skip(buf, p + 4, ty, 0)?;
        if p > buf.len() {
            return Some(keys);
        }
        keys.push(key.to_string());
    }
    Some(keys)
}

#[cfg(not(target_arch = "wasm32"))]
pub use native::*;

#[cfg(not(target_arch = "wasm32"))]
mod native {
    use super::*;
    use crate::source::{open_args, ConcatSource};
    use std::io::Write;

    /// A shard written (or, in a dry run, planned).
    #[derive(Clone, Debug, Serialize)]
    pub struct WrittenShard {
        pub path: String,
        pub n_tensors: usize,
        pub file_bytes: u64,
    }

    /// The shard file names gguf-split uses: `{prefix}-00001-of-0000N.gguf` …
    pub fn shard_paths(prefix: &str, count: usize) -> Vec<String> {
        (1..=count)
            .map(|i| format!("{prefix}-{i:05}-of-{count:05}.gguf"))
            .collect()
    }

    /// Splits the model of `inputs` (paths or URLs as the CLI takes them) into shards named
    /// after `out_prefix`. Each shard is written to `PATH.partial` and renamed once every shard
    /// is complete; on an error the partial files are removed and nothing is renamed. A dry
    /// run only plans.
    pub fn split_files(
        inputs: &[String],
        out_prefix: &str,
        opts: &SplitOptions,
        dry_run: bool,
    ) -> Result<Vec<WrittenShard>> {
        let model = pollster::block_on(GgufModel::open(open_args(inputs)?))?;
        let first = ConcatSource::new(open_args(inputs)?);
        let order = pollster::block_on(metadata_order(&model, &first))?;
        drop(first);
        let split = Split::new(&model, &order, opts)?;
        let paths = shard_paths(out_prefix, split.shards().len());
        let report: Vec<WrittenShard> = split
            .shards()
            .iter()
            .zip(&paths)
            .map(|(s, p)| WrittenShard {
                path: p.clone(),
                n_tensors: s.n_tensors,
                file_bytes: s.file_bytes,
            })
            .collect();
        if dry_run {
            return Ok(report);
        }
        let partial: Vec<String> = paths.iter().map(|p| format!("{p}.partial")).collect();
        let result = (|| -> Result<()> {
            for (i, tmp) in partial.iter().enumerate() {
                let io = |e: std::io::Error| Error::Io {
                    source_name: tmp.clone(),
                    message: e.to_string(),
                };
                let file = std::fs::File::create(tmp).map_err(io)?;
                let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
                pollster::block_on(split.write_shard(i, &mut w, tmp))?;
                w.flush().map_err(io)?;
                let file = w.into_inner().map_err(|e| io(e.into_error()))?;
                file.sync_all().map_err(io)?;
                let written = file.metadata().map_err(io)?.len();
                if written != report[i].file_bytes {
                    return Err(Error::Io {
                        source_name: tmp.clone(),
                        message: format!("wrote {written} bytes, planned {}", report[i].file_bytes),
                    });
                }
            }
            for (tmp, path) in partial.iter().zip(&paths) {
                std::fs::rename(tmp, path).map_err(|e| Error::Io {
                    source_name: path.clone(),
                    message: format!("renaming {tmp}: {e}"),
                })?;
            }
            Ok(())
        })();
        if result.is_err() {
            for tmp in &partial {
                let _ = std::fs::remove_file(tmp);
            }
        }
        result.map(|()| report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::GgufWriter;
    use crate::quant::GgmlType;
    use crate::source::MemorySource;

    fn model_of(bytes: Vec<u8>) -> GgufModel {
        pollster::block_on(GgufModel::open(vec![Box::new(MemorySource::new(
            "m", bytes,
        ))]))
        .unwrap()
    }

    /// Four F32 tensors of 40, 8, 100 and 4 floats; the writer writes keys in this order.
    fn small() -> Vec<u8> {
        GgufWriter::new()
            .kv("general.architecture", Value::String("llama".into()))
            .kv("b.first", Value::U32(7))
            .kv(
                "a.second",
                Value::Array(ValueType::String, vec![Value::String("x".into())]),
            )
            .tensor("t0", &[40], GgmlType::F32, vec![1; 160])
            .tensor("t1", &[8, 1], GgmlType::F32, vec![2; 32])
            .tensor("t2", &[100], GgmlType::F32, vec![3; 400])
            .tensor("t3", &[4], GgmlType::F32, vec![4; 16])
            .to_bytes()
    }

    fn groups(split: &Split) -> Vec<Vec<usize>> {
        split.shards().iter().map(|s| s.tensors.clone()).collect()
    }

    #[test]
    fn plans_like_gguf_split() {
        let bytes = small();
        let m = model_of(bytes.clone());
        let order = pollster::block_on(metadata_order(&m, &MemorySource::new("m", bytes))).unwrap();
        assert_eq!(order, ["general.architecture", "b.first", "a.second"]);
        let opts = |limit, no_first| SplitOptions {
            limit,
            no_tensor_first_split: no_first,
        };
        use SplitLimit::*;
        for (o, want) in [
            (opts(MaxTensors(2), false), vec![vec![0, 1], vec![2, 3]]),
            (
                opts(MaxTensors(3), true),
                vec![vec![], vec![0, 1, 2], vec![3]],
            ),
            // Padded sizes 160, 32, 416, 32: t2 alone exceeds 200 bytes and sits alone.
            (
                opts(MaxBytes(200), false),
                vec![vec![0, 1], vec![2], vec![3]],
            ),
            (
                opts(MaxBytes(100), false),
                vec![vec![0], vec![1], vec![2], vec![3]],
            ),
            (opts(MaxBytes(1 << 20), false), vec![vec![0, 1, 2, 3]]),
        ] {
            let s = Split::new(&m, &order, &o).unwrap();
            assert_eq!(groups(&s), want, "{o:?}");
        }
        assert!(Split::new(&m, &order, &opts(MaxTensors(0), false)).is_err());
    }

    #[test]
    fn shards_read_back_as_the_model() {
        let bytes = small();
        let m = model_of(bytes.clone());
        let order = pollster::block_on(metadata_order(&m, &MemorySource::new("m", bytes))).unwrap();
        let s = Split::new(
            &m,
            &order,
            &SplitOptions {
                limit: SplitLimit::MaxTensors(3),
                no_tensor_first_split: true,
            },
        )
        .unwrap();
        let files: Vec<Box<dyn ByteSource>> = (0..s.shards().len())
            .map(|i| {
                let mut out = Vec::new();
                pollster::block_on(s.write_shard(i, &mut out, "mem")).unwrap();
                assert_eq!(out.len() as u64, s.shards()[i].file_bytes);
                assert_eq!(out.len() % 32, 0, "every tensor padded, the last too");
                Box::new(MemorySource::new(format!("s{i}"), out)) as Box<dyn ByteSource>
            })
            .collect();
        let back = pollster::block_on(GgufModel::open(files)).unwrap();
        assert_eq!(back.layout, crate::gguf::Layout::Shards);
        assert_eq!(back.metadata, m.metadata);
        for (a, b) in back.tensors.iter().zip(&m.tensors) {
            assert_eq!(a.info.name, b.info.name);
            assert_eq!(a.info.ty, b.info.ty);
            assert_eq!(
                pollster::block_on(back.read_tensor(&a.info.name)).unwrap(),
                pollster::block_on(m.read_tensor(&b.info.name)).unwrap()
            );
        }
        // ggml_n_dims: t1's trailing 1 is not written.
        assert_eq!(back.tensor("t1").unwrap().info.dims, [8]);
    }

    #[test]
    fn max_size_parses_as_gguf_split() {
        assert_eq!(parse_max_size("512M").unwrap(), 512_000_000);
        assert_eq!(parse_max_size("2G").unwrap(), 2_000_000_000);
        assert_eq!(parse_max_size("4096").unwrap(), 4096);
        for bad in ["", "M", "0M", "-1M", "1.5G", "12X"] {
            assert!(parse_max_size(bad).is_err(), "{bad}");
        }
    }
}
