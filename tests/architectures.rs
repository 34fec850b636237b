//! The architectures besides `llama` itself run through the binary, the same records at every
//! K: `mistral` and `qwen2` (with its q/k/v biases) load under their own key prefixes, the
//! biases are applied (the same matrices without them give other answers); `qwen3`, `gemma3`
//! (a 16-token window over prompts far longer) and `phi3` too. Their logits against llama.cpp's
//! are `tests/architectures_vs_references.rs`.

mod cli_support;

use std::path::Path;

use docanalyze::model::synthetic::{write_synthetic_gguf, SyntheticSpec};
use serde_json::Value;

fn write(dir: &Path, name: &str, spec: &SyntheticSpec) -> std::path::PathBuf {
    let path = dir.join(name);
    write_synthetic_gguf(spec, &path).unwrap();
    path
}

/// The records (id → output) of the model at `path` on `docs` with `--sequences k`.
fn outputs(model: &Path, docs: &Path, k: &str) -> Vec<(String, String)> {
    let out = cli_support::docanalyze()
        .args([
            "run",
            "--ctx-size",
            "256",
            "--max-tokens",
            "24",
            "--ignore-eos",
        ])
        .args(["--threads", "1", "--sequences", k, "-q", "--model"])
        .arg(model)
        .arg(docs)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", cli_support::stderr_of(&out));
    let mut records: Vec<(String, String)> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let r: Value = serde_json::from_str(l).unwrap();
            assert_eq!(r["status"], "ok", "{r}");
            (
                r["id"].as_str().unwrap().to_string(),
                r["output"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    records.sort();
    records
}

#[test]
fn mistral_and_qwen2_files_run_the_same_at_every_k() {
    let ws = cli_support::Workspace::new();
    let docs = ws.docs("docs", 6);
    let spec = |architecture: &str, qkv_bias: bool| SyntheticSpec {
        architecture: architecture.into(),
        qkv_bias,
        ..SyntheticSpec::tiny()
    };
    let dir = ws.path("models");
    std::fs::create_dir_all(&dir).unwrap();
    let llama = outputs(
        &write(&dir, "llama.gguf", &spec("llama", false)),
        &docs,
        "1",
    );
    let mistral_file = write(&dir, "mistral.gguf", &spec("mistral", false));
    let mistral = outputs(&mistral_file, &docs, "1");
    // The same layout and weights under another name: the same answers.
    assert_eq!(mistral, llama);
    assert_eq!(outputs(&mistral_file, &docs, "4"), mistral);

    let qwen2_file = write(&dir, "qwen2.gguf", &spec("qwen2", true));
    let qwen2 = outputs(&qwen2_file, &docs, "1");
    assert_eq!(outputs(&qwen2_file, &docs, "4"), qwen2);
    assert_eq!(outputs(&qwen2_file, &docs, "3"), qwen2);
    // The same matrices without the biases (qwen2 also rotates by halves, NEOX-style, so it
    // answers unlike llama either way): the biases change the answers.
    let unbiased = outputs(
        &write(&dir, "qwen2-nobias.gguf", &spec("qwen2", false)),
        &docs,
        "1",
    );
    assert_ne!(qwen2, unbiased, "the q/k/v biases were not applied");
    assert_ne!(unbiased, llama, "qwen2's rotation is not llama's");
}

#[test]
fn qwen3_gemma3_and_phi3_files_run_the_same_at_every_k() {
    let ws = cli_support::Workspace::new();
    let docs = ws.docs("docs", 6);
    let dir = ws.path("models");
    std::fs::create_dir_all(&dir).unwrap();
    let mut answers = Vec::new();
    for architecture in ["qwen3", "gemma3", "phi3"] {
        let spec = SyntheticSpec {
            architecture: architecture.into(),
            sliding_window: (architecture == "gemma3").then_some((16, 2)),
            ..SyntheticSpec::tiny()
        };
        let file = write(&dir, &format!("{architecture}.gguf"), &spec);
        let one = outputs(&file, &docs, "1");
        assert_eq!(outputs(&file, &docs, "4"), one, "{architecture}");
        assert_eq!(outputs(&file, &docs, "3"), one, "{architecture}");
        answers.push(one);
    }
    assert_ne!(answers[0], answers[1]);
    assert_ne!(answers[1], answers[2]);
}
