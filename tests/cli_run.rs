//! `docanalyze run` through the binary on a tiny random model: output formats, stdout hygiene,
//! a closed pipe, several prompts, the report and the exit codes.

mod cli_support;

use std::io::{BufRead, BufReader};
use std::process::Stdio;

use cli_support::{stderr_of, stdout_of, Workspace};
use serde_json::Value;

/// The contract's CSV columns, in order.
const CSV_HEADER: &str =
    "id,source,prompt,status,output,stop_reason,prompt_tokens,generated_tokens,latency_ms,error,chunks";

/// The keys DESIGN.md §2 promises in `--report`.
const REPORT_KEYS: [&str; 19] = [
    "model",
    "device",
    "sequences",
    "batch_size",
    "documents_ok",
    "documents_failed",
    "wall_s",
    "load_s",
    "prompt_tokens",
    "prefill_tok_per_s",
    "generated_tokens",
    "decode_tok_per_s",
    "docs_per_min",
    "latency_p50_ms",
    "latency_p95_ms",
    "mean_active_sequences",
    "kv_bytes_per_sequence",
    "kv_bytes_total",
    "peak_rss_bytes",
];

#[test]
fn csv_output_starts_with_the_contract_header() {
    let ws = Workspace::new();
    let docs = ws.docs("docs", 3);
    let out = ws.path("out.csv");
    ws.run()
        .arg(&docs)
        .arg("-o")
        .arg(&out)
        .arg("-q")
        .assert()
        .success();
    let text = std::fs::read_to_string(&out).unwrap();
    assert_eq!(text.lines().next(), Some(CSV_HEADER));
    let mut reader = csv::Reader::from_path(&out).unwrap();
    assert_eq!(reader.records().count(), 3);
}

#[test]
fn jsonl_on_stdout_is_data_only() {
    let ws = Workspace::new();
    let docs = ws.docs("docs", 3);
    // Not quiet: the report table and any logs must go to stderr.
    let output = ws.run().arg(&docs).output().unwrap();
    assert!(output.status.success(), "{}", stderr_of(&output));
    let stdout = stdout_of(&output);
    let records: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}")))
        .collect();
    assert_eq!(records.len(), 3);
    for r in &records {
        assert!(r["id"].as_str().unwrap().starts_with("doc-"));
        assert_ne!(r["status"], "error", "{r}");
    }
    assert!(stderr_of(&output).contains("docanalyze report"));
}

#[test]
fn progress_bar_stays_off_a_stderr_that_is_not_a_terminal() {
    let ws = Workspace::new();
    let docs = ws.docs("docs", 2);
    let output = ws.run().arg(&docs).output().unwrap();
    assert!(output.status.success());
    let stderr = stderr_of(&output);
    assert!(stderr.contains("docanalyze report"), "{stderr:?}");
    assert!(!stderr.contains('\r'), "{stderr:?}");
    assert!(!stderr.contains("\x1b["), "{stderr:?}");
}

/// On a terminal (a pseudo-terminal from util-linux `script`, where it is installed) the bar
/// is drawn: its "N tok/s, K active" is written nowhere else.
#[test]
fn progress_bar_is_drawn_on_a_terminal() {
    if std::process::Command::new("script")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("skipped: no `script` to make a terminal");
        return;
    }
    let ws = Workspace::new();
    let docs = ws.docs("docs", 40);
    let out = ws.path("out.jsonl");
    let mut command = vec![assert_cmd::cargo::cargo_bin("docanalyze")
        .display()
        .to_string()];
    command.extend(
        ws.run_args()
            .iter()
            .map(|a| a.to_string_lossy().into_owned()),
    );
    command.extend([
        docs.display().to_string(),
        "-o".into(),
        out.display().to_string(),
    ]);
    let quoted: Vec<String> = command.iter().map(|a| format!("'{a}'")).collect();
    let output = std::process::Command::new("script")
        .args(["-qefc", &quoted.join(" "), "/dev/null"])
        .env_remove("DOCANALYZE_LOG")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr_of(&output));
    let terminal = String::from_utf8_lossy(&output.stdout);
    assert!(terminal.contains(" active"), "no bar drawn: {terminal:?}");
    assert!(terminal.contains("docanalyze report"), "{terminal:?}");
    assert_eq!(std::fs::read_to_string(&out).unwrap().lines().count(), 40);
}

#[test]
fn a_reader_that_closes_the_pipe_ends_the_run_quietly() {
    let ws = Workspace::new();
    // More records than a pipe buffers (64 KiB), so the run must notice the closed pipe.
    let tickets = ws.jsonl("tickets.jsonl", 600);
    let report = ws.path("report.json");
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("docanalyze"))
        .args(ws.run_args())
        .arg(&tickets)
        .arg("--report")
        .arg(&report)
        .env_remove("DOCANALYZE_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    {
        let mut reader = BufReader::new(child.stdout.take().unwrap());
        reader.read_line(&mut first).unwrap();
    } // `head -n 1` exits: the read end closes.
    let output = child.wait_with_output().unwrap();
    let stderr = stderr_of(&output);
    assert!(
        output.status.success(),
        "exit {:?}: {stderr}",
        output.status
    );
    assert!(!stderr.contains("error"), "{stderr}");
    let record: Value = serde_json::from_str(&first).unwrap();
    assert_eq!(record["id"], "t0");
    // The run ended early: a run that went on would have made 600 records.
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    let made =
        report["documents_ok"].as_u64().unwrap() + report["documents_failed"].as_u64().unwrap();
    assert!(
        made < 600,
        "the run went on after the pipe closed: {report}"
    );
}

#[test]
fn two_prompts_give_two_records_per_document() {
    let ws = Workspace::new();
    let docs = ws.docs("docs", 3);
    let out = ws.path("out.csv");
    // (keywords answers a JSON array, which 8 tokens of the tiny model may leave unfinished:
    // an error record, exit 1; still one record per document and prompt.)
    let run = ws
        .run()
        .arg(&docs)
        .args(["--prompt", "summarize", "--prompt", "keywords", "-q", "-o"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        matches!(run.status.code(), Some(0 | 1)),
        "{}",
        stderr_of(&run)
    );
    let mut reader = csv::Reader::from_path(&out).unwrap();
    let mut pairs: Vec<(String, String)> = reader
        .records()
        .map(|r| {
            let r = r.unwrap();
            (r[0].to_string(), r[2].to_string())
        })
        .collect();
    pairs.sort();
    let expected: Vec<(String, String)> = (0..3)
        .flat_map(|i| ["keywords", "summarize"].map(|p| (format!("doc-{i:03}.txt"), p.to_string())))
        .collect();
    assert_eq!(pairs, expected);
}

/// The report keys the README's "Timing report" section promises: every backquoted snake_case
/// word of it (the README is the contract, not the code's own list).
fn readme_report_keys() -> Vec<String> {
    let readme = std::fs::read_to_string(common_repo("README.md")).unwrap();
    let section = readme
        .split("## Timing report")
        .nth(1)
        .and_then(|s| s.split("Throughputs count").next())
        .expect("the README has a Timing report section");
    let mut keys: Vec<String> = section
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|w| {
            !w.is_empty()
                && w.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        })
        .map(String::from)
        .collect();
    keys.dedup();
    keys
}

fn common_repo(rel: &str) -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel)
}

#[test]
fn report_json_has_every_promised_key() {
    let keys = readme_report_keys();
    assert!(keys.len() >= 30, "{keys:?}");
    let ws = Workspace::new();
    let docs = ws.path("labeled.jsonl");
    std::fs::write(
        &docs,
        "{\"id\": \"a\", \"text\": \"Great.\", \"label\": \"yes\"}\n{\"id\": \"b\", \"text\": \"Bad.\", \"label\": \"no\"}\n",
    )
    .unwrap();
    let report = ws.path("report.json");
    ws.run()
        .arg(&docs)
        .args([
            "-q",
            "--sequences",
            "2",
            "--shard",
            "0/1",
            "--gold-field",
            "label",
        ])
        .args(["--prompt", "classify", "--labels", "yes,no", "-o"])
        .arg(ws.path("out.jsonl"))
        .arg("--report")
        .arg(&report)
        .assert()
        .success();
    let json: Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    // Inner keys of `accuracy` are checked under it; null is promised for stopped_by alone.
    let inner = ["documents", "correct", "labels", "confusion"];
    for key in keys.iter().filter(|k| !inner.contains(&k.as_str())) {
        let value = json.get(key);
        assert!(value.is_some(), "report lacks {key}: {json}");
        assert!(
            key == "stopped_by" || !value.unwrap().is_null(),
            "{key} is null: {json}"
        );
    }
    for key in inner.iter().chain(["accuracy"].iter()) {
        assert!(
            json["accuracy"]["classify"].get(*key).is_some(),
            "accuracy lacks {key}: {json}"
        );
    }
    for key in REPORT_KEYS {
        assert!(
            keys.iter().any(|k| k == key),
            "the README does not list {key}"
        );
    }
    assert_eq!(json["sequences"], 2);
    assert_eq!(json["shard"], "0/1");
    assert_eq!(json["documents_ok"], 2);
    assert_eq!(json["documents_failed"], 0);
    assert!(json["kv_bytes_total"].as_u64().unwrap() > 0);
}

#[test]
fn a_failed_document_makes_exit_code_one() {
    let ws = Workspace::new();
    let docs = ws.docs("docs", 2);
    std::fs::write(docs.join("empty.txt"), "  \n").unwrap();
    let output = ws.run().arg(&docs).arg("-q").output().unwrap();
    assert_eq!(output.status.code(), Some(1), "{}", stderr_of(&output));
    let stdout = stdout_of(&output);
    let failed: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|r| r["status"] == "error")
        .collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["id"], "empty.txt");
}

#[test]
fn the_prefix_cache_changes_no_record_and_is_reported() {
    let ws = Workspace::new();
    let docs = ws.jsonl("tickets.jsonl", 12);
    let run = |switch: &str| {
        let report = ws.path(&format!("report-{switch}.json"));
        let out = ws
            .run()
            .arg(&docs)
            .args(["--sequences", "3", "--prefix-cache", switch, "--report"])
            .arg(&report)
            .output()
            .expect("runs");
        assert!(out.status.success(), "{}", stderr_of(&out));
        let mut records: Vec<serde_json::Value> = stdout_of(&out)
            .lines()
            .map(|l| serde_json::from_str(l).expect("json"))
            .collect();
        for r in &mut records {
            r["latency_ms"] = serde_json::Value::Null;
        }
        records.sort_by_key(|r| r["id"].as_str().unwrap_or_default().to_string());
        let report: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(report).expect("report")).expect("json");
        (
            records,
            report["prompt_tokens_cached"].as_u64().expect("key"),
        )
    };
    let (on, cached) = run("on");
    let (off, not_cached) = run("off");
    assert_eq!(on, off);
    assert_eq!(not_cached, 0);
    assert!(cached >= 12 * 10, "{cached} tokens reused");
}
