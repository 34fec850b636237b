//! The jobs of a run: documents become jobs (a long document chunk jobs, then reduce jobs),
//! completions become records.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use super::answers::completion_record;
use super::recorder::Recorder;
use super::{job_key, JobSettings};
use crate::chunking::{
    plan_level, split_to_fit, ChunkedDocument, Next, Planned, ReduceContext, ReduceInput, Reducer,
};
use crate::engine::{Completion, Flow, Job};
use crate::input::Document;
use crate::labels::LabelSet;
use crate::output::{Record, Status};
use crate::prompt::{Overflow, PromptBuilder, PromptError};
use crate::tokenizer::Tokenizer;

/// A job's identity while it is in the engine.
pub(super) struct JobMeta {
    pub(super) id: String,
    pub(super) source: String,
    pub(super) prompt: String,
    pub(super) truncated: bool,
    pub(super) labels: Option<Arc<LabelSet>>,
    /// The answer is JSON (parsed, compacted, or an error record when cut).
    pub(super) json: bool,
    /// The label scores of a content-free input, to divide the answer's scores by.
    pub(super) prior: Option<Arc<Vec<f64>>>,
    pub(super) gold: Option<String>,
    /// The part of a chunked document this job is, if it is one.
    pub(super) part: Option<JobPart>,
}

/// Which part of a chunked document a job is.
#[derive(Debug, Clone, Copy)]
pub(super) enum JobPart {
    /// Chunk `index` (0-based) of chunked document `doc`.
    Chunk { doc: usize, index: usize },
    /// The reduce call in slot `slot` of `doc`'s current level.
    Reduce { doc: usize, slot: usize },
}

impl JobPart {
    fn doc(self) -> usize {
        match self {
            JobPart::Chunk { doc, .. } | JobPart::Reduce { doc, .. } => doc,
        }
    }
}

/// A chunked document in progress, with what its reduce calls and final record need.
struct Chunked {
    state: ChunkedDocument,
    /// The prompt's builder (in the run's builders).
    builder_index: usize,
    gold: Option<String>,
}

/// The jobs of a run: those queued, those in the engine, the chunked documents in progress, and
/// the records they become.
pub(super) struct JobQueue<'r, 's> {
    tokenizer: &'r Tokenizer,
    builders: &'r [PromptBuilder],
    settings: &'r JobSettings,
    pub(super) recorder: RefCell<Recorder<'s>>,
    /// Jobs handed to the engine and not yet completed.
    pub(super) in_flight: Cell<usize>,
    pub(super) pending: RefCell<HashMap<usize, JobMeta>>,
    next_index: Cell<usize>,
    /// Jobs not yet handed out: the current document's, reduce calls in front.
    pub(super) queued: RefCell<VecDeque<Job>>,
    chunked: RefCell<HashMap<usize, Chunked>>,
    next_document: Cell<usize>,
}

impl<'r, 's> JobQueue<'r, 's> {
    pub(super) fn new(
        tokenizer: &'r Tokenizer,
        builders: &'r [PromptBuilder],
        settings: &'r JobSettings,
        recorder: Recorder<'s>,
    ) -> Self {
        Self {
            tokenizer,
            builders,
            settings,
            recorder: RefCell::new(recorder),
            in_flight: Cell::new(0),
            pending: RefCell::new(HashMap::new()),
            next_index: Cell::new(0),
            queued: RefCell::new(VecDeque::new()),
            chunked: RefCell::new(HashMap::new()),
            next_document: Cell::new(0),
        }
    }

    /// Queues the job(s) of `doc` × `builder`, or writes its error record.
    pub(super) fn add_document(
        &self,
        doc: &Document,
        builder: &PromptBuilder,
        builder_index: usize,
    ) -> Flow {
        let settings = self.settings;
        let prompt_name = builder.name();
        let error_record = |message: String, skipped: bool| {
            let rec = Record::error(&doc.id, &doc.source, prompt_name, message);
            self.recorder
                .borrow_mut()
                .emit(rec, self.in_flight.get(), skipped)
        };
        let text = match &doc.text {
            Ok(t) => t,
            Err(e) => return error_record(e.clone(), false),
        };
        if text.trim().is_empty() {
            return error_record(format!("{}: empty document", doc.source), false);
        }
        // A label answer takes at most its longest label's tokens.
        let labels = builder.labels().cloned();
        let max_tokens = labels
            .as_ref()
            .map_or(settings.max_tokens, |set| set.max_tokens());
        let meta = |truncated: bool, part: Option<JobPart>| JobMeta {
            id: doc.id.clone(),
            source: doc.source.clone(),
            prompt: prompt_name.to_string(),
            truncated,
            labels: labels.clone(),
            json: builder.json().is_some(),
            prior: settings.priors.get(builder_index).cloned().flatten(),
            gold: doc.gold.clone(),
            part,
        };
        let job = |key_suffix: &str, prompt: Vec<u32>| Job {
            index: 0,
            key: job_key(&doc.id, &doc.source, &format!("{prompt_name}{key_suffix}")),
            prompt,
            max_tokens,
            ignore_eos: settings.ignore_eos,
            sampling: settings.sampling,
            labels: labels.clone(),
            json: builder.json().cloned(),
        };
        let refused = |e: PromptError| {
            let skipped = matches!(
                e,
                PromptError::Overflow {
                    overflow: Overflow::Skip,
                    ..
                }
            );
            error_record(format!("{}: {e}", doc.source), skipped)
        };
        let Some(chunking) = settings
            .chunking
            .as_ref()
            .filter(|_| settings.overflow == Overflow::Chunk)
        else {
            return match builder.fit(
                self.tokenizer,
                &doc.id,
                text,
                settings.ctx,
                max_tokens,
                settings.overflow,
            ) {
                Ok(built) => {
                    self.enqueue(meta(built.truncated, None), job("", built.tokens), false);
                    Flow::Continue
                }
                Err(e) => refused(e),
            };
        };
        let chunks = match split_to_fit(
            builder,
            self.tokenizer,
            &doc.id,
            text,
            settings.ctx,
            max_tokens,
            chunking.sizes,
        ) {
            Ok(chunks) => chunks,
            Err(e) => return refused(e),
        };
        if chunks.len() == 1 {
            let tokens = chunks.into_iter().next().expect("one chunk").tokens;
            self.enqueue(meta(false, None), job("", tokens), false);
            return Flow::Continue;
        }
        let reducer = match (&labels, builder.json()) {
            (Some(set), _) => Reducer::Labels(set.clone()),
            (None, Some(json)) => Reducer::Json(json.schema().clone()),
            (None, None) => Reducer::Text,
        };
        let parts: Vec<(&str, usize)> = chunks
            .iter()
            .map(|c| (&text[c.range.clone()], c.document_tokens))
            .collect();
        let doc_key = self.next_document.get();
        self.next_document.set(doc_key + 1);
        self.chunked.borrow_mut().insert(
            doc_key,
            Chunked {
                state: ChunkedDocument::new(&doc.id, &doc.source, prompt_name, reducer, &parts),
                builder_index,
                gold: doc.gold.clone(),
            },
        );
        let n = chunks.len();
        for (index, chunk) in chunks.into_iter().enumerate() {
            let part = JobPart::Chunk {
                doc: doc_key,
                index,
            };
            let suffix = format!("#part{}/{n}", index + 1);
            self.enqueue(meta(false, Some(part)), job(&suffix, chunk.tokens), false);
        }
        Flow::Continue
    }

    /// Gives `job` the next index and queues it: at the back, or `first` in front (reduce calls
    /// go ahead of new documents, so a document finishes soon after its chunks).
    fn enqueue(&self, meta: JobMeta, mut job: Job, first: bool) {
        job.index = self.next_index.get();
        self.next_index.set(job.index + 1);
        self.pending.borrow_mut().insert(job.index, meta);
        let mut queued = self.queued.borrow_mut();
        if first {
            queued.push_front(job);
        } else {
            queued.push_back(job);
        }
    }

    /// The record of a job that was a whole document × prompt.
    pub(super) fn finish(&self, meta: JobMeta, done: &Completion) -> Flow {
        let gold = meta.gold.clone();
        let labels = meta.labels.clone();
        let record = completion_record(meta, done, self.tokenizer);
        self.write(record, gold, labels)
    }

    /// Writes `record`, counting a label answer against its document's true label.
    fn write(&self, record: Record, gold: Option<String>, labels: Option<Arc<LabelSet>>) -> Flow {
        let mut recorder = self.recorder.borrow_mut();
        if let (Some(gold), Some(set)) = (gold, labels) {
            if record.scores.is_some() {
                recorder
                    .summary
                    .confusion
                    .entry(record.prompt.clone())
                    .or_default()
                    .add(set.labels(), &gold, &record.output);
            }
        }
        recorder.emit(record, self.in_flight.get(), false)
    }

    /// A chunk or reduce call of a chunked document finished: what comes next for it.
    pub(super) fn part_done(&self, meta: JobMeta, part: JobPart, done: &Completion) -> Flow {
        let answer = completion_record(meta, done, self.tokenizer);
        tracing::debug!(
            "{} × {}: {part:?} answered {:?}{}",
            answer.id,
            answer.prompt,
            answer.output,
            answer.error
        );
        let mut chunked = self.chunked.borrow_mut();
        // A document whose record is written already (a part failed) ignores the rest.
        let Some(entry) = chunked.get_mut(&part.doc()) else {
            return Flow::Continue;
        };
        let mut next = match part {
            JobPart::Chunk { index, .. } => entry.state.chunk_done(index, answer),
            JobPart::Reduce { slot, .. } => entry.state.reduce_done(slot, answer),
        };
        loop {
            match next {
                Next::Wait => return Flow::Continue,
                Next::Level(inputs) => next = self.plan_reduce(entry, part.doc(), &inputs),
                Next::Done(record) => {
                    let entry = chunked.remove(&part.doc()).expect("a chunked document");
                    drop(chunked);
                    if record.status == Status::Error {
                        self.drop_queued(part.doc());
                    }
                    {
                        let summary = &mut self.recorder.borrow_mut().summary;
                        summary.documents_chunked += 1;
                        summary.chunks += entry.state.parts();
                        summary.reduce_calls += entry.state.reduce_calls();
                    }
                    let labels = self.builders[entry.builder_index].labels().cloned();
                    return self.write(*record, entry.gold, labels);
                }
            }
        }
    }

    /// Queues the reduce calls of a new level of `entry` (document `doc`) over `inputs`.
    fn plan_reduce(&self, entry: &mut Chunked, doc: usize, inputs: &[ReduceInput]) -> Next {
        let settings = self.settings;
        let chunking = settings.chunking.as_ref().expect("a chunked run");
        let task_builder = &self.builders[entry.builder_index];
        let (id, source, prompt) = entry.state.job();
        let planned = task_builder.task_text(id).and_then(|task| {
            let context = ReduceContext {
                builder: &chunking.reduce,
                task_builder,
                tokenizer: self.tokenizer,
                id,
                task: &task,
                parts: entry.state.parts(),
                ctx: settings.ctx,
                max_tokens: settings.max_tokens,
            };
            plan_level(inputs, &context)
        });
        let planned = match planned {
            Ok(planned) => planned,
            Err(e) => {
                let error = format!("{source}: the reduce prompt: {e}");
                return entry.state.failed(error);
            }
        };
        let mut calls = Vec::new();
        for (slot, p) in planned.iter().enumerate() {
            let Planned::Call { parts, tokens } = p else {
                continue;
            };
            let meta = JobMeta {
                id: id.to_string(),
                source: source.to_string(),
                prompt: prompt.to_string(),
                truncated: false,
                labels: None,
                json: false,
                prior: None,
                gold: None,
                part: Some(JobPart::Reduce { doc, slot }),
            };
            let key_prompt = format!("{prompt}#reduce{}-{}", parts.0, parts.1);
            let job = Job {
                index: 0,
                key: job_key(id, source, &key_prompt),
                prompt: tokens.clone(),
                max_tokens: settings.max_tokens,
                ignore_eos: settings.ignore_eos,
                sampling: settings.sampling,
                labels: None,
                json: None,
            };
            calls.push((meta, job));
        }
        // In front, in order.
        for (meta, job) in calls.into_iter().rev() {
            self.enqueue(meta, job, true);
        }
        entry.state.level_planned(&planned)
    }

    /// Removes the queued jobs of chunked document `doc` (its record is written).
    fn drop_queued(&self, doc: usize) {
        let mut pending = self.pending.borrow_mut();
        self.queued.borrow_mut().retain(|job| {
            let of_doc = pending
                .get(&job.index)
                .and_then(|m| m.part)
                .is_some_and(|p| p.doc() == doc);
            if of_doc {
                pending.remove(&job.index);
            }
            !of_doc
        });
    }
}
