//! The model, its tokenizer and chat template, loaded once from a GGUF file.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use candle_core::Device;

use crate::config::ModelConfig as ModelChoice;
use crate::device::select_device;
use crate::model::{GgufFile, Llama};
use crate::tokenizer::Tokenizer;

pub struct LoadedModel {
    pub path: PathBuf,
    pub model: Llama,
    pub tokenizer: Tokenizer,
    pub chat_template: Option<String>,
    pub device: Device,
    pub load_time: Duration,
}

impl LoadedModel {
    pub fn load(choice: &ModelChoice) -> anyhow::Result<Self> {
        let started = Instant::now();
        let path = choice.model.resolve()?;
        let device = select_device(choice.device)?;
        let mut gguf = GgufFile::open(&path)?;
        let tokenizer = Tokenizer::from_gguf(&gguf, choice.tokenizer.as_deref())
            .with_context(|| format!("loading the tokenizer of {}", path.display()))?;
        let chat_template = gguf.string("tokenizer.chat_template").ok();
        let model = Llama::load(&mut gguf, &device)?;
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
