//! Documents → jobs → engine → records: one record per document × prompt, whatever happens.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io;
use std::sync::Arc;
use std::time::Duration;

use crate::accuracy::Confusion;
use crate::engine::{Completion, Engine, Flow, Job, StopReason};
use crate::input::Document;
use crate::json_answers::parse_answer;
use crate::labels::LabelSet;
use crate::output::{Record, Sink, Status};
use crate::prompt::{Overflow, PromptBuilder, PromptError};
use crate::resume::CompletedJobs;
use crate::sampler::SamplingParams;
use crate::signals::{StopRequest, StopSignal};
use crate::tokenizer::Tokenizer;

/// Generation settings shared by every job of a run.
#[derive(Debug, Clone)]
pub struct JobSettings {
    pub ctx: usize,
    pub max_tokens: usize,
    pub ignore_eos: bool,
    pub sampling: SamplingParams,
    /// What to do with a document longer than the context.
    pub overflow: Overflow,
    /// Per prompt, the content-free label scores its label answers are calibrated by.
    pub priors: Vec<Option<Arc<Vec<f64>>>>,
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

/// A job's identity while it is in the engine.
struct JobMeta {
    id: String,
    source: String,
    prompt: String,
    truncated: bool,
    labels: Option<Arc<LabelSet>>,
    /// The answer is JSON (parsed, compacted, or an error record when cut).
    json: bool,
    /// The label scores of a content-free input, to divide the answer's scores by.
    prior: Option<Arc<Vec<f64>>>,
    gold: Option<String>,
}

/// Writes records and counts them; remembers the first write error.
struct Recorder<'s> {
    sink: &'s mut dyn Sink,
    summary: RunSummary,
    write_error: Option<io::Error>,
    observer: &'s mut dyn RunObserver,
}

impl Recorder<'_> {
    /// Counts and writes `record`; `skipped` marks an `--overflow skip` error record.
    fn emit(&mut self, record: Record, in_flight: usize, skipped: bool) -> Flow {
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
    let recorder = RefCell::new(Recorder {
        sink,
        summary: RunSummary::default(),
        write_error: None,
        observer,
    });
    // Jobs handed to the engine and not yet completed.
    let in_flight = Cell::new(0usize);
    let pending: RefCell<HashMap<usize, JobMeta>> = RefCell::new(HashMap::new());
    let mut next_index = 0usize;
    // Jobs of the current document not yet handed out (one per prompt).
    let mut queued: VecDeque<Job> = VecDeque::new();
    let mut documents = documents;
    let mut stopped = false;

    let next_job = || -> Option<Job> {
        loop {
            if stopped {
                return None;
            }
            if let Some(signal) = control.stop.signal() {
                // Jobs built but not handed out are dropped: they have no record yet, so a
                // `--resume` runs them.
                let mut recorder = recorder.borrow_mut();
                recorder.summary.stopped_by = Some(signal);
                tracing::warn!(
                    "{}: finishing the {} job(s) in flight, then stopping (send it again to stop at once)",
                    signal.name(),
                    in_flight.get()
                );
                stopped = true;
                return None;
            }
            if let Some(job) = queued.pop_front() {
                in_flight.set(in_flight.get() + 1);
                recorder.borrow_mut().observer.job_started(in_flight.get());
                return Some(job);
            }
            let doc = documents.next()?;
            for (builder_index, builder) in builders.iter().enumerate() {
                let prompt_name = builder.name();
                if control
                    .completed
                    .is_some_and(|done| done.contains(&doc.id, &doc.source, prompt_name))
                {
                    recorder.borrow_mut().summary.already_done += 1;
                    continue;
                }
                let error_record = |message: String, skipped: bool| {
                    let rec = Record::error(&doc.id, &doc.source, prompt_name, message);
                    recorder.borrow_mut().emit(rec, in_flight.get(), skipped)
                };
                let text = match &doc.text {
                    Ok(t) => t,
                    Err(e) => {
                        stopped |= error_record(e.clone(), false) == Flow::Stop;
                        continue;
                    }
                };
                if text.trim().is_empty() {
                    let message = format!("{}: empty document", doc.source);
                    stopped |= error_record(message, false) == Flow::Stop;
                    continue;
                }
                // A label answer takes at most its longest label's tokens.
                let labels = builder.labels().cloned();
                let max_tokens = labels
                    .as_ref()
                    .map_or(settings.max_tokens, |set| set.max_tokens());
                let built = builder.fit(
                    tokenizer,
                    &doc.id,
                    text,
                    settings.ctx,
                    max_tokens,
                    settings.overflow,
                );
                match built {
                    Ok(built) => {
                        let index = next_index;
                        next_index += 1;
                        pending.borrow_mut().insert(
                            index,
                            JobMeta {
                                id: doc.id.clone(),
                                source: doc.source.clone(),
                                prompt: prompt_name.to_string(),
                                truncated: built.truncated,
                                labels: labels.clone(),
                                json: builder.json().is_some(),
                                prior: settings.priors.get(builder_index).cloned().flatten(),
                                gold: doc.gold.clone(),
                            },
                        );
                        queued.push_back(Job {
                            index,
                            key: job_key(&doc.id, &doc.source, prompt_name),
                            prompt: built.tokens,
                            max_tokens,
                            ignore_eos: settings.ignore_eos,
                            sampling: settings.sampling,
                            labels,
                            json: builder.json().cloned(),
                        });
                    }
                    Err(e) => {
                        let skipped = matches!(
                            e,
                            PromptError::Overflow {
                                overflow: Overflow::Skip,
                                ..
                            }
                        );
                        let message = format!("{}: {e}", doc.source);
                        stopped |= error_record(message, skipped) == Flow::Stop;
                    }
                }
            }
        }
    };

    let on_done = |done: Completion| -> Flow {
        let meta = pending
            .borrow_mut()
            .remove(&done.index)
            .expect("every completion has a pending job");
        let gold = meta.gold.clone();
        let labels = meta.labels.clone();
        let record = completion_record(meta, &done, tokenizer);
        if let (Some(gold), Some(set), Some(_)) = (gold, labels, &done.label) {
            recorder
                .borrow_mut()
                .summary
                .confusion
                .entry(record.prompt.clone())
                .or_default()
                .add(set.labels(), &gold, &record.output);
        }
        in_flight.set(in_flight.get().saturating_sub(1));
        recorder.borrow_mut().emit(record, in_flight.get(), false)
    };

    let on_step = |tokens: usize, in_flight: usize| {
        recorder.borrow_mut().observer.step_done(tokens, in_flight);
    };
    engine.run_observed(next_job, on_step, on_done)?;
    let recorder = recorder.into_inner();
    if let Some(e) = recorder.write_error {
        return Err(anyhow::Error::new(e).context("writing the output"));
    }
    Ok(recorder.summary)
}

fn completion_record(meta: JobMeta, done: &Completion, tokenizer: &Tokenizer) -> Record {
    let meta_labels = meta.labels.clone();
    let mut record = Record {
        id: meta.id,
        source: meta.source,
        prompt: meta.prompt,
        status: if meta.truncated {
            Status::Truncated
        } else {
            Status::Ok
        },
        output: String::new(),
        stop_reason: done.stop_reason.as_str().to_string(),
        prompt_tokens: done.prompt_tokens,
        generated_tokens: done.tokens.len(),
        latency_ms: done.latency.as_millis() as u64,
        error: String::new(),
        scores: None,
        fields: None,
    };
    if done.tokens.is_empty() && done.stop_reason == StopReason::Context {
        record.status = Status::Error;
        record.error = format!("{}: the prompt does not fit the context", record.source);
        return record;
    }
    if let (Some(set), Some((label, scores))) = (&meta_labels, &done.label) {
        let (label, scores) = match &meta.prior {
            Some(prior) => calibrated(scores, prior),
            None => (*label, scores.clone()),
        };
        record.output = set.labels()[label].clone();
        record.scores = Some(set.labels().iter().cloned().zip(scores).collect());
        return record;
    }
    match tokenizer.decode(&done.tokens) {
        Ok(text) if meta.json => match parse_answer(&text) {
            Ok((compact, value)) => {
                record.output = compact;
                record.fields = Some(value);
            }
            Err(message) => {
                record.status = Status::Error;
                record.error = format!("{}: {message}", record.source);
            }
        },
        Ok(text) => record.output = text.trim().to_string(),
        Err(e) => {
            record.status = Status::Error;
            record.error = e.to_string();
        }
    }
    record
}

/// Scores divided by the content-free prior and renormalized ("Calibrate Before Use", Zhao et
/// al. 2021), and the label they now favour.
fn calibrated(scores: &[f64], prior: &[f64]) -> (usize, Vec<f64>) {
    let raw: Vec<f64> = scores
        .iter()
        .zip(prior)
        .map(|(s, p)| s / p.max(1e-9))
        .collect();
    let sum: f64 = raw.iter().sum();
    let scores: Vec<f64> = raw.iter().map(|r| r / sum.max(f64::MIN_POSITIVE)).collect();
    (crate::labels::most_probable(&scores), scores)
}

/// For each prompt that answers with labels, the label scores of a content-free document
/// ("N/A"): what the prompt and model favour before reading anything. The engine's counters are
/// left as they were.
pub fn label_priors(
    engine: &mut Engine<'_>,
    tokenizer: &Tokenizer,
    builders: &[PromptBuilder],
    ctx: usize,
) -> anyhow::Result<Vec<Option<Arc<Vec<f64>>>>> {
    // The shared prefixes are computed (and counted) before the counters are set aside.
    engine.prepare()?;
    let saved = engine.stats.clone();
    let mut priors = Vec::new();
    for builder in builders {
        let Some(labels) = builder.labels() else {
            priors.push(None);
            continue;
        };
        let max_tokens = labels.max_tokens();
        let built = builder.build(tokenizer, "content-free", CONTENT_FREE, ctx, max_tokens)?;
        let mut job = Some(Job {
            index: 0,
            key: job_key("content-free", "", builder.name()),
            prompt: built.tokens,
            max_tokens,
            ignore_eos: false,
            sampling: SamplingParams::default(),
            labels: Some(labels.clone()),
            json: None,
        });
        let mut prior = None;
        engine.run(
            || job.take(),
            |done| {
                prior = done.label.map(|(_, scores)| Arc::new(scores));
                Flow::Continue
            },
        )?;
        priors.push(prior);
    }
    engine.stats = saved;
    Ok(priors)
}

/// The content-free input of [`label_priors`].
const CONTENT_FREE: &str = "N/A";

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
