//! Writing records and counting them.

use std::io;
use std::time::Duration;

use super::{RunObserver, RunSummary};
use crate::engine::Flow;
use crate::output::{Record, Sink, Status};

/// Writes records and counts them; remembers the first write error.
pub(super) struct Recorder<'s> {
    pub sink: &'s mut dyn Sink,
    pub summary: RunSummary,
    pub write_error: Option<io::Error>,
    pub observer: &'s mut dyn RunObserver,
}

impl Recorder<'_> {
    /// Counts and writes `record`; `skipped` marks an `--overflow skip` error record.
    pub fn emit(&mut self, record: Record, in_flight: usize, skipped: bool) -> Flow {
        match record.status {
            Status::Ok => self.summary.ok += 1,
            Status::Truncated => self.summary.truncated += 1,
            Status::Error if skipped => self.summary.skipped += 1,
            Status::Error => self.summary.failed += 1,
        }
        if record.status != Status::Error {
            self.summary
                .latencies
                .push(Duration::from_millis(record.latency_ms));
        }
        self.observer.record_finished(&record, in_flight);
        match self.sink.write(&record) {
            Ok(()) => Flow::Continue,
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
                self.summary.broken_pipe = true;
                Flow::Stop
            }
            Err(e) => {
                self.write_error = Some(e);
                Flow::Stop
            }
        }
    }
}
