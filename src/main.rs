//! The `docanalyze` binary: parse, run, map the outcome to an exit code.

use std::process::ExitCode;

use clap::Parser;
use docanalyze::app::{self, EXIT_FATAL};
use docanalyze::cli::Cli;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli);
    match app::run(cli) {
        Ok(code) => code,
        Err(err) => {
            if is_broken_pipe(&err) {
                return ExitCode::SUCCESS;
            }
            eprintln!("docanalyze: error: {err:#}");
            ExitCode::from(EXIT_FATAL)
        }
    }
}

fn init_logging(cli: &Cli) {
    let docanalyze::cli::Command::Run(args) = &cli.command;
    let level = match (args.output.quiet, args.output.verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, _) => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("DOCANALYZE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .without_time()
        .init();
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
