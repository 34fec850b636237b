//! Gemma 3: embeddings scaled by √n_embd, RMS-normed query and key heads, a norm before and
//! after both attention and the GeGLU (GELU, tanh form) feed-forward, and sliding-window
//! (local) layers between global ones — five of every six by default — each kind with its own
//! RoPE base. As llama.cpp's `src/models/gemma3.cpp`; the GGUF's norm weights already hold
//! Gemma's `1 + w`.

use candle_core::{Result, Tensor};
use candle_nn::ops::rms_norm;

use super::blocks::SelfAttention;
use super::step::{AttentionKind, Step};
use super::swiglu::geglu;
use super::transformer::{Architecture, Layer};
use super::weights::Weights;
use super::{GgufFile, Linear, ModelConfig, ModelError};

/// Local layers' RoPE base when the file does not say (llama.cpp's default).
const LOCAL_ROPE_BASE: f32 = 10_000.0;
/// One global layer after every five local ones, when the file does not say.
const DEFAULT_PATTERN: usize = 6;

struct Gemma3Layer {
    attn_norm: Tensor,
    attention: SelfAttention,
    post_attention_norm: Tensor,
    ffn_norm: Tensor,
    gate: Linear,
    up: Linear,
    down: Linear,
    post_ffw_norm: Tensor,
    kind: AttentionKind,
    rms_eps: f32,
}

pub fn load(
    w: &mut Weights<'_>,
    config: &ModelConfig,
) -> std::result::Result<Architecture, ModelError> {
    let local = local_layers(w.gguf, config)?;
    let mut rope_bases = vec![config.rope_freq_base];
    if local.iter().any(|&l| l) {
        let key = "gemma3.rope.freq_base_swa";
        rope_bases.push(if w.gguf.has(key) {
            w.gguf.f32(key)?
        } else {
            LOCAL_ROPE_BASE
        });
    }
    let mut layers: Vec<Box<dyn Layer>> = Vec::new();
    for (i, &is_local) in local.iter().enumerate() {
        let p = format!("blk.{i}");
        let mut t = |name: &str| w.vector(&format!("{p}.{name}.weight"));
        let (attn_norm, post_attention_norm, ffn_norm, post_ffw_norm) = (
            t("attn_norm")?,
            t("post_attention_norm")?,
            t("ffn_norm")?,
            t("post_ffw_norm")?,
        );
        layers.push(Box::new(Gemma3Layer {
            attn_norm,
            attention: SelfAttention::load(w, &p, true, config.rms_eps)?,
            post_attention_norm,
            ffn_norm,
            gate: w.linear(&format!("{p}.ffn_gate"))?,
            up: w.linear(&format!("{p}.ffn_up"))?,
            down: w.linear(&format!("{p}.ffn_down"))?,
            post_ffw_norm,
            kind: AttentionKind {
                rotary: usize::from(is_local),
                local: is_local,
            },
            rms_eps: config.rms_eps,
        }));
    }
    let cap_key = "gemma3.final_logit_softcapping";
    let logit_softcap = if w.gguf.has(cap_key) {
        Some(w.gguf.f32(cap_key)? as f64).filter(|&c| c > 0.0)
    } else {
        None
    };
    Ok(Architecture {
        layers,
        rope_bases,
        embedding_scale: Some((config.n_embd as f32).sqrt() as f64),
        logit_softcap,
    })
}

/// Which layers are local: none without a window; else `attention.sliding_window_pattern`,
/// per layer (an array of bools) or as n (every n-th layer global), 6 when absent.
fn local_layers(
    gguf: &GgufFile,
    config: &ModelConfig,
) -> std::result::Result<Vec<bool>, ModelError> {
    let n = config.n_layer;
    if config.sliding_window.is_none() {
        return Ok(vec![false; n]);
    }
    let key = "gemma3.attention.sliding_window_pattern";
    if !gguf.has(key) {
        return Ok((0..n)
            .map(|i| i % DEFAULT_PATTERN < DEFAULT_PATTERN - 1)
            .collect());
    }
    if let Ok(pattern) = gguf.usize(key) {
        return Ok((0..n)
            .map(|i| pattern == 0 || i % pattern < pattern - 1)
            .collect());
    }
    let flags: Option<Vec<bool>> =
        (gguf.value(key)?.to_vec().ok()).and_then(|a| a.iter().map(|v| v.to_bool().ok()).collect());
    match flags {
        Some(flags) if flags.len() == n => Ok(flags),
        _ => Err(ModelError::BadValue {
            key: key.into(),
            path: gguf.path.clone(),
            message: format!("expected an integer or {n} booleans"),
        }),
    }
}

impl Layer for Gemma3Layer {
    fn forward(&self, index: usize, x: &Tensor, step: &Step<'_>) -> Result<Tensor> {
        let (eps, rows) = (self.rms_eps, step.decode_rows);
        let h = rms_norm(x, &self.attn_norm, eps)?;
        let attn = self.attention.forward(index, &h, step, self.kind)?;
        let attn = rms_norm(&attn, &self.post_attention_norm, eps)?;
        let x = (x + attn)?;
        let h = rms_norm(&x, &self.ffn_norm, eps)?;
        let gate_up = Linear::forward_group(&[&self.gate, &self.up], &h, rows)?;
        let hidden = geglu(&gate_up[0], &gate_up[1])?;
        let out = rms_norm(&self.down.forward(&hidden, rows)?, &self.post_ffw_norm, eps)?;
        x + out
    }
}
