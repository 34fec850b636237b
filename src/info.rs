//! `info`: what a GGUF model is and what it costs in memory, read from its header alone, and
//! the largest K (sequences) that fits a memory budget.

use std::collections::BTreeMap;
use std::path::Path;
use std::str::FromStr;

use candle_core::quantized::GgmlDType;
use serde::Serialize;

use crate::byte_size::ByteSize;
use crate::model::{GgufFile, ModelConfig};

/// `--memory-budget`: bytes, or what the system says is available.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryBudget {
    Auto,
    Bytes(u64),
}

impl FromStr for MemoryBudget {
    type Err = String;

    /// `auto`, or a size: `123456`, `512M`, `8G`, `1.5GiB` (see [`ByteSize`]).
    fn from_str(s: &str) -> Result<Self, String> {
        if s.trim().eq_ignore_ascii_case("auto") {
            return Ok(Self::Auto);
        }
        let ByteSize(bytes) = s
            .parse()
            .map_err(|e: String| e.replace("number of bytes", "number of bytes nor auto"))?;
        Ok(Self::Bytes(bytes))
    }
}

/// The facts `info` prints.
#[derive(Debug, Clone, Serialize)]
pub struct ModelInfo {
    pub model: String,
    pub name: String,
    pub architecture: String,
    /// Tensors per storage type (`Q4_1`, `F32`, …).
    pub tensor_types: BTreeMap<String, usize>,
    /// Which CPU matmul serves the weight matrices of each type (`batched kernel`, `candle
    /// gemm`, or candle's slow row-by-row path).
    pub matmul_paths: BTreeMap<String, String>,
    pub context_length: usize,
    /// The keys a local (sliding-window) layer sees; `None` when every layer sees them all.
    pub sliding_window: Option<usize>,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub embedding_length: usize,
    pub feed_forward_length: usize,
    pub vocab_size: usize,
    pub weights_bytes: u64,
    pub kv_bytes_per_token: usize,
    pub ctx_size: usize,
    pub kv_bytes_per_sequence: u64,
    pub batch_size: usize,
    /// Estimate: batch_size × (embedding + feed-forward + vocabulary) × 4 bytes × 4 buffers.
    pub activation_bytes: u64,
    /// `None` when no budget was given and the system does not say what is available.
    pub memory_budget_bytes: Option<u64>,
    /// `--memory-budget` or `MemAvailable`.
    pub memory_budget_source: String,
    /// The largest K with weights + K × KV per sequence + activations within the budget.
    pub max_sequences: Option<u64>,
}

impl ModelInfo {
    /// Reads the GGUF header of `path` (not the weights).
    pub fn read(
        path: &Path,
        ctx_size: Option<usize>,
        batch_size: usize,
        budget: MemoryBudget,
    ) -> anyhow::Result<Self> {
        let gguf = GgufFile::open(path)?;
        let config = ModelConfig::from_gguf(&gguf)?;
        let ctx = match ctx_size {
            Some(n) if n > config.context_length => anyhow::bail!(
                "--ctx-size {n} exceeds the context length of {} ({})",
                path.display(),
                config.context_length
            ),
            Some(n) => n,
            None => config.context_length.min(4096),
        };
        let (tensor_types, weights_bytes) = tensor_census(&gguf);
        let matmul_paths = matmul_paths(&gguf);
        check_tensor_data_present(&gguf)?;
        let kv_bytes_per_token = config.kv_bytes_per_token();
        let kv_bytes_per_sequence = (ctx * kv_bytes_per_token) as u64;
        let activation_bytes =
            (batch_size * (config.n_embd + config.n_ff + config.vocab_size) * 4 * 4) as u64;
        let (memory_budget_bytes, memory_budget_source) = match budget {
            MemoryBudget::Bytes(b) => (Some(b), "--memory-budget".to_string()),
            MemoryBudget::Auto => (mem_available(), "MemAvailable".to_string()),
        };
        let max_sequences = memory_budget_bytes.map(|budget| {
            largest_sequences(
                budget,
                weights_bytes + activation_bytes,
                kv_bytes_per_sequence,
            )
        });
        Ok(Self {
            model: path.display().to_string(),
            name: config.name.clone(),
            architecture: config.architecture.clone(),
            tensor_types,
            matmul_paths,
            context_length: config.context_length,
            sliding_window: config.sliding_window,
            layers: config.n_layer,
            heads: config.n_head,
            kv_heads: config.n_kv_head,
            head_dim: config.head_dim,
            embedding_length: config.n_embd,
            feed_forward_length: config.n_ff,
            vocab_size: config.vocab_size,
            weights_bytes,
            kv_bytes_per_token,
            ctx_size: ctx,
            kv_bytes_per_sequence,
            batch_size,
            activation_bytes,
            memory_budget_bytes,
            memory_budget_source,
            max_sequences,
        })
    }

    /// Aligned `label  value` lines.
    pub fn table(&self) -> String {
        let types = self
            .tensor_types
            .iter()
            .map(|(t, n)| format!("{t} × {n}"))
            .collect::<Vec<_>>()
            .join(", ");
        let paths = self
            .matmul_paths
            .iter()
            .map(|(t, p)| format!("{t}: {p}"))
            .collect::<Vec<_>>()
            .join(", ");
        let budget = match self.memory_budget_bytes {
            Some(b) => format!("{} ({})", bytes(b), self.memory_budget_source),
            None => "unknown (no MemAvailable; pass --memory-budget)".to_string(),
        };
        let max_k = match self.max_sequences {
            Some(0) => "0 (weights and activations alone exceed the budget)".to_string(),
            Some(k) => format!("{k} at ctx {}", self.ctx_size),
            None => "unknown".to_string(),
        };
        let rows = [
            ("model", self.model.clone()),
            ("name", self.name.clone()),
            ("architecture", self.architecture.clone()),
            ("tensor types", types),
            ("CPU matmul", paths),
            ("context length", self.context_length.to_string()),
            (
                "sliding window",
                self.sliding_window.map_or("none".into(), |w| {
                    format!("{w} positions on the local layers (the cache keeps all)")
                }),
            ),
            ("layers", self.layers.to_string()),
            ("heads", self.heads.to_string()),
            ("kv heads", self.kv_heads.to_string()),
            ("head dim", self.head_dim.to_string()),
            ("embedding length", self.embedding_length.to_string()),
            ("feed-forward length", self.feed_forward_length.to_string()),
            ("vocabulary", self.vocab_size.to_string()),
            ("weights", bytes(self.weights_bytes)),
            (
                "KV bytes per token",
                format!("{} (f16 K and V)", self.kv_bytes_per_token),
            ),
            (
                "KV bytes per sequence",
                format!(
                    "{} at ctx {}",
                    bytes(self.kv_bytes_per_sequence),
                    self.ctx_size
                ),
            ),
            (
                "activations",
                format!(
                    "{} (estimate: batch {} × (embedding + feed-forward + vocabulary) × 4 B × 4)",
                    bytes(self.activation_bytes),
                    self.batch_size
                ),
            ),
            ("memory budget", budget),
            ("largest K", max_k),
        ];
        let width = rows.iter().map(|(l, _)| l.len()).max().unwrap_or(0);
        rows.iter()
            .map(|(label, value)| format!("{label:<width$}  {value}\n"))
            .collect()
    }
}

/// Tensors per storage type and the bytes of all of them.
fn tensor_census(gguf: &GgufFile) -> (BTreeMap<String, usize>, u64) {
    let mut types = BTreeMap::new();
    let mut total = 0u64;
    for info in gguf.content.tensor_infos.values() {
        let dtype = info.ggml_dtype;
        *types.entry(dtype_name(dtype).to_string()).or_insert(0) += 1;
        let elements = info.shape.elem_count();
        total += (elements / dtype.block_size() * dtype.type_size()) as u64;
    }
    (types, total)
}

/// The matmul path of each type of weight matrix (2-D tensors).
fn matmul_paths(gguf: &GgufFile) -> BTreeMap<String, String> {
    gguf.content
        .tensor_infos
        .values()
        .filter(|info| info.shape.rank() == 2)
        .map(|info| {
            let dtype = info.ggml_dtype;
            (
                dtype_name(dtype).to_string(),
                crate::model::cpu_matmul_path(dtype).to_string(),
            )
        })
        .collect()
}

/// The header is all `info` reads, but a file cut short (an interrupted download) must not be
/// described as a model: every tensor's bytes must lie inside the file.
fn check_tensor_data_present(gguf: &GgufFile) -> anyhow::Result<()> {
    let file_len = std::fs::metadata(&gguf.path)?.len();
    let content = &gguf.content;
    for (name, info) in &content.tensor_infos {
        let dtype = info.ggml_dtype;
        let bytes = (info.shape.elem_count() / dtype.block_size() * dtype.type_size()) as u64;
        let end = content
            .tensor_data_offset
            .saturating_add(info.offset)
            .saturating_add(bytes);
        if end > file_len {
            anyhow::bail!(
                "{} is truncated: tensor `{name}` ends at byte {end} but the file has {file_len}",
                gguf.path.display()
            );
        }
    }
    Ok(())
}

/// llama.cpp's name of a storage type.
fn dtype_name(dtype: GgmlDType) -> &'static str {
    match dtype {
        GgmlDType::F32 => "F32",
        GgmlDType::F16 => "F16",
        GgmlDType::BF16 => "BF16",
        GgmlDType::Q4_0 => "Q4_0",
        GgmlDType::Q4_1 => "Q4_1",
        GgmlDType::Q5_0 => "Q5_0",
        GgmlDType::Q5_1 => "Q5_1",
        GgmlDType::Q8_0 => "Q8_0",
        GgmlDType::Q8_1 => "Q8_1",
        GgmlDType::Q2K => "Q2_K",
        GgmlDType::Q3K => "Q3_K",
        GgmlDType::Q4K => "Q4_K",
        GgmlDType::Q5K => "Q5_K",
        GgmlDType::Q6K => "Q6_K",
        GgmlDType::Q8K => "Q8_K",
    }
}

/// The largest K with `fixed + K × per_sequence ≤ budget` (0 when even K = 1 does not fit).
/// The most sequences `--sequences auto` runs: on the 2-core CPU measured in BENCHMARKS.md,
/// aggregate decode rose 2.4x from K=1 to K=8 and only 6% more to K=16.
pub const AUTO_MAX_SEQUENCES: usize = 16;

/// `--sequences auto` once the model is loaded: as many KV slots of `ctx` positions as fit
/// in the memory still available (less one batch of activations), between 1 and
/// [`AUTO_MAX_SEQUENCES`].
pub fn auto_sequences(config: &crate::model::ModelConfig, ctx: usize, batch_size: usize) -> usize {
    sequences_within(config, ctx, batch_size, mem_available())
}

/// [`auto_sequences`] for a memory budget of `available` bytes (`None`: unknown, one sequence).
fn sequences_within(
    config: &crate::model::ModelConfig,
    ctx: usize,
    batch_size: usize,
    available: Option<u64>,
) -> usize {
    let per_sequence = (ctx * config.kv_bytes_per_token()) as u64;
    let activations =
        (batch_size * (config.n_embd + config.n_ff + config.vocab_size) * 4 * 4) as u64;
    let fit = available.map_or(1, |budget| {
        largest_sequences(budget, activations, per_sequence)
    });
    (fit as usize).clamp(1, AUTO_MAX_SEQUENCES)
}

pub fn largest_sequences(budget: u64, fixed: u64, per_sequence: u64) -> u64 {
    budget
        .checked_sub(fixed)
        .map_or(0, |left| left / per_sequence.max(1))
}

/// `MemAvailable` of `/proc/meminfo` in bytes (Linux; `None` elsewhere).
pub fn mem_available() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// `1234567 (1.2 MiB)`.
fn bytes(n: u64) -> String {
    const GIB: f64 = 1024.0 * 1024.0 * 1024.0;
    let x = n as f64;
    if x >= 10.0 * GIB {
        format!("{n} ({:.1} GiB)", x / GIB)
    } else {
        format!("{n} ({:.1} MiB)", x / (1024.0 * 1024.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_budgets_parse_with_units() {
        assert_eq!("auto".parse(), Ok(MemoryBudget::Auto));
        assert_eq!("1000".parse(), Ok(MemoryBudget::Bytes(1000)));
        assert_eq!("2K".parse(), Ok(MemoryBudget::Bytes(2000)));
        assert_eq!("1.5GiB".parse(), Ok(MemoryBudget::Bytes(1_610_612_736)));
        assert_eq!("512 MiB".parse(), Ok(MemoryBudget::Bytes(536_870_912)));
        assert!("lots".parse::<MemoryBudget>().is_err());
        assert!("5 parsecs".parse::<MemoryBudget>().is_err());
    }

    #[test]
    fn auto_sequences_fill_the_memory_left_within_the_cap() {
        // SmolLM2-135M's shape: 30 layers, 3 K/V heads of 64.
        let config = crate::model::ModelConfig {
            architecture: "llama".into(),
            name: "smol".into(),
            n_layer: 30,
            n_embd: 576,
            n_head: 9,
            n_kv_head: 3,
            head_dim: 64,
            n_ff: 1536,
            context_length: 8192,
            rope_freq_base: 100_000.0,
            rope_linear_factor: 1.0,
            rms_eps: 1e-5,
            vocab_size: 49_152,
            rope_neox: false,
            attention_scale: 0.125,
            sliding_window: None,
        };
        let (ctx, batch) = (4096, 512);
        let per_sequence = (ctx * config.kv_bytes_per_token()) as u64;
        let activations = (batch * (576 + 1536 + 49_152) * 16) as u64;
        assert_eq!(per_sequence, 4096 * 2 * 30 * 3 * 64 * 2);
        let with = |budget| sequences_within(&config, ctx, batch, budget);
        assert_eq!(with(Some(activations + 5 * per_sequence + 1)), 5);
        assert_eq!(with(Some(activations + 5 * per_sequence - 1)), 4);
        assert_eq!(with(Some(1 << 40)), AUTO_MAX_SEQUENCES);
        assert_eq!(with(Some(1 << 20)), 1, "at least one sequence");
        assert_eq!(with(None), 1, "unknown memory: one");
    }

    #[test]
    fn largest_sequences_fills_what_is_left_after_weights() {
        assert_eq!(largest_sequences(1000, 200, 100), 8);
        assert_eq!(largest_sequences(1000, 200, 300), 2);
        assert_eq!(largest_sequences(100, 200, 10), 0);
        assert_eq!(largest_sequences(100, 0, 0), 100);
    }
}
