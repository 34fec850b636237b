//! README promises through the binary, on the tiny synthetic model (fast): whole records at every
//! K over long prompts and generations, sampling reproducible from the seed, the device and format
//! flags, a full disk, template failures as error records, the report's skipped and
//! already-done counts, resume with several prompts, stdin with named fields, `--system`, a
//! template file and `-q`.

mod cli_support;

use std::collections::BTreeMap;
use std::path::Path;

use cli_support::{stderr_of, Workspace};
use serde_json::Value;

fn records(bytes: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(bytes)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}")))
        .collect()
}

/// Each record without its timing, keyed by (id, prompt).
fn by_job(records: &[Value]) -> BTreeMap<(String, String), Value> {
    records
        .iter()
        .map(|r| {
            let mut r = r.clone();
            r.as_object_mut().unwrap().remove("latency_ms");
            let key = (
                r["id"].as_str().unwrap().to_string(),
                r["prompt"].as_str().unwrap().to_string(),
            );
            (key, r)
        })
        .collect()
}

/// The tiny model over its whole context (512 positions), one thread; `--max-tokens` is the
/// caller's.
fn run_long(ws: &Workspace) -> assert_cmd::Command {
    let mut cmd = cli_support::docanalyze();
    cmd.args(["run", "--ctx-size", "512", "--threads", "1", "--model"])
        .arg(&ws.model);
    cmd
}

/// Runs the tiny model on `input` with `args`, records on stdout; asserts exit 0.
fn run_ok(ws: &Workspace, input: &Path, args: &[&str]) -> Vec<Value> {
    let out = run_long(ws).arg(input).args(args).output().unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    records(&out.stdout)
}

/// Documents of 20 to 190 bytes: with the byte-level tokenizer their prompts and 200 generated
/// tokens cross the 256-key spans of decode attention at different steps.
fn uneven_docs(ws: &Workspace) -> std::path::PathBuf {
    let dir = ws.path("uneven");
    std::fs::create_dir_all(&dir).unwrap();
    for i in 0..12 {
        let text: String = (0..3 + i * 2).map(|w| format!("w{w}x{i} ")).collect();
        std::fs::write(dir.join(format!("d{i:02}.txt")), text).unwrap();
    }
    dir
}

#[test]
fn every_k_writes_the_whole_records_of_sequential() {
    let ws = Workspace::new();
    let docs = uneven_docs(&ws);
    let args = ["--max-tokens", "200", "--ignore-eos", "--batch-size", "64"];
    let sequential = by_job(&run_ok(
        &ws,
        &docs,
        &[&args[..], &["--sequential"]].concat(),
    ));
    assert_eq!(sequential.len(), 12);
    assert!(sequential
        .values()
        .all(|r| r["generated_tokens"] == 200 && r["prompt_tokens"].as_u64().unwrap() > 40));
    assert!(sequential
        .values()
        .any(|r| r["prompt_tokens"].as_u64().unwrap() + 200 > 256 + 40));
    for k in ["3", "8", "16"] {
        let batched = by_job(&run_ok(
            &ws,
            &docs,
            &[&args[..], &["--sequences", k]].concat(),
        ));
        assert_eq!(batched, sequential, "--sequences {k}");
    }
}

#[test]
fn sampled_output_is_reproducible_from_the_seed_whatever_k() {
    let ws = Workspace::new();
    let docs = uneven_docs(&ws);
    let sampled = |seed: &str, k: &str| {
        by_job(&run_ok(
            &ws,
            &docs,
            &[
                "--temperature",
                "0.9",
                "--top-k",
                "40",
                "--top-p",
                "0.95",
                "--max-tokens",
                "24",
                "--seed",
                seed,
                "--sequences",
                k,
            ],
        ))
    };
    let a = sampled("5", "1");
    assert_eq!(a, sampled("5", "8"));
    assert_eq!(a, sampled("5", "3"));
    assert_ne!(a, sampled("6", "8"), "another seed, other samples");
}

#[test]
fn device_and_format_flags_are_checked() {
    let ws = Workspace::new();
    let docs = ws.docs("docs", 1);
    let fails = |args: &[&str], names: &[&str]| {
        let out = ws.run().arg(&docs).args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr_of(&out));
        let stderr = stderr_of(&out);
        for name in names {
            assert!(stderr.contains(name), "{args:?}: {stderr}");
        }
    };
    fails(&["--format", "xml"], &["--format"]);
    fails(&["--device", "tpu"], &["--device"]);
    #[cfg(not(feature = "cuda"))]
    fails(&["--device", "cuda"], &["--device cuda", "cuda"]);
    #[cfg(not(feature = "metal"))]
    fails(&["--device", "metal"], &["--device metal"]);
}

#[cfg(target_os = "linux")]
#[test]
fn a_full_disk_exits_2_naming_the_output() {
    let ws = Workspace::new();
    let docs = ws.docs("docs", 3);
    let out = ws
        .run()
        .arg(&docs)
        .args(["-o", "/dev/full"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr_of(&out));
    let stderr = stderr_of(&out);
    assert!(stderr.contains("writing the output"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn template_failures_are_the_documents_error_records() {
    let ws = Workspace::new();
    let docs = ws.docs("docs", 2);
    std::fs::write(docs.join("boom.txt"), "this one says boom").unwrap();
    let picky = ws.path("picky.j2");
    std::fs::write(
        &picky,
        "{% if 'boom' in document %}{{ raise_exception('no booms here') }}{% endif %}Title?\n\n{{ document }}",
    )
    .unwrap();
    let out = ws
        .run()
        .arg(&docs)
        .arg("--prompt")
        .arg(&picky)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    let written = records(&out.stdout);
    assert_eq!(written.len(), 3);
    for r in &written {
        if r["id"] == "boom.txt" {
            assert_eq!(r["status"], "error");
            assert!(
                r["error"].as_str().unwrap().contains("no booms here"),
                "{r}"
            );
        } else {
            assert_eq!(r["status"], "ok", "{r}");
        }
    }

    // A template longer than the context (512 byte-tokens) alone: every document's error.
    let long = ws.path("long.j2");
    std::fs::write(
        &long,
        format!("{}\n\n{{{{ document }}}}", "Read. ".repeat(120)),
    )
    .unwrap();
    let out = ws
        .run()
        .arg(&docs)
        .arg("--prompt")
        .arg(&long)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    let records = records(&out.stdout);
    assert_eq!(records.len(), 3);
    for r in &records {
        assert_eq!(r["status"], "error", "{r}");
        assert!(r["error"].as_str().unwrap().contains("but only"), "{r}");
    }
}

#[test]
fn the_report_counts_skipped_and_already_done_documents() {
    let ws = Workspace::new();
    let docs = ws.docs("docs", 3);
    std::fs::write(docs.join("long.txt"), "many words ".repeat(100)).unwrap();
    let out_file = ws.path("out.jsonl");
    let report = ws.path("report.json");
    let run = |extra: &[&str]| {
        let out = ws
            .run()
            .arg(&docs)
            .arg("-o")
            .arg(&out_file)
            .arg("--report")
            .arg(&report)
            .args(["--overflow", "skip"])
            .args(extra)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr_of(&out));
        serde_json::from_str::<Value>(&std::fs::read_to_string(&report).unwrap()).unwrap()
    };
    let first = run(&[]);
    assert_eq!(first["documents_skipped"], 1, "{first}");
    assert_eq!(first["documents_ok"], 3);
    assert_eq!(first["documents_already_done"], 0);
    let again = run(&["--resume"]);
    // The skipped document's error record is retried (and skipped again); the rest are done.
    assert_eq!(again["documents_already_done"], 3, "{again}");
    assert_eq!(again["documents_skipped"], 1);
    assert_eq!(again["documents_ok"], 0);
}

#[test]
fn resume_with_several_prompts_runs_only_the_missing_pairs() {
    let ws = Workspace::new();
    let docs = ws.docs("docs", 4);
    let out_file = ws.path("out.jsonl");
    let run = |extra: &[&str]| {
        let out = ws
            .run()
            .arg(&docs)
            .args(["--prompt", "summarize", "--prompt", "sentiment", "-o"])
            .arg(&out_file)
            .args(extra)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr_of(&out));
    };
    run(&[]);
    let full = std::fs::read_to_string(&out_file).unwrap();
    assert_eq!(full.lines().count(), 8);
    // Keep the first three records: the other pairs are missing.
    let kept: String = full.lines().take(3).map(|l| format!("{l}\n")).collect();
    std::fs::write(&out_file, &kept).unwrap();
    run(&["--resume"]);
    let after = std::fs::read_to_string(&out_file).unwrap();
    assert!(after.starts_with(&kept));
    let all = records(after.as_bytes());
    assert_eq!(all.len(), 8, "{after}");
    assert_eq!(by_job(&all), by_job(&records(full.as_bytes())));
}

#[test]
fn stdin_fields_system_template_file_and_quiet() {
    let ws = Workspace::new();
    let template = ws.path("title.j2");
    std::fs::write(&template, "Title of {{ id }}?\n\n{{ document }}").unwrap();
    let input = "{\"key\": \"k1\", \"body\": \"Whales and ships.\"}\n{\"key\": \"k2\", \"body\": \"The sea.\"}\n";
    let run = |extra: &[&str]| {
        let out = ws
            .run()
            .arg("-")
            .args([
                "--text-field",
                "body",
                "--id-field",
                "key",
                "-q",
                "--prompt",
            ])
            .arg(&template)
            .args(extra)
            .write_stdin(input)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr_of(&out));
        assert!(out.stderr.is_empty(), "-q: {}", stderr_of(&out));
        records(&out.stdout)
    };
    let plain = run(&[]);
    let ids: Vec<&str> = plain.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["k1", "k2"]);
    assert_eq!(plain[0]["source"], "stdin:1");
    assert_eq!(plain[0]["prompt"], template.display().to_string());
    // The system message is in the prompt: its turn is 3 control and newline tokens and its
    // bytes (the byte-level tokenizer).
    let system = run(&["--system", "Be brief."]);
    for (p, s) in plain.iter().zip(&system) {
        let added = s["prompt_tokens"].as_u64().unwrap() - p["prompt_tokens"].as_u64().unwrap();
        assert_eq!(added, ("system\nBe brief.".len() + 3) as u64);
    }
}

#[test]
fn an_output_inside_an_input_folder_is_refused_before_anything_is_read() {
    let ws = Workspace::new();
    let docs = ws.docs("docs", 2);
    let inside = docs.join("results.csv");
    let out = ws.run().arg(&docs).arg("-o").arg(&inside).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr_of(&out));
    assert!(
        stderr_of(&out).contains("is inside the input folder"),
        "{}",
        stderr_of(&out)
    );
    assert!(!inside.exists(), "nothing was written");
    let jsonl = ws.jsonl("tickets.jsonl", 2);
    let out = ws.run().arg(&jsonl).arg("-o").arg(&jsonl).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr_of(&out).contains("is also an input"));
    assert_eq!(std::fs::read_to_string(&jsonl).unwrap().lines().count(), 2);
}

/// A tokenizer.json for the tiny model's vocabulary without its merges: every byte one token.
fn merge_free_tokenizer_json(path: &Path) {
    use docanalyze::model::synthetic::{byte_level_chars, ENDOFTEXT_ID, IM_END_ID, IM_START_ID};
    use tokenizers::models::bpe::BPE;
    use tokenizers::pre_tokenizers::byte_level::ByteLevel;
    use tokenizers::AddedToken;
    let vocab: std::collections::HashMap<String, u32> = byte_level_chars()
        .iter()
        .enumerate()
        .map(|(i, c)| (c.to_string(), i as u32))
        .chain([
            ("<|endoftext|>".to_string(), ENDOFTEXT_ID),
            ("<|im_start|>".to_string(), IM_START_ID),
            ("<|im_end|>".to_string(), IM_END_ID),
        ])
        .collect();
    let bpe = BPE::builder()
        .vocab_and_merges(
            vocab
                .into_iter()
                .collect::<tokenizers::models::bpe::Vocab>(),
            Vec::new(),
        )
        .build()
        .unwrap();
    let mut tokenizer = tokenizers::Tokenizer::new(bpe);
    tokenizer.with_pre_tokenizer(Some(ByteLevel::new(false, false, true)));
    tokenizer.with_decoder(Some(tokenizers::decoders::byte_level::ByteLevel::default()));
    let _ = tokenizer.add_special_tokens(vec![
        AddedToken::from("<|endoftext|>", true),
        AddedToken::from("<|im_start|>", true),
        AddedToken::from("<|im_end|>", true),
    ]);
    tokenizer.save(path, false).unwrap();
}

#[test]
fn a_tokenizer_file_replaces_the_models_tokenizer() {
    let ws = Workspace::new();
    let dir = ws.path("the");
    std::fs::create_dir_all(&dir).unwrap();
    // " the", "he", "in", "er": the model's merges make these fewer tokens.
    std::fs::write(dir.join("a.txt"), "the other in the winter there").unwrap();
    let json = ws.path("tokenizer.json");
    merge_free_tokenizer_json(&json);
    let prompt_tokens = |extra: &[&str]| {
        let out = ws.run().arg(&dir).args(extra).output().unwrap();
        assert!(out.status.success(), "{}", stderr_of(&out));
        records(&out.stdout)[0]["prompt_tokens"].as_u64().unwrap()
    };
    let own = prompt_tokens(&[]);
    let json_arg = json.display().to_string();
    let replaced = prompt_tokens(&["--tokenizer", &json_arg]);
    assert!(
        replaced > own,
        "{replaced} tokens with the file, {own} without"
    );
}

#[test]
fn a_chat_template_file_replaces_the_models() {
    let ws = Workspace::new();
    let docs = ws.docs("docs", 2);
    let plain = ws.path("plain.jinja");
    // No markup at all: the prompt is the user message and a cue, byte for byte.
    std::fs::write(
        &plain,
        "{% for m in messages %}{{ m.content }}\n{% endfor %}Answer: ",
    )
    .unwrap();
    let prompt_tokens = |extra: &[&str]| -> Vec<u64> {
        let out = ws.run().arg(&docs).args(extra).output().unwrap();
        assert!(out.status.success(), "{}", stderr_of(&out));
        records(&out.stdout)
            .iter()
            .map(|r| r["prompt_tokens"].as_u64().unwrap())
            .collect()
    };
    let own = prompt_tokens(&[]);
    let path = plain.display().to_string();
    let replaced = prompt_tokens(&["--chat-template", &path]);
    // ChatML wraps the message in `<|im_start|>user\n…<|im_end|>\n<|im_start|>assistant\n`:
    // 1 + 4 (`u` `s` `er` `\n`) + 1 + 1 + 1 + 10 = 18 tokens of the tiny vocabulary; this one in
    // `\nAnswer: `: 1 + 7 (`er` merged) = 8.
    for (o, r) in own.iter().zip(&replaced) {
        assert_eq!(o - r, 18 - 8, "{own:?} {replaced:?}");
    }

    let broken = ws.path("broken.jinja");
    std::fs::write(&broken, "{{ raise_exception('not for this model') }}").unwrap();
    let out = ws
        .run()
        .arg(&docs)
        .arg("--chat-template")
        .arg(&broken)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = stderr_of(&out);
    assert!(
        stderr.contains("--chat-template") && stderr.contains("broken.jinja"),
        "{stderr}"
    );
    let out = ws
        .run()
        .arg(&docs)
        .args(["--chat-template", "no-such.jinja"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr_of(&out).contains("no-such.jinja"));
}
