//! The llama family (llama with Llama 3's RoPE scaling, mistral, SmolLM2, qwen2 with its q/k/v
//! biases): pre-norm attention and a SwiGLU feed-forward, each added to the residual stream.
//! Qwen3 is the same layer with per-head q/k norms (`qwen3.rs`).

use candle_core::{Result, Tensor};
use candle_nn::ops::rms_norm;

use super::blocks::{FeedForward, SelfAttention};
use super::step::{AttentionKind, Step};
use super::transformer::{Architecture, Layer};
use super::weights::Weights;
use super::{ModelConfig, ModelError};

struct LlamaLayer {
    attn_norm: Tensor,
    attention: SelfAttention,
    ffn: FeedForward,
    rms_eps: f32,
}

pub fn load(
    w: &mut Weights<'_>,
    config: &ModelConfig,
) -> std::result::Result<Architecture, ModelError> {
    load_layers(w, config, false)
}

/// The llama layers of `config`, with per-head q/k norms if `qk_norms`.
pub fn load_layers(
    w: &mut Weights<'_>,
    config: &ModelConfig,
    qk_norms: bool,
) -> std::result::Result<Architecture, ModelError> {
    // Not with_capacity: n_layer comes from the file and is only trusted once the layers'
    // tensors were found.
    let mut layers: Vec<Box<dyn Layer>> = Vec::new();
    for i in 0..config.n_layer {
        let p = format!("blk.{i}");
        layers.push(Box::new(LlamaLayer {
            attn_norm: w.vector(&format!("{p}.attn_norm.weight"))?,
            attention: SelfAttention::load(w, &p, qk_norms, config.rms_eps)?,
            ffn: FeedForward::load(w, &p, config.rms_eps)?,
            rms_eps: config.rms_eps,
        }));
    }
    Ok(Architecture {
        layers,
        rope_bases: vec![config.rope_freq_base],
        embedding_scale: None,
        logit_softcap: None,
    })
}

impl Layer for LlamaLayer {
    fn forward(&self, index: usize, x: &Tensor, step: &Step<'_>) -> Result<Tensor> {
        let h = rms_norm(x, &self.attn_norm, self.rms_eps)?;
        let attn = self
            .attention
            .forward(index, &h, step, AttentionKind::default())?;
        self.ffn.residual(&x.add(&attn)?, step)
    }
}
