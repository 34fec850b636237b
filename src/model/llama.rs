//! The llama-family transformer (llama, mistral, SmolLM2, qwen2) over batches of rows of many
//! sequences. Tensor names are llama.cpp's (`blk.{i}.attn_q.weight`).

use candle_core::quantized::QTensor;
use candle_core::{DType, Device, Tensor};
use candle_nn::ops::{rms_norm, silu, softmax_last_dim};
use candle_nn::rotary_emb::{rope, rope_i};

use super::batch::Segment;
use super::cpu_attention::CpuAttention;
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
        let mut layers = Vec::with_capacity(config.n_layer);
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
        let (cos, sin) = rotary_tables(&config, device)?;
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
        let cpu_attention = match dev {
            Device::Cpu if self.tensor_attention => None,
            Device::Cpu => Some(CpuAttention {
                segments: segments.clone(),
                n_head: c.n_head,
                n_kv_head: c.n_kv_head,
                head_dim: c.head_dim,
                ctx: cache.ctx(),
            }),
            _ => None,
        };
        let masks = match cpu_attention {
            Some(_) => Vec::new(),
            None => causal_masks(&segments, c.n_head / c.n_kv_head, dev)?,
        };

        let mut x = self.token_embd.embedding(&tokens)?;
        for (li, layer) in self.layers.iter().enumerate() {
            let h = rms_norm(&x, &layer.attn_norm, c.rms_eps)?;
            let q = layer
                .wq
                .forward(&h)?
                .reshape((n, c.n_head, 1, c.head_dim))?;
            let k = layer
                .wk
                .forward(&h)?
                .reshape((n, c.n_kv_head, 1, c.head_dim))?;
            let v = layer.wv.forward(&h)?.reshape((n, kv_dim))?;
            let q = self
                .rotate(&q, &cos, &sin)?
                .reshape((n, c.n_head, c.head_dim))?;
            let k = self.rotate(&k, &cos, &sin)?.reshape((n, kv_dim))?;
            cache.write(li, &cache_index, &k, &v.contiguous()?)?;

            let attn = match &cpu_attention {
                Some(op) => {
                    let (keys, values) = cache.layer(li);
                    q.reshape((n, c.n_head * c.head_dim))?
                        .apply_op3_no_bwd(keys, values, op)?
                }
                None => {
                    let mut outs = Vec::with_capacity(segments.len());
                    for (seg, mask) in segments.iter().zip(&masks) {
                        outs.push(self.attention(li, seg, mask.as_ref(), &q, cache)?);
                    }
                    Tensor::cat(&outs, 0)?
                }
            };
            x = (x + layer.wo.forward(&attn)?)?;

            let h = rms_norm(&x, &layer.ffn_norm, c.rms_eps)?;
            let gate = silu(&layer.w_gate.forward(&h)?)?;
            let up = layer.w_up.forward(&h)?;
            x = (x + layer.w_down.forward(&(gate * up)?)?)?;
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
        let x = if wanted.len() == n {
            x
        } else {
            x.index_select(&Tensor::new(wanted, dev)?, 0)?
        };
        let x = rms_norm(&x, &self.output_norm, c.rms_eps)?;
        Ok(self.lm_head.forward(&x)?)
    }

    /// Attention of one segment's queries over its slot with tensor ops (GPUs), grouped-query style: the query heads
    /// sharing a K/V head are stacked as rows, so K/V are never repeated.
    fn attention(
        &self,
        layer: usize,
        seg: &Segment,
        mask: Option<&Tensor>,
        q: &Tensor,
        cache: &SlotKvCache,
    ) -> candle_core::Result<Tensor> {
        let c = &self.config;
        let (n, kvh, hd) = (seg.len, c.n_kv_head, c.head_dim);
        let group = c.n_head / kvh;
        let total = seg.first_position + n;
        let (k, v) = cache
            .slot_prefix(layer, seg.slot, total)
            .map_err(|e| e.context("reading the KV cache"))?;
        // [n, H, hd] -> [kvh, n * group, hd]
        let q = q
            .narrow(0, seg.start, n)?
            .reshape((n, kvh, group, hd))?
            .permute((1, 0, 2, 3))?
            .contiguous()?
            .reshape((kvh, n * group, hd))?;
        let k = k.permute((1, 2, 0))?; // [kvh, hd, total]
        let v = v.permute((1, 0, 2))?; // [kvh, total, hd]
        let scale = 1.0 / (hd as f64).sqrt();
        let scores = (q.matmul(&k)? * scale)?;
        let scores = match mask {
            Some(m) => scores.broadcast_add(m)?,
            None => scores,
        };
        let probs = softmax_last_dim(&scores)?;
        probs
            .matmul(&v.contiguous()?)?
            .reshape((kvh, n, group, hd))?
            .permute((1, 0, 2, 3))?
            .contiguous()?
            .reshape((n, kvh * group * hd))
    }
}

/// `[n * group, total]` additive masks for segments of more than one row: query row `i` (at
/// position `first + i`) may see keys `0..=first + i`. Single decode rows see everything.
///
/// ```text
///            keys: 0 .. first-1 | first .. first+n-1
/// row 0:           0 ...      0 | 0  -inf -inf
/// row 1:           0 ...      0 | 0  0    -inf
/// row n-1:         0 ...      0 | 0  0    0
/// ```
fn causal_masks(
    segments: &[Segment],
    group: usize,
    dev: &Device,
) -> candle_core::Result<Vec<Option<Tensor>>> {
    segments
        .iter()
        .map(|seg| {
            if seg.len == 1 {
                return Ok(None);
            }
            let total = seg.first_position + seg.len;
            let mut mask = Vec::with_capacity(seg.len * group * total);
            for i in 0..seg.len {
                let visible = seg.first_position + i + 1;
                for _ in 0..group {
                    mask.extend(
                        (0..total).map(|j| if j < visible { 0f32 } else { f32::NEG_INFINITY }),
                    );
                }
            }
            Tensor::from_vec(mask, (seg.len * group, total), dev).map(Some)
        })
        .collect()
}

/// `DOCANALYZE_ATTENTION=tensor` runs the device-generic attention on the CPU too (tests and
/// comparisons).
fn tensor_attention_forced() -> bool {
    std::env::var("DOCANALYZE_ATTENTION").is_ok_and(|v| v == "tensor")
}

fn rotary_tables(config: &ModelConfig, dev: &Device) -> candle_core::Result<(Tensor, Tensor)> {
    let half = config.head_dim / 2;
    let inv_freq: Vec<f32> = (0..half)
        .map(|i| {
            1.0 / config
                .rope_freq_base
                .powf(2.0 * i as f32 / config.head_dim as f32)
        })
        .collect();
    let inv_freq = Tensor::from_vec(inv_freq, (1, half), dev)?;
    let positions = Tensor::arange(0u32, config.context_length as u32, dev)?
        .to_dtype(DType::F32)?
        .reshape((config.context_length, 1))?;
    let angles = positions.broadcast_mul(&inv_freq)?;
    Ok((angles.cos()?, angles.sin()?))
}
