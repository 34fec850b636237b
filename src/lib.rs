//! docanalyze: run a local quantized LLM over many documents at once, K sequences decoded
//! together with their KV caches batched into shared forward passes.

pub mod accuracy;
pub mod app;
pub mod bench;
pub mod byte_size;
pub mod chunking;
pub mod cli;
pub mod config;
pub mod control_tokens;
pub mod device;
pub mod engine;
pub mod info;
pub mod input;
pub mod json_answers;
pub mod labels;
pub mod loaded_model;
pub mod merge;
pub mod model;
pub mod model_source;
pub mod output;
pub mod panic_guard;
pub mod pipeline;
pub mod progress;
pub mod prompt;
pub mod report;
pub mod resume;
pub mod sampler;
pub mod shard;
pub mod signals;
pub mod tokenizer;
