//! The output record: one per document × prompt.

use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};

/// CSV columns, in order.
pub const CSV_COLUMNS: [&str; 10] = [
    "id",
    "source",
    "prompt",
    "status",
    "output",
    "stop_reason",
    "prompt_tokens",
    "generated_tokens",
    "latency_ms",
    "error",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Truncated,
    Error,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Truncated => "truncated",
            Status::Error => "error",
        }
    }
}

/// The result of one document × prompt.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Record {
    pub id: String,
    pub source: String,
    pub prompt: String,
    pub status: Status,
    pub output: String,
    /// `eos`, `stop`, `length`, `context`, or empty.
    pub stop_reason: String,
    pub prompt_tokens: usize,
    pub generated_tokens: usize,
    pub latency_ms: u64,
    pub error: String,
    /// The chunks the document was read in (`--overflow chunk`); 1 when it fit.
    pub chunks: usize,
    /// Label answers: every label's probability, in label order (JSONL `scores` object, CSV
    /// `scores` column as JSON text).
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "scores_as_object"
    )]
    pub scores: Option<Vec<(String, f64)>>,
    /// JSON answers: the parsed value (JSONL `fields`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fields: Option<serde_json::Value>,
}

fn scores_as_object<S: Serializer>(
    scores: &Option<Vec<(String, f64)>>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    let scores = scores.as_deref().unwrap_or_default();
    let mut map = serializer.serialize_map(Some(scores.len()))?;
    for (label, p) in scores {
        map.serialize_entry(label, p)?;
    }
    map.end()
}

impl Record {
    /// A record for a document that failed before or during generation.
    pub fn error(id: &str, source: &str, prompt: &str, error: String) -> Self {
        Self {
            id: id.to_string(),
            source: source.to_string(),
            prompt: prompt.to_string(),
            status: Status::Error,
            output: String::new(),
            stop_reason: String::new(),
            prompt_tokens: 0,
            generated_tokens: 0,
            latency_ms: 0,
            error,
            chunks: 1,
            scores: None,
            fields: None,
        }
    }

    /// The CSV column of a JSON answer's top-level `property`: strings as they are, numbers and
    /// booleans as written, nested values as JSON text, null or absent empty.
    pub fn field_text(&self, property: &str) -> String {
        match self.fields.as_ref().and_then(|f| f.get(property)) {
            None | Some(serde_json::Value::Null) => String::new(),
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
        }
    }

    /// The `scores` column: the JSON object, or empty.
    pub fn scores_text(&self) -> String {
        match &self.scores {
            Some(_) => {
                #[derive(Serialize)]
                struct Scores<'a>(
                    #[serde(serialize_with = "scores_as_object")] &'a Option<Vec<(String, f64)>>,
                );
                serde_json::to_string(&Scores(&self.scores)).unwrap_or_default()
            }
            None => String::new(),
        }
    }

    /// The CSV row, in [`CSV_COLUMNS`] order.
    pub fn csv_row(&self) -> [String; 10] {
        [
            self.id.clone(),
            self.source.clone(),
            self.prompt.clone(),
            self.status.as_str().to_string(),
            self.output.clone(),
            self.stop_reason.clone(),
            self.prompt_tokens.to_string(),
            self.generated_tokens.to_string(),
            self.latency_ms.to_string(),
            self.error.clone(),
        ]
    }
}
