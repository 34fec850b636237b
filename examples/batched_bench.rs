//! The workloads of llama.cpp's `llama-batched-bench -npp 128 -ntg 128 -npl 1,2,4,8,16` and
//! `llama-bench -p 512 -n 128`, run on docanalyze's engine, so the two can be compared on the
//! same model and machine (see scripts/bench-vs-llama-cpp.sh and BENCHMARKS.md).
//!
//! cargo run --release --example batched_bench -- [--model M] [--threads N] [--npl 1,2,4,8,16]
//!     [--npp 128] [--ntg 128] [--device cpu|cuda] [--llama-bench true|false]

use std::time::Instant;

use anyhow::Context;
use clap::ValueEnum;
use docanalyze::cli::DeviceArg;
use docanalyze::device::{device_name, select_device};
use docanalyze::engine::{Engine, EngineConfig, Flow, Job};
use docanalyze::model::{GgufFile, Model};
use docanalyze::sampler::SamplingParams;
use docanalyze::tokenizer::Tokenizer;

struct Args {
    model: std::path::PathBuf,
    device: DeviceArg,
    threads: usize,
    npl: Vec<usize>,
    npp: usize,
    ntg: usize,
    /// Also run the `llama-bench -p 512 -n 128` workload.
    llama_bench: bool,
}

fn parse() -> anyhow::Result<Args> {
    let mut args = Args {
        model: docanalyze::model_source::default_model_path(),
        device: DeviceArg::Cpu,
        threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        npl: vec![1, 2, 4, 8, 16],
        npp: 128,
        ntg: 128,
        llama_bench: true,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--model" => args.model = value.into(),
            "--threads" => args.threads = value.parse()?,
            "--device" => {
                args.device = DeviceArg::from_str(&value, true).map_err(anyhow::Error::msg)?
            }
            "--npl" => args.npl = value.split(',').map(str::parse).collect::<Result<_, _>>()?,
            "--npp" => args.npp = value.parse()?,
            "--ntg" => args.ntg = value.parse()?,
            "--llama-bench" => args.llama_bench = value.parse()?,
            _ => anyhow::bail!("unknown flag {flag}"),
        }
    }
    Ok(args)
}

/// `n` prompt tokens of real text, different for every sequence.
fn prompt(tokenizer: &Tokenizer, seq: usize, n: usize) -> anyhow::Result<Vec<u32>> {
    let text = include_str!("../sample-data/docs/moby-dick-chapter-001.txt");
    let ids = tokenizer.encode(text)?;
    Ok(ids.iter().cycle().skip(seq * 37).take(n).copied().collect())
}

/// Runs `jobs` at once on `sequences` slots; returns (prefill s, decode s, prefill tokens,
/// decode tokens, wall s).
fn run(
    model: &Model,
    tokenizer: &Tokenizer,
    sequences: usize,
    npp: usize,
    ntg: usize,
) -> anyhow::Result<(f64, f64, usize, usize, f64)> {
    let mut engine = Engine::new(
        model,
        EngineConfig {
            sequences,
            ctx: npp + ntg + 1,
            batch_size: (sequences * npp).max(512),
        },
        tokenizer.end_of_generation_ids(),
    )?;
    let mut jobs = (0..sequences)
        .map(|i| {
            Ok(Job {
                index: i,
                key: i as u64,
                prompt: prompt(tokenizer, i, npp)?,
                max_tokens: ntg,
                ignore_eos: true,
                sampling: SamplingParams::default(),
                labels: None,
                json: None,
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?
        .into_iter();
    let started = Instant::now();
    engine.run(|| jobs.next(), |_| Flow::Continue)?;
    let wall = started.elapsed().as_secs_f64();
    let s = &engine.stats;
    Ok((
        s.prefill_time.as_secs_f64(),
        s.decode_time.as_secs_f64(),
        s.prefill_tokens,
        s.decode_tokens,
        wall,
    ))
}

fn main() -> anyhow::Result<()> {
    let args = parse()?;
    docanalyze::app::init_threads(args.threads);
    let mut gguf = GgufFile::open(&args.model)?;
    let tokenizer = Tokenizer::from_gguf(&gguf, None)?;
    let device = select_device(args.device)?;
    let model = Model::load(&mut gguf, &device)?;
    run(&model, &tokenizer, 1, 16, 4)?; // warm-up

    println!(
        "docanalyze on {}, {} threads, {}",
        device_name(&device),
        args.threads,
        args.model.display()
    );
    if args.llama_bench {
        println!("llama-bench workload:");
        let (pp, _, pp_tokens, _, _) = run(&model, &tokenizer, 1, 512, 1)?;
        let (_, tg, _, tg_tokens, _) = run(&model, &tokenizer, 1, 16, args.ntg + 1)?;
        println!("| test  | t/s |");
        println!("| pp512 | {:.2} |", pp_tokens as f64 / pp);
        println!("| tg{}  | {:.2} |", args.ntg, tg_tokens as f64 / tg);
    }
    println!(
        "batched-bench workload (npp {}, ntg {}):",
        args.npp, args.ntg
    );
    println!("|  PP |  TG |  B |  S_PP t/s |  S_TG t/s |  T s | speedup S_TG vs B=1 |");
    let mut base = None;
    for &b in &args.npl {
        let (pp, tg, pp_tokens, tg_tokens, wall) = run(&model, &tokenizer, b, args.npp, args.ntg)?;
        let s_tg = tg_tokens as f64 / tg;
        let base = *base.get_or_insert(s_tg);
        println!(
            "| {} | {} | {b} | {:.2} | {:.2} | {:.2} | {:.2} |",
            args.npp,
            args.ntg,
            pp_tokens as f64 / pp,
            s_tg,
            wall,
            s_tg / base
        );
    }
    Ok(())
}
