//! `--resume`: which jobs an earlier run already wrote to the output, and the file made ready to
//! append to (a record torn by a kill cut off, the complete ones left byte for byte).
//!
//! A job is done when the output holds a record with its id, source and prompt whose status is
//! `ok` or `truncated`. Error records do not count: their jobs run again and the new record is
//! appended after the old one, so the last record of a job is its result.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::output::{Format, CSV_COLUMNS};

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
        };
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(existing),
            Err(e) => return Err(io_err(e)),
        };
        existing.file_len = file.metadata().map_err(io_err)?.len();
        match format {
            Format::Jsonl => existing.scan_jsonl(file)?,
            Format::Csv => {
                let mut file = file;
                existing.complete_len = complete_csv_len(BufReader::new(&file)).map_err(io_err)?;
                file.rewind().map_err(io_err)?;
                existing.scan_csv(file)?;
            }
        }
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

    fn foreign(&self, reason: String) -> ResumeError {
        ResumeError::Foreign {
            path: self.path.clone(),
            format: match self.format {
                Format::Csv => "CSV",
                Format::Jsonl => "JSONL",
            },
            reason,
        }
    }

    /// Every newline-terminated line must be a record (blank lines aside); a last line without
    /// its newline is torn by definition, whatever it holds, since records are written whole.
    fn scan_jsonl(&mut self, file: File) -> Result<(), ResumeError> {
        let mut reader = BufReader::new(file);
        let mut line = Vec::new();
        let mut offset = 0u64;
        let mut line_no = 0usize;
        loop {
            line.clear();
            let n = reader
                .read_until(b'\n', &mut line)
                .map_err(|source| ResumeError::Io {
                    path: self.path.clone(),
                    source,
                })?;
            if n == 0 || line.last() != Some(&b'\n') {
                break;
            }
            line_no += 1;
            offset += n as u64;
            self.complete_len = offset;
            if line.trim_ascii().is_empty() {
                continue;
            }
            let key = jsonl_record_key(&line)
                .ok_or_else(|| self.foreign(format!("line {line_no} is not a record")))?;
            self.records += 1;
            self.completed.insert(&key[0], &key[1], &key[2], &key[3]);
        }
        Ok(())
    }

    fn scan_csv(&mut self, file: File) -> Result<(), ResumeError> {
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .from_reader(file.take(self.complete_len));
        let mut rows = reader.byte_records();
        match rows.next() {
            None => return Ok(()),
            Some(Ok(header)) if header.iter().eq(CSV_COLUMNS.iter().map(|c| c.as_bytes())) => {}
            Some(_) => {
                return Err(self.foreign(format!(
                    "its first line is not the header {}",
                    CSV_COLUMNS.join(",")
                )))
            }
        }
        for (i, row) in rows.enumerate() {
            let bad = || self.foreign(format!("record {} is not a record", i + 1));
            let row = row.map_err(|_| bad())?;
            if row.len() != CSV_COLUMNS.len() {
                return Err(bad());
            }
            let field = |k: usize| String::from_utf8_lossy(&row[k]).into_owned();
            self.records += 1;
            self.completed
                .insert(&field(0), &field(1), &field(2), &field(3));
        }
        Ok(())
    }
}

/// `[id, source, prompt, status]` of a JSONL record.
fn jsonl_record_key(line: &[u8]) -> Option<[String; 4]> {
    let value: Value = serde_json::from_slice(line).ok()?;
    let field = |k: &str| value.get(k)?.as_str().map(str::to_string);
    Some([
        field("id")?,
        field("source")?,
        field("prompt")?,
        field("status")?,
    ])
}

/// The length of the CSV text up to the end of its last complete record: the byte after the
/// last newline that is outside quotes. (RFC 4180: a quote inside a quoted field is doubled,
/// so counting quotes tells whether a newline is inside one.)
fn complete_csv_len(mut reader: impl BufRead) -> io::Result<u64> {
    let mut in_quotes = false;
    let mut offset = 0u64;
    let mut complete = 0u64;
    loop {
        let chunk = match reader.fill_buf() {
            Ok(c) => c,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if chunk.is_empty() {
            return Ok(complete);
        }
        for (i, &b) in chunk.iter().enumerate() {
            match b {
                b'"' => in_quotes = !in_quotes,
                b'\n' if !in_quotes => complete = offset + i as u64 + 1,
                _ => {}
            }
        }
        let n = chunk.len();
        offset += n as u64;
        reader.consume(n);
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
    fn csv_quotes_hide_newlines() {
        let text = "a,\"x\ny\",b\nc,\"d";
        assert_eq!(
            complete_csv_len(text.as_bytes()).expect("in memory"),
            "a,\"x\ny\",b\n".len() as u64
        );
        assert_eq!(
            complete_csv_len("a,\"\"\"\"\n".as_bytes()).expect("in memory"),
            7
        );
        assert_eq!(
            complete_csv_len("a,\"x\n".as_bytes()).expect("in memory"),
            0
        );
    }

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
