//! GGUF v2/v3 header parsing from a [`ByteSource`], in growing windows.
//!
//! The parser runs over the bytes fetched so far. When it runs out it says how far it needs to
//! go, the driver fetches only the missing bytes (at least doubling the window) and parses again
//! from the start: re-parsing a few MB is far cheaper than a second round trip, and it keeps the
//! parser a plain function over a slice.
//!
//! Hostile input: every length is checked against the bytes that remain *in the file* before
//! anything is allocated, so a header that claims 2^60 strings fails at once with a named error
//! instead of allocating; the header itself may not exceed [`MAX_HEADER_BYTES`].

use super::value::{Value, ValueType};
use crate::error::{Error, Result};
use crate::quant::GgmlType;
use crate::source::ByteSource;
use std::collections::{BTreeMap, HashSet};

pub const GGUF_MAGIC: &[u8; 4] = b"GGUF";
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// First window fetched for a model's first file, which holds the metadata and vocabulary:
/// SmolLM2's 49K-token header (2 MiB) comes in one request, gemma3's 262K-token one (6.2 MiB)
/// in two.
pub const INITIAL_WINDOW: u64 = 4 << 20;
/// First window for the other shards of a split model: they hold only tensor infos.
pub const SHARD_WINDOW: u64 = 256 << 10;
/// No real header comes near this (a 262K-token vocabulary with scores is ~7 MiB).
pub const MAX_HEADER_BYTES: u64 = 256 << 20;
/// ggml's GGML_MAX_DIMS.
pub const MAX_DIMS: u32 = 4;
const MAX_NESTING: u32 = 8;

/// One tensor as the header describes it.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    /// ggml order: dims[0] is the row length (fastest varying).
    pub dims: Vec<u64>,
    pub ty: GgmlType,
    /// Offset of the data from the start of the tensor data section.
    pub offset: u64,
    pub n_elements: u64,
    pub n_bytes: u64,
}

/// A parsed GGUF header: metadata, tensor infos and where the tensor data starts.
#[derive(Clone, Debug)]
pub struct GgufHeader {
    pub source_name: String,
    pub version: u32,
    pub metadata: BTreeMap<String, Value>,
    pub tensors: Vec<TensorInfo>,
    pub alignment: u64,
    /// Absolute offset of the tensor data section (header end rounded up to `alignment`).
    pub data_offset: u64,
    /// Size of the file the header came from.
    pub file_size: u64,
    /// How many reads the header took (the browser test asserts one or two).
    pub reads: u32,
}

/// Why parsing stopped short of a result.
enum Stop {
    /// The window ends before this absolute offset; fetch at least up to it and retry.
    Need(u64),
    Fail(Error),
}

impl From<Error> for Stop {
    fn from(e: Error) -> Self {
        Stop::Fail(e)
    }
}

type P<T> = std::result::Result<T, Stop>;

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    file_size: u64,
    name: &'a str,
}

impl<'a> Cursor<'a> {
    fn remaining_in_file(&self) -> u64 {
        self.file_size - self.pos as u64
    }

    fn take(&mut self, n: u64) -> P<&'a [u8]> {
        let end = self.pos as u64 + n;
        if end > self.file_size {
            return Err(Stop::Fail(Error::Truncated {
                source_name: self.name.into(),
                needed: end,
                size: self.file_size,
            }));
        }
        if end > self.buf.len() as u64 {
            return Err(Stop::Need(end));
        }
        let s = &self.buf[self.pos..end as usize];
        self.pos = end as usize;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> P<[u8; N]> {
        Ok(self.take(N as u64)?.try_into().unwrap())
    }
    fn u8(&mut self) -> P<u8> {
        Ok(self.array::<1>()?[0])
    }
    fn u16(&mut self) -> P<u16> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    fn u32(&mut self) -> P<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    fn u64(&mut self) -> P<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// A count of items that each take at least `min_size` bytes: rejected before allocation if
    /// the rest of the file cannot hold them.
    fn count(
        &mut self,
        what: impl FnOnce() -> String,
        min_size: u64,
        unit: &'static str,
    ) -> P<u64> {
        let n = self.u64()?;
        if n.checked_mul(min_size)
            .is_none_or(|b| b > self.remaining_in_file())
        {
            return Err(Stop::Fail(Error::LengthBeyondData {
                source_name: self.name.into(),
                what: what(),
                claimed: n,
                unit,
                available: self.remaining_in_file(),
            }));
        }
        Ok(n)
    }

    fn string(&mut self, what: impl Fn() -> String) -> P<String> {
        let len = self.count(&what, 1, "bytes")?;
        let bytes = self.take(len)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| {
            Stop::Fail(Error::BadUtf8 {
                source_name: self.name.into(),
                what: what(),
            })
        })
    }

    fn value(&mut self, ty: ValueType, key: &str, depth: u32) -> P<Value> {
        Ok(match ty {
            ValueType::U8 => Value::U8(self.u8()?),
            ValueType::I8 => Value::I8(self.u8()? as i8),
            ValueType::U16 => Value::U16(self.u16()?),
            ValueType::I16 => Value::I16(self.u16()? as i16),
            ValueType::U32 => Value::U32(self.u32()?),
            ValueType::I32 => Value::I32(self.u32()? as i32),
            ValueType::F32 => Value::F32(f32::from_bits(self.u32()?)),
            ValueType::Bool => Value::Bool(self.u8()? != 0),
            ValueType::String => Value::String(self.string(|| format!("value of {key:?}"))?),
            ValueType::U64 => Value::U64(self.u64()?),
            ValueType::I64 => Value::I64(self.u64()? as i64),
            ValueType::F64 => Value::F64(f64::from_bits(self.u64()?)),
            ValueType::Array => {
                if depth >= MAX_NESTING {
                    return Err(Stop::Fail(Error::NestingTooDeep {
                        source_name: self.name.into(),
                        key: key.into(),
                        limit: MAX_NESTING,
                    }));
                }
                let elem = self.value_type(key)?;
                let n = self.count(
                    || format!("array {key:?}"),
                    elem.min_encoded_size(),
                    "elements",
                )?;
                // Reserve only what the bytes in hand can hold; a huge claim then costs nothing
                // until the bytes really arrive.
                let in_hand = (self.buf.len() - self.pos) as u64 / elem.min_encoded_size();
                let mut items = Vec::with_capacity(n.min(in_hand) as usize);
                for _ in 0..n {
                    items.push(self.value(elem, key, depth + 1)?);
                }
                Value::Array(elem, items)
            }
        })
    }

    fn value_type(&mut self, key: &str) -> P<ValueType> {
        let id = self.u32()?;
        ValueType::from_id(id).ok_or_else(|| {
            Stop::Fail(Error::UnknownValueType {
                source_name: self.name.into(),
                key: key.into(),
                type_id: id,
            })
        })
    }
}

/// Parses the header from `buf`, the first bytes of a file of `file_size` bytes.
fn parse(buf: &[u8], file_size: u64, name: &str) -> P<GgufHeader> {
    let mut c = Cursor {
        buf,
        pos: 0,
        file_size,
        name,
    };
    let magic = c.take(4.min(file_size))?;
    if magic != GGUF_MAGIC {
        return Err(Stop::Fail(Error::BadMagic {
            source_name: name.into(),
            found: magic.to_vec(),
        }));
    }
    let version = c.u32()?;
    if version != 2 && version != 3 {
        return Err(Stop::Fail(Error::UnsupportedVersion {
            source_name: name.into(),
            version,
        }));
    }
    // A tensor info is at least: name length 8, n_dims 4, one dim 8, type 4, offset 8.
    let n_tensors = c.count(|| "tensor count".into(), 32, "tensors")?;
    // A key/value pair is at least: key length 8, type 4, a one-byte value.
    let n_kv = c.count(|| "metadata key/value count".into(), 13, "key/value pairs")?;

    let mut metadata = BTreeMap::new();
    for i in 0..n_kv {
        let key = c.string(|| format!("metadata key #{i}"))?;
        let ty = c.value_type(&key)?;
        let value = c.value(ty, &key, 0)?;
        if metadata.insert(key.clone(), value).is_some() {
            return Err(Stop::Fail(Error::Duplicate {
                source_name: name.into(),
                what: "metadata key",
                name: key,
            }));
        }
    }

    let alignment = match metadata.get("general.alignment") {
        None => DEFAULT_ALIGNMENT,
        Some(v) => match v.as_u64() {
            Some(a) if a > 0 && a.is_power_of_two() && a <= 1 << 20 => a,
            _ => {
                return Err(Stop::Fail(Error::BadValue {
                    source_name: name.into(),
                    key: "general.alignment".into(),
                    reason: format!("{v:?} is not a power of two up to 1 MiB"),
                }))
            }
        },
    };

    let mut tensors = Vec::with_capacity(n_tensors.min(4096) as usize);
    for i in 0..n_tensors {
        let tname = c.string(|| format!("name of tensor #{i}"))?;
        let n_dims = c.u32()?;
        let mut dims = Vec::with_capacity(n_dims.min(MAX_DIMS) as usize);
        for _ in 0..n_dims.min(MAX_DIMS) {
            dims.push(c.u64()?);
        }
        let bad_shape = |reason: String| {
            Stop::Fail(Error::BadShape {
                source_name: name.into(),
                tensor: tname.clone(),
                dims: dims.clone(),
                reason,
            })
        };
        if n_dims == 0 || n_dims > MAX_DIMS {
            return Err(bad_shape(format!(
                "{n_dims} dimensions (ggml allows 1 to {MAX_DIMS})"
            )));
        }
        let type_id = c.u32()?;
        let ty = GgmlType::from_id(type_id).ok_or_else(|| {
            Stop::Fail(Error::UnknownTensorType {
                source_name: name.into(),
                tensor: tname.clone(),
                type_id,
            })
        })?;
        let offset = c.u64()?;
        let n_elements = dims
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d).filter(|&n| n < 1 << 62))
            .ok_or_else(|| bad_shape("element count overflows".into()))?;
        if dims[0] % ty.block_size() != 0 {
            return Err(bad_shape(format!(
                "row length {} is not a multiple of the {ty} block size {}",
                dims[0],
                ty.block_size()
            )));
        }
        let n_bytes = ty
            .bytes_for(n_elements)
            .ok_or_else(|| bad_shape("byte size overflows".into()))?;
        tensors.push(TensorInfo {
            name: tname,
            dims,
            ty,
            offset,
            n_elements,
            n_bytes,
        });
    }

    let header_end = c.pos as u64;
    let data_offset = header_end.div_ceil(alignment) * alignment;
    let header = GgufHeader {
        source_name: name.into(),
        version,
        metadata,
        tensors,
        alignment,
        data_offset,
        file_size,
        reads: 0,
    };
    Ok(header)
}

impl GgufHeader {
    /// Tensor names unique, offsets aligned, every tensor inside the data section of a file of
    /// `file_size` bytes, no two overlapping. Separate from parsing because the first byte chunk
    /// of a model holds the whole header but not the data it describes.
    pub fn validate(&self) -> Result<()> {
        let h = self;
        let name = &h.source_name;
        let data_size = h.file_size.saturating_sub(h.data_offset);
        let mut seen = HashSet::new();
        for t in &h.tensors {
            if !seen.insert(t.name.as_str()) {
                return Err(Error::Duplicate {
                    source_name: name.clone(),
                    what: "tensor",
                    name: t.name.clone(),
                });
            }
            let bad = |reason: &str| Error::BadTensorOffset {
                source_name: name.clone(),
                tensor: t.name.clone(),
                start: t.offset,
                end: t.offset.saturating_add(t.n_bytes),
                data_size,
                reason: reason.into(),
            };
            if t.offset % h.alignment != 0 {
                return Err(bad(&format!(
                    "does not start at a multiple of the alignment {}",
                    h.alignment
                )));
            }
            // Padding after the header can run past the end of a file that holds no data.
            if h.data_offset > h.file_size {
                return Err(bad(&format!(
                    "starts beyond the end of the file: the data section starts at {}, the file has {} bytes",
                    h.data_offset, h.file_size
                )));
            }
            match t.offset.checked_add(t.n_bytes) {
                Some(end) if end <= data_size => {}
                _ => return Err(bad("ends beyond the end of the file")),
            }
        }
        let mut by_offset: Vec<&TensorInfo> = h.tensors.iter().collect();
        by_offset.sort_by_key(|t| t.offset);
        for w in by_offset.windows(2) {
            if w[0].offset + w[0].n_bytes > w[1].offset {
                return Err(Error::OverlappingTensors {
                    source_name: name.clone(),
                    a: w[0].name.clone(),
                    b: w[1].name.clone(),
                });
            }
        }
        Ok(())
    }
}

/// Reads and parses the header of `src`, fetching only as much of the file as the header needs:
/// `first_window` bytes first, then at least double each time. The tensor layout is not checked
/// against the file here: see [`GgufHeader::validate`].
pub async fn read_header(src: &dyn ByteSource, first_window: u64) -> Result<GgufHeader> {
    let size = src.size();
    let mut buf = src.read_at(0, first_window.min(size) as usize).await?;
    let mut reads = 1;
    loop {
        match parse(&buf, size, src.name()) {
            Ok(mut h) => {
                h.reads = reads;
                return Ok(h);
            }
            Err(Stop::Fail(e)) => return Err(e),
            Err(Stop::Need(end)) => {
                if end > MAX_HEADER_BYTES {
                    return Err(Error::HeaderTooLarge {
                        source_name: src.name().into(),
                        limit: MAX_HEADER_BYTES,
                    });
                }
                let have = buf.len() as u64;
                let new_end = end.max(have * 2).min(size).min(MAX_HEADER_BYTES);
                buf.extend(src.read_at(have, (new_end - have) as usize).await?);
                reads += 1;
            }
        }
    }
}
