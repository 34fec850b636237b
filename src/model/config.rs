//! Hyper-parameters of a llama-family model, read from GGUF metadata.

use super::{GgufFile, ModelError};

/// The shape of a llama-family transformer.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    pub architecture: String,
    pub name: String,
    pub n_layer: usize,
    pub n_embd: usize,
    pub n_head: usize,
    pub n_kv_head: usize,
    pub head_dim: usize,
    pub n_ff: usize,
    pub context_length: usize,
    pub rope_freq_base: f32,
    /// `rope.scaling.type` `linear`: positions are divided by this factor (1 without scaling).
    pub rope_linear_factor: f32,
    pub rms_eps: f32,
    pub vocab_size: usize,
    /// Rotary embedding over the two halves of a head (NeoX: qwen2, qwen3, gemma3, phi3)
    /// rather than over adjacent pairs (llama, mistral, whose q/k llama.cpp's converter permutes).
    pub rope_neox: bool,
    /// Multiplies the query·key scores (`1/√head_dim` for every architecture but Gemma 3 27B).
    pub attention_scale: f32,
    /// The span of keys a sliding-window layer sees, itself included (Gemma 3's local layers).
    pub sliding_window: Option<usize>,
}

/// Architectures this program runs, each by its file in `src/model/`.
pub const SUPPORTED_ARCHITECTURES: &[&str] =
    &["llama", "mistral", "qwen2", "qwen3", "gemma3", "phi3"];

impl ModelConfig {
    pub fn from_gguf(gguf: &GgufFile) -> Result<Self, ModelError> {
        let arch = gguf.string("general.architecture")?;
        if !SUPPORTED_ARCHITECTURES.contains(&arch.as_str()) {
            return Err(ModelError::UnsupportedArchitecture {
                arch,
                path: gguf.path.clone(),
            });
        }
        let key = |k: &str| format!("{arch}.{k}");
        let n_embd = gguf.usize(&key("embedding_length"))?;
        let n_head = gguf.usize(&key("attention.head_count"))?;
        let n_kv_head = if gguf.has(&key("attention.head_count_kv")) {
            gguf.usize(&key("attention.head_count_kv"))?
        } else {
            n_head
        };
        let head_dim = if gguf.has(&key("attention.key_length")) {
            gguf.usize(&key("attention.key_length"))?
        } else {
            n_embd / n_head.max(1)
        };
        let rope_freq_base = if gguf.has(&key("rope.freq_base")) {
            gguf.f32(&key("rope.freq_base"))?
        } else {
            10_000.0
        };
        let rope_linear_factor = rope_linear_factor(gguf, &arch)?;
        let vocab_size = if gguf.has(&key("vocab_size")) {
            gguf.usize(&key("vocab_size"))?
        } else {
            gguf.strings("tokenizer.ggml.tokens")?.len()
        };
        let name = gguf.string("general.name").unwrap_or_else(|_| arch.clone());
        let n_layer = gguf.usize(&key("block_count"))?;
        let sliding_window = match arch.as_str() {
            // Phi-3's window is switched off in llama.cpp (its converters set it wrong).
            "gemma3" if gguf.has(&key("attention.sliding_window")) => {
                Some(gguf.usize(&key("attention.sliding_window"))?).filter(|&w| w > 0)
            }
            _ => None,
        };
        // Gemma 3 27B scales queries by 1/√(n_embd / n_head), which is not its head size
        // (llama.cpp `gemma3.cpp`, after gemma_pytorch).
        let scale_dim = if arch == "gemma3" && n_layer == 62 {
            n_embd / n_head.max(1)
        } else {
            head_dim
        };
        let config = Self {
            n_layer,
            n_embd,
            n_head,
            n_kv_head,
            head_dim,
            n_ff: gguf.usize(&key("feed_forward_length"))?,
            context_length: gguf.usize(&key("context_length"))?,
            rope_freq_base,
            rope_linear_factor,
            rms_eps: gguf.f32(&key("attention.layer_norm_rms_epsilon"))?,
            vocab_size,
            rope_neox: arch != "llama" && arch != "mistral",
            attention_scale: 1.0 / (scale_dim.max(1) as f32).sqrt(),
            sliding_window,
            architecture: arch,
            name,
        };
        config.validate(gguf)?;
        Ok(config)
    }

    fn validate(&self, gguf: &GgufFile) -> Result<(), ModelError> {
        let bad = |key: &str, message: String| ModelError::BadValue {
            key: format!("{}.{key}", self.architecture),
            path: gguf.path.clone(),
            message,
        };
        if self.n_head == 0 || self.n_kv_head == 0 || !self.n_head.is_multiple_of(self.n_kv_head) {
            return Err(bad(
                "attention.head_count_kv",
                format!(
                    "{} query heads cannot be grouped over {} key/value heads",
                    self.n_head, self.n_kv_head
                ),
            ));
        }
        if self.head_dim == 0 || !self.head_dim.is_multiple_of(2) {
            return Err(bad(
                "attention.key_length",
                format!("head size {} must be even and non-zero", self.head_dim),
            ));
        }
        if self.n_layer == 0 || self.context_length == 0 || self.vocab_size == 0 {
            return Err(bad(
                "block_count",
                "layers, context length and vocabulary must be non-zero".into(),
            ));
        }
        Ok(())
    }

    /// Bytes of K and V cache one token occupies (f16 elements, see `kv_cache::KV_DTYPE`).
    pub fn kv_bytes_per_token(&self) -> usize {
        2 * self.n_layer
            * self.n_kv_head
            * self.head_dim
            * super::kv_cache::KV_DTYPE.size_in_bytes()
    }
}

/// The factor of `rope.scaling.type` `linear` (1 for none). Llama 3.1/3.2's own scaling comes
/// as the `rope_freqs.weight` tensor instead; a scaling this program does not implement (YaRN,
/// LongRoPE) is refused rather than run subtly wrong.
fn rope_linear_factor(gguf: &GgufFile, arch: &str) -> Result<f32, ModelError> {
    let kind_key = format!("{arch}.rope.scaling.type");
    let factor_key = format!("{arch}.rope.scaling.factor");
    let kind = if gguf.has(&kind_key) {
        gguf.string(&kind_key)?
    } else {
        "none".to_string()
    };
    let factor = if gguf.has(&factor_key) {
        gguf.f32(&factor_key)?
    } else {
        1.0
    };
    match kind.as_str() {
        "none" => Ok(1.0),
        "linear" if factor.is_finite() && factor > 0.0 => Ok(factor),
        "linear" => Err(ModelError::BadValue {
            key: factor_key,
            path: gguf.path.clone(),
            message: format!("the linear RoPE scaling factor {factor} must be positive"),
        }),
        other => Err(ModelError::BadValue {
            key: kind_key,
            path: gguf.path.clone(),
            message: format!("RoPE scaling `{other}` is not supported (none, linear, and Llama 3's rope_freqs are)"),
        }),
    }
}
