//! Long documents read whole (`--overflow chunk`). A document longer than the context is split
//! into chunks ([`split`]) that run as jobs of their own in the shared queue, filling the engine's
//! slots together (map); their answers become the document's one record (reduce): label scores
//! weighted by chunk size and JSON answers merged per field ([`merge`]), free text through the
//! reduce template in groups that fit the context, level by level ([`reduce`]).

mod chunk_prompts;
mod merge;
mod reduce;
mod split;

use std::sync::Arc;
use std::time::Instant;

use serde_json::Value;

pub use chunk_prompts::{split_to_fit, ChunkPrompt, ChunkSizes};
pub use merge::{merge_json, merge_label_scores};
pub use reduce::{joined, plan_groups, ReduceInput};
pub use split::split;

use crate::labels::{most_probable, LabelSet};
use crate::output::{Record, Status};
use crate::prompt::{available_tokens, PartInfo, PromptBuilder, PromptError};
use crate::tokenizer::Tokenizer;

/// How the answers of a prompt's chunks become one.
#[derive(Debug, Clone)]
pub enum Reducer {
    /// Free text: merged by the reduce template.
    Text,
    /// Label answers: the label of most probability mass over the chunks.
    Labels(Arc<LabelSet>),
    /// JSON answers: merged per field, following this schema.
    Json(Value),
}

/// What a chunked document needs once one of its answers came in.
#[derive(Debug)]
pub enum Next {
    /// Other answers are awaited.
    Wait,
    /// The reduce calls of a new level over these answers (document order).
    Level(Vec<ReduceInput>),
    /// The document's record (an error record when a part failed).
    Done(Box<Record>),
}

/// A slot of a reduce level: an answer passed on as it is, or the parts a reduce call covers.
#[derive(Debug)]
enum Slot {
    Ready(ReduceInput),
    Awaited((usize, usize)),
}

/// One document × prompt read in chunks: the answers so far and what the record will say.
#[derive(Debug)]
pub struct ChunkedDocument {
    /// The record being made: id, source, prompt, chunks; tokens summed over every call.
    record: Record,
    reducer: Reducer,
    /// Each chunk's text (kept for JSON answers only: a value is preferred where its chunk
    /// holds it).
    texts: Vec<String>,
    /// Each chunk's document tokens (the weight of its label scores).
    weights: Vec<usize>,
    answers: Vec<Option<Record>>,
    level: Vec<Slot>,
    awaiting: usize,
    started: Instant,
    reduce_calls: usize,
}

impl ChunkedDocument {
    /// `chunks` are each chunk's text and document tokens, in order.
    pub fn new(
        id: &str,
        source: &str,
        prompt: &str,
        reducer: Reducer,
        chunks: &[(&str, usize)],
    ) -> Self {
        let mut record = Record::error(id, source, prompt, String::new());
        record.status = Status::Ok;
        record.chunks = chunks.len();
        let texts = match reducer {
            Reducer::Json(_) => chunks.iter().map(|(t, _)| t.to_string()).collect(),
            _ => Vec::new(),
        };
        Self {
            record,
            reducer,
            texts,
            weights: chunks.iter().map(|&(_, w)| w).collect(),
            answers: vec![None; chunks.len()],
            level: Vec::new(),
            awaiting: chunks.len(),
            started: Instant::now(),
            reduce_calls: 0,
        }
    }

    pub fn parts(&self) -> usize {
        self.record.chunks
    }

    /// The document's id, source and prompt.
    pub fn job(&self) -> (&str, &str, &str) {
        (&self.record.id, &self.record.source, &self.record.prompt)
    }

    pub fn reduce_calls(&self) -> usize {
        self.reduce_calls
    }

    /// The answer of chunk `index` (0-based) came in.
    pub fn chunk_done(&mut self, index: usize, answer: Record) -> Next {
        if let Some(failed) = self.counted(&answer, || format!("part {} of", index + 1)) {
            return failed;
        }
        self.answers[index] = Some(answer);
        self.awaiting -= 1;
        if self.awaiting > 0 {
            return Next::Wait;
        }
        let answers: Vec<Record> = self.answers.iter_mut().flat_map(Option::take).collect();
        // The last call in document order, whatever order they finished in.
        if let Some(last) = answers.last() {
            self.record.stop_reason = last.stop_reason.clone();
        }
        match self.reducer.clone() {
            Reducer::Text => Next::Level(
                answers
                    .into_iter()
                    .enumerate()
                    .map(|(i, a)| ReduceInput {
                        parts: (i + 1, i + 1),
                        text: a.output,
                    })
                    .collect(),
            ),
            Reducer::Labels(set) => {
                let scored: Vec<(Vec<f64>, usize)> = answers
                    .iter()
                    .zip(&self.weights)
                    .map(|(a, &w)| {
                        let scores = a.scores.iter().flatten().map(|(_, p)| *p).collect();
                        (scores, w)
                    })
                    .collect();
                let merged = merge_label_scores(&scored);
                self.record.output = set.labels()[most_probable(&merged)].clone();
                self.record.scores = Some(set.labels().iter().cloned().zip(merged).collect());
                Next::Done(Box::new(self.finished()))
            }
            Reducer::Json(schema) => {
                let values: Vec<(Value, &str)> = answers
                    .iter()
                    .zip(&self.texts)
                    .map(|(a, t)| (a.fields.clone().unwrap_or(Value::Null), t.as_str()))
                    .collect();
                let merged = merge_json(&values, Some(&schema));
                self.record.output = merged.to_string();
                self.record.fields = Some(merged);
                Next::Done(Box::new(self.finished()))
            }
        }
    }

    /// The reduce calls of the level just asked for are queued: `planned` says, in order, which
    /// answers pass on as they are and which groups a call merges.
    pub fn level_planned(&mut self, planned: &[Planned]) -> Next {
        self.level = planned
            .iter()
            .map(|p| match p {
                Planned::Pass(input) => Slot::Ready(input.clone()),
                Planned::Call { parts, .. } => Slot::Awaited(*parts),
            })
            .collect();
        self.awaiting = planned
            .iter()
            .filter(|p| matches!(p, Planned::Call { .. }))
            .count();
        self.reduce_calls += self.awaiting;
        self.level_done()
    }

    /// The answer of the reduce call in slot `slot` of the current level came in.
    pub fn reduce_done(&mut self, slot: usize, answer: Record) -> Next {
        let Slot::Awaited(parts) = self.level[slot] else {
            return Next::Wait;
        };
        if let Some(failed) = self.counted(&answer, || {
            format!("merging parts {}-{} of", parts.0, parts.1)
        }) {
            return failed;
        }
        self.level[slot] = Slot::Ready(ReduceInput {
            parts,
            text: answer.output,
        });
        self.awaiting -= 1;
        self.level_done()
    }

    fn level_done(&mut self) -> Next {
        if self.awaiting > 0 {
            return Next::Wait;
        }
        let mut inputs: Vec<ReduceInput> = std::mem::take(&mut self.level)
            .into_iter()
            .filter_map(|s| match s {
                Slot::Ready(input) => Some(input),
                Slot::Awaited(_) => None,
            })
            .collect();
        if inputs.len() == 1 {
            self.record.output = inputs.remove(0).text.trim().to_string();
            return Next::Done(Box::new(self.finished()));
        }
        Next::Level(inputs)
    }

    /// Counts `answer`'s tokens and stop reason; the document's error record if it failed
    /// (`what` names the call: "part 3 of").
    fn counted(&mut self, answer: &Record, what: impl Fn() -> String) -> Option<Next> {
        self.record.prompt_tokens += answer.prompt_tokens;
        self.record.generated_tokens += answer.generated_tokens;
        self.record.stop_reason = answer.stop_reason.clone();
        if answer.status != Status::Error {
            return None;
        }
        let error = format!("{} ({} {} chunks)", answer.error, what(), self.parts());
        Some(self.failed(error))
    }

    /// The document's error record.
    pub fn failed(&mut self, error: String) -> Next {
        let mut record = self.finished();
        record.status = Status::Error;
        record.output.clear();
        record.scores = None;
        record.fields = None;
        record.error = error;
        Next::Done(Box::new(record))
    }

    fn finished(&mut self) -> Record {
        let mut record = self.record.clone();
        record.latency_ms = self.started.elapsed().as_millis() as u64;
        record
    }
}

/// One slot of a reduce level as planned: an answer passed on, or a call merging a group.
#[derive(Debug, Clone)]
pub enum Planned {
    Pass(ReduceInput),
    Call {
        /// The parts the call covers.
        parts: (usize, usize),
        tokens: Vec<u32>,
    },
}

/// What the reduce calls of a document are made with.
pub struct ReduceContext<'a> {
    /// The reduce template.
    pub builder: &'a PromptBuilder,
    /// The task template itself, used as the reduce template when that one does not leave
    /// room for two answers (a small context): the answers joined are its document.
    pub task_builder: &'a PromptBuilder,
    pub tokenizer: &'a Tokenizer,
    pub id: &'a str,
    /// The task the answers did (see [`PromptBuilder::task_text`]).
    pub task: &'a str,
    pub parts: usize,
    pub ctx: usize,
    pub max_tokens: usize,
}

/// Tokens kept free in a reduce prompt for the re-tokenizing of joined answers.
const REDUCE_MARGIN: usize = 8;

/// The fewest tokens of each answer a reduce prompt holds.
const MIN_SHARE: usize = 4;

/// The calls of one reduce level over `inputs` (document order): groups that fit one reduce
/// prompt (see [`plan_groups`]); the answers of a group of two that cannot fit are cut to fit.
pub fn plan_level(
    inputs: &[ReduceInput],
    reduce: &ReduceContext<'_>,
) -> Result<Vec<Planned>, PromptError> {
    let tokenizer = reduce.tokenizer;
    let available = available_tokens(reduce.ctx, reduce.max_tokens);
    let overhead_of = |builder: &PromptBuilder, part| -> Result<usize, PromptError> {
        Ok(builder
            .tokens_of_part(tokenizer, reduce.id, "", part)?
            .len()
            + REDUCE_MARGIN)
    };
    let mut builder = reduce.builder;
    let mut part = PartInfo {
        part: 1,
        parts: reduce.parts,
        task: reduce.task,
    };
    let mut overhead = overhead_of(builder, part)?;
    if overhead + 2 * MIN_SHARE > available {
        // The task template fits with a chunk, so with answers shorter than a chunk too.
        builder = reduce.task_builder;
        part = PartInfo::WHOLE;
        overhead = overhead_of(builder, part)?;
        tracing::debug!(
            "the reduce template does not fit {available} tokens: `{}` merges the answers",
            builder.name()
        );
    }
    let prompt_of =
        |group: &[ReduceInput]| builder.tokens_of_part(tokenizer, reduce.id, &joined(group), part);
    let too_long = |needed| PromptError::TooLong {
        name: builder.name().to_string(),
        needed,
        available,
        ctx: reduce.ctx,
        max_tokens: reduce.max_tokens,
    };
    if overhead + 2 * MIN_SHARE > available {
        return Err(too_long(overhead + 2 * MIN_SHARE));
    }
    let room = available - overhead;
    let sizes = inputs
        .iter()
        .map(|i| {
            Ok(tokenizer
                .encode_plain(&joined(std::slice::from_ref(i)))?
                .len()
                + 2)
        })
        .collect::<Result<Vec<_>, PromptError>>()?;
    let mut planned = Vec::new();
    for group in plan_groups(&sizes, room) {
        if group.len() == 1 {
            planned.push(Planned::Pass(inputs[group.start].clone()));
            continue;
        }
        let mut members = inputs[group.clone()].to_vec();
        let parts = (members[0].parts.0, members[members.len() - 1].parts.1);
        let mut share = room / members.len();
        let mut tokens = prompt_of(&members)?;
        // Cut each answer to an equal share until the group fits (answers are bounded by
        // --max-tokens, so this is rare: a --max-tokens near the context).
        while tokens.len() > available {
            if share < MIN_SHARE {
                return Err(too_long(tokens.len()));
            }
            for m in &mut members {
                let ids = tokenizer.encode_plain(&m.text)?;
                if ids.len() > share {
                    m.text = tokenizer.decode(&ids[..share])?;
                }
            }
            tokens = prompt_of(&members)?;
            share = share.saturating_sub((tokens.len().saturating_sub(available)).max(MIN_SHARE));
        }
        planned.push(Planned::Call { parts, tokens });
    }
    Ok(planned)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(output: &str, tokens: usize) -> Record {
        let mut r = Record::error("d", "s", "p", String::new());
        r.status = Status::Ok;
        r.output = output.into();
        r.prompt_tokens = tokens;
        r.generated_tokens = 1;
        r.stop_reason = "eos".into();
        r
    }

    fn planned_calls(inputs: &[ReduceInput], groups: &[std::ops::Range<usize>]) -> Vec<Planned> {
        groups
            .iter()
            .map(|g| match g.len() {
                1 => Planned::Pass(inputs[g.start].clone()),
                _ => Planned::Call {
                    parts: (inputs[g.start].parts.0, inputs[g.end - 1].parts.1),
                    tokens: vec![1],
                },
            })
            .collect()
    }

    #[test]
    fn free_text_merges_level_by_level_in_document_order() {
        let chunks = [("a", 10), ("b", 10), ("c", 10)];
        let mut doc = ChunkedDocument::new("d", "s", "p", Reducer::Text, &chunks);
        // Completion order is not document order.
        assert!(matches!(doc.chunk_done(2, answer("C", 5)), Next::Wait));
        assert!(matches!(doc.chunk_done(0, answer("A", 5)), Next::Wait));
        let Next::Level(level) = doc.chunk_done(1, answer("B", 5)) else {
            panic!("a level")
        };
        let texts: Vec<&str> = level.iter().map(|i| i.text.as_str()).collect();
        assert_eq!(texts, ["A", "B", "C"]);
        // Level 1: (A B) merged, C passed on.
        assert!(matches!(
            doc.level_planned(&planned_calls(&level, &[0..2, 2..3])),
            Next::Wait
        ));
        let Next::Level(level) = doc.reduce_done(0, answer("AB", 7)) else {
            panic!("a second level")
        };
        assert_eq!(level[0].parts, (1, 2));
        assert_eq!(level[1].parts, (3, 3));
        doc.level_planned(&planned_calls(&level, &plan_groups(&[1, 1], 10)));
        let Next::Done(record) = doc.reduce_done(0, answer(" ABC ", 9)) else {
            panic!("the record")
        };
        assert_eq!(record.output, "ABC");
        assert_eq!(record.chunks, 3);
        assert_eq!(record.prompt_tokens, 5 * 3 + 7 + 9);
        assert_eq!(record.generated_tokens, 5);
        assert_eq!(doc.reduce_calls(), 2);
    }

    #[test]
    fn a_failed_part_is_the_documents_error() {
        let mut doc = ChunkedDocument::new("d", "s", "p", Reducer::Text, &[("a", 1), ("b", 1)]);
        let mut failed = answer("", 3);
        failed.status = Status::Error;
        failed.error = "s: incomplete JSON".into();
        let Next::Done(record) = doc.chunk_done(1, failed) else {
            panic!("the error record")
        };
        assert_eq!(record.status, Status::Error);
        assert_eq!(record.error, "s: incomplete JSON (part 2 of 2 chunks)");
        assert_eq!(record.chunks, 2);
    }
}
