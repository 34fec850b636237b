//! The real default model loaded in-process, the Eiffel prompt and llama.cpp's answer to it,
//! and greedy runs through the engine: shared by `real_model.rs`, `int8_activations.rs`,
//! `real_gemma.rs` and `architectures_vs_references.rs`.
#![allow(dead_code)]

use candle_core::Device;
use docanalyze::engine::{Completion, Engine, EngineConfig, Flow, Job};
use docanalyze::model::{GgufFile, Model};
use docanalyze::prompt::{PromptBuilder, PromptTemplate, PromptVars};
use docanalyze::sampler::SamplingParams;
use docanalyze::tokenizer::Tokenizer;

pub const EIFFEL: &str = "Summarize in one sentence: The Eiffel Tower is a wrought-iron lattice tower in Paris, built from 1887 to 1889 as the entrance arch for the 1889 World's Fair.";

pub const EIFFEL_IDS: [u32; 79] = [
    1, 9690, 198, 2683, 359, 253, 5356, 5646, 11173, 3365, 3511, 308, 34519, 28, 7018, 411, 407,
    19712, 8182, 2, 198, 1, 4093, 198, 13764, 3298, 836, 281, 582, 6330, 42, 378, 414, 46682,
    18669, 314, 253, 34554, 29, 1009, 27672, 11637, 281, 7042, 28, 2837, 429, 216, 33, 40, 40, 39,
    288, 216, 33, 40, 40, 41, 347, 260, 11759, 2457, 327, 260, 216, 33, 40, 40, 41, 2260, 506,
    11285, 30, 2, 198, 1, 520, 9531, 198,
];

/// llama.cpp's greedy continuation: "The Eiffel Tower is a masterpiece of engineering and
/// architecture." then `<|im_end|>`.
pub const EIFFEL_ANSWER: [u32; 13] = [
    504, 414, 46682, 18669, 314, 253, 21720, 282, 4665, 284, 6277, 30, 2,
];

pub struct Loaded {
    pub model: Model,
    pub tokenizer: Tokenizer,
    pub chat_template: Option<String>,
}

pub fn load() -> Loaded {
    let mut gguf = GgufFile::open(&super::common::default_model()).unwrap();
    let tokenizer = Tokenizer::from_gguf(&gguf, None).unwrap();
    let chat_template = gguf.string("tokenizer.chat_template").ok();
    let model = Model::load(&mut gguf, &Device::Cpu).unwrap();
    Loaded {
        model,
        tokenizer,
        chat_template,
    }
}

/// The document alone as the user message, in the model's chat template.
pub fn raw_prompt_builder(l: &Loaded) -> PromptBuilder {
    let raw = PromptTemplate::from_source("raw", "{{ document }}");
    PromptBuilder::new(
        &raw,
        l.chat_template.as_deref(),
        None,
        PromptVars::default(),
        &l.tokenizer,
    )
    .unwrap()
}

pub fn eiffel_prompt(l: &Loaded) -> Vec<u32> {
    raw_prompt_builder(l)
        .build(&l.tokenizer, "eiffel", EIFFEL, 4096, 64)
        .unwrap()
        .tokens
}

/// Greedy answers of `prompts` (40 tokens at most) with `sequences` in flight.
pub fn generate(l: &Loaded, prompts: &[Vec<u32>], sequences: usize) -> Vec<Completion> {
    let config = EngineConfig {
        sequences,
        ctx: 512,
        batch_size: 512,
    };
    let eog = l.tokenizer.end_of_generation_ids();
    complete(&l.model, eog, prompts, config, 40, false)
}

/// Greedy completions of `prompts` through an engine on `model` (`eog`: its end-of-generation
/// ids), in prompt order.
pub fn complete(
    model: &Model,
    eog: Vec<u32>,
    prompts: &[Vec<u32>],
    config: EngineConfig,
    max_tokens: usize,
    ignore_eos: bool,
) -> Vec<Completion> {
    let mut engine = Engine::new(model, config, eog).unwrap();
    let mut jobs = prompts.iter().enumerate().map(|(index, p)| Job {
        index,
        key: index as u64,
        prompt: p.clone(),
        max_tokens,
        ignore_eos,
        sampling: SamplingParams::default(),
        labels: None,
        json: None,
    });
    let mut done = Vec::new();
    engine
        .run(
            || jobs.next(),
            |c| {
                done.push(c);
                Flow::Continue
            },
        )
        .unwrap();
    done.sort_by_key(|c| c.index);
    done
}

/// Log-softmax of one row of logits.
pub fn log_softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = logits.iter().map(|&l| ((l - max) as f64).exp()).sum();
    let lse = max + sum.ln() as f32;
    logits.iter().map(|&l| l - lse).collect()
}
