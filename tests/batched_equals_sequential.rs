//! The invariant of the engine, end to end through the binary: K sequences in flight give
//! exactly the records of `--sequential`, and every document yields exactly one record.

mod common;

use std::collections::BTreeMap;

use serde_json::Value;

fn run(extra: &[&str]) -> Vec<Value> {
    let out = common::docanalyze()
        .args(["run", "--quiet", "--ctx-size", "256", "--max-tokens", "16"])
        // Every sample document read once, cut to the context (chunked documents have their
        // own test in long_documents.rs).
        .args(["--overflow", "truncate"])
        .arg(common::repo_path("sample-data/docs"))
        .args(extra)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Each whole record but its timing, by id.
fn by_id(records: &[Value]) -> BTreeMap<String, Value> {
    records
        .iter()
        .map(|r| {
            let mut r = r.clone();
            r.as_object_mut().unwrap().remove("latency_ms");
            (r["id"].as_str().unwrap().to_string(), r)
        })
        .collect()
}

#[test]
fn eight_sequences_write_what_sequential_writes() {
    let batched = run(&["--sequences", "8"]);
    let sequential = run(&["--sequential"]);
    let docs: Vec<_> = std::fs::read_dir(common::repo_path("sample-data/docs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".txt") || n.ends_with(".md"))
        .collect();
    assert!(docs.len() >= 20);
    for records in [&batched, &sequential] {
        let ids = by_id(records);
        assert_eq!(ids.len(), records.len(), "a document appears twice");
        for d in &docs {
            assert!(ids.contains_key(d), "no record for {d}");
        }
        for r in records.iter() {
            assert_ne!(r["status"], "error", "{r}");
            assert!(!r["output"].as_str().unwrap().is_empty(), "{r}");
        }
    }
    assert_eq!(by_id(&batched), by_id(&sequential));
}
