//! The model: GGUF loading, the slot KV cache and the batched forward pass, with one file per
//! architecture.
//!
//! Knows nothing of files beyond the GGUF itself, nor of documents or output formats.

mod attention;
mod batch;
mod blocks;
mod causal_softmax;
mod config;
mod cpu_attention;
mod cpu_matmul;
mod cpu_storage;
mod gemma3;
mod gguf;
mod heap;
mod huge_pages;
mod kv_cache;
mod linear;
mod llama;
mod phi3;
mod prompt_attention;
mod qwen3;
mod rotary;
mod step;
mod swiglu;
pub mod synthetic;
mod team;
mod transformer;
mod weights;

use std::path::PathBuf;

pub use batch::{BatchRow, BatchStep, SlotId};
pub use config::ModelConfig;
pub use cpu_matmul::set_int8_activations;
pub use gguf::GgufFile;
pub use heap::keep_freed_memory;
pub use kv_cache::SlotKvCache;
pub use linear::{cpu_matmul_path, Linear};
pub use transformer::Model;

/// Everything that can go wrong while loading or running the model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("cannot read model {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a readable GGUF file: {message}")]
    Gguf { path: PathBuf, message: String },
    #[error("GGUF key `{key}` missing in {path}")]
    MissingKey { key: String, path: PathBuf },
    #[error("GGUF key `{key}` in {path} has the wrong type: {message}")]
    BadValue {
        key: String,
        path: PathBuf,
        message: String,
    },
    #[error("tensor `{name}` missing in {path}")]
    MissingTensor { name: String, path: PathBuf },
    #[error(
        "unsupported model architecture `{arch}` in {path} (supported: llama, mistral, qwen2, qwen3, gemma3, phi3)"
    )]
    UnsupportedArchitecture { arch: String, path: PathBuf },
    #[error("invalid batch: {0}")]
    InvalidBatch(String),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}
