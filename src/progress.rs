//! The progress bar on stderr (indicatif), and the log writer that keeps log lines from tearing
//! it. Hidden when stderr is not a terminal or with `--quiet`.

use std::io::{self, IsTerminal, Write};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::output::Record;
use crate::pipeline::RunObserver;

/// stderr as shared by the progress bars and the log lines: a line is written while the bars
/// are cleared, then they are drawn again below it.
#[derive(Clone)]
pub struct Terminal {
    bars: MultiProgress,
}

impl Terminal {
    /// Bars are drawn only when `show_bars` and stderr is a terminal.
    pub fn new(show_bars: bool) -> Self {
        let target = if show_bars && io::stderr().is_terminal() {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        Self {
            bars: MultiProgress::with_draw_target(target),
        }
    }

    /// A progress bar for `total` records (a spinner with counts when the total is unknown).
    /// `unit` names what is counted, `label` says which run it is (bench: the K).
    pub fn progress(&self, total: Option<usize>, unit: &str, label: &str) -> Progress {
        let (bar, template) = match total {
            Some(n) => (
                ProgressBar::new(n as u64),
                format!("{{prefix}}{{spinner}} [{{bar:30}}] {{pos}}/{{len}} {unit}  {{msg}}  ETA {{eta}}"),
            ),
            None => (
                ProgressBar::new_spinner(),
                format!("{{prefix}}{{spinner}} {{pos}} {unit}  {{msg}}  {{elapsed}}"),
            ),
        };
        let style = ProgressStyle::with_template(&template)
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
        let bar = self.bars.add(bar.with_style(style));
        if !label.is_empty() {
            bar.set_prefix(format!("{label} "));
        }
        if !self.bars.is_hidden() {
            bar.enable_steady_tick(Duration::from_millis(200));
        }
        Progress {
            bar,
            started: Instant::now(),
            tokens: 0,
        }
    }

    /// stdout for the records. When it is the terminal the bars are drawn on, each write clears
    /// the bars first and draws them again below the new line.
    pub fn stdout(&self) -> Box<dyn Write> {
        if !self.bars.is_hidden() && io::stdout().is_terminal() {
            Box::new(SharedStdout {
                bars: self.bars.clone(),
            })
        } else {
            Box::new(io::stdout().lock())
        }
    }

    /// Writes `text` to stderr without tearing a bar.
    pub fn eprint(&self, text: &str) {
        self.bars.suspend(|| {
            let _ = io::stderr().write_all(text.as_bytes());
        });
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Terminal {
    type Writer = LogLine;

    fn make_writer(&'a self) -> LogLine {
        LogLine {
            bars: self.bars.clone(),
            text: Vec::new(),
        }
    }
}

/// stdout on the terminal of the bars.
struct SharedStdout {
    bars: MultiProgress,
}

impl Write for SharedStdout {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.bars.suspend(|| {
            let mut out = io::stdout().lock();
            out.write_all(buf)?;
            out.flush()
        })?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        io::stdout().flush()
    }
}

/// One log event, written to stderr in one piece when dropped.
pub struct LogLine {
    bars: MultiProgress,
    text: Vec<u8>,
}

impl Write for LogLine {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.text.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for LogLine {
    fn drop(&mut self) {
        if self.text.is_empty() {
            return;
        }
        let text = std::mem::take(&mut self.text);
        self.bars.suspend(|| {
            // A log line that cannot be written has nowhere else to go.
            let _ = io::stderr().write_all(&text);
        });
    }
}

/// The bar of one run: records done, tokens per second, sequences in flight, ETA.
pub struct Progress {
    bar: ProgressBar,
    started: Instant,
    /// Tokens computed by the engine's forward passes so far (prompt and generated rows).
    tokens: usize,
}

impl Progress {
    /// Removes the bar, leaving stderr as it was.
    pub fn finish(self) {
        self.bar.finish_and_clear();
    }

    fn show(&self, in_flight: usize) {
        self.bar
            .set_message(status_line(self.tokens, self.started.elapsed(), in_flight));
    }
}

impl RunObserver for Progress {
    fn job_started(&mut self, in_flight: usize) {
        self.show(in_flight);
    }

    fn record_finished(&mut self, _record: &Record, in_flight: usize) {
        self.bar.inc(1);
        self.show(in_flight);
    }

    fn step_done(&mut self, tokens: usize, in_flight: usize) {
        self.tokens += tokens;
        self.show(in_flight);
    }
}

/// `"123 tok/s, 4 active"`: the engine's throughput so far (prompt and generated tokens
/// over the time so far) and the sequences in the engine now.
pub fn status_line(tokens: usize, elapsed: Duration, in_flight: usize) -> String {
    let s = elapsed.as_secs_f64();
    let rate = if s > 0.0 { tokens as f64 / s } else { 0.0 };
    format!("{rate:.0} tok/s, {in_flight} active")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_line_shows_rate_and_active_sequences() {
        assert_eq!(
            status_line(300, Duration::from_secs(2), 4),
            "150 tok/s, 4 active"
        );
        assert_eq!(status_line(0, Duration::ZERO, 0), "0 tok/s, 0 active");
    }

    #[test]
    fn hidden_progress_counts_records() {
        let terminal = Terminal::new(false);
        let mut progress = terminal.progress(Some(2), "docs", "");
        let record = Record::error("a", "a.txt", "summarize", "unreadable".into());
        progress.job_started(1);
        progress.record_finished(&record, 0);
        assert_eq!(progress.bar.position(), 1);
        assert_eq!(progress.bar.length(), Some(2));
        progress.finish();
    }
}
