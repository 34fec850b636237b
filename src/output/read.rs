//! Reading outputs back, for `--resume` and `merge`: the complete records of a CSV or JSONL file
//! in order, each with its key fields and its raw form (so a merge copies every column, those it
//! does not know included), and the length of a torn last record left by a killed writer.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::{Format, CSV_COLUMNS};

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("cannot read {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path} is not a docanalyze {format} output: {reason}")]
    Foreign {
        path: PathBuf,
        format: &'static str,
        reason: String,
    },
}

/// The fields of a record that resume and merge decide by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordFields {
    pub id: String,
    pub source: String,
    pub prompt: String,
    pub status: String,
    pub prompt_tokens: u64,
    pub generated_tokens: u64,
    pub latency_ms: u64,
}

impl RecordFields {
    /// Whether the record is a result (`ok`, `truncated`) rather than an error.
    pub fn is_done(&self) -> bool {
        matches!(self.status.as_str(), "ok" | "truncated")
    }
}

/// A record as it is in the file.
#[derive(Debug, Clone)]
pub enum RawRecord {
    /// The line, newline included.
    Jsonl(Vec<u8>),
    Csv(csv::ByteRecord),
}

/// What a read found besides the records.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadSummary {
    /// The CSV header (empty for JSONL, or a CSV without one yet).
    pub header: Vec<String>,
    /// Bytes of complete records (and the CSV header) at the start of the file.
    pub complete_len: u64,
    /// The file's length.
    pub file_len: u64,
}

impl ReadSummary {
    /// Bytes of a final record cut off by a killed writer.
    pub fn torn_bytes(&self) -> u64 {
        self.file_len - self.complete_len
    }
}

/// Calls `each` on every complete record of `path`, in order. A missing file is an error here
/// (callers that accept one check first). A file that holds anything but records of `format` is
/// [`ReadError::Foreign`].
pub fn read_records(
    path: &Path,
    format: Format,
    mut each: impl FnMut(RecordFields, RawRecord),
) -> Result<ReadSummary, ReadError> {
    let io_err = |source| ReadError::Io {
        path: path.to_path_buf(),
        source,
    };
    let foreign = |reason: String| ReadError::Foreign {
        path: path.to_path_buf(),
        format: match format {
            Format::Csv => "CSV",
            Format::Jsonl => "JSONL",
        },
        reason,
    };
    let file = File::open(path).map_err(io_err)?;
    let file_len = file.metadata().map_err(io_err)?.len();
    let mut summary = ReadSummary {
        file_len,
        ..ReadSummary::default()
    };
    match format {
        Format::Jsonl => {
            summary.complete_len = read_jsonl(file, &mut each).map_err(|e| match e {
                LineError::Io(source) => io_err(source),
                LineError::NotARecord(line) => foreign(format!("line {line} is not a record")),
            })?;
        }
        Format::Csv => {
            summary.complete_len =
                complete_csv_len(BufReader::new(File::open(path).map_err(io_err)?))
                    .map_err(io_err)?;
            summary.header =
                read_csv(file.take(summary.complete_len), &mut each).map_err(foreign)?;
        }
    }
    Ok(summary)
}

enum LineError {
    Io(io::Error),
    NotARecord(usize),
}

/// Every newline-terminated line must be a record (blank lines aside); a last line without its
/// newline is torn by definition, whatever it holds, since records are written whole. Returns
/// the length of the complete part.
fn read_jsonl(
    file: File,
    each: &mut impl FnMut(RecordFields, RawRecord),
) -> Result<u64, LineError> {
    let mut reader = BufReader::new(file);
    let mut offset = 0u64;
    let mut line_no = 0usize;
    loop {
        let mut line = Vec::new();
        let n = reader.read_until(b'\n', &mut line).map_err(LineError::Io)?;
        if n == 0 || line.last() != Some(&b'\n') {
            return Ok(offset);
        }
        line_no += 1;
        offset += n as u64;
        if line.trim_ascii().is_empty() {
            continue;
        }
        let fields = jsonl_fields(&line).ok_or(LineError::NotARecord(line_no))?;
        each(fields, RawRecord::Jsonl(line));
    }
}

fn jsonl_fields(line: &[u8]) -> Option<RecordFields> {
    let value: Value = serde_json::from_slice(line).ok()?;
    let text = |k: &str| value.get(k)?.as_str().map(str::to_string);
    let number = |k: &str| value.get(k).and_then(Value::as_u64).unwrap_or(0);
    Some(RecordFields {
        id: text("id")?,
        source: text("source")?,
        prompt: text("prompt")?,
        status: text("status")?,
        prompt_tokens: number("prompt_tokens"),
        generated_tokens: number("generated_tokens"),
        latency_ms: number("latency_ms"),
    })
}

/// The records of a CSV's complete part; its header must start with [`CSV_COLUMNS`]. Returns
/// the header.
fn read_csv(
    complete: impl Read,
    each: &mut impl FnMut(RecordFields, RawRecord),
) -> Result<Vec<String>, String> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(complete);
    let mut rows = reader.byte_records();
    let header: Vec<String> = match rows.next() {
        None => return Ok(Vec::new()),
        Some(Ok(header)) => header
            .iter()
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect(),
        Some(Err(e)) => return Err(format!("its header cannot be read: {e}")),
    };
    if !header
        .iter()
        .map(String::as_str)
        .take(CSV_COLUMNS.len())
        .eq(CSV_COLUMNS)
    {
        return Err(format!(
            "its first line is not the header {}",
            CSV_COLUMNS.join(",")
        ));
    }
    for (i, row) in rows.enumerate() {
        let bad = || format!("record {} is not a record", i + 1);
        let row = row.map_err(|_| bad())?;
        if row.len() != header.len() {
            return Err(bad());
        }
        let text = |k: usize| String::from_utf8_lossy(&row[k]).into_owned();
        let number = |k: usize| text(k).parse().unwrap_or(0);
        let fields = RecordFields {
            id: text(0),
            source: text(1),
            prompt: text(2),
            status: text(3),
            prompt_tokens: number(6),
            generated_tokens: number(7),
            latency_ms: number(8),
        };
        each(fields, RawRecord::Csv(row));
    }
    Ok(header)
}

/// The length of the CSV text up to the end of its last complete record: the byte after the
/// last newline that is outside quotes. (RFC 4180: a quote inside a quoted field is doubled,
/// so counting quotes tells whether a newline is inside one.)
pub fn complete_csv_len(mut reader: impl BufRead) -> io::Result<u64> {
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

    const HEADER: &str =
        "id,source,prompt,status,output,stop_reason,prompt_tokens,generated_tokens,latency_ms,error\n";

    fn read(text: &str, format: Format) -> Result<(Vec<RecordFields>, ReadSummary), ReadError> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("out");
        std::fs::write(&path, text).expect("write");
        let mut records = Vec::new();
        let summary = read_records(&path, format, |f, _| records.push(f))?;
        Ok((records, summary))
    }

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
    fn both_formats_give_the_same_fields_and_find_the_torn_tail() {
        let csv = format!("{HEADER}d1,s1,p,ok,\"multi\nline\",eos,10,3,5,\nd2,s2,p,error,,,0,0,0,bad\nd3,s3,p,ok,\"half");
        let jsonl = concat!(
            r#"{"id":"d1","source":"s1","prompt":"p","status":"ok","prompt_tokens":10,"generated_tokens":3,"latency_ms":5}"#,
            "\n\n",
            r#"{"id":"d2","source":"s2","prompt":"p","status":"error","prompt_tokens":0,"generated_tokens":0,"latency_ms":0}"#,
            "\n{\"id\":\"d3\",\"sou"
        );
        let (from_csv, csv_summary) = read(&csv, Format::Csv).expect("reads");
        let (from_jsonl, jsonl_summary) = read(jsonl, Format::Jsonl).expect("reads");
        assert_eq!(from_csv, from_jsonl);
        assert_eq!(from_csv.len(), 2);
        assert!(from_csv[0].is_done() && !from_csv[1].is_done());
        assert_eq!(from_csv[0].prompt_tokens, 10);
        assert_eq!(csv_summary.torn_bytes(), "d3,s3,p,ok,\"half".len() as u64);
        assert_eq!(
            jsonl_summary.torn_bytes(),
            "{\"id\":\"d3\",\"sou".len() as u64
        );
        assert_eq!(csv_summary.header.len(), 10);
    }

    #[test]
    fn foreign_files_are_refused() {
        let err = read("hello\n", Format::Jsonl).expect_err("refused");
        assert!(err.to_string().contains("line 1 is not a record"), "{err}");
        let err = read("a,b\n", Format::Csv).expect_err("refused");
        assert!(err.to_string().contains("not the header"), "{err}");
        let err = read(&format!("{HEADER}x,y\n"), Format::Csv).expect_err("refused");
        assert!(err.to_string().contains("record 1"), "{err}");
    }
}
