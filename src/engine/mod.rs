//! The batched generation loop: admit → plan → forward → sample → retire, with continuous
//! batching over the slots of one KV cache. Knows nothing of documents or output formats.

mod prefix;
mod scheduler;
mod sequence;
mod stats;

use std::collections::HashSet;
use std::time::Instant;

pub use prefix::shared_prefix;
pub use scheduler::{plan_step, StepPlan};
pub use sequence::{Completion, Job, Sequence, StopReason};
pub use stats::EngineStats;

use crate::model::{Model, ModelError, SlotId, SlotKvCache};
use prefix::PrefixCache;

/// Sizes of the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineConfig {
    /// Sequences in flight (KV slots).
    pub sequences: usize,
    /// Positions per slot.
    pub ctx: usize,
    /// Most rows in one forward pass.
    pub batch_size: usize,
}

/// Whether the caller wants the run to go on after a completion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    /// Stop admitting jobs and return once the step ends (in-flight jobs are dropped).
    Stop,
}

/// Runs jobs through one model with `sequences` slots.
pub struct Engine<'m> {
    model: &'m Model,
    cache: SlotKvCache,
    config: EngineConfig,
    eog_ids: HashSet<u32>,
    /// The end-of-generation id that stands for "the answer ends here" in constrained answers
    /// (the smallest, as the JSON grammar's vocabulary takes it).
    end_id: u32,
    prefixes: PrefixCache,
    pub stats: EngineStats,
}

impl<'m> Engine<'m> {
    pub fn new(
        model: &'m Model,
        config: EngineConfig,
        eog_ids: impl IntoIterator<Item = u32>,
    ) -> Result<Self, ModelError> {
        let cache = model.new_cache(config.sequences, config.ctx)?;
        let eog_ids: HashSet<u32> = eog_ids.into_iter().collect();
        Ok(Self {
            model,
            cache,
            config,
            end_id: eog_ids.iter().copied().min().unwrap_or(u32::MAX),
            eog_ids,
            prefixes: PrefixCache::new(config.sequences),
            stats: EngineStats::default(),
        })
    }

    /// Prompt prefixes shared by many jobs (one per template): computed once, by
    /// [`Engine::prepare`] or the first run, then copied into the slot of each job whose prompt
    /// starts with one.
    pub fn set_prefixes(&mut self, prefixes: Vec<Vec<u32>>) {
        self.prefixes.set(prefixes);
    }

    /// Computes the prefixes not computed yet, counting them as prefill work. Every run does
    /// it first; calling it before a run whose counters are set aside keeps the work counted.
    pub fn prepare(&mut self) -> Result<(), ModelError> {
        let started = Instant::now();
        let computed = self
            .prefixes
            .compute(self.model, &self.cache, self.config.batch_size)?;
        if computed > 0 {
            self.stats.record_prefix(computed, started.elapsed());
        }
        Ok(())
    }

    pub fn cache_bytes(&self) -> usize {
        self.cache.bytes()
    }

    /// Pulls jobs from `next_job`, keeping every slot busy, and hands each finished job to
    /// `on_done` as soon as it completes; returns once no job is in flight and `next_job`
    /// returns `None` (it is asked again whenever a slot is free, so it may return jobs after a
    /// `None`).
    pub fn run(
        &mut self,
        next_job: impl FnMut() -> Option<Job>,
        on_done: impl FnMut(Completion) -> Flow,
    ) -> Result<(), ModelError> {
        self.run_observed(next_job, |_, _| {}, on_done)
    }

    /// [`Engine::run`], telling `on_step` after each forward pass how many rows (tokens) it
    /// computed and how many sequences are in flight (the progress bar's live tokens/s).
    pub fn run_observed(
        &mut self,
        mut next_job: impl FnMut() -> Option<Job>,
        mut on_step: impl FnMut(usize, usize),
        mut on_done: impl FnMut(Completion) -> Flow,
    ) -> Result<(), ModelError> {
        let slots = self.config.sequences;
        let mut active: Vec<Option<Sequence>> = (0..slots).map(|_| None).collect();
        let mut order: Vec<usize> = Vec::with_capacity(slots);
        self.prepare()?;
        loop {
            // Admit: fill every free slot at once. `next_job` is asked again after every step
            // while a slot is free: a completion can make new jobs (the reduce of a chunked
            // document).
            while order.len() < slots {
                let Some(job) = next_job() else {
                    break;
                };
                if job.prompt.is_empty()
                    || job.prompt.len() > self.config.ctx
                    || job.max_tokens == 0
                {
                    let reason = if job.max_tokens == 0 {
                        StopReason::Length
                    } else {
                        StopReason::Context
                    };
                    let seq = Sequence::new(job, SlotId(usize::MAX));
                    if on_done(seq.finish(reason)) == Flow::Stop {
                        return Ok(());
                    }
                    continue;
                }
                let free = active
                    .iter()
                    .position(Option::is_none)
                    .expect("a free slot");
                let cached = self
                    .prefixes
                    .admit(&self.cache, SlotId(free), &job.prompt)?;
                self.stats.prompt_tokens_cached += cached;
                let mut seq = Sequence::new(job, SlotId(free));
                seq.prefilled = cached;
                active[free] = Some(seq);
                order.push(free);
            }
            if order.is_empty() {
                return Ok(());
            }

            let plan = plan_step(&active, &order, self.config.batch_size);
            let started = Instant::now();
            let logits = self.model.forward(&plan.step, &self.cache)?;
            let logits: Vec<Vec<f32>> = logits.to_vec2()?; // synchronizes the device
            self.stats
                .record_step(&plan, order.len(), started.elapsed());
            on_step(plan.step.len(), order.len());

            for &(i, chunk) in &plan.prefill_chunks {
                active[i].as_mut().expect("planned sequence").prefilled += chunk;
            }
            let mut finished = Vec::new();
            for (row, &i) in logits.iter().zip(&plan.logit_owners) {
                let seq = active[i].as_mut().expect("planned sequence");
                if let Some(reason) = self.sample_into(seq, row) {
                    finished.push((i, reason));
                }
            }
            // Retire: free the slots now, so the next loop admits into them.
            for (i, reason) in finished {
                let seq = active[i].take().expect("finished sequence");
                order.retain(|&j| j != i);
                self.stats.generated_tokens += seq.generated.len();
                if on_done(seq.finish(reason)) == Flow::Stop {
                    return Ok(());
                }
            }
        }
    }

    /// Samples the next token of `seq`; returns why it stops, if it does.
    fn sample_into(&self, seq: &mut Sequence, logits: &[f32]) -> Option<StopReason> {
        if seq.job.labels.is_some() {
            return self.sample_label(seq, logits);
        }
        if seq.matcher.is_some() {
            return self.sample_json(seq, logits);
        }
        let guard = seq.job.sampling.repeat_guard;
        let token = if seq.job.ignore_eos || guard.is_some() {
            let mut adjusted = logits.to_vec();
            if let Some(guard) = guard {
                guard.apply(&seq.generated, &mut adjusted);
            }
            if seq.job.ignore_eos {
                for &id in &self.eog_ids {
                    if let Some(l) = adjusted.get_mut(id as usize) {
                        *l = f32::NEG_INFINITY;
                    }
                }
            }
            seq.sampler.sample(&adjusted)
        } else {
            seq.sampler.sample(logits)
        };
        if self.eog_ids.contains(&token) && !seq.job.ignore_eos {
            return Some(StopReason::Eos);
        }
        seq.generated.push(token);
        if seq.generated.len() >= seq.job.max_tokens {
            return Some(StopReason::Length);
        }
        self.context_full(seq)
    }

    /// `Context` when the sequence's next token would have no position left to be fed at.
    fn context_full(&self, seq: &Sequence) -> Option<StopReason> {
        (seq.job.prompt.len() + seq.generated.len() > self.config.ctx)
            .then_some(StopReason::Context)
    }

    /// The next token of a JSON job: one its grammar allows; the end only once the JSON is
    /// complete. `max_tokens` may cut it (the record then says the JSON is incomplete).
    fn sample_json(&self, seq: &mut Sequence, logits: &[f32]) -> Option<StopReason> {
        let matcher = seq.matcher.as_mut().expect("a JSON job");
        let Ok(mask) = matcher.compute_mask_or_eos() else {
            return Some(StopReason::Stop);
        };
        let mut masked: Vec<f32> = logits
            .iter()
            .enumerate()
            .map(|(id, &l)| {
                if mask.is_allowed(id as u32) {
                    l
                } else {
                    f32::NEG_INFINITY
                }
            })
            .collect();
        // The repeat guard keeps strings from looping ("Nantucket. Nantucket. …").
        if let Some(guard) = seq.job.sampling.repeat_guard {
            guard.apply(&seq.generated, &mut masked);
        }
        let token = seq.sampler.sample(&masked);
        if self.eog_ids.contains(&token) {
            return Some(StopReason::Eos);
        }
        if matcher.consume_token(token).is_err() {
            return Some(StopReason::Stop);
        }
        seq.generated.push(token);
        if matcher.is_stopped() {
            return Some(StopReason::Eos);
        }
        if seq.generated.len() >= seq.job.max_tokens {
            return Some(StopReason::Length);
        }
        self.context_full(seq)
    }

    /// The next token of a label job: one that keeps the answer on a label's path (see
    /// [`crate::labels`]); the answer ends when a label is complete, whatever `max_tokens`.
    fn sample_label(&self, seq: &mut Sequence, logits: &[f32]) -> Option<StopReason> {
        let set = seq.job.labels.clone().expect("a label job");
        let state = seq.label_state.as_mut().expect("a label job has a state");
        let end = self.end_id;
        let allowed = set.allowed(state, end);
        let probs = crate::labels::renormalized(logits, &allowed);
        let mut masked = vec![f32::NEG_INFINITY; logits.len()];
        for &id in &allowed {
            if let Some(m) = masked.get_mut(id as usize) {
                *m = logits[id as usize];
            }
        }
        let token = seq.sampler.sample(&masked);
        match set.advance(state, token, end, &probs) {
            crate::labels::Step::Done(label) => {
                if token != end {
                    seq.generated.push(token);
                }
                // Greedy answers are the most probable label, which may not be the path taken:
                // a label written several ways (case, a leading space) sums their
                // probabilities. A sampled answer is the label sampled.
                let greedy = seq.job.sampling.temperature <= 0.0;
                seq.answered = Some(match &seq.label_state {
                    Some(state) if greedy => crate::labels::most_probable(state.scores()),
                    _ => label,
                });
                Some(StopReason::Eos)
            }
            crate::labels::Step::Continue => {
                seq.generated.push(token);
                self.context_full(seq)
            }
        }
    }
}
