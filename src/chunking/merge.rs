//! Merging the answers of a document's chunks without another model call: label scores weighted
//! by chunk size, JSON answers merged per field preferring values the chunk's text holds.

use serde_json::{Map, Value};

use super::split::floor_char_boundary;

/// Each label's probability mass summed over the chunks, weighted by each chunk's tokens, and
/// normalized; `chunks` are `(scores in label order, tokens)`.
pub fn merge_label_scores(chunks: &[(Vec<f64>, usize)]) -> Vec<f64> {
    let labels = chunks.first().map_or(0, |(s, _)| s.len());
    let mut mass = vec![0.0f64; labels];
    for (scores, weight) in chunks {
        for (m, s) in mass.iter_mut().zip(scores) {
            *m += s * (*weight).max(1) as f64;
        }
    }
    let total: f64 = mass.iter().sum();
    if total > 0.0 {
        mass.iter_mut().for_each(|m| *m /= total);
    }
    mass
}

/// The JSON answers of a document's chunks, `(answer, the chunk's text)` in document order,
/// merged into one that follows `schema`:
/// - objects are merged key by key (keys in the order the answers give them);
/// - arrays are concatenated in order without duplicates, then cut to the schema's `maxItems`;
/// - a scalar is the value with the best evidence, the first in document order among equals:
///   best when its own chunk's text holds it next to the words of its key ("invoice number"
///   before "ZX-4471"), then when the text holds it at all (small models invent values for
///   chunks that do not hold the fact, or copy a sentence of it), then any value not null.
pub fn merge_json(answers: &[(Value, &str)], schema: Option<&Value>) -> Value {
    merge_value(answers, schema, None)
}

fn merge_value(answers: &[(Value, &str)], schema: Option<&Value>, key: Option<&str>) -> Value {
    let present: Vec<&(Value, &str)> = answers.iter().filter(|(v, _)| !v.is_null()).collect();
    let Some((first, _)) = present.first() else {
        return Value::Null;
    };
    match first {
        Value::Object(_) => {
            let mut keys: Vec<&String> = Vec::new();
            for (v, _) in &present {
                for k in v.as_object().into_iter().flat_map(Map::keys) {
                    if !keys.contains(&k) {
                        keys.push(k);
                    }
                }
            }
            let merged = keys
                .into_iter()
                .map(|key| {
                    let values: Vec<(Value, &str)> = present
                        .iter()
                        .filter_map(|(v, text)| v.get(key).map(|x| (x.clone(), *text)))
                        .collect();
                    let sub = schema.and_then(|s| s.get("properties")?.get(key));
                    (key.clone(), merge_value(&values, sub, Some(key)))
                })
                .collect();
            Value::Object(merged)
        }
        Value::Array(_) => {
            let mut items: Vec<Value> = Vec::new();
            for (v, _) in &present {
                for item in v.as_array().into_iter().flatten() {
                    if !items.contains(item) {
                        items.push(item.clone());
                    }
                }
            }
            if let Some(max) = schema.and_then(|s| s.get("maxItems")?.as_u64()) {
                items.truncate(max as usize);
            }
            Value::Array(items)
        }
        _ => {
            let backing: Vec<Evidence> = present
                .iter()
                .map(|(v, text)| evidence(v, text, key))
                .collect();
            let best = backing.iter().max().copied().unwrap_or(Evidence::None);
            // The first in document order among the best backed.
            let first = backing.iter().position(|&e| e == best).unwrap_or(0);
            present[first].0.clone()
        }
    }
}

/// How well a chunk's text backs a scalar answer, worst first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Evidence {
    None,
    /// The text holds the value.
    Held,
    /// The text holds the value with the words of its key nearby.
    HeldByKey,
}

/// Bytes around a value that its key's words are looked for in.
const KEY_WINDOW: usize = 120;

/// The evidence `text` gives the scalar `value` of `key` (case and surrounding space aside).
fn evidence(value: &Value, text: &str, key: Option<&str>) -> Evidence {
    let needle = match value {
        Value::String(s) => s.trim().to_lowercase(),
        Value::Number(n) => n.to_string(),
        _ => return Evidence::None,
    };
    if needle.is_empty() {
        return Evidence::None;
    }
    let text = text.to_lowercase();
    let key_words: Vec<String> = key
        .map(|k| {
            k.split(|c: char| !c.is_alphanumeric())
                .filter(|w| w.len() > 1)
                .map(str::to_lowercase)
                .collect()
        })
        .unwrap_or_default();
    let mut held = Evidence::None;
    for (at, _) in text.match_indices(&needle) {
        held = Evidence::Held;
        let from = floor_char_boundary(&text, at.saturating_sub(KEY_WINDOW));
        let to = floor_char_boundary(&text, (at + needle.len() + KEY_WINDOW).min(text.len()));
        let around = &text[from..to];
        if !key_words.is_empty() && key_words.iter().all(|w| around.contains(w.as_str())) {
            return Evidence::HeldByKey;
        }
    }
    held
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn label_mass_is_weighted_by_chunk_tokens() {
        let merged = merge_label_scores(&[(vec![0.9, 0.1], 100), (vec![0.2, 0.8], 300)]);
        assert!((merged[0] - 0.375).abs() < 1e-9, "{merged:?}");
        assert!((merged[1] - 0.625).abs() < 1e-9);
    }

    #[test]
    fn scalars_prefer_values_their_chunk_holds() {
        let answers = [
            (
                json!({"invoice_number": "INV-0001", "total": null}),
                "Pages of other text.",
            ),
            (
                json!({"invoice_number": "ZX-4471", "total": "12 EUR"}),
                "The invoice number is ZX-4471.",
            ),
        ];
        let merged = merge_json(&answers, None);
        assert_eq!(
            merged,
            json!({"invoice_number": "ZX-4471", "total": "12 EUR"})
        );
    }

    #[test]
    fn a_value_next_to_its_key_beats_a_copied_sentence() {
        let answers = [
            (
                json!({"invoice_number": "Ahab did not fall down"}),
                "Ahab did not fall down.",
            ),
            (json!({"invoice_number": "The colt"}), "The colt ran."),
            (
                json!({"invoice_number": "ZX-4471"}),
                "... The invoice number is ZX-4471.",
            ),
        ];
        assert_eq!(
            merge_json(&answers, None),
            json!({"invoice_number": "ZX-4471"})
        );
    }

    #[test]
    fn nulls_give_way_and_arrays_concatenate_within_max_items() {
        let schema = json!({"type": "array", "maxItems": 3});
        let merged = merge_json(
            &[
                (json!(["a", "b"]), ""),
                (Value::Null, ""),
                (json!(["b", "c", "d"]), ""),
            ],
            Some(&schema),
        );
        assert_eq!(merged, json!(["a", "b", "c"]));
        assert_eq!(merge_json(&[(Value::Null, "x")], None), Value::Null);
        // Nothing grounded: the first value that is not null.
        assert_eq!(
            merge_json(
                &[(Value::Null, ""), (json!("x"), ""), (json!("y"), "")],
                None
            ),
            json!("x")
        );
    }
}
