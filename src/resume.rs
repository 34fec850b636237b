//! `--resume`: which jobs an earlier run already wrote to the output, and the file made ready to
//! append to (a record torn by a kill cut off, the complete ones left byte for byte).
//!
//! A job is done when the output holds a record with its id, source and prompt whose status is
//! `ok` or `truncated`. Error records do not count: their jobs run again and the new record is
//! appended after the old one, so the last record of a job is its result.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::output::read::{read_records, ReadError};
use crate::output::Format;

#[derive(Debug, thiserror::Error)]
pub enum ResumeError {
    #[error("--resume: cannot read {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("--resume: {path} is not a docanalyze {format} output: {reason}")]
    Foreign {
        path: PathBuf,
        format: &'static str,
        reason: String,
    },
    #[error("--resume: {path} changed while the model was loading ({before} bytes, now {now}); is another run writing it?")]
    Changed {
        path: PathBuf,
        before: u64,
        now: u64,
    },
}

/// The identity of a job in the output: document id, source and prompt.
type JobKey = (String, String, String);

/// The jobs an output file already holds a good record for.
#[derive(Debug, Clone, Default)]
pub struct CompletedJobs {
    keys: HashSet<JobKey>,
}

impl CompletedJobs {
    pub fn contains(&self, id: &str, source: &str, prompt: &str) -> bool {
        // A tuple of Strings cannot be looked up by &strs without allocating; resume checks are
        // one per job, next to a tokenization, so the copies do not matter.
        self.keys
            .contains(&(id.to_string(), source.to_string(), prompt.to_string()))
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    fn insert(&mut self, id: &str, source: &str, prompt: &str, status: &str) {
        if matches!(status, "ok" | "truncated") {
            self.keys
                .insert((id.to_string(), source.to_string(), prompt.to_string()));
        }
    }
}

/// What `--resume` found in the output file.
#[derive(Debug, Clone)]
pub struct ExistingOutput {
    pub path: PathBuf,
    pub format: Format,
    pub completed: CompletedJobs,
    /// Bytes of complete records (and the CSV header) at the start of the file.
    pub complete_len: u64,
    /// The file's length when it was read; 0 when it did not exist.
    pub file_len: u64,
    /// Records in the complete part, whatever their status.
    pub records: usize,
    /// The CSV header found (empty for JSONL or an empty file).
    pub header: Vec<String>,
}

impl ExistingOutput {
    /// Reads `path` (a missing file is an empty output). Refuses a file that is not a
    /// docanalyze output of `format`, so that a wrong `-o` is not appended to.
    pub fn scan(path: &Path, format: Format) -> Result<Self, ResumeError> {
        let io_err = |source| ResumeError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut existing = Self {
            path: path.to_path_buf(),
            format,
            completed: CompletedJobs::default(),
            complete_len: 0,
            file_len: 0,
            records: 0,
            header: Vec::new(),
        };
        match std::fs::metadata(path) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(existing),
            Err(e) => return Err(io_err(e)),
        }
        let (mut records, mut completed) = (0, CompletedJobs::default());
        let summary = read_records(path, format, |r, _| {
            records += 1;
            completed.insert(&r.id, &r.source, &r.prompt, &r.status);
        })
        .map_err(|e| match e {
            ReadError::Io { path, source } => ResumeError::Io { path, source },
            ReadError::Foreign {
                path,
                format,
                reason,
            } => ResumeError::Foreign {
                path,
                format,
                reason,
            },
        })?;
        existing.file_len = summary.file_len;
        existing.complete_len = summary.complete_len;
        existing.records = records;
        existing.completed = completed;
        existing.header = summary.header;
        Ok(existing)
    }

    /// A final part after the last complete record (cut off when the file is reopened).
    pub fn torn_bytes(&self) -> u64 {
        self.file_len - self.complete_len
    }

    /// Whether the file needs the CSV header written first.
    pub fn needs_header(&self) -> bool {
        self.format == Format::Csv && self.complete_len == 0
    }

    /// Opens the file for appending after its complete records, cutting off a torn final
    /// record. Fails if the file changed since it was scanned.
    pub fn reopen(&self) -> Result<File, ResumeError> {
        let io_err = |source| ResumeError::Io {
            path: self.path.clone(),
            source,
        };
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&self.path)
            .map_err(io_err)?;
        let now = file.metadata().map_err(io_err)?.len();
        if now != self.file_len {
            return Err(ResumeError::Changed {
                path: self.path.clone(),
                before: self.file_len,
                now,
            });
        }
        if self.torn_bytes() > 0 {
            tracing::warn!(
                "{}: removing an incomplete last record ({} bytes) left by an interrupted run",
                self.path.display(),
                self.torn_bytes()
            );
            file.set_len(self.complete_len).map_err(io_err)?;
        }
        file.seek(SeekFrom::Start(self.complete_len))
            .map_err(io_err)?;
        Ok(file)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(text: &str, format: Format) -> Result<ExistingOutput, ResumeError> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("out");
        std::fs::write(&path, text).expect("write");
        ExistingOutput::scan(&path, format)
    }

    const HEADER: &str =
        "id,source,prompt,status,output,stop_reason,prompt_tokens,generated_tokens,latency_ms,error\n";

    #[test]
    fn csv_records_are_keyed_and_a_torn_one_is_found() {
        let good = "d1,s1,summarize,ok,\"multi\nline\",eos,10,3,5,\n";
        let failed = "d2,s2,summarize,error,,,0,0,0,empty document\n";
        let torn = "d3,s3,summarize,ok,\"half";
        let text = format!("{HEADER}{good}{failed}{torn}");
        let out = scan(&text, Format::Csv).expect("scans");
        assert_eq!(out.records, 2);
        assert!(out.completed.contains("d1", "s1", "summarize"));
        assert!(!out.completed.contains("d2", "s2", "summarize"));
        assert_eq!(out.completed.len(), 1);
        assert_eq!(out.torn_bytes(), torn.len() as u64);
        assert!(!out.needs_header());
    }

    #[test]
    fn an_empty_or_missing_csv_needs_its_header() {
        assert!(scan("", Format::Csv).expect("scans").needs_header());
        assert!(scan("id,sou", Format::Csv).expect("scans").needs_header());
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = ExistingOutput::scan(&dir.path().join("none.csv"), Format::Csv);
        assert!(missing.expect("a missing file is empty").needs_header());
    }

    #[test]
    fn jsonl_torn_lines_are_found_and_errors_not_counted() {
        let ok = r#"{"id":"a","source":"a.txt","prompt":"p","status":"truncated"}"#;
        let err = r#"{"id":"b","source":"b.txt","prompt":"p","status":"error"}"#;
        let text = format!("{ok}\n\n{err}\n{{\"id\":\"c\",\"sou");
        let out = scan(&text, Format::Jsonl).expect("scans");
        assert_eq!(out.records, 2);
        assert!(out.completed.contains("a", "a.txt", "p"));
        assert!(!out.completed.contains("b", "b.txt", "p"));
        assert_eq!(out.torn_bytes(), "{\"id\":\"c\",\"sou".len() as u64);
    }

    #[test]
    fn foreign_files_are_refused() {
        let err = scan("hello\n", Format::Jsonl).expect_err("refused");
        assert!(err.to_string().contains("line 1 is not a record"), "{err}");
        let err = scan("a,b\n", Format::Csv).expect_err("refused");
        assert!(err.to_string().contains("not the header"), "{err}");
        let err = scan(&format!("{HEADER}x,y\n"), Format::Csv).expect_err("refused");
        assert!(err.to_string().contains("record 1"), "{err}");
    }

    #[test]
    fn reopening_cuts_the_torn_record_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("out.jsonl");
        let ok = r#"{"id":"a","source":"a.txt","prompt":"p","status":"ok"}"#;
        std::fs::write(&path, format!("{ok}\n{{\"id\"")).expect("write");
        let out = ExistingOutput::scan(&path, Format::Jsonl).expect("scans");
        let mut file = out.reopen().expect("reopens");
        io::Write::write_all(&mut file, b"next\n").expect("append");
        drop(file);
        let text = std::fs::read_to_string(&path).expect("read");
        assert_eq!(text, format!("{ok}\nnext\n"));
    }

    #[test]
    fn a_file_that_changed_is_not_reopened() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("out.jsonl");
        std::fs::write(&path, "").expect("write");
        let out = ExistingOutput::scan(&path, Format::Jsonl).expect("scans");
        std::fs::write(&path, "more\n").expect("write");
        assert!(matches!(out.reopen(), Err(ResumeError::Changed { .. })));
    }
}
