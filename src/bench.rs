//! `bench`: the same jobs at several K, each through a fresh engine on the code path of `run`,
//! measured in one process, and the speedup table they make.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use serde::Serialize;

use crate::device::device_name;
use crate::engine::{Engine, EngineConfig};
use crate::input::Document;
use crate::loaded_model::LoadedModel;
use crate::output::{Record, RecordBuffer, Status};
use crate::pipeline::{label_priors, run_documents, JobSettings, RunSummary};
use crate::progress::Terminal;
use crate::prompt::PromptBuilder;
use crate::report::{ReportInputs, RunReport};

/// Everything that stays the same from one K to the next.
pub struct BenchJobs<'a> {
    pub loaded: &'a LoadedModel,
    pub builders: &'a [PromptBuilder],
    pub documents: &'a [Document],
    pub settings: JobSettings,
    pub batch_size: usize,
    pub threads: usize,
    /// The templates' shared prompt prefixes (empty with `--prefix-cache off`).
    pub prefixes: Vec<Vec<u32>>,
    /// Calibrate label answers (`--calibrate`).
    pub calibrate: bool,
}

/// One K, measured.
pub struct BenchRun {
    pub report: RunReport,
    pub records: Vec<Record>,
}

/// Runs every job with `sequences` slots and keeps the records in memory.
pub fn measure(
    jobs: &BenchJobs<'_>,
    sequences: usize,
    terminal: &Terminal,
) -> anyhow::Result<BenchRun> {
    let loaded = jobs.loaded;
    let mut engine = Engine::new(
        &loaded.model,
        EngineConfig {
            sequences,
            ctx: jobs.settings.ctx,
            batch_size: jobs.batch_size,
        },
        loaded.tokenizer.end_of_generation_ids(),
    )?;
    engine.set_prefixes(jobs.prefixes.clone());
    let mut settings = jobs.settings.clone();
    if jobs.calibrate {
        settings.priors =
            label_priors(&mut engine, &loaded.tokenizer, jobs.builders, settings.ctx)?;
    }
    let mut buffer = RecordBuffer::default();
    let total = jobs.documents.len() * jobs.builders.len();
    let mut progress = terminal.progress(Some(total), "records", &format!("K={sequences}"));
    let started = Instant::now();
    let summary: RunSummary = run_documents(
        &mut engine,
        &loaded.tokenizer,
        jobs.builders,
        jobs.documents.iter().cloned(),
        settings,
        &mut buffer,
        &mut progress,
    )?;
    let wall = started.elapsed();
    progress.finish();
    tracing::info!(
        "K={sequences}: {} records in {:.2} s",
        summary.records(),
        wall.as_secs_f64()
    );
    let report = RunReport::new(
        ReportInputs {
            model: &loaded.path.display().to_string(),
            device: device_name(&loaded.device),
            sequences,
            batch_size: jobs.batch_size,
            ctx_size: jobs.settings.ctx,
            threads: jobs.threads,
            files_skipped: 0,
            wall,
            load: loaded.load_time,
            kv_bytes_total: engine.cache_bytes(),
            shard: None,
        },
        &engine.stats,
        &summary,
    );
    Ok(BenchRun {
        report,
        records: buffer.records,
    })
}

/// One line of the table.
#[derive(Debug, Clone, Serialize)]
pub struct BenchRow {
    pub sequences: usize,
    pub wall_s: f64,
    pub docs_per_min: f64,
    pub prefill_tok_per_s: f64,
    pub decode_tok_per_s: f64,
    pub mean_active_sequences: f64,
    /// Wall time of the first K over this one's.
    pub speedup: f64,
    pub prompt_tokens: usize,
    pub generated_tokens: usize,
    pub latency_p50_ms: f64,
    pub latency_p95_ms: f64,
    pub documents_ok: usize,
    pub documents_failed: usize,
    pub kv_bytes_total: usize,
    pub peak_rss_bytes: u64,
    /// Per label prompt, the share answered right (`--gold-field`).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub accuracy: BTreeMap<String, f64>,
}

/// The table and what it was measured on: the JSON of `bench --report`.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub model: String,
    pub device: String,
    pub threads: usize,
    pub batch_size: usize,
    pub ctx_size: usize,
    pub max_tokens: usize,
    pub documents: usize,
    pub prompts: usize,
    /// Every K produced the same records (status, output, stop reason) for every job.
    pub outputs_identical: bool,
    pub rows: Vec<BenchRow>,
}

impl BenchReport {
    pub fn new(jobs: &BenchJobs<'_>, runs: &[BenchRun]) -> Self {
        let first_wall = runs.first().map_or(0.0, |r| r.report.wall_s);
        let rows = runs
            .iter()
            .map(|run| {
                let r = &run.report;
                BenchRow {
                    sequences: r.sequences,
                    wall_s: r.wall_s,
                    docs_per_min: r.docs_per_min,
                    prefill_tok_per_s: r.prefill_tok_per_s,
                    decode_tok_per_s: r.decode_tok_per_s,
                    mean_active_sequences: r.mean_active_sequences,
                    speedup: if r.wall_s > 0.0 {
                        first_wall / r.wall_s
                    } else {
                        0.0
                    },
                    prompt_tokens: r.prompt_tokens,
                    generated_tokens: r.generated_tokens,
                    latency_p50_ms: r.latency_p50_ms,
                    latency_p95_ms: r.latency_p95_ms,
                    documents_ok: r.documents_ok,
                    documents_failed: r.documents_failed,
                    kv_bytes_total: r.kv_bytes_total,
                    peak_rss_bytes: r.peak_rss_bytes,
                    accuracy: r
                        .accuracy
                        .iter()
                        .map(|(prompt, a)| (prompt.clone(), a.accuracy))
                        .collect(),
                }
            })
            .collect();
        let outcomes: Vec<_> = runs.iter().map(|r| outcomes_by_job(&r.records)).collect();
        Self {
            model: jobs.loaded.path.display().to_string(),
            device: device_name(&jobs.loaded.device).to_string(),
            threads: jobs.threads,
            batch_size: jobs.batch_size,
            ctx_size: jobs.settings.ctx,
            max_tokens: jobs.settings.max_tokens,
            documents: jobs.documents.len(),
            prompts: jobs.builders.len(),
            outputs_identical: outcomes.windows(2).all(|w| w[0] == w[1]),
            rows,
        }
    }

    pub fn documents_failed(&self) -> usize {
        self.rows.iter().map(|r| r.documents_failed).sum()
    }

    /// The table, for stdout.
    pub fn table(&self) -> String {
        let mut out = format!(
            "docanalyze bench: {} documents × {} prompt{}, {} on {}, {} threads, ctx {}, batch {}, max tokens {}\n",
            self.documents,
            self.prompts,
            if self.prompts == 1 { "" } else { "s" },
            self.model,
            self.device,
            self.threads,
            self.ctx_size,
            self.batch_size,
            self.max_tokens
        );
        out.push_str(&format!(
            "{:>4}  {:>8}  {:>8}  {:>13}  {:>12}  {:>11}  {:>7}\n",
            "K", "wall s", "docs/min", "prefill tok/s", "decode tok/s", "mean active", "speedup"
        ));
        for r in &self.rows {
            let accuracy: String = r
                .accuracy
                .iter()
                .map(|(prompt, a)| format!("  {prompt} accuracy {:.1}%", a * 100.0))
                .collect();
            out.push_str(&format!(
                "{:>4}  {:>8.2}  {:>8.1}  {:>13.1}  {:>12.1}  {:>11.2}  {:>6.2}x{accuracy}\n",
                r.sequences,
                r.wall_s,
                r.docs_per_min,
                r.prefill_tok_per_s,
                r.decode_tok_per_s,
                r.mean_active_sequences,
                r.speedup
            ));
        }
        out.push_str(&format!(
            "outputs identical across K: {}\n",
            if self.outputs_identical { "yes" } else { "no" }
        ));
        out
    }

    pub fn write_json(&self, path: &Path) -> std::io::Result<()> {
        let json = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
        std::fs::write(path, json + "\n")
    }
}

/// What must not depend on K, per job (id, source, prompt); latencies and order may.
type Outcomes = BTreeMap<(String, String, String), (Status, String, String)>;

fn outcomes_by_job(records: &[Record]) -> Outcomes {
    records
        .iter()
        .map(|r| {
            (
                (r.id.clone(), r.source.clone(), r.prompt.clone()),
                (r.status, r.output.clone(), r.stop_reason.clone()),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, output: &str) -> Record {
        Record {
            output: output.to_string(),
            status: Status::Ok,
            stop_reason: "eos".into(),
            ..Record::error(id, id, "summarize", String::new())
        }
    }

    #[test]
    fn outcomes_ignore_completion_order() {
        let a = [record("a", "x"), record("b", "y")];
        let b = [record("b", "y"), record("a", "x")];
        assert_eq!(outcomes_by_job(&a), outcomes_by_job(&b));
        let c = [record("b", "y"), record("a", "z")];
        assert_ne!(outcomes_by_job(&a), outcomes_by_job(&c));
    }
}
