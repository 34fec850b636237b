//! The `docanalyze` binary: parse, run, map the outcome to an exit code.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use docanalyze::app::{self, EXIT_FATAL};
use docanalyze::cli::Cli;
use docanalyze::progress::Terminal;

fn main() -> ExitCode {
    // candle attaches a backtrace to its errors whenever RUST_BACKTRACE is set, and prints it as
    // part of their message; an error must stay one line. Panics still honour RUST_BACKTRACE.
    if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
        std::env::set_var("RUST_LIB_BACKTRACE", "0");
    }
    let cli = Cli::parse();
    let (quiet, verbose) = cli
        .report_args()
        .map_or((false, 0), |r| (r.quiet, r.verbose));
    let terminal = Terminal::new(!quiet);
    init_logging(quiet, verbose, &terminal);
    match app::run(cli, &terminal) {
        Ok(code) => code,
        Err(err) => {
            if is_broken_pipe(&err) {
                return ExitCode::SUCCESS;
            }
            terminal.eprint(&format!("docanalyze: error: {err:#}\n"));
            ExitCode::from(EXIT_FATAL)
        }
    }
}

/// Logs go to stderr through `terminal`, so they never tear the progress bar.
fn init_logging(quiet: bool, verbose: u8, terminal: &Terminal) {
    let level = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, _) => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("DOCANALYZE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(terminal.clone())
        .with_ansi(std::io::stderr().is_terminal())
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
