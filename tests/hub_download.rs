//! `--model hf:OWNER/REPO/FILE.gguf` against a local HTTP server standing in for the Hugging
//! Face Hub (`HF_ENDPOINT`; the Hub itself is not reachable here). It answers as the Hub does
//! for an LFS file: a `Range: bytes=0-0` probe with the commit, the sha256 etag and the size,
//! then the bytes from the requested offset. It can drop the connection half-way through a
//! body, or send other bytes than the etag says.
//!
//! What is checked: a dropped download is resumed (a Range request from where it stopped) and
//! the model then loads; a run that gives up leaves only a `.part` file, which the next run
//! resumes and never takes for the model; bytes that do not hash to the etag are removed from
//! the cache with an error, so no later run loads them.

mod cli_support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex};

use docanalyze::model::synthetic::{write_synthetic_gguf, SyntheticSpec};
use sha2::{Digest, Sha256};

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

/// How the server misbehaves.
#[derive(Clone, Copy)]
struct Faults {
    /// Bodies cut off half-way, connection closed (the first this many body requests).
    drops: usize,
    /// Serve bytes with one flipped (the etag stays the true sha256).
    corrupt: bool,
}

/// The Hub stand-in: serves `content` as `owner/repo/model.gguf`; returns its endpoint and the
/// `Range` headers of the body requests it received.
fn serve(content: Vec<u8>, faults: Faults) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let ranges = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&ranges);
    let etag = hex_sha256(&content);
    std::thread::spawn(move || {
        let mut drops = faults.drops;
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let range = read_range(&stream);
            let mut body = content.clone();
            if faults.corrupt {
                let mid = body.len() / 2;
                body[mid] ^= 0x55;
            }
            let size = body.len();
            let start = range
                .as_deref()
                .and_then(|r| r.strip_prefix("bytes="))
                .and_then(|r| r.split('-').next())
                .and_then(|s| s.parse::<usize>().ok())
                .unwrap_or(0);
            let probe = range.as_deref() == Some("bytes=0-0");
            let end = if probe { 1 } else { size };
            if !probe {
                seen.lock().unwrap().push(range.clone().unwrap_or_default());
            }
            let mut out = stream;
            let head = format!(
                "HTTP/1.1 206 Partial Content\r\nx-repo-commit: {COMMIT}\r\nx-linked-etag: \"{etag}\"\r\nContent-Range: bytes {start}-{}/{size}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                end - 1,
                end - start
            );
            let _ = out.write_all(head.as_bytes());
            let mut stop = end;
            if !probe && drops > 0 {
                drops -= 1;
                stop = start + (end - start) / 2;
            }
            let _ = out.write_all(&body[start..stop]);
            let _ = out.flush();
        }
    });
    (endpoint, ranges)
}

/// The request's `Range` header, the request read to its end.
fn read_range(stream: &TcpStream) -> Option<String> {
    let mut reader = BufReader::new(stream);
    let mut range = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            return range;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("range") {
                range = Some(value.trim().to_string());
            }
        }
    }
}

fn hex_sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A tiny model's bytes (large enough for a body to be cut in two).
fn model_bytes(dir: &Path) -> Vec<u8> {
    let path = dir.join("source.gguf");
    write_synthetic_gguf(&SyntheticSpec::tiny(), &path).unwrap();
    let mut bytes = Vec::new();
    std::fs::File::open(&path)
        .unwrap()
        .read_to_end(&mut bytes)
        .unwrap();
    bytes
}

/// `docanalyze info --model hf:owner/repo/model.gguf` against `endpoint`, cache in `home`.
fn info(endpoint: &str, home: &Path) -> std::process::Output {
    cli_support::docanalyze()
        .args(["info", "--model", "hf:owner/repo/model.gguf"])
        .env("HF_ENDPOINT", endpoint)
        .env("HF_HOME", home)
        .env_remove("HF_HUB_OFFLINE")
        .output()
        .unwrap()
}

/// Where the cache points at the model of commit [`COMMIT`].
fn snapshot(home: &Path) -> std::path::PathBuf {
    home.join(format!(
        "hub/models--owner--repo/snapshots/{COMMIT}/model.gguf"
    ))
}

/// Files in the cache's blob folder, by name (hf-hub's `.lock` files aside).
fn blobs(home: &Path) -> Vec<String> {
    let dir = home.join("hub/models--owner--repo/blobs");
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !n.ends_with(".lock"))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[test]
fn a_dropped_download_is_resumed_and_the_model_loads() {
    let dir = tempfile::tempdir().unwrap();
    let content = model_bytes(dir.path());
    let sha = hex_sha256(&content);
    let (endpoint, ranges) = serve(
        content.clone(),
        Faults {
            drops: 1,
            corrupt: false,
        },
    );
    let home = dir.path().join("hf");
    let out = info(&endpoint, &home);
    assert!(out.status.success(), "{}", cli_support::stderr_of(&out));
    assert!(cli_support::stdout_of(&out).contains("architecture           llama"));
    let ranges = ranges.lock().unwrap().clone();
    assert_eq!(ranges.len(), 2, "one cut body, one resumed: {ranges:?}");
    assert_eq!(ranges[0], "bytes=0-");
    assert_eq!(ranges[1], format!("bytes={}-", content.len() / 2));
    assert_eq!(blobs(&home), vec![sha]);
}

#[test]
fn a_run_that_gives_up_leaves_a_part_file_the_next_run_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let content = model_bytes(dir.path());
    let sha = hex_sha256(&content);
    let home = dir.path().join("hf");
    // More drops than the retries of one run: it fails, leaving only the part file.
    let (endpoint, _) = serve(
        content.clone(),
        Faults {
            drops: 10,
            corrupt: false,
        },
    );
    let out = info(&endpoint, &home);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        cli_support::stderr_of(&out)
    );
    assert!(cli_support::stderr_of(&out).contains("cannot download model.gguf"));
    assert_eq!(
        blobs(&home),
        vec![format!("{sha}.part")],
        "no blob to take for a model"
    );
    let snapshot = snapshot(&home);
    assert!(!snapshot.exists());
    // A healthy server: the next run resumes from the part file and loads the model.
    let (endpoint, ranges) = serve(
        content.clone(),
        Faults {
            drops: 0,
            corrupt: false,
        },
    );
    let out = info(&endpoint, &home);
    assert!(out.status.success(), "{}", cli_support::stderr_of(&out));
    let ranges = ranges.lock().unwrap().clone();
    assert_eq!(ranges.len(), 1, "{ranges:?}");
    assert_ne!(ranges[0], "bytes=0-", "resumed, not downloaded again");
    assert_eq!(blobs(&home), vec![sha]);
    assert_eq!(std::fs::read(&snapshot).unwrap(), content);
}

#[test]
fn bytes_that_do_not_match_the_etag_are_removed_with_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let content = model_bytes(dir.path());
    let home = dir.path().join("hf");
    let (endpoint, _) = serve(
        content,
        Faults {
            drops: 0,
            corrupt: true,
        },
    );
    let out = info(&endpoint, &home);
    assert_eq!(out.status.code(), Some(2));
    let err = cli_support::stderr_of(&out);
    assert!(
        err.contains("incomplete or corrupt") && err.contains("owner/repo"),
        "{err}"
    );
    assert!(blobs(&home).is_empty(), "{:?}", blobs(&home));
    let snapshot = snapshot(&home);
    assert!(!snapshot.exists() && std::fs::symlink_metadata(&snapshot).is_err());
}
