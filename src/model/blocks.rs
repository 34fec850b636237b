//! Sublayers the architecture files share: grouped-query self-attention (with Qwen3's and
//! Gemma 3's per-head q/k norms when the file has them) and the SwiGLU feed-forward.

use candle_core::{Result, Tensor};
use candle_nn::ops::rms_norm;

use super::step::{AttentionKind, Step};
use super::swiglu::swiglu;
use super::weights::Weights;
use super::{Linear, ModelError};

/// `attn_q/k/v/output` of block `blk.{i}`, and `attn_q_norm`/`attn_k_norm` when asked for.
pub struct SelfAttention {
    wq: Linear,
    wk: Linear,
    wv: Linear,
    wo: Linear,
    /// Per-head RMS norms of queries and keys, applied before their rotation.
    qk_norms: Option<(Tensor, Tensor)>,
    rms_eps: f32,
}

impl SelfAttention {
    /// Block `prefix`'s (`blk.{i}`) attention tensors; `qk_norms`: the file has q/k norms.
    pub fn load(
        w: &mut Weights<'_>,
        prefix: &str,
        qk_norms: bool,
        rms_eps: f32,
    ) -> std::result::Result<Self, ModelError> {
        let qk_norms = if qk_norms {
            Some((
                w.vector(&format!("{prefix}.attn_q_norm.weight"))?,
                w.vector(&format!("{prefix}.attn_k_norm.weight"))?,
            ))
        } else {
            None
        };
        Ok(Self {
            wq: w.linear(&format!("{prefix}.attn_q"))?,
            wk: w.linear(&format!("{prefix}.attn_k"))?,
            wv: w.linear(&format!("{prefix}.attn_v"))?,
            wo: w.linear(&format!("{prefix}.attn_output"))?,
            qk_norms,
            rms_eps,
        })
    }

    /// Layer `index`'s attention of the normed input `h`, through the output projection
    /// (not yet added to the residual stream).
    pub fn forward(
        &self,
        index: usize,
        h: &Tensor,
        step: &Step<'_>,
        kind: AttentionKind,
    ) -> Result<Tensor> {
        let (c, rows) = (step.config, step.decode_rows);
        let qkv = Linear::forward_group(&[&self.wq, &self.wk, &self.wv], h, rows)?;
        let attn = match &self.qk_norms {
            Some((q_norm, k_norm)) => {
                let q = norm_heads(&qkv[0], q_norm, c.n_head, self.rms_eps)?;
                let k = norm_heads(&qkv[1], k_norm, c.n_kv_head, self.rms_eps)?;
                step.self_attention(index, &q, &k, &qkv[2], kind)?
            }
            None => step.self_attention(index, &qkv[0], &qkv[1], &qkv[2], kind)?,
        };
        self.wo.forward(&attn, rows)
    }
}

/// RMS norm of each head of `[rows, heads · head_dim]` by the head-sized `weight`.
fn norm_heads(x: &Tensor, weight: &Tensor, heads: usize, eps: f32) -> Result<Tensor> {
    let (rows, width) = x.dims2()?;
    let heads_of = x.contiguous()?.reshape((rows, heads, width / heads))?;
    rms_norm(&heads_of, weight, eps)
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
