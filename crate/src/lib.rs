//! quantweb: quantized LLM inference in the browser on WebGPU.
//!
//! Data flow (see ARCHITECTURE.md): a [`source::ByteSource`] gives byte ranges of a file, a URL
//! or a browser Blob; [`gguf`] parses a model's header from such sources (one file, llama.cpp
//! shards or raw byte chunks) without reading tensor data; [`memory`] turns the header into the
//! memory a run needs; [`quant`] knows every GGUF block format and dequantizes them on the CPU.
//! [`tokenizer`] turns text into token ids and back exactly as llama.cpp; [`chat`] renders a
//! model's chat template; [`constrain`] holds generation to a JSON schema or grammar. [`gpu`] runs the kernels, [`model`] the forward pass; [`engine`]
//! wraps a loaded model for conversations (prefix reuse, stop strings), as the CLI and the
//! browser's `WasmEngine` use it. [`site_index`] (native only) indexes a documentation site for
//! the chat widget's retrieval.

pub mod backend;
pub mod chat;
pub mod compare;
pub mod constrain;
pub mod cpu;
pub mod engine;
pub mod error;
#[cfg(all(feature = "fuzzing", not(target_arch = "wasm32")))]
#[doc(hidden)]
pub mod fuzzing;
pub mod generate;
pub mod gguf;
pub mod gpu;
pub mod inspect;
pub mod memory;
pub mod model;
pub mod quant;
pub mod sample;
#[cfg(not(target_arch = "wasm32"))]
pub mod site_index;
pub mod source;
pub mod tokenizer;

#[cfg(target_arch = "wasm32")]
mod wasm;

pub use error::{Error, Result};
