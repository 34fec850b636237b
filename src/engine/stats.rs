//! Counters of the engine's forward passes, for the timing report.

use std::time::Duration;

use super::StepPlan;

/// Time and tokens of prefill and decode work. A step that mixes both has its time shared
/// between them in proportion to their rows.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EngineStats {
    pub steps: usize,
    pub prefill_tokens: usize,
    pub prefill_time: Duration,
    pub decode_tokens: usize,
    pub decode_time: Duration,
    pub generated_tokens: usize,
    /// Sum over steps of the sequences in flight, for the mean.
    pub active_sum: usize,
    /// Prompt tokens not computed for their job: copied from a computed shared prefix.
    pub prompt_tokens_cached: usize,
}

impl EngineStats {
    pub fn record_step(&mut self, plan: &StepPlan, active: usize, elapsed: Duration) {
        let rows = plan.step.len().max(1) as f64;
        let prefill_share = plan.prefill_rows() as f64 / rows;
        self.steps += 1;
        self.active_sum += active;
        self.prefill_tokens += plan.prefill_rows();
        self.decode_tokens += plan.decode_rows;
        self.prefill_time += elapsed.mul_f64(prefill_share);
        self.decode_time += elapsed.mul_f64(1.0 - prefill_share);
    }

    /// The prefix cache's own prefill: computed tokens, with the time they took.
    pub fn record_prefix(&mut self, tokens: usize, elapsed: Duration) {
        self.prefill_tokens += tokens;
        self.prefill_time += elapsed;
    }

    pub fn prefill_tok_per_s(&self) -> f64 {
        rate(self.prefill_tokens, self.prefill_time)
    }

    pub fn decode_tok_per_s(&self) -> f64 {
        rate(self.decode_tokens, self.decode_time)
    }

    pub fn mean_active_sequences(&self) -> f64 {
        if self.steps == 0 {
            0.0
        } else {
            self.active_sum as f64 / self.steps as f64
        }
    }
}

fn rate(tokens: usize, time: Duration) -> f64 {
    let s = time.as_secs_f64();
    if s > 0.0 {
        tokens as f64 / s
    } else {
        0.0
    }
}
