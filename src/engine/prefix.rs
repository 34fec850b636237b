//! Prefix reuse: the prompt tokens every job of a template starts with (chat template's system
//! part, the instruction, the labels) are computed once, and their K/V rows are copied into a
//! slot when a job that starts with them is admitted; only the rest of its prompt is prefilled.
//!
//! The copied rows are the ones a job's own prefill would have written: prompt rows compute
//! the same values whatever else shares their step, and attention blocks are aligned to
//! absolute positions, so where a prompt is split does not change its bits. A run with reuse
//! gives the same records as one without (tested).

use candle_core::Tensor;

use crate::model::{BatchRow, BatchStep, Model, ModelError, SlotId, SlotKvCache};

/// One shared prefix and, once computed, its K/V rows per layer.
struct Prefix {
    tokens: Vec<u32>,
    rows: Option<Vec<(Tensor, Tensor)>>,
}

/// The prefixes of a run and which one each slot's first rows hold.
pub struct PrefixCache {
    prefixes: Vec<Prefix>,
    /// `slot_holds[s]`: the prefix whose rows slot `s` holds intact at positions `0..len`.
    slot_holds: Vec<Option<usize>>,
}

impl PrefixCache {
    pub fn new(slots: usize) -> Self {
        Self {
            prefixes: Vec::new(),
            slot_holds: vec![None; slots],
        }
    }

    /// Sets the prefixes to reuse (empty ones and one-token ones are dropped: nothing to gain).
    pub fn set(&mut self, prefixes: Vec<Vec<u32>>) {
        self.prefixes = prefixes
            .into_iter()
            .filter(|p| p.len() > 1)
            .map(|tokens| Prefix { tokens, rows: None })
            .collect();
        self.slot_holds.fill(None);
    }

    /// Computes every prefix not computed yet, in slot 0 (free when a run starts), in steps of
    /// at most `batch_size` rows; returns how many rows it computed.
    pub fn compute(
        &mut self,
        model: &Model,
        cache: &SlotKvCache,
        batch_size: usize,
    ) -> Result<usize, ModelError> {
        let mut computed = 0;
        for (p, prefix) in self.prefixes.iter_mut().enumerate() {
            if prefix.rows.is_some() || prefix.tokens.len() >= cache.ctx() {
                continue;
            }
            let slot = SlotId(0);
            let rows: Vec<BatchRow> = prefix
                .tokens
                .iter()
                .enumerate()
                .map(|(position, &token)| BatchRow {
                    token,
                    position,
                    slot,
                    wants_logits: false,
                    prompt: true,
                })
                .collect();
            for chunk in rows.chunks(batch_size.max(1)) {
                model.forward(
                    &BatchStep {
                        rows: chunk.to_vec(),
                    },
                    cache,
                )?;
            }
            prefix.rows = Some(cache.copy_slot_rows(slot, prefix.tokens.len())?);
            self.slot_holds[slot.0] = Some(p);
            computed += prefix.tokens.len();
        }
        Ok(computed)
    }

    /// Prepares `slot` for a job with prompt `prompt`: copies in the longest computed prefix
    /// the prompt starts with (unless the slot holds it already) and returns its length, the
    /// positions the job need not prefill; 0 when none applies. At least one prompt token is
    /// always left to prefill, for the logits of the first generated token.
    pub fn admit(
        &mut self,
        cache: &SlotKvCache,
        slot: SlotId,
        prompt: &[u32],
    ) -> Result<usize, ModelError> {
        let best = self
            .prefixes
            .iter()
            .enumerate()
            .filter(|(_, p)| {
                p.rows.is_some() && p.tokens.len() < prompt.len() && prompt.starts_with(&p.tokens)
            })
            .max_by_key(|(_, p)| p.tokens.len());
        let Some((index, prefix)) = best else {
            // The job overwrites the slot from position 0.
            self.slot_holds[slot.0] = None;
            return Ok(0);
        };
        if self.slot_holds[slot.0] != Some(index) {
            let rows = prefix.rows.as_ref().expect("computed");
            cache.write_slot_rows(slot, rows)?;
            self.slot_holds[slot.0] = Some(index);
        }
        Ok(prefix.tokens.len())
    }
}

/// The longest start the token lists share, less its last token: a token at the boundary with
/// the document may merge differently for another document (the engine checks every job's
/// ids against the prefix anyway).
pub fn shared_prefix(prompts: &[Vec<u32>]) -> Vec<u32> {
    let Some(first) = prompts.first() else {
        return Vec::new();
    };
    let common = prompts.iter().skip(1).fold(first.len(), |n, p| {
        first
            .iter()
            .zip(p)
            .take(n)
            .take_while(|(a, b)| a == b)
            .count()
    });
    first[..common.saturating_sub(1)].to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shared_prefix_stops_one_token_short() {
        assert_eq!(
            shared_prefix(&[vec![1, 2, 3, 4, 9], vec![1, 2, 3, 5], vec![1, 2, 3, 4]]),
            vec![1, 2]
        );
        assert_eq!(shared_prefix(&[vec![1, 2], vec![3]]), Vec::<u32>::new());
        assert_eq!(shared_prefix(&[]), Vec::<u32>::new());
    }
}
