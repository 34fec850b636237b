//! JSON answers: with --fields or --schema every record's output is JSON valid against the
//! schema, or the record is an error saying the JSON was cut; the same at every K.

mod cli_support;

use cli_support::{stderr_of, stdout_of, Workspace};
use serde_json::Value;

const SCHEMA: &str = r#"{"type": "object",
 "properties": {
   "topic": {"type": "string", "enum": ["fiction", "software", "other"]},
   "year": {"type": ["integer", "null"]},
   "people": {"type": "array", "items": {"type": "string", "maxLength": 4}, "maxItems": 2},
   "source": {"type": "object", "properties": {"is_book": {"type": "boolean"}},
              "required": ["is_book"], "additionalProperties": false}
 },
 "required": ["topic", "year", "people", "source"],
 "additionalProperties": false}"#;

/// `docanalyze run` on the tiny model with `max_tokens` (Workspace::run fixes it at 8).
fn run(ws: &Workspace, max_tokens: &str) -> assert_cmd::Command {
    let mut cmd = cli_support::docanalyze();
    cmd.args([
        "run",
        "--ctx-size",
        "512",
        "--threads",
        "1",
        "--max-tokens",
        max_tokens,
    ])
    .arg("--model")
    .arg(&ws.model);
    cmd
}

fn records(output: &std::process::Output) -> Vec<Value> {
    let mut records: Vec<Value> = stdout_of(output)
        .lines()
        .map(|l| serde_json::from_str(l).expect("json record"))
        .collect();
    records.sort_by_key(|r| r["id"].as_str().unwrap_or_default().to_string());
    records
}

/// Checks `value` against [`SCHEMA`] by hand.
fn conforms(value: &Value) -> bool {
    let Some(object) = value.as_object() else {
        return false;
    };
    let keys: Vec<&str> = object.keys().map(String::as_str).collect();
    let mut sorted = keys.clone();
    sorted.sort_unstable();
    sorted == ["people", "source", "topic", "year"]
        && ["fiction", "software", "other"].contains(&object["topic"].as_str().unwrap_or("?"))
        && (object["year"].is_null() || object["year"].as_f64().is_some_and(|y| y.fract() == 0.0))
        && object["people"]
            .as_array()
            .is_some_and(|a| a.len() <= 2 && a.iter().all(Value::is_string))
        && object["source"]
            .as_object()
            .is_some_and(|s| s.len() == 1 && s["is_book"].is_boolean())
}

#[test]
fn schema_answers_always_validate_or_say_they_were_cut() {
    let ws = Workspace::new();
    std::fs::write(ws.path("schema.json"), SCHEMA).expect("write");
    let docs = ws.jsonl("docs.jsonl", 16);
    for max_tokens in ["12", "200"] {
        let out = run(&ws, max_tokens)
            .arg(&docs)
            .args(["--prompt", "extract", "--schema"])
            .arg(ws.path("schema.json"))
            .args(["--temperature", "1.0"])
            .output()
            .expect("runs");
        let records = records(&out);
        assert_eq!(records.len(), 16, "{}", stderr_of(&out));
        let complete = records.iter().filter(|r| r["status"] == "ok").count();
        eprintln!("--max-tokens {max_tokens}: {complete} of 16 answers complete");
        if max_tokens == "200" {
            assert!(complete > 0, "with room, answers complete");
        }
        for r in &records {
            if r["status"] == "error" {
                assert!(
                    r["error"].as_str().unwrap().contains("incomplete JSON"),
                    "{r}"
                );
                assert_eq!(r["output"], "");
                continue;
            }
            let value: Value = serde_json::from_str(r["output"].as_str().unwrap()).expect("JSON");
            assert!(conforms(&value), "{value}");
            // `fields` is the same object (its huge integers as the nearest f64).
            assert!(conforms(&r["fields"]), "{}", r["fields"]);
            assert_eq!(r["fields"]["topic"], value["topic"]);
        }
    }
}

#[test]
fn fields_answers_have_exactly_the_fields_and_match_at_every_k() {
    let ws = Workspace::new();
    let docs = ws.jsonl("docs.jsonl", 12);
    let run_k = |k: &str| {
        let out = run(&ws, "64")
            .arg(&docs)
            .args(["--prompt", "extract", "--fields", "title,author"])
            .args(["--sequences", k])
            .output()
            .expect("runs");
        let mut records = records(&out);
        assert_eq!(records.len(), 12, "{}", stderr_of(&out));
        for r in &mut records {
            r["latency_ms"] = Value::Null;
        }
        records
    };
    let one = run_k("1");
    for r in &one {
        if r["status"] == "ok" {
            let value: Value = serde_json::from_str(r["output"].as_str().unwrap()).expect("JSON");
            let object = value.as_object().expect("object");
            assert_eq!(object.len(), 2);
            for key in ["title", "author"] {
                assert!(object[key].is_string() || object[key].is_null(), "{value}");
            }
        }
    }
    // (The random model's strings rarely close: most of these are "incomplete JSON" records,
    // which must then be the same at every K too.)
    for r in &one {
        assert!(
            r["status"] == "ok" || r["error"].as_str().unwrap().contains("incomplete JSON"),
            "{r}"
        );
    }
    assert_eq!(one, run_k("8"));
}

#[test]
fn a_cut_inside_the_json_is_an_error_record_never_a_broken_value() {
    let ws = Workspace::new();
    let docs = ws.docs("docs", 3);
    let out = run(&ws, "2")
        .arg(&docs)
        .args(["--prompt", "extract", "--fields", "title"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    let records = records(&out);
    assert_eq!(records.len(), 3);
    for r in records {
        assert_eq!(r["status"], "error");
        assert!(
            r["error"].as_str().unwrap().contains("incomplete JSON"),
            "{r}"
        );
        assert_eq!(r["output"], "");
    }
}

#[test]
fn bad_schemas_are_refused_naming_the_file() {
    let ws = Workspace::new();
    let docs = ws.docs("docs", 1);
    for (name, text, needle) in [
        ("broken.json", "{not json", "not JSON"),
        (
            "unsupported.json",
            r#"{"type": "object", "if": {"properties": {"a": {"const": 1}}}}"#,
            "Unimplemented keys",
        ),
    ] {
        let path = ws.path(name);
        std::fs::write(&path, text).expect("write");
        let out = ws
            .run()
            .arg(&docs)
            .args(["--prompt", "extract", "--schema"])
            .arg(&path)
            .output()
            .expect("runs");
        assert_eq!(out.status.code(), Some(2));
        let stderr = stderr_of(&out);
        assert!(stderr.contains(name) && stderr.contains(needle), "{stderr}");
    }
}

#[test]
fn csv_gets_a_column_per_schema_property() {
    let ws = Workspace::new();
    std::fs::write(ws.path("schema.json"), SCHEMA).expect("write");
    let docs = ws.jsonl("docs.jsonl", 6);
    let csv = ws.path("out.csv");
    let out = run(&ws, "200")
        .arg(&docs)
        .args(["--prompt", "extract", "--schema"])
        .arg(ws.path("schema.json"))
        .args(["--temperature", "1.0", "-o"])
        .arg(&csv)
        .output()
        .expect("runs");
    assert!(
        matches!(out.status.code(), Some(0 | 1)),
        "{}",
        stderr_of(&out)
    );
    let (header, mut reader) = cli_support::csv_with_header(&csv);
    assert_eq!(
        header[10..],
        ["chunks", "topic", "year", "people", "source"]
    );
    for row in reader.records() {
        let row = row.expect("row");
        if &row[3] != "ok" {
            continue;
        }
        let value: Value = serde_json::from_str(&row[4]).expect("output JSON");
        assert_eq!(&row[10], "1");
        assert_eq!(&row[11], value["topic"].as_str().expect("topic"));
        let source: Value = serde_json::from_str(&row[14]).expect("nested value as JSON text");
        assert_eq!(source, value["source"]);
    }
}
