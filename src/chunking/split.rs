//! Where a long document is cut: chunks of balanced sizes that each fit a token budget, each cut
//! at the best boundary near its ideal place (blank line, line end, sentence end, space).

use std::ops::Range;

/// How good a place to cut is, worst first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Boundary {
    /// Inside a word (only between tokens).
    Word,
    Space,
    SentenceEnd,
    LineEnd,
    BlankLine,
}

/// Splits `text`, whose tokens end at the byte offsets `token_ends` (one per token, ascending),
/// into byte ranges of at most `budget` tokens each, in document order, covering all of it.
/// Consecutive ranges share about `overlap` tokens (at most a quarter of the budget). Sizes
/// are balanced (no tiny tail); each cut is the best boundary within 1/16 of the budget of its
/// ideal place. Deterministic.
pub fn split(text: &str, token_ends: &[usize], budget: usize, overlap: usize) -> Vec<Range<usize>> {
    let tokens = token_ends.len();
    let budget = budget.max(1);
    if tokens <= budget {
        #[allow(clippy::single_range_in_vec_init)]
        return vec![0..text.len()];
    }
    let overlap = overlap.min(budget / 4);
    let slack = budget / 16;
    // Ends may move `slack` either way and starts `slack` back: room for both.
    let step_limit = budget.saturating_sub(overlap + 2 * slack).max(1);
    let count = (tokens - overlap).div_ceil(step_limit);
    let byte_at = |t: usize| -> usize {
        let b = if t == 0 { 0 } else { token_ends[t - 1] };
        floor_char_boundary(text, b.min(text.len()))
    };
    let mut ranges = Vec::with_capacity(count);
    let mut start = 0usize; // in tokens
    for i in 0..count {
        let end = if i + 1 == count {
            tokens
        } else {
            let ideal = ((i + 1) * (tokens - overlap) + count / 2) / count + overlap;
            let hi = (start + budget).min(ideal + slack).min(tokens);
            let lo = (start + 1).max(ideal.saturating_sub(slack)).min(hi);
            best_cut(text, lo..=hi, ideal, &byte_at)
        };
        ranges.push(byte_at(start)..byte_at(end));
        if i + 1 == count {
            break;
        }
        let next = if overlap == 0 {
            end
        } else {
            let ideal = end - overlap;
            let lo = (start + 1).max(ideal.saturating_sub(slack));
            best_cut(text, lo..=ideal.max(lo), ideal, &byte_at)
        };
        start = next.max(start + 1);
    }
    if let Some(last) = ranges.last_mut() {
        last.end = text.len();
    }
    ranges
}

/// The token index in `window` whose byte offset is the best boundary, the nearest to `ideal`
/// among equals (the earlier on a tie).
fn best_cut(
    text: &str,
    window: std::ops::RangeInclusive<usize>,
    ideal: usize,
    byte_at: &impl Fn(usize) -> usize,
) -> usize {
    window
        .max_by_key(|&t| {
            (
                boundary_at(text, byte_at(t)),
                std::cmp::Reverse(t.abs_diff(ideal)),
                std::cmp::Reverse(t),
            )
        })
        .expect("a non-empty window")
}

/// What kind of boundary a cut before byte `at` of `text` falls on.
fn boundary_at(text: &str, at: usize) -> Boundary {
    // Whitespace on either side of the cut, looked at within a few bytes.
    const LOOK: usize = 32;
    let before = &text[floor_char_boundary(text, at.saturating_sub(LOOK))..at];
    let after = &text[at..floor_char_boundary(text, (at + LOOK).min(text.len()))];
    let ws_before = &before[before.trim_end().len()..];
    let ws_after = &after[..after.len() - after.trim_start().len()];
    if ws_before.is_empty() && ws_after.is_empty() {
        return Boundary::Word;
    }
    let newlines = ws_before.matches('\n').count() + ws_after.matches('\n').count();
    match newlines {
        0 if before.trim_end().ends_with(['.', '!', '?', '…', ';', ':']) => Boundary::SentenceEnd,
        0 => Boundary::Space,
        1 => Boundary::LineEnd,
        _ => Boundary::BlankLine,
    }
}

/// The largest character boundary of `text` at or before `at`.
pub(crate) fn floor_char_boundary(text: &str, mut at: usize) -> usize {
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// One token per word (with its leading space), the way byte-level BPE cuts English.
    fn word_ends(text: &str) -> Vec<usize> {
        let mut ends = Vec::new();
        let bytes = text.as_bytes();
        for i in 1..=bytes.len() {
            let at_end = i == bytes.len();
            if at_end || (bytes[i].is_ascii_whitespace() && !bytes[i - 1].is_ascii_whitespace()) {
                ends.push(i);
            }
        }
        ends
    }

    fn tokens_in(ends: &[usize], range: &Range<usize>) -> usize {
        ends.iter()
            .filter(|&&e| e > range.start && e <= range.end)
            .count()
    }

    #[test]
    fn a_short_text_is_one_chunk() {
        let text = "a few words only";
        let whole = split(text, &word_ends(text), 10, 0);
        assert_eq!(whole.len(), 1);
        assert_eq!(whole[0], 0..text.len());
    }

    #[test]
    fn cuts_prefer_paragraphs_then_sentences() {
        let para = "One two three four five. Six seven eight nine ten.";
        let text = format!("{para}\n\n{para}\n\n{para}\n\n{para}");
        let ranges = split(&text, &word_ends(&text), 24, 0);
        assert_eq!(ranges.len(), 2);
        // The middle paragraph break is the cut.
        assert!(text[..ranges[0].end].ends_with("ten."), "{ranges:?}");
        assert!(text[ranges[1].clone()].trim_start().starts_with("One"));
    }

    #[test]
    fn sizes_are_balanced() {
        let text = "word ".repeat(1000);
        let ranges = split(&text, &word_ends(&text), 300, 0);
        assert_eq!(ranges.len(), 4);
        let ends = word_ends(&text);
        for r in &ranges {
            let n = tokens_in(&ends, r);
            assert!((230..=270).contains(&n), "{n} tokens in {r:?}");
        }
    }

    proptest! {
        #[test]
        fn chunks_fit_cover_in_order_and_repeat(
            words in proptest::collection::vec("[a-z]{1,8}[.,]?(\n|\n\n| )", 1..600),
            budget in 4usize..200,
            overlap in 0usize..60,
        ) {
            let text: String = words.concat();
            let ends = word_ends(&text);
            let ranges = split(&text, &ends, budget, overlap);
            prop_assert_eq!(&ranges, &split(&text, &ends, budget, overlap));
            prop_assert_eq!(ranges[0].start, 0);
            prop_assert_eq!(ranges.last().unwrap().end, text.len());
            for r in &ranges {
                prop_assert!(tokens_in(&ends, r) <= budget, "{:?} over {}", r, budget);
                prop_assert!(r.start < r.end);
            }
            for pair in ranges.windows(2) {
                prop_assert!(pair[0].start < pair[1].start);
                prop_assert!(pair[1].start <= pair[0].end, "a gap between {:?}", pair);
                if overlap == 0 {
                    prop_assert_eq!(pair[0].end, pair[1].start);
                }
            }
            if ranges.len() > 1 {
                // No tiny tail: every chunk holds at least an eighth of the budget.
                for r in &ranges {
                    prop_assert!(tokens_in(&ends, r) >= budget / 8, "{:?} is tiny", r);
                }
            }
        }
    }
}
