//! The model, its tokenizer and chat template, loaded once from a GGUF file.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use candle_core::Device;

use crate::config::ModelConfig as ModelChoice;
use crate::device::select_device;
use crate::model::{GgufFile, Model, ModelConfig};
use crate::panic_guard::catch_quietly;
use crate::tokenizer::Tokenizer;

pub struct LoadedModel {
    pub path: PathBuf,
    pub model: Model,
    pub tokenizer: Tokenizer,
    pub chat_template: Option<String>,
    pub device: Device,
    pub load_time: Duration,
}

impl LoadedModel {
    /// Loads the model `choice` names. A file that is missing, truncated, corrupt or of an
    /// unsupported architecture is an error naming it; so is a panic of a reader on a file
    /// nobody foresaw (it is caught, and printed nowhere else).
    pub fn load(choice: &ModelChoice) -> anyhow::Result<Self> {
        let started = Instant::now();
        crate::model::set_int8_activations(choice.int8);
        let path = choice.model.resolve()?;
        let device = select_device(choice.device)?;
        let (model, tokenizer, chat_template) = catch_quietly(|| -> anyhow::Result<_> {
            let mut gguf = GgufFile::open(&path)?;
            // The architecture first: a model we cannot run should say so, not that it lacks
            // the tokenizer keys of a llama.
            let config = ModelConfig::from_gguf(&gguf)?;
            check_sizes(&gguf, &config)?;
            let tokenizer = Tokenizer::from_gguf(&gguf, choice.tokenizer.as_deref())
                .with_context(|| format!("loading the tokenizer of {}", path.display()))?;
            let chat_template = gguf.string("tokenizer.chat_template").ok();
            let model = Model::load(&mut gguf, &device)?;
            Ok((model, tokenizer, chat_template))
        })
        .map_err(|panic| {
            anyhow::anyhow!(
                "{} is not a model this program can read (its reader failed: {panic})",
                path.display()
            )
        })??;
        Ok(Self {
            path,
            model,
            tokenizer,
            chat_template,
            device,
            load_time: started.elapsed(),
        })
    }

    /// `--ctx-size`, or min(model context, 4096); never more than the model was trained for.
    pub fn context_size(&self, requested: Option<usize>) -> anyhow::Result<usize> {
        let limit = self.model.config.context_length;
        match requested {
            Some(n) if n > limit => anyhow::bail!(
                "--ctx-size {n} exceeds the context length of {} ({limit})",
                self.path.display()
            ),
            Some(n) => Ok(n),
            None => Ok(limit.min(4096)),
        }
    }
}

/// No llama, mistral or qwen2 model has a longer context; a larger value is a corrupt file.
const MAX_CONTEXT_LENGTH: usize = 1 << 22;

/// Refuses metadata that the tensors contradict, before the model loader sizes anything from it.
///
/// A flipped byte in a GGUF header can turn `block_count` or `context_length` into billions,
/// and the loader allocates from those (its layer list, its rotary tables): an allocation that
/// fails aborts the process, which no panic guard catches. The tensors' own shapes are checked
/// against the file's length as they are read, so they are the evidence to trust.
fn check_sizes(gguf: &GgufFile, config: &ModelConfig) -> anyhow::Result<()> {
    let corrupt = |what: String| anyhow::anyhow!("{} is corrupt: {what}", gguf.path.display());
    let last_layer = format!("blk.{}.attn_norm.weight", config.n_layer.saturating_sub(1));
    if config.n_layer > gguf.content.tensor_infos.len() || !gguf.has_tensor(&last_layer) {
        return Err(corrupt(format!(
            "{}.block_count is {} but there is no tensor `{last_layer}`",
            config.architecture, config.n_layer
        )));
    }
    let rows = |name: &str| {
        gguf.content
            .tensor_infos
            .get(name)
            .and_then(|t| t.shape.dims().first().copied())
    };
    for (name, heads) in [
        ("blk.0.attn_q.weight", config.n_head),
        ("blk.0.attn_k.weight", config.n_kv_head),
    ] {
        let expected = heads.checked_mul(config.head_dim);
        if rows(name).is_some_and(|r| Some(r) != expected) {
            return Err(corrupt(format!(
                "tensor `{name}` has {} rows, not {heads} heads × {} dimensions as the metadata says",
                rows(name).unwrap_or_default(),
                config.head_dim
            )));
        }
    }
    if config.context_length > MAX_CONTEXT_LENGTH {
        return Err(corrupt(format!(
            "{}.context_length is {}, more than any model of this architecture",
            config.architecture, config.context_length
        )));
    }
    Ok(())
}
