//! A batch step: the flat list of rows that one forward pass computes (llama.cpp's `llama_batch`).

/// Index of a sequence's slot in the KV cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SlotId(pub usize);

/// One token of one sequence to run through the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchRow {
    pub token: u32,
    /// Position of this token in its sequence (also where its K/V are written).
    pub position: usize,
    pub slot: SlotId,
    /// Whether the logits of this row are needed (last prompt row, decode rows).
    pub wants_logits: bool,
    /// A prompt token (prefill) rather than a generated one being decoded. The CPU kernels
    /// compute the two kinds differently, and a token is always the same kind, so its
    /// result never depends on the batch.
    pub prompt: bool,
}

/// Rows of many sequences sharing one forward pass.
///
/// Rows of one slot must be adjacent and at consecutive positions (a prefill chunk or a single
/// decode row); each slot appears in at most one such segment. Decode rows come first, then
/// prompt rows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchStep {
    pub rows: Vec<BatchRow>,
}

/// A run of rows of one slot: `rows[start..start + len]`, at positions `first_position..`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub slot: SlotId,
    pub start: usize,
    pub len: usize,
    pub first_position: usize,
}

impl BatchStep {
    pub fn push(&mut self, row: BatchRow) {
        self.rows.push(row);
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// How many rows are decode rows: the leading rows, before the first prompt row.
    pub fn decode_rows(&self) -> usize {
        self.rows.iter().take_while(|r| !r.prompt).count()
    }

    /// Splits the rows into per-slot segments, checking the layout rules.
    pub fn segments(&self) -> Result<Vec<Segment>, String> {
        let decode_rows = self.decode_rows();
        if let Some(i) = self.rows[decode_rows..].iter().position(|r| !r.prompt) {
            return Err(format!(
                "row {}: a decode row after prompt rows",
                decode_rows + i
            ));
        }
        let mut segments: Vec<Segment> = Vec::new();
        for (i, row) in self.rows.iter().enumerate() {
            match segments.last_mut() {
                Some(seg) if seg.slot == row.slot => {
                    if row.position != seg.first_position + seg.len {
                        return Err(format!(
                            "row {i}: slot {} jumps to position {} after {}",
                            row.slot.0,
                            row.position,
                            seg.first_position + seg.len - 1
                        ));
                    }
                    seg.len += 1;
                }
                _ => {
                    if segments.iter().any(|s| s.slot == row.slot) {
                        return Err(format!("row {i}: slot {} appears twice", row.slot.0));
                    }
                    segments.push(Segment {
                        slot: row.slot,
                        start: i,
                        len: 1,
                        first_position: row.position,
                    });
                }
            }
        }
        Ok(segments)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(slot: usize, position: usize) -> BatchRow {
        BatchRow {
            token: 0,
            position,
            slot: SlotId(slot),
            wants_logits: false,
            prompt: false,
        }
    }

    #[test]
    fn segments_group_adjacent_rows_of_a_slot() {
        let step = BatchStep {
            rows: vec![row(2, 7), row(0, 3), row(0, 4), row(0, 5), row(1, 0)],
        };
        let segs = step.segments().unwrap();
        assert_eq!(segs.len(), 3);
        assert_eq!(
            segs[1],
            Segment {
                slot: SlotId(0),
                start: 1,
                len: 3,
                first_position: 3
            }
        );
    }

    #[test]
    fn segments_reject_gaps_and_split_slots() {
        let gap = BatchStep {
            rows: vec![row(0, 3), row(0, 5)],
        };
        assert!(gap.segments().is_err());
        let split = BatchStep {
            rows: vec![row(0, 3), row(1, 0), row(0, 4)],
        };
        assert!(split.segments().is_err());
        let prompt_first = BatchStep {
            rows: vec![
                BatchRow {
                    prompt: true,
                    ..row(0, 3)
                },
                row(1, 7),
            ],
        };
        assert!(prompt_first.segments().is_err());
    }
}
