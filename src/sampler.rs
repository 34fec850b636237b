//! Choosing the next token from logits: greedy, or temperature / top-k / top-p with a seeded
//! RNG per job, so a sampled run is reproducible whatever the batch composition.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// How tokens are chosen.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplingParams {
    /// 0 means greedy.
    pub temperature: f32,
    /// 0 means no top-k cut.
    pub top_k: usize,
    /// 1.0 means no nucleus cut.
    pub top_p: f32,
    pub seed: u64,
    /// Penalize tokens that would repeat an earlier run of the answer (the command line turns
    /// it on by default; plain greedy without it).
    pub repeat_guard: Option<RepeatGuard>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            seed: 42,
            repeat_guard: None,
        }
    }
}

/// The DRY ("don't repeat yourself") penalty of llama.cpp and koboldcpp, over the answer's own
/// tokens: a token that would extend a repeat of an earlier span of `n ≥ allowed_length`
/// tokens loses `multiplier · base^(n − allowed_length)` from its logit. Deterministic, and
/// the same for a sequence whatever else shares its steps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RepeatGuard {
    pub multiplier: f32,
    pub base: f32,
    pub allowed_length: usize,
}

impl Default for RepeatGuard {
    /// llama.cpp's suggested DRY settings.
    fn default() -> Self {
        Self {
            multiplier: 0.8,
            base: 1.75,
            allowed_length: 2,
        }
    }
}

/// Repeats longer than this add no more penalty (base^n would overflow).
const MAX_PENALIZED_REPEAT: usize = 40;

impl RepeatGuard {
    /// Lowers the logits of the tokens that would extend a repeat of `generated`'s end.
    pub fn apply(&self, generated: &[u32], logits: &mut [f32]) {
        let len = generated.len();
        if len < self.allowed_length {
            return;
        }
        // For every earlier position i, how many tokens before it equal the answer's last ones:
        // token generated[i] would extend a repeat of that length.
        let mut longest: Vec<(u32, usize)> = Vec::new();
        for i in 1..len {
            let mut n = 0;
            while n < i && generated[i - 1 - n] == generated[len - 1 - n] {
                n += 1;
            }
            if n >= self.allowed_length {
                match longest.iter_mut().find(|(t, _)| *t == generated[i]) {
                    Some((_, m)) => *m = (*m).max(n),
                    None => longest.push((generated[i], n)),
                }
            }
        }
        for (token, n) in longest {
            let excess = (n - self.allowed_length).min(MAX_PENALIZED_REPEAT) as i32;
            if let Some(l) = logits.get_mut(token as usize) {
                *l -= self.multiplier * self.base.powi(excess);
            }
        }
    }
}

/// The sampler of one job.
pub struct Sampler {
    params: SamplingParams,
    rng: ChaCha8Rng,
}

impl Sampler {
    /// `job_key` distinguishes jobs (e.g. a hash of document id and prompt), so every job has
    /// its own random stream whatever order the scheduler runs them in.
    pub fn new(params: SamplingParams, job_key: u64) -> Self {
        let seed = params.seed ^ job_key.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        Self {
            params,
            rng: ChaCha8Rng::seed_from_u64(seed),
        }
    }

    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        if self.params.temperature <= 0.0 {
            return argmax(logits);
        }
        let mut candidates: Vec<(u32, f32)> = logits
            .iter()
            .enumerate()
            .filter(|(_, l)| l.is_finite())
            .map(|(i, &l)| (i as u32, l / self.params.temperature))
            .collect();
        if candidates.is_empty() {
            return argmax(logits);
        }
        // Highest first; ties by id so the order is deterministic.
        candidates.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        if self.params.top_k > 0 {
            candidates.truncate(self.params.top_k);
        }
        let max = candidates[0].1;
        let mut probs: Vec<f32> = candidates.iter().map(|(_, l)| (l - max).exp()).collect();
        let sum: f32 = probs.iter().sum();
        probs.iter_mut().for_each(|p| *p /= sum);
        if self.params.top_p < 1.0 {
            let mut cumulative = 0.0;
            let mut keep = probs.len();
            for (i, p) in probs.iter().enumerate() {
                cumulative += p;
                if cumulative >= self.params.top_p {
                    keep = i + 1;
                    break;
                }
            }
            probs.truncate(keep);
            let sum: f32 = probs.iter().sum();
            probs.iter_mut().for_each(|p| *p /= sum);
        }
        let r: f32 = self.rng.random();
        let mut cumulative = 0.0;
        for (i, p) in probs.iter().enumerate() {
            cumulative += p;
            if r < cumulative {
                return candidates[i].0;
            }
        }
        candidates[probs.len() - 1].0
    }
}

/// Index of the largest logit; the lowest index wins ties.
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &l) in logits.iter().enumerate() {
        if l > logits[best] {
            best = i;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_takes_the_first_maximum() {
        let mut s = Sampler::new(SamplingParams::default(), 1);
        assert_eq!(s.sample(&[0.1, 3.0, -1.0, 3.0]), 1);
    }

    #[test]
    fn seeded_sampling_is_reproducible_per_job() {
        let params = SamplingParams {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            seed: 7,
            repeat_guard: None,
        };
        let logits: Vec<f32> = (0..50).map(|i| (i % 7) as f32 * 0.3).collect();
        let draw = |key| {
            let mut s = Sampler::new(params, key);
            (0..20).map(|_| s.sample(&logits)).collect::<Vec<_>>()
        };
        assert_eq!(draw(3), draw(3));
        assert_ne!(draw(3), draw(4));
    }

    #[test]
    fn the_repeat_guard_penalizes_what_would_extend_a_repeat() {
        let guard = RepeatGuard::default();
        // "1 2 3 4 1 2 3": next 4 would repeat "1 2 3 4" (3 tokens matched before it).
        let mut logits = vec![0.0f32; 6];
        guard.apply(&[1, 2, 3, 4, 1, 2, 3], &mut logits);
        let expected = 0.8 * 1.75f32.powi(1);
        assert!((logits[4] + expected).abs() < 1e-6, "{logits:?}");
        assert_eq!(logits.iter().filter(|&&l| l != 0.0).count(), 1);
        // One matched token is allowed.
        let mut logits = vec![0.0f32; 6];
        guard.apply(&[1, 2, 5, 1], &mut logits);
        assert!(logits.iter().all(|&l| l == 0.0));
        // Long loops get a large penalty, without overflow.
        let looping: Vec<u32> = (0..400).map(|i| i % 5).collect();
        let mut logits = vec![0.0f32; 6];
        guard.apply(&looping, &mut logits);
        assert!(logits[0] < -1000.0 && logits[0].is_finite());
    }

    #[test]
    fn top_k_one_is_greedy() {
        let params = SamplingParams {
            temperature: 2.0,
            top_k: 1,
            top_p: 1.0,
            seed: 0,
            repeat_guard: None,
        };
        let mut s = Sampler::new(params, 9);
        for _ in 0..10 {
            assert_eq!(s.sample(&[0.0, 5.0, 4.9]), 1);
        }
    }
}
