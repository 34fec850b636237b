//! Long documents read whole (`--overflow chunk`, the default) with the real default model: a
//! fact at the end of a long document is found (and missed when it is cut), chunked records are
//! the same at K=8 and sequentially, a failing chunk makes its document's error record, and the
//! reduce ends even with `--max-tokens` near the context.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

fn records(stdout: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON record"))
        .collect()
}

/// Runs `docanalyze run INPUT ARGS… -o -`; the records and the exit code.
fn run(input: &Path, args: &[&str]) -> (Vec<Value>, i32) {
    let out = common::docanalyze()
        .arg("run")
        .arg(input)
        .args(["--quiet", "-o", "-"])
        .args(args)
        .output()
        .expect("runs");
    (records(&out.stdout), out.status.code().unwrap_or(-1))
}

/// A directory holding `name` with `text`.
fn doc_dir(name: &str, text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join(name), text).expect("write");
    let path = dir.path().to_path_buf();
    (dir, path)
}

fn sample(name: &str) -> String {
    std::fs::read_to_string(common::repo_path(&format!("sample-data/docs/{name}"))).expect("read")
}

#[test]
fn a_fact_in_the_last_chunk_is_found_and_missed_when_cut() {
    let text = format!(
        "{}\n\nThe invoice number is ZX-4471.\n",
        sample("moby-dick-chapter-041.txt")
    );
    let (_dir, input) = doc_dir("invoice.txt", &text);
    let args = [
        "--prompt",
        "extract",
        "--fields",
        "invoice_number",
        "--ctx-size",
        "1024",
    ];
    let (chunked, code) = run(&input, &args);
    assert_eq!(code, 0);
    assert_eq!(chunked.len(), 1);
    let r = &chunked[0];
    assert_eq!(r["status"], "ok", "{r}");
    assert!(r["chunks"].as_u64().unwrap() >= 4, "{r}");
    assert_eq!(r["fields"]["invoice_number"], "ZX-4471", "{r}");

    let (cut, code) = run(&input, &[&args[..], &["--overflow", "truncate"]].concat());
    assert_eq!(code, 0);
    assert_eq!(cut[0]["status"], "truncated");
    assert_eq!(cut[0]["chunks"], 1);
    assert_ne!(cut[0]["fields"]["invoice_number"], "ZX-4471", "{}", cut[0]);
}

/// `--chunk-tokens` bounds a chunk's document tokens: a ~5k-token chapter is 2 chunks when
/// they may be as big as the context allows, at least 5 at 1,000 tokens each, and one record
/// either way.
#[test]
fn chunk_tokens_sets_how_many_chunks_a_document_becomes() {
    let (_dir, input) = doc_dir("chapter.txt", &sample("moby-dick-chapter-041.txt"));
    let chunks = |size: &str| {
        let (records, code) = run(&input, &["--max-tokens", "1", "--chunk-tokens", size]);
        assert_eq!(code, 0);
        assert_eq!(records.len(), 1);
        assert_eq!(records[0]["status"], "ok", "{}", records[0]);
        records[0]["chunks"].as_u64().unwrap()
    };
    assert_eq!(chunks("100000"), 2);
    assert!(chunks("1000") >= 5);
}

/// The fields of a record that must not depend on K.
fn outcome(r: &Value) -> Value {
    let mut r = r.clone();
    let object = r.as_object_mut().expect("an object");
    object.remove("latency_ms");
    r
}

#[test]
fn chunked_records_are_the_same_at_eight_sequences_and_sequentially() {
    let (_dir, input) = doc_dir("wilson.txt", &sample("sotu-1916_woodrow_wilson_d.txt"));
    let report = tempfile::NamedTempFile::new().expect("report file");
    let report_arg = report.path().display().to_string();
    let args = |k: &[&'static str]| -> Vec<String> {
        [
            "--ctx-size",
            "384",
            "--max-tokens",
            "24",
            "--prompt",
            "summarize",
            "--prompt",
            "sentiment",
            "--prompt",
            "keywords",
            "--report",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain([report_arg.clone()])
        .chain(k.iter().map(|s| s.to_string()))
        .collect()
    };
    let by_prompt = |records: Vec<Value>| -> BTreeMap<String, Value> {
        records
            .iter()
            .map(|r| (r["prompt"].as_str().unwrap().to_string(), outcome(r)))
            .collect()
    };
    let k8 = args(&["--sequences", "8"]);
    let (batched, code) = run(&input, &k8.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(code, 0);
    assert_eq!(batched.len(), 3, "one record per prompt: {batched:?}");
    let report_k8: Value =
        serde_json::from_str(&std::fs::read_to_string(report.path()).unwrap()).unwrap();
    let seq = args(&["--sequential"]);
    let (sequential, code) = run(&input, &seq.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(code, 0);
    for r in &batched {
        assert_eq!(r["status"], "ok", "{r}");
        assert!(r["chunks"].as_u64().unwrap() > 1, "{r}");
        assert!(!r["output"].as_str().unwrap().is_empty(), "{r}");
    }
    let labels = batched.iter().find(|r| r["prompt"] == "sentiment").unwrap();
    assert!(["positive", "negative", "neutral"].contains(&labels["output"].as_str().unwrap()));
    let keywords = batched.iter().find(|r| r["prompt"] == "keywords").unwrap();
    assert!(
        keywords["fields"].as_array().unwrap().len() <= 10,
        "{keywords}"
    );
    assert_eq!(by_prompt(batched.clone()), by_prompt(sequential));

    let chunks: u64 = batched.iter().map(|r| r["chunks"].as_u64().unwrap()).sum();
    assert_eq!(report_k8["documents_chunked"], 3);
    assert_eq!(report_k8["chunks"].as_u64(), Some(chunks));
    assert!(
        report_k8["reduce_calls"].as_u64().unwrap() >= 1,
        "{report_k8}"
    );
}

#[test]
fn a_failing_chunk_makes_its_documents_error_record() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("long.txt"),
        sample("moby-dick-chapter-001.txt"),
    )
    .unwrap();
    std::fs::write(dir.path().join("short.txt"), "Call me Ishmael.").unwrap();
    // Three tokens cannot hold a JSON object of the field: every answer's JSON is incomplete.
    let (records, code) = run(
        dir.path(),
        &[
            "--ctx-size",
            "512",
            "--max-tokens",
            "3",
            "--prompt",
            "extract",
            "--fields",
            "narrator_name",
        ],
    );
    assert_eq!(code, 1);
    assert_eq!(records.len(), 2, "{records:?}");
    let long = records.iter().find(|r| r["id"] == "long.txt").unwrap();
    assert_eq!(long["status"], "error");
    let error = long["error"].as_str().unwrap();
    assert!(error.contains("incomplete JSON"), "{error}");
    assert!(error.contains("chunks)"), "{error}");
    assert!(long["chunks"].as_u64().unwrap() > 1);
}

#[test]
fn the_reduce_ends_with_max_tokens_near_the_context() {
    let start: String = sample("sotu-1916_woodrow_wilson_d.txt")
        .chars()
        .take(2500)
        .collect();
    let (_dir, input) = doc_dir("wilson.txt", &start);
    let (records, code) = run(
        &input,
        &[
            "--ctx-size",
            "256",
            "--max-tokens",
            "200",
            "--sequences",
            "8",
        ],
    );
    assert_eq!(code, 0);
    assert_eq!(records.len(), 1);
    let r = &records[0];
    assert_eq!(r["status"], "ok", "{r}");
    assert!(r["chunks"].as_u64().unwrap() > 2, "{r}");
    assert!(!r["output"].as_str().unwrap().is_empty(), "{r}");
}
