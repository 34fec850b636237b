//! The llama-family transformer (llama, mistral, SmolLM2, qwen2) over batches of rows of many
//! sequences. Tensor names are llama.cpp's (`blk.{i}.attn_q.weight`).

use candle_core::quantized::QTensor;
use candle_core::{DType, Device, Tensor};
use candle_nn::ops::rms_norm;
use candle_nn::rotary_emb::{rope, rope_i};

use super::attention::AttentionPlan;
use super::swiglu::swiglu;
use super::{BatchStep, GgufFile, Linear, ModelConfig, ModelError, SlotKvCache};

struct Layer {
    attn_norm: Tensor,
    wq: Linear,
    wk: Linear,
    wv: Linear,
    wo: Linear,
    ffn_norm: Tensor,
    w_gate: Linear,
    w_up: Linear,
    w_down: Linear,
}

/// Weights of a llama-family model, loaded once and shared by every sequence. Holds no
/// per-sequence state: that lives in [`SlotKvCache`].
pub struct Llama {
    pub config: ModelConfig,
    token_embd: QTensor,
    layers: Vec<Layer>,
    output_norm: Tensor,
    lm_head: Linear,
    /// `[max_positions, head_dim / 2]` rotary tables.
    cos: Tensor,
    sin: Tensor,
    device: Device,
    /// Run the device-generic tensor attention even on the CPU.
    tensor_attention: bool,
}

impl Llama {
    pub fn load(gguf: &mut GgufFile, device: &Device) -> Result<Self, ModelError> {
        let config = ModelConfig::from_gguf(gguf)?;
        let norm = |gguf: &mut GgufFile, name: &str| -> Result<Tensor, ModelError> {
            Ok(gguf.tensor(name, device)?.dequantize(device)?)
        };
        let linear = |gguf: &mut GgufFile, name: &str| -> Result<Linear, ModelError> {
            let weight = gguf.tensor(&format!("{name}.weight"), device)?;
            let bias_name = format!("{name}.bias");
            let bias = if gguf.has_tensor(&bias_name) {
                Some(gguf.tensor(&bias_name, device)?.dequantize(device)?)
            } else {
                None
            };
            Ok(Linear::new(weight, bias)?)
        };
        let token_embd = gguf.tensor("token_embd.weight", device)?;
        // Not with_capacity: n_layer comes from the file and is only trusted once the
        // layers' tensors were found.
        let mut layers = Vec::new();
        for i in 0..config.n_layer {
            let p = format!("blk.{i}");
            layers.push(Layer {
                attn_norm: norm(gguf, &format!("{p}.attn_norm.weight"))?,
                wq: linear(gguf, &format!("{p}.attn_q"))?,
                wk: linear(gguf, &format!("{p}.attn_k"))?,
                wv: linear(gguf, &format!("{p}.attn_v"))?,
                wo: linear(gguf, &format!("{p}.attn_output"))?,
                ffn_norm: norm(gguf, &format!("{p}.ffn_norm.weight"))?,
                w_gate: linear(gguf, &format!("{p}.ffn_gate"))?,
                w_up: linear(gguf, &format!("{p}.ffn_up"))?,
                w_down: linear(gguf, &format!("{p}.ffn_down"))?,
            });
        }
        let output_norm = norm(gguf, "output_norm.weight")?;
        // Tied embeddings (SmolLM2): the output projection is the token embedding.
        let lm_head = if gguf.has_tensor("output.weight") {
            linear(gguf, "output")?
        } else {
            Linear::new(gguf.tensor("token_embd.weight", device)?, None)?
        };
        let rope_factors = rope_factors(gguf, &config)?;
        let (cos, sin) = rotary_tables(&config, rope_factors.as_deref(), device)?;
        Ok(Self {
            config,
            token_embd,
            layers,
            output_norm,
            lm_head,
            cos,
            sin,
            device: device.clone(),
            tensor_attention: tensor_attention_forced(),
        })
    }

    /// Uses the device-generic tensor attention (as on GPUs) on the CPU too; for comparisons.
    pub fn use_tensor_attention(&mut self, on: bool) {
        self.tensor_attention = on;
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Rotary position embedding of `[rows, heads, 1, head_dim]`. llama.cpp's converter
    /// permutes llama/mistral q/k weights for adjacent pairs; qwen2 keeps the NeoX halves.
    fn rotate(&self, x: &Tensor, cos: &Tensor, sin: &Tensor) -> candle_core::Result<Tensor> {
        let x = x.contiguous()?;
        if self.config.architecture == "qwen2" {
            rope(&x, cos, sin)
        } else {
            rope_i(&x, cos, sin)
        }
    }

    /// A KV cache with `slots` sequences of `ctx` positions each.
    pub fn new_cache(&self, slots: usize, ctx: usize) -> Result<SlotKvCache, ModelError> {
        let c = &self.config;
        if ctx > c.context_length || ctx == 0 || slots == 0 {
            return Err(ModelError::InvalidBatch(format!(
                "a cache of {slots} slots × {ctx} positions does not fit this model (context length {})",
                c.context_length
            )));
        }
        Ok(SlotKvCache::new(
            c.n_layer,
            slots,
            ctx,
            c.n_kv_head,
            c.head_dim,
            &self.device,
        )?)
    }

    /// Runs every row of `step` through the model in one pass, writing their K/V into `cache`.
    /// Returns the logits `[rows wanting logits, vocab]`, in row order.
    pub fn forward(&self, step: &BatchStep, cache: &SlotKvCache) -> Result<Tensor, ModelError> {
        // On the CPU the pass runs on a worker of the thread pool with the other workers
        // spinning as its team (`team.rs`): each parallel region (~150-200 per token) starts
        // on all threads at once, with no thread to wake.
        if self.device.is_cpu() {
            return super::team::with_team(|| self.forward_in_pool(step, cache));
        }
        self.forward_in_pool(step, cache)
    }

    fn forward_in_pool(&self, step: &BatchStep, cache: &SlotKvCache) -> Result<Tensor, ModelError> {
        let segments = step.segments().map_err(ModelError::InvalidBatch)?;
        for seg in &segments {
            if seg.slot.0 >= cache.slots() || seg.first_position + seg.len > cache.ctx() {
                return Err(ModelError::InvalidBatch(format!(
                    "slot {} positions {}..{} outside the cache ({} slots × {} positions)",
                    seg.slot.0,
                    seg.first_position,
                    seg.first_position + seg.len,
                    cache.slots(),
                    cache.ctx()
                )));
            }
        }
        let c = &self.config;
        let n = step.len();
        let decode_rows = step.decode_rows();
        let kv_dim = c.n_kv_head * c.head_dim;
        let dev = &self.device;

        let tokens: Vec<u32> = step.rows.iter().map(|r| r.token).collect();
        let positions: Vec<u32> = step.rows.iter().map(|r| r.position as u32).collect();
        let cache_rows: Vec<u32> = step
            .rows
            .iter()
            .map(|r| cache.row_index(r.slot, r.position))
            .collect();
        let tokens = Tensor::new(tokens, dev)?;
        let positions = Tensor::new(positions, dev)?;
        let cache_index = Tensor::new(cache_rows, dev)?
            .unsqueeze(1)?
            .broadcast_as((n, kv_dim))?
            .contiguous()?;
        // Per-row rotary tables, `[rows, 1, head_dim / 2]`: each row is its own "batch" of one
        // position, so rows of different sequences at different positions share one call.
        let cos = self.cos.index_select(&positions, 0)?.unsqueeze(1)?;
        let sin = self.sin.index_select(&positions, 0)?.unsqueeze(1)?;
        let attention = AttentionPlan::new(&segments, c, cache.ctx(), dev, self.tensor_attention)?;

        let mut x = self.token_embd.embedding(&tokens)?;
        for (li, layer) in self.layers.iter().enumerate() {
            let h = rms_norm(&x, &layer.attn_norm, c.rms_eps)?;
            let qkv = Linear::forward_group(&[&layer.wq, &layer.wk, &layer.wv], &h, decode_rows)?;
            let q = qkv[0].reshape((n, c.n_head, 1, c.head_dim))?;
            let k = qkv[1].reshape((n, c.n_kv_head, 1, c.head_dim))?;
            let v = qkv[2].reshape((n, kv_dim))?;
            let q = self
                .rotate(&q, &cos, &sin)?
                .reshape((n, c.n_head, c.head_dim))?;
            let k = self.rotate(&k, &cos, &sin)?.reshape((n, kv_dim))?;
            cache.write(li, &cache_index, &k, &v.contiguous()?)?;

            let attn = attention.forward(li, &q, cache)?;
            x = (x + layer.wo.forward(&attn, decode_rows)?)?;

            let h = rms_norm(&x, &layer.ffn_norm, c.rms_eps)?;
            let gate_up = Linear::forward_group(&[&layer.w_gate, &layer.w_up], &h, decode_rows)?;
            let hidden = swiglu(&gate_up[0], &gate_up[1])?;
            x = (x + layer.w_down.forward(&hidden, decode_rows)?)?;
        }

        let wanted: Vec<u32> = step
            .rows
            .iter()
            .enumerate()
            .filter(|(_, r)| r.wants_logits)
            .map(|(i, _)| i as u32)
            .collect();
        if wanted.is_empty() {
            return Ok(Tensor::zeros((0, c.vocab_size), DType::F32, dev)?);
        }
        // Rows keep their order, so the wanted decode rows still come first.
        let wanted_decode = wanted
            .iter()
            .take_while(|&&i| (i as usize) < decode_rows)
            .count();
        let x = if wanted.len() == n {
            x
        } else {
            x.index_select(&Tensor::new(wanted, dev)?, 0)?
        };
        let x = rms_norm(&x, &self.output_norm, c.rms_eps)?;
        Ok(self.lm_head.forward(&x, wanted_decode)?)
    }
}

/// `DOCANALYZE_ATTENTION=tensor` runs the device-generic attention on the CPU too (tests and
/// comparisons).
fn tensor_attention_forced() -> bool {
    std::env::var("DOCANALYZE_ATTENTION").is_ok_and(|v| v == "tensor")
}

/// Llama 3.1/3.2's RoPE scaling: `rope_freqs.weight`, one divisor per rotary frequency
/// (llama.cpp's `freq_factors`); `None` when the file has none.
fn rope_factors(gguf: &mut GgufFile, config: &ModelConfig) -> Result<Option<Vec<f32>>, ModelError> {
    const NAME: &str = "rope_freqs.weight";
    if !gguf.has_tensor(NAME) {
        return Ok(None);
    }
    let factors: Vec<f32> = gguf
        .tensor(NAME, &Device::Cpu)?
        .dequantize(&Device::Cpu)?
        .flatten_all()?
        .to_vec1()?;
    let half = config.head_dim / 2;
    if factors.len() != half || factors.iter().any(|f| !(f.is_finite() && *f > 0.0)) {
        return Err(ModelError::BadValue {
            key: NAME.into(),
            path: gguf.path.clone(),
            message: format!(
                "{} RoPE frequency factors, expected {half} positive ones (head size {})",
                factors.len(),
                config.head_dim
            ),
        });
    }
    Ok(Some(factors))
}

/// cos and sin of `position · θ_i` for every position and rotary frequency `i`, where
/// `θ_i = base^(−2i / head_dim) / factor_i / linear_factor` (llama.cpp's `rope` with
/// `freq_factors` and `freq_scale`).
fn rotary_tables(
    config: &ModelConfig,
    factors: Option<&[f32]>,
    dev: &Device,
) -> candle_core::Result<(Tensor, Tensor)> {
    let half = config.head_dim / 2;
    let inv_freq: Vec<f32> = (0..half)
        .map(|i| {
            let factor = factors.map_or(1.0, |f| f[i]) * config.rope_linear_factor;
            1.0 / config
                .rope_freq_base
                .powf(2.0 * i as f32 / config.head_dim as f32)
                / factor
        })
        .collect();
    let inv_freq = Tensor::from_vec(inv_freq, (1, half), dev)?;
    let positions = Tensor::arange(0u32, config.context_length as u32, dev)?
        .to_dtype(DType::F32)?
        .reshape((config.context_length, 1))?;
    let angles = positions.broadcast_mul(&inv_freq)?;
    Ok((angles.cos()?, angles.sin()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(head_dim: usize, linear: f32) -> ModelConfig {
        ModelConfig {
            architecture: "llama".into(),
            name: "t".into(),
            n_layer: 1,
            n_embd: head_dim,
            n_head: 1,
            n_kv_head: 1,
            head_dim,
            n_ff: 8,
            context_length: 64,
            rope_freq_base: 500_000.0,
            rope_linear_factor: linear,
            rms_eps: 1e-5,
            vocab_size: 8,
        }
    }

    #[test]
    fn rotary_angles_divide_by_the_frequency_factors() {
        let c = config(8, 1.0);
        let factors = [1.0, 2.0, 8.0, 32.0];
        let table = |t: Tensor| -> Vec<Vec<f32>> { t.to_vec2().unwrap() };
        let (cos, sin) = rotary_tables(&c, Some(&factors), &Device::Cpu).unwrap();
        let (plain_cos, _) = rotary_tables(&c, None, &Device::Cpu).unwrap();
        let (cos, sin, plain_cos) = (table(cos), table(sin), table(plain_cos));
        for p in [0usize, 1, 17, 63] {
            for (i, factor) in factors.iter().enumerate() {
                let theta = p as f64 * 500_000f64.powf(-2.0 * i as f64 / 8.0) / *factor as f64;
                assert!((cos[p][i] as f64 - theta.cos()).abs() < 1e-5, "p {p} i {i}");
                assert!((sin[p][i] as f64 - theta.sin()).abs() < 1e-5, "p {p} i {i}");
            }
            // Factor 1 leaves the first frequency as it was.
            assert_eq!(cos[p][0], plain_cos[p][0]);
        }
        // Linear scaling divides every angle: position 2p at factor 2 is position p.
        let (scaled, _) = rotary_tables(&config(8, 2.0), None, &Device::Cpu).unwrap();
        let scaled = table(scaled);
        for i in 0..4 {
            assert!((scaled[20][i] - plain_cos[10][i]).abs() < 1e-6);
        }
    }
}
