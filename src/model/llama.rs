//! The llama family (llama with Llama 3's RoPE scaling, mistral, SmolLM2, qwen2 with its q/k/v
//! biases): pre-norm attention and a SwiGLU feed-forward, each added to the residual stream.

use candle_core::{Result, Tensor};
use candle_nn::ops::rms_norm;

use super::step::{AttentionKind, Step};
use super::swiglu::swiglu;
use super::transformer::{Architecture, Layer};
use super::weights::Weights;
use super::{Linear, ModelConfig, ModelError};

struct LlamaLayer {
    attn_norm: Tensor,
    wq: Linear,
    wk: Linear,
    wv: Linear,
    wo: Linear,
    ffn: FeedForward,
    rms_eps: f32,
}

pub fn load(
    w: &mut Weights<'_>,
    config: &ModelConfig,
) -> std::result::Result<Architecture, ModelError> {
    // Not with_capacity: n_layer comes from the file and is only trusted once the layers'
    // tensors were found.
    let mut layers: Vec<Box<dyn Layer>> = Vec::new();
    for i in 0..config.n_layer {
        let p = format!("blk.{i}");
        layers.push(Box::new(LlamaLayer {
            attn_norm: w.vector(&format!("{p}.attn_norm.weight"))?,
            wq: w.linear(&format!("{p}.attn_q"))?,
            wk: w.linear(&format!("{p}.attn_k"))?,
            wv: w.linear(&format!("{p}.attn_v"))?,
            wo: w.linear(&format!("{p}.attn_output"))?,
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
        let qkv = Linear::forward_group(&[&self.wq, &self.wk, &self.wv], &h, step.decode_rows)?;
        let attn =
            step.self_attention(index, &qkv[0], &qkv[1], &qkv[2], AttentionKind::default())?;
        let x = (x + self.wo.forward(&attn, step.decode_rows)?)?;
        self.ffn.residual(&x, step)
    }
}

/// The pre-norm SwiGLU feed-forward of the llama family (qwen3 too), `ffn_{norm,gate,up,down}`.
pub struct FeedForward {
    norm: Tensor,
    gate: Linear,
    up: Linear,
    down: Linear,
    rms_eps: f32,
}

impl FeedForward {
    /// Block `prefix`'s (`blk.{i}`) feed-forward tensors.
    pub fn load(
        w: &mut Weights<'_>,
        prefix: &str,
        rms_eps: f32,
    ) -> std::result::Result<Self, ModelError> {
        Ok(Self {
            norm: w.vector(&format!("{prefix}.ffn_norm.weight"))?,
            gate: w.linear(&format!("{prefix}.ffn_gate"))?,
            up: w.linear(&format!("{prefix}.ffn_up"))?,
            down: w.linear(&format!("{prefix}.ffn_down"))?,
            rms_eps,
        })
    }

    /// `x + down(silu(gate(h)) · up(h))`, `h = rms_norm(x)`.
    pub fn residual(&self, x: &Tensor, step: &Step<'_>) -> Result<Tensor> {
        let h = rms_norm(x, &self.norm, self.rms_eps)?;
        let gate_up = Linear::forward_group(&[&self.gate, &self.up], &h, step.decode_rows)?;
        let hidden = swiglu(&gate_up[0], &gate_up[1])?;
        x + self.down.forward(&hidden, step.decode_rows)?
    }
}
