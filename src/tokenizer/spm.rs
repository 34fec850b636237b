//! SentencePiece vocabularies from GGUF metadata (`tokenizer.ggml.model` = `llama`: Gemma,
//! Llama 2, Mistral 7B, Phi-3): llama.cpp's `llm_tokenizer_spm`, so that ids match it.
//!
//! Spaces become `▁`; the text is split into characters, and the adjacent pair whose joined
//! text is the vocabulary piece of highest score is merged, again and again (the leftmost pair
//! among equal scores). A character no piece covers is written as its UTF-8 bytes, each the
//! `<0xNN>` byte token. User-defined pieces (Gemma's whitespace runs and HTML tags) are cut out
//! of the text first and are tokens of their own, as llama.cpp does.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};

use aho_corasick::AhoCorasick;

use crate::control_tokens::added_token_matcher;

/// What stands for a space in SentencePiece pieces.
const SPACE: char = '\u{2581}';

use super::{TOKEN_TYPE_BYTE, TOKEN_TYPE_CONTROL, TOKEN_TYPE_USER_DEFINED};

/// A SentencePiece vocabulary.
pub struct Spm {
    pieces: Vec<String>,
    scores: Vec<f32>,
    types: Vec<i64>,
    ids: HashMap<String, u32>,
    byte_ids: [Option<u32>; 256],
    unknown: Option<u32>,
    user_defined: Option<(AhoCorasick, Vec<u32>)>,
    /// Prepend a space to text that starts the input or follows a special token.
    pub add_space_prefix: bool,
}

/// A pair of adjacent symbols that could merge, and the score of the merged piece.
#[derive(Debug, PartialEq)]
struct Bigram {
    left: usize,
    right: usize,
    score: f32,
    len: usize,
}

impl Eq for Bigram {}

impl Ord for Bigram {
    /// Highest score first, then the leftmost pair (llama.cpp's `llm_bigram_spm::comparator`).
    fn cmp(&self, other: &Self) -> Ordering {
        self.score
            .total_cmp(&other.score)
            .then_with(|| other.left.cmp(&self.left))
    }
}

impl PartialOrd for Bigram {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// A span of the text: merged symbols grow, the absorbed ones become empty.
#[derive(Debug, Clone, Copy)]
struct Symbol {
    start: usize,
    len: usize,
    prev: Option<usize>,
    next: Option<usize>,
}

impl Spm {
    pub fn new(
        pieces: Vec<String>,
        scores: Vec<f32>,
        types: Vec<i64>,
        unknown: Option<u32>,
        add_space_prefix: bool,
    ) -> Result<Self, String> {
        if scores.len() != pieces.len() {
            return Err(format!(
                "{} scores for {} tokens in tokenizer.ggml.scores",
                scores.len(),
                pieces.len()
            ));
        }
        let mut ids = HashMap::with_capacity(pieces.len());
        for (i, p) in pieces.iter().enumerate() {
            // The first of duplicate pieces wins, as in llama.cpp's token_to_id.
            ids.entry(p.clone()).or_insert(i as u32);
        }
        let mut byte_ids = [None; 256];
        for (b, slot) in byte_ids.iter_mut().enumerate() {
            *slot = ids.get(&format!("<0x{b:02X}>")).copied();
        }
        let (user_ids, user_pieces): (Vec<u32>, Vec<&str>) = pieces
            .iter()
            .enumerate()
            .filter(|(i, p)| types.get(*i) == Some(&TOKEN_TYPE_USER_DEFINED) && !p.is_empty())
            .map(|(i, p)| (i as u32, p.as_str()))
            .unzip();
        let user_defined = added_token_matcher(&user_pieces)?.map(|m| (m, user_ids));
        Ok(Self {
            pieces,
            scores,
            types,
            ids,
            byte_ids,
            unknown,
            user_defined,
            add_space_prefix,
        })
    }

    /// Ids of text that holds no control token. `after_special`: the text starts the input or
    /// follows a control token (it then gets the space prefix, if the model asks for one).
    pub fn encode(&self, text: &str, after_special: bool, out: &mut Vec<u32>) {
        let mut prev_special = after_special;
        let mut last = 0;
        if let Some((matcher, ids)) = &self.user_defined {
            for m in matcher.find_iter(text) {
                self.encode_fragment(&text[last..m.start()], prev_special, out);
                out.push(ids[m.pattern().as_usize()]);
                prev_special = true;
                last = m.end();
            }
        }
        self.encode_fragment(&text[last..], prev_special, out);
    }

    fn encode_fragment(&self, raw: &str, prefix: bool, out: &mut Vec<u32>) {
        if raw.is_empty() {
            return;
        }
        let mut text = String::with_capacity(raw.len() + 3);
        if prefix && self.add_space_prefix {
            text.push(SPACE);
        }
        text.extend(raw.chars().map(|c| if c == ' ' { SPACE } else { c }));
        self.merge(&text, out);
    }

    /// The bigram merging of `llm_tokenizer_spm_session::tokenize`.
    fn merge<'t>(&self, text: &'t str, out: &mut Vec<u32>) {
        let starts: Vec<usize> = text.char_indices().map(|(i, _)| i).collect();
        let n = starts.len();
        let mut symbols: Vec<Symbol> = (0..n)
            .map(|i| Symbol {
                start: starts[i],
                len: starts.get(i + 1).copied().unwrap_or(text.len()) - starts[i],
                prev: i.checked_sub(1),
                next: (i + 1 < n).then_some(i + 1),
            })
            .collect();
        let mut queue = BinaryHeap::new();
        // How each merged text was made, to split it again if it is no piece (never the case
        // here, since only pieces are made, but kept as llama.cpp keeps it for its resegment).
        let mut made: HashMap<&'t str, (usize, usize)> = HashMap::new();
        let try_add = |left: Option<usize>,
                       right: Option<usize>,
                       symbols: &[Symbol],
                       queue: &mut BinaryHeap<Bigram>,
                       made: &mut HashMap<&'t str, (usize, usize)>| {
            let (Some(left), Some(right)) = (left, right) else {
                return;
            };
            let (l, r) = (symbols[left], symbols[right]);
            let joined = &text[l.start..r.start + r.len];
            if let Some(&id) = self.ids.get(joined) {
                queue.push(Bigram {
                    left,
                    right,
                    score: self.scores[id as usize],
                    len: joined.len(),
                });
                made.insert(joined, (left, right));
            }
        };
        for i in 1..n {
            try_add(Some(i - 1), Some(i), &symbols, &mut queue, &mut made);
        }
        while let Some(bigram) = queue.pop() {
            let (l, r) = (symbols[bigram.left], symbols[bigram.right]);
            if l.len == 0 || r.len == 0 || l.len + r.len != bigram.len {
                continue; // one side has merged with something else since
            }
            symbols[bigram.left].len += r.len;
            symbols[bigram.right].len = 0;
            symbols[bigram.left].next = r.next;
            if let Some(next) = r.next {
                symbols[next].prev = Some(bigram.left);
            }
            let left = symbols[bigram.left];
            try_add(
                left.prev,
                Some(bigram.left),
                &symbols,
                &mut queue,
                &mut made,
            );
            try_add(
                Some(bigram.left),
                left.next,
                &symbols,
                &mut queue,
                &mut made,
            );
        }
        let mut at = (n > 0).then_some(0);
        while let Some(i) = at {
            self.resegment(text, &symbols, &made, i, out);
            at = symbols[i].next;
        }
    }

    fn resegment(
        &self,
        text: &str,
        symbols: &[Symbol],
        made: &HashMap<&str, (usize, usize)>,
        i: usize,
        out: &mut Vec<u32>,
    ) {
        let s = symbols[i];
        let piece = &text[s.start..s.start + s.len];
        if let Some(&id) = self.ids.get(piece) {
            out.push(id);
            return;
        }
        match made.get(piece) {
            Some(&(l, r)) => {
                self.resegment(text, symbols, made, l, out);
                self.resegment(text, symbols, made, r, out);
            }
            None => out.extend(
                piece
                    .bytes()
                    .filter_map(|b| self.byte_ids[b as usize].or(self.unknown)),
            ),
        }
    }

    /// The text of `ids`: `▁` as spaces, byte tokens joined into UTF-8 (invalid sequences as
    /// U+FFFD), control tokens dropped; the space prefix the model adds is removed again.
    pub fn decode(&self, ids: &[u32]) -> String {
        let mut bytes = Vec::new();
        for &id in ids {
            let i = id as usize;
            let Some(piece) = self.pieces.get(i) else {
                continue;
            };
            match self.types.get(i).copied() {
                Some(TOKEN_TYPE_CONTROL) => {}
                Some(TOKEN_TYPE_BYTE) => bytes.extend(byte_of(piece)),
                _ => bytes.extend(piece.replace(SPACE, " ").as_bytes()),
            }
        }
        let text = String::from_utf8_lossy(&bytes).into_owned();
        match text.strip_prefix(' ') {
            Some(rest) if self.add_space_prefix => rest.to_string(),
            _ => text,
        }
    }
}

impl Spm {
    /// Each token as the bytes it stands for (`▁` a space, `<0xNN>` its byte), control
    /// tokens as `0xFF` and their name (so no text can spell them).
    pub fn token_bytes(&self) -> Vec<Vec<u8>> {
        self.pieces
            .iter()
            .zip(&self.types)
            .map(|(piece, &ty)| match ty {
                TOKEN_TYPE_CONTROL => [&[0xFF][..], piece.as_bytes()].concat(),
                TOKEN_TYPE_BYTE => byte_of(piece).map_or_else(Vec::new, |b| vec![b]),
                _ => piece.replace(SPACE, " ").into_bytes(),
            })
            .collect()
    }
}

/// The byte of a `<0xNN>` piece.
fn byte_of(piece: &str) -> Option<u8> {
    let hex = piece.strip_prefix("<0x")?.strip_suffix('>')?;
    u8::from_str_radix(hex, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small vocabulary: bytes, a few pieces with scores, a user-defined piece.
    fn vocab(add_space_prefix: bool) -> Spm {
        let mut pieces: Vec<String> = vec!["<unk>".into(), "<s>".into(), "</s>".into()];
        let mut types = vec![2, TOKEN_TYPE_CONTROL, TOKEN_TYPE_CONTROL];
        for b in 0..=255u8 {
            pieces.push(format!("<0x{b:02X}>"));
            types.push(TOKEN_TYPE_BYTE);
        }
        for p in [
            "▁", "h", "e", "l", "o", "he", "ll", "llo", "hello", "▁hello", "<br>",
        ] {
            pieces.push(p.into());
            types.push(if p == "<br>" {
                TOKEN_TYPE_USER_DEFINED
            } else {
                1
            });
        }
        let scores = pieces.iter().map(|p| p.chars().count() as f32).collect();
        Spm::new(pieces, scores, types, Some(0), add_space_prefix).expect("builds")
    }

    fn ids(spm: &Spm, text: &str) -> Vec<String> {
        let mut out = Vec::new();
        spm.encode(text, true, &mut out);
        out.iter()
            .map(|&i| spm.pieces[i as usize].clone())
            .collect()
    }

    #[test]
    fn merges_by_score_and_falls_back_to_bytes() {
        let spm = vocab(true);
        assert_eq!(ids(&spm, "hello"), ["▁hello"]);
        assert_eq!(ids(&spm, "hello hello"), ["▁hello", "▁hello"]);
        // "é" is no piece: its two UTF-8 bytes.
        assert_eq!(ids(&spm, "hé"), ["▁", "h", "<0xC3>", "<0xA9>"]);
        let no_prefix = vocab(false);
        assert_eq!(ids(&no_prefix, "hello"), ["hello"]);
    }

    #[test]
    fn user_defined_pieces_are_cut_out_first() {
        let spm = vocab(false);
        assert_eq!(ids(&spm, "hello<br>hello"), ["hello", "<br>", "hello"]);
    }

    #[test]
    fn decoding_undoes_encoding() {
        // (With the space prefix, text after a user-defined piece gets one too, as in
        // llama.cpp: "a<br>b" decodes as "a<br> b".)
        for (prefix, texts) in [
            (true, &["hello hello", "hé llo"][..]),
            (false, &["a<br>b  c"]),
        ] {
            let spm = vocab(prefix);
            for text in texts {
                let mut out = Vec::new();
                spm.encode(text, true, &mut out);
                assert_eq!(spm.decode(&out), *text, "prefix {prefix}");
            }
        }
    }
}
