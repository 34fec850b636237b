//! The tokenizers against llama.cpp's own ids on the text of every sample document: a
//! SentencePiece vocabulary (Gemma 3 270M) and a byte-level BPE one (the default model).
//! The fixtures hold `llama-tokenize --ids --no-escape`'s count and FNV-1a hash per document,
//! written by `FIXTURE=… scripts/compare-tokenizer.sh` with llama.cpp of October 2026, so CI
//! checks against llama.cpp without building it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use docanalyze::input::{ExtractLimits, Extractor, TextKind};
use docanalyze::model::GgufFile;
use docanalyze::tokenizer::Tokenizer;

fn repo(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// FNV-1a 64 over the ids as little-endian u32 (as the fixture script computes it).
fn fnv(ids: &[u32]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in ids.iter().flat_map(|i| i.to_le_bytes()) {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Compares the model `file` (in the models folder) with its fixture; skipped, saying so, when
/// the model is not installed.
fn check(file: &str, fixture: &str) {
    let model = docanalyze::model_source::default_model_path().with_file_name(file);
    if !model.exists() {
        eprintln!(
            "skipped: {} is not installed (scripts/fetch-model.sh)",
            model.display()
        );
        return;
    }
    let gguf = GgufFile::open(&model).expect("model opens");
    let tokenizer = Tokenizer::from_gguf(&gguf, None).expect("tokenizer");
    let expected: BTreeMap<String, (usize, u64)> = std::fs::read_to_string(repo(fixture))
        .expect("fixture")
        .lines()
        .map(|line| {
            let f: Vec<&str> = line.split('\t').collect();
            let hash = u64::from_str_radix(f[2], 16).expect("hex");
            (f[0].to_string(), (f[1].parse().expect("count"), hash))
        })
        .collect();
    let extractor = Extractor::in_process(ExtractLimits::default());
    let docs = repo("sample-data/docs");
    let mut checked = 0;
    for (name, &(count, hash)) in &expected {
        let path: &Path = &docs.join(name);
        let kind = TextKind::of(path).expect("a document");
        let text = extractor.read(path, kind).expect("reads");
        let ids = tokenizer.encode(&text).expect("encodes");
        assert_eq!((ids.len(), fnv(&ids)), (count, hash), "{file}: {name}");
        checked += 1;
    }
    assert_eq!(checked, 27, "every sample document is in {fixture}");
}

#[test]
fn sentencepiece_ids_equal_llama_cpp_on_the_sample_documents() {
    check(
        "gemma-3-270m-q4_k_m.gguf",
        "tests/fixtures/gemma-3-270m-llama-tokenize.tsv",
    );
}

#[test]
fn byte_level_bpe_ids_equal_llama_cpp_on_the_sample_documents() {
    check(
        "SmolLM2-135M-Instruct.Q4_1.gguf",
        "tests/fixtures/smollm2-llama-tokenize.tsv",
    );
}
