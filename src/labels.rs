//! Label answers: with `--labels`, the answer is exactly one of the labels, and every label gets
//! a probability.
//!
//! The labels' token paths (each label as given, lower-case, capitalized and upper-case, with and
//! without a leading space) form a trie. Decoding is constrained to it: at each step the logits
//! of tokens that leave the trie are masked out, so the chosen tokens are decode rows of the
//! shared forward passes like any others, and the answer ends as soon as a label is complete
//! (or, where a label is the start of another, when the model prefers to end it there).
//!
//! Scores: at every branching the model's probabilities, renormalized over the allowed tokens,
//! split the probability mass of the path taken so far; a branch not taken gives its mass to the
//! labels below it (evenly, in the rare case of several). The masses sum to 1.

use std::collections::BTreeSet;

use crate::tokenizer::Tokenizer;

/// The labels of a prompt as a trie of token ids.
#[derive(Debug)]
pub struct LabelSet {
    labels: Vec<String>,
    nodes: Vec<Node>,
}

#[derive(Debug, Default)]
struct Node {
    children: Vec<(u32, usize)>,
    /// The label a path ending here spells.
    label: Option<usize>,
    /// The labels reachable from here.
    below: BTreeSet<usize>,
}

/// Where one answer is in the trie, and the mass given to each label so far.
#[derive(Debug, Clone)]
pub struct LabelState {
    node: usize,
    path_mass: f64,
    masses: Vec<f64>,
}

/// What to do after a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Continue,
    /// The answer is this label.
    Done(usize),
}

impl LabelSet {
    /// The trie of `labels` (non-empty, distinct ignoring case: checked by the caller).
    pub fn new(labels: &[String], tokenizer: &Tokenizer) -> Result<Self, String> {
        let mut set = Self {
            labels: labels.to_vec(),
            nodes: vec![Node::default()],
        };
        for (index, label) in labels.iter().enumerate() {
            for variant in variants(label) {
                let ids = tokenizer
                    .encode_plain(&variant)
                    .map_err(|e| e.to_string())?;
                if !ids.is_empty() {
                    set.insert(&ids, index)?;
                }
            }
        }
        Ok(set)
    }

    fn insert(&mut self, ids: &[u32], label: usize) -> Result<(), String> {
        let mut node = 0;
        for &id in ids {
            self.nodes[node].below.insert(label);
            node = match self.nodes[node].children.iter().find(|(t, _)| *t == id) {
                Some(&(_, child)) => child,
                None => {
                    self.nodes.push(Node::default());
                    let child = self.nodes.len() - 1;
                    self.nodes[node].children.push((id, child));
                    child
                }
            };
        }
        self.nodes[node].below.insert(label);
        match self.nodes[node].label {
            Some(other) if other != label => Err(format!(
                "labels `{}` and `{}` are written with the same tokens",
                self.labels[other], self.labels[label]
            )),
            _ => {
                self.nodes[node].label = Some(label);
                Ok(())
            }
        }
    }

    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    /// The most tokens an answer can take (at least 1).
    pub fn max_tokens(&self) -> usize {
        fn depth(nodes: &[Node], n: usize) -> usize {
            nodes[n]
                .children
                .iter()
                .map(|&(_, c)| 1 + depth(nodes, c))
                .max()
                .unwrap_or(0)
        }
        depth(&self.nodes, 0).max(1)
    }

    pub fn start(&self) -> LabelState {
        LabelState {
            node: 0,
            path_mass: 1.0,
            masses: vec![0.0; self.labels.len()],
        }
    }

    /// Masks `logits` to the tokens allowed next (`end` stands for "the answer ends here",
    /// allowed where a label is complete: the caller maps it to an end-of-generation id).
    pub fn allowed(&self, state: &LabelState, end: u32) -> Vec<u32> {
        let node = &self.nodes[state.node];
        let mut ids: Vec<u32> = node.children.iter().map(|&(t, _)| t).collect();
        if node.label.is_some() {
            ids.push(end);
        }
        ids
    }

    /// Takes `token` (one of [`LabelSet::allowed`]), splitting the path's mass by `probs`, the
    /// model's probabilities of the allowed tokens (in that order, summing to 1).
    pub fn advance(&self, state: &mut LabelState, token: u32, end: u32, probs: &[f64]) -> Step {
        let allowed = self.allowed(state, end);
        let node = &self.nodes[state.node];
        let mut chosen_p = 0.0;
        for (&t, &p) in allowed.iter().zip(probs) {
            if t == token {
                chosen_p = p;
                continue;
            }
            let mass = state.path_mass * p;
            if t == end {
                if let Some(l) = node.label {
                    state.masses[l] += mass;
                }
            } else if let Some(&(_, child)) = node.children.iter().find(|(c, _)| *c == t) {
                let below = &self.nodes[child].below;
                for &l in below {
                    state.masses[l] += mass / below.len() as f64;
                }
            }
        }
        state.path_mass *= chosen_p;
        if token == end {
            let label = node
                .label
                .expect("end is allowed only where a label is complete");
            return self.finish(state, label);
        }
        let child = node
            .children
            .iter()
            .find(|(c, _)| *c == token)
            .map(|&(_, c)| c)
            .expect("an allowed token");
        state.node = child;
        let next = &self.nodes[child];
        match (next.label, next.children.is_empty()) {
            (Some(label), true) => self.finish(state, label),
            _ => Step::Continue,
        }
    }

    fn finish(&self, state: &mut LabelState, label: usize) -> Step {
        state.masses[label] += state.path_mass;
        state.path_mass = 0.0;
        Step::Done(label)
    }
}

impl LabelState {
    /// The probability of each label, in the order given.
    pub fn scores(&self) -> &[f64] {
        &self.masses
    }
}

/// The ways a model may write `label` at the start of its answer.
fn variants(label: &str) -> Vec<String> {
    let mut capitalized = String::new();
    let mut chars = label.chars();
    if let Some(first) = chars.next() {
        capitalized.extend(first.to_uppercase());
        capitalized.push_str(&chars.as_str().to_lowercase());
    }
    let forms = [
        label.to_string(),
        label.to_lowercase(),
        capitalized,
        label.to_uppercase(),
    ];
    let mut out: Vec<String> = Vec::new();
    for form in forms {
        for v in [form.clone(), format!(" {form}")] {
            if !out.contains(&v) {
                out.push(v);
            }
        }
    }
    out
}

/// The index of the highest score (the first of equal ones).
pub fn most_probable(scores: &[f64]) -> usize {
    scores
        .iter()
        .enumerate()
        .fold(0, |best, (i, s)| if *s > scores[best] { i } else { best })
}

/// Probabilities of `ids` under `logits` renormalized over them (a softmax of their logits).
pub fn renormalized(logits: &[f32], ids: &[u32]) -> Vec<f64> {
    let values: Vec<f64> = ids
        .iter()
        .map(|&i| logits.get(i as usize).copied().unwrap_or(f32::NEG_INFINITY) as f64)
        .collect();
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if !max.is_finite() {
        return vec![1.0 / ids.len().max(1) as f64; ids.len()];
    }
    let exps: Vec<f64> = values.iter().map(|v| (v - max).exp()).collect();
    let sum: f64 = exps.iter().sum();
    exps.iter().map(|e| e / sum).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variants_cover_case_and_a_leading_space() {
        let v = variants("Neutral");
        for form in ["Neutral", "neutral", "NEUTRAL", " Neutral", " neutral"] {
            assert!(v.contains(&form.to_string()), "{form}");
        }
        assert_eq!(variants("ok").len(), 6);
    }

    #[test]
    fn renormalized_probabilities_sum_to_one() {
        let p = renormalized(&[0.0, 1.0, 2.0, f32::NEG_INFINITY], &[1, 2]);
        assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        assert!(p[1] > p[0]);
        assert_eq!(
            renormalized(&[f32::NEG_INFINITY; 2], &[0, 1]),
            vec![0.5, 0.5]
        );
    }
}
