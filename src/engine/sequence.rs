//! A job (what to generate) and the sequence that runs it in a slot.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::json_answers::JsonConstraint;
use crate::labels::{LabelSet, LabelState};
use crate::model::SlotId;
use crate::sampler::{Sampler, SamplingParams};

/// One prompt to complete: a document × prompt pair, tokenized.
#[derive(Debug, Clone)]
pub struct Job {
    /// The caller's number for this job, returned in its [`Completion`].
    pub index: usize,
    /// Distinguishes the job's random stream (see [`Sampler::new`]).
    pub key: u64,
    pub prompt: Vec<u32>,
    pub max_tokens: usize,
    pub ignore_eos: bool,
    pub sampling: SamplingParams,
    /// The answer must be one of these labels (decoding is constrained to them).
    pub labels: Option<Arc<LabelSet>>,
    /// The answer must be JSON valid against this schema.
    pub json: Option<Arc<JsonConstraint>>,
}

/// Why a sequence stopped generating.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StopReason {
    /// An end-of-generation token.
    Eos,
    /// A stop string (reserved for `--stop`).
    Stop,
    /// `max_tokens` reached.
    Length,
    /// The slot's context is full (or the prompt alone did not fit).
    Context,
}

impl StopReason {
    pub fn as_str(self) -> &'static str {
        match self {
            StopReason::Eos => "eos",
            StopReason::Stop => "stop",
            StopReason::Length => "length",
            StopReason::Context => "context",
        }
    }
}

/// A finished job.
#[derive(Debug, Clone)]
pub struct Completion {
    pub index: usize,
    /// Generated ids, the end-of-generation token excluded.
    pub tokens: Vec<u32>,
    pub stop_reason: StopReason,
    pub prompt_tokens: usize,
    /// From admission into a slot to the last token.
    pub latency: Duration,
    /// For a label job: the label answered and every label's probability (in label order).
    pub label: Option<(usize, Vec<f64>)>,
}

/// A job running in a slot.
pub struct Sequence {
    pub job: Job,
    pub slot: SlotId,
    /// Prompt tokens already in the KV cache.
    pub prefilled: usize,
    pub generated: Vec<u32>,
    pub sampler: Sampler,
    pub started: Instant,
    /// A label job's place in its label trie.
    pub label_state: Option<LabelState>,
    /// The label a label job answered.
    pub answered: Option<usize>,
    /// A JSON job's grammar state.
    pub matcher: Option<llguidance::Matcher>,
}

impl Sequence {
    pub fn new(job: Job, slot: SlotId) -> Self {
        let sampler = Sampler::new(job.sampling, job.key);
        let label_state = job.labels.as_ref().map(|set| set.start());
        let matcher = job.json.as_ref().map(|c| c.matcher());
        Self {
            matcher,
            label_state,
            answered: None,
            job,
            slot,
            prefilled: 0,
            generated: Vec::new(),
            sampler,
            started: Instant::now(),
        }
    }

    pub fn is_prefilling(&self) -> bool {
        self.prefilled < self.job.prompt.len()
    }

    /// Position of the next token to feed (prompt and generated tokens so far).
    pub fn next_position(&self) -> usize {
        self.prefilled + self.generated.len().saturating_sub(1)
    }

    pub fn finish(self, stop_reason: StopReason) -> Completion {
        Completion {
            index: self.job.index,
            prompt_tokens: self.job.prompt.len(),
            tokens: self.generated,
            stop_reason,
            latency: self.started.elapsed(),
            label: self
                .answered
                .zip(self.label_state.map(|s| s.scores().to_vec())),
        }
    }
}
