//! JSONL documents, one per line, streamed with bounded memory: a line that is not a valid
//! document becomes a document carrying the error.

use std::io::{self, BufRead, Read};

use serde_json::Value;

use super::{Document, JsonlFields};

/// Lines longer than this are not parsed: they become error documents, and their bytes are
/// skipped without being held in memory.
pub const MAX_LINE_BYTES: usize = 16 * 1024 * 1024;

/// A line buffer grown past this is given back after its line, so one long line does not pin
/// its memory for the rest of the file.
const KEEP_BUFFER_BYTES: usize = 1024 * 1024;

/// Iterates the documents of a JSONL stream. `name` is the file name used in ids and sources.
///
/// Blank lines are skipped (they are no document); line numbers still count them.
pub struct JsonlReader<R> {
    reader: R,
    name: String,
    fields: JsonlFields,
    line_no: usize,
    max_line: usize,
    buf: Vec<u8>,
    /// A read error ended the stream: retrying would repeat it forever.
    failed: bool,
}

/// What reading one line found.
enum Line {
    Eof,
    /// The line is in `buf`, without its newline.
    Read,
    /// The line was longer than `max_line`; its bytes were skipped.
    TooLong,
}

impl<R: BufRead> JsonlReader<R> {
    pub fn new(reader: R, name: impl Into<String>, fields: JsonlFields) -> Self {
        Self {
            reader,
            name: name.into(),
            fields,
            line_no: 0,
            max_line: MAX_LINE_BYTES,
            buf: Vec::new(),
            failed: false,
        }
    }

    /// Sets the longest line accepted, in bytes (default [`MAX_LINE_BYTES`]).
    pub fn with_max_line_bytes(mut self, max_line: usize) -> Self {
        self.max_line = max_line;
        self
    }

    /// Reads up to the next newline, keeping at most `max_line` bytes: past that, the rest of
    /// the line is consumed chunk by chunk and dropped.
    fn read_line(&mut self) -> io::Result<Line> {
        if self.buf.capacity() > KEEP_BUFFER_BYTES {
            self.buf = Vec::new();
        }
        self.buf.clear();
        let mut seen_any = false;
        let mut too_long = false;
        loop {
            let chunk = match self.reader.fill_buf() {
                Ok(chunk) => chunk,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if chunk.is_empty() {
                break;
            }
            seen_any = true;
            let newline = chunk.iter().position(|&b| b == b'\n');
            let part = &chunk[..newline.unwrap_or(chunk.len())];
            if !too_long {
                if self.buf.len() + part.len() > self.max_line {
                    too_long = true;
                    self.buf = Vec::new();
                } else {
                    self.buf.extend_from_slice(part);
                }
            }
            let used = newline.map_or(chunk.len(), |i| i + 1);
            self.reader.consume(used);
            if newline.is_some() {
                break;
            }
        }
        Ok(match (seen_any, too_long) {
            (false, _) => Line::Eof,
            (true, false) => Line::Read,
            (true, true) => Line::TooLong,
        })
    }

    fn error_document(&self, message: impl std::fmt::Display) -> Document {
        let at = format!("{}:{}", self.name, self.line_no);
        Document {
            id: at.clone(),
            source: at.clone(),
            text: Err(format!("{at}: {message}")),
            gold: None,
        }
    }
}

/// The document of one non-blank line.
fn parse_line(name: &str, line_no: usize, fields: &JsonlFields, line: &[u8]) -> Document {
    let at = format!("{name}:{line_no}");
    let fallback_id = at.clone();
    let doc = |id: String, text: Result<String, String>| Document {
        id,
        source: at.clone(),
        text,
        gold: None,
    };
    let value: Value = match serde_json::from_slice(line) {
        Ok(v) => v,
        Err(e) => return doc(fallback_id, Err(format!("{at}: invalid JSON: {e}"))),
    };
    let id = match value.get(&fields.id) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => fallback_id,
    };
    let text = match value.get(&fields.text) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(other) => Err(format!(
            "{at}: field `{}` is not a string but {}",
            fields.text,
            json_kind(other)
        )),
        None => Err(format!("{at}: no field `{}`", fields.text)),
    };
    let gold = fields.gold.as_ref().and_then(|g| match value.get(g) {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        Some(Value::Bool(b)) => Some(b.to_string()),
        _ => None,
    });
    Document {
        gold,
        ..doc(id, text)
    }
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a bool",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

impl<R: BufRead> Iterator for JsonlReader<R> {
    type Item = Document;

    fn next(&mut self) -> Option<Document> {
        while !self.failed {
            self.line_no += 1;
            match self.read_line() {
                Ok(Line::Eof) => return None,
                Ok(Line::TooLong) => {
                    let limit = human_bytes(self.max_line);
                    return Some(self.error_document(format_args!("line longer than {limit}")));
                }
                Ok(Line::Read) => {
                    let mut line = trim_ascii(&self.buf);
                    if self.line_no == 1 {
                        // A UTF-8 byte order mark, as some Windows tools write.
                        line = line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(line);
                    }
                    if line.is_empty() {
                        continue;
                    }
                    return Some(parse_line(&self.name, self.line_no, &self.fields, line));
                }
                Err(e) => {
                    self.failed = true;
                    return Some(self.error_document(format_args!("read error: {e}")));
                }
            }
        }
        None
    }
}

/// How many documents a JSONL stream holds (its non-blank lines), scanning bytes without
/// parsing or keeping lines.
pub fn count_jsonl_documents(mut reader: impl Read) -> io::Result<usize> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut count = 0;
    let mut line_has_content = false;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        for &b in &buf[..n] {
            if b == b'\n' {
                count += usize::from(line_has_content);
                line_has_content = false;
            } else if !b.is_ascii_whitespace() {
                line_has_content = true;
            }
        }
    }
    Ok(count + usize::from(line_has_content))
}

fn human_bytes(n: usize) -> String {
    const MIB: usize = 1024 * 1024;
    if n >= MIB && n.is_multiple_of(MIB) {
        format!("{} MiB", n / MIB)
    } else {
        format!("{n} bytes")
    }
}

fn trim_ascii(b: &[u8]) -> &[u8] {
    let start = b
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(b.len());
    let end = b
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &b[start..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> Vec<Document> {
        JsonlReader::new(text.as_bytes(), "in.jsonl", JsonlFields::default()).collect()
    }

    #[test]
    fn lines_become_documents_with_ids() {
        let docs = read(
            "{\"id\":\"a\",\"text\":\"hello\"}\n\n{\"text\":\"world\"}\n{\"id\":7,\"text\":\"x\"}",
        );
        assert_eq!(docs.len(), 3);
        assert_eq!(docs[0].id, "a");
        assert_eq!(docs[0].text, Ok("hello".into()));
        assert_eq!(docs[1].id, "in.jsonl:3");
        assert_eq!(docs[2].id, "7");
    }

    #[test]
    fn bad_lines_become_error_documents() {
        let docs = read("not json\n{\"text\": 5}\n{\"body\":\"x\"}\n");
        assert_eq!(docs.len(), 3);
        assert!(docs[0]
            .text
            .as_ref()
            .unwrap_err()
            .contains("in.jsonl:1: invalid JSON"));
        assert!(docs[1].text.as_ref().unwrap_err().contains("not a string"));
        assert!(docs[2]
            .text
            .as_ref()
            .unwrap_err()
            .contains("no field `text`"));
    }

    #[test]
    fn long_lines_become_errors_and_the_next_line_is_read() {
        let input = format!(
            "{{\"text\":\"ok\"}}\n{{\"text\":\"{}\"}}\n{{\"text\":\"after\"}}",
            "x".repeat(100)
        );
        // A tiny buffer, so the long line spans many chunks.
        let reader = std::io::BufReader::with_capacity(8, input.as_bytes());
        let docs: Vec<_> = JsonlReader::new(reader, "in.jsonl", JsonlFields::default())
            .with_max_line_bytes(50)
            .collect();
        assert_eq!(docs.len(), 3);
        assert_eq!(docs[0].text, Ok("ok".into()));
        assert_eq!(docs[1].id, "in.jsonl:2");
        assert_eq!(
            docs[1].text,
            Err("in.jsonl:2: line longer than 50 bytes".into())
        );
        assert_eq!(docs[2].text, Ok("after".into()));
        assert_eq!(docs[2].id, "in.jsonl:3");
    }

    #[test]
    fn a_line_of_exactly_the_limit_is_read() {
        let line = "{\"text\":\"abc\"}";
        let docs: Vec<_> = JsonlReader::new(line.as_bytes(), "in.jsonl", JsonlFields::default())
            .with_max_line_bytes(line.len())
            .collect();
        assert_eq!(docs[0].text, Ok("abc".into()));
    }

    #[test]
    fn the_default_limit_is_16_mib_and_named_so() {
        let input = vec![b'x'; MAX_LINE_BYTES + 1];
        let docs: Vec<_> =
            JsonlReader::new(input.as_slice(), "big.jsonl", JsonlFields::default()).collect();
        assert_eq!(
            docs,
            [Document {
                id: "big.jsonl:1".into(),
                source: "big.jsonl:1".into(),
                text: Err("big.jsonl:1: line longer than 16 MiB".into()),
                gold: None,
            }]
        );
    }

    #[test]
    fn a_read_error_ends_the_stream_with_one_error_document() {
        struct Failing;
        impl Read for Failing {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::other("disk on fire"))
            }
        }
        let docs: Vec<_> = JsonlReader::new(
            io::BufReader::new(Failing),
            "in.jsonl",
            JsonlFields::default(),
        )
        .collect();
        assert_eq!(docs.len(), 1);
        assert_eq!(
            docs[0].text,
            Err("in.jsonl:1: read error: disk on fire".into())
        );
    }

    #[test]
    fn a_byte_order_mark_and_crlf_are_tolerated() {
        let docs = read("\u{FEFF}{\"text\":\"a\"}\r\n{\"text\":\"b\"}\r\n");
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0].text, Ok("a".into()));
        assert_eq!(docs[1].text, Ok("b".into()));
    }

    #[test]
    fn counting_matches_the_reader() {
        for text in [
            "",
            "\n\n",
            "{}\n",
            "{}",
            "a\n \t\n\nb\r\nc",
            "not json\n{\"text\":1}\n   \n",
        ] {
            let counted = count_jsonl_documents(text.as_bytes()).expect("in memory");
            assert_eq!(counted, read(text).len(), "{text:?}");
        }
    }
}
