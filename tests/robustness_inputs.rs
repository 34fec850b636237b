//! Bad input through the binary: a folder and a JSONL file full of traps give exactly one
//! record per document, the good ones ok, the bad ones `error` with a message naming the file
//! or line, and exit code 1; documents longer than the context follow `--overflow`.

mod cli_support;

use std::collections::HashMap;
use std::path::Path;

use cli_support::{stderr_of, Workspace};
use serde_json::{json, Value};

/// About 3 MB of text, far more than any context.
fn big_text() -> String {
    "The quick brown fox jumps over the lazy dog. ".repeat(70_000)
}

fn records(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}")))
        .collect()
}

/// The records by source, each source exactly once.
fn by_source(records: &[Value]) -> HashMap<String, Value> {
    let mut map = HashMap::new();
    for r in records {
        let source = r["source"].as_str().unwrap().to_string();
        assert!(
            map.insert(source.clone(), r.clone()).is_none(),
            "{source} twice"
        );
    }
    map
}

fn trap_folder(ws: &Workspace) -> std::path::PathBuf {
    let root = ws.path("traps");
    let w = |rel: &str, bytes: &[u8]| {
        let path = root.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    };
    w("good.txt", b"A short note about the harbour.");
    w("notes.md", b"# Notes\n\nThe meeting moved to Tuesday.");
    w(
        "page.html",
        b"<html><body><p>The ferry leaves at noon.</p></body></html>",
    );
    w("empty.txt", b"");
    w("blank.txt", b"  \n\t\n");
    w("binary.txt", b"\x7fELF\x02\x01\x01\0\0\0\0\0binary junk");
    w(
        "latin1.txt",
        b"Caf\xe9 cr\xe8me, na\xefve fa\xe7ade: Latin-1 bytes.",
    );
    w("big.txt", big_text().as_bytes());
    w("bad.pdf", b"%PDF-1.4 this is not really a PDF");
    w("nested/deeper/doc.txt", b"A document two folders down.");
    w(".hidden.txt", b"hidden files are not documents");
    w(".git/config", b"[core]");
    w("program.exe", b"MZ\x90\0");
    w("README", b"no extension: not a document type");
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink("..", root.join("nested/up")).unwrap();
        std::os::unix::fs::symlink("gone.txt", root.join("dangling.txt")).unwrap();
    }
    root
}

#[test]
fn a_folder_of_traps_gives_one_record_per_document() {
    let ws = Workspace::new();
    let root = trap_folder(&ws);
    let out = ws.path("out.jsonl");
    let report = ws.path("report.json");
    let output = ws
        .run()
        .arg(&root)
        // The huge document is cut, cheaply (chunking it has its own tests).
        .args(["--overflow", "truncate"])
        .arg("-o")
        .arg(&out)
        .arg("--report")
        .arg(&report)
        .output()
        .unwrap();
    let stderr = stderr_of(&output);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let records = by_source(&records(&out));
    let src = |rel: &str| root.join(rel).display().to_string();
    let status = |rel: &str| records[&src(rel)]["status"].as_str().unwrap().to_string();
    let error = |rel: &str| records[&src(rel)]["error"].as_str().unwrap().to_string();

    for ok in [
        "good.txt",
        "notes.md",
        "page.html",
        "latin1.txt",
        "nested/deeper/doc.txt",
    ] {
        assert_eq!(status(ok), "ok", "{ok}: {}", records[&src(ok)]);
    }
    assert_eq!(status("big.txt"), "truncated");
    assert_eq!(records[&src("big.txt")]["id"], "big.txt");
    assert!(records[&src("big.txt")]["prompt_tokens"].as_u64().unwrap() <= 256);
    let mut expected_errors = vec![
        ("empty.txt", "empty document"),
        ("blank.txt", "empty document"),
        ("binary.txt", "binary"),
        ("bad.pdf", "cannot extract text"),
    ];
    if cfg!(unix) {
        expected_errors.push(("dangling.txt", "cannot read"));
    }
    for (rel, cause) in &expected_errors {
        assert_eq!(status(rel), "error", "{rel}");
        let message = error(rel);
        assert!(message.contains(&src(rel)), "{rel}: {message}");
        assert!(message.contains(cause), "{rel}: {message}");
    }
    // Exactly these documents, nothing for hidden files, unknown types or the symlink loop.
    assert_eq!(records.len(), 6 + expected_errors.len(), "{records:#?}");
    assert!(stderr.contains("latin1.txt: not valid UTF-8"), "{stderr}");
    assert!(stderr.contains("program.exe"), "{stderr}");

    let report: Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(report["documents_ok"], 6);
    assert_eq!(report["documents_truncated"], 1);
    assert_eq!(report["documents_failed"], expected_errors.len());
    assert_eq!(report["files_skipped"], 2);
}

#[test]
fn a_jsonl_of_traps_gives_one_record_per_line() {
    let ws = Workspace::new();
    let path = ws.path("traps.jsonl");
    let lines = [
        json!({"id": "a", "text": "The printer is on fire."}).to_string(),
        "{\"id\": \"broken\", \"text\": \"no closing brace\"".to_string(),
        json!({"id": "no-text", "body": "the field is called body"}).to_string(),
        json!({"id": "number", "text": 42}).to_string(),
        json!({"id": "a", "text": "Same id, another ticket."}).to_string(),
        String::new(),
        json!({"id": "empty", "text": ""}).to_string(),
        json!({"text": "No id: the id is file:line."}).to_string(),
        json!({"id": 7, "text": "A numeric id."}).to_string(),
        json!({"id": "huge", "text": big_text()}).to_string(),
        "\u{0}\u{1}garbage bytes".to_string(),
    ];
    std::fs::write(&path, lines.join("\n")).unwrap();
    let out = ws.path("out.jsonl");
    let output = ws
        .run()
        .arg(&path)
        .args(["--overflow", "truncate"])
        .arg("-o")
        .arg(&out)
        .arg("-q")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "{}", stderr_of(&output));
    let records = by_source(&records(&out));
    let name = path.display().to_string();
    let at = |line: usize| records[&format!("{name}:{line}")].clone();

    assert_eq!(records.len(), 10, "one per non-blank line: {records:#?}");
    assert_eq!(at(1)["status"], "ok");
    assert_eq!(at(1)["id"], "a");
    // Duplicate ids are separate documents.
    assert_eq!(at(5)["status"], "ok");
    assert_eq!(at(5)["id"], "a");
    assert_eq!(at(8)["id"], format!("{name}:8"));
    assert_eq!(at(9)["id"], "7");
    assert_eq!(at(10)["status"], "truncated");
    for (line, cause) in [
        (2, "invalid JSON"),
        (3, "no field `text`"),
        (4, "not a string but a number"),
        (7, "empty document"),
        (11, "invalid JSON"),
    ] {
        let r = at(line);
        assert_eq!(r["status"], "error", "line {line}: {r}");
        let message = r["error"].as_str().unwrap();
        assert!(message.contains(&format!("{name}:{line}")), "{message}");
        assert!(message.contains(cause), "line {line}: {message}");
    }
}

/// A document a few times longer than the context (256 positions, 8 kept for the answer).
fn long_docs(ws: &Workspace) -> std::path::PathBuf {
    let docs = ws.docs("docs", 2);
    std::fs::write(docs.join("long.txt"), "whales and ships ".repeat(200)).unwrap();
    std::fs::write(docs.join("huge.txt"), big_text()).unwrap();
    docs
}

fn overflow_run(ws: &Workspace, docs: &Path, mode: &str) -> (Option<i32>, HashMap<String, Value>) {
    let out = ws.path(&format!("{mode}.jsonl"));
    let output = ws
        .run()
        .arg(docs)
        .args(["--overflow", mode, "-q", "-o"])
        .arg(&out)
        .output()
        .unwrap();
    let records = records(&out)
        .into_iter()
        .map(|r| (r["id"].as_str().unwrap().to_string(), r))
        .collect();
    (output.status.code(), records)
}

/// (That the start is what is kept: tests/engine.rs `truncation_keeps_the_start_of_the_document`.)
#[test]
fn overflow_truncate_cuts_long_documents_to_fit() {
    let ws = Workspace::new();
    let docs = long_docs(&ws);
    let (code, records) = overflow_run(&ws, &docs, "truncate");
    assert_eq!(code, Some(0));
    for id in ["long.txt", "huge.txt"] {
        assert_eq!(records[id]["status"], "truncated", "{}", records[id]);
        assert!(records[id]["prompt_tokens"].as_u64().unwrap() <= 256 - 8);
    }
    assert_eq!(records["doc-000.txt"]["status"], "ok");
}

#[test]
fn overflow_skip_records_an_error_but_keeps_exit_code_zero() {
    let ws = Workspace::new();
    let docs = long_docs(&ws);
    let (code, records) = overflow_run(&ws, &docs, "skip");
    assert_eq!(code, Some(0));
    for id in ["long.txt", "huge.txt"] {
        let r = &records[id];
        assert_eq!(r["status"], "error", "{r}");
        assert_eq!(r["generated_tokens"], 0);
        let message = r["error"].as_str().unwrap();
        assert!(message.contains(id), "{message}");
        assert!(message.contains("longer than the context"), "{message}");
        assert!(message.ends_with("skipped (--overflow skip)"), "{message}");
    }
    let huge = records["huge.txt"]["error"].as_str().unwrap();
    assert!(huge.contains("needs more than"), "{huge}");
    assert_eq!(records["doc-001.txt"]["status"], "ok");
}

#[test]
fn overflow_error_fails_the_run() {
    let ws = Workspace::new();
    let docs = long_docs(&ws);
    let (code, records) = overflow_run(&ws, &docs, "error");
    assert_eq!(code, Some(1));
    assert_eq!(records["long.txt"]["status"], "error");
    let message = records["long.txt"]["error"].as_str().unwrap();
    assert!(message.ends_with("(--overflow error)"), "{message}");
    assert_eq!(records["doc-000.txt"]["status"], "ok");
}
