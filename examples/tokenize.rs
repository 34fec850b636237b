//! Prints the token ids of each file's text, with the model's own tokenizer (BOS as the model
//! asks), one JSON array per line: the counterpart of `llama-tokenize --ids`, for comparing the
//! two (`scripts/compare-tokenizer.sh`).
//!
//!     cargo run --release --example tokenize -- MODEL.gguf FILE...

use docanalyze::model::GgufFile;
use docanalyze::tokenizer::Tokenizer;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let model = args
        .next()
        .ok_or_else(|| anyhow::anyhow!("usage: tokenize MODEL.gguf FILE..."))?;
    let gguf = GgufFile::open(std::path::Path::new(&model))?;
    let tokenizer = Tokenizer::from_gguf(&gguf, None)?;
    for file in args {
        let text = std::fs::read_to_string(&file)?;
        let ids = tokenizer.encode(&text)?;
        println!("{}", serde_json::to_string(&ids)?);
    }
    Ok(())
}
