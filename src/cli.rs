//! The command line as the user types it (clap derive). Checked against itself in `config`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::byte_size::ByteSize;
use crate::info::MemoryBudget;
use crate::output::Format;
use crate::prompt::Overflow;
use crate::shard::ShardArg;

/// `on` or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Switch {
    On,
    Off,
}

impl Switch {
    pub fn is_on(self) -> bool {
        self == Switch::On
    }
}

/// `--sequences N|auto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SequencesArg {
    Auto,
    Count(usize),
}

fn parse_sequences(s: &str) -> Result<SequencesArg, String> {
    if s == "auto" {
        return Ok(SequencesArg::Auto);
    }
    s.parse()
        .map(SequencesArg::Count)
        .map_err(|_| format!("`{s}` is not a number of sequences or `auto`"))
}

const EXIT_CODES: &str = "Exit codes:
  0  every document ok (or truncated to fit the context, or skipped by --overflow skip)
  1  the run finished but some documents failed (their records have status=error)
  2  fatal: bad arguments, model cannot load, output not writable; the output is untouched
  130, 143  stopped by SIGINT (Ctrl-C) or SIGTERM: no new document was started, the ones in
     flight (at most --sequences, each at most --max-tokens long) were finished and written;
     a second signal stops at once. Records are always written whole: --resume carries on
A closed stdout pipe (e.g. `| head`) ends the run quietly with 0.";

const BENCH_EXIT_CODES: &str = "Exit codes:
  0  every K ran and every document ok
  1  the runs finished but some documents failed
  2  fatal: bad arguments, model cannot load, report not writable
The table goes to stdout; whether the outputs were identical at every K is its last line.";

const INFO_EXIT_CODES: &str = "Exit codes:
  0  the model was described
  2  fatal: bad arguments, the model cannot be read";

/// Run a local quantized LLM over many documents at once.
#[derive(Debug, Parser)]
#[command(name = "docanalyze", version, about, after_help = EXIT_CODES)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// The `-q`/`-v` flags of the command, if it has them.
    pub fn report_args(&self) -> Option<&ReportArgs> {
        match &self.command {
            Command::Run(args) => Some(&args.report),
            Command::Bench(args) => Some(&args.report),
            Command::Info(_) | Command::Merge(_) | Command::ExtractText(_) => None,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run every document × prompt through the model, one record each.
    #[command(after_help = EXIT_CODES)]
    Run(RunArgs),
    /// Run the same documents at several --sequences values and print a speedup table.
    #[command(after_help = BENCH_EXIT_CODES)]
    Bench(BenchArgs),
    /// Describe a GGUF model: architecture, quantization, KV cache bytes, the largest K that fits
    /// in memory.
    #[command(after_help = INFO_EXIT_CODES)]
    Info(InfoArgs),
    /// Join the outputs of the N shards of a run (`--shard I/N -o results-{shard}.csv`) into one:
    /// every document × prompt once, the shard reports merged.
    #[command(after_help = MERGE_EXIT_CODES)]
    Merge(MergeArgs),
    /// Internal: extract the text of one file under memory and time limits (run by `run`).
    #[command(hide = true)]
    ExtractText(ExtractTextArgs),
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub input: InputArgs,

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

    #[command(flatten)]
    pub report: ReportArgs,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(flatten)]
    pub input: InputArgs,

    #[command(flatten)]
    pub model: ModelArgs,

    #[command(flatten)]
    pub prompt: PromptArgs,

    #[command(flatten)]
    pub engine: BenchEngineArgs,

    #[command(flatten)]
    pub generation: GenerationArgs,

    #[command(flatten)]
    pub report: ReportArgs,
}

#[derive(Debug, Args)]
pub struct InfoArgs {
    /// GGUF model: a path or hf:OWNER/REPO/FILE.gguf [default: the default model].
    #[arg(long, env = "DOCANALYZE_MODEL")]
    pub model: Option<String>,

    /// Context positions per sequence for the KV sizes [default: min(model context, 4096)].
    #[arg(long)]
    pub ctx_size: Option<usize>,

    /// Tokens in one forward pass, for the activation estimate.
    #[arg(long, default_value_t = 512)]
    pub batch_size: usize,

    /// Memory for weights, KV caches and activations: bytes (suffixes K, M, G, KiB, MiB, GiB)
    /// or auto (MemAvailable from /proc/meminfo).
    #[arg(long, default_value = "auto", value_name = "BYTES|auto")]
    pub memory_budget: MemoryBudget,

    /// Print JSON instead of the aligned text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct InputArgs {
    /// Directories (walked recursively), files, .jsonl/.ndjson files, or - for JSONL on stdin.
    #[arg(required = true, value_name = "INPUT")]
    pub inputs: Vec<String>,

    /// JSONL field holding the document text.
    #[arg(long, default_value = "text", help_heading = "Input")]
    pub text_field: String,

    /// JSONL field holding the document id (default id: file:line).
    #[arg(long, default_value = "id", help_heading = "Input")]
    pub id_field: String,

    /// JSONL field holding each document's true label: the report adds accuracy, per-label
    /// precision and recall and a confusion matrix for the prompts that answer with --labels.
    #[arg(long, value_name = "NAME", help_heading = "Input")]
    pub gold_field: Option<String>,

    /// Only the documents of shard I of N (I counted from 0), by a stable hash of their id:
    /// N runs with 0/N … N-1/N process every document exactly once. `auto` reads I/N from a
    /// Slurm array, Kubernetes Indexed Job, AWS Batch or Google Batch array task (or
    /// DOCANALYZE_SHARD_INDEX/_COUNT). `{shard}` in -o and --report becomes 00003-of-00016.
    #[arg(long, value_name = "I/N|auto", help_heading = "Input")]
    pub shard: Option<ShardArg>,

    /// Largest document: a file over this size, or a text extracted over it, becomes the
    /// document's error record instead of being read (K/M/G or KiB/MiB/GiB).
    #[arg(
        long,
        default_value = "64MiB",
        value_name = "BYTES",
        help_heading = "Input"
    )]
    pub max_document_bytes: ByteSize,

    /// Memory (address space) of the child process that extracts each HTML or PDF file; a
    /// file that needs more (a decompression bomb) becomes its error record.
    #[arg(
        long,
        default_value = "512MiB",
        value_name = "BYTES",
        help_heading = "Input"
    )]
    pub extract_memory: ByteSize,

    /// Seconds the extraction of one HTML or PDF file may take before it is stopped and
    /// becomes the document's error record.
    #[arg(
        long,
        default_value_t = 60,
        value_name = "SECONDS",
        help_heading = "Input"
    )]
    pub extract_timeout: u64,
}

const MERGE_EXIT_CODES: &str = "Exit codes:
  0  merged (with --allow-partial: what was there; the missing shards are logged and in --report)
  2  refused or failed: a shard missing, foreign (another run, another N, a record of another
     shard), given twice, still being written, or of another format; OUT not writable. OUT is
     written to a temporary file beside it and renamed: it is never left half-written.";

/// `merge OUT SHARDS...`.
#[derive(Debug, Args)]
pub struct MergeArgs {
    /// The merged output (CSV or JSONL, as its extension or --format says).
    #[arg(value_name = "OUT")]
    pub output: PathBuf,

    /// The shard outputs: files named by `--shard I/N -o NAME-{shard}.EXT` (…-00003-of-00016…).
    #[arg(required = true, value_name = "SHARD_OUTPUTS")]
    pub shards: Vec<PathBuf>,

    /// Merge even when some of the N shards are missing (they are listed).
    #[arg(long)]
    pub allow_partial: bool,

    /// Format of OUT and the shard outputs [default: from OUT's extension, else jsonl].
    #[arg(long, value_enum)]
    pub format: Option<Format>,

    /// Write the merged report as JSON to this file.
    #[arg(long)]
    pub report: Option<PathBuf>,

    /// The shard runs' --report files, whose timings go into the merged report (give it last:
    /// it takes every file after it).
    #[arg(long, num_args = 1.., value_name = "SHARD_REPORTS")]
    pub shard_reports: Vec<PathBuf>,
}

/// `extract-text`: the child process that reads one HTML or PDF file under limits (internal).
#[derive(Debug, Args)]
pub struct ExtractTextArgs {
    #[arg(long)]
    pub kind: String,
    #[arg(long)]
    pub max_document_bytes: u64,
    #[arg(long)]
    pub memory: u64,
    #[arg(long)]
    pub cpu_seconds: u64,
    pub path: PathBuf,
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

    /// Multiply weights with activations rounded to 8 bits, as llama.cpp does (every row of
    /// Q4_0, Q4_1, Q4_K; prompt rows of Q5_0, Q5_1, Q2_K, Q3_K, Q5_K, Q6_K): faster prefill
    /// and batched decode on the CPU, but answers may differ from the default's where the
    /// model hesitates (README "8-bit activations").
    #[arg(long)]
    pub int8: bool,
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

    /// Fields for the extract prompt, comma separated: the answer is a JSON object of exactly
    /// these keys, each a string or null.
    #[arg(long, value_delimiter = ',')]
    pub fields: Vec<String>,

    /// A JSON Schema the answers of `extract` (or a template using `fields`/`schema`) must
    /// follow: generation is constrained so the output is always valid JSON of that schema
    /// (object, properties, required, string/number/integer/boolean/null, enum, array with
    /// items/maxItems, nested objects, additionalProperties false).
    #[arg(long, value_name = "FILE")]
    pub schema: Option<PathBuf>,

    /// System message (default: the chat template's own).
    #[arg(long)]
    pub system: Option<String>,

    /// A chat template file (Jinja, like a tokenizer_config.json's `chat_template`) used instead
    /// of the model's `tokenizer.chat_template` [default: the model's, else ChatML].
    #[arg(long, value_name = "FILE")]
    pub chat_template: Option<PathBuf>,

    /// Label answers: divide each label's probability by its probability for a content-free
    /// document ("N/A"), so that the prompt's and model's bias toward a label does not decide
    /// the answer ("Calibrate Before Use"); the answer is the label that gains most. Off by
    /// default: on sample-data/labeled it did not help the default model (README).
    #[arg(long, value_enum, default_value_t = Switch::Off)]
    pub calibrate: Switch,
}

#[derive(Debug, Args)]
#[command(next_help_heading = "Engine")]
pub struct EngineArgs {
    /// Sequences decoded at the same time, their KV caches batched into shared forward passes;
    /// `auto`: the most that fit in available memory, at most 16 (where aggregate decode
    /// stopped rising on the machines measured, see BENCHMARKS.md).
    #[arg(long, default_value = "4", value_parser = parse_sequences)]
    pub sequences: SequencesArg,

    /// One sequence at a time, same engine (the baseline for speedup comparisons).
    #[arg(long, conflicts_with = "sequences")]
    pub sequential: bool,

    /// Most tokens in one forward pass (prompts are prefilled in chunks of this size).
    #[arg(long, default_value_t = 512)]
    pub batch_size: usize,

    /// Context positions per sequence [default: min(model context, 4096)].
    #[arg(long)]
    pub ctx_size: Option<usize>,

    /// Compute the prompt start every job of a template shares (chat template, instruction,
    /// labels) once and copy its KV cache rows into each job's slot, instead of prefilling it
    /// per document. The records are the same either way.
    #[arg(long, value_enum, default_value_t = Switch::On)]
    pub prefix_cache: Switch,
}

#[derive(Debug, Args)]
#[command(next_help_heading = "Engine")]
pub struct BenchEngineArgs {
    /// The values of K to measure, comma separated, each run on the same jobs; speedups are
    /// relative to the first.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "1,2,4,8",
        value_name = "K,K,..."
    )]
    pub sequences: Vec<usize>,

    /// Most tokens in one forward pass (prompts are prefilled in chunks of this size).
    #[arg(long, default_value_t = 512)]
    pub batch_size: usize,

    /// Context positions per sequence [default: min(model context, 4096)].
    #[arg(long)]
    pub ctx_size: Option<usize>,

    /// Compute the prompt start every job of a template shares (chat template, instruction,
    /// labels) once and copy its KV cache rows into each job's slot, instead of prefilling it
    /// per document. The records are the same either way.
    #[arg(long, value_enum, default_value_t = Switch::On)]
    pub prefix_cache: Switch,
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

    /// Penalize tokens that would repeat an earlier run of the answer (the DRY sampler of
    /// llama.cpp, over the answer's tokens): small models' greedy answers otherwise loop.
    /// Deterministic; label answers are not affected.
    #[arg(long, value_enum, default_value_t = Switch::On)]
    pub repeat_guard: Switch,

    /// Repeat guard: the penalty of a repeat one token past --dry-allowed-length.
    #[arg(long, default_value_t = 0.8)]
    pub dry_multiplier: f32,

    /// Repeat guard: how much the penalty grows per further repeated token.
    #[arg(long, default_value_t = 1.75)]
    pub dry_base: f32,

    /// Repeat guard: repeats of up to this many tokens are free.
    #[arg(long, default_value_t = 2)]
    pub dry_allowed_length: usize,

    /// Keep generating to --max-tokens, ignoring end-of-generation tokens (benchmarks).
    #[arg(long)]
    pub ignore_eos: bool,

    /// A document whose prompt does not fit --ctx-size minus --max-tokens: chunk reads it
    /// whole, in parts that run as parallel sequences, their answers merged into one record;
    /// truncate keeps its start (status truncated); skip and error do not run it (status
    /// error; skip leaves the exit code alone, error makes it 1).
    #[arg(long, value_enum, default_value_t = Overflow::Chunk)]
    pub overflow: Overflow,

    /// --overflow chunk: the most document tokens in a chunk (fewer where the context holds
    /// fewer). Smaller chunks prefill faster (attention grows with the position), and more
    /// of them fill the --sequences slots; larger ones mean fewer answers to merge.
    #[arg(long, default_value_t = 2048, value_name = "N", value_parser = clap::value_parser!(u32).range(64..))]
    pub chunk_tokens: u32,

    /// --overflow chunk: tokens each chunk repeats from the end of the one before (at most a
    /// quarter of a chunk).
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub chunk_overlap: usize,

    /// --overflow chunk: the template that merges the chunks' free-text answers, level by
    /// level (it gets `task`, `parts` and the answers as `document`) [default: the built-in
    /// prompts/reduce.j2].
    #[arg(long, value_name = "FILE")]
    pub reduce_prompt: Option<PathBuf>,
}

#[derive(Debug, Args)]
#[command(next_help_heading = "Output")]
pub struct OutputArgs {
    /// Output file, or - for stdout. An existing file is replaced only when the run starts
    /// writing, after the model has loaded: a run that fails to start leaves it untouched.
    #[arg(short, long, default_value = "-")]
    pub output: String,

    /// Keep the records already in --output and append the rest: documents × prompts recorded
    /// with status ok or truncated (same id, source and prompt) are not run again; an
    /// incomplete last record (left by a kill) is removed first. Error records stay and their
    /// documents run again, the new record appended after the old one.
    #[arg(long)]
    pub resume: bool,

    /// Output format [default: from the extension of --output, else jsonl].
    #[arg(long, value_enum)]
    pub format: Option<Format>,
}

#[derive(Debug, Args)]
#[command(next_help_heading = "Report")]
pub struct ReportArgs {
    /// Write the timing report as JSON to this file.
    #[arg(long)]
    pub report: Option<PathBuf>,

    /// No progress bar, no report table on stderr, only errors logged.
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
