//! `docanalyze merge OUT SHARDS...`: the outputs of the N shards of one run (written with
//! `--shard I/N -o results-{shard}.csv`) joined into one, every document × prompt once.
//!
//! Each shard file says which shard it is by its name (`…-00003-of-00016…`); every record in it
//! must belong to that shard (its id hashes there), so a file of another run or another N is
//! refused. Requeued tasks append to their shard's file (`--resume`), so a job can have several
//! records: a result (`ok`, `truncated`) beats an error whatever their order, and among records
//! of the same kind the later one — the later attempt, since shard files are append-only under
//! the writer's lock — wins. The merged file is written next to OUT and renamed over it, so a
//! reader never sees half of it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::Serialize;
use serde_json::Value;

use crate::output::lock::is_being_written;
use crate::output::read::{read_records, RawRecord, RecordFields};
use crate::output::{csv_columns, ExtraColumns, Format};
use crate::report::percentile;
use crate::shard::Shard;

/// What to merge.
#[derive(Debug, Clone)]
pub struct MergeConfig {
    pub output: PathBuf,
    pub format: Format,
    pub shards: Vec<PathBuf>,
    /// Merge what is there when shards are missing, listing them.
    pub allow_partial: bool,
    /// The shard runs' `--report` files, merged into `report`.
    pub shard_reports: Vec<PathBuf>,
    pub report: Option<PathBuf>,
}

/// The merged report: counters summed and latencies recomputed from the merged records; the
/// timings summed (busy time) or maxed (wall time) over the shard reports, when given.
#[derive(Debug, Clone, Default, Serialize)]
pub struct MergedReport {
    pub shards: u64,
    pub shards_merged: Vec<u64>,
    pub missing_shards: Vec<u64>,
    pub records: usize,
    /// Earlier attempts of a job (requeued tasks) dropped from the merged output.
    pub records_superseded: usize,
    pub documents_ok: usize,
    pub documents_truncated: usize,
    pub documents_failed: usize,
    pub prompt_tokens: u64,
    pub generated_tokens: u64,
    pub latency_p50_ms: f64,
    pub latency_p95_ms: f64,
    /// The slowest shard's wall time (shards run side by side).
    pub wall_s: Option<f64>,
    pub load_s: Option<f64>,
    pub prefill_s: Option<f64>,
    pub decode_s: Option<f64>,
    /// Per machine: prompt tokens over the summed prefill time.
    pub prefill_tok_per_s: Option<f64>,
    pub decode_tok_per_s: Option<f64>,
    /// All shards together: records per minute of the slowest shard's wall time.
    pub docs_per_min: Option<f64>,
    pub peak_rss_bytes: Option<u64>,
}

/// Which record of a job wins so far: its file, its place there, and whether it is a result.
#[derive(Debug, Clone, Copy)]
struct Winner {
    file: usize,
    record: usize,
    done: bool,
}

type JobKey = (String, String, String);

/// Merges; returns the report (also written to `config.report`).
pub fn merge(config: &MergeConfig) -> anyhow::Result<MergedReport> {
    let shards = identify_shards(config)?;
    let count = shards.first().map(|(s, _)| s.count).unwrap_or(0);
    let present: Vec<u64> = shards.iter().map(|(s, _)| s.index).collect();
    let missing: Vec<u64> = (0..count).filter(|i| !present.contains(i)).collect();
    if !missing.is_empty() {
        let list = join(&missing);
        if !config.allow_partial {
            bail!(
                "shard{} {list} of {count} {} missing (a file named like …-{}…); --allow-partial merges the others",
                if missing.len() == 1 { "" } else { "s" },
                if missing.len() == 1 { "is" } else { "are" },
                Shard { index: missing[0], count }.tag()
            );
        }
        tracing::warn!("--allow-partial: merging without shards {list} of {count}");
    }

    // Pass 1: every record's key, the winner of each job, the CSV header.
    let mut winners: HashMap<JobKey, Winner> = HashMap::new();
    let mut header: Option<(Vec<String>, &Path)> = None;
    let mut records_in = 0usize;
    for (file, (shard, path)) in shards.iter().enumerate() {
        let mut record = 0usize;
        let mut foreign: Option<String> = None;
        let summary = read_records(path, config.format, |fields, _| {
            if foreign.is_none() && !shard.contains(&fields.id) {
                foreign = Some(fields.id.clone());
            }
            let done = fields.is_done();
            let key = (fields.id, fields.source, fields.prompt);
            let candidate = Winner { file, record, done };
            winners
                .entry(key)
                .and_modify(|w| {
                    if done || !w.done {
                        *w = candidate;
                    }
                })
                .or_insert(candidate);
            record += 1;
        })?;
        if let Some(id) = foreign {
            bail!(
                "{} is not shard {shard} of this run: it holds document `{id}`, which belongs to another shard (a file of another run, or of another N?)",
                path.display()
            );
        }
        if summary.torn_bytes() > 0 {
            tracing::warn!(
                "{}: ignoring an incomplete last record ({} bytes) left by an interrupted run",
                path.display(),
                summary.torn_bytes()
            );
        }
        if !summary.header.is_empty() {
            match &header {
                Some((first, first_path)) if *first != summary.header => bail!(
                    "{} and {} have different CSV columns: outputs of different runs?",
                    first_path.display(),
                    path.display()
                ),
                Some(_) => {}
                None => header = Some((summary.header.clone(), path)),
            }
        }
        records_in += record;
    }

    // Pass 2: the winners, in shard and file order, to a temporary file renamed over OUT.
    let keep: HashSet<(usize, usize)> = winners.values().map(|w| (w.file, w.record)).collect();
    let mut report = MergedReport {
        shards: count,
        shards_merged: present,
        missing_shards: missing,
        records_superseded: records_in - keep.len(),
        ..MergedReport::default()
    };
    let mut latencies = Vec::new();
    let temporary = temporary_path(&config.output);
    let written = (|| -> anyhow::Result<()> {
        let file = File::create(&temporary)
            .with_context(|| format!("cannot write {}", temporary.display()))?;
        let header = match (header, config.format) {
            (Some((header, _)), _) => Some(header),
            (None, Format::Csv) => Some(csv_columns(&ExtraColumns::default())),
            (None, Format::Jsonl) => None,
        };
        let mut out = MergedWriter::new(BufWriter::new(file), header)?;
        for (file, (_, path)) in shards.iter().enumerate() {
            let mut record = 0usize;
            let mut failure = None;
            read_records(path, config.format, |fields, raw| {
                if keep.contains(&(file, record)) && failure.is_none() {
                    count_record(&mut report, &fields);
                    latencies.push(fields.latency_ms as f64);
                    failure = out.write(&raw).err();
                }
                record += 1;
            })?;
            if let Some(e) = failure {
                return Err(e).with_context(|| format!("cannot write {}", temporary.display()));
            }
        }
        out.finish()
            .and_then(|w| w.into_inner().map_err(|e| e.into_error()))
            .and_then(|f| f.sync_all())
            .with_context(|| format!("cannot write {}", temporary.display()))
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&temporary);
        return Err(e);
    }
    std::fs::rename(&temporary, &config.output).with_context(|| {
        format!(
            "cannot move {} to {}",
            temporary.display(),
            config.output.display()
        )
    })?;
    latencies.sort_by(f64::total_cmp);
    report.latency_p50_ms = percentile(&latencies, 0.50);
    report.latency_p95_ms = percentile(&latencies, 0.95);
    add_shard_timings(&mut report, &config.shard_reports)?;
    if let Some(path) = &config.report {
        let json = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, json + "\n")
            .with_context(|| format!("cannot write report {}", path.display()))?;
    }
    Ok(report)
}

/// Each shard file with the shard its name says it is, sorted by index; refuses files that
/// name no shard, disagree on N, repeat a shard, are of another format, or are being written.
fn identify_shards(config: &MergeConfig) -> anyhow::Result<Vec<(Shard, PathBuf)>> {
    if config.shards.is_empty() {
        bail!("no shard outputs given");
    }
    let mut shards: Vec<(Shard, PathBuf)> = Vec::new();
    for path in &config.shards {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        let shard = name.as_deref().and_then(Shard::from_tag_in).with_context(|| {
            format!(
                "{}: its name does not say which shard it is (…-00003-of-00016…, as `-o results-{{shard}}.csv` writes)",
                path.display()
            )
        })?;
        if Format::from_path(&path.to_string_lossy()) != config.format {
            bail!(
                "{} is not of the output's format ({:?}): merge outputs of one format",
                path.display(),
                config.format
            );
        }
        if path == &config.output {
            bail!("{} is both a shard and the merged output", path.display());
        }
        if is_being_written(path).with_context(|| format!("cannot read {}", path.display()))? {
            bail!(
                "{} is still being written by a running docanalyze (it holds the file's lock): merge when every shard has finished",
                path.display()
            );
        }
        if let Some((first, first_path)) = shards.first() {
            if first.count != shard.count {
                bail!(
                    "{} is shard {shard} but {} is shard {first}: shards of different runs",
                    path.display(),
                    first_path.display()
                );
            }
        }
        if let Some((_, twin)) = shards.iter().find(|(s, _)| s.index == shard.index) {
            bail!(
                "two files for shard {shard}: {} and {}",
                twin.display(),
                path.display()
            );
        }
        shards.push((shard, path.clone()));
    }
    shards.sort_by_key(|(s, _)| s.index);
    Ok(shards)
}

fn count_record(report: &mut MergedReport, fields: &RecordFields) {
    report.records += 1;
    match fields.status.as_str() {
        "ok" => report.documents_ok += 1,
        "truncated" => {
            report.documents_ok += 1;
            report.documents_truncated += 1;
        }
        _ => report.documents_failed += 1,
    }
    report.prompt_tokens += fields.prompt_tokens;
    report.generated_tokens += fields.generated_tokens;
}

/// Adds the timings of the shard runs' reports (each must be of a merged shard).
fn add_shard_timings(report: &mut MergedReport, paths: &[PathBuf]) -> anyhow::Result<()> {
    if paths.is_empty() {
        return Ok(());
    }
    let mut by_shard: BTreeMap<u64, Value> = BTreeMap::new();
    for path in paths {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read shard report {}", path.display()))?;
        let value: Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a docanalyze report", path.display()))?;
        let shard: Shard = value
            .get("shard")
            .and_then(Value::as_str)
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("{} is the report of no shard run", path.display()))?;
        if shard.count != report.shards || !report.shards_merged.contains(&shard.index) {
            bail!(
                "{} is the report of shard {shard}, not of a merged shard",
                path.display()
            );
        }
        if by_shard.insert(shard.index, value).is_some() {
            bail!("two reports for shard {shard}");
        }
    }
    let field = |v: &Value, k: &str| v.get(k).and_then(Value::as_f64).unwrap_or(0.0);
    let sum = |k: &str| by_shard.values().map(|v| field(v, k)).sum::<f64>();
    let max = |k: &str| by_shard.values().map(|v| field(v, k)).fold(0.0, f64::max);
    let (prefill_s, decode_s, wall_s) = (sum("prefill_s"), sum("decode_s"), max("wall_s"));
    let rate = |n: f64, s: f64| if s > 0.0 { n / s } else { 0.0 };
    report.wall_s = Some(wall_s);
    report.load_s = Some(max("load_s"));
    report.prefill_s = Some(prefill_s);
    report.decode_s = Some(decode_s);
    report.prefill_tok_per_s = Some(rate(report.prompt_tokens as f64, prefill_s));
    report.decode_tok_per_s = Some(rate(report.generated_tokens as f64, decode_s));
    report.docs_per_min = Some(rate(report.records as f64 * 60.0, wall_s));
    report.peak_rss_bytes = Some(max("peak_rss_bytes") as u64);
    Ok(())
}

/// Writes records as they were read: JSONL lines byte for byte, CSV rows after one header.
enum MergedWriter<W: Write> {
    Jsonl(W),
    Csv(Box<csv::Writer<W>>),
}

impl<W: Write> MergedWriter<W> {
    fn new(out: W, header: Option<Vec<String>>) -> std::io::Result<Self> {
        Ok(match header {
            Some(header) => {
                let mut w = csv::WriterBuilder::new()
                    .has_headers(false)
                    .from_writer(out);
                w.write_record(&header)?;
                Self::Csv(Box::new(w))
            }
            None => Self::Jsonl(out),
        })
    }

    fn write(&mut self, raw: &RawRecord) -> std::io::Result<()> {
        match (self, raw) {
            (Self::Jsonl(out), RawRecord::Jsonl(line)) => out.write_all(line),
            (Self::Csv(w), RawRecord::Csv(row)) => Ok(w.write_byte_record(row)?),
            _ => Err(std::io::Error::other("records of two formats")),
        }
    }

    fn finish(self) -> std::io::Result<W> {
        match self {
            Self::Jsonl(mut out) => {
                out.flush()?;
                Ok(out)
            }
            Self::Csv(w) => (*w).into_inner().map_err(|e| e.into_error()),
        }
    }
}

/// A file beside `output`, so that the rename stays on one filesystem.
fn temporary_path(output: &Path) -> PathBuf {
    let name = output
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    output.with_file_name(format!(".{name}.merging-{}", std::process::id()))
}

fn join(indexes: &[u64]) -> String {
    indexes
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}
