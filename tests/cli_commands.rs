//! `info`, `bench` and argument errors through the binary, on a tiny random model.

mod cli_support;

use cli_support::{docanalyze, stderr_of, stdout_of, Workspace};
use serde_json::Value;

/// KV bytes per token of the tiny model: 2 (K, V) × 2 layers × 2 kv heads × 16 dims × 2 bytes
/// (f16).
const TINY_KV_BYTES_PER_TOKEN: u64 = 256;

#[test]
fn info_prints_the_kv_bytes() {
    let ws = Workspace::new();
    let output = docanalyze()
        .arg("info")
        .arg("--model")
        .arg(&ws.model)
        .args(["--ctx-size", "256", "--memory-budget", "64MiB"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr_of(&output));
    let text = stdout_of(&output);
    let line = |label: &str| {
        text.lines()
            .find(|l| l.starts_with(label))
            .unwrap_or_else(|| panic!("no `{label}` line in\n{text}"))
            .to_string()
    };
    assert!(line("KV bytes per token").contains("256 (f16 K and V)"));
    assert!(line("KV bytes per sequence").contains(&(256 * TINY_KV_BYTES_PER_TOKEN).to_string()));
    assert!(line("architecture").ends_with("llama"));
    assert!(line("tensor types").contains("Q8_0"));
    assert!(line("largest K").contains("at ctx 256"));
}

#[test]
fn info_json_computes_the_largest_k_from_the_budget() {
    let ws = Workspace::new();
    let output = docanalyze()
        .arg("info")
        .arg("--model")
        .arg(&ws.model)
        .args(["--ctx-size", "256", "--batch-size", "16", "--json"])
        .args(["--memory-budget", "10MiB"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr_of(&output));
    let info: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(info["kv_bytes_per_token"], TINY_KV_BYTES_PER_TOKEN);
    assert_eq!(info["kv_bytes_per_sequence"], 256 * TINY_KV_BYTES_PER_TOKEN);
    assert_eq!(info["layers"], 2);
    let n = |k: &str| info[k].as_u64().unwrap();
    // The weights are the file's tensors: most of the file, never more.
    let file = std::fs::metadata(&ws.model).unwrap().len();
    assert!(
        n("weights_bytes") <= file && n("weights_bytes") >= file / 2,
        "{} of a {file}-byte file",
        n("weights_bytes")
    );
    assert!(n("activation_bytes") > 0);
    let expected = (n("memory_budget_bytes") - n("weights_bytes") - n("activation_bytes"))
        / n("kv_bytes_per_sequence");
    assert_eq!(n("max_sequences"), expected);
    assert!(
        expected > 1,
        "a 10 MiB budget holds several 64 KiB sequences"
    );
    assert_eq!(n("memory_budget_bytes"), 10 * 1024 * 1024);
}

#[test]
fn bench_prints_a_row_per_k() {
    let ws = Workspace::new();
    let docs = ws.docs("docs", 4);
    let report = ws.path("bench.json");
    let output = docanalyze()
        .arg("bench")
        .arg(&docs)
        .arg("--model")
        .arg(&ws.model)
        .args([
            "--sequences",
            "1,2",
            "--ctx-size",
            "256",
            "--max-tokens",
            "8",
            "-q",
        ])
        .arg("--report")
        .arg(&report)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr_of(&output));
    let table = stdout_of(&output);
    let rows: Vec<Vec<&str>> = table
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|w| w.first().is_some_and(|k| k.parse::<usize>().is_ok()))
        .collect();
    assert_eq!(rows.len(), 2, "{table}");
    assert_eq!((rows[0][0], rows[1][0]), ("1", "2"));
    assert_eq!(rows[0].last(), Some(&"1.00x"), "{table}");
    assert!(table.contains("outputs identical across K: yes"), "{table}");
    let json: Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    let rows = json["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[1]["sequences"], 2);
    assert_eq!(rows[1]["documents_ok"], 4);
    assert_eq!(json["outputs_identical"], true);
}

/// Runs `args` and returns stderr, asserting exit code 2.
fn fatal(args: &[&str]) -> String {
    let output = docanalyze().args(args).output().unwrap();
    let stderr = stderr_of(&output);
    assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
    assert!(output.stdout.is_empty(), "{args:?} wrote to stdout");
    stderr
}

#[test]
fn bad_engine_sizes_exit_2_naming_the_flag() {
    let ws = Workspace::new();
    let docs = ws.docs("docs", 1);
    let docs = docs.to_str().unwrap();
    assert!(fatal(&["run", docs, "--sequences", "0"]).contains("--sequences"));
    assert!(fatal(&["run", docs, "--batch-size", "0"]).contains("--batch-size"));
    assert!(fatal(&["bench", docs, "--sequences", "1,0"]).contains("--sequences"));
    assert!(fatal(&["run", docs, "--sequences", "many"]).contains("--sequences"));
}

#[test]
fn unknown_prompt_exits_2_naming_it() {
    let ws = Workspace::new();
    let docs = ws.docs("docs", 1);
    let stderr = fatal(&["run", docs.to_str().unwrap(), "--prompt", "haiku"]);
    assert!(stderr.contains("--prompt"), "{stderr}");
    assert!(stderr.contains("haiku"), "{stderr}");
}

#[test]
fn missing_input_exits_2_naming_the_path() {
    let ws = Workspace::new();
    let missing = ws.path("no-such-folder");
    let stderr = fatal(&["run", missing.to_str().unwrap()]);
    assert!(stderr.contains("no-such-folder"), "{stderr}");
}

#[test]
fn missing_model_exits_2_naming_the_file() {
    let ws = Workspace::new();
    let docs = ws.docs("docs", 1);
    let stderr = fatal(&[
        "run",
        docs.to_str().unwrap(),
        "--model",
        "/nonexistent/model.gguf",
    ]);
    assert!(stderr.contains("/nonexistent/model.gguf"), "{stderr}");
}

#[test]
fn help_documents_the_exit_codes() {
    for args in [&["--help"][..], &["run", "--help"], &["bench", "--help"]] {
        let output = docanalyze().args(args).output().unwrap();
        assert!(output.status.success());
        let help = stdout_of(&output);
        assert!(help.contains("Exit codes:"), "{args:?}");
        assert!(help.contains("  2  fatal"), "{args:?}");
    }
}
