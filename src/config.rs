//! What the user asked for, validated and resolved: the one place flags are checked against
//! each other.

use std::path::PathBuf;

use crate::cli::{DeviceArg, RunArgs};
use crate::input::{InputSpec, JsonlFields};
use crate::model_source::ModelRef;
use crate::output::Format;
use crate::prompt::{PromptTemplate, PromptVars};
use crate::sampler::SamplingParams;

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

fn err<T>(msg: impl Into<String>) -> Result<T, ConfigError> {
    Err(ConfigError(msg.into()))
}

/// Model, device and threads: shared by every subcommand that loads a model.
#[derive(Debug, Clone)]
pub struct ModelConfig {
    pub model: ModelRef,
    pub tokenizer: Option<PathBuf>,
    pub device: DeviceArg,
    pub threads: usize,
}

/// A validated `run`.
#[derive(Debug, Clone)]
pub struct RunConfig {
    pub inputs: Vec<InputSpec>,
    pub fields: JsonlFields,
    pub model: ModelConfig,
    pub prompts: Vec<PromptTemplate>,
    pub vars: PromptVars,
    pub system: Option<String>,
    pub sequences: usize,
    pub batch_size: usize,
    /// Resolved against the model's context once it is loaded.
    pub ctx_size: Option<usize>,
    pub max_tokens: usize,
    pub ignore_eos: bool,
    pub sampling: SamplingParams,
    pub output: String,
    pub format: Format,
    pub report: Option<PathBuf>,
    pub quiet: bool,
}

pub fn model_config(args: &crate::cli::ModelArgs) -> Result<ModelConfig, ConfigError> {
    let model = ModelRef::parse(args.model.as_deref()).map_err(|e| ConfigError(e.to_string()))?;
    let threads = match args.threads {
        Some(0) => return err("--threads must be at least 1"),
        Some(n) => n,
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    Ok(ModelConfig {
        model,
        tokenizer: args.tokenizer.clone(),
        device: args.device,
        threads,
    })
}

impl TryFrom<&RunArgs> for RunConfig {
    type Error = ConfigError;

    fn try_from(args: &RunArgs) -> Result<Self, ConfigError> {
        let e = &args.engine;
        let g = &args.generation;
        let sequences = if e.sequential { 1 } else { e.sequences };
        if sequences == 0 {
            return err("--sequences must be at least 1");
        }
        if e.batch_size == 0 {
            return err("--batch-size must be at least 1");
        }
        if e.batch_size < sequences {
            return err(format!(
                "--batch-size {} is smaller than --sequences {sequences}: every sequence needs a row in each step",
                e.batch_size
            ));
        }
        if e.ctx_size == Some(0) {
            return err("--ctx-size must be at least 1");
        }
        if g.max_tokens == 0 {
            return err("--max-tokens must be at least 1");
        }
        if !(g.temperature >= 0.0 && g.temperature.is_finite()) {
            return err("--temperature must be a number >= 0");
        }
        if !(g.top_p > 0.0 && g.top_p <= 1.0) {
            return err("--top-p must be in (0, 1]");
        }
        let prompts = args
            .prompt
            .prompts
            .iter()
            .map(|p| PromptTemplate::resolve(p).map_err(|e| ConfigError(format!("--prompt: {e}"))))
            .collect::<Result<Vec<_>, _>>()?;
        let mut names: Vec<&str> = prompts.iter().map(|p| p.name.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        if names.len() != prompts.len() {
            return err("--prompt: the same prompt is given twice");
        }
        if args.prompt.prompts.iter().any(|p| p == "classify") && args.prompt.labels.is_empty() {
            return err("--prompt classify needs --labels a,b,c");
        }
        if args.prompt.prompts.iter().any(|p| p == "extract") && args.prompt.fields.is_empty() {
            return err("--prompt extract needs --fields name,date,...");
        }
        let inputs = args
            .inputs
            .iter()
            .map(|i| InputSpec::classify(i).map_err(|e| ConfigError(e.to_string())))
            .collect::<Result<Vec<_>, _>>()?;
        if inputs.iter().filter(|i| **i == InputSpec::Stdin).count() > 1 {
            return err("- (stdin) can be given only once");
        }
        let o = &args.output;
        Ok(Self {
            inputs,
            fields: JsonlFields {
                text: args.text_field.clone(),
                id: args.id_field.clone(),
            },
            model: model_config(&args.model)?,
            prompts,
            vars: PromptVars {
                labels: args.prompt.labels.clone(),
                fields: args.prompt.fields.clone(),
            },
            system: args.prompt.system.clone(),
            sequences,
            batch_size: e.batch_size,
            ctx_size: e.ctx_size,
            max_tokens: g.max_tokens,
            ignore_eos: g.ignore_eos,
            sampling: SamplingParams {
                temperature: g.temperature,
                top_k: g.top_k,
                top_p: g.top_p,
                seed: g.seed,
            },
            format: o.format.unwrap_or_else(|| Format::from_path(&o.output)),
            output: o.output.clone(),
            report: o.report.clone(),
            quiet: o.quiet,
        })
    }
}
