//! The model: token embedding, an architecture's layers, the output norm and projection, run
//! over batches of rows of many sequences. What differs between architectures lives in their
//! own files (`llama.rs`, `qwen3.rs`, `gemma3.rs`, `phi3.rs`), as a stack of [`Layer`]s built
//! from the sublayers of `blocks.rs`.

use candle_core::quantized::QTensor;
use candle_core::{DType, Device, Tensor};
use candle_nn::ops::rms_norm;

use super::attention::AttentionPlan;
use super::rotary::{rope_factors, RotaryTable};
use super::step::Step;
use super::weights::Weights;
use super::{BatchStep, GgufFile, Linear, ModelConfig, ModelError, SlotKvCache};

/// One transformer block of an architecture: `[rows, n_embd]` in, the residual stream out.
pub trait Layer: Send + Sync {
    fn forward(&self, index: usize, x: &Tensor, step: &Step<'_>) -> candle_core::Result<Tensor>;
}

/// What an architecture's file builds from the GGUF.
pub struct Architecture {
    pub layers: Vec<Box<dyn Layer>>,
    /// Frequency bases of the rotary tables that the layers' `AttentionKind::rotary` index.
    pub rope_bases: Vec<f32>,
    /// Multiplies the token embeddings (Gemma: √n_embd).
    pub embedding_scale: Option<f64>,
    /// Final logits become `cap · tanh(logits / cap)` (Gemma 2/3 files that set it).
    pub logit_softcap: Option<f64>,
}

/// Weights of a model, loaded once and shared by every sequence. Holds no per-sequence
/// state: that lives in [`SlotKvCache`].
pub struct Model {
    pub config: ModelConfig,
    token_embd: QTensor,
    embedding_scale: Option<f64>,
    layers: Vec<Box<dyn Layer>>,
    output_norm: Tensor,
    lm_head: Linear,
    logit_softcap: Option<f64>,
    rotary: Vec<RotaryTable>,
    device: Device,
    /// Run the device-generic tensor attention even on the CPU.
    tensor_attention: bool,
}

impl Model {
    pub fn load(gguf: &mut GgufFile, device: &Device) -> Result<Self, ModelError> {
        let config = ModelConfig::from_gguf(gguf)?;
        let factors = rope_factors(gguf, &config)?;
        let mut w = Weights { gguf, device };
        let arch = match config.architecture.as_str() {
            "qwen3" => super::qwen3::load(&mut w, &config)?,
            "gemma3" => super::gemma3::load(&mut w, &config)?,
            "phi3" => super::phi3::load(&mut w, &config)?,
            _ => super::llama::load(&mut w, &config)?,
        };
        let token_embd = w.gguf.tensor("token_embd.weight", device)?;
        let output_norm = w.vector("output_norm.weight")?;
        // Tied embeddings (SmolLM2, Gemma): the output projection is the token embedding.
        let lm_head = if w.has("output.weight") {
            w.linear("output")?
        } else {
            Linear::new(w.gguf.tensor("token_embd.weight", device)?, None)?
        };
        let rotary = (arch.rope_bases.iter())
            .map(|&base| RotaryTable::new(&config, base, factors.as_deref(), device))
            .collect::<candle_core::Result<_>>()?;
        Ok(Self {
            config,
            token_embd,
            embedding_scale: arch.embedding_scale,
            layers: arch.layers,
            output_norm,
            lm_head,
            logit_softcap: arch.logit_softcap,
            rotary,
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
        let rotations = (self.rotary.iter())
            .map(|t| t.at(&positions))
            .collect::<candle_core::Result<_>>()?;
        let decode_rows = step.decode_rows();
        let attention = AttentionPlan::new(
            &segments,
            decode_rows,
            c,
            cache.ctx(),
            dev,
            self.tensor_attention,
        )?;
        let pass = Step {
            config: c,
            rows: n,
            decode_rows,
            cache,
            cache_index,
            rotations,
            attention,
        };

        let mut x = self.token_embd.embedding(&tokens)?;
        if let Some(scale) = self.embedding_scale {
            x = (x * scale)?;
        }
        for (i, layer) in self.layers.iter().enumerate() {
            x = layer.forward(i, &x, &pass)?;
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
            .take_while(|&&i| (i as usize) < pass.decode_rows)
            .count();
        let x = if wanted.len() == n {
            x
        } else {
            x.index_select(&Tensor::new(wanted, dev)?, 0)?
        };
        let x = rms_norm(&x, &self.output_norm, c.rms_eps)?;
        let logits = self.lm_head.forward(&x, wanted_decode)?;
        Ok(match self.logit_softcap {
            Some(cap) => ((logits / cap)?.tanh()? * cap)?,
            None => logits,
        })
    }
}

/// `DOCANALYZE_ATTENTION=tensor` runs the device-generic attention on the CPU too (tests and
/// comparisons).
fn tensor_attention_forced() -> bool {
    std::env::var("DOCANALYZE_ATTENTION").is_ok_and(|v| v == "tensor")
}
