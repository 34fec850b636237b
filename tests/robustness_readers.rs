//! Property tests of the readers that see untrusted bytes: the JSONL reader, the HTML text
//! extraction and the GGUF reader never panic, whatever they are given, and the JSONL reader
//! yields exactly one document per non-blank line.

use std::io::Write;

use docanalyze::cli::DeviceArg;
use docanalyze::config::ModelConfig as ModelChoice;
use docanalyze::input::{count_jsonl_documents, html_to_text, JsonlFields, JsonlReader};
use docanalyze::loaded_model::LoadedModel;
use docanalyze::model::synthetic::{write_synthetic_gguf, SyntheticSpec};
use docanalyze::model::GgufFile;
use docanalyze::model_source::ModelRef;
use proptest::prelude::*;
use proptest::test_runner::Config;

fn config(cases: u32) -> Config {
    Config {
        cases,
        // No regression files in the source tree; a failure prints its input.
        failure_persistence: None,
        ..Config::default()
    }
}

/// The documents the reader should find in `bytes`: one per line that is not blank once
/// trimmed (and rid of a byte order mark on line 1), one per line over `max_line` bytes.
fn expected_documents(bytes: &[u8], max_line: usize) -> usize {
    let mut lines: Vec<&[u8]> = bytes.split(|&b| b == b'\n').collect();
    if lines.last().is_some_and(|l| l.is_empty()) {
        lines.pop(); // after the final newline: no line
    }
    lines
        .iter()
        .enumerate()
        .filter(|(i, line)| {
            if line.len() > max_line {
                return true;
            }
            let mut t = line.trim_ascii();
            if *i == 0 {
                t = t.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(t);
            }
            !t.is_empty()
        })
        .count()
}

fn read(bytes: &[u8], max_line: usize) -> Vec<docanalyze::input::Document> {
    // A small buffer, so lines span several reads.
    let reader = std::io::BufReader::with_capacity(16, bytes);
    JsonlReader::new(reader, "in.jsonl", JsonlFields::default())
        .with_max_line_bytes(max_line)
        .collect()
}

/// Lines that look like JSONL documents, or almost.
fn jsonl_line() -> impl Strategy<Value = String> {
    prop_oneof![
        ".*".prop_map(|t| serde_json::json!({"id": "x", "text": t}).to_string()),
        any::<i64>().prop_map(|n| format!("{{\"text\": {n}}}")),
        "[a-z ]{0,12}".prop_map(|t| format!("{{\"body\": \"{t}\"}}")),
        "[{}\\[\\]\":, a-z0-9\\\\]{0,30}",
        Just(String::new()),
        Just("   \t".to_string()),
        Just("\u{FEFF}{\"text\": \"bom\"}".to_string()),
    ]
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn jsonl_reader_takes_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..400), max_line in 1usize..80) {
        let docs = read(&bytes, max_line);
        prop_assert_eq!(docs.len(), expected_documents(&bytes, max_line));
        for d in &docs {
            prop_assert!(d.source.starts_with("in.jsonl:"));
            prop_assert!(!d.id.is_empty());
        }
        if !bytes.starts_with(b"\xEF\xBB\xBF") {
            let counted = count_jsonl_documents(bytes.as_slice()).expect("in memory");
            prop_assert_eq!(counted, read(&bytes, usize::MAX).len());
        }
    }

    #[test]
    fn jsonl_reader_finds_one_document_per_line(lines in proptest::collection::vec(jsonl_line(), 0..20)) {
        let text = lines.join("\n");
        let docs = read(text.as_bytes(), usize::MAX);
        prop_assert_eq!(docs.len(), expected_documents(text.as_bytes(), usize::MAX));
        for d in &docs {
            let line: usize = d.source["in.jsonl:".len()..].parse().expect("a line number");
            let source = &lines[line - 1];
            // A byte order mark is allowed at the start of the file only.
            let source = if line == 1 { source.trim_start_matches('\u{FEFF}') } else { source };
            let parsed: Option<serde_json::Value> = serde_json::from_str(source).ok();
            match parsed.as_ref().and_then(|v| v.get("text")).and_then(|t| t.as_str()) {
                Some(text) => prop_assert_eq!(d.text.as_deref(), Ok(text)),
                None => prop_assert!(d.text.as_ref().is_err_and(|e| e.starts_with(&d.source))),
            }
        }
    }

    #[test]
    fn html_text_takes_any_string(html in ".*") {
        let _ = html_to_text(html.as_bytes());
    }

    #[test]
    fn html_text_takes_any_tag_soup(parts in proptest::collection::vec(prop_oneof![
        "<[a-zA-Z]{1,8}( [a-z]{1,5}(=\"[^\"]{0,6}\")?)*/?>",
        "</[a-zA-Z]{1,8}>",
        "&[a-zA-Z#0-9]{0,8};?",
        "[^<&]{0,12}",
        Just("<script>".to_string()),
        Just("<style>".to_string()),
        Just("<pre>".to_string()),
        Just("<!--".to_string()),
        Just("-->".to_string()),
        Just("<![CDATA[".to_string()),
        Just("<!DOCTYPE html>".to_string()),
    ], 0..40)) {
        let _ = html_to_text(parts.concat().as_bytes());
    }

    #[test]
    fn html_text_takes_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = html_to_text(&bytes);
    }
}

/// A valid tiny model, written once per test binary.
fn valid_gguf() -> &'static [u8] {
    static BYTES: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    BYTES.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("tiny.gguf");
        write_synthetic_gguf(&SyntheticSpec::tiny(), &path).expect("written");
        std::fs::read(&path).expect("read back")
    })
}

/// Loads `bytes` as the run does (header, tokenizer, weights). Returns whether the model
/// loaded; a panic of a reader is caught and is a failure to load, but an abort (a huge
/// allocation sized by corrupt metadata) ends the test binary.
fn load(bytes: &[u8]) -> bool {
    load_error(bytes).is_none()
}

/// Loads `bytes` as [`load`] does; the error message (all of its causes), if it failed.
fn load_error(bytes: &[u8]) -> Option<String> {
    let mut file = tempfile::NamedTempFile::new().expect("temp file");
    file.write_all(bytes).expect("write");
    let choice = ModelChoice {
        model: ModelRef::Path(file.path().to_path_buf()),
        tokenizer: None,
        device: DeviceArg::Cpu,
        threads: 1,
        int8: false,
    };
    let error = LoadedModel::load(&choice).err()?;
    let message = format!("{error:#}");
    // Every failure names the file (the README's promise for a bad model).
    assert!(
        message.contains(&file.path().display().to_string()),
        "the error does not name the model file: {message}"
    );
    Some(message)
}

/// The header reader alone, on `bytes`: whatever it returns, it must return.
fn open_header(bytes: &[u8]) -> bool {
    let mut file = tempfile::NamedTempFile::new().expect("temp file");
    file.write_all(bytes).expect("write");
    GgufFile::open(file.path()).is_ok()
}

#[test]
fn the_valid_model_loads() {
    assert!(load(valid_gguf()));
}

proptest! {
    #![proptest_config(config(64))]

    #[test]
    fn gguf_reader_refuses_garbage(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        prop_assert!(!open_header(&bytes));
        prop_assert!(!load(&bytes));
    }

    #[test]
    fn gguf_reader_refuses_garbage_behind_the_magic(version in 1u32..4, bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let mut file = b"GGUF".to_vec();
        file.extend_from_slice(&version.to_le_bytes());
        file.extend_from_slice(&bytes);
        prop_assert!(!load(&file));
    }

    #[test]
    fn gguf_reader_refuses_any_truncation(fraction in 0.0f64..1.0) {
        let bytes = valid_gguf();
        let cut = ((bytes.len() as f64) * fraction) as usize;
        let _ = open_header(&bytes[..cut]);
        prop_assert!(!load(&bytes[..cut]), "cut at {} of {}", cut, bytes.len());
    }

    #[test]
    fn gguf_reader_survives_a_corrupt_byte(at in 0.0f64..1.0, value in any::<u8>()) {
        let mut bytes = valid_gguf().to_vec();
        // The header holds what a reader interprets: corrupt the first few kilobytes mostly.
        let header = bytes.len().min(16 * 1024);
        let i = ((header as f64) * at) as usize;
        bytes[i] = value;
        // Loads or not, it returns; a failure is an error naming the file (a panic of a
        // reader is caught and becomes one), never a crash.
        let _ = open_header(&bytes);
        let _ = load_error(&bytes);
    }
}
