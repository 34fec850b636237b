//! Accuracy of label answers against the true labels of the documents (`--gold-field`): per
//! prompt, the share answered right, each label's precision and recall, and the confusion
//! matrix. A true label is matched to the prompt's labels ignoring case; one that is none of
//! them stays as written (it can only be answered wrong).

use std::collections::BTreeMap;

use serde::Serialize;

/// Answers counted by true label, then by answered label.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Confusion {
    counts: BTreeMap<String, BTreeMap<String, usize>>,
}

/// One label's precision (right among those answered with it) and recall (found among those
/// that truly have it); `None` where nothing was answered with it, or nothing has it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LabelAccuracy {
    pub precision: Option<f64>,
    pub recall: Option<f64>,
    /// Documents whose true label this is.
    pub support: usize,
}

/// The accuracy of one prompt's answers.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Accuracy {
    pub documents: usize,
    pub correct: usize,
    pub accuracy: f64,
    pub labels: BTreeMap<String, LabelAccuracy>,
    /// `confusion[true][answered]`.
    pub confusion: BTreeMap<String, BTreeMap<String, usize>>,
}

impl Confusion {
    /// Counts `answered` for a document whose true label is `gold`.
    pub fn add(&mut self, labels: &[String], gold: &str, answered: &str) {
        let gold = labels
            .iter()
            .find(|l| l.to_lowercase() == gold.trim().to_lowercase())
            .cloned()
            .unwrap_or_else(|| gold.trim().to_string());
        *self
            .counts
            .entry(gold)
            .or_default()
            .entry(answered.to_string())
            .or_default() += 1;
    }

    pub fn accuracy(&self) -> Accuracy {
        let documents: usize = self.counts.values().flat_map(|row| row.values()).sum();
        let correct: usize = self
            .counts
            .iter()
            .map(|(gold, row)| row.get(gold).copied().unwrap_or(0))
            .sum();
        let mut names: Vec<&String> = self.counts.keys().collect();
        names.extend(self.counts.values().flat_map(|row| row.keys()));
        names.sort();
        names.dedup();
        let labels = names
            .into_iter()
            .map(|label| {
                let hit = self
                    .counts
                    .get(label)
                    .and_then(|row| row.get(label))
                    .copied()
                    .unwrap_or(0);
                let support: usize = self.counts.get(label).map_or(0, |row| row.values().sum());
                let answered: usize = self
                    .counts
                    .values()
                    .map(|row| row.get(label).copied().unwrap_or(0))
                    .sum();
                let ratio = |n: usize, d: usize| (d > 0).then(|| n as f64 / d as f64);
                (
                    label.clone(),
                    LabelAccuracy {
                        precision: ratio(hit, answered),
                        recall: ratio(hit, support),
                        support,
                    },
                )
            })
            .collect();
        Accuracy {
            documents,
            correct,
            accuracy: if documents > 0 {
                correct as f64 / documents as f64
            } else {
                0.0
            },
            labels,
            confusion: self.counts.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_precision_recall_and_the_matrix() {
        let labels = vec!["spam".to_string(), "ham".to_string()];
        let mut c = Confusion::default();
        for (gold, answered) in [
            ("spam", "spam"),
            ("SPAM", "ham"),
            ("ham", "ham"),
            ("ham", "ham"),
            ("ham", "spam"),
        ] {
            c.add(&labels, gold, answered);
        }
        let a = c.accuracy();
        assert_eq!((a.documents, a.correct), (5, 3));
        assert!((a.accuracy - 0.6).abs() < 1e-12);
        assert_eq!(a.confusion["spam"]["ham"], 1);
        let spam = &a.labels["spam"];
        assert_eq!(
            (spam.precision, spam.recall, spam.support),
            (Some(0.5), Some(0.5), 2)
        );
        let ham = &a.labels["ham"];
        assert_eq!(ham.recall, Some(2.0 / 3.0));
    }
}
