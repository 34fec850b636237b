//! The prompts of a long document's chunks: the document tokenized once, split where
//! [`super::split`] says, each chunk rendered with the task template told which part it is.

use std::ops::Range;

use crate::prompt::{available_tokens, Overflow, PartInfo, PromptBuilder, PromptError};
use crate::tokenizer::Tokenizer;

/// One chunk of a long document, ready for the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkPrompt {
    pub tokens: Vec<u32>,
    /// Its bytes in the document.
    pub range: Range<usize>,
    /// The document's tokens in it.
    pub document_tokens: usize,
}

/// Tokens kept free in each chunk's budget: re-tokenizing a cut text can take a few more.
const CHUNK_MARGIN: usize = 8;

/// How big a long document's chunks are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkSizes {
    /// The most document tokens in a chunk (`--chunk-tokens`; less where the context is
    /// smaller).
    pub tokens: usize,
    /// Tokens each chunk repeats from the end of the one before (`--chunk-overlap`).
    pub overlap: usize,
}

/// The prompts of `document` cut into chunks that each fit `ctx` positions with
/// `max_tokens` left for the answer (`--overflow chunk`): one when the whole document fits,
/// else chunks of balanced sizes of at most `sizes.tokens` document tokens, cut at paragraph,
/// line or sentence ends (see [`crate::chunking::split`]), consecutive ones sharing about
/// `sizes.overlap` tokens, each told it is part i of n.
pub fn split_to_fit(
    builder: &PromptBuilder,
    tokenizer: &Tokenizer,
    id: &str,
    document: &str,
    ctx: usize,
    max_tokens: usize,
    sizes: ChunkSizes,
) -> Result<Vec<ChunkPrompt>, PromptError> {
    match builder.fit(tokenizer, id, document, ctx, max_tokens, Overflow::Chunk) {
        Ok(built) => {
            return Ok(vec![ChunkPrompt {
                document_tokens: built.tokens.len(),
                tokens: built.tokens,
                range: 0..document.len(),
            }])
        }
        Err(PromptError::Overflow { .. }) => {}
        Err(e) => return Err(e),
    }
    let available = available_tokens(ctx, max_tokens);
    // The widest part numbers a document can have.
    let widest = PartInfo {
        part: 99_999,
        parts: 99_999,
        task: "",
    };
    let overhead = builder.tokens_of_part(tokenizer, id, "", widest)?.len();
    let too_long = |needed| PromptError::TooLong {
        name: builder.name().to_string(),
        needed,
        available,
        ctx,
        max_tokens,
    };
    if overhead + CHUNK_MARGIN >= available {
        return Err(too_long(overhead + CHUNK_MARGIN));
    }
    let ids = tokenizer.encode_plain(document)?;
    let ends = tokenizer.token_ends(&ids);
    let mut budget = (available - overhead - CHUNK_MARGIN).min(sizes.tokens.max(1));
    // A chunk that tokenizes longer than its share (merges across the cut) shrinks the
    // budget of all, and the split is made again: deterministic, and rare.
    for _ in 0..8 {
        let ranges = super::split(document, &ends, budget, sizes.overlap);
        let parts = ranges.len();
        let mut chunks = Vec::with_capacity(parts);
        let mut excess = 0;
        for (i, range) in ranges.into_iter().enumerate() {
            let text = &document[range.clone()];
            let part = PartInfo {
                part: i + 1,
                parts,
                task: "",
            };
            let tokens = builder.tokens_of_part(tokenizer, id, text.trim(), part)?;
            excess = excess.max(tokens.len().saturating_sub(available));
            // The tokens ending inside the chunk (`ends` ascends).
            let document_tokens = ends.partition_point(|&e| e <= range.end)
                - ends.partition_point(|&e| e <= range.start);
            chunks.push(ChunkPrompt {
                tokens,
                range,
                document_tokens,
            });
        }
        if excess == 0 {
            return Ok(chunks);
        }
        if budget <= excess + CHUNK_MARGIN {
            break;
        }
        budget -= excess + CHUNK_MARGIN;
    }
    Err(too_long(available + 1))
}
