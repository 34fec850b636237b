//! Hierarchical merging of free-text answers: the answers of one level, in document order, are
//! cut into groups that fit one reduce prompt; each group becomes one answer of the next level,
//! until one remains.

use std::ops::Range;

/// One answer to merge: the parts of the document it covers (1-based, inclusive) and its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReduceInput {
    pub parts: (usize, usize),
    pub text: String,
}

impl ReduceInput {
    /// What a group of consecutive inputs becomes once merged into `text`.
    pub fn merged(group: &[ReduceInput], text: String) -> ReduceInput {
        ReduceInput {
            parts: (
                group.first().map_or(0, |g| g.parts.0),
                group.last().map_or(0, |g| g.parts.1),
            ),
            text,
        }
    }
}

/// The text a group of inputs is given to the reduce template as (its `document`): the
/// answers in order, a blank line between them.
pub fn joined(group: &[ReduceInput]) -> String {
    group
        .iter()
        .map(|input| input.text.trim())
        .collect::<Vec<_>>()
        .join("\n\n")
}

/// Cuts a level of inputs whose sizes (tokens, headings included) are `sizes` into consecutive
/// groups whose sizes sum to at most `room`. Every group has at least two inputs, except a last
/// one left alone (it goes to the next level as it is): so each level has fewer answers than the
/// one before and merging always ends. A group of two that does not fit is cut to fit by the
/// caller (each input to half the room).
pub fn plan_groups(sizes: &[usize], room: usize) -> Vec<Range<usize>> {
    let mut groups = Vec::new();
    let mut start = 0;
    while start < sizes.len() {
        let mut end = (start + 2).min(sizes.len());
        let mut used: usize = sizes[start..end].iter().sum();
        while end < sizes.len() && used + sizes[end] <= room {
            used += sizes[end];
            end += 1;
        }
        groups.push(start..end);
        start = end;
    }
    // A lone last input joins the group before it when that still fits, saving a level.
    if groups.len() >= 2 && groups.last().is_some_and(|g| g.len() == 1) {
        let lone = groups.pop().expect("a last group");
        let before = groups.last_mut().expect("a group before");
        let used: usize = sizes[before.start..lone.end].iter().sum();
        if used <= room {
            before.end = lone.end;
        } else {
            groups.push(lone);
        }
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn groups_join_in_order_and_cover_their_parts() {
        let a = ReduceInput {
            parts: (1, 1),
            text: " first ".into(),
        };
        let b = ReduceInput {
            parts: (2, 4),
            text: "rest".into(),
        };
        assert_eq!(joined(&[a.clone(), b.clone()]), "first\n\nrest");
        assert_eq!(ReduceInput::merged(&[a, b], "x".into()).parts, (1, 4));
    }

    #[test]
    fn groups_fill_the_room_in_order() {
        assert_eq!(plan_groups(&[10, 10, 10, 10, 10], 30), vec![0..3, 3..5]);
        assert_eq!(plan_groups(&[10, 10, 10, 10], 40), vec![0..4]);
        // Inputs too big to pair still go two by two (the caller cuts them).
        assert_eq!(plan_groups(&[50, 50, 50], 30), vec![0..2, 2..3]);
        assert_eq!(plan_groups(&[5], 30), vec![0..1]);
    }

    proptest! {
        #[test]
        fn merging_always_ends(
            sizes in proptest::collection::vec(1usize..500, 1..200),
            room in 1usize..2000,
        ) {
            let mut level = sizes;
            let mut levels = 0;
            while level.len() > 1 {
                let groups = plan_groups(&level, room);
                prop_assert_eq!(groups.first().unwrap().start, 0);
                prop_assert_eq!(groups.last().unwrap().end, level.len());
                for pair in groups.windows(2) {
                    prop_assert_eq!(pair[0].end, pair[1].start);
                }
                prop_assert!(groups.len() < level.len());
                // Each merged answer is at most as long as the room (a reduce answer is
                // bounded by --max-tokens; here: by the room itself).
                level = groups.iter().map(|g| level[g.clone()].iter().sum::<usize>().min(room)).collect();
                levels += 1;
                prop_assert!(levels <= 64);
            }
        }
    }
}
