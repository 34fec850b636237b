//! What the user asked for, validated and resolved: the one place flags are checked against
//! each other.

use std::path::{Path, PathBuf};

use crate::cli::{
    BenchArgs, DeviceArg, GenerationArgs, InfoArgs, InputArgs, PromptArgs, RunArgs, SequencesArg,
};
use crate::info::MemoryBudget;
use crate::input::{is_jsonl, ExtractLimits, InputSpec, JsonlFields, TextKind};
use crate::model_source::ModelRef;
use crate::output::Format;
use crate::prompt::{Overflow, PromptTemplate, PromptVars, REDUCE_PROMPT};
use crate::sampler::{RepeatGuard, SamplingParams};
use crate::shard::{Shard, SHARD_PLACEHOLDER};

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
    /// `--int8`: 8-bit activations ([`crate::model::set_int8_activations`]).
    pub int8: bool,
}

/// The jobs of a run: which documents, which prompts, how each answer is generated.
#[derive(Debug, Clone)]
pub struct JobsConfig {
    pub inputs: Vec<InputSpec>,
    pub fields: JsonlFields,
    pub prompts: Vec<PromptTemplate>,
    pub vars: PromptVars,
    pub system: Option<String>,
    /// `--chat-template FILE`: its path and text.
    pub chat_template: Option<(PathBuf, String)>,
    pub max_tokens: usize,
    pub ignore_eos: bool,
    pub sampling: SamplingParams,
    pub overflow: Overflow,
    /// `--chunk-tokens`.
    pub chunk_tokens: usize,
    /// `--chunk-overlap`.
    pub chunk_overlap: usize,
    /// The template of `--overflow chunk`'s reduce calls.
    pub reduce_prompt: PromptTemplate,
    /// Only the documents of this shard.
    pub shard: Option<Shard>,
    /// Bounds on reading each document.
    pub extract: ExtractLimits,
    /// Calibrate label answers by a content-free input (`--calibrate`).
    pub calibrate: bool,
}

/// Below this an extraction child cannot even start (its binary and stack are mapped too).
const MIN_EXTRACT_MEMORY: u64 = 64 << 20;

/// `path` with `{shard}` expanded; an error when there is no shard to expand it to.
fn expand_shard(path: &str, flag: &str, shard: Option<Shard>) -> Result<String, ConfigError> {
    match shard {
        Some(shard) => Ok(shard.expand(path)),
        None if path.contains(SHARD_PLACEHOLDER) => err(format!(
            "{flag} {path} contains {SHARD_PLACEHOLDER} but no --shard is given"
        )),
        None => Ok(path.to_string()),
    }
}

/// The values templates get: labels, fields (from `--fields`, else the schema's top-level
/// properties), the schema.
fn prompt_vars(prompt: &PromptArgs) -> Result<PromptVars, ConfigError> {
    let schema = match &prompt.schema {
        Some(path) => Some(read_schema(path)?),
        None => None,
    };
    let fields = match (&schema, prompt.fields.is_empty()) {
        (Some(schema), true) => schema
            .get("properties")
            .and_then(serde_json::Value::as_object)
            .map(|p| p.keys().cloned().collect())
            .unwrap_or_default(),
        _ => prompt.fields.clone(),
    };
    let schema_source = match &prompt.schema {
        Some(path) => format!("--schema {}", path.display()),
        None if !prompt.fields.is_empty() => "--fields".to_string(),
        None => String::new(),
    };
    Ok(PromptVars {
        labels: prompt.labels.clone(),
        fields,
        schema,
        schema_source,
    })
}

/// `--schema FILE`: a JSON document, or an error naming the file.
fn read_schema(path: &Path) -> Result<serde_json::Value, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError(format!("--schema {}: {e}", path.display())))?;
    serde_json::from_str(&text)
        .map_err(|e| ConfigError(format!("--schema {}: not JSON: {e}", path.display())))
}

/// Labels must be non-empty and distinct ignoring case (an answer is matched whatever its
/// case).
fn check_labels(labels: &[String]) -> Result<(), ConfigError> {
    for (i, label) in labels.iter().enumerate() {
        if label.trim().is_empty() {
            return err(format!("--labels: label {} is empty", i + 1));
        }
        if let Some(twin) = labels[..i]
            .iter()
            .find(|l| l.to_lowercase() == label.to_lowercase())
        {
            return err(format!(
                "--labels: `{label}` is given twice (as `{twin}`; labels are matched ignoring case)"
            ));
        }
    }
    Ok(())
}

/// A validated `run`.
#[derive(Debug, Clone)]
pub struct RunConfig {
    pub jobs: JobsConfig,
    pub model: ModelConfig,
    /// Compute each template's shared prompt prefix once (`--prefix-cache`).
    pub prefix_cache: bool,
    pub sequences: usize,
    /// `--sequences auto`: `sequences` is the cap, resolved against memory after loading.
    pub sequences_auto: bool,
    pub batch_size: usize,
    /// Resolved against the model's context once it is loaded.
    pub ctx_size: Option<usize>,
    pub output: String,
    pub format: Format,
    /// Append to the output, skipping the jobs it holds.
    pub resume: bool,
    pub report: Option<PathBuf>,
    pub quiet: bool,
}

/// A validated `bench`.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    pub jobs: JobsConfig,
    pub model: ModelConfig,
    /// The values of K, in the order given; the first is the speedup baseline.
    pub sequences: Vec<usize>,
    pub prefix_cache: bool,
    pub batch_size: usize,
    pub ctx_size: Option<usize>,
    pub report: Option<PathBuf>,
}

/// A validated `info`.
#[derive(Debug, Clone)]
pub struct InfoConfig {
    pub model: ModelRef,
    pub ctx_size: Option<usize>,
    pub batch_size: usize,
    pub memory_budget: MemoryBudget,
    pub json: bool,
}

pub fn model_config(args: &crate::cli::ModelArgs) -> Result<ModelConfig, ConfigError> {
    let model = model_ref(args.model.as_deref())?;
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
        int8: args.int8,
    })
}

fn model_ref(arg: Option<&str>) -> Result<ModelRef, ConfigError> {
    ModelRef::parse(arg).map_err(|e| ConfigError(format!("--model: {e}")))
}

/// Checks `--sequences` (the largest K of the run), `--batch-size` and `--ctx-size`.
fn check_engine(
    sequences: usize,
    batch_size: usize,
    ctx: Option<usize>,
) -> Result<(), ConfigError> {
    if sequences == 0 {
        return err("--sequences must be at least 1");
    }
    if batch_size == 0 {
        return err("--batch-size must be at least 1");
    }
    if batch_size < sequences {
        return err(format!(
            "--batch-size {batch_size} is smaller than --sequences {sequences}: every sequence needs a row in each step"
        ));
    }
    if ctx == Some(0) {
        return err("--ctx-size must be at least 1");
    }
    Ok(())
}

/// The output's folder must exist: said now, not after the model has loaded.
fn check_output_folder(output: &Path) -> Result<(), ConfigError> {
    match output.parent() {
        Some(dir) if !dir.as_os_str().is_empty() && !dir.is_dir() => err(format!(
            "--output {}: the folder {} does not exist",
            output.display(),
            dir.display()
        )),
        _ => Ok(()),
    }
}

/// The output must not be one of the inputs (it would be truncated) nor a document of an input
/// directory (the run would read its own records as documents, without end).
fn check_output_outside_inputs(output: &Path, inputs: &[InputSpec]) -> Result<(), ConfigError> {
    let hidden = output
        .file_name()
        .is_some_and(|n| n.as_encoded_bytes().starts_with(b"."));
    let readable = !hidden && (is_jsonl(output) || TextKind::of(output).is_some());
    let Some(parent) = output.parent() else {
        return Ok(());
    };
    let parent = if parent.as_os_str().is_empty() {
        Path::new(".")
    } else {
        parent
    };
    let Ok(dir) = parent.canonicalize() else {
        return Ok(()); // an unwritable output is reported when it is opened
    };
    let Some(name) = output.file_name() else {
        return Ok(());
    };
    // An existing output may be a link to an input.
    let output = dir.join(name).canonicalize().unwrap_or(dir.join(name));
    for input in inputs {
        let (path, is_dir) = match input {
            InputSpec::Dir(p) => (p, true),
            InputSpec::File(p) | InputSpec::Jsonl(p) => (p, false),
            InputSpec::Stdin => continue,
        };
        let Ok(path) = path.canonicalize() else {
            continue;
        };
        if is_dir && readable && output.starts_with(&path) {
            return err(format!(
                "--output {} is inside the input folder {}, where the run would read it as a document: write it somewhere else",
                output.display(),
                path.display()
            ));
        }
        if !is_dir && output == path {
            return err(format!(
                "--output {} is also an input: write it somewhere else",
                output.display()
            ));
        }
    }
    Ok(())
}

/// The template of the reduce calls: `--reduce-prompt FILE`, else the built-in one.
fn reduce_prompt(g: &GenerationArgs) -> Result<PromptTemplate, ConfigError> {
    let Some(path) = &g.reduce_prompt else {
        return Ok(PromptTemplate::from_source("reduce", REDUCE_PROMPT));
    };
    if g.overflow != Overflow::Chunk {
        return err("--reduce-prompt is used only with --overflow chunk");
    }
    match std::fs::read_to_string(path) {
        Ok(source) => Ok(PromptTemplate::from_source(
            &path.display().to_string(),
            &source,
        )),
        Err(e) => err(format!("--reduce-prompt {}: {e}", path.display())),
    }
}

fn jobs_config(
    input: &InputArgs,
    prompt: &PromptArgs,
    g: &GenerationArgs,
) -> Result<JobsConfig, ConfigError> {
    if g.max_tokens == 0 {
        return err("--max-tokens must be at least 1");
    }
    if !(g.temperature >= 0.0 && g.temperature.is_finite()) {
        return err("--temperature must be a number >= 0");
    }
    if !(g.top_p > 0.0 && g.top_p <= 1.0) {
        return err("--top-p must be in (0, 1]");
    }
    if !(g.dry_multiplier >= 0.0 && g.dry_multiplier.is_finite()) {
        return err("--dry-multiplier must be a number >= 0");
    }
    if !(g.dry_base >= 1.0 && g.dry_base.is_finite()) {
        return err("--dry-base must be a number >= 1");
    }
    let prompts = prompt
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
    check_labels(&prompt.labels)?;
    if prompt.prompts.iter().any(|p| p == "classify") && prompt.labels.is_empty() {
        return err("--prompt classify needs --labels a,b,c");
    }
    if prompt.prompts.iter().any(|p| p == "extract")
        && prompt.fields.is_empty()
        && prompt.schema.is_none()
    {
        return err("--prompt extract needs --fields name,date,... or --schema FILE");
    }
    let inputs = input
        .inputs
        .iter()
        .map(|i| InputSpec::classify(i).map_err(|e| ConfigError(e.to_string())))
        .collect::<Result<Vec<_>, _>>()?;
    if inputs.iter().filter(|i| **i == InputSpec::Stdin).count() > 1 {
        return err("- (stdin) can be given only once");
    }
    if input.extract_timeout == 0 {
        return err("--extract-timeout must be at least 1 second");
    }
    if input.extract_memory.0 < MIN_EXTRACT_MEMORY {
        return err(format!(
            "--extract-memory {} is too small for the extraction process: give at least 64 MiB",
            input.extract_memory
        ));
    }
    Ok(JobsConfig {
        inputs,
        fields: JsonlFields {
            text: input.text_field.clone(),
            id: input.id_field.clone(),
            gold: input.gold_field.clone(),
        },
        prompts,
        vars: prompt_vars(prompt)?,
        system: prompt.system.clone(),
        chat_template: match &prompt.chat_template {
            Some(path) => Some((
                path.clone(),
                std::fs::read_to_string(path)
                    .map_err(|e| ConfigError(format!("--chat-template {}: {e}", path.display())))?,
            )),
            None => None,
        },
        max_tokens: g.max_tokens,
        ignore_eos: g.ignore_eos,
        sampling: SamplingParams {
            temperature: g.temperature,
            top_k: g.top_k,
            top_p: g.top_p,
            seed: g.seed,
            repeat_guard: g.repeat_guard.is_on().then_some(RepeatGuard {
                multiplier: g.dry_multiplier,
                base: g.dry_base,
                allowed_length: g.dry_allowed_length,
            }),
        },
        overflow: g.overflow,
        chunk_tokens: g.chunk_tokens as usize,
        chunk_overlap: g.chunk_overlap,
        reduce_prompt: reduce_prompt(g)?,
        shard: input
            .shard
            .map(|s| s.resolve())
            .transpose()
            .map_err(ConfigError)?,
        calibrate: prompt.calibrate.is_on(),
        extract: ExtractLimits {
            max_document_bytes: input.max_document_bytes,
            memory: input.extract_memory,
            timeout: std::time::Duration::from_secs(input.extract_timeout),
        },
    })
}

impl TryFrom<&RunArgs> for RunConfig {
    type Error = ConfigError;

    fn try_from(args: &RunArgs) -> Result<Self, ConfigError> {
        let e = &args.engine;
        let (sequences, sequences_auto) = match (e.sequential, e.sequences) {
            (true, _) => (1, false),
            (false, SequencesArg::Count(n)) => (n, false),
            (false, SequencesArg::Auto) => (crate::info::AUTO_MAX_SEQUENCES, true),
        };
        check_engine(sequences, e.batch_size, e.ctx_size)?;
        let jobs = jobs_config(&args.input, &args.prompt, &args.generation)?;
        let o = &args.output;
        let output = expand_shard(&o.output, "--output", jobs.shard)?;
        let report = args
            .report
            .report
            .as_ref()
            .map(|r| expand_shard(&r.to_string_lossy(), "--report", jobs.shard).map(PathBuf::from))
            .transpose()?;
        if output != "-" {
            check_output_folder(Path::new(&output))?;
            check_output_outside_inputs(Path::new(&output), &jobs.inputs)?;
        } else if o.resume {
            return err("--resume needs --output FILE: it reads what the earlier run wrote there");
        }
        Ok(Self {
            jobs,
            model: model_config(&args.model)?,
            prefix_cache: e.prefix_cache.is_on(),
            sequences,
            sequences_auto,
            batch_size: e.batch_size,
            ctx_size: e.ctx_size,
            format: o.format.unwrap_or_else(|| Format::from_path(&output)),
            output,
            resume: o.resume,
            report,
            quiet: args.report.quiet,
        })
    }
}

impl TryFrom<&BenchArgs> for BenchConfig {
    type Error = ConfigError;

    fn try_from(args: &BenchArgs) -> Result<Self, ConfigError> {
        let e = &args.engine;
        if e.sequences.is_empty() {
            return err("--sequences needs at least one value");
        }
        let smallest = e.sequences.iter().copied().min().unwrap_or(0);
        let largest = e.sequences.iter().copied().max().unwrap_or(0);
        check_engine(smallest, e.batch_size, e.ctx_size)?;
        check_engine(largest, e.batch_size, e.ctx_size)?;
        let jobs = jobs_config(&args.input, &args.prompt, &args.generation)?;
        Ok(Self {
            jobs,
            model: model_config(&args.model)?,
            sequences: e.sequences.clone(),
            prefix_cache: e.prefix_cache.is_on(),
            batch_size: e.batch_size,
            ctx_size: e.ctx_size,
            report: args.report.report.clone(),
        })
    }
}

impl TryFrom<&InfoArgs> for InfoConfig {
    type Error = ConfigError;

    fn try_from(args: &InfoArgs) -> Result<Self, ConfigError> {
        check_engine(1, args.batch_size, args.ctx_size)?;
        Ok(Self {
            model: model_ref(args.model.as_deref())?,
            ctx_size: args.ctx_size,
            batch_size: args.batch_size,
            memory_budget: args.memory_budget,
            json: args.json,
        })
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command};

    fn run_config(args: &[&str]) -> Result<RunConfig, ConfigError> {
        let cli = Cli::try_parse_from([&["docanalyze", "run"], args].concat()).expect("parses");
        match &cli.command {
            Command::Run(run) => RunConfig::try_from(run),
            _ => unreachable!("a run command"),
        }
    }

    #[test]
    fn sequences_auto_is_resolved_after_loading_with_a_cap() {
        let auto = run_config(&["-", "--sequences", "auto"]).expect("valid");
        assert!(auto.sequences_auto);
        assert_eq!(auto.sequences, crate::info::AUTO_MAX_SEQUENCES);
        let fixed = run_config(&["-", "--sequences", "3"]).expect("valid");
        assert!(!fixed.sequences_auto);
        assert_eq!(fixed.sequences, 3);
        assert!(Cli::try_parse_from(["docanalyze", "run", "-", "--sequences", "many"]).is_err());
    }

    fn bench_config(args: &[&str]) -> Result<BenchConfig, ConfigError> {
        let cli = Cli::try_parse_from([&["docanalyze", "bench"], args].concat()).expect("parses");
        match &cli.command {
            Command::Bench(bench) => BenchConfig::try_from(bench),
            _ => unreachable!("a bench command"),
        }
    }

    fn message<T: std::fmt::Debug>(result: Result<T, ConfigError>) -> String {
        result.expect_err("refused").0
    }

    #[test]
    fn engine_sizes_must_be_positive() {
        assert!(message(run_config(&["-", "--sequences", "0"])).contains("--sequences"));
        assert!(message(run_config(&["-", "--batch-size", "0"])).contains("--batch-size"));
        assert!(message(run_config(&["-", "--ctx-size", "0"])).contains("--ctx-size"));
        assert!(message(run_config(&["-", "--max-tokens", "0"])).contains("--max-tokens"));
        assert!(message(bench_config(&["-", "--sequences", "1,0"])).contains("--sequences"));
        assert!(message(bench_config(&[
            "-",
            "--sequences",
            "8",
            "--batch-size",
            "4"
        ]))
        .contains("--batch-size"));
    }

    #[test]
    fn resume_needs_an_output_file() {
        assert!(message(run_config(&["-", "--resume"])).contains("--resume"));
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("out.jsonl");
        let config = run_config(&["-", "--resume", "-o", out.to_str().expect("utf-8")]);
        assert!(config.expect("valid").resume);
    }

    #[test]
    fn shard_and_overflow_are_parsed() {
        let config = run_config(&["-", "--shard", "1/4", "--overflow", "skip"]).expect("valid");
        assert_eq!(config.jobs.shard, Some(Shard { index: 1, count: 4 }));
        assert_eq!(config.jobs.overflow, Overflow::Skip);
        let refused = Cli::try_parse_from(["docanalyze", "run", "-", "--shard", "3/2"]);
        assert!(refused
            .expect_err("refused")
            .to_string()
            .contains("--shard"));
    }

    #[test]
    fn bench_keeps_the_order_of_k() {
        let config = bench_config(&["-", "--sequences", "4,1,2"]).expect("valid");
        assert_eq!(config.sequences, [4, 1, 2]);
        assert_eq!(bench_config(&["-"]).expect("valid").sequences, [1, 2, 4, 8]);
    }

    #[test]
    fn format_comes_from_the_output_extension() {
        let dir = tempfile::tempdir().expect("tempdir");
        let csv = dir.path().join("out.csv");
        let config = run_config(&["-", "-o", csv.to_str().expect("utf-8")]).expect("valid");
        assert_eq!(config.format, Format::Csv);
        assert_eq!(run_config(&["-"]).expect("valid").format, Format::Jsonl);
        let forced = run_config(&["-", "-o", csv.to_str().expect("utf-8"), "--format", "jsonl"]);
        assert_eq!(forced.expect("valid").format, Format::Jsonl);
    }

    #[test]
    fn output_inside_an_input_folder_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let docs = dir.path().join("docs");
        std::fs::create_dir(&docs).expect("mkdir");
        let doc = docs.join("a.txt");
        std::fs::write(&doc, "text").expect("write");
        let s = |p: &Path| p.to_str().expect("utf-8").to_string();
        let inside = s(&docs.join("out.jsonl"));
        assert!(message(run_config(&[&s(&docs), "-o", &inside])).contains("inside the input"));
        assert!(message(run_config(&[&s(&doc), "-o", &s(&doc)])).contains("also an input"));
        // Files the walk would not read are fine, and so is a sibling folder.
        assert!(run_config(&[&s(&docs), "-o", &s(&docs.join(".out.csv"))]).is_ok());
        assert!(run_config(&[&s(&docs), "-o", &s(&docs.join("out.log"))]).is_ok());
        assert!(run_config(&[&s(&docs), "-o", &s(&dir.path().join("out.csv"))]).is_ok());
    }
}
