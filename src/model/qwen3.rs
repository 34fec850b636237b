//! Qwen3: the llama layout without q/k/v biases, each query and key head RMS-normed
//! (`attn_q_norm`, `attn_k_norm`) before its rotation, NeoX RoPE (`ModelConfig::rope_neox`).

use super::transformer::Architecture;
use super::weights::Weights;
use super::{ModelConfig, ModelError};

pub fn load(w: &mut Weights<'_>, config: &ModelConfig) -> Result<Architecture, ModelError> {
    super::llama::load_layers(w, config, true)
}
