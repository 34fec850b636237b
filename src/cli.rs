//! The command line as the user types it (clap derive). Checked against itself in `config`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::output::Format;

const EXIT_CODES: &str = "Exit codes:
  0  every document ok (or truncated to fit the context)
  1  the run finished but some documents failed (their records have status=error)
  2  fatal: bad arguments, model cannot load, output not writable
A closed stdout pipe (e.g. `| head`) ends the run quietly with 0.";

/// Run a local quantized LLM over many documents at once.
#[derive(Debug, Parser)]
#[command(name = "docanalyze", version, about, after_help = EXIT_CODES)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run every document × prompt through the model, one record each.
    Run(RunArgs),
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Directories (walked recursively), files, .jsonl/.ndjson files, or - for JSONL on stdin.
    #[arg(required = true, value_name = "INPUT")]
    pub inputs: Vec<String>,

    #[command(flatten)]
    pub model: ModelArgs,

    #[command(flatten)]
    pub prompt: PromptArgs,

    #[command(flatten)]
    pub engine: EngineArgs,

    #[command(flatten)]
    pub generation: GenerationArgs,

    #[command(flatten)]
    pub output: OutputArgs,

    /// JSONL field holding the document text.
    #[arg(long, default_value = "text", help_heading = "Input")]
    pub text_field: String,

    /// JSONL field holding the document id (default id: file:line).
    #[arg(long, default_value = "id", help_heading = "Input")]
    pub id_field: String,
}

#[derive(Debug, Args)]
#[command(next_help_heading = "Model")]
pub struct ModelArgs {
    /// GGUF model: a path or hf:OWNER/REPO/FILE.gguf [default: SmolLM2-135M-Instruct Q4_1
    /// installed by scripts/fetch-model.sh]
    #[arg(long, env = "DOCANALYZE_MODEL")]
    pub model: Option<String>,

    /// tokenizer.json to use instead of the tokenizer in the GGUF metadata.
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,

    /// Device to run on.
    #[arg(long, value_enum, default_value_t = DeviceArg::Auto)]
    pub device: DeviceArg,

    /// CPU threads [default: the number of cores].
    #[arg(long)]
    pub threads: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DeviceArg {
    Auto,
    Cpu,
    Cuda,
    Metal,
}

#[derive(Debug, Args)]
#[command(next_help_heading = "Prompt")]
pub struct PromptArgs {
    /// Built-in prompt (summarize, classify, extract, sentiment, keywords) or a template file;
    /// repeat for several prompts per document.
    #[arg(long = "prompt", default_value = "summarize")]
    pub prompts: Vec<String>,

    /// Labels for the classify prompt, comma separated.
    #[arg(long, value_delimiter = ',')]
    pub labels: Vec<String>,

    /// Fields for the extract prompt, comma separated.
    #[arg(long, value_delimiter = ',')]
    pub fields: Vec<String>,

    /// System message (default: the chat template's own).
    #[arg(long)]
    pub system: Option<String>,
}

#[derive(Debug, Args)]
#[command(next_help_heading = "Engine")]
pub struct EngineArgs {
    /// Sequences decoded at the same time, their KV caches batched into shared forward passes.
    #[arg(long, default_value_t = 4)]
    pub sequences: usize,

    /// One sequence at a time, same engine (the baseline for speedup comparisons).
    #[arg(long, conflicts_with = "sequences")]
    pub sequential: bool,

    /// Most tokens in one forward pass (prompts are prefilled in chunks of this size).
    #[arg(long, default_value_t = 512)]
    pub batch_size: usize,

    /// Context positions per sequence [default: min(model context, 4096)].
    #[arg(long)]
    pub ctx_size: Option<usize>,
}

#[derive(Debug, Args)]
#[command(next_help_heading = "Generation")]
pub struct GenerationArgs {
    /// Most tokens generated per document.
    #[arg(long, default_value_t = 256)]
    pub max_tokens: usize,

    /// Sampling temperature; 0 is greedy.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,

    /// Sample among the k most likely tokens only (0: all).
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,

    /// Sample among the most likely tokens whose probabilities sum to p.
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f32,

    /// Seed of the sampler; each job's random stream derives from it and the job.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,

    /// Keep generating to --max-tokens, ignoring end-of-generation tokens (benchmarks).
    #[arg(long)]
    pub ignore_eos: bool,
}

#[derive(Debug, Args)]
#[command(next_help_heading = "Output")]
pub struct OutputArgs {
    /// Output file, or - for stdout.
    #[arg(short, long, default_value = "-")]
    pub output: String,

    /// Output format [default: from the extension of --output, else jsonl].
    #[arg(long, value_enum)]
    pub format: Option<Format>,

    /// Write the timing report as JSON to this file.
    #[arg(long)]
    pub report: Option<PathBuf>,

    /// No progress bar, no report table on stderr.
    #[arg(short, long)]
    pub quiet: bool,

    /// More log output on stderr (repeat for more).
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }
}
