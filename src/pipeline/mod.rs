//! Documents → jobs → engine → records: one record per document × prompt, whatever happens.
//! `queue` turns documents into jobs (a long document into chunk and reduce jobs) and
//! completions into records, `answers` reads a completion as a record, `recorder` writes and
//! counts them, `priors` measures label priors for `--calibrate`.

mod answers;
mod priors;
mod queue;
mod recorder;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::accuracy::Confusion;
use crate::engine::{Completion, Engine, Flow, Job};
use crate::input::Document;
use crate::output::{Record, Sink};
use crate::prompt::{Overflow, PromptBuilder};
use crate::resume::CompletedJobs;
use crate::sampler::SamplingParams;
use crate::signals::{StopRequest, StopSignal};
use crate::tokenizer::Tokenizer;

pub use priors::label_priors;
use queue::JobQueue;
use recorder::Recorder;

/// Generation settings shared by every job of a run.
#[derive(Debug, Clone)]
pub struct JobSettings {
    pub ctx: usize,
    pub max_tokens: usize,
    pub ignore_eos: bool,
    pub sampling: SamplingParams,
    /// What to do with a document longer than the context.
    pub overflow: Overflow,
    /// How `--overflow chunk` splits and merges.
    pub chunking: Option<Chunking>,
    /// Per prompt, the content-free label scores its label answers are calibrated by.
    pub priors: Vec<Option<Arc<Vec<f64>>>>,
}

/// `--overflow chunk`: how big chunks are and the template free-text answers are merged by.
#[derive(Clone)]
pub struct Chunking {
    pub sizes: crate::chunking::ChunkSizes,
    pub reduce: Arc<PromptBuilder>,
}

impl std::fmt::Debug for Chunking {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chunking")
            .field("sizes", &self.sizes)
            .field("reduce", &self.reduce.name())
            .finish()
    }
}

/// What, besides the documents, decides which jobs run.
#[derive(Debug, Clone, Default)]
pub struct RunControl<'a> {
    /// Jobs the output already holds (`--resume`): not run again, no record.
    pub completed: Option<&'a CompletedJobs>,
    /// Once a stop is requested (SIGINT/SIGTERM) no new job is admitted; the jobs in flight
    /// finish and are written.
    pub stop: StopRequest,
}

/// What became of the run's records.
#[derive(Debug, Default)]
pub struct RunSummary {
    pub ok: usize,
    pub truncated: usize,
    /// Error records, except those of `--overflow skip`.
    pub failed: usize,
    /// Error records of documents longer than the context under `--overflow skip`.
    pub skipped: usize,
    /// Jobs not run because the output already held them (`--resume`).
    pub already_done: usize,
    pub latencies: Vec<Duration>,
    /// stdout was closed by the reader (`| head`): the run stopped early, quietly.
    pub broken_pipe: bool,
    /// The signal that stopped the run before every document was read.
    pub stopped_by: Option<StopSignal>,
    /// Label answers against the documents' true labels (`--gold-field`), per prompt.
    pub confusion: BTreeMap<String, Confusion>,
    /// Documents × prompts read in chunks (`--overflow chunk`), their chunks, and the reduce
    /// calls that merged their free-text answers.
    pub documents_chunked: usize,
    pub chunks: usize,
    pub reduce_calls: usize,
}

impl RunSummary {
    pub fn records(&self) -> usize {
        self.ok + self.truncated + self.failed + self.skipped
    }
}

/// Watches a run as it goes (the progress bar). `in_flight` is the number of jobs in the
/// engine at that moment.
pub trait RunObserver {
    /// A job was handed to the engine.
    fn job_started(&mut self, in_flight: usize);
    /// A record was produced (and is about to be written).
    fn record_finished(&mut self, record: &Record, in_flight: usize);
    /// A forward pass computed `tokens` rows.
    fn step_done(&mut self, _tokens: usize, _in_flight: usize) {}
}

/// Observes nothing.
impl RunObserver for () {
    fn job_started(&mut self, _in_flight: usize) {}
    fn record_finished(&mut self, _record: &Record, _in_flight: usize) {}
}

/// Runs every document × prompt through `engine`, writing one record each to `sink`.
/// `observer` sees each job start and each record as it is written (progress).
pub fn run_documents(
    engine: &mut Engine<'_>,
    tokenizer: &Tokenizer,
    builders: &[PromptBuilder],
    documents: impl Iterator<Item = Document>,
    settings: JobSettings,
    sink: &mut dyn Sink,
    observer: &mut dyn RunObserver,
) -> anyhow::Result<RunSummary> {
    run_documents_with(
        engine,
        tokenizer,
        builders,
        documents,
        settings,
        sink,
        observer,
        RunControl::default(),
    )
}

/// [`run_documents`], skipping the jobs `control` says are done and stopping when it says so.
#[allow(clippy::too_many_arguments)]
pub fn run_documents_with(
    engine: &mut Engine<'_>,
    tokenizer: &Tokenizer,
    builders: &[PromptBuilder],
    documents: impl Iterator<Item = Document>,
    settings: JobSettings,
    sink: &mut dyn Sink,
    observer: &mut dyn RunObserver,
    control: RunControl<'_>,
) -> anyhow::Result<RunSummary> {
    let queue = JobQueue::new(
        tokenizer,
        builders,
        &settings,
        Recorder {
            sink,
            summary: RunSummary::default(),
            write_error: None,
            observer,
        },
    );
    let mut documents = documents.fuse();
    let mut stopped = false;

    let next_job = || -> Option<Job> {
        loop {
            if stopped {
                return None;
            }
            if let Some(signal) = control.stop.signal() {
                // Jobs built but not handed out are dropped: they have no record yet, so a
                // `--resume` runs them.
                let mut recorder = queue.recorder.borrow_mut();
                recorder.summary.stopped_by = Some(signal);
                tracing::warn!(
                    "{}: finishing the {} job(s) in flight, then stopping (send it again to stop at once)",
                    signal.name(),
                    queue.in_flight.get()
                );
                stopped = true;
                return None;
            }
            let job = queue.queued.borrow_mut().pop_front();
            if let Some(job) = job {
                queue.in_flight.set(queue.in_flight.get() + 1);
                queue
                    .recorder
                    .borrow_mut()
                    .observer
                    .job_started(queue.in_flight.get());
                return Some(job);
            }
            let doc = documents.next()?;
            for (builder_index, builder) in builders.iter().enumerate() {
                if control
                    .completed
                    .is_some_and(|done| done.contains(&doc.id, &doc.source, builder.name()))
                {
                    queue.recorder.borrow_mut().summary.already_done += 1;
                    continue;
                }
                stopped |= queue.add_document(&doc, builder, builder_index) == Flow::Stop;
            }
        }
    };

    let on_done = |done: Completion| -> Flow {
        let meta = queue
            .pending
            .borrow_mut()
            .remove(&done.index)
            .expect("every completion has a pending job");
        queue.in_flight.set(queue.in_flight.get().saturating_sub(1));
        match meta.part {
            None => queue.finish(meta, &done),
            Some(part) => queue.part_done(meta, part, &done),
        }
    };

    let on_step = |tokens: usize, in_flight: usize| {
        queue
            .recorder
            .borrow_mut()
            .observer
            .step_done(tokens, in_flight);
    };
    engine.run_observed(next_job, on_step, on_done)?;
    let recorder = queue.recorder.into_inner();
    if let Some(e) = recorder.write_error {
        return Err(anyhow::Error::new(e).context("writing the output"));
    }
    Ok(recorder.summary)
}

/// A stable per-job key for the sampler's stream: the same document and prompt always draw the
/// same random numbers, whatever K or the order of the run.
pub fn job_key(id: &str, source: &str, prompt: &str) -> u64 {
    // FNV-1a: stable across builds and platforms, unlike std's hasher.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in [id, source, prompt] {
        for b in part.bytes().chain(std::iter::once(0xff)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}
