//! A GGUF writer: the one header encoder (version 3, little-endian) behind the synthetic and
//! hostile files of the tests, the shards of `quantweb split` and the output of
//! `quantweb quantize`.

use super::parse::{TensorInfo, DEFAULT_ALIGNMENT, GGUF_MAGIC};
use super::value::Value;
use crate::quant::GgmlType;

pub struct WriterTensor {
    pub name: String,
    pub dims: Vec<u64>,
    pub ty: GgmlType,
    pub data: Vec<u8>,
}

#[derive(Default)]
pub struct GgufWriter {
    pub metadata: Vec<(String, Value)>,
    pub tensors: Vec<WriterTensor>,
}

impl GgufWriter {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn kv(mut self, key: &str, value: Value) -> Self {
        self.metadata.push((key.to_string(), value));
        self
    }

    pub fn tensor(mut self, name: &str, dims: &[u64], ty: GgmlType, data: Vec<u8>) -> Self {
        self.tensors.push(WriterTensor {
            name: name.to_string(),
            dims: dims.to_vec(),
            ty,
            data,
        });
        self
    }

    fn alignment(&self) -> u64 {
        self.metadata
            .iter()
            .find(|(k, _)| k == "general.alignment")
            .and_then(|(_, v)| v.as_u64())
            .unwrap_or(DEFAULT_ALIGNMENT)
    }

    /// The whole file. Tensor data is laid out in order, each start aligned.
    pub fn to_bytes(&self) -> Vec<u8> {
        let align = self.alignment();
        let mut infos: Vec<TensorInfo> = self
            .tensors
            .iter()
            .map(|t| TensorInfo {
                name: t.name.clone(),
                dims: t.dims.clone(),
                ty: t.ty,
                offset: 0,
                n_elements: t.dims.iter().product(),
                n_bytes: t.data.len() as u64,
            })
            .collect();
        assign_offsets(&mut infos, align);
        let metadata: Vec<(&str, &Value)> =
            self.metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
        let mut out = encode_header(&metadata, &infos, align);
        for t in &self.tensors {
            out.resize(out.len().next_multiple_of(align as usize), 0);
            out.extend_from_slice(&t.data);
        }
        out
    }
}

/// Sets each tensor's offset: in order, each start a multiple of `alignment`. Returns the size
/// of the data section, the last tensor padded too.
pub fn assign_offsets(tensors: &mut [TensorInfo], alignment: u64) -> u64 {
    let mut offset = 0;
    for t in tensors {
        t.offset = offset;
        offset += t.n_bytes.next_multiple_of(alignment);
    }
    offset
}

/// A GGUF v3 header: `metadata` in order, the tensor infos (dims as given, offsets relative to
/// the data section), zeros up to a multiple of `alignment`. The bytes gguf.cpp's
/// `gguf_get_meta_data` gives for the same keys and tensors.
pub fn encode_header(
    metadata: &[(&str, &Value)],
    tensors: &[TensorInfo],
    alignment: u64,
) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(GGUF_MAGIC);
    out.extend_from_slice(&3u32.to_le_bytes());
    out.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
    out.extend_from_slice(&(metadata.len() as u64).to_le_bytes());
    for (k, v) in metadata {
        put_str(&mut out, k);
        out.extend_from_slice(&(v.value_type() as u32).to_le_bytes());
        put_value(&mut out, v);
    }
    for t in tensors {
        put_str(&mut out, &t.name);
        out.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
        for d in &t.dims {
            out.extend_from_slice(&d.to_le_bytes());
        }
        out.extend_from_slice(&t.ty.id().to_le_bytes());
        out.extend_from_slice(&t.offset.to_le_bytes());
    }
    out.resize(out.len().next_multiple_of(alignment as usize), 0);
    out
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::U8(x) => out.push(*x),
        Value::I8(x) => out.push(*x as u8),
        Value::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F32(x) => out.extend_from_slice(&x.to_bits().to_le_bytes()),
        Value::Bool(x) => out.push(*x as u8),
        Value::String(s) => put_str(out, s),
        Value::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F64(x) => out.extend_from_slice(&x.to_bits().to_le_bytes()),
        Value::Array(t, items) => {
            out.extend_from_slice(&(*t as u32).to_le_bytes());
            out.extend_from_slice(&(items.len() as u64).to_le_bytes());
            for i in items {
                put_value(out, i);
            }
        }
    }
}
