//! `--int8`: rows of 4-bit weights (prompt and decode rows) multiplied with 8-bit activations.
//! Every test of this file runs with it on (the switch is process-wide). The default model
//! still gives llama.cpp's answer to the Eiffel prompt, and answers stay the same whatever K
//! and however the prompts are cut into steps — in-process and through the binary.

mod cli_support;
mod common;
mod real_model_support;

use docanalyze::engine::{EngineConfig, StopReason};
use real_model_support::{complete, eiffel_prompt, generate, load, Loaded, EIFFEL_ANSWER};

fn int8() -> Loaded {
    docanalyze::model::set_int8_activations(true);
    load()
}

/// llama.cpp's answer to the Eiffel prompt, up to its closest call: the "." after
/// "architecture" leads "," by 0.03 logits in the default arithmetic; with 8-bit activations
/// "," wins and the sentence goes on ("…, built to celebrate the 1889 World's Fair in Paris.").
#[test]
fn greedy_decoding_follows_the_reference_answer_to_its_near_tie() {
    let l = int8();
    let done = generate(&l, &[eiffel_prompt(&l)], 1);
    assert_eq!(done[0].stop_reason, StopReason::Eos);
    let near_tie = 11;
    assert_eq!(done[0].tokens[..near_tie], EIFFEL_ANSWER[..near_tie]);
    assert_eq!(
        l.tokenizer.decode(&done[0].tokens).unwrap(),
        "The Eiffel Tower is a masterpiece of engineering and architecture, built to celebrate the 1889 World's Fair in Paris."
    );
}

/// Greedy tokens of several long prompts with 1 and 4 sequences and prompt steps of 512, 37
/// and 7 rows: all the same.
#[test]
fn answers_do_not_depend_on_k_or_prompt_steps() {
    let l = int8();
    let text = include_str!("../sample-data/docs/moby-dick-chapter-001.txt");
    let ids = l.tokenizer.encode(text).unwrap();
    let prompts: Vec<Vec<u32>> = (0..5)
        .map(|i| ids[i * 50..i * 50 + 150 + 40 * i].to_vec())
        .collect();
    let run = |sequences, batch_size| {
        let config = EngineConfig {
            sequences,
            ctx: 512,
            batch_size,
        };
        let eog = l.tokenizer.end_of_generation_ids();
        (complete(&l.model, eog, &prompts, config, 24, true).into_iter())
            .map(|c| c.tokens)
            .collect::<Vec<_>>()
    };
    let want = run(1, 512);
    for (k, batch) in [(4, 512), (4, 37), (3, 7), (1, 37)] {
        assert_eq!(run(k, batch), want, "K={k} batch {batch}");
    }
}

/// Through the binary: `--int8` with 8 sequences writes the records `--sequential`
/// writes.
#[test]
fn the_binary_gives_the_same_records_at_every_k() {
    let ws = cli_support::Workspace::new();
    let docs = ws.docs("docs", 6);
    let records = |k: &[&str]| -> Vec<String> {
        let out = cli_support::docanalyze()
            .env("DOCANALYZE_MODEL", common::default_model())
            .args(["run", "--int8", "--max-tokens", "24", "-q"])
            .args(k)
            .arg(&docs)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", cli_support::stderr_of(&out));
        let mut lines: Vec<String> = cli_support::stdout_of(&out)
            .lines()
            .map(|l| {
                let mut r: serde_json::Value = serde_json::from_str(l).unwrap();
                r.as_object_mut().unwrap().remove("latency_ms");
                r.to_string()
            })
            .collect();
        lines.sort();
        lines
    };
    assert_eq!(records(&["--sequences", "8"]), records(&["--sequential"]));
}
