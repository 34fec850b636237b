//! `--shard auto`: which shard this task is, from the environment a scheduler gives its array
//! tasks. Several schedulers' variables may be present (a Slurm job inside a Kubernetes pod);
//! they must agree. Nothing found, or a disagreement, is an error that says what was seen:
//! never a silent 0/1, which would make every task process every document.

use super::Shard;

/// Where I/N came from.
struct Found {
    scheduler: &'static str,
    shard: Result<Shard, String>,
}

/// Every variable this looks at, for the message when none is set.
const VARIABLES: &str = "DOCANALYZE_SHARD_INDEX/_COUNT, SLURM_ARRAY_TASK_ID (+ _COUNT, _MIN, _MAX), JOB_COMPLETION_INDEX (+ DOCANALYZE_SHARD_COUNT), AWS_BATCH_JOB_ARRAY_INDEX/_SIZE, BATCH_TASK_INDEX/_COUNT";

/// The shard the environment `var` describes.
pub fn shard_from_env(var: &dyn Fn(&str) -> Option<String>) -> Result<Shard, String> {
    // The project's own variables override every scheduler's; alone, a count is only the
    // Kubernetes Indexed Job's missing half.
    if let Some(index) = var("DOCANALYZE_SHARD_INDEX") {
        let explicit = pair(
            "docanalyze",
            Some(index),
            var("DOCANALYZE_SHARD_COUNT"),
            "DOCANALYZE_SHARD_INDEX",
            "DOCANALYZE_SHARD_COUNT",
        );
        return explicit.map_or_else(|| Err("unreachable".into()), |f| f.shard);
    }
    let found: Vec<Found> = [
        slurm(var),
        kubernetes(var),
        aws_batch(var),
        google_batch(var),
    ]
    .into_iter()
    .flatten()
    .collect();
    let Some(first) = found.first() else {
        return Err(format!(
            "--shard auto: no scheduler's array-task variables are set (looked for {VARIABLES}); give --shard I/N, or set DOCANALYZE_SHARD_INDEX and DOCANALYZE_SHARD_COUNT"
        ));
    };
    if let Some(bad) = found.iter().find(|f| f.shard.is_err()) {
        return Err(format!(
            "--shard auto: {}",
            bad.shard.as_ref().err().cloned().unwrap_or_default()
        ));
    }
    let seen = || {
        found
            .iter()
            .map(|f| {
                format!(
                    "{} says {}",
                    f.scheduler,
                    f.shard.as_ref().expect("checked")
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let shard = *first.shard.as_ref().expect("checked");
    if found.iter().any(|f| f.shard.as_ref() != Ok(&shard)) {
        return Err(format!(
            "--shard auto: the schedulers disagree ({}); set DOCANALYZE_SHARD_INDEX and DOCANALYZE_SHARD_COUNT to choose",
            seen()
        ));
    }
    Ok(shard)
}

/// I/N from an index and a count variable; `None` when neither is set.
fn pair(
    scheduler: &'static str,
    index: Option<String>,
    count: Option<String>,
    index_name: &str,
    count_name: &str,
) -> Option<Found> {
    if index.is_none() && count.is_none() {
        return None;
    }
    let shard = (|| {
        let index = number(index_name, index)?;
        let count = number(count_name, count)?;
        format!("{index}/{count}")
            .parse::<Shard>()
            .map_err(|e| format!("{index_name}={index} and {count_name}={count}: {e}"))
    })();
    Some(Found { scheduler, shard })
}

fn number(name: &str, value: Option<String>) -> Result<u64, String> {
    let value = value.ok_or_else(|| format!("{name} is not set"))?;
    value
        .trim()
        .parse()
        .map_err(|_| format!("{name}={value} is not a number"))
}

/// Slurm job arrays: the task id, and the count only when the array is 0..COUNT-1 (an array
/// `--array=1-8` or `0-15:2` has ids that are not shard indexes).
fn slurm(var: &dyn Fn(&str) -> Option<String>) -> Option<Found> {
    let id = var("SLURM_ARRAY_TASK_ID")?;
    let shard = (|| {
        let id = number("SLURM_ARRAY_TASK_ID", Some(id))?;
        let count = number("SLURM_ARRAY_TASK_COUNT", var("SLURM_ARRAY_TASK_COUNT"))?;
        let min = number("SLURM_ARRAY_TASK_MIN", var("SLURM_ARRAY_TASK_MIN"))?;
        let max = number("SLURM_ARRAY_TASK_MAX", var("SLURM_ARRAY_TASK_MAX"))?;
        if min != 0 || max + 1 != count {
            return Err(format!(
                "the Slurm array is {min}-{max} with {count} tasks; submit it as --array=0-{} so task ids are shard indexes",
                count.max(1) - 1
            ));
        }
        format!("{id}/{count}")
            .parse::<Shard>()
            .map_err(|e| format!("SLURM_ARRAY_TASK_ID={id}: {e}"))
    })();
    Some(Found {
        scheduler: "Slurm",
        shard,
    })
}

/// Kubernetes Indexed Jobs give the index only; the count comes from DOCANALYZE_SHARD_COUNT
/// (the Job's `completions`, set in its manifest).
fn kubernetes(var: &dyn Fn(&str) -> Option<String>) -> Option<Found> {
    let index = var("JOB_COMPLETION_INDEX")?;
    let count = var("DOCANALYZE_SHARD_COUNT");
    if count.is_none() {
        return Some(Found {
            scheduler: "Kubernetes",
            shard: Err(format!(
                "JOB_COMPLETION_INDEX={index} but DOCANALYZE_SHARD_COUNT is not set: a Kubernetes Indexed Job does not say how many shards there are; set it to the Job's completions"
            )),
        });
    }
    pair(
        "Kubernetes",
        Some(index),
        count,
        "JOB_COMPLETION_INDEX",
        "DOCANALYZE_SHARD_COUNT",
    )
}

fn aws_batch(var: &dyn Fn(&str) -> Option<String>) -> Option<Found> {
    pair(
        "AWS Batch",
        var("AWS_BATCH_JOB_ARRAY_INDEX"),
        var("AWS_BATCH_JOB_ARRAY_SIZE"),
        "AWS_BATCH_JOB_ARRAY_INDEX",
        "AWS_BATCH_JOB_ARRAY_SIZE",
    )
}

fn google_batch(var: &dyn Fn(&str) -> Option<String>) -> Option<Found> {
    pair(
        "Google Batch",
        var("BATCH_TASK_INDEX"),
        var("BATCH_TASK_COUNT"),
        "BATCH_TASK_INDEX",
        "BATCH_TASK_COUNT",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn resolve(vars: &[(&str, &str)]) -> Result<Shard, String> {
        let env: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        shard_from_env(&|k| env.get(k).cloned())
    }

    fn shard(index: u64, count: u64) -> Result<Shard, String> {
        Ok(Shard { index, count })
    }

    #[test]
    fn each_scheduler_is_read() {
        let slurm = [
            ("SLURM_ARRAY_TASK_ID", "3"),
            ("SLURM_ARRAY_TASK_COUNT", "16"),
            ("SLURM_ARRAY_TASK_MIN", "0"),
            ("SLURM_ARRAY_TASK_MAX", "15"),
        ];
        assert_eq!(resolve(&slurm), shard(3, 16));
        assert_eq!(
            resolve(&[
                ("JOB_COMPLETION_INDEX", "2"),
                ("DOCANALYZE_SHARD_COUNT", "5")
            ]),
            shard(2, 5)
        );
        assert_eq!(
            resolve(&[
                ("AWS_BATCH_JOB_ARRAY_INDEX", "0"),
                ("AWS_BATCH_JOB_ARRAY_SIZE", "2")
            ]),
            shard(0, 2)
        );
        assert_eq!(
            resolve(&[("BATCH_TASK_INDEX", "7"), ("BATCH_TASK_COUNT", "8")]),
            shard(7, 8)
        );
    }

    #[test]
    fn the_projects_variables_override_the_schedulers() {
        let vars = [
            ("DOCANALYZE_SHARD_INDEX", "1"),
            ("DOCANALYZE_SHARD_COUNT", "2"),
            ("BATCH_TASK_INDEX", "7"),
            ("BATCH_TASK_COUNT", "8"),
        ];
        assert_eq!(resolve(&vars), shard(1, 2));
        let half = resolve(&[("DOCANALYZE_SHARD_INDEX", "1")]).unwrap_err();
        assert!(half.contains("DOCANALYZE_SHARD_COUNT is not set"), "{half}");
    }

    #[test]
    fn nothing_found_is_an_error_never_0_of_1() {
        let err = resolve(&[]).unwrap_err();
        assert!(err.contains("no scheduler's array-task variables"), "{err}");
        assert!(err.contains("SLURM_ARRAY_TASK_ID"), "{err}");
    }

    #[test]
    fn schedulers_that_disagree_are_refused_and_named() {
        let err = resolve(&[
            ("JOB_COMPLETION_INDEX", "2"),
            ("DOCANALYZE_SHARD_COUNT", "5"),
            ("BATCH_TASK_INDEX", "3"),
            ("BATCH_TASK_COUNT", "5"),
        ])
        .unwrap_err();
        assert!(
            err.contains("Kubernetes says 2/5") && err.contains("Google Batch says 3/5"),
            "{err}"
        );
        // Agreeing ones are fine.
        assert_eq!(
            resolve(&[
                ("JOB_COMPLETION_INDEX", "3"),
                ("DOCANALYZE_SHARD_COUNT", "5"),
                ("BATCH_TASK_INDEX", "3"),
                ("BATCH_TASK_COUNT", "5"),
            ]),
            shard(3, 5)
        );
    }

    #[test]
    fn arrays_that_are_not_shard_indexes_are_refused() {
        let one_based = [
            ("SLURM_ARRAY_TASK_ID", "1"),
            ("SLURM_ARRAY_TASK_COUNT", "4"),
            ("SLURM_ARRAY_TASK_MIN", "1"),
            ("SLURM_ARRAY_TASK_MAX", "4"),
        ];
        let err = resolve(&one_based).unwrap_err();
        assert!(err.contains("--array=0-3"), "{err}");
        let stepped = [
            ("SLURM_ARRAY_TASK_ID", "2"),
            ("SLURM_ARRAY_TASK_COUNT", "4"),
            ("SLURM_ARRAY_TASK_MIN", "0"),
            ("SLURM_ARRAY_TASK_MAX", "6"),
        ];
        assert!(resolve(&stepped).is_err());
        let no_count = [("JOB_COMPLETION_INDEX", "0")];
        assert!(resolve(&no_count)
            .unwrap_err()
            .contains("DOCANALYZE_SHARD_COUNT is not set"));
        let garbage = [("BATCH_TASK_INDEX", "x"), ("BATCH_TASK_COUNT", "2")];
        assert!(resolve(&garbage)
            .unwrap_err()
            .contains("BATCH_TASK_INDEX=x is not a number"));
        let out_of_range = [("BATCH_TASK_INDEX", "2"), ("BATCH_TASK_COUNT", "2")];
        assert!(resolve(&out_of_range)
            .unwrap_err()
            .contains("I must be below N"));
    }
}
