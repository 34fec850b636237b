//! Checks a GPU build against the CPU on one model: greedy tokens of a few prompts (K=3) and
//! the largest logit difference of a prefill step. Exits 1 when the tokens differ.
//!
//! cargo run --release --features cuda --example device_check -- MODEL.gguf [cuda|metal]

use clap::ValueEnum;
use docanalyze::cli::DeviceArg;
use docanalyze::device::select_device;
use docanalyze::engine::{Engine, EngineConfig, Flow, Job};
use docanalyze::model::{BatchRow, BatchStep, GgufFile, Model, SlotId};
use docanalyze::sampler::SamplingParams;
use docanalyze::tokenizer::Tokenizer;

fn greedy(model: &Model, eog: Vec<u32>, prompts: &[Vec<u32>]) -> anyhow::Result<Vec<Vec<u32>>> {
    let mut engine = Engine::new(
        model,
        EngineConfig {
            sequences: 3,
            ctx: 256,
            batch_size: 256,
        },
        eog,
    )?;
    let mut jobs = prompts.iter().enumerate().map(|(index, p)| Job {
        index,
        key: index as u64,
        prompt: p.clone(),
        max_tokens: 16,
        ignore_eos: true,
        sampling: SamplingParams::default(),
        labels: None,
        json: None,
    });
    let mut out = vec![Vec::new(); prompts.len()];
    engine.run(
        || jobs.next(),
        |c| {
            out[c.index] = c.tokens;
            Flow::Continue
        },
    )?;
    Ok(out)
}

fn first_logits(model: &Model, prompt: &[u32]) -> anyhow::Result<Vec<f32>> {
    let cache = model.new_cache(1, 256)?;
    let step = BatchStep {
        rows: prompt
            .iter()
            .enumerate()
            .map(|(i, &token)| BatchRow {
                token,
                position: i,
                slot: SlotId(0),
                wants_logits: i + 1 == prompt.len(),
                prompt: true,
            })
            .collect(),
    };
    Ok(model.forward(&step, &cache)?.flatten_all()?.to_vec1()?)
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .ok_or_else(|| anyhow::anyhow!("usage: device_check MODEL.gguf [cuda|metal]"))?;
    let device = DeviceArg::from_str(&args.next().unwrap_or_else(|| "cuda".into()), true)
        .map_err(anyhow::Error::msg)?;
    let gpu = select_device(device)?;
    let mut gguf = GgufFile::open(std::path::Path::new(&path))?;
    let tokenizer = Tokenizer::from_gguf(&gguf, None)?;
    let cpu_model = Model::load(&mut gguf, &candle_core::Device::Cpu)?;
    let gpu_model = Model::load(&mut gguf, &gpu)?;
    let prompts: Vec<Vec<u32>> = [
        "Hello world",
        "The quick brown fox jumps over the lazy dog.",
        "1 2 3",
    ]
    .iter()
    .map(|t| tokenizer.encode(t))
    .collect::<Result<_, _>>()?;
    let eog = tokenizer.end_of_generation_ids();
    let a = first_logits(&cpu_model, &prompts[1])?;
    let b = first_logits(&gpu_model, &prompts[1])?;
    let diff = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    let scale = a.iter().map(|x| x.abs()).fold(0f32, f32::max);
    println!("prefill logits: max |cpu - gpu| = {diff:.3e} (max |logit| {scale:.3})");
    let cpu = greedy(&cpu_model, eog.clone(), &prompts)?;
    let gpu_tokens = greedy(&gpu_model, eog, &prompts)?;
    let mut same = true;
    for (i, (c, g)) in cpu.iter().zip(&gpu_tokens).enumerate() {
        let agree = c.iter().zip(g).take_while(|(x, y)| x == y).count();
        println!("prompt {i}: greedy tokens agree for {agree}/{} ", c.len());
        same &= c == g;
    }
    println!("greedy tokens cpu == gpu: {same}");
    std::process::exit(if same { 0 } else { 1 });
}
