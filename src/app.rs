//! Wiring: validated config → model → documents → engine → sinks → report → exit code.

use std::cell::Cell;
use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;

use crate::bench::{measure, BenchJobs, BenchReport};
use crate::byte_size::ByteSize;
use crate::cli::{BenchArgs, Cli, Command, ExtractTextArgs, InfoArgs, MergeArgs, RunArgs};
use crate::config::{BenchConfig, InfoConfig, JobsConfig, RunConfig};
use crate::device::device_name;
use crate::engine::{Engine, EngineConfig};
use crate::info::ModelInfo;
use crate::input::{
    count_documents, documents, extract_worker_main, Document, Extractor, TextKind,
};
use crate::loaded_model::LoadedModel;
use crate::merge::{merge, MergeConfig};
use crate::output::lock::OutputLock;
use crate::output::{csv_columns, open_sink, sink, ExtraColumns, Format, Sink};
use crate::panic_guard::catch_quietly;
use crate::pipeline::{
    label_priors, run_documents_with, Chunking, JobSettings, RunControl, RunSummary,
};
use crate::progress::Terminal;
use crate::prompt::{Overflow, PromptBuilder, PromptError, PromptVars};
use crate::report::{ReportInputs, RunReport};
use crate::resume::{CompletedJobs, ExistingOutput};
use crate::signals::StopRequest;

/// Exit code of a run where some documents failed.
pub const EXIT_SOME_FAILED: u8 = 1;
/// Exit code of a fatal error.
pub const EXIT_FATAL: u8 = 2;

/// Runs the command; `terminal` is stderr as shared with the log lines.
pub fn run(cli: Cli, terminal: &Terminal) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Run(args) => run_command(&args, terminal),
        Command::Bench(args) => bench_command(&args, terminal),
        Command::Info(args) => info_command(&args),
        Command::Merge(args) => merge_command(&args, terminal),
        Command::ExtractText(args) => extract_text_command(&args),
    }
}

fn merge_command(args: &MergeArgs, terminal: &Terminal) -> anyhow::Result<ExitCode> {
    let config = MergeConfig {
        format: args
            .format
            .unwrap_or_else(|| Format::from_path(&args.output.to_string_lossy())),
        output: args.output.clone(),
        shards: args.shards.clone(),
        allow_partial: args.allow_partial,
        shard_reports: args.shard_reports.clone(),
        report: args.report.clone(),
    };
    let report = merge(&config)?;
    terminal.eprint(&format!(
        "docanalyze merge: {} of {} shards, {} records ({} ok, {} failed; {} earlier attempts dropped) -> {}\n",
        report.shards_merged.len(),
        report.shards,
        report.records,
        report.documents_ok,
        report.documents_failed,
        report.records_superseded,
        config.output.display()
    ));
    Ok(ExitCode::SUCCESS)
}

/// The child process that extracts one file's text under limits (see `input::Extractor`).
fn extract_text_command(args: &ExtractTextArgs) -> anyhow::Result<ExitCode> {
    let kind = TextKind::from_name(&args.kind)
        .with_context(|| format!("unknown document kind `{}`", args.kind))?;
    Ok(extract_worker_main(
        &args.path,
        kind,
        ByteSize(args.max_document_bytes),
        ByteSize(args.memory),
        args.cpu_seconds,
    ))
}

/// Sizes candle's and our thread pools before any work starts.
pub fn init_threads(threads: usize) {
    // Before the pool's threads exist, so that they share the one arena.
    crate::model::keep_freed_memory();
    // candle reads RAYON_NUM_THREADS for its CPU kernels. Its elementwise ops run on a
    // spinning barrier pool that competes with ours for the same cores; they are small next
    // to the matmuls and attention (our rayon pool), so candle gets one thread.
    std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
    let _ = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global();
}

/// The chat template the prompts are wrapped in: `--chat-template`, else the model's.
fn chat_template<'a>(jobs: &'a JobsConfig, loaded: &'a LoadedModel) -> Option<&'a str> {
    match &jobs.chat_template {
        Some((_, source)) => Some(source),
        None => loaded.chat_template.as_deref(),
    }
}

/// One prompt builder per `--prompt`, in the chat template.
fn prompt_builders(jobs: &JobsConfig, loaded: &LoadedModel) -> anyhow::Result<Vec<PromptBuilder>> {
    if chat_template(jobs, loaded).is_none() {
        let (kind, _) = crate::prompt::fallback_chat_template(&loaded.tokenizer);
        tracing::warn!(
            "{} has no chat template: prompts go to it as {kind} (--chat-template FILE gives one)",
            loaded.path.display()
        );
    }
    let builders = jobs
        .prompts
        .iter()
        .map(|p| {
            PromptBuilder::new(
                p,
                chat_template(jobs, loaded),
                jobs.system.clone(),
                jobs.vars.clone(),
                &loaded.tokenizer,
            )
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| match (e, &jobs.chat_template) {
            (e @ PromptError::ChatTemplate { .. }, Some((path, _))) => {
                anyhow::Error::new(e).context(format!("--chat-template {}", path.display()))
            }
            (e @ PromptError::ChatTemplate { .. }, None) => {
                anyhow::Error::new(e).context(format!("model {}", loaded.path.display()))
            }
            (other, _) => other.into(),
        })?;
    Ok(builders)
}

/// Each template's shared prompt prefix, for the engine to compute once (`--prefix-cache on`).
fn shared_prefixes(
    builders: &[PromptBuilder],
    loaded: &LoadedModel,
    on: bool,
) -> anyhow::Result<Vec<Vec<u32>>> {
    if !on {
        return Ok(Vec::new());
    }
    let prefixes = builders
        .iter()
        .map(|b| b.shared_prefix(&loaded.tokenizer))
        .collect::<Result<Vec<_>, _>>()?;
    for (b, p) in builders.iter().zip(&prefixes) {
        tracing::info!(
            "--prefix-cache: prompt `{}` shares {} tokens",
            b.name(),
            p.len()
        );
    }
    Ok(prefixes)
}

fn job_settings(
    jobs: &JobsConfig,
    ctx: usize,
    loaded: &LoadedModel,
) -> anyhow::Result<JobSettings> {
    let chunking = if jobs.overflow == Overflow::Chunk {
        let reduce = PromptBuilder::new(
            &jobs.reduce_prompt,
            chat_template(jobs, loaded),
            jobs.system.clone(),
            PromptVars::default(),
            &loaded.tokenizer,
        )
        .map_err(|e| anyhow::Error::new(e).context("the reduce template (--reduce-prompt)"))?;
        Some(Chunking {
            sizes: crate::chunking::ChunkSizes {
                tokens: jobs.chunk_tokens,
                overlap: jobs.chunk_overlap,
            },
            reduce: Arc::new(reduce),
        })
    } else {
        None
    };
    Ok(JobSettings {
        ctx,
        max_tokens: jobs.max_tokens,
        ignore_eos: jobs.ignore_eos,
        sampling: jobs.sampling,
        overflow: jobs.overflow,
        chunking,
        priors: Vec::new(),
    })
}

/// The documents of the inputs, lazily, those of the shard only when there is one.
fn job_documents(
    jobs: &JobsConfig,
    skipped: Rc<Cell<usize>>,
) -> Box<dyn Iterator<Item = Document>> {
    let extractor = Extractor::child_processes(jobs.extract);
    let docs = documents(jobs.inputs.clone(), jobs.fields.clone(), extractor, skipped);
    match jobs.shard {
        Some(shard) => Box::new(docs.filter(move |d| shard.contains(&d.id))),
        None => Box::new(docs),
    }
}

/// The CSV columns the prompts add: their JSON schemas' properties (each once, in order), then
/// `scores` if one answers with labels.
fn extra_columns(builders: &[PromptBuilder]) -> ExtraColumns {
    let mut properties: Vec<String> = Vec::new();
    for p in builders
        .iter()
        .filter_map(|b| b.json())
        .flat_map(|j| j.properties())
    {
        if !properties.contains(p) {
            properties.push(p.clone());
        }
    }
    ExtraColumns {
        properties,
        scores: builders.iter().any(|b| b.labels().is_some()),
    }
}

/// Opens the output: appended to after its complete records with `--resume`, else replaced.
/// `extra`: the CSV columns after the base ones.
fn open_output(
    config: &RunConfig,
    existing: Option<&ExistingOutput>,
    extra: ExtraColumns,
    terminal: &Terminal,
) -> anyhow::Result<Box<dyn Sink>> {
    let opened = match existing {
        Some(existing) => {
            let columns = csv_columns(&extra);
            if !existing.header.is_empty() && existing.header != columns {
                anyhow::bail!(
                    "--resume: {} has the columns {}, but this run writes {}: resume with the prompts of the run that wrote it",
                    config.output,
                    existing.header.join(","),
                    columns.join(",")
                );
            }
            let file = existing.reopen()?;
            sink(
                Box::new(file),
                config.format,
                existing.needs_header(),
                extra,
            )
        }
        None => open_sink(&config.output, config.format, extra, || terminal.stdout()),
    };
    opened.with_context(|| format!("cannot write output {}", config.output))
}

fn run_command(args: &RunArgs, terminal: &Terminal) -> anyhow::Result<ExitCode> {
    let config = RunConfig::try_from(args)?;
    let jobs = &config.jobs;
    let stop = StopRequest::install().context("installing the SIGINT/SIGTERM handlers")?;
    // One writer per output, from the start: a second run on the same file stops here.
    let mut lock = match config.output.as_str() {
        "-" => None,
        path => Some(OutputLock::acquire(Path::new(path))?),
    };
    // Read before the model loads, so that a file --resume cannot use stops the run at once;
    // written only after, like any output.
    let existing = if config.resume {
        Some(ExistingOutput::scan(
            Path::new(&config.output),
            config.format,
        )?)
    } else {
        None
    };
    init_threads(config.model.threads);
    let loaded = LoadedModel::load(&config.model)?;
    let ctx = loaded.context_size(config.ctx_size)?;
    let builders = prompt_builders(jobs, &loaded)?;
    let sequences = if config.sequences_auto {
        let k = crate::info::auto_sequences(&loaded.model.config, ctx, config.batch_size);
        tracing::info!("--sequences auto: {k} sequences");
        k
    } else {
        config.sequences
    };

    let mut engine = Engine::new(
        &loaded.model,
        EngineConfig {
            sequences,
            ctx,
            batch_size: config.batch_size,
        },
        loaded.tokenizer.end_of_generation_ids(),
    )?;
    engine.set_prefixes(shared_prefixes(&builders, &loaded, config.prefix_cache)?);
    if let Some(signal) = stop.signal() {
        terminal.eprint(&format!(
            "docanalyze: stopped by {} before the first document; the output was not touched\n",
            signal.name()
        ));
        return Ok(ExitCode::from(signal.exit_code()));
    }
    // Opened only now: a failed start never truncates yesterday's results.
    let mut sink = open_output(
        &config,
        existing.as_ref(),
        extra_columns(&builders),
        terminal,
    )?;
    if let Some(lock) = &mut lock {
        lock.keep();
    }
    let completed = existing.as_ref().map(|e| &e.completed);
    if let Some(existing) = &existing {
        tracing::info!(
            "--resume: {} records in {}, {} jobs done",
            existing.records,
            config.output,
            existing.completed.len()
        );
    }

    let skipped = Rc::new(Cell::new(0));
    let docs = job_documents(jobs, skipped.clone());
    // A shard's size is known only by hashing every id: no total then.
    let total = match jobs.shard {
        Some(_) => None,
        None => count_documents(&jobs.inputs)
            .map(|n| (n * builders.len()).saturating_sub(completed.map_or(0, CompletedJobs::len))),
    };
    let unit = if builders.len() == 1 {
        "docs"
    } else {
        "records"
    };
    let mut progress = terminal.progress(total, unit, "");
    let mut settings = job_settings(jobs, ctx, &loaded)?;
    if jobs.calibrate {
        settings.priors = label_priors(&mut engine, &loaded.tokenizer, &builders, ctx)?;
    }
    let started = Instant::now();
    let summary = run_documents_with(
        &mut engine,
        &loaded.tokenizer,
        &builders,
        docs,
        settings,
        sink.as_mut(),
        &mut progress,
        RunControl { completed, stop },
    )?;
    let wall = started.elapsed();
    progress.finish();
    let report = RunReport::new(
        ReportInputs {
            model: &loaded.path.display().to_string(),
            device: device_name(&loaded.device),
            sequences,
            batch_size: config.batch_size,
            ctx_size: ctx,
            threads: config.model.threads,
            files_skipped: skipped.get(),
            wall,
            load: loaded.load_time,
            kv_bytes_total: engine.cache_bytes(),
            shard: jobs.shard.map(|s| s.to_string()),
        },
        &engine.stats,
        &summary,
    );
    // A closed stdout (`| head`) ends the run quietly: no table.
    if !config.quiet && !summary.broken_pipe {
        terminal.eprint(&report.table());
    }
    if let Some(path) = &config.report {
        report
            .write_json(path)
            .with_context(|| format!("cannot write report {}", path.display()))?;
    }
    Ok(run_exit_code(&summary))
}

/// A signal's code first (the run is incomplete, whatever became of its records), then the
/// records': documents skipped by `--overflow skip` are not failures.
fn run_exit_code(summary: &RunSummary) -> ExitCode {
    if let Some(signal) = summary.stopped_by {
        ExitCode::from(signal.exit_code())
    } else if summary.broken_pipe || summary.failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_SOME_FAILED)
    }
}

fn bench_command(args: &BenchArgs, terminal: &Terminal) -> anyhow::Result<ExitCode> {
    let config = BenchConfig::try_from(args)?;
    let jobs = &config.jobs;
    init_threads(config.model.threads);
    let loaded = LoadedModel::load(&config.model)?;
    let ctx = loaded.context_size(config.ctx_size)?;
    let builders = prompt_builders(jobs, &loaded)?;
    // Read once, so every K sees the same documents (stdin included) and no K pays for I/O.
    let skipped = Rc::new(Cell::new(0));
    let docs: Vec<_> = job_documents(jobs, skipped).collect();
    let bench = BenchJobs {
        loaded: &loaded,
        builders: &builders,
        documents: &docs,
        settings: job_settings(jobs, ctx, &loaded)?,
        batch_size: config.batch_size,
        threads: config.model.threads,
        prefixes: shared_prefixes(&builders, &loaded, config.prefix_cache)?,
        calibrate: jobs.calibrate,
    };
    let runs = config
        .sequences
        .iter()
        .map(|&k| measure(&bench, k, terminal))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let report = BenchReport::new(&bench, &runs);
    if !report.outputs_identical {
        tracing::warn!("the records differ between values of --sequences");
    }
    std::io::stdout()
        .write_all(report.table().as_bytes())
        .context("writing the table")?;
    if let Some(path) = &config.report {
        report
            .write_json(path)
            .with_context(|| format!("cannot write report {}", path.display()))?;
    }
    if report.documents_failed() == 0 {
        Ok(ExitCode::SUCCESS)
    } else {
        Ok(ExitCode::from(EXIT_SOME_FAILED))
    }
}

fn info_command(args: &InfoArgs) -> anyhow::Result<ExitCode> {
    let config = InfoConfig::try_from(args)?;
    let path = config.model.resolve()?;
    let info = catch_quietly(|| {
        ModelInfo::read(
            &path,
            config.ctx_size,
            config.batch_size,
            config.memory_budget,
        )
    })
    .map_err(|panic| {
        anyhow::anyhow!(
            "{} is not a model this program can read (its reader failed: {panic})",
            path.display()
        )
    })??;
    let text = if config.json {
        serde_json::to_string_pretty(&info)? + "\n"
    } else {
        info.table()
    };
    std::io::stdout()
        .write_all(text.as_bytes())
        .context("writing the model description")?;
    Ok(ExitCode::SUCCESS)
}
