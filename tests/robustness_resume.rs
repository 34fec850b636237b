//! Kills, signals and `--resume` through the binary: a run killed with SIGKILL or stopped by
//! SIGTERM/SIGINT leaves whole records; `--resume` repairs a torn last record, keeps every
//! earlier record byte for byte, and appends the rest, so that every document is ok once.
#![cfg(unix)]

mod cli_support;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cli_support::{stderr_of, Workspace};
use serde_json::Value;

/// Documents in the killed runs: enough that a kill always lands mid-run.
const DOCS: usize = 200;

/// Generations of `max_tokens` (`--ignore-eos`), long enough that the run lasts a few seconds.
fn slow_run(ws: &Workspace, input: &Path, out: &Path, extra: &[&str]) -> Command {
    slow_run_of(ws, input, out, 48, extra)
}

fn slow_run_of(
    ws: &Workspace,
    input: &Path,
    out: &Path,
    max_tokens: usize,
    extra: &[&str],
) -> Command {
    let mut cmd = Command::new(assert_cmd::cargo::cargo_bin("docanalyze"));
    cmd.arg("run")
        .args(["--ctx-size", "256", "--ignore-eos", "--sequences", "2"])
        .args(["--threads", "1", "--batch-size", "64", "--max-tokens"])
        .arg(max_tokens.to_string())
        .arg("--model")
        .arg(&ws.model)
        .arg(input)
        .arg("-o")
        .arg(out)
        .args(extra)
        .env_remove("DOCANALYZE_MODEL")
        .env_remove("DOCANALYZE_LOG");
    cmd
}

/// Starts `cmd` and waits until `out` holds at least `lines` complete lines.
fn start_and_wait_for_lines(cmd: &mut Command, out: &Path, lines: usize) -> Child {
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let written = std::fs::read(out).map_or(0, |b| b.iter().filter(|&&c| c == b'\n').count());
        if written >= lines {
            return child;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the run ended ({status}) before writing {lines} lines");
        }
        assert!(Instant::now() < deadline, "no {lines} lines after 60 s");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
}

/// The bytes up to the end of the last complete line.
fn complete_lines(bytes: &[u8]) -> &[u8] {
    let end = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    &bytes[..end]
}

fn jsonl_records(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("torn line {l:?}: {e}")))
        .collect()
}

/// Every document of the folder is ok (or truncated) exactly once.
fn assert_each_document_ok_once(ids: impl IntoIterator<Item = (String, String)>) {
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (id, status) in ids {
        if status == "ok" || status == "truncated" {
            *seen.entry(id).or_default() += 1;
        }
    }
    let expected: Vec<String> = (0..DOCS).map(|i| format!("doc-{i:03}.txt")).collect();
    for id in &expected {
        assert_eq!(seen.get(id), Some(&1), "{id}");
    }
    assert_eq!(seen.len(), DOCS);
}

fn resume(ws: &Workspace, docs: &Path, out: &Path) -> std::process::Output {
    slow_run(ws, docs, out, &["--resume", "-q"])
        .output()
        .unwrap()
}

#[test]
fn sigkill_then_resume_completes_the_jsonl() {
    let ws = Workspace::new();
    let docs = ws.docs("docs", DOCS);
    let out = ws.path("out.jsonl");
    let mut child = start_and_wait_for_lines(&mut slow_run(&ws, &docs, &out, &["-q"]), &out, 2);
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    // A kill may tear the last record; simulate the worst case on top of it.
    let mut before = std::fs::read(&out).unwrap();
    before.truncate(complete_lines(&before).len());
    let kept = before.clone();
    before.extend_from_slice(b"{\"id\":\"doc-torn.txt\",\"sou");
    std::fs::write(&out, &before).unwrap();
    let written_before = kept.iter().filter(|&&b| b == b'\n').count();
    assert!(written_before < DOCS, "the kill came too late");

    let output = resume(&ws, &docs, &out);
    assert!(output.status.success(), "{}", stderr_of(&output));
    let after = std::fs::read(&out).unwrap();
    assert!(after.starts_with(&kept), "earlier records changed");
    let records = jsonl_records(&out);
    assert_eq!(records.len(), DOCS);
    assert_each_document_ok_once(records.iter().map(|r| {
        (
            r["id"].as_str().unwrap().to_string(),
            r["status"].as_str().unwrap().to_string(),
        )
    }));
}

#[test]
fn sigkill_then_resume_completes_the_csv_with_one_header() {
    let ws = Workspace::new();
    let docs = ws.docs("docs", DOCS);
    let out = ws.path("out.csv");
    let mut child = start_and_wait_for_lines(&mut slow_run(&ws, &docs, &out, &["-q"]), &out, 3);
    child.kill().unwrap();
    child.wait().unwrap();
    let before = std::fs::read(&out).unwrap();
    let kept = complete_lines(&before).to_vec();

    let output = resume(&ws, &docs, &out);
    assert!(output.status.success(), "{}", stderr_of(&output));
    let after = std::fs::read(&out).unwrap();
    assert!(after.starts_with(&kept), "earlier records changed");
    let text = String::from_utf8(after).unwrap();
    assert_eq!(text.matches("id,source,prompt,status").count(), 1);
    let mut reader = csv::Reader::from_path(&out).unwrap();
    let rows: Vec<(String, String)> = reader
        .records()
        .map(|r| {
            let r = r.unwrap();
            (r[0].to_string(), r[3].to_string())
        })
        .collect();
    assert_eq!(rows.len(), DOCS);
    assert_each_document_ok_once(rows);
}

/// Stops a run with `name` after a few records and checks what the user is promised.
fn stopped_by(name: &str, code: i32) {
    let ws = Workspace::new();
    let docs = ws.docs("docs", DOCS);
    let out = ws.path("out.jsonl");
    let report = ws.path("report.json");
    let mut cmd = slow_run(&ws, &docs, &out, &["--report", report.to_str().unwrap()]);
    let child = start_and_wait_for_lines(&mut cmd, &out, 2);
    signal(&child, name);
    let output = child.wait_with_output().unwrap();
    let stderr = stderr_of(&output);
    assert_eq!(output.status.code(), Some(code), "{stderr}");
    assert!(stderr.contains("docanalyze report"), "{stderr}");
    assert!(
        stderr.contains(&format!("stopped     by SIG{name}")),
        "{stderr}"
    );
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(report["stopped_by"], format!("SIG{name}"));

    // Whole records only, fewer than the documents, and as many as the report says.
    let before = std::fs::read(&out).unwrap();
    assert!(before.ends_with(b"\n"));
    let records = jsonl_records(&out);
    assert!(records.len() < DOCS, "the signal came too late");
    assert_eq!(report["documents_ok"], records.len());

    let output = resume(&ws, &docs, &out);
    assert!(output.status.success(), "{}", stderr_of(&output));
    assert!(std::fs::read(&out).unwrap().starts_with(&before));
    let records = jsonl_records(&out);
    assert_each_document_ok_once(records.iter().map(|r| {
        (
            r["id"].as_str().unwrap().to_string(),
            r["status"].as_str().unwrap().to_string(),
        )
    }));
}

#[test]
fn sigterm_finishes_the_documents_in_flight_reports_and_exits_143() {
    stopped_by("TERM", 143);
}

#[test]
fn sigint_finishes_the_documents_in_flight_reports_and_exits_130() {
    stopped_by("INT", 130);
}

#[test]
fn two_quick_signals_leave_whole_records_and_exit_143() {
    let ws = Workspace::new();
    let docs = ws.docs("docs", DOCS);
    let out = ws.path("out.jsonl");
    let report = ws.path("report.json");
    // Long generations: finishing the ones in flight (what the first signal asks) would take
    // a while and end with the report.
    let mut cmd = slow_run_of(
        &ws,
        &docs,
        &out,
        190,
        &["--report", report.to_str().unwrap()],
    );
    let child = start_and_wait_for_lines(&mut cmd, &out, 1);
    signal(&child, "TERM");
    std::thread::sleep(Duration::from_millis(3));
    signal(&child, "TERM");
    let output = child.wait_with_output().unwrap();
    let stderr = stderr_of(&output);
    assert_eq!(output.status.code(), Some(143), "{stderr}");
    // Ended at once: the jobs in flight were not finished, so no report was made.
    assert!(!stderr.contains("docanalyze report"), "{stderr}");
    assert!(!report.exists(), "the run went on to write its report");
    let records = jsonl_records(&out);
    assert!(!records.is_empty() && records.len() < DOCS);
}

#[test]
fn a_signal_during_the_model_load_leaves_the_output_untouched() {
    let model = docanalyze::model_source::default_model_path();
    if !model.exists() {
        panic!("the default model is not installed: run scripts/fetch-model.sh");
    }
    let ws = Workspace::new();
    let docs = ws.docs("docs", 3);
    let out = ws.path("out.jsonl");
    std::fs::write(&out, "yesterday's results\n").unwrap();
    let child = Command::new(assert_cmd::cargo::cargo_bin("docanalyze"))
        .arg("run")
        .arg(&docs)
        .arg("--model")
        .arg(&model)
        .arg("-o")
        .arg(&out)
        .env_remove("DOCANALYZE_LOG")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The 100 MB model takes a few hundred milliseconds to load.
    std::thread::sleep(Duration::from_millis(60));
    signal(&child, "INT");
    let output = child.wait_with_output().unwrap();
    let stderr = stderr_of(&output);
    assert_eq!(output.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("the output was not touched"), "{stderr}");
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        "yesterday's results\n",
        "{}",
        stderr_of(&output)
    );
}

#[test]
fn resume_of_a_complete_output_changes_nothing() {
    let ws = Workspace::new();
    let docs = ws.docs("docs", 5);
    let out = ws.path("out.jsonl");
    let run = |extra: &[&str]| {
        ws.run()
            .arg(&docs)
            .arg("-o")
            .arg(&out)
            .arg("-q")
            .args(extra)
            .output()
            .unwrap()
    };
    assert!(run(&[]).status.success());
    let before = std::fs::read(&out).unwrap();
    let output = run(&["--resume"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr_of(&output));
    assert_eq!(std::fs::read(&out).unwrap(), before);
}

#[test]
fn resume_retries_errors_and_keeps_their_old_records() {
    let ws = Workspace::new();
    let docs = ws.docs("docs", 3);
    std::fs::write(docs.join("late.txt"), "").unwrap();
    let out = ws.path("out.jsonl");
    let run = || {
        ws.run()
            .arg(&docs)
            .arg("-o")
            .arg(&out)
            .args(["-q", "--resume"])
            .output()
            .unwrap()
    };
    // No output yet: --resume starts from nothing.
    assert_eq!(run().status.code(), Some(1));
    let before = std::fs::read(&out).unwrap();
    std::fs::write(docs.join("late.txt"), "It arrived after all.").unwrap();
    let output = run();
    assert_eq!(output.status.code(), Some(0), "{}", stderr_of(&output));
    let after = std::fs::read(&out).unwrap();
    assert!(after.starts_with(&before));
    let records = jsonl_records(&out);
    let late: Vec<&Value> = records.iter().filter(|r| r["id"] == "late.txt").collect();
    assert_eq!(late.len(), 2);
    assert_eq!(late[0]["status"], "error");
    assert_eq!(late[1]["status"], "ok");
    assert_eq!(records.len(), 5);
}

#[test]
fn shards_together_cover_every_document_once() {
    let ws = Workspace::new();
    let docs = ws.docs("docs", 12);
    let mut ids = Vec::new();
    for i in 0..3 {
        let out: PathBuf = ws.path(&format!("shard-{i}.jsonl"));
        let output = ws
            .run()
            .arg(&docs)
            .args(["-q", "--shard", &format!("{i}/3"), "-o"])
            .arg(&out)
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", stderr_of(&output));
        ids.extend(
            jsonl_records(&out)
                .into_iter()
                .map(|r| r["id"].as_str().unwrap().to_string()),
        );
    }
    ids.sort();
    let expected: Vec<String> = (0..12).map(|i| format!("doc-{i:03}.txt")).collect();
    assert_eq!(ids, expected);
}

#[test]
fn sigint_amid_chunked_documents_then_resume_writes_each_once() {
    let ws = Workspace::new();
    let docs = ws.path("long-docs");
    std::fs::create_dir_all(&docs).unwrap();
    let long: String = (0..700).map(|i| format!("word{i} ")).collect();
    for k in 0..4 {
        std::fs::write(docs.join(format!("a-short-{k}.txt")), "A short note.").unwrap();
        std::fs::write(docs.join(format!("long-{k}.txt")), &long).unwrap();
    }
    let out = ws.path("out.jsonl");
    let child = start_and_wait_for_lines(&mut slow_run(&ws, &docs, &out, &["-q"]), &out, 2);
    signal(&child, "INT");
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(130), "{}", stderr_of(&output));
    let before = std::fs::read(&out).unwrap();
    assert!(jsonl_records(&out).len() < 8, "the signal came too late");

    let output = resume(&ws, &docs, &out);
    assert!(
        output.status.success(),
        "{:?} {}",
        output.status,
        std::fs::read_to_string(&out).unwrap()
    );
    assert!(std::fs::read(&out).unwrap().starts_with(&before));
    let records = jsonl_records(&out);
    let mut seen: HashMap<String, usize> = HashMap::new();
    for r in &records {
        assert_eq!(r["status"], "ok", "{r}");
        let id = r["id"].as_str().unwrap().to_string();
        if id.starts_with("long") {
            assert!(r["chunks"].as_u64().unwrap() > 1, "{r}");
        }
        *seen.entry(id).or_default() += 1;
    }
    assert_eq!(seen.len(), 8, "{records:?}");
    assert!(seen.values().all(|&n| n == 1), "{seen:?}");
}
