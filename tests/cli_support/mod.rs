//! Fixtures of the command-line tests: a tiny random-weight model, small document sets, and the
//! binary with a clean environment.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use docanalyze::model::synthetic::{write_synthetic_gguf, SyntheticSpec};

/// A temporary folder holding the tiny model and whatever a test writes.
pub struct Workspace {
    pub dir: tempfile::TempDir,
    pub model: PathBuf,
}

impl Workspace {
    /// The tiny synthetic model (2 layers, 64 wide, byte-level tokenizer, ChatML template).
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let model = dir.path().join("tiny.gguf");
        let spec = SyntheticSpec {
            context_length: 512,
            ..SyntheticSpec::tiny()
        };
        write_synthetic_gguf(&spec, &model).expect("synthetic model written");
        Self { dir, model }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// A folder `name` with `n` short text documents.
    pub fn docs(&self, name: &str, n: usize) -> PathBuf {
        let dir = self.path(name);
        std::fs::create_dir_all(&dir).expect("mkdir");
        for i in 0..n {
            std::fs::write(
                dir.join(format!("doc-{i:03}.txt")),
                format!("Document {i} is about whales, ships and the sea."),
            )
            .expect("write document");
        }
        dir
    }

    /// A JSONL file `name` with `n` short documents.
    pub fn jsonl(&self, name: &str, n: usize) -> PathBuf {
        let path = self.path(name);
        let lines: String = (0..n)
            .map(|i| {
                format!("{{\"id\": \"t{i}\", \"text\": \"Ticket {i}: the printer is on fire.\"}}\n")
            })
            .collect();
        std::fs::write(&path, lines).expect("write jsonl");
        path
    }

    /// `docanalyze` run on the tiny model, small and fast.
    pub fn run(&self) -> Command {
        let mut cmd = docanalyze();
        cmd.args(self.run_args());
        cmd
    }

    /// The arguments of [`Workspace::run`], for a command spawned with pipes.
    pub fn run_args(&self) -> Vec<std::ffi::OsString> {
        let mut args: Vec<std::ffi::OsString> = [
            "run",
            "--ctx-size",
            "256",
            "--max-tokens",
            "8",
            "--threads",
            "1",
            "--model",
        ]
        .iter()
        .map(Into::into)
        .collect();
        args.push(self.model.clone().into());
        args
    }
}

/// The binary, with no model or log settings inherited from the environment.
pub fn docanalyze() -> Command {
    let mut cmd = Command::cargo_bin("docanalyze").expect("binary built");
    cmd.env_remove("DOCANALYZE_MODEL")
        .env_remove("DOCANALYZE_LOG");
    cmd
}

pub fn stdout_of(output: &std::process::Output) -> String {
    String::from_utf8(output.stdout.clone()).expect("stdout is UTF-8")
}

pub fn stderr_of(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

pub fn display(path: &Path) -> String {
    path.display().to_string()
}

/// A CSV output's header and a reader positioned at its first record.
pub fn csv_with_header(path: &Path) -> (Vec<String>, csv::Reader<std::fs::File>) {
    let mut reader = csv::Reader::from_path(path).expect("csv");
    let header = reader
        .headers()
        .expect("header")
        .iter()
        .map(String::from)
        .collect();
    (header, reader)
}
