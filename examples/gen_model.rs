//! Writes a random-weight llama GGUF of a given shape and quantization, with a byte-level
//! tokenizer and a ChatML template: for speed checks where the real weights cannot travel
//! (the GPU machine) — speed does not depend on the values.
//!
//! cargo run --release --example gen_model -- OUT.gguf [tiny|135m|1b] [f32|f16|bf16|q4_0|q4_1|q8_0|q2_k|q3_k|q4_k|q5_k|q6_k]
//! (the K-quants need the 1b shape: every dimension a multiple of 256)
//! cargo run --release --example gen_model -- OUT.gguf ref-ARCH
//! (`SyntheticSpec::reference(ARCH)`, the files compared with llama.cpp's logits)

use candle_core::quantized::GgmlDType;
use docanalyze::model::synthetic::{write_synthetic_gguf, SyntheticSpec, BASE_VOCAB};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let out = args
        .next()
        .ok_or_else(|| anyhow::anyhow!("usage: gen_model OUT.gguf [shape] [dtype]"))?;
    let shape = args.next().unwrap_or_else(|| "1b".into());
    if let Some(arch) = shape.strip_prefix("ref-") {
        write_synthetic_gguf(&SyntheticSpec::reference(arch), std::path::Path::new(&out))?;
        eprintln!("wrote {out}: the {arch} reference file");
        return Ok(());
    }
    let dtype = match args.next().as_deref().unwrap_or("q4_0") {
        "f32" => GgmlDType::F32,
        "f16" => GgmlDType::F16,
        "bf16" => GgmlDType::BF16,
        "q4_0" => GgmlDType::Q4_0,
        "q4_1" => GgmlDType::Q4_1,
        "q8_0" => GgmlDType::Q8_0,
        "q2_k" => GgmlDType::Q2K,
        "q3_k" => GgmlDType::Q3K,
        "q4_k" => GgmlDType::Q4K,
        "q5_k" => GgmlDType::Q5K,
        "q6_k" => GgmlDType::Q6K,
        other => {
            anyhow::bail!("unknown dtype {other} (f32, f16, bf16, q4_0, q4_1, q8_0, q2_k, q3_k, q4_k, q5_k, q6_k)")
        }
    };
    let base = SyntheticSpec {
        dtype,
        ..SyntheticSpec::tiny()
    };
    let spec = match shape.as_str() {
        "tiny" => base,
        // SmolLM2-135M
        "135m" => SyntheticSpec {
            n_layer: 30,
            n_embd: 576,
            n_head: 9,
            n_kv_head: 3,
            n_ff: 1536,
            context_length: 8192,
            vocab_size: 49152,
            tied_embeddings: true,
            ..base
        },
        // Llama-3.2-1B (vocabulary cut to 32k to keep generation quick)
        "1b" => SyntheticSpec {
            n_layer: 16,
            n_embd: 2048,
            n_head: 32,
            n_kv_head: 8,
            n_ff: 8192,
            context_length: 8192,
            vocab_size: 32000.max(BASE_VOCAB),
            tied_embeddings: true,
            rope_freq_base: 500_000.0,
            ..base
        },
        other => anyhow::bail!("unknown shape {other} (tiny, 135m, 1b)"),
    };
    write_synthetic_gguf(&spec, std::path::Path::new(&out))?;
    eprintln!("wrote {out}: {shape} {dtype:?}");
    Ok(())
}
