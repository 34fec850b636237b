//! Many machines: `--shard auto` from the schedulers' variables, one writer per output, and
//! `merge` joining shard outputs into one result with every document exactly once — including
//! a Kubernetes Indexed Job played out by processes, one of them killed and rerun.

mod cli_support;

use std::path::{Path, PathBuf};
use std::process::{Command as StdCommand, Stdio};
use std::time::{Duration, Instant};

use cli_support::{stderr_of, Workspace};
use docanalyze::output::lock::OutputLock;

/// `(id, status, output)` of every record of a JSONL text, sorted.
fn outcomes(jsonl: &str) -> Vec<(String, String, String)> {
    let mut v: Vec<_> = jsonl
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let r: serde_json::Value = serde_json::from_str(l).expect("json record");
            let s = |k: &str| r[k].as_str().unwrap_or_default().to_string();
            (s("id"), s("status"), s("output"))
        })
        .collect();
    v.sort();
    v
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The tiny model's run over `docs` without shards: the reference.
fn single_run(ws: &Workspace, docs: &Path) -> Vec<(String, String, String)> {
    let out = ws.path("single.jsonl");
    let status = ws
        .run()
        .arg(docs)
        .arg("-o")
        .arg(&out)
        .output()
        .expect("runs");
    assert!(status.status.success(), "{}", stderr_of(&status));
    outcomes(&read(&out))
}

/// Shard `index` of `count` with `--shard I/N`, output and report named by `{shard}`.
fn shard_run(ws: &Workspace, docs: &Path, index: u64, count: u64) {
    let out = ws
        .run()
        .arg(docs)
        .args(["--shard", &format!("{index}/{count}")])
        .arg("-o")
        .arg(ws.path("out/results-{shard}.jsonl"))
        .arg("--report")
        .arg(ws.path("out/report-{shard}.json"))
        .output()
        .expect("runs");
    assert!(out.status.success(), "{}", stderr_of(&out));
}

fn shard_file(ws: &Workspace, index: u64, count: u64, ext: &str) -> PathBuf {
    ws.path(&format!("out/results-{index:05}-of-{count:05}.{ext}"))
}

fn merge(ws: &Workspace, args: &[&str], shards: &[PathBuf]) -> std::process::Output {
    cli_support::docanalyze()
        .arg("merge")
        .arg(ws.path("merged.jsonl"))
        .args(shards)
        .args(args)
        .output()
        .expect("runs")
}

#[test]
fn shard_auto_reads_each_scheduler_and_refuses_to_guess() {
    let ws = Workspace::new();
    let docs = ws.docs("docs", 4);
    let envs: [&[(&str, &str)]; 4] = [
        &[
            ("SLURM_ARRAY_TASK_ID", "1"),
            ("SLURM_ARRAY_TASK_COUNT", "3"),
            ("SLURM_ARRAY_TASK_MIN", "0"),
            ("SLURM_ARRAY_TASK_MAX", "2"),
        ],
        &[
            ("JOB_COMPLETION_INDEX", "1"),
            ("DOCANALYZE_SHARD_COUNT", "3"),
        ],
        &[
            ("AWS_BATCH_JOB_ARRAY_INDEX", "1"),
            ("AWS_BATCH_JOB_ARRAY_SIZE", "3"),
        ],
        &[("BATCH_TASK_INDEX", "1"), ("BATCH_TASK_COUNT", "3")],
    ];
    for env in envs {
        let report = ws.path("report-{shard}.json");
        let out = ws
            .run()
            .envs(env.iter().copied())
            .arg(&docs)
            .args(["--shard", "auto", "-q", "--report"])
            .arg(&report)
            .output()
            .expect("runs");
        assert!(out.status.success(), "{env:?}: {}", stderr_of(&out));
        let written = ws.path("report-00001-of-00003.json");
        let json: serde_json::Value = serde_json::from_str(&read(&written)).expect("report");
        assert_eq!(json["shard"], "1/3", "{env:?}");
        std::fs::remove_file(written).expect("remove");
    }
    let none = ws
        .run()
        .arg(&docs)
        .args(["--shard", "auto"])
        .output()
        .expect("runs");
    assert_eq!(none.status.code(), Some(2));
    assert!(stderr_of(&none).contains("no scheduler's array-task variables"));
    let disagree = ws
        .run()
        .envs([("BATCH_TASK_INDEX", "0"), ("BATCH_TASK_COUNT", "3")])
        .envs([
            ("AWS_BATCH_JOB_ARRAY_INDEX", "1"),
            ("AWS_BATCH_JOB_ARRAY_SIZE", "3"),
        ])
        .arg(&docs)
        .args(["--shard", "auto"])
        .output()
        .expect("runs");
    assert_eq!(disagree.status.code(), Some(2));
    assert!(
        stderr_of(&disagree).contains("disagree"),
        "{}",
        stderr_of(&disagree)
    );
    let no_shard = ws
        .run()
        .arg(&docs)
        .arg("-o")
        .arg(ws.path("r-{shard}.jsonl"))
        .output()
        .expect("runs");
    assert_eq!(no_shard.status.code(), Some(2));
    assert!(stderr_of(&no_shard).contains("{shard} but no --shard"));
}

#[test]
fn a_second_writer_on_the_same_output_stops_at_once() {
    let ws = Workspace::new();
    let out = ws.path("out.jsonl");
    // The first run reads stdin, held open: it keeps the output locked until stdin closes.
    let mut first = StdCommand::new(assert_cmd::cargo::cargo_bin("docanalyze"))
        .args(ws.run_args())
        .args(["-", "-q", "-o"])
        .arg(&out)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawns");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !out.exists() || !docanalyze::output::lock::is_being_written(&out).unwrap_or(false) {
        assert!(
            Instant::now() < deadline,
            "the first run never locked its output"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let started = Instant::now();
    let second = ws
        .run()
        .arg(ws.docs("docs", 1))
        .arg("-o")
        .arg(&out)
        .arg("--resume")
        .output()
        .expect("runs");
    assert_eq!(second.status.code(), Some(2));
    assert!(
        stderr_of(&second).contains("is being written by another docanalyze run"),
        "{}",
        stderr_of(&second)
    );
    assert!(started.elapsed() < Duration::from_secs(30));
    {
        use std::io::Write;
        let mut stdin = first.stdin.take().expect("stdin");
        writeln!(stdin, r#"{{"id": "a", "text": "One short document."}}"#).expect("write");
    }
    let status = first.wait().expect("waits");
    assert!(status.success());
    assert_eq!(outcomes(&read(&out)).len(), 1);
}

#[test]
fn merged_shards_equal_a_single_run() {
    let ws = Workspace::new();
    let docs = ws.docs("docs", 12);
    let single = single_run(&ws, &docs);
    std::fs::create_dir_all(ws.path("out")).expect("mkdir");
    for i in 0..3 {
        shard_run(&ws, &docs, i, 3);
    }
    let shards: Vec<PathBuf> = (0..3).map(|i| shard_file(&ws, i, 3, "jsonl")).collect();
    let reports: Vec<PathBuf> = (0..3)
        .map(|i| ws.path(&format!("out/report-{i:05}-of-00003.json")))
        .collect();
    let merged_report = ws.path("merged-report.json");
    let mut args = vec!["--report".to_string(), merged_report.display().to_string()];
    args.push("--shard-reports".into());
    args.extend(reports.iter().map(|p| p.display().to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = merge(&ws, &args, &shards);
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert_eq!(outcomes(&read(&ws.path("merged.jsonl"))), single);
    let report: serde_json::Value = serde_json::from_str(&read(&merged_report)).expect("json");
    assert_eq!(report["records"], 12);
    assert_eq!(report["documents_ok"], 12);
    assert_eq!(report["shards_merged"], serde_json::json!([0, 1, 2]));
    assert!(report["wall_s"].as_f64().expect("wall") > 0.0);
    assert!(report["decode_tok_per_s"].as_f64().expect("rate") > 0.0);

    // A missing shard is refused, or listed with --allow-partial.
    let refused = merge(&ws, &[], &shards[..2]);
    assert_eq!(refused.status.code(), Some(2));
    assert!(
        stderr_of(&refused).contains("shard 2 of 3 is missing"),
        "{}",
        stderr_of(&refused)
    );
    let partial_report = ws.path("partial.json");
    let partial = merge(
        &ws,
        &[
            "--allow-partial",
            "--report",
            &partial_report.display().to_string(),
        ],
        &shards[..2],
    );
    assert!(partial.status.success(), "{}", stderr_of(&partial));
    let report: serde_json::Value = serde_json::from_str(&read(&partial_report)).expect("json");
    assert_eq!(report["missing_shards"], serde_json::json!([2]));

    // A shard of another run: the right name, records of another shard.
    let foreign = ws.path("out/results-00002-of-00003.jsonl.foreign.jsonl");
    std::fs::copy(&shards[1], &foreign).expect("copy");
    let renamed = ws.path("elsewhere/results-00002-of-00003.jsonl");
    std::fs::create_dir_all(renamed.parent().expect("parent")).expect("mkdir");
    std::fs::rename(&foreign, &renamed).expect("rename");
    let out = merge(&ws, &[], &[shards[0].clone(), shards[1].clone(), renamed]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr_of(&out).contains("belongs to another shard"),
        "{}",
        stderr_of(&out)
    );

    // Shards of another N, the same shard twice, and a shard still being written.
    let other_n = ws.path("elsewhere/results-00001-of-00004.jsonl");
    std::fs::write(&other_n, "").expect("write");
    let out = merge(&ws, &[], &[shards[0].clone(), other_n]);
    assert!(
        stderr_of(&out).contains("shards of different runs"),
        "{}",
        stderr_of(&out)
    );
    let out = merge(&ws, &[], &[shards[0].clone(), shards[0].clone()]);
    assert!(
        stderr_of(&out).contains("two files for shard"),
        "{}",
        stderr_of(&out)
    );
    let mut held = OutputLock::acquire(&shards[2]).expect("lock");
    held.keep();
    let out = merge(&ws, &[], &shards);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr_of(&out).contains("still being written"),
        "{}",
        stderr_of(&out)
    );
    drop(held);
    assert!(merge(&ws, &[], &shards).status.success());
}

#[test]
fn the_last_attempt_of_a_document_wins_and_csv_has_one_header() {
    let ws = Workspace::new();
    let header = "id,source,prompt,status,output,stop_reason,prompt_tokens,generated_tokens,latency_ms,error\n";
    // Ids chosen for their shards of 2 (checked by merge itself).
    let shard_of = |id: &str| {
        (0..2)
            .find(|&i| docanalyze::shard::Shard { index: i, count: 2 }.contains(id))
            .expect("a shard")
    };
    let ids: Vec<String> = (0..8).map(|i| format!("doc-{i}.txt")).collect();
    let mut files = [header.to_string(), header.to_string()];
    for id in &ids {
        let file = &mut files[shard_of(id) as usize];
        // A failed attempt, then the result, then (an impossible but harmless order) another
        // failure: the result wins whatever the order.
        file.push_str(&format!("{id},{id},summarize,error,,,0,0,0,first try\n"));
        file.push_str(&format!("{id},{id},summarize,ok,answer {id},eos,10,2,5,\n"));
        file.push_str(&format!("{id},{id},summarize,error,,,0,0,0,late failure\n"));
    }
    std::fs::create_dir_all(ws.path("out")).expect("mkdir");
    let shards: Vec<PathBuf> = (0..2).map(|i| shard_file(&ws, i, 2, "csv")).collect();
    for (path, text) in shards.iter().zip(&files) {
        std::fs::write(path, text).expect("write");
    }
    let merged = ws.path("merged.csv");
    let out = cli_support::docanalyze()
        .arg("merge")
        .arg(&merged)
        .args(&shards)
        .output()
        .expect("runs");
    assert!(out.status.success(), "{}", stderr_of(&out));
    let text = read(&merged);
    assert_eq!(text.matches("id,source,prompt").count(), 1, "{text}");
    let mut rows: Vec<&str> = text.lines().skip(1).collect();
    rows.sort_unstable();
    let mut expected: Vec<String> = ids
        .iter()
        .map(|id| format!("{id},{id},summarize,ok,answer {id},eos,10,2,5,"))
        .collect();
    expected.sort_unstable();
    assert_eq!(rows, expected);
    // Nothing temporary is left beside the output.
    let leftovers: Vec<_> = std::fs::read_dir(ws.dir.path())
        .expect("list")
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().contains(".merging-"))
        .collect();
    assert!(leftovers.is_empty());
}

/// A Kubernetes Indexed Job played by processes: each pod gets JOB_COMPLETION_INDEX and the
/// count, runs `--shard auto --resume` on its shard's file; one pod is SIGKILLed mid-run and
/// rerun with the same index (podReplacementPolicy: Failed). The merge holds every document
/// exactly once, as a single run would have written it.
#[cfg(unix)]
#[test]
fn an_indexed_job_with_a_killed_pod_merges_to_the_single_run() {
    let ws = Workspace::new();
    let docs = ws.docs("docs", 24);
    let single = single_run(&ws, &docs);
    std::fs::create_dir_all(ws.path("out")).expect("mkdir");
    let pod = |index: u64| {
        StdCommand::new(assert_cmd::cargo::cargo_bin("docanalyze"))
            .args(ws.run_args())
            .arg(&docs)
            .args([
                "--shard",
                "auto",
                "--resume",
                "--sequences",
                "1",
                "-q",
                "-o",
            ])
            .arg(ws.path("out/results-{shard}.jsonl"))
            .env("JOB_COMPLETION_INDEX", index.to_string())
            .env("DOCANALYZE_SHARD_COUNT", "3")
            .env_remove("DOCANALYZE_MODEL")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawns")
    };
    // Pod 1 is killed once it has written a record but not all of them.
    let victim_file = shard_file(&ws, 1, 3, "jsonl");
    let mut victim = pod(1);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let written = std::fs::read_to_string(&victim_file).unwrap_or_default();
        if written.lines().count() >= 1 || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    victim.kill().expect("SIGKILL");
    victim.wait().expect("reaped");
    let before = outcomes(&read(&victim_file)).len();
    let others: Vec<_> = [0, 2].into_iter().map(pod).collect();
    let rerun = pod(1).wait().expect("rerun");
    assert!(rerun.success());
    for mut other in others {
        assert!(other.wait().expect("waits").success());
    }
    let after = outcomes(&read(&victim_file)).len();
    eprintln!("killed pod had written {before} records; its rerun finished the shard ({after})");
    let shards: Vec<PathBuf> = (0..3).map(|i| shard_file(&ws, i, 3, "jsonl")).collect();
    let out = merge(&ws, &[], &shards);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let merged = outcomes(&read(&ws.path("merged.jsonl")));
    assert_eq!(
        merged, single,
        "every document exactly once, as a single run wrote it"
    );
}
