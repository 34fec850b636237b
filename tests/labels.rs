//! Label answers: always one of the labels (multi-token labels, labels sharing a prefix, labels
//! with spaces, any case), scores that sum to 1, the same at every K, in both output formats,
//! and accuracy against true labels.

mod cli_support;

use cli_support::{stderr_of, stdout_of, Workspace};
use serde_json::Value;

const LABELS: &str = "Neutral,Negative,very positive,needs human review,N";

fn labeled_jsonl(ws: &Workspace, n: usize) -> std::path::PathBuf {
    let path = ws.path("labeled.jsonl");
    let gold = ["Neutral", "negative", "very positive"];
    let lines: String = (0..n)
        .map(|i| {
            format!(
                "{{\"id\": \"r{i}\", \"text\": \"Review {i}: the product did {} what it said.\", \"label\": \"{}\"}}\n",
                if i % 2 == 0 { "" } else { "not " },
                gold[i % 3]
            )
        })
        .collect();
    std::fs::write(&path, lines).expect("write");
    path
}

fn run_labels(ws: &Workspace, args: &[&str]) -> (Vec<Value>, std::process::Output) {
    let input = labeled_jsonl(ws, 24);
    let out = ws
        .run()
        .arg(&input)
        .args(["--prompt", "classify", "--labels", LABELS])
        .args(args)
        .output()
        .expect("runs");
    assert!(out.status.success(), "{}", stderr_of(&out));
    let mut records: Vec<Value> = stdout_of(&out)
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    records.sort_by_key(|r| r["id"].as_str().unwrap_or_default().to_string());
    (records, out)
}

#[test]
fn every_answer_is_a_label_with_scores_that_sum_to_one() {
    let ws = Workspace::new();
    let labels: Vec<&str> = LABELS.split(',').collect();
    for temperature in ["0", "1.5"] {
        let (records, _) = run_labels(&ws, &["--temperature", temperature]);
        assert_eq!(records.len(), 24);
        for r in &records {
            let output = r["output"].as_str().expect("output");
            assert!(labels.contains(&output), "{output:?} is not a label");
            let scores = r["scores"].as_object().expect("scores");
            let mut keys: Vec<&str> = scores.keys().map(String::as_str).collect();
            let mut want = labels.clone();
            keys.sort_unstable();
            want.sort_unstable();
            assert_eq!(keys, want);
            let sum: f64 = scores.values().map(|v| v.as_f64().expect("number")).sum();
            assert!((sum - 1.0).abs() < 1e-6, "scores sum to {sum}");
            if temperature == "0" {
                // Greedy: the answer is the label of highest probability.
                let best = scores
                    .iter()
                    .max_by(|a, b| a.1.as_f64().unwrap().total_cmp(&b.1.as_f64().unwrap()))
                    .map(|(label, _)| label.as_str());
                assert_eq!(Some(output), best, "{r}");
            }
        }
    }
}

#[test]
fn label_answers_do_not_depend_on_k() {
    let ws = Workspace::new();
    let strip = |mut records: Vec<Value>| {
        for r in &mut records {
            r["latency_ms"] = Value::Null;
        }
        records
    };
    let (sequential, _) = run_labels(&ws, &["--sequential"]);
    let (batched, _) = run_labels(&ws, &["--sequences", "8"]);
    assert_eq!(strip(sequential), strip(batched));
}

#[test]
fn accuracy_is_reported_against_the_gold_field() {
    let ws = Workspace::new();
    let report = ws.path("report.json");
    let report_arg = report.display().to_string();
    let (records, out) = run_labels(&ws, &["--gold-field", "label", "--report", &report_arg]);
    let json: Value =
        serde_json::from_str(&std::fs::read_to_string(&report).expect("report")).expect("json");
    let accuracy = &json["accuracy"]["classify"];
    // Document `rN` has true label N % 3 (matched ignoring case).
    let correct = records
        .iter()
        .filter(|r| {
            let n: usize = r["id"].as_str().unwrap()[1..].parse().unwrap();
            let gold = ["Neutral", "negative", "very positive"][n % 3];
            r["output"].as_str().unwrap().to_lowercase() == gold.to_lowercase()
        })
        .count();
    assert_eq!(accuracy["documents"], 24);
    assert_eq!(accuracy["correct"], correct);
    let matrix_total: u64 = accuracy["confusion"]
        .as_object()
        .expect("matrix")
        .values()
        .flat_map(|row| row.as_object().expect("row").values())
        .map(|v| v.as_u64().expect("count"))
        .sum();
    assert_eq!(matrix_total, 24);
    assert!(
        stderr_of(&out).contains("accuracy    classify:"),
        "{}",
        stderr_of(&out)
    );
}

#[test]
fn csv_gets_a_scores_column_and_free_text_prompts_leave_it_empty() {
    let ws = Workspace::new();
    let input = labeled_jsonl(&ws, 3);
    let csv = ws.path("out.csv");
    let run = |extra: &[&str]| {
        ws.run()
            .arg(&input)
            .args([
                "--prompt",
                "classify",
                "--prompt",
                "summarize",
                "--labels",
                LABELS,
            ])
            .args(extra)
            .arg("-o")
            .arg(&csv)
            .output()
            .expect("runs")
    };
    let out = run(&[]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let (header, mut reader) = cli_support::csv_with_header(&csv);
    assert_eq!(header.last().map(String::as_str), Some("scores"));
    assert_eq!(header.len(), 12);
    for row in reader.records() {
        let row = row.expect("row");
        let scores = &row[11];
        if &row[2] == "classify" {
            let parsed: Value = serde_json::from_str(scores).expect("scores JSON");
            assert_eq!(parsed.as_object().expect("object").len(), 5);
        } else {
            assert_eq!(scores, "");
        }
    }
    // --resume understands the file it wrote.
    let again = run(&["--resume"]);
    assert!(again.status.success(), "{}", stderr_of(&again));
}

#[test]
fn bad_labels_are_refused_naming_the_label() {
    let ws = Workspace::new();
    let docs = ws.docs("docs", 1);
    for (labels, needle) in [
        ("spam,,ham", "label 2 is empty"),
        ("Spam,ham,spam", "`spam` is given twice"),
    ] {
        let out = ws
            .run()
            .arg(&docs)
            .args(["--prompt", "classify", "--labels", labels])
            .output()
            .expect("runs");
        assert_eq!(out.status.code(), Some(2), "{labels}");
        assert!(stderr_of(&out).contains(needle), "{}", stderr_of(&out));
    }
}
