//! The tokenizer, built from GGUF metadata (a byte-level BPE vocabulary and merges, or a
//! SentencePiece vocabulary with scores, see [`spm`]), or read from a `tokenizer.json`; plus the
//! ids that end generation.

mod spm;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, PreTokenizerWrapper, SplitDelimiterBehavior};

use crate::control_tokens::{ControlTokens, Piece};
use crate::model::{GgufFile, ModelError};
use spm::Spm;

#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("unsupported tokenizer `{model}` in {path}: byte-level BPE (`gpt2`) and SentencePiece (`llama`) vocabularies are built from GGUF metadata; pass --tokenizer tokenizer.json")]
    Unsupported { model: String, path: PathBuf },
    #[error("cannot build the tokenizer of {path}: {message}")]
    Build { path: PathBuf, message: String },
    #[error("tokenizing failed: {0}")]
    Encode(String),
}

/// How text becomes ids.
enum Vocabulary {
    /// The tokenizers crate (byte-level BPE from GGUF, or any `tokenizer.json`).
    Hf {
        inner: Box<tokenizers::Tokenizer>,
        /// The same tokenizer with special-token strings read as text (data).
        plain: Box<tokenizers::Tokenizer>,
    },
    /// A SentencePiece vocabulary, encoded as llama.cpp does.
    Spm(Box<Spm>),
}

/// Text ↔ token ids for one model.
pub struct Tokenizer {
    vocabulary: Vocabulary,
    controls: Arc<ControlTokens>,
    eog_ids: HashSet<u32>,
    bos: Option<(u32, String)>,
    eos: Option<(u32, String)>,
    add_bos: bool,
    /// Bytes each token stands for (see [`Tokenizer::token_ends`]), built on first use.
    byte_lengths: std::sync::OnceLock<Vec<u32>>,
}

// Pre-tokenizer regexes of llama.cpp's `tokenizer.ggml.pre` types.
const REGEX_LLAMA3: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const REGEX_QWEN2: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Token types of llama.cpp's vocabulary: 3 = control, 4 = user defined, 6 = byte.
const TOKEN_TYPE_CONTROL: i64 = 3;
const TOKEN_TYPE_USER_DEFINED: i64 = 4;
const TOKEN_TYPE_BYTE: i64 = 6;

impl Tokenizer {
    /// Builds the tokenizer from `tokenizer.ggml.*` metadata, or from `override_file` if given.
    pub fn from_gguf(
        gguf: &GgufFile,
        override_file: Option<&Path>,
    ) -> Result<Self, TokenizerError> {
        let build_err = |message: String| TokenizerError::Build {
            path: gguf.path.clone(),
            message,
        };
        let tokens = gguf.strings("tokenizer.ggml.tokens")?;
        let model = gguf
            .string("tokenizer.ggml.model")
            .unwrap_or_else(|_| "gpt2".into());
        let vocabulary = match override_file {
            Some(file) => Self::hf(tokenizers::Tokenizer::from_file(file).map_err(|e| {
                TokenizerError::Build {
                    path: file.to_path_buf(),
                    message: e.to_string(),
                }
            })?),
            None if model == "llama" => Vocabulary::Spm(Box::new(
                Self::spm_from_gguf(gguf, &tokens).map_err(build_err)?,
            )),
            None => Self::hf(Self::bpe_from_gguf(gguf, &tokens).map_err(build_err)?),
        };
        let token_at = |key: &str| -> Option<(u32, String)> {
            let id = gguf.usize(key).ok()?;
            tokens.get(id).map(|t| (id as u32, t.clone()))
        };
        let bos = token_at("tokenizer.ggml.bos_token_id");
        let eos = token_at("tokenizer.ggml.eos_token_id");
        let add_bos = gguf.bool("tokenizer.ggml.add_bos_token").unwrap_or(false);

        // Every end-of-generation token stops a sequence: the declared eos/eot/eom ids plus
        // the control tokens that chat templates end turns with.
        let mut eog_ids = HashSet::new();
        for key in [
            "tokenizer.ggml.eos_token_id",
            "tokenizer.ggml.eot_token_id",
            "tokenizer.ggml.eom_token_id",
        ] {
            if let Ok(id) = gguf.usize(key) {
                eog_ids.insert(id as u32);
            }
        }
        for (id, t) in tokens.iter().enumerate() {
            if matches!(
                t.as_str(),
                "<|endoftext|>"
                    | "<|im_end|>"
                    | "<|eot_id|>"
                    | "<|eom_id|>"
                    | "<|end|>"
                    | "<end_of_turn>"
                    | "</s>"
            ) {
                eog_ids.insert(id as u32);
            }
        }
        let controls = match &vocabulary {
            Vocabulary::Hf { inner, .. } => {
                let mut special: Vec<(u32, String)> = inner
                    .get_added_tokens_decoder()
                    .into_iter()
                    .filter(|(_, t)| t.special)
                    .map(|(id, t)| (id, t.content))
                    .collect();
                special.sort_unstable();
                special
            }
            Vocabulary::Spm(_) => {
                let types = gguf
                    .integers("tokenizer.ggml.token_type")
                    .unwrap_or_default();
                types
                    .iter()
                    .zip(&tokens)
                    .enumerate()
                    .filter(|(_, (&t, _))| t == TOKEN_TYPE_CONTROL)
                    .map(|(i, (_, text))| (i as u32, text.clone()))
                    .collect()
            }
        };
        let controls = ControlTokens::new(controls).map_err(build_err)?;
        Ok(Self {
            vocabulary,
            controls: Arc::new(controls),
            eog_ids,
            bos,
            eos,
            add_bos,
            byte_lengths: std::sync::OnceLock::new(),
        })
    }

    fn hf(inner: tokenizers::Tokenizer) -> Vocabulary {
        let mut plain = inner.clone();
        plain.set_encode_special_tokens(true);
        Vocabulary::Hf {
            inner: Box::new(inner),
            plain: Box::new(plain),
        }
    }

    /// A SentencePiece vocabulary: pieces, scores and types; spaces prefixed unless the file
    /// says `add_space_prefix = false` (Gemma), as llama.cpp does.
    fn spm_from_gguf(gguf: &GgufFile, tokens: &[String]) -> Result<Spm, String> {
        let scores = gguf
            .floats("tokenizer.ggml.scores")
            .map_err(|e| e.to_string())?;
        let types = gguf
            .integers("tokenizer.ggml.token_type")
            .map_err(|e| e.to_string())?;
        let unknown = gguf
            .usize("tokenizer.ggml.unknown_token_id")
            .ok()
            .map(|id| id as u32);
        let add_space_prefix = gguf.bool("tokenizer.ggml.add_space_prefix").unwrap_or(true);
        Spm::new(tokens.to_vec(), scores, types, unknown, add_space_prefix)
    }

    fn bpe_from_gguf(gguf: &GgufFile, tokens: &[String]) -> Result<tokenizers::Tokenizer, String> {
        let model = gguf
            .string("tokenizer.ggml.model")
            .map_err(|e| e.to_string())?;
        if model != "gpt2" {
            return Err(TokenizerError::Unsupported {
                model,
                path: gguf.path.clone(),
            }
            .to_string());
        }
        let merges: Vec<(String, String)> = gguf
            .strings("tokenizer.ggml.merges")
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(|m| {
                m.split_once(' ')
                    .map(|(a, b)| (a.to_string(), b.to_string()))
                    .ok_or_else(|| format!("invalid merge `{m}` in tokenizer.ggml.merges"))
            })
            .collect::<Result<_, _>>()?;
        let vocab: tokenizers::models::bpe::Vocab = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .build()
            .map_err(|e| e.to_string())?;
        let mut tok = tokenizers::Tokenizer::new(bpe);

        let add_prefix_space = gguf
            .bool("tokenizer.ggml.add_space_prefix")
            .unwrap_or(false);
        let pre = gguf
            .string("tokenizer.ggml.pre")
            .unwrap_or_else(|_| "gpt2".into());
        let split = |regex: &str| -> Result<PreTokenizerWrapper, String> {
            let split = Split::new(
                SplitPattern::Regex(regex.to_string()),
                SplitDelimiterBehavior::Isolated,
                false,
            )
            .map_err(|e| e.to_string())?;
            Ok(Sequence::new(vec![
                split.into(),
                ByteLevel::new(add_prefix_space, false, false).into(),
            ])
            .into())
        };
        let pre_tokenizer: PreTokenizerWrapper = match pre.as_str() {
            // SmolLM2's tokenizer.json: every digit alone, then GPT-2 byte-level splitting.
            "smollm" => Sequence::new(vec![
                Digits::new(true).into(),
                ByteLevel::new(add_prefix_space, false, true).into(),
            ])
            .into(),
            "llama3" | "llama-bpe" | "smaug-bpe" | "lfm2" | "falcon3" => split(REGEX_LLAMA3)?,
            "qwen2" | "deepseek-r1-qwen" => split(REGEX_QWEN2)?,
            _ => ByteLevel::new(add_prefix_space, false, true).into(),
        };
        tok.with_pre_tokenizer(Some(pre_tokenizer));
        tok.with_decoder(Some(ByteLevelDecoder::default()));

        // Control and user-defined tokens are matched whole in the text (chat markup).
        let types = gguf
            .integers("tokenizer.ggml.token_type")
            .unwrap_or_default();
        let specials: Vec<AddedToken> = types
            .iter()
            .enumerate()
            .filter(|(_, &t)| t == TOKEN_TYPE_CONTROL || t == TOKEN_TYPE_USER_DEFINED)
            .filter_map(|(i, _)| tokens.get(i))
            .map(|t| AddedToken::from(t.clone(), true))
            .collect();
        tok.add_special_tokens(specials)
            .map_err(|e| e.to_string())?;
        Ok(tok)
    }

    /// Token ids of `text`, special markup included; a BOS is prepended when the model asks
    /// for one and the text does not already start with it.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, TokenizerError> {
        let ids = match &self.vocabulary {
            Vocabulary::Hf { inner, .. } => inner
                .encode(text, false)
                .map_err(|e| TokenizerError::Encode(e.to_string()))?
                .get_ids()
                .to_vec(),
            Vocabulary::Spm(_) => self.encode_pieces(self.controls.split(text))?,
        };
        Ok(self.with_bos(ids))
    }

    /// `ids` with a BOS in front when the model asks for one and they do not start with it.
    fn with_bos(&self, mut ids: Vec<u32>) -> Vec<u32> {
        if self.add_bos {
            if let Some((bos, _)) = &self.bos {
                if ids.first() != Some(bos) {
                    ids.insert(0, *bos);
                }
            }
        }
        ids
    }

    /// Token ids of a prompt rendered from templates and escaped data (see
    /// [`crate::control_tokens`]): control strings written by the templates become control
    /// tokens, those that came from data are text. BOS as in [`Tokenizer::encode`].
    pub fn encode_prompt(&self, rendered: &str) -> Result<Vec<u32>, TokenizerError> {
        Ok(self.with_bos(self.encode_pieces(self.controls.split(rendered))?))
    }

    /// Ids of text cut at its control tokens.
    fn encode_pieces(&self, pieces: Vec<Piece<'_>>) -> Result<Vec<u32>, TokenizerError> {
        let mut ids = Vec::new();
        // SentencePiece: the text at the start and after each control token gets the space
        // prefix (llama.cpp's `is_prev_special`).
        let mut after_control = true;
        for piece in pieces {
            match piece {
                Piece::Control(id) => {
                    ids.push(id);
                    after_control = true;
                }
                Piece::Text(text) => {
                    match &self.vocabulary {
                        Vocabulary::Hf { .. } => ids.extend(self.encode_plain(&text)?),
                        Vocabulary::Spm(spm) => spm.encode(&text, after_control, &mut ids),
                    }
                    after_control = false;
                }
            }
        }
        Ok(ids)
    }

    /// Token ids of plain text, no BOS, special-token strings read as text (used to measure
    /// and cut documents).
    pub fn encode_plain(&self, text: &str) -> Result<Vec<u32>, TokenizerError> {
        match &self.vocabulary {
            Vocabulary::Hf { plain, .. } => Ok(plain
                .encode(text, false)
                .map_err(|e| TokenizerError::Encode(e.to_string()))?
                .get_ids()
                .to_vec()),
            Vocabulary::Spm(spm) => {
                let mut ids = Vec::new();
                spm.encode(text, false, &mut ids);
                Ok(ids)
            }
        }
    }

    /// Each token as the bytes it stands for, control tokens as `0xFF` and their text (the
    /// form llguidance's token trie takes).
    pub fn token_bytes(&self) -> Vec<Vec<u8>> {
        let controls: std::collections::HashSet<u32> =
            self.controls.ids().iter().copied().collect();
        match &self.vocabulary {
            Vocabulary::Spm(spm) => spm.token_bytes(),
            Vocabulary::Hf { inner, .. } => {
                let byte_of: std::collections::HashMap<char, u8> =
                    crate::model::synthetic::byte_level_chars()
                        .iter()
                        .enumerate()
                        .map(|(b, &c)| (c, b as u8))
                        .collect();
                (0..inner.get_vocab_size(true) as u32)
                    .map(|id| {
                        let text = inner.id_to_token(id).unwrap_or_default();
                        if controls.contains(&id) {
                            return [&[0xFF][..], text.as_bytes()].concat();
                        }
                        // Byte-level BPE: every character stands for one byte.
                        let bytes: Option<Vec<u8>> =
                            text.chars().map(|c| byte_of.get(&c).copied()).collect();
                        bytes.unwrap_or_else(|| text.replace('\u{2581}', " ").into_bytes())
                    })
                    .collect()
            }
        }
    }

    /// For plain-text `ids` (from [`Tokenizer::encode_plain`]), the byte offset in their text
    /// where each token ends. Exact for byte-level vocabularies; for SentencePiece the space it
    /// puts before the text shifts them by a byte (the chunk splitter looks at whitespace on
    /// both sides of a cut, so that does not matter).
    pub fn token_ends(&self, ids: &[u32]) -> Vec<usize> {
        let lengths = self.byte_lengths.get_or_init(|| {
            let controls: HashSet<u32> = self.controls.ids().iter().copied().collect();
            self.token_bytes()
                .iter()
                .enumerate()
                .map(|(id, b)| {
                    if controls.contains(&(id as u32)) {
                        0
                    } else {
                        b.len() as u32
                    }
                })
                .collect()
        });
        let mut end = 0usize;
        ids.iter()
            .map(|&id| {
                end += lengths.get(id as usize).copied().unwrap_or(0) as usize;
                end
            })
            .collect()
    }

    /// The control tokens (chat markup) only templates may write.
    pub fn control_tokens(&self) -> Arc<ControlTokens> {
        self.controls.clone()
    }

    /// Text of `ids`, special tokens dropped.
    pub fn decode(&self, ids: &[u32]) -> Result<String, TokenizerError> {
        match &self.vocabulary {
            Vocabulary::Hf { inner, .. } => inner
                .decode(ids, true)
                .map_err(|e| TokenizerError::Encode(e.to_string())),
            Vocabulary::Spm(spm) => Ok(spm.decode(ids)),
        }
    }

    pub fn is_end_of_generation(&self, id: u32) -> bool {
        self.eog_ids.contains(&id)
    }

    pub fn end_of_generation_ids(&self) -> Vec<u32> {
        let mut ids: Vec<u32> = self.eog_ids.iter().copied().collect();
        ids.sort_unstable();
        ids
    }

    pub fn bos_token(&self) -> Option<&str> {
        self.bos.as_ref().map(|(_, t)| t.as_str())
    }

    pub fn eos_token(&self) -> Option<&str> {
        self.eos.as_ref().map(|(_, t)| t.as_str())
    }
}
