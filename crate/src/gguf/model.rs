//! A model as the user gives it: one GGUF file, llama.cpp split shards, or raw byte chunks of one
//! file. Whatever the layout, tensors are looked up by name and read by (file, absolute offset).

use super::parse::{read_header, GgufHeader, TensorInfo, INITIAL_WINDOW, SHARD_WINDOW};
use super::value::Value;
use crate::error::{Error, Result};
use crate::source::{ByteSource, ConcatSource};
use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    /// One GGUF file.
    Single,
    /// llama.cpp `gguf-split` shards: each a valid GGUF with its own tensors.
    Shards,
    /// Raw byte chunks that concatenate to one GGUF file.
    Chunks,
}

/// A tensor and where its bytes are.
#[derive(Clone, Debug)]
pub struct ModelTensor {
    pub info: TensorInfo,
    /// Index into [`GgufModel::files`].
    pub file: usize,
    /// Absolute offset of the first byte in that file.
    pub start: u64,
}

/// A parsed model. Owns its sources so tensor data can be streamed later.
pub struct GgufModel {
    pub layout: Layout,
    /// Names and sizes of the parts the user gave (shards or chunks), in order.
    pub parts: Vec<(String, u64)>,
    /// From the first shard (llama.cpp writes all metadata there); `split.*` keys removed.
    pub metadata: BTreeMap<String, Value>,
    pub tensors: Vec<ModelTensor>,
    pub version: u32,
    /// Requests made to read all headers (for the header-only guarantee).
    pub header_reads: u32,
    /// One per shard, or one [`ConcatSource`] over all chunks.
    files: Vec<Box<dyn ByteSource>>,
}

const SPLIT_COUNT: &str = "split.count";
const SPLIT_NO: &str = "split.no";
const SPLIT_TENSORS: &str = "split.tensors.count";

impl GgufModel {
    /// Opens a model from its parts in order. With several parts, the first one decides: if it
    /// carries `split.count` the parts are shards, otherwise they are byte chunks of one file.
    pub async fn open(parts: Vec<Box<dyn ByteSource>>) -> Result<Self> {
        let part_names: Vec<(String, u64)> = parts
            .iter()
            .map(|p| (p.name().to_string(), p.size()))
            .collect();
        if parts.is_empty() {
            return Err(Error::NoSource);
        }
        // Read the first header through the concatenation of all parts: for shards it lies
        // wholly in the first one, for byte chunks it may span several.
        let whole = ConcatSource::new(parts);
        let mut first = read_header(&whole, INITIAL_WINDOW).await?;
        if let Some(count) = split_key(&first, SPLIT_COUNT)? {
            let parts = whole.into_parts();
            first.file_size = parts[0].size();
            first.source_name = parts[0].name().to_string();
            return Self::open_shards(first, parts, part_names, count).await;
        }
        first.validate()?;
        let layout = if part_names.len() == 1 {
            Layout::Single
        } else {
            Layout::Chunks
        };
        Ok(Self::from_headers(
            layout,
            part_names,
            vec![first],
            vec![Box::new(whole)],
        ))
    }

    async fn open_shards(
        first: GgufHeader,
        parts: Vec<Box<dyn ByteSource>>,
        part_names: Vec<(String, u64)>,
        count: u64,
    ) -> Result<Self> {
        let first_name = first.source_name.clone();
        if parts.len() as u64 != count {
            let hint = if parts.len() == 1 {
                " (give the first shard's path or URL ending in -00001-of-NNNNN.gguf and the others are found by name, or list all of them in order)"
            } else {
                ""
            };
            return Err(Error::Shards(format!(
                "{first_name} is shard 1 of a {count}-shard model, but {} part(s) were given{hint}",
                parts.len()
            )));
        }
        let total_tensors = split_key(&first, SPLIT_TENSORS)?;
        let mut headers = vec![first];
        for p in &parts[1..] {
            headers.push(read_header(p.as_ref(), SHARD_WINDOW).await?);
        }
        for h in &headers {
            h.validate()?;
        }
        for (i, h) in headers.iter().enumerate() {
            if split_key(h, SPLIT_NO)? != Some(i as u64)
                || split_key(h, SPLIT_COUNT)? != Some(count)
            {
                return Err(Error::Shards(format!(
                    "{} should be shard {} of {count}, but its split.no/split.count say {:?}/{:?} (shards out of order or from different models?)",
                    h.source_name,
                    i + 1,
                    split_key(h, SPLIT_NO)?.map(|n| n + 1),
                    split_key(h, SPLIT_COUNT)?
                )));
            }
        }
        let found: u64 = headers.iter().map(|h| h.tensors.len() as u64).sum();
        if let Some(total) = total_tensors.filter(|&t| t != found) {
            return Err(Error::Shards(format!("{first_name}: split.tensors.count says {total} tensors, the {count} shards hold {found}")));
        }
        let m = Self::from_headers(Layout::Shards, part_names, headers, parts);
        let mut names = std::collections::HashSet::new();
        if let Some(t) = m
            .tensors
            .iter()
            .find(|t| !names.insert(t.info.name.as_str()))
        {
            return Err(Error::Duplicate {
                source_name: first_name,
                what: "tensor (in two shards)",
                name: t.info.name.clone(),
            });
        }
        Ok(m)
    }

    fn from_headers(
        layout: Layout,
        parts: Vec<(String, u64)>,
        headers: Vec<GgufHeader>,
        files: Vec<Box<dyn ByteSource>>,
    ) -> Self {
        let tensors = headers
            .iter()
            .enumerate()
            .flat_map(|(file, h)| {
                h.tensors.iter().map(move |t| ModelTensor {
                    info: t.clone(),
                    file,
                    start: h.data_offset + t.offset,
                })
            })
            .collect();
        let header_reads = headers.iter().map(|h| h.reads).sum();
        let first = headers.into_iter().next().expect("at least one header");
        let mut metadata = first.metadata;
        metadata.retain(|k, _| !k.starts_with("split."));
        GgufModel {
            layout,
            parts,
            metadata,
            tensors,
            version: first.version,
            header_reads,
            files,
        }
    }

    pub fn tensor(&self, name: &str) -> Option<&ModelTensor> {
        self.tensors.iter().find(|t| t.info.name == name)
    }

    /// The raw (still quantized) bytes of a tensor, wherever they are.
    pub async fn read_tensor(&self, name: &str) -> Result<Vec<u8>> {
        let t = self
            .tensor(name)
            .ok_or_else(|| Error::NoSuchTensor(name.into()))?;
        self.files[t.file]
            .read_at(t.start, t.info.n_bytes as usize)
            .await
    }

    /// Bytes `offset..offset + len` of a tensor's data.
    pub async fn read_tensor_range(&self, name: &str, offset: u64, len: usize) -> Result<Vec<u8>> {
        let t = self
            .tensor(name)
            .ok_or_else(|| Error::NoSuchTensor(name.into()))?;
        if offset + len as u64 > t.info.n_bytes {
            return Err(Error::ReadPastEnd {
                source_name: name.into(),
                offset,
                len: len as u64,
                size: t.info.n_bytes,
            });
        }
        self.files[t.file].read_at(t.start + offset, len).await
    }

    pub fn file_bytes(&self) -> u64 {
        self.parts.iter().map(|p| p.1).sum()
    }
}

fn split_key(h: &GgufHeader, key: &str) -> Result<Option<u64>> {
    h.metadata
        .get(key)
        .map(|v| {
            v.as_u64().ok_or_else(|| Error::WrongValueType {
                source_name: h.source_name.clone(),
                key: key.into(),
                expected: "an unsigned integer",
                found: v.describe(),
            })
        })
        .transpose()
}

/// For a llama.cpp shard name (`…-00001-of-00003.gguf`, a path or a URL, query strings kept),
/// the names of all shards in order; `None` when the name is not a first shard.
pub fn shard_names(first: &str) -> Option<Vec<String>> {
    let (base, query) = match first.find(['?', '#']) {
        Some(i) => first.split_at(i),
        None => (first, ""),
    };
    let stem = base.strip_suffix(".gguf")?;
    let (head, count) = stem.rsplit_once("-of-")?;
    let (prefix, index) = head.rsplit_once('-')?;
    let all_digits = |s: &str| s.len() == 5 && s.bytes().all(|b| b.is_ascii_digit());
    if !all_digits(index) || !all_digits(count) || index != "00001" {
        return None;
    }
    let n: u32 = count.parse().ok().filter(|&n| n >= 1)?;
    Some(
        (1..=n)
            .map(|i| format!("{prefix}-{i:05}-of-{n:05}.gguf{query}"))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_names_follow_llama_cpp() {
        assert_eq!(
            shard_names("dir/m-00001-of-00003.gguf").unwrap(),
            [
                "dir/m-00001-of-00003.gguf",
                "dir/m-00002-of-00003.gguf",
                "dir/m-00003-of-00003.gguf"
            ]
        );
        assert_eq!(
            shard_names("https://h/x/Qwen-7B-Q4_K_M-00001-of-00002.gguf?download=true").unwrap()[1],
            "https://h/x/Qwen-7B-Q4_K_M-00002-of-00002.gguf?download=true"
        );
        assert_eq!(
            shard_names("m-00002-of-00003.gguf"),
            None,
            "not the first shard"
        );
        assert_eq!(shard_names("m.gguf"), None);
        assert_eq!(shard_names("m-1-of-3.gguf"), None);
    }
}
