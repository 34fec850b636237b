//! Each architecture's forward pass against llama.cpp's on the same file. The synthetic
//! reference files (`SyntheticSpec::reference`: 4 layers, 256 wide, head size 64, Q8_0; Gemma 3's
//! with a 32-token window, every second layer global) are written here byte for byte as
//! `scripts/llama-cpp-logits.sh` wrote them for llama.cpp of October 2026, whose next-token
//! log-probabilities at each of 96 positions are the fixtures `tests/fixtures/logits-ARCH.json`
//! (its 8 most likely tokens per position): CI checks against llama.cpp without building it.
//!
//! Our logits are computed for three sequences at once: one fed as prompt rows in a single
//! step, one in chunks of 7 rows, one a decode row at a time — every position of each must
//! match llama.cpp.

mod common;
mod real_model_support;

use std::path::Path;

use candle_core::Device;
use docanalyze::model::synthetic::{write_synthetic_gguf, SyntheticSpec};
use docanalyze::model::{BatchRow, BatchStep, GgufFile, Model, SlotId};
use real_model_support::log_softmax;

/// Largest |Δ log-probability| allowed on any of llama.cpp's 8 tokens at any position
/// (measured: 0.04-0.11 by architecture). llama.cpp multiplies Q8_0 weights by 8-bit
/// activations and stores attention scores in f16; this program keeps activations in f32. A
/// real fault is far outside: Gemma 3 without its window gives 2.9, Phi-3 with gate and up
/// swapped 4.6.
const TOLERANCE: f32 = 0.15;

struct Fixture {
    ids: Vec<u32>,
    /// Per position: llama.cpp's 8 most likely next tokens, `(id, log-probability)`.
    top: Vec<Vec<(usize, f32)>>,
}

fn fixture(arch: &str) -> Fixture {
    let path = format!(
        "{}/tests/fixtures/logits-{arch}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("fixture")).expect("json");
    let ids = (v["ids"].as_array().expect("ids").iter())
        .map(|i| i.as_u64().expect("id") as u32)
        .collect();
    let top = (v["top"].as_array().expect("top").iter())
        .map(|step| {
            (step.as_array().expect("step").iter())
                .map(|p| {
                    let p = p.as_array().expect("pair");
                    (
                        p[0].as_u64().expect("id") as usize,
                        p[1].as_f64().expect("lp") as f32,
                    )
                })
                .collect()
        })
        .collect();
    Fixture { ids, top }
}

/// Log-probabilities after every position of `ids`, for three sequences fed three ways in the
/// same steps (slot 0 all at once, slot 1 in chunks of 7, slot 2 a decode row at a time).
fn our_logprobs(model: &Model, ids: &[u32]) -> [Vec<Vec<f32>>; 3] {
    let cache = model.new_cache(3, 128).unwrap();
    let mut out: [Vec<Vec<f32>>; 3] = Default::default();
    let mut fed = [0usize; 3];
    let chunk = [ids.len(), 7, 1];
    while fed.iter().any(|&f| f < ids.len()) {
        // Decode rows first, then prompt rows (the batch's layout rule); slot 2's first token
        // is a prompt row, the rest decode rows.
        let mut decode = Vec::new();
        let mut prompt = Vec::new();
        for slot in 0..3 {
            let end = (fed[slot] + chunk[slot]).min(ids.len());
            for (p, &token) in ids.iter().enumerate().take(end).skip(fed[slot]) {
                let is_prompt = slot != 2 || p == 0;
                let row = BatchRow {
                    token,
                    position: p,
                    slot: SlotId(slot),
                    wants_logits: true,
                    prompt: is_prompt,
                };
                if is_prompt { &mut prompt } else { &mut decode }.push(row);
            }
            fed[slot] = end;
        }
        let step = BatchStep {
            rows: decode.into_iter().chain(prompt).collect(),
        };
        let logits: Vec<Vec<f32>> = model.forward(&step, &cache).unwrap().to_vec2().unwrap();
        for (row, l) in step.rows.iter().zip(logits) {
            out[row.slot.0].push(log_softmax(&l));
        }
    }
    out
}

fn check(arch: &str, dir: &Path) {
    let path = dir.join(format!("ref-{arch}.gguf"));
    write_synthetic_gguf(&SyntheticSpec::reference(arch), &path).unwrap();
    let mut gguf = GgufFile::open(&path).unwrap();
    let model = Model::load(&mut gguf, &Device::Cpu).unwrap();
    let f = fixture(arch);
    let ours = our_logprobs(&model, &f.ids);
    let (mut worst, mut ties, mut agree) = (0f32, 0, 0);
    for (way, lps) in ours.iter().enumerate() {
        assert_eq!(lps.len(), f.ids.len());
        for (p, (lp, top)) in lps.iter().zip(&f.top).enumerate() {
            for &(id, want) in top {
                let delta = (lp[id] - want).abs();
                worst = worst.max(delta);
                assert!(
                    delta <= TOLERANCE,
                    "{arch}, feed {way}, position {p}: token {id} log-probability {} vs llama.cpp's {want}",
                    lp[id]
                );
            }
            let first = (0..lp.len())
                .max_by(|&a, &b| lp[a].total_cmp(&lp[b]))
                .unwrap();
            // Where llama.cpp's first choice leads by less than two tolerances, the two
            // arithmetics may rank it either way.
            let lead = top[0].1 - top[1].1;
            agree += usize::from(first == top[0].0);
            if lead < 2.0 * TOLERANCE {
                ties += 1;
            } else {
                assert_eq!(
                    first, top[0].0,
                    "{arch}, feed {way}, position {p}: first choice"
                );
            }
        }
    }
    eprintln!(
        "{arch}: {agree} of 3 × {} first choices agree with llama.cpp ({ties} near ties); largest |Δ log-probability| {worst:.4}",
        f.ids.len()
    );
}

#[test]
fn every_architecture_matches_llama_cpp_at_every_position() {
    let dir = tempfile::tempdir().unwrap();
    for arch in ["llama", "qwen2", "qwen3", "gemma3", "phi3"] {
        check(arch, dir.path());
    }
}
