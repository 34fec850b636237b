//! Qwen3: the llama layout without q/k/v biases, each query and key head RMS-normed
//! (`attn_q_norm`, `attn_k_norm`) before its rotation, NeoX RoPE.

use candle_core::{Result, Tensor};
use candle_nn::ops::rms_norm;

use super::llama::FeedForward;
use super::step::{AttentionKind, Step};
use super::transformer::{Architecture, Layer};
use super::weights::Weights;
use super::{Linear, ModelConfig, ModelError};

struct Qwen3Layer {
    attn_norm: Tensor,
    wq: Linear,
    wk: Linear,
    wv: Linear,
    q_norm: Tensor,
    k_norm: Tensor,
    wo: Linear,
    ffn: FeedForward,
    rms_eps: f32,
}

pub fn load(
    w: &mut Weights<'_>,
    config: &ModelConfig,
) -> std::result::Result<Architecture, ModelError> {
    let mut layers: Vec<Box<dyn Layer>> = Vec::new();
    for i in 0..config.n_layer {
        let p = format!("blk.{i}");
        layers.push(Box::new(Qwen3Layer {
            attn_norm: w.vector(&format!("{p}.attn_norm.weight"))?,
            wq: w.linear(&format!("{p}.attn_q"))?,
            wk: w.linear(&format!("{p}.attn_k"))?,
            wv: w.linear(&format!("{p}.attn_v"))?,
            q_norm: w.vector(&format!("{p}.attn_q_norm.weight"))?,
            k_norm: w.vector(&format!("{p}.attn_k_norm.weight"))?,
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

/// RMS norm of each head of `[rows, heads · head_dim]` by the head-sized `weight`.
pub fn norm_heads(x: &Tensor, weight: &Tensor, heads: usize, eps: f32) -> Result<Tensor> {
    let (rows, width) = x.dims2()?;
    let heads_of = x.contiguous()?.reshape((rows, heads, width / heads))?;
    rms_norm(&heads_of, weight, eps)
}

impl Layer for Qwen3Layer {
    fn forward(&self, index: usize, x: &Tensor, step: &Step<'_>) -> Result<Tensor> {
        let c = step.config;
        let h = rms_norm(x, &self.attn_norm, self.rms_eps)?;
        let qkv = Linear::forward_group(&[&self.wq, &self.wk, &self.wv], &h, step.decode_rows)?;
        let q = norm_heads(&qkv[0], &self.q_norm, c.n_head, self.rms_eps)?;
        let k = norm_heads(&qkv[1], &self.k_norm, c.n_kv_head, self.rms_eps)?;
        let attn = step.self_attention(index, &q, &k, &qkv[2], AttentionKind::default())?;
        let x = (x + self.wo.forward(&attn, step.decode_rows)?)?;
        self.ffn.residual(&x, step)
    }
}
