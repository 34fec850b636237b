//! `--shard I/N`: one of N disjoint parts of the documents, chosen by a stable hash of each
//! document's id, so that N machines given the same inputs process every document exactly once.

mod scheduler;

use std::fmt;
use std::str::FromStr;

pub use scheduler::shard_from_env;

/// `--shard I/N|auto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShardArg {
    Fixed(Shard),
    /// From the scheduler's environment (see [`shard_from_env`]).
    Auto,
}

impl FromStr for ShardArg {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s.trim() == "auto" {
            return Ok(Self::Auto);
        }
        s.parse().map(Self::Fixed)
    }
}

impl ShardArg {
    /// The shard, `auto` read from this process's environment.
    pub fn resolve(self) -> Result<Shard, String> {
        match self {
            Self::Fixed(shard) => Ok(shard),
            Self::Auto => shard_from_env(&|k| std::env::var(k).ok()),
        }
    }
}

/// What `{shard}` stands for in `-o` and `--report` paths.
pub const SHARD_PLACEHOLDER: &str = "{shard}";

/// Shard `index` of `count`, counted from 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: u64,
    pub count: u64,
}

impl FromStr for Shard {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let usage = || format!("`{s}` is not I/N (shard I of N, I counted from 0: 0/2 and 1/2)");
        let (i, n) = s.split_once('/').ok_or_else(usage)?;
        let index: u64 = i.trim().parse().map_err(|_| usage())?;
        let count: u64 = n.trim().parse().map_err(|_| usage())?;
        if count == 0 {
            return Err(format!("`{s}`: N must be at least 1"));
        }
        if index >= count {
            return Err(format!(
                "`{s}`: I must be below N (shards are counted from 0: 0/{count} to {}/{count})",
                count - 1
            ));
        }
        Ok(Self { index, count })
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl Shard {
    /// The shard in file names: `00003-of-00016`.
    pub fn tag(&self) -> String {
        format!("{:05}-of-{:05}", self.index, self.count)
    }

    /// The shard named by the last `IIIII-of-NNNNN` in `name` (a file name written through
    /// `{shard}`), if any.
    pub fn from_tag_in(name: &str) -> Option<Self> {
        name.rmatch_indices("-of-").find_map(|(at, _)| {
            let (before, after) = (&name[..at], &name[at + 4..]);
            let index = &before[before.trim_end_matches(|c: char| c.is_ascii_digit()).len()..];
            let count_len = after
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(after.len());
            let count = &after[..count_len];
            // Five digits or more on each side, as `tag` writes them.
            if index.len() < 5 || count.len() < 5 {
                return None;
            }
            format!("{index}/{count}").parse().ok()
        })
    }

    /// `path` with `{shard}` replaced by [`Shard::tag`].
    pub fn expand(&self, path: &str) -> String {
        path.replace(SHARD_PLACEHOLDER, &self.tag())
    }

    /// Whether the document with this id belongs to the shard. Only the id is hashed: it does
    /// not depend on where the inputs are mounted (a folder's documents are ids relative to it).
    pub fn contains(&self, id: &str) -> bool {
        // FNV-1a: stable across builds and platforms, unlike std's hasher.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in id.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        h % self.count == self.index
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_refuses() {
        assert_eq!("1/3".parse::<Shard>(), Ok(Shard { index: 1, count: 3 }));
        assert!("3/2"
            .parse::<Shard>()
            .expect_err("refused")
            .contains("I must be below N"));
        assert!("0/0"
            .parse::<Shard>()
            .expect_err("refused")
            .contains("N must be"));
        assert!("x".parse::<Shard>().is_err());
        assert!("1/x".parse::<Shard>().is_err());
    }

    #[test]
    fn tags_name_the_shard_in_file_names() {
        let shard = Shard {
            index: 3,
            count: 16,
        };
        assert_eq!(shard.tag(), "00003-of-00016");
        assert_eq!(
            shard.expand("out/results-{shard}.csv"),
            "out/results-00003-of-00016.csv"
        );
        assert_eq!(
            Shard::from_tag_in("results-00003-of-00016.csv"),
            Some(shard)
        );
        assert_eq!(
            Shard::from_tag_in("/a/run-00001-of-00002/results-00003-of-00016.jsonl"),
            Some(shard)
        );
        assert_eq!(
            Shard::from_tag_in("r-123456-of-200000.csv"),
            Some(Shard {
                index: 123_456,
                count: 200_000
            })
        );
        assert_eq!(Shard::from_tag_in("results.csv"), None);
        assert_eq!(Shard::from_tag_in("results-3-of-16.csv"), None);
        assert_eq!(Shard::from_tag_in("results-00016-of-00016.csv"), None);
        assert_eq!("auto".parse::<ShardArg>(), Ok(ShardArg::Auto));
        assert_eq!(
            "1/2".parse::<ShardArg>(),
            Ok(ShardArg::Fixed(Shard { index: 1, count: 2 }))
        );
    }

    #[test]
    fn shards_partition_the_ids() {
        let ids: Vec<String> = (0..300).map(|i| format!("doc-{i}.txt")).collect();
        let shards: Vec<Shard> = (0..3).map(|index| Shard { index, count: 3 }).collect();
        for id in &ids {
            assert_eq!(shards.iter().filter(|s| s.contains(id)).count(), 1, "{id}");
        }
        for s in &shards {
            let n = ids.iter().filter(|id| s.contains(id)).count();
            assert!((60..=140).contains(&n), "shard {s} has {n} of 300");
        }
    }
}
