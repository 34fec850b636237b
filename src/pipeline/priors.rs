//! `--calibrate`: the label scores of a content-free input, per prompt.

use std::sync::Arc;

use super::job_key;
use crate::engine::{Engine, Flow, Job};
use crate::prompt::PromptBuilder;
use crate::sampler::SamplingParams;
use crate::tokenizer::Tokenizer;

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
