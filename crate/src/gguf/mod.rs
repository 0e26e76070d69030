//! GGUF: the model file format of llama.cpp. Header parsing, multi-part models, a writer,
//! llama.cpp-compatible splitting into shards.

mod model;
mod parse;
pub mod split;
mod value;
pub mod writer;

pub use model::{shard_names, GgufModel, Layout, ModelTensor};
pub use parse::{
    read_header, GgufHeader, TensorInfo, DEFAULT_ALIGNMENT, INITIAL_WINDOW, MAX_HEADER_BYTES,
    SHARD_WINDOW,
};
pub use value::{Value, ValueType, JSON_ARRAY_LIMIT};
pub use writer::{GgufWriter, WriterTensor};
