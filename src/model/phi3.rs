//! Phi-3 (and Phi-4): the llama computation with fused tensors — one `attn_qkv` projection
//! (queries, keys, values one after another), one `ffn_up` giving the SwiGLU gate and up
//! halves — and NeoX RoPE. Llama.cpp runs Phi-3's sliding window switched off (its converters
//! write it wrong), and so does this. LongRoPE files (`rope_factors_long`, the 128k models)
//! are refused rather than run wrong.

use candle_core::{Result, Tensor};
use candle_nn::ops::rms_norm;

use super::step::{AttentionKind, Step};
use super::swiglu::swiglu;
use super::transformer::{Architecture, Layer};
use super::weights::Weights;
use super::{Linear, ModelConfig, ModelError};

/// Queries, keys and values: one fused projection, or three.
enum Qkv {
    Fused(Linear),
    Split([Linear; 3]),
}

struct Phi3Layer {
    attn_norm: Tensor,
    qkv: Qkv,
    wo: Linear,
    ffn_norm: Tensor,
    /// `[2 · n_ff, n_embd]`: the gate rows, then the up rows.
    gate_up: Linear,
    down: Linear,
    rms_eps: f32,
}

pub fn load(
    w: &mut Weights<'_>,
    config: &ModelConfig,
) -> std::result::Result<Architecture, ModelError> {
    if w.has("blk.0.rope_factors_long.weight") || w.has("rope_factors_long.weight") {
        return Err(ModelError::BadValue {
            key: "rope_factors_long.weight".into(),
            path: w.gguf.path.clone(),
            message: "LongRoPE scaling (Phi-3 128k files) is not supported".into(),
        });
    }
    let mut layers: Vec<Box<dyn Layer>> = Vec::new();
    for i in 0..config.n_layer {
        let p = format!("blk.{i}");
        let qkv = if w.has(&format!("{p}.attn_qkv.weight")) {
            Qkv::Fused(w.linear(&format!("{p}.attn_qkv"))?)
        } else {
            Qkv::Split([
                w.linear(&format!("{p}.attn_q"))?,
                w.linear(&format!("{p}.attn_k"))?,
                w.linear(&format!("{p}.attn_v"))?,
            ])
        };
        layers.push(Box::new(Phi3Layer {
            attn_norm: w.vector(&format!("{p}.attn_norm.weight"))?,
            qkv,
            wo: w.linear(&format!("{p}.attn_output"))?,
            ffn_norm: w.vector(&format!("{p}.ffn_norm.weight"))?,
            gate_up: w.linear(&format!("{p}.ffn_up"))?,
            down: w.linear(&format!("{p}.ffn_down"))?,
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

impl Layer for Phi3Layer {
    fn forward(&self, index: usize, x: &Tensor, step: &Step<'_>) -> Result<Tensor> {
        let (c, rows) = (step.config, step.decode_rows);
        let h = rms_norm(x, &self.attn_norm, self.rms_eps)?;
        let (q, k, v) = match &self.qkv {
            Qkv::Fused(w) => {
                let qkv = w.forward(&h, rows)?;
                let (q_dim, kv_dim) = (c.n_head * c.head_dim, c.n_kv_head * c.head_dim);
                (
                    qkv.narrow(1, 0, q_dim)?,
                    qkv.narrow(1, q_dim, kv_dim)?,
                    qkv.narrow(1, q_dim + kv_dim, kv_dim)?,
                )
            }
            Qkv::Split([wq, wk, wv]) => {
                let mut qkv = Linear::forward_group(&[wq, wk, wv], &h, rows)?.into_iter();
                let mut next = || qkv.next().expect("three projections");
                (next(), next(), next())
            }
        };
        let attn = step.self_attention(index, &q, &k, &v, AttentionKind::default())?;
        let x = (x + self.wo.forward(&attn, rows)?)?;
        let h = rms_norm(&x, &self.ffn_norm, self.rms_eps)?;
        let gate_up = self.gate_up.forward(&h, rows)?;
        let n_ff = gate_up.dim(1)? / 2;
        let hidden = swiglu(
            &gate_up.narrow(1, 0, n_ff)?,
            &gate_up.narrow(1, n_ff, n_ff)?,
        )?;
        x + self.down.forward(&hidden, rows)?
    }
}
