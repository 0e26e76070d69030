//! quantweb: quantized LLM inference in the browser on WebGPU.
//!
//! Data flow (see ARCHITECTURE.md): a [`source::ByteSource`] gives byte ranges of a file, a URL
//! or a browser Blob; [`gguf`] parses a model's header from such sources (one file, llama.cpp
//! shards or raw byte chunks) without reading tensor data; [`memory`] turns the header into the
//! memory a run needs; [`quant`] knows every GGUF block format and dequantizes them on the CPU.

pub mod error;
pub mod gguf;
pub mod gpu;
pub mod inspect;
pub mod generate;
pub mod memory;
pub mod model;
pub mod quant;
pub mod sample;
pub mod source;

#[cfg(target_arch = "wasm32")]
mod wasm;

pub use error::{Error, Result};
