//! A completion read as a record: label scores (calibrated), JSON parsed, text decoded.

use super::queue::JobMeta;
use crate::engine::{Completion, StopReason};
use crate::json_answers::parse_answer;
use crate::output::{Record, Status};
use crate::tokenizer::Tokenizer;

pub(super) fn completion_record(meta: JobMeta, done: &Completion, tokenizer: &Tokenizer) -> Record {
    let meta_labels = meta.labels.clone();
    let mut record = Record {
        id: meta.id,
        source: meta.source,
        prompt: meta.prompt,
        status: if meta.truncated {
            Status::Truncated
        } else {
            Status::Ok
        },
        output: String::new(),
        stop_reason: done.stop_reason.as_str().to_string(),
        prompt_tokens: done.prompt_tokens,
        generated_tokens: done.tokens.len(),
        latency_ms: done.latency.as_millis() as u64,
        error: String::new(),
        chunks: 1,
        scores: None,
        fields: None,
    };
    if done.tokens.is_empty() && done.stop_reason == StopReason::Context {
        record.status = Status::Error;
        record.error = format!("{}: the prompt does not fit the context", record.source);
        return record;
    }
    if let (Some(set), Some((label, scores))) = (&meta_labels, &done.label) {
        let (label, scores) = match &meta.prior {
            Some(prior) => calibrated(scores, prior),
            None => (*label, scores.clone()),
        };
        record.output = set.labels()[label].clone();
        record.scores = Some(set.labels().iter().cloned().zip(scores).collect());
        return record;
    }
    match tokenizer.decode(&done.tokens) {
        Ok(text) if meta.json => match parse_answer(&text) {
            Ok((compact, value)) => {
                record.output = compact;
                record.fields = Some(value);
            }
            Err(message) => {
                record.status = Status::Error;
                record.error = format!("{}: {message}", record.source);
            }
        },
        Ok(text) => record.output = text.trim().to_string(),
        Err(e) => {
            record.status = Status::Error;
            record.error = e.to_string();
        }
    }
    record
}

/// Scores divided by the content-free prior and renormalized ("Calibrate Before Use", Zhao et
/// al. 2021), and the label they now favour.
fn calibrated(scores: &[f64], prior: &[f64]) -> (usize, Vec<f64>) {
    let raw: Vec<f64> = scores
        .iter()
        .zip(prior)
        .map(|(s, p)| s / p.max(1e-9))
        .collect();
    let sum: f64 = raw.iter().sum();
    let scores: Vec<f64> = raw.iter().map(|r| r / sum.max(f64::MIN_POSITIVE)).collect();
    (crate::labels::most_probable(&scores), scores)
}
