//! JSON answers: with `--fields a,b` or `--schema FILE`, decoding is constrained by llguidance
//! to JSON that validates against the schema. The vocabulary is given to it as bytes (control
//! tokens marked as such, so no text can produce them); each job gets its own matcher, which
//! masks the logits of its sequence's next token and is fed the chosen one. The end of
//! generation is allowed only once the JSON is complete.

use std::sync::Arc;

use llguidance::api::TopLevelGrammar;
use llguidance::{Matcher, ParserFactory};
use serde_json::{json, Map, Value};
use toktrie::{ApproximateTokEnv, TokRxInfo, TokTrie};

use crate::tokenizer::Tokenizer;

/// A JSON schema compiled for one vocabulary.
pub struct JsonConstraint {
    factory: ParserFactory,
    grammar: TopLevelGrammar,
    /// The schema's top-level properties, in order (CSV columns).
    properties: Vec<String>,
    schema: Value,
}

impl std::fmt::Debug for JsonConstraint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JsonConstraint")
            .field("properties", &self.properties)
            .finish()
    }
}

/// Longest value of a `--fields` field: a small model can otherwise write one string until
/// `--max-tokens`, and a field is a short fact.
pub const FIELD_MAX_CHARS: usize = 200;

/// The schema of `--fields a,b,c`: an object of exactly those keys, each a string of at most
/// [`FIELD_MAX_CHARS`] characters or null.
pub fn fields_schema(fields: &[String]) -> Value {
    let properties: Map<String, Value> = fields
        .iter()
        .map(|f| {
            (
                f.clone(),
                json!({"type": ["string", "null"], "maxLength": FIELD_MAX_CHARS}),
            )
        })
        .collect();
    json!({
        "type": "object",
        "properties": properties,
        "required": fields,
        "additionalProperties": false,
    })
}

impl JsonConstraint {
    /// Compiles `schema` for `tokenizer`'s vocabulary; an invalid or unsupported schema is an
    /// error that says why (llguidance names the keyword).
    pub fn new(schema: &Value, tokenizer: &Tokenizer) -> Result<Self, String> {
        let words = tokenizer.token_bytes();
        let eos = tokenizer
            .end_of_generation_ids()
            .first()
            .copied()
            .ok_or("the model has no end-of-generation token")?;
        let trie = TokTrie::from(&TokRxInfo::new(words.len() as u32, eos), &words);
        let env: toktrie::TokEnv = Arc::new(ApproximateTokEnv::new(trie));
        let mut factory = ParserFactory::new_simple(&env).map_err(|e| e.to_string())?;
        factory.quiet();
        // Fixed separators and no free whitespace: a small model given free whitespace can loop
        // on it until --max-tokens.
        let mut schema = schema.clone();
        if let Some(object) = schema.as_object_mut() {
            object.entry("x-guidance").or_insert_with(|| {
                json!({"whitespace_flexible": false, "item_separator": ", ", "key_separator": ": "})
            });
        }
        let grammar = TopLevelGrammar::from_json_schema(schema.clone());
        let properties = schema
            .get("properties")
            .and_then(Value::as_object)
            .map(|p| p.keys().cloned().collect())
            .unwrap_or_default();
        let constraint = Self {
            factory,
            grammar,
            properties,
            schema,
        };
        // Compile once now: an unsupported keyword fails here, not in every document.
        let matcher = constraint.matcher();
        if let Some(e) = matcher.get_error() {
            return Err(e);
        }
        Ok(constraint)
    }

    /// A fresh matcher for one answer.
    pub fn matcher(&self) -> Matcher {
        Matcher::new(self.factory.create_parser(self.grammar.clone()))
    }

    /// The schema answers follow.
    pub fn schema(&self) -> &Value {
        &self.schema
    }

    pub fn properties(&self) -> &[String] {
        &self.properties
    }
}

/// The JSON of a finished answer, compact (whitespace outside strings removed, the model's
/// literals kept as written: a 20-digit integer stays one), with its parsed value; an error when
/// the answer was cut before the JSON closed.
pub fn parse_answer(text: &str) -> Result<(String, Value), String> {
    let value: Value = serde_json::from_str(text.trim()).map_err(|e| {
        format!("incomplete JSON: the answer ended before its JSON was complete ({e}); raise --max-tokens")
    })?;
    Ok((compact(text.trim()), value))
}

/// `json` without the whitespace between its tokens.
fn compact(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    let (mut in_string, mut escaped) = (false, false);
    for c in json.chars() {
        if in_string {
            out.push(c);
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
        } else if c == '"' {
            in_string = true;
            out.push(c);
        } else if !c.is_whitespace() {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_become_an_object_of_strings_or_nulls() {
        let schema = fields_schema(&["title".into(), "date".into()]);
        assert_eq!(schema["required"], json!(["title", "date"]));
        assert_eq!(
            schema["properties"]["date"]["type"],
            json!(["string", "null"])
        );
        assert_eq!(schema["additionalProperties"], json!(false));
    }

    #[test]
    fn answers_parse_compact_or_say_they_were_cut() {
        let (compact, value) =
            parse_answer(" { \"a\" : 1, \"b\": \"x \\\" y\" }\n").expect("parses");
        assert_eq!(compact, "{\"a\":1,\"b\":\"x \\\" y\"}");
        let (big, _) = parse_answer("{\"n\": 55205792585593560000}").expect("parses");
        assert_eq!(big, "{\"n\":55205792585593560000}");
        assert_eq!(value["a"], 1);
        let err = parse_answer("{\"a\": \"unfini").unwrap_err();
        assert!(err.starts_with("incomplete JSON"), "{err}");
    }
}
