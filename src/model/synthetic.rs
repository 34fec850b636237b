//! Writes a random-weight GGUF of any supported architecture (llama.cpp tensor names, metadata
//! and a byte-level BPE tokenizer) so the model, tokenizer and engine can be exercised without
//! downloading a model — and compared with llama.cpp on the same file.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::ModelError;

/// Id of `<|endoftext|>` (the BOS token) in a synthetic vocabulary.
pub const ENDOFTEXT_ID: u32 = 256;
/// Id of `<|im_start|>` in a synthetic vocabulary.
pub const IM_START_ID: u32 = 257;
/// Id of `<|im_end|>` (the EOS token) in a synthetic vocabulary.
pub const IM_END_ID: u32 = 258;

const SPECIAL_TOKENS: [&str; 3] = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"];

/// A few GPT-2 style merges, so encoding exercises BPE and not only the byte fallback. Each
/// merge's result is a vocabulary entry, right after the special tokens.
const MERGES: [(&str, &str); 8] = [
    ("Ġ", "t"),
    ("h", "e"),
    ("i", "n"),
    ("e", "r"),
    ("o", "r"),
    ("l", "l"),
    ("Ġ", "w"),
    ("Ġt", "he"),
];

/// Smallest vocabulary a synthetic model can have: 256 bytes, the special tokens, the merges.
pub const BASE_VOCAB: usize = 256 + SPECIAL_TOKENS.len() + MERGES.len();

/// The ChatML template of the synthetic tokenizer.
pub const CHATML_TEMPLATE: &str = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

/// llama.cpp token types.
const TOKEN_TYPE_NORMAL: i32 = 1;
const TOKEN_TYPE_CONTROL: i32 = 3;
const TOKEN_TYPE_UNUSED: i32 = 5;

/// Shape, quantization and seed of a synthetic llama model.
#[derive(Debug, Clone, PartialEq)]
pub struct SyntheticSpec {
    pub n_layer: usize,
    pub n_embd: usize,
    pub n_head: usize,
    pub n_kv_head: usize,
    pub n_ff: usize,
    pub context_length: usize,
    /// At least [`BASE_VOCAB`]; the extra ids are unused padding tokens.
    pub vocab_size: usize,
    /// Type of the matrices (norms are always f32). The row length of every matrix (`n_embd`,
    /// `n_ff`) must be a multiple of its block size: 32 for `Q4_0`..`Q8_1`, 256 for K-quants.
    pub dtype: GgmlDType,
    pub seed: u64,
    /// No `output.weight`: the output projection is the token embedding (SmolLM2).
    pub tied_embeddings: bool,
    /// Matrix entries have standard deviation `weight_scale / sqrt(row length)`, so every
    /// projection keeps activations of order one and the logits are well spread.
    pub weight_scale: f32,
    pub rope_freq_base: f32,
    pub rms_eps: f32,
    /// `tokenizer.chat_template` ([`CHATML_TEMPLATE`] by default).
    pub chat_template: String,
    /// More control tokens (other chat templates' markup), given the ids right after
    /// [`BASE_VOCAB`]; `vocab_size` must leave room for them.
    pub extra_control_tokens: Vec<String>,
    /// Llama 3's RoPE frequency divisors (`rope_freqs.weight`, `head_dim / 2` of them).
    pub rope_freqs: Option<Vec<f32>>,
    /// `general.architecture`, and the prefix of the model's keys: `llama`, `mistral`,
    /// `qwen2`, `qwen3` (adds q/k norms), `gemma3` (q/k norms, post norms) or `phi3` (fused
    /// `attn_qkv` and gate/up `ffn_up`).
    pub architecture: String,
    /// Biases on the q, k and v projections (`attn_q.bias`, …), as Qwen2 has.
    pub qkv_bias: bool,
    /// `gemma3`: the local layers' window and the global-layer period
    /// (`attention.sliding_window`, `attention.sliding_window_pattern`).
    pub sliding_window: Option<(usize, usize)>,
}

impl SyntheticSpec {
    /// A model small enough for unit tests: 2 layers, 64 wide, grouped-query attention,
    /// `Q8_0` matrices, about 150 KB.
    pub fn tiny() -> Self {
        Self {
            n_layer: 2,
            n_embd: 64,
            n_head: 4,
            n_kv_head: 2,
            n_ff: 128,
            context_length: 256,
            vocab_size: BASE_VOCAB + 5,
            dtype: GgmlDType::Q8_0,
            seed: 0,
            tied_embeddings: false,
            weight_scale: 1.0,
            rope_freq_base: 10_000.0,
            rms_eps: 1e-5,
            chat_template: CHATML_TEMPLATE.to_string(),
            extra_control_tokens: Vec::new(),
            rope_freqs: None,
            architecture: "llama".into(),
            qkv_bias: false,
            sliding_window: None,
        }
    }

    /// The files compared with llama.cpp's logits (`tests/architectures_vs_references.rs`,
    /// `scripts/llama-cpp-logits.sh`): `architecture` at 4 layers, 256 wide, head size 64,
    /// Q8_0; Gemma 3's with a 32-token window and every second layer global. (Wider weights
    /// would sharpen the next-token choices, but random layers then amplify the 8-bit
    /// rounding of llama.cpp's activations chaotically: at thrice the spread its
    /// log-probabilities move by up to 1.9 against f32 activations.)
    pub fn reference(architecture: &str) -> Self {
        Self {
            n_layer: 4,
            n_embd: 256,
            n_head: 4,
            n_kv_head: 2,
            n_ff: 512,
            context_length: 512,
            vocab_size: 320,
            seed: 7,
            architecture: architecture.into(),
            qkv_bias: architecture == "qwen2",
            sliding_window: (architecture == "gemma3").then_some((32, 2)),
            ..Self::tiny()
        }
    }

    pub fn head_dim(&self) -> usize {
        self.n_embd / self.n_head.max(1)
    }

    fn validate(&self, path: &Path) -> Result<(), ModelError> {
        let bad = |key: &str, message: String| ModelError::BadValue {
            key: format!("llama.{key}"),
            path: path.to_path_buf(),
            message,
        };
        if self.n_layer == 0 || self.context_length == 0 {
            return Err(bad(
                "block_count",
                "layers and context length must be non-zero".into(),
            ));
        }
        if self.n_head == 0
            || self.n_kv_head == 0
            || !self.n_head.is_multiple_of(self.n_kv_head)
            || !self.n_embd.is_multiple_of(self.n_head)
            || !self.head_dim().is_multiple_of(2)
            || self.head_dim() == 0
        {
            return Err(bad(
                "attention.head_count",
                format!(
                    "{} heads over {} key/value heads do not split {} into even head sizes",
                    self.n_head, self.n_kv_head, self.n_embd
                ),
            ));
        }
        let block = self.dtype.block_size();
        for (key, len) in [
            ("embedding_length", self.n_embd),
            ("feed_forward_length", self.n_ff),
        ] {
            if len == 0 || !len.is_multiple_of(block) {
                return Err(bad(
                    key,
                    format!(
                        "{len} is not a non-zero multiple of the {:?} block size {block}",
                        self.dtype
                    ),
                ));
            }
        }
        let needed = BASE_VOCAB + self.extra_control_tokens.len();
        if self.vocab_size < needed {
            return Err(bad(
                "vocab_size",
                format!("this synthetic vocabulary needs at least {needed} tokens"),
            ));
        }
        Ok(())
    }
}

/// GPT-2's `bytes_to_unicode`: the printable character that stands for each byte in a
/// byte-level BPE vocabulary, in byte order.
pub fn byte_level_chars() -> [char; 256] {
    let mut chars = ['\0'; 256];
    let mut shifted = 0u32;
    for (b, slot) in chars.iter_mut().enumerate() {
        let printable = matches!(b, 0x21..=0x7E | 0xA1..=0xAC | 0xAE..=0xFF);
        *slot = if printable {
            char::from(b as u8)
        } else {
            shifted += 1;
            char::from_u32(255 + shifted).unwrap_or(char::REPLACEMENT_CHARACTER)
        };
    }
    chars
}

/// The vocabulary of a synthetic model of `vocab_size` tokens, with each token's type.
fn vocabulary(vocab_size: usize, extra_controls: &[String]) -> Vec<(String, i32)> {
    let mut tokens: Vec<(String, i32)> = byte_level_chars()
        .iter()
        .map(|c| (c.to_string(), TOKEN_TYPE_NORMAL))
        .collect();
    tokens.extend(
        SPECIAL_TOKENS
            .iter()
            .map(|t| (t.to_string(), TOKEN_TYPE_CONTROL)),
    );
    tokens.extend(
        MERGES
            .iter()
            .map(|(a, b)| (format!("{a}{b}"), TOKEN_TYPE_NORMAL)),
    );
    tokens.extend(
        extra_controls
            .iter()
            .map(|t| (t.clone(), TOKEN_TYPE_CONTROL)),
    );
    let pad = vocab_size.saturating_sub(tokens.len());
    tokens.extend((0..pad).map(|i| (format!("<|unused_{i}|>"), TOKEN_TYPE_UNUSED)));
    tokens
}

/// Deterministic random tensors.
struct Weights {
    rng: ChaCha8Rng,
    /// Biases draw from their own stream: a model with biases has the same matrices as the
    /// one without.
    bias_rng: ChaCha8Rng,
    dtype: GgmlDType,
    scale: f32,
}

impl Weights {
    /// Uniform values of standard deviation `std` (half-width `std * sqrt(3)`).
    fn values(&mut self, n: usize, center: f32, std: f32) -> Vec<f32> {
        uniform(&mut self.rng, n, center, std)
    }

    /// A `[rows, cols]` matrix (`rows` = out features, `cols` = in features), quantized.
    fn matrix(&mut self, rows: usize, cols: usize) -> Result<QTensor, ModelError> {
        let std = self.scale / (cols as f32).sqrt();
        let data = self.values(rows * cols, 0.0, std);
        let t = Tensor::from_vec(data, (rows, cols), &Device::Cpu)?;
        Ok(QTensor::quantize(&t, self.dtype)?)
    }

    /// A bias: values of order one, kept in f32.
    fn bias(&mut self, len: usize) -> Result<QTensor, ModelError> {
        let data = uniform(&mut self.bias_rng, len, 0.0, 0.5);
        let t = Tensor::from_vec(data, len, &Device::Cpu)?;
        Ok(QTensor::quantize(&t, GgmlDType::F32)?)
    }

    /// A norm weight: one plus a little noise, kept in f32.
    fn norm(&mut self, len: usize) -> Result<QTensor, ModelError> {
        let data = self.values(len, 1.0, 0.05);
        let t = Tensor::from_vec(data, len, &Device::Cpu)?;
        Ok(QTensor::quantize(&t, GgmlDType::F32)?)
    }
}

/// `n` uniform values of standard deviation `std` around `center`.
fn uniform(rng: &mut ChaCha8Rng, n: usize, center: f32, std: f32) -> Vec<f32> {
    let half = std * 3f32.sqrt();
    (0..n)
        .map(|_| center + rng.random_range(-half..=half))
        .collect()
}

fn u32_value(n: usize) -> Value {
    Value::U32(u32::try_from(n).unwrap_or(u32::MAX))
}

fn metadata(spec: &SyntheticSpec) -> Vec<(String, Value)> {
    let vocab = vocabulary(spec.vocab_size, &spec.extra_control_tokens);
    let merges = MERGES
        .iter()
        .map(|(a, b)| Value::String(format!("{a} {b}")))
        .collect();
    let arch = spec.architecture.as_str();
    let keys = vec![
        ("general.architecture", Value::String(arch.into())),
        // Not `synthetic-phi3`: llama.cpp gives models named like Phi-3 its token attributes,
        // looking up `</s>`, which this vocabulary lacks.
        (
            "general.name",
            Value::String(format!("synthetic {arch} model").replace("phi3", "phi")),
        ),
        ("ARCH.block_count", u32_value(spec.n_layer)),
        ("ARCH.context_length", u32_value(spec.context_length)),
        ("ARCH.embedding_length", u32_value(spec.n_embd)),
        ("ARCH.feed_forward_length", u32_value(spec.n_ff)),
        ("ARCH.attention.head_count", u32_value(spec.n_head)),
        ("ARCH.attention.head_count_kv", u32_value(spec.n_kv_head)),
        ("ARCH.rope.dimension_count", u32_value(spec.head_dim())),
        ("ARCH.rope.freq_base", Value::F32(spec.rope_freq_base)),
        (
            "ARCH.attention.layer_norm_rms_epsilon",
            Value::F32(spec.rms_eps),
        ),
        ("ARCH.vocab_size", u32_value(spec.vocab_size)),
        ("tokenizer.ggml.model", Value::String("gpt2".into())),
        // GPT-2's byte-level splitting; llama.cpp of October 2026 refuses the name `gpt2`.
        ("tokenizer.ggml.pre", Value::String("default".into())),
        (
            "tokenizer.ggml.tokens",
            Value::Array(
                vocab
                    .iter()
                    .map(|(t, _)| Value::String(t.clone()))
                    .collect(),
            ),
        ),
        (
            "tokenizer.ggml.token_type",
            Value::Array(vocab.iter().map(|&(_, ty)| Value::I32(ty)).collect()),
        ),
        ("tokenizer.ggml.merges", Value::Array(merges)),
        ("tokenizer.ggml.bos_token_id", Value::U32(ENDOFTEXT_ID)),
        ("tokenizer.ggml.eos_token_id", Value::U32(IM_END_ID)),
        ("tokenizer.ggml.padding_token_id", Value::U32(ENDOFTEXT_ID)),
        ("tokenizer.ggml.add_bos_token", Value::Bool(false)),
        (
            "tokenizer.chat_template",
            Value::String(spec.chat_template.clone()),
        ),
    ];
    let mut keys = keys;
    if let Some((window, pattern)) = spec.sliding_window {
        keys.push(("ARCH.attention.sliding_window", u32_value(window)));
        keys.push(("ARCH.attention.sliding_window_pattern", u32_value(pattern)));
    }
    // The model's own keys are written `ARCH.…` above and take its architecture's prefix.
    keys.into_iter()
        .map(|(k, v)| match k.strip_prefix("ARCH.") {
            Some(rest) => (format!("{arch}.{rest}"), v),
            None => (k.to_string(), v),
        })
        .collect()
}

/// The tensors of a synthetic model, in llama.cpp's order and with its names.
fn tensors(spec: &SyntheticSpec) -> Result<Vec<(String, QTensor)>, ModelError> {
    let mut w = Weights {
        rng: ChaCha8Rng::seed_from_u64(spec.seed),
        bias_rng: ChaCha8Rng::seed_from_u64(spec.seed ^ 0xB1A5),
        dtype: spec.dtype,
        scale: spec.weight_scale,
    };
    let (d, ff) = (spec.n_embd, spec.n_ff);
    let kv_dim = spec.n_kv_head * spec.head_dim();
    let mut out = vec![(
        "token_embd.weight".to_string(),
        w.matrix(spec.vocab_size, d)?,
    )];
    let arch = spec.architecture.as_str();
    let (fused, qk_norm, post_norms) = (
        arch == "phi3",
        matches!(arch, "qwen3" | "gemma3"),
        arch == "gemma3",
    );
    for i in 0..spec.n_layer {
        let p = format!("blk.{i}");
        out.push((format!("{p}.attn_norm.weight"), w.norm(d)?));
        if fused {
            out.push((format!("{p}.attn_qkv.weight"), w.matrix(d + 2 * kv_dim, d)?));
        } else {
            out.push((format!("{p}.attn_q.weight"), w.matrix(d, d)?));
            out.push((format!("{p}.attn_k.weight"), w.matrix(kv_dim, d)?));
            out.push((format!("{p}.attn_v.weight"), w.matrix(kv_dim, d)?));
        }
        if spec.qkv_bias {
            for (name, len) in [("attn_q", d), ("attn_k", kv_dim), ("attn_v", kv_dim)] {
                out.push((format!("{p}.{name}.bias"), w.bias(len)?));
            }
        }
        if qk_norm {
            out.push((format!("{p}.attn_q_norm.weight"), w.norm(spec.head_dim())?));
            out.push((format!("{p}.attn_k_norm.weight"), w.norm(spec.head_dim())?));
        }
        out.push((format!("{p}.attn_output.weight"), w.matrix(d, d)?));
        if post_norms {
            out.push((format!("{p}.post_attention_norm.weight"), w.norm(d)?));
        }
        out.push((format!("{p}.ffn_norm.weight"), w.norm(d)?));
        if fused {
            out.push((format!("{p}.ffn_up.weight"), w.matrix(2 * ff, d)?));
        } else {
            out.push((format!("{p}.ffn_gate.weight"), w.matrix(ff, d)?));
            out.push((format!("{p}.ffn_up.weight"), w.matrix(ff, d)?));
        }
        out.push((format!("{p}.ffn_down.weight"), w.matrix(d, ff)?));
        if post_norms {
            out.push((format!("{p}.post_ffw_norm.weight"), w.norm(d)?));
        }
    }
    out.push(("output_norm.weight".to_string(), w.norm(d)?));
    if let Some(factors) = &spec.rope_freqs {
        let t = Tensor::from_vec(factors.clone(), factors.len(), &Device::Cpu)?;
        out.push((
            "rope_freqs.weight".to_string(),
            QTensor::quantize(&t, GgmlDType::F32)?,
        ));
    }
    if !spec.tied_embeddings {
        out.push(("output.weight".to_string(), w.matrix(spec.vocab_size, d)?));
    }
    Ok(out)
}

/// Writes the model described by `spec` to `path` as a GGUF file that [`super::Model::load`]
/// and [`crate::tokenizer::Tokenizer::from_gguf`] read like a llama.cpp conversion.
pub fn write_synthetic_gguf(spec: &SyntheticSpec, path: &Path) -> Result<(), ModelError> {
    spec.validate(path)?;
    let metadata = metadata(spec);
    let tensors = tensors(spec)?;
    let io_err = |source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = BufWriter::new(File::create(path).map_err(io_err)?);
    let metadata_refs: Vec<(&str, &Value)> =
        metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let tensor_refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    gguf_file::write(&mut file, &metadata_refs, &tensor_refs).map_err(|e| ModelError::Gguf {
        path: path.to_path_buf(),
        message: format!("writing: {e}"),
    })?;
    file.flush().map_err(io_err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_level_chars_are_gpt2s() {
        let chars = byte_level_chars();
        assert_eq!(chars[b'A' as usize], 'A');
        assert_eq!(chars[b' ' as usize], 'Ġ');
        assert_eq!(chars[b'\n' as usize], 'Ċ');
        assert_eq!(chars[0], 'Ā');
        assert_eq!(chars[0xAD], 'Ń');
        let distinct: std::collections::HashSet<char> = chars.iter().copied().collect();
        assert_eq!(distinct.len(), 256);
    }

    #[test]
    fn vocabulary_puts_specials_after_the_bytes() {
        let vocab = vocabulary(BASE_VOCAB + 2, &[]);
        assert_eq!(vocab.len(), BASE_VOCAB + 2);
        assert_eq!(vocab[ENDOFTEXT_ID as usize].0, "<|endoftext|>");
        assert_eq!(vocab[IM_START_ID as usize].0, "<|im_start|>");
        assert_eq!(vocab[IM_END_ID as usize], ("<|im_end|>".into(), 3));
        assert_eq!(vocab[BASE_VOCAB - 1].0, "Ġthe");
    }

    #[test]
    fn invalid_specs_are_refused() {
        let path = Path::new("unused.gguf");
        let mut spec = SyntheticSpec::tiny();
        spec.dtype = GgmlDType::Q4K;
        assert!(spec.validate(path).is_err());
        let mut spec = SyntheticSpec::tiny();
        spec.vocab_size = 10;
        assert!(spec.validate(path).is_err());
        let mut spec = SyntheticSpec::tiny();
        spec.n_kv_head = 3;
        assert!(spec.validate(path).is_err());
        assert!(SyntheticSpec::tiny().validate(path).is_ok());
    }
}
