//! Wiring: validated config → model → documents → engine → sinks → report → exit code.

use std::cell::Cell;
use std::process::ExitCode;
use std::rc::Rc;
use std::time::Instant;

use anyhow::Context;

use crate::cli::{Cli, Command, RunArgs};
use crate::config::RunConfig;
use crate::device::device_name;
use crate::engine::{Engine, EngineConfig};
use crate::input::documents;
use crate::loaded_model::LoadedModel;
use crate::output::open_sink;
use crate::pipeline::{run_documents, JobSettings};
use crate::prompt::PromptBuilder;
use crate::report::{ReportInputs, RunReport};

/// Exit code of a run where some documents failed.
pub const EXIT_SOME_FAILED: u8 = 1;
/// Exit code of a fatal error.
pub const EXIT_FATAL: u8 = 2;

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Run(args) => run_command(&args),
    }
}

/// Sizes candle's and our thread pools before any work starts.
pub fn init_threads(threads: usize) {
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

fn run_command(args: &RunArgs) -> anyhow::Result<ExitCode> {
    let config = RunConfig::try_from(args)?;
    init_threads(config.model.threads);
    let loaded = LoadedModel::load(&config.model)?;
    let ctx = loaded.context_size(config.ctx_size)?;
    let builders = config
        .prompts
        .iter()
        .map(|p| {
            PromptBuilder::new(
                p,
                loaded.chat_template.as_deref(),
                config.system.clone(),
                config.vars.clone(),
                &loaded.tokenizer,
            )
        })
        .collect::<Result<Vec<_>, _>>()?;

    let mut engine = Engine::new(
        &loaded.model,
        EngineConfig {
            sequences: config.sequences,
            ctx,
            batch_size: config.batch_size,
        },
        loaded.tokenizer.end_of_generation_ids(),
    )?;
    // Opened only now: a failed start never truncates yesterday's results.
    let mut sink = open_sink(&config.output, config.format)
        .with_context(|| format!("cannot write output {}", config.output))?;

    let skipped = Rc::new(Cell::new(0));
    let docs = documents(
        config.inputs.clone(),
        config.fields.clone(),
        skipped.clone(),
    );
    let started = Instant::now();
    let summary = run_documents(
        &mut engine,
        &loaded.tokenizer,
        &builders,
        docs,
        JobSettings {
            ctx,
            max_tokens: config.max_tokens,
            ignore_eos: config.ignore_eos,
            sampling: config.sampling,
        },
        sink.as_mut(),
        &mut |_| {},
    )?;
    let report = RunReport::new(
        ReportInputs {
            model: &loaded.path.display().to_string(),
            device: device_name(&loaded.device),
            sequences: config.sequences,
            batch_size: config.batch_size,
            ctx_size: ctx,
            threads: config.model.threads,
            files_skipped: skipped.get(),
            wall: started.elapsed(),
            load: loaded.load_time,
            kv_bytes_total: engine.cache_bytes(),
        },
        &engine.stats,
        &summary,
    );
    if !config.quiet {
        eprint!("{}", report.table());
    }
    if let Some(path) = &config.report {
        report
            .write_json(path)
            .with_context(|| format!("cannot write report {}", path.display()))?;
    }
    if summary.broken_pipe || summary.failed == 0 {
        Ok(ExitCode::SUCCESS)
    } else {
        Ok(ExitCode::from(EXIT_SOME_FAILED))
    }
}
