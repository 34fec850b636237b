//! Which rows go into the next forward pass: every decoding sequence's next token first, then
//! prefill chunks of the sequences still reading their prompt, within `--batch-size` rows.

use crate::model::{BatchRow, BatchStep};

use super::sequence::Sequence;

/// One planned forward pass.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StepPlan {
    pub step: BatchStep,
    /// For each logits row, in order, the index of its sequence.
    pub logit_owners: Vec<usize>,
    /// `(sequence index, prompt tokens)` fed by this step.
    pub prefill_chunks: Vec<(usize, usize)>,
    pub decode_rows: usize,
}

impl StepPlan {
    pub fn prefill_rows(&self) -> usize {
        self.step.len() - self.decode_rows
    }
}

/// Plans one step over the sequences (`None` = free slot), visiting them in `order`
/// (admission order, so the oldest prompt is prefilled first).
pub fn plan_step(active: &[Option<Sequence>], order: &[usize], batch_size: usize) -> StepPlan {
    let mut plan = StepPlan::default();
    for &i in order {
        let Some(seq) = &active[i] else { continue };
        if seq.is_prefilling() || plan.step.len() >= batch_size {
            continue;
        }
        let token = *seq
            .generated
            .last()
            .expect("a decoding sequence has a token");
        plan.step.push(BatchRow {
            token,
            position: seq.next_position(),
            slot: seq.slot,
            wants_logits: true,
            prompt: false,
        });
        plan.logit_owners.push(i);
        plan.decode_rows += 1;
    }
    for &i in order {
        let Some(seq) = &active[i] else { continue };
        let budget = batch_size.saturating_sub(plan.step.len());
        if !seq.is_prefilling() || budget == 0 {
            continue;
        }
        let remaining = seq.job.prompt.len() - seq.prefilled;
        let chunk = remaining.min(budget);
        for k in 0..chunk {
            let last = k + 1 == remaining;
            plan.step.push(BatchRow {
                token: seq.job.prompt[seq.prefilled + k],
                position: seq.prefilled + k,
                slot: seq.slot,
                wants_logits: last,
                prompt: true,
            });
            if last {
                plan.logit_owners.push(i);
            }
        }
        plan.prefill_chunks.push((i, chunk));
    }
    plan
}
