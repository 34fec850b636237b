//! The timing report: a table on stderr and the JSON object of `--report`.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use crate::accuracy::Accuracy;
use crate::engine::EngineStats;
use crate::pipeline::RunSummary;

/// The keys DESIGN.md §2 promises in the JSON report (it has a few more).
pub const REPORT_KEYS: [&str; 19] = [
    "model",
    "device",
    "sequences",
    "batch_size",
    "documents_ok",
    "documents_failed",
    "wall_s",
    "load_s",
    "prompt_tokens",
    "prefill_tok_per_s",
    "generated_tokens",
    "decode_tok_per_s",
    "docs_per_min",
    "latency_p50_ms",
    "latency_p95_ms",
    "mean_active_sequences",
    "kv_bytes_per_sequence",
    "kv_bytes_total",
    "peak_rss_bytes",
];

/// Every key of [`REPORT_KEYS`], plus a few more.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub model: String,
    pub device: String,
    pub sequences: usize,
    pub batch_size: usize,
    pub ctx_size: usize,
    pub threads: usize,
    /// The shard this run processed (`I/N`, `--shard auto` resolved), or null.
    pub shard: Option<String>,
    pub documents_ok: usize,
    pub documents_truncated: usize,
    pub documents_failed: usize,
    /// Error records of documents longer than the context under `--overflow skip`.
    pub documents_skipped: usize,
    /// Documents × prompts not run because the output already held them (`--resume`).
    pub documents_already_done: usize,
    /// Documents × prompts longer than the context, read in chunks (`--overflow chunk`).
    pub documents_chunked: usize,
    /// The chunks of those documents.
    pub chunks: usize,
    /// Calls that merged chunks' free-text answers (the reduce template).
    pub reduce_calls: usize,
    pub files_skipped: usize,
    /// `SIGINT` or `SIGTERM` when a signal stopped the run before every document was read.
    pub stopped_by: Option<&'static str>,
    pub wall_s: f64,
    pub load_s: f64,
    pub prompt_tokens: usize,
    /// Prompt tokens not computed for their document: copied from the template's shared
    /// prefix, computed once (`--prefix-cache`).
    pub prompt_tokens_cached: usize,
    pub prefill_s: f64,
    pub prefill_tok_per_s: f64,
    pub generated_tokens: usize,
    pub decode_s: f64,
    pub decode_tok_per_s: f64,
    pub docs_per_min: f64,
    pub latency_p50_ms: f64,
    pub latency_p95_ms: f64,
    pub steps: usize,
    pub mean_active_sequences: f64,
    pub kv_bytes_per_sequence: usize,
    pub kv_bytes_total: usize,
    pub peak_rss_bytes: u64,
    /// Peak resident memory of the largest child process (HTML/PDF extraction); 0 if none.
    pub extract_peak_rss_bytes: u64,
    /// Per label prompt, its answers against the documents' true labels (`--gold-field`).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub accuracy: BTreeMap<String, Accuracy>,
}

/// What the report is made of besides the engine's counters.
pub struct ReportInputs<'a> {
    pub model: &'a str,
    pub device: &'a str,
    pub sequences: usize,
    pub batch_size: usize,
    pub ctx_size: usize,
    pub threads: usize,
    pub files_skipped: usize,
    pub wall: Duration,
    pub load: Duration,
    pub kv_bytes_total: usize,
    /// `--shard` as resolved (`3/16`), if any.
    pub shard: Option<String>,
}

impl RunReport {
    pub fn new(inputs: ReportInputs<'_>, stats: &EngineStats, summary: &RunSummary) -> Self {
        let mut latencies: Vec<f64> = summary
            .latencies
            .iter()
            .map(|d| d.as_secs_f64() * 1000.0)
            .collect();
        latencies.sort_by(f64::total_cmp);
        let run_s = inputs.wall.as_secs_f64();
        let done = summary.ok + summary.truncated;
        Self {
            model: inputs.model.to_string(),
            device: inputs.device.to_string(),
            sequences: inputs.sequences,
            batch_size: inputs.batch_size,
            ctx_size: inputs.ctx_size,
            threads: inputs.threads,
            shard: inputs.shard,
            documents_ok: summary.ok + summary.truncated,
            documents_truncated: summary.truncated,
            documents_failed: summary.failed,
            documents_skipped: summary.skipped,
            documents_already_done: summary.already_done,
            documents_chunked: summary.documents_chunked,
            chunks: summary.chunks,
            reduce_calls: summary.reduce_calls,
            files_skipped: inputs.files_skipped,
            stopped_by: summary.stopped_by.map(|s| s.name()),
            wall_s: run_s,
            load_s: inputs.load.as_secs_f64(),
            prompt_tokens: stats.prefill_tokens + stats.prompt_tokens_cached,
            prompt_tokens_cached: stats.prompt_tokens_cached,
            prefill_s: stats.prefill_time.as_secs_f64(),
            prefill_tok_per_s: stats.prefill_tok_per_s(),
            generated_tokens: stats.generated_tokens,
            decode_s: stats.decode_time.as_secs_f64(),
            decode_tok_per_s: stats.decode_tok_per_s(),
            docs_per_min: if run_s > 0.0 {
                done as f64 * 60.0 / run_s
            } else {
                0.0
            },
            latency_p50_ms: percentile(&latencies, 0.50),
            latency_p95_ms: percentile(&latencies, 0.95),
            steps: stats.steps,
            mean_active_sequences: stats.mean_active_sequences(),
            kv_bytes_per_sequence: inputs.kv_bytes_total / inputs.sequences.max(1),
            kv_bytes_total: inputs.kv_bytes_total,
            peak_rss_bytes: peak_rss_bytes(),
            extract_peak_rss_bytes: children_peak_rss_bytes(),
            accuracy: summary
                .confusion
                .iter()
                .map(|(prompt, c)| (prompt.clone(), c.accuracy()))
                .collect(),
        }
    }

    /// The human table, for stderr.
    pub fn table(&self) -> String {
        let mib = |b: f64| b / (1024.0 * 1024.0);
        let mut extra = String::new();
        if self.documents_skipped > 0 {
            extra += &format!(", {} too long (--overflow skip)", self.documents_skipped);
        }
        if self.documents_chunked > 0 {
            extra += &format!(
                ", {} read in {} chunks ({} reduce calls)",
                self.documents_chunked, self.chunks, self.reduce_calls
            );
        }
        if self.documents_already_done > 0 {
            extra += &format!(
                ", {} already in the output (--resume)",
                self.documents_already_done
            );
        }
        let stopped = match self.stopped_by {
            Some(signal) => format!(
                "  stopped     by {signal}: the documents in flight were finished, the rest not started\n"
            ),
            None => String::new(),
        };
        let accuracy: String = self
            .accuracy
            .iter()
            .map(|(prompt, a)| {
                let labels: Vec<String> = a
                    .labels
                    .iter()
                    .map(|(l, s)| {
                        let pct =
                            |v: Option<f64>| v.map_or("-".into(), |v| format!("{:.0}%", v * 100.0));
                        format!("{l} P {} R {}", pct(s.precision), pct(s.recall))
                    })
                    .collect();
                format!(
                    "  accuracy    {prompt}: {:.1}% ({} of {}); {}\n",
                    a.accuracy * 100.0,
                    a.correct,
                    a.documents,
                    labels.join(", ")
                )
            })
            .collect();
        format!(
            "\
docanalyze report ({model} on {device}, {seq} sequences, {threads} threads)
  documents   {ok} ok ({trunc} truncated), {failed} failed, {skipped} files skipped{extra}
{stopped}  wall        {wall:.2} s (+ {load:.2} s model load), {dpm:.1} docs/min
  prefill     {pt} tokens{cached}, {pps:.1} tok/s
  decode      {gt} tokens, {dps:.1} tok/s
  latency     p50 {p50:.0} ms, p95 {p95:.0} ms
  batching    {steps} steps, {active:.2} sequences in flight on average
  memory      KV {kv:.1} MiB ({kvs:.1} MiB per sequence), peak RSS {rss:.1} MiB
{accuracy}",
            model = self.model,
            device = self.device,
            seq = self.sequences,
            threads = self.threads,
            ok = self.documents_ok,
            trunc = self.documents_truncated,
            failed = self.documents_failed,
            skipped = self.files_skipped,
            wall = self.wall_s,
            load = self.load_s,
            dpm = self.docs_per_min,
            pt = self.prompt_tokens,
            cached = if self.prompt_tokens_cached > 0 {
                format!(
                    " ({} computed, {} reused from the shared prompt prefix)",
                    self.prompt_tokens - self.prompt_tokens_cached,
                    self.prompt_tokens_cached
                )
            } else {
                String::new()
            },
            pps = self.prefill_tok_per_s,
            gt = self.generated_tokens,
            dps = self.decode_tok_per_s,
            p50 = self.latency_p50_ms,
            p95 = self.latency_p95_ms,
            steps = self.steps,
            active = self.mean_active_sequences,
            kv = mib(self.kv_bytes_total as f64),
            kvs = mib(self.kv_bytes_per_sequence as f64),
            rss = mib(self.peak_rss_bytes as f64),
        )
    }

    pub fn write_json(&self, path: &Path) -> std::io::Result<()> {
        let json = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
        std::fs::write(path, json + "\n")
    }
}

/// Nearest-rank percentile of sorted values (0 when empty).
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Peak resident memory of this process (Linux `VmHWM`; 0 elsewhere).
pub fn peak_rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// Peak resident memory of the largest waited-for child process (0 where unknown).
#[cfg(unix)]
pub fn children_peak_rss_bytes() -> u64 {
    // SAFETY: getrusage fills the zeroed struct it is given and nothing else.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) } != 0 {
        return 0;
    }
    // Kilobytes on Linux.
    (usage.ru_maxrss.max(0) as u64) * 1024
}

#[cfg(not(unix))]
pub fn children_peak_rss_bytes() -> u64 {
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_has_every_promised_key() {
        let summary = RunSummary {
            ok: 3,
            failed: 1,
            latencies: vec![Duration::from_millis(10), Duration::from_millis(30)],
            ..RunSummary::default()
        };
        let stats = EngineStats {
            steps: 4,
            prefill_tokens: 100,
            prefill_time: Duration::from_secs(1),
            decode_tokens: 20,
            decode_time: Duration::from_secs(2),
            generated_tokens: 20,
            active_sum: 8,
            prompt_tokens_cached: 0,
        };
        let report = RunReport::new(
            ReportInputs {
                model: "m.gguf",
                device: "cpu",
                sequences: 2,
                batch_size: 512,
                ctx_size: 256,
                threads: 1,
                files_skipped: 0,
                wall: Duration::from_secs(6),
                load: Duration::from_secs(1),
                kv_bytes_total: 2048,
                shard: None,
            },
            &stats,
            &summary,
        );
        let json = serde_json::to_value(&report).expect("serializes");
        for key in REPORT_KEYS {
            assert!(json.get(key).is_some(), "missing {key}");
        }
        assert_eq!(json["documents_ok"], 3);
        assert_eq!(json["documents_failed"], 1);
        assert_eq!(json["prefill_tok_per_s"], 100.0);
        assert_eq!(json["decode_tok_per_s"], 10.0);
        assert_eq!(json["docs_per_min"], 30.0);
        assert_eq!(json["mean_active_sequences"], 2.0);
        assert_eq!(json["kv_bytes_per_sequence"], 1024);
        assert_eq!(json["latency_p95_ms"], 30.0);
    }

    #[test]
    fn percentiles_use_nearest_rank() {
        let v: Vec<f64> = (1..=20).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), 10.0);
        assert_eq!(percentile(&v, 0.95), 19.0);
        assert_eq!(percentile(&[], 0.5), 0.0);
    }
}
