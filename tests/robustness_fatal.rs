//! Fatal errors through the binary: each exits 2 with one line naming the file or flag at fault,
//! never a panic, and leaves an existing output file byte for byte as it was.

mod cli_support;

use std::path::{Path, PathBuf};

use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use cli_support::{stderr_of, Workspace};

/// Yesterday's results, which no failed start may touch.
const PREVIOUS: &str = "{\"id\":\"old\",\"status\":\"ok\"}\n";

struct Case {
    ws: Workspace,
    docs: PathBuf,
    out: PathBuf,
}

impl Case {
    fn new() -> Self {
        let ws = Workspace::new();
        let docs = ws.docs("docs", 2);
        let out = ws.path("out.jsonl");
        std::fs::write(&out, PREVIOUS).unwrap();
        Self { ws, docs, out }
    }

    /// Runs `docanalyze run DOCS -o OUT` on the tiny model with `args`, and checks the
    /// failure: exit 2, one error line containing each of `names`, no panic, the output
    /// untouched.
    fn fails(&self, args: &[&str], names: &[&str]) {
        self.fails_with_model(&s(&self.ws.model), args, names);
    }

    /// [`Case::fails`] with another model.
    fn fails_with_model(&self, model: &str, args: &[&str], names: &[&str]) {
        let output = cli_support::docanalyze()
            .args(["run", "--max-tokens", "8", "--threads", "1"])
            .args(["--model", model])
            .arg(&self.docs)
            .arg("-o")
            .arg(&self.out)
            .args(args)
            .output()
            .unwrap();
        let stderr = stderr_of(&output);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        let errors: Vec<&str> = stderr.lines().filter(|l| l.contains("error:")).collect();
        assert_eq!(
            errors.len(),
            1,
            "{args:?}: one error line expected in\n{stderr}"
        );
        for name in names {
            assert!(
                errors[0].contains(name),
                "{args:?}: `{name}` not named in\n{stderr}"
            );
        }
        assert_eq!(
            std::fs::read_to_string(&self.out).unwrap(),
            PREVIOUS,
            "{args:?}: the output was touched"
        );
    }

    /// A file named `name` in the workspace holding `bytes`; its path as a string.
    fn file(&self, name: &str, bytes: &[u8]) -> String {
        let path = self.ws.path(name);
        std::fs::write(&path, bytes).unwrap();
        path.display().to_string()
    }
}

fn s(path: &Path) -> String {
    path.display().to_string()
}

#[test]
fn a_missing_model_file() {
    let case = Case::new();
    let missing = s(&case.ws.path("nowhere.gguf"));
    case.fails_with_model(&missing, &[], &["nowhere.gguf"]);
}

#[test]
fn a_truncated_model_file() {
    let case = Case::new();
    let bytes = std::fs::read(&case.ws.model).unwrap();
    // In the header, in the metadata, in the tensor infos and in the tensor data.
    for cut in [3, 40, 2000, bytes.len() / 2, bytes.len() - 1] {
        let model = case.file(&format!("cut-{cut}.gguf"), &bytes[..cut]);
        case.fails_with_model(&model, &[], &[&format!("cut-{cut}.gguf")]);
    }
}

#[test]
fn a_garbage_model_file() {
    let case = Case::new();
    let garbage: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let model = case.file("garbage.gguf", &garbage);
    case.fails_with_model(&model, &[], &["garbage.gguf"]);
    let text = case.file("notes.gguf", b"this is a text file\n");
    case.fails_with_model(&text, &[], &["notes.gguf"]);
    let empty = case.file("empty.gguf", b"");
    case.fails_with_model(&empty, &[], &["empty.gguf"]);
    let folder = s(&case.ws.path("docs"));
    case.fails_with_model(&folder, &[], &["docs"]);
}

#[test]
fn a_model_of_an_unsupported_architecture() {
    let case = Case::new();
    let path = case.ws.path("gpt2.gguf");
    let tensor = QTensor::quantize(
        &Tensor::zeros((4, 32), candle_core::DType::F32, &Device::Cpu).unwrap(),
        GgmlDType::F32,
    )
    .unwrap();
    let arch = gguf_file::Value::String("gpt2".into());
    let ctx = gguf_file::Value::U32(1024);
    let mut file = std::fs::File::create(&path).unwrap();
    gguf_file::write(
        &mut file,
        &[
            ("general.architecture", &arch),
            ("gpt2.context_length", &ctx),
        ],
        &[("token_embd.weight", &tensor)],
    )
    .unwrap();
    drop(file);
    case.fails_with_model(&s(&path), &[], &["gpt2", "gpt2.gguf"]);
}

#[test]
fn a_model_whose_header_makes_the_reader_panic() {
    // `general.alignment = 0` makes candle's reader divide by zero: the panic is caught.
    let case = Case::new();
    let path = case.ws.path("zero-alignment.gguf");
    let zero = gguf_file::Value::U32(0);
    let mut file = std::fs::File::create(&path).unwrap();
    gguf_file::write(&mut file, &[("general.alignment", &zero)], &[]).unwrap();
    drop(file);
    case.fails_with_model(&s(&path), &[], &["zero-alignment.gguf"]);
}

#[test]
fn a_missing_input() {
    let case = Case::new();
    let output = case
        .ws
        .run()
        .arg(case.ws.path("no-such-docs"))
        .arg("-o")
        .arg(&case.out)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr_of(&output).contains("no-such-docs"));
    assert_eq!(std::fs::read_to_string(&case.out).unwrap(), PREVIOUS);
}

#[test]
fn invalid_flag_values() {
    let case = Case::new();
    case.fails(&["--sequences", "0"], &["--sequences"]);
    case.fails(&["--batch-size", "0"], &["--batch-size"]);
    case.fails(&["--max-tokens", "0"], &["--max-tokens"]);
    case.fails(&["--threads", "0"], &["--threads"]);
    // The tiny model's context is 512 positions.
    case.fails(&["--ctx-size", "100000"], &["--ctx-size", "tiny.gguf"]);
    case.fails(&["--shard", "3/2"], &["--shard"]);
    case.fails(&["--overflow", "sometimes"], &["--overflow"]);
    case.fails(&["--sequences", "many"], &["--sequences"]);
}

#[test]
fn resume_to_stdout_is_refused() {
    let case = Case::new();
    let output = case
        .ws
        .run()
        .arg(&case.docs)
        .args(["--resume", "-o", "-"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr_of(&output).contains("--resume"));
    assert!(output.stdout.is_empty());
}

#[test]
fn resume_onto_a_file_that_is_no_output() {
    let case = Case::new();
    std::fs::write(&case.out, "dear diary\n").unwrap();
    let output = case
        .ws
        .run()
        .arg(&case.docs)
        .arg("-o")
        .arg(&case.out)
        .arg("--resume")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = stderr_of(&output);
    assert!(
        stderr.contains("--resume") && stderr.contains("out.jsonl"),
        "{stderr}"
    );
    assert_eq!(std::fs::read_to_string(&case.out).unwrap(), "dear diary\n");
}

#[test]
fn an_output_that_cannot_be_written() {
    let case = Case::new();
    let output = case
        .ws
        .run()
        .arg(&case.docs)
        .args(["-o", "/nonexistent/dir/out.jsonl"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = stderr_of(&output);
    assert!(stderr.contains("/nonexistent/dir/out.jsonl"), "{stderr}");
}

#[test]
fn a_report_that_cannot_be_written_after_the_run() {
    // The records are written first; the report failing still makes the run fatal (exit 2).
    let case = Case::new();
    let output = case
        .ws
        .run()
        .arg(&case.docs)
        .arg("-o")
        .arg(&case.out)
        .args(["-q", "--report", "/nonexistent/dir/report.json"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr_of(&output).contains("/nonexistent/dir/report.json"));
    assert_eq!(
        std::fs::read_to_string(&case.out).unwrap().lines().count(),
        2
    );
}

#[test]
fn info_on_a_bad_model_is_fatal_too() {
    let case = Case::new();
    let bytes = std::fs::read(&case.ws.model).unwrap();
    let model = case.file("cut.gguf", &bytes[..bytes.len() / 3]);
    let output = cli_support::docanalyze()
        .args(["info", "--model", &model])
        .output()
        .unwrap();
    let stderr = stderr_of(&output);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("cut.gguf") && !stderr.contains("panicked"),
        "{stderr}"
    );
}
