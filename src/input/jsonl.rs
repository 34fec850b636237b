//! JSONL documents, one per line, streamed: a line that is not a valid document becomes a
//! document carrying the error.

use std::io::BufRead;

use serde_json::Value;

use super::{Document, JsonlFields};

/// Iterates the documents of a JSONL stream. `name` is the file name used in ids and sources.
pub struct JsonlReader<R> {
    reader: R,
    name: String,
    fields: JsonlFields,
    line_no: usize,
    buf: Vec<u8>,
}

impl<R: BufRead> JsonlReader<R> {
    pub fn new(reader: R, name: impl Into<String>, fields: JsonlFields) -> Self {
        Self {
            reader,
            name: name.into(),
            fields,
            line_no: 0,
            buf: Vec::new(),
        }
    }

    fn parse(&self, line: &[u8]) -> Document {
        let at = format!("{}:{}", self.name, self.line_no);
        let fallback_id = at.clone();
        let doc = |id: String, text: Result<String, String>| Document {
            id,
            source: at.clone(),
            text,
        };
        let value: Value = match serde_json::from_slice(line) {
            Ok(v) => v,
            Err(e) => return doc(fallback_id, Err(format!("{at}: invalid JSON: {e}"))),
        };
        let id = match value.get(&self.fields.id) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => fallback_id,
        };
        let text = match value.get(&self.fields.text) {
            Some(Value::String(s)) => Ok(s.clone()),
            Some(other) => Err(format!(
                "{at}: field `{}` is not a string but {}",
                self.fields.text,
                json_kind(other)
            )),
            None => Err(format!("{at}: no field `{}`", self.fields.text)),
        };
        doc(id, text)
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
        loop {
            self.buf.clear();
            self.line_no += 1;
            match self.reader.read_until(b'\n', &mut self.buf) {
                Ok(0) => return None,
                Ok(_) => {
                    let line = trim_ascii(&self.buf);
                    if line.is_empty() {
                        continue;
                    }
                    let line = line.to_vec();
                    return Some(self.parse(&line));
                }
                Err(e) => {
                    let at = format!("{}:{}", self.name, self.line_no);
                    return Some(Document {
                        id: at.clone(),
                        source: at.clone(),
                        text: Err(format!("{at}: read error: {e}")),
                    });
                }
            }
        }
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
}
