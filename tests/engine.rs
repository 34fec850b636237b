//! Correctness of batched inference on a random-weight model: one batched step equals the
//! per-sequence steps, and the engine's output does not depend on K, chunking or slot reuse.

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::quantized::GgmlDType;
use candle_core::Device;
use docanalyze::engine::{Completion, Engine, EngineConfig, Flow, Job, StopReason};
use docanalyze::model::synthetic::{
    write_synthetic_gguf, SyntheticSpec, CHATML_TEMPLATE, ENDOFTEXT_ID, IM_END_ID, IM_START_ID,
};
use docanalyze::model::{BatchRow, BatchStep, GgufFile, Model, SlotId, SlotKvCache};
use docanalyze::prompt::{PromptBuilder, PromptTemplate, PromptVars};
use docanalyze::sampler::{argmax, SamplingParams};
use docanalyze::tokenizer::Tokenizer;

/// Decode rows multiply 16-bit activations, prompt rows f32 ones: the same token's logits as a
/// decode row and as a prompt row differ by that rounding (up to 1.1e-4 measured, Q5_0).
const TOLERANCE: f32 = 2e-4;
/// F32 weights go through candle's gemm, whose f32 sums depend on how many rows share the
/// call; the f16 K/V cache turns those last-bit differences into f16 steps (3e-4 measured).
/// The quantized types run on the project's kernels, where a row never depends on its batch.
const F32_WEIGHTS_TOLERANCE: f32 = 1e-3;

/// A model and its tokenizer, written to and loaded from a temporary GGUF.
struct Fixture {
    model: Model,
    tokenizer: Tokenizer,
    chat_template: Option<String>,
    _dir: tempfile::TempDir,
}

fn load(spec: &SyntheticSpec) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("synthetic.gguf");
    write_synthetic_gguf(spec, &path).unwrap();
    let mut gguf = GgufFile::open(&path).unwrap();
    let tokenizer = Tokenizer::from_gguf(&gguf, None).unwrap();
    let chat_template = gguf.string("tokenizer.chat_template").ok();
    let model = Model::load(&mut gguf, &Device::Cpu).unwrap();
    Fixture {
        model,
        tokenizer,
        chat_template,
        _dir: dir,
    }
}

fn tiny() -> Fixture {
    load(&SyntheticSpec::tiny())
}

/// The tiny model once per matrix type: those of the project's CPU kernel with blocks of 32
/// (Q8_0, Q4_1, Q4_0, Q5_0, Q5_1) and one left to candle (F32).
fn tiny_per_dtype() -> impl Iterator<Item = (GgmlDType, Fixture)> {
    [
        GgmlDType::Q8_0,
        GgmlDType::Q4_1,
        GgmlDType::Q4_0,
        GgmlDType::Q5_0,
        GgmlDType::Q5_1,
        GgmlDType::F32,
    ]
    .into_iter()
    .map(|dtype| {
        let spec = SyntheticSpec {
            dtype,
            ..SyntheticSpec::tiny()
        };
        (dtype, load(&spec))
    })
}

/// A deterministic pseudo-random prompt of `len` ids below 256 (byte tokens).
fn prompt(len: usize, salt: u32) -> Vec<u32> {
    (0..len as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) ^ salt.wrapping_mul(40_503)) % 251)
        .collect()
}

/// Prompt rows `tokens[from..from + n]` of one sequence in `slot`.
fn rows(tokens: &[u32], from: usize, n: usize, slot: usize, all_logits: bool) -> Vec<BatchRow> {
    (from..from + n)
        .map(|p| BatchRow {
            token: tokens[p],
            position: p,
            slot: SlotId(slot),
            wants_logits: all_logits || p + 1 == from + n,
            prompt: true,
        })
        .collect()
}

fn forward(model: &Model, step: &BatchStep, cache: &SlotKvCache) -> Vec<Vec<f32>> {
    model.forward(step, cache).unwrap().to_vec2().unwrap()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn assert_close(got: &[f32], want: &[f32], what: &str) {
    let diff = max_abs_diff(got, want);
    let tolerance = if what.starts_with("F32:") {
        F32_WEIGHTS_TOLERANCE
    } else {
        TOLERANCE
    };
    assert!(
        diff <= tolerance,
        "{what}: logits differ by {diff} (> {tolerance}); argmax {} vs {}",
        argmax(got),
        argmax(want)
    );
}

/// Logits of every position of `tokens`, the sequence alone in a fresh one-slot cache, all
/// positions in one prefill step.
fn reference_logits(model: &Model, tokens: &[u32], ctx: usize) -> Vec<Vec<f32>> {
    let cache = model.new_cache(1, ctx).unwrap();
    let step = BatchStep {
        rows: rows(tokens, 0, tokens.len(), 0, true),
    };
    forward(model, &step, &cache)
}

#[test]
fn synthetic_gguf_loads_with_the_expected_shape() {
    let spec = SyntheticSpec::tiny();
    let fx = load(&spec);
    let c = &fx.model.config;
    assert_eq!(c.architecture, "llama");
    assert_eq!(c.n_layer, spec.n_layer);
    assert_eq!(c.n_embd, spec.n_embd);
    assert_eq!(c.n_head, spec.n_head);
    assert_eq!(c.n_kv_head, spec.n_kv_head);
    assert_eq!(c.head_dim, spec.n_embd / spec.n_head);
    assert_eq!(c.n_ff, spec.n_ff);
    assert_eq!(c.context_length, spec.context_length);
    assert_eq!(c.vocab_size, spec.vocab_size);
    assert_eq!(fx.chat_template.as_deref(), Some(CHATML_TEMPLATE));

    let logits = reference_logits(&fx.model, &prompt(5, 1), 16);
    assert_eq!(logits.len(), 5);
    assert!(logits.iter().all(|r| r.len() == spec.vocab_size));
    assert!(logits.iter().flatten().all(|l| l.is_finite()));
    // Random weights of order one give well-spread logits, not a near-uniform distribution.
    let row = &logits[4];
    let (min, max) = row
        .iter()
        .fold((f32::MAX, f32::MIN), |(a, b), &l| (a.min(l), b.max(l)));
    assert!(max - min > 1.0, "logits span only {}", max - min);
}

#[test]
fn synthetic_gguf_is_deterministic_per_seed() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = SyntheticSpec::tiny();
    let a = dir.path().join("a.gguf");
    let b = dir.path().join("b.gguf");
    let c = dir.path().join("c.gguf");
    write_synthetic_gguf(&spec, &a).unwrap();
    write_synthetic_gguf(&spec, &b).unwrap();
    spec.seed = 1;
    write_synthetic_gguf(&spec, &c).unwrap();
    let read = |p: &Path| std::fs::read(p).unwrap();
    assert_eq!(read(&a), read(&b));
    assert_ne!(read(&a), read(&c));
}

#[test]
fn synthetic_variants_load_and_run() {
    for (dtype, tied) in [
        (GgmlDType::Q4_1, false),
        (GgmlDType::Q4_0, true),
        (GgmlDType::F32, false),
    ] {
        let spec = SyntheticSpec {
            dtype,
            tied_embeddings: tied,
            ..SyntheticSpec::tiny()
        };
        let fx = load(&spec);
        let logits = reference_logits(&fx.model, &prompt(3, 2), 8);
        assert_eq!(logits.len(), 3, "{dtype:?}");
        assert!(logits.iter().flatten().all(|l| l.is_finite()), "{dtype:?}");
    }
    // K-quants need rows of 256.
    for dtype in [
        GgmlDType::Q2K,
        GgmlDType::Q3K,
        GgmlDType::Q4K,
        GgmlDType::Q5K,
        GgmlDType::Q6K,
    ] {
        let spec = SyntheticSpec {
            n_embd: 256,
            n_ff: 512,
            dtype,
            ..SyntheticSpec::tiny()
        };
        let fx = load(&spec);
        let logits = reference_logits(&fx.model, &prompt(2, 3), 4);
        assert_eq!(logits.len(), 2, "{dtype:?}");
        assert!(logits.iter().flatten().all(|l| l.is_finite()), "{dtype:?}");
    }
}

#[test]
fn synthetic_tokenizer_round_trips_and_knows_its_specials() {
    let fx = tiny();
    let tok = &fx.tokenizer;
    let ids = tok.encode("Hello world").unwrap();
    // "H e ll o Ġw or l d": the merges apply.
    assert_eq!(ids.len(), 8, "{ids:?}");
    assert_eq!(tok.decode(&ids).unwrap(), "Hello world");
    let text = "Ünïcödé\n\ttabs  and  the end";
    assert_eq!(tok.decode(&tok.encode(text).unwrap()).unwrap(), text);

    let chat = tok.encode("<|im_start|>user\nhi<|im_end|>").unwrap();
    assert_eq!(chat[0], IM_START_ID);
    assert_eq!(*chat.last().unwrap(), IM_END_ID);
    assert!(tok.is_end_of_generation(IM_END_ID));
    assert!(tok.is_end_of_generation(ENDOFTEXT_ID));
    assert_eq!(tok.eos_token(), Some("<|im_end|>"));
    assert_eq!(tok.bos_token(), Some("<|endoftext|>"));
    assert_eq!(tok.end_of_generation_ids(), vec![ENDOFTEXT_ID, IM_END_ID]);
}

#[test]
fn synthetic_chat_template_builds_prompts() {
    let fx = tiny();
    let template = PromptTemplate::resolve("summarize").unwrap();
    let builder = PromptBuilder::new(
        &template,
        fx.chat_template.as_deref(),
        Some("Be brief.".into()),
        PromptVars::default(),
        &fx.tokenizer,
    )
    .unwrap();
    let text = builder.render("doc-1", "The weather is fine.").unwrap();
    assert!(text.starts_with("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n"));
    assert!(
        text.ends_with("<|im_end|>\n<|im_start|>assistant\n"),
        "{text}"
    );
    let built = builder
        .build(&fx.tokenizer, "doc-1", "The weather is fine.", 256, 16)
        .unwrap();
    assert!(!built.truncated);
    assert_eq!(built.tokens[0], IM_START_ID);
    assert!(fx
        .tokenizer
        .decode(&built.tokens)
        .unwrap()
        .contains("The weather is fine."));
    // A long document is cut to fit the context.
    let long = "word ".repeat(500);
    let built = builder
        .build(&fx.tokenizer, "doc-2", &long, 128, 16)
        .unwrap();
    assert!(built.truncated);
    assert!(built.tokens.len() <= 128 - 16);
}

#[test]
fn prefill_equals_token_by_token_decode() {
    for (dtype, fx) in tiny_per_dtype() {
        prefill_equals_decode(&fx, &format!("{dtype:?}"));
    }
}

fn prefill_equals_decode(fx: &Fixture, what: &str) {
    let tokens = prompt(20, 7);
    let want = reference_logits(&fx.model, &tokens, 32);
    let cache = fx.model.new_cache(1, 32).unwrap();
    for (p, want) in want.iter().enumerate() {
        let step = BatchStep {
            rows: rows(&tokens, p, 1, 0, true),
        };
        let got = forward(&fx.model, &step, &cache);
        assert_close(&got[0], want, &format!("{what}: position {p}"));
    }
}

/// Decode attention splits a row's keys into spans of 256 and merges the spans: single rows
/// past one and two spans give one prefill's logits. Head size 64 (the AVX2 path where the
/// CPU has it), 3 query heads per K/V head, as in the default model.
#[test]
fn long_single_rows_equal_prefill_across_attention_spans() {
    let spec = SyntheticSpec {
        n_embd: 192,
        n_head: 3,
        n_kv_head: 1,
        n_ff: 256,
        context_length: 640,
        ..SyntheticSpec::tiny()
    };
    assert_eq!(spec.head_dim(), 64);
    let fx = load(&spec);
    let tokens = prompt(600, 3);
    let want = reference_logits(&fx.model, &tokens, 640);
    let cache = fx.model.new_cache(1, 640).unwrap();
    forward(
        &fx.model,
        &BatchStep {
            rows: rows(&tokens, 0, 250, 0, false),
        },
        &cache,
    );
    for (p, want) in want.iter().enumerate().skip(250) {
        let step = BatchStep {
            rows: rows(&tokens, p, 1, 0, true),
        };
        let got = forward(&fx.model, &step, &cache);
        assert_close(&got[0], want, &format!("position {p}"));
    }
}

#[test]
fn one_batched_step_equals_per_sequence_steps() {
    for (dtype, fx) in tiny_per_dtype() {
        one_batched_step(&fx, &format!("{dtype:?}"));
    }
}

fn one_batched_step(fx: &Fixture, what: &str) {
    let ctx = 48;
    let seqs: Vec<Vec<u32>> = [7, 1, 13, 4]
        .iter()
        .enumerate()
        .map(|(i, &n)| prompt(n, i as u32 + 10))
        .collect();
    let want: Vec<Vec<Vec<f32>>> = seqs
        .iter()
        .map(|s| reference_logits(&fx.model, s, ctx))
        .collect();

    // All sequences in one step, slots in reverse order of the rows, every row's logits.
    let cache = fx.model.new_cache(4, ctx).unwrap();
    let mut step = BatchStep::default();
    for (i, s) in seqs.iter().enumerate() {
        step.rows.extend(rows(s, 0, s.len(), 3 - i, true));
    }
    let got = forward(&fx.model, &step, &cache);
    let expected: Vec<(usize, usize, &Vec<f32>)> = want
        .iter()
        .enumerate()
        .flat_map(|(i, w)| w.iter().enumerate().map(move |(p, l)| (i, p, l)))
        .collect();
    assert_eq!(got.len(), expected.len());
    for (row, (i, p, want)) in got.iter().zip(expected) {
        assert_close(row, want, &format!("{what}: sequence {i} position {p}"));
    }

    // The same, only the last row of each sequence wanting logits.
    let cache = fx.model.new_cache(4, ctx).unwrap();
    let mut step = BatchStep::default();
    for (i, s) in seqs.iter().enumerate() {
        step.rows.extend(rows(s, 0, s.len(), i, false));
    }
    let got = forward(&fx.model, &step, &cache);
    assert_eq!(got.len(), seqs.len());
    for (i, s) in seqs.iter().enumerate() {
        assert_close(
            &got[i],
            &want[i][s.len() - 1],
            &format!("{what}: last row of {i}"),
        );
    }
}

/// Feeds `seqs` through one shared cache following `schedule`: each step lists
/// `(sequence, rows)` in row order. Every row's logits must equal the sequence run alone.
fn check_schedule(fx: &Fixture, what: &str, seqs: &[Vec<u32>], schedule: &[&[(usize, usize)]]) {
    let ctx = 64;
    let want: Vec<Vec<Vec<f32>>> = seqs
        .iter()
        .map(|s| reference_logits(&fx.model, s, ctx))
        .collect();
    // Sequence i lives in slot (i * 2 + 1) % slots, so slot and sequence numbers differ.
    let slots = seqs.len() + 1;
    let slot_of = |i: usize| (i * 2 + 1) % slots;
    let cache = fx.model.new_cache(slots, ctx).unwrap();
    let mut fed = vec![0; seqs.len()];
    for (n, plan) in schedule.iter().enumerate() {
        let mut step = BatchStep::default();
        let mut owners = Vec::new();
        for &(i, len) in plan.iter() {
            step.rows
                .extend(rows(&seqs[i], fed[i], len, slot_of(i), true));
            owners.extend((fed[i]..fed[i] + len).map(|p| (i, p)));
            fed[i] += len;
        }
        let got = forward(&fx.model, &step, &cache);
        assert_eq!(got.len(), owners.len());
        for (row, &(i, p)) in got.iter().zip(&owners) {
            assert_close(
                row,
                &want[i][p],
                &format!("{what}: step {n}: sequence {i} position {p}"),
            );
        }
    }
    for (i, s) in seqs.iter().enumerate() {
        assert_eq!(fed[i], s.len(), "schedule feeds all of sequence {i}");
    }
}

#[test]
fn mixed_decode_and_prefill_steps_equal_per_sequence_steps() {
    for (dtype, fx) in tiny_per_dtype() {
        mixed_steps(&fx, &format!("{dtype:?}"));
    }
}

fn mixed_steps(fx: &Fixture, what: &str) {
    let seqs: Vec<Vec<u32>> = [12, 9, 20, 3]
        .iter()
        .enumerate()
        .map(|(i, &n)| prompt(n, i as u32 + 20))
        .collect();
    check_schedule(
        fx,
        what,
        &seqs,
        &[
            // Prefill chunks of three sequences.
            &[(0, 10), (1, 8), (2, 5)],
            // 0 and 1 decode one token each while 2 prefills a chunk and 3 starts.
            &[(0, 1), (1, 1), (2, 9), (3, 2)],
            // Decode rows after the prefill, in another order.
            &[(3, 1), (2, 1), (0, 1)],
            &[(2, 5)],
        ],
    );
}

fn greedy_job(index: usize, prompt: Vec<u32>, max_tokens: usize, ignore_eos: bool) -> Job {
    Job {
        index,
        key: index as u64,
        prompt,
        max_tokens,
        ignore_eos,
        sampling: SamplingParams::default(),
        labels: None,
        json: None,
    }
}

/// Runs `jobs` through an engine; returns the completions by index, checking there is
/// exactly one per job.
fn run_engine(fx: &Fixture, config: EngineConfig, jobs: &[Job]) -> BTreeMap<usize, Completion> {
    run_engine_with(fx, config, jobs, &fx.tokenizer.end_of_generation_ids())
}

/// [`run_engine`] with `eog` as the end-of-generation ids.
fn run_engine_with(
    fx: &Fixture,
    config: EngineConfig,
    jobs: &[Job],
    eog: &[u32],
) -> BTreeMap<usize, Completion> {
    let mut engine = Engine::new(&fx.model, config, eog.iter().copied()).unwrap();
    let mut queue = jobs.iter().cloned();
    let mut done = BTreeMap::new();
    engine
        .run(
            || queue.next(),
            |c| {
                let index = c.index;
                assert!(
                    done.insert(index, c).is_none(),
                    "job {index} completed twice"
                );
                Flow::Continue
            },
        )
        .unwrap();
    assert_eq!(
        done.keys().copied().collect::<Vec<_>>(),
        jobs.iter().map(|j| j.index).collect::<Vec<_>>(),
        "one completion per job"
    );
    done
}

/// Greedy generation without the engine: whole prompt in one step, then one row per step.
fn greedy_reference(fx: &Fixture, prompt: &[u32], n: usize) -> Vec<u32> {
    let eog = fx.tokenizer.end_of_generation_ids();
    let cache = fx.model.new_cache(1, prompt.len() + n).unwrap();
    let mut logits = forward(
        &fx.model,
        &BatchStep {
            rows: rows(prompt, 0, prompt.len(), 0, false),
        },
        &cache,
    );
    let mut out = Vec::new();
    loop {
        let mut row = logits.pop().unwrap();
        for &id in &eog {
            row[id as usize] = f32::NEG_INFINITY;
        }
        let token = argmax(&row);
        out.push(token);
        if out.len() == n {
            return out;
        }
        let step = BatchStep {
            rows: vec![BatchRow {
                token,
                position: prompt.len() + out.len() - 1,
                slot: SlotId(0),
                wants_logits: true,
                prompt: false,
            }],
        };
        logits = forward(&fx.model, &step, &cache);
    }
}

fn prompts() -> Vec<Vec<u32>> {
    [1, 6, 17, 3, 30, 11, 2, 23]
        .iter()
        .enumerate()
        .map(|(i, &n)| prompt(n, i as u32 + 100))
        .collect()
}

fn tokens_of(done: &BTreeMap<usize, Completion>) -> Vec<(Vec<u32>, StopReason)> {
    done.values()
        .map(|c| (c.tokens.clone(), c.stop_reason))
        .collect()
}

#[test]
fn greedy_tokens_do_not_depend_on_k_or_chunking() {
    for (dtype, fx) in tiny_per_dtype() {
        greedy_k_invariance(&fx, &format!("{dtype:?}"));
    }
}

fn greedy_k_invariance(fx: &Fixture, what: &str) {
    let jobs: Vec<Job> = prompts()
        .into_iter()
        .enumerate()
        .map(|(i, p)| greedy_job(i, p, 12, true))
        .collect();
    let config = |sequences, batch_size| EngineConfig {
        sequences,
        ctx: 64,
        batch_size,
    };
    let k1 = run_engine(fx, config(1, 64), &jobs);
    for c in k1.values() {
        assert_eq!(c.tokens.len(), 12);
        assert_eq!(c.stop_reason, StopReason::Length);
        assert_eq!(
            c.tokens,
            greedy_reference(fx, &jobs[c.index].prompt, 12),
            "{what}: job {}: engine vs plain greedy loop",
            c.index
        );
    }
    // The test means something only if the model's answers depend on the prompt.
    let distinct: std::collections::HashSet<&Vec<u32>> = k1.values().map(|c| &c.tokens).collect();
    assert!(distinct.len() >= jobs.len() / 2, "{distinct:?}");

    let want = tokens_of(&k1);
    // Fewer rows than decoding sequences (4, 3) and one row per step (4, 1) included.
    for (sequences, batch_size) in [(4, 64), (4, 5), (3, 7), (4, 3), (4, 1)] {
        let got = tokens_of(&run_engine(fx, config(sequences, batch_size), &jobs));
        assert_eq!(got, want, "{what}: K={sequences} batch_size={batch_size}");
    }
}

#[test]
fn a_reused_slot_gives_the_output_of_a_fresh_engine() {
    let fx = &tiny();
    let config = |sequences| EngineConfig {
        sequences,
        ctx: 64,
        batch_size: 16,
    };
    let a = greedy_job(0, prompt(30, 1), 10, true);
    let b = greedy_job(1, prompt(5, 2), 10, true);
    let after_a = run_engine(fx, config(1), &[a, b.clone()]);
    let fresh = run_engine(fx, config(1), &[greedy_job(1, b.prompt.clone(), 10, true)]);
    assert_eq!(after_a[&1].tokens, fresh[&1].tokens);

    // More prompts than slots: every job equals the same job run alone.
    let jobs: Vec<Job> = prompts()
        .into_iter()
        .enumerate()
        .map(|(i, p)| greedy_job(i, p, 4 + i % 5, true))
        .collect();
    let shared = run_engine(fx, config(2), &jobs);
    for job in &jobs {
        let alone = run_engine(fx, config(1), std::slice::from_ref(job));
        assert_eq!(
            shared[&job.index].tokens, alone[&job.index].tokens,
            "job {}",
            job.index
        );
        assert_eq!(shared[&job.index].tokens.len(), job.max_tokens);
    }
}

#[test]
fn every_job_gets_exactly_one_completion() {
    let fx = tiny();
    let ctx = 16;
    let jobs = vec![
        greedy_job(0, prompt(5, 1), 3, true),   // max_tokens reached
        greedy_job(1, prompt(17, 2), 3, true),  // prompt longer than ctx
        greedy_job(2, prompt(16, 3), 3, true),  // prompt fills ctx: one token, then full
        greedy_job(3, prompt(14, 4), 10, true), // context fills while generating
        greedy_job(4, Vec::new(), 3, true),     // empty prompt
        greedy_job(5, prompt(4, 5), 0, true),   // nothing to generate
        greedy_job(6, prompt(40, 6), 3, true),  // far too long
        greedy_job(7, prompt(1, 7), 15, true),  // exactly fills the context
        greedy_job(8, prompt(2, 8), 1, true),   // one token
    ];
    for (sequences, batch_size) in [(1, 16), (3, 4), (4, 64)] {
        let done = run_engine(
            &fx,
            EngineConfig {
                sequences,
                ctx,
                batch_size,
            },
            &jobs,
        );
        let outcome = |i: usize| {
            (
                done[&i].tokens.len(),
                done[&i].stop_reason,
                done[&i].prompt_tokens,
            )
        };
        let what = format!("K={sequences} batch_size={batch_size}");
        assert_eq!(outcome(0), (3, StopReason::Length, 5), "{what}");
        assert_eq!(outcome(1), (0, StopReason::Context, 17), "{what}");
        assert_eq!(outcome(2), (1, StopReason::Context, 16), "{what}");
        assert_eq!(outcome(3), (3, StopReason::Context, 14), "{what}");
        assert_eq!(outcome(4), (0, StopReason::Context, 0), "{what}");
        assert_eq!(outcome(5), (0, StopReason::Length, 4), "{what}");
        assert_eq!(outcome(6), (0, StopReason::Context, 40), "{what}");
        assert_eq!(outcome(7), (15, StopReason::Length, 1), "{what}");
        assert_eq!(outcome(8), (1, StopReason::Length, 2), "{what}");
    }
}

#[test]
fn end_of_generation_stops_do_not_depend_on_k() {
    // Random weights rarely choose the real end-of-generation ids, so a token the model does
    // generate is declared the end of generation: sequences then stop at different steps.
    let fx = tiny();
    let jobs: Vec<Job> = prompts()
        .into_iter()
        .enumerate()
        .map(|(i, p)| greedy_job(i, p, 16, false))
        .collect();
    let config = |sequences, batch_size| EngineConfig {
        sequences,
        ctx: 64,
        batch_size,
    };
    let free = run_engine_with(&fx, config(1, 64), &jobs, &[]);
    // The token that cuts the most sequences short (neither empty nor whole), lowest id first.
    let mut cuts: BTreeMap<u32, usize> = BTreeMap::new();
    for c in free.values() {
        assert_eq!(c.tokens.len(), 16);
        let mut seen = std::collections::HashSet::new();
        for (at, &t) in c.tokens.iter().enumerate() {
            if seen.insert(t) && at > 0 {
                *cuts.entry(t).or_default() += 1;
            }
        }
    }
    let best = cuts.values().copied().max().unwrap();
    let (&stop, _) = cuts.iter().find(|(_, &n)| n == best).unwrap();
    let want: Vec<(Vec<u32>, StopReason)> = free
        .values()
        .map(|c| match c.tokens.iter().position(|&t| t == stop) {
            Some(at) => (c.tokens[..at].to_vec(), StopReason::Eos),
            None => (c.tokens.clone(), StopReason::Length),
        })
        .collect();
    assert!(
        want.iter()
            .filter(|(t, r)| *r == StopReason::Eos && !t.is_empty())
            .count()
            >= 2,
        "token {stop} ends too few sequences early: {want:?}"
    );
    for (sequences, batch_size) in [(1, 64), (4, 6), (3, 64)] {
        let got = tokens_of(&run_engine_with(
            &fx,
            config(sequences, batch_size),
            &jobs,
            &[stop],
        ));
        assert_eq!(got, want, "K={sequences} batch_size={batch_size}");
    }
}

#[test]
fn flow_stop_ends_the_run_early() {
    let fx = tiny();
    let jobs: Vec<Job> = prompts()
        .into_iter()
        .enumerate()
        .map(|(i, p)| greedy_job(i, p, 4, true))
        .collect();
    let mut engine = Engine::new(
        &fx.model,
        EngineConfig {
            sequences: 2,
            ctx: 64,
            batch_size: 16,
        },
        fx.tokenizer.end_of_generation_ids(),
    )
    .unwrap();
    let mut queue = jobs.into_iter();
    let mut seen = 0;
    engine
        .run(
            || queue.next(),
            |_| {
                seen += 1;
                if seen == 3 {
                    Flow::Stop
                } else {
                    Flow::Continue
                }
            },
        )
        .unwrap();
    assert_eq!(seen, 3);
}

#[test]
fn cpu_attention_equals_the_tensor_attention() {
    // The CPU kernel reads the slot cache in place; the tensor path (GPUs) slices it and uses
    // masks. Same logits for a mixed step of prefill chunks and decode rows.
    let mut fx = tiny();
    let seqs = [prompt(9, 1), prompt(3, 2), prompt(14, 3)];
    let mut results = Vec::new();
    for tensor in [false, true] {
        fx.model.use_tensor_attention(tensor);
        let cache = fx.model.new_cache(3, 32).unwrap();
        let mut first = BatchStep::default();
        first.rows.extend(rows(&seqs[0], 0, 9, 0, true));
        first.rows.extend(rows(&seqs[1], 0, 2, 1, true));
        first.rows.extend(rows(&seqs[2], 0, 6, 2, true));
        let mut second = BatchStep::default();
        second.rows.extend(rows(&seqs[1], 2, 1, 1, true));
        second.rows.extend(rows(&seqs[2], 6, 8, 2, true));
        // Then a decode row for each sequence, at different positions (the GPU attends them
        // together, padded to the longest).
        let third = BatchStep {
            rows: [(1usize, 3usize), (0, 9), (2, 14)]
                .iter()
                .map(|&(slot, position)| BatchRow {
                    token: 7,
                    position,
                    slot: SlotId(slot),
                    wants_logits: true,
                    prompt: false,
                })
                .collect(),
        };
        let a = forward(&fx.model, &first, &cache);
        let b = forward(&fx.model, &second, &cache);
        let c = forward(&fx.model, &third, &cache);
        results.push([a, b, c].concat());
    }
    let (cpu, tensor) = (&results[0], &results[1]);
    assert_eq!(cpu.len(), tensor.len());
    for (x, y) in cpu.iter().zip(tensor) {
        assert_close(x, y, "cpu vs tensor attention");
    }
}

/// Llama 3.1/3.2 files carry `rope_freqs.weight`: divisors of the rotary frequencies. All ones
/// change nothing; real divisors leave position 0 alone (its angles are 0) and change later
/// positions.
#[test]
fn llama3_rope_frequency_factors_are_applied() {
    let half = SyntheticSpec::tiny().head_dim() / 2;
    let with = |factors: Option<Vec<f32>>| {
        let spec = SyntheticSpec {
            rope_freqs: factors,
            ..SyntheticSpec::tiny()
        };
        reference_logits(&load(&spec).model, &prompt(6, 9), 16)
    };
    let plain = with(None);
    assert_eq!(with(Some(vec![1.0; half])), plain);
    let scaled = with(Some((0..half).map(|i| 1.0 + 4.0 * i as f32).collect()));
    assert_eq!(scaled[0], plain[0]);
    assert!(max_abs_diff(&scaled[5], &plain[5]) > 1e-3);
}

/// A shared prompt prefix computed once and copied into each job's slot gives the completions
/// of prefilling every prompt whole, at every K, across attention blocks, with slots reused by
/// jobs with and without the prefix; the copied tokens are counted.
#[test]
fn prefix_reuse_gives_the_completions_of_whole_prefills() {
    let fx = load(&SyntheticSpec {
        context_length: 1024,
        ..SyntheticSpec::tiny()
    });
    // A prefix that crosses an attention block (256), and one short one.
    let long_prefix = prompt(300, 77);
    let short_prefix = prompt(20, 78);
    let no_prefix = Vec::new();
    let mut jobs = Vec::new();
    for i in 0..9u32 {
        let (prefix, rest) = match i % 3 {
            0 => (&long_prefix, 1 + i as usize),
            1 => (&short_prefix, 40 + i as usize),
            _ => (&no_prefix, 15),
        };
        let mut tokens = prefix.clone();
        tokens.extend(prompt(rest, 100 + i));
        jobs.push(greedy_job(i as usize, tokens, 6, true));
    }
    for sequences in [1, 3] {
        let config = EngineConfig {
            sequences,
            ctx: 1024,
            batch_size: 64,
        };
        let plain = run_engine(&fx, config, &jobs);
        let mut engine =
            Engine::new(&fx.model, config, fx.tokenizer.end_of_generation_ids()).unwrap();
        engine.set_prefixes(vec![long_prefix.clone(), short_prefix.clone()]);
        let mut queue = jobs.iter().cloned();
        let mut reused = BTreeMap::new();
        engine
            .run(
                || queue.next(),
                |c| {
                    reused.insert(c.index, c);
                    Flow::Continue
                },
            )
            .unwrap();
        assert_eq!(reused.len(), jobs.len());
        for (i, c) in &reused {
            assert_eq!(c.tokens, plain[i].tokens, "K={sequences} job {i}");
            assert_eq!(c.prompt_tokens, plain[i].prompt_tokens);
        }
        assert_eq!(
            engine.stats.prompt_tokens_cached,
            3 * long_prefix.len() + 3 * short_prefix.len(),
            "K={sequences}"
        );
    }
}

/// The repeat guard reads only its own sequence's tokens: the same completions at every K, and
/// fewer repeated 4-grams than plain greedy on the random model's loops.
#[test]
fn the_repeat_guard_is_per_sequence_and_breaks_loops() {
    let fx = tiny();
    let jobs_with = |guard: Option<docanalyze::sampler::RepeatGuard>| -> Vec<Job> {
        (0..6)
            .map(|i| {
                let mut job = greedy_job(i, prompt(5 + i, i as u32 + 40), 60, true);
                job.sampling.repeat_guard = guard;
                job
            })
            .collect()
    };
    let guarded = jobs_with(Some(Default::default()));
    let config = |sequences| EngineConfig {
        sequences,
        ctx: 256,
        batch_size: 64,
    };
    let one = run_engine(&fx, config(1), &guarded);
    let three = run_engine(&fx, config(3), &guarded);
    for (i, c) in &one {
        assert_eq!(c.tokens, three[i].tokens, "job {i}");
    }
    let repeats = |done: &BTreeMap<usize, Completion>| -> usize {
        done.values()
            .map(|c| {
                let grams: Vec<&[u32]> = c.tokens.windows(4).collect();
                let distinct: std::collections::HashSet<&[u32]> = grams.iter().copied().collect();
                grams.len() - distinct.len()
            })
            .sum()
    };
    let plain = run_engine(&fx, config(3), &jobs_with(None));
    assert!(
        repeats(&one) < repeats(&plain),
        "guarded {} vs plain {} repeated 4-grams",
        repeats(&one),
        repeats(&plain)
    );
}

/// `--overflow truncate` keeps the start of a document: the prompt holds its first words and
/// not its last, and fits with room for the answer.
#[test]
fn truncation_keeps_the_start_of_the_document() {
    let fx = tiny();
    let builder = PromptBuilder::new(
        &PromptTemplate::resolve("summarize").unwrap(),
        fx.chat_template.as_deref(),
        None,
        PromptVars::default(),
        &fx.tokenizer,
    )
    .unwrap();
    let doc = format!("BEGINNING {} ENDING", "filler words here ".repeat(300));
    let built = builder
        .fit(
            &fx.tokenizer,
            "d",
            &doc,
            256,
            16,
            docanalyze::prompt::Overflow::Truncate,
        )
        .unwrap();
    assert!(built.truncated);
    assert!(built.tokens.len() <= 256 - 16, "{}", built.tokens.len());
    let text = fx.tokenizer.decode(&built.tokens).unwrap();
    assert!(text.contains("BEGINNING"), "{text}");
    assert!(!text.contains("ENDING"), "{text}");
    // The template's end (the assistant turn) is still there after the cut document.
    assert!(text.trim_end().ends_with("assistant"), "{text}");
}
