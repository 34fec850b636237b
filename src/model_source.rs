//! Where the model file comes from: a path, `hf:OWNER/REPO/FILE.gguf` (Hugging Face Hub, via
//! its local cache first), or the default model installed by `scripts/fetch-model.sh`.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// File name of the default model (SmolLM2-135M-Instruct, Q4_1, Apache-2.0).
pub const DEFAULT_MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

#[derive(Debug, thiserror::Error)]
pub enum ModelSourceError {
    #[error("`{0}` is not a Hub model reference: expected hf:OWNER/REPO/FILE.gguf")]
    BadHubRef(String),
    #[error("cannot download {file} from the Hugging Face Hub repo {repo} (offline, or not found): {message}; download it yourself and pass --model PATH")]
    Download {
        repo: String,
        file: String,
        message: String,
    },
    #[error("the download of {file} from the Hugging Face Hub repo {repo} is incomplete or corrupt (sha256 {got}, the Hub says {expected}); it was removed from the cache, run again")]
    Corrupt {
        repo: String,
        file: String,
        got: String,
        expected: String,
    },
    #[error("no model given and the default model is not installed at {0}; run scripts/fetch-model.sh or pass --model PATH (or set DOCANALYZE_MODEL)")]
    DefaultMissing(PathBuf),
    #[error("model file {0} does not exist")]
    Missing(PathBuf),
}

/// A model reference as the user wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelRef {
    Path(PathBuf),
    Hub { repo: String, file: String },
    Default,
}

impl ModelRef {
    pub fn parse(arg: Option<&str>) -> Result<Self, ModelSourceError> {
        let Some(arg) = arg.filter(|a| !a.is_empty()) else {
            return Ok(Self::Default);
        };
        let Some(rest) = arg.strip_prefix("hf:") else {
            return Ok(Self::Path(PathBuf::from(arg)));
        };
        let parts: Vec<&str> = rest.split('/').collect();
        if parts.len() < 3 || parts.iter().any(|p| p.is_empty()) {
            return Err(ModelSourceError::BadHubRef(arg.to_string()));
        }
        Ok(Self::Hub {
            repo: parts[..2].join("/"),
            file: parts[2..].join("/"),
        })
    }

    /// The local file, downloading from the Hub when it is not cached.
    pub fn resolve(&self) -> Result<PathBuf, ModelSourceError> {
        match self {
            Self::Path(p) if p.exists() => Ok(p.clone()),
            Self::Path(p) => Err(ModelSourceError::Missing(p.clone())),
            Self::Default => {
                let p = default_model_path();
                if p.exists() {
                    Ok(p)
                } else {
                    Err(ModelSourceError::DefaultMissing(p))
                }
            }
            Self::Hub { repo, file } => {
                let cache = hf_hub::Cache::from_env();
                if let Some(p) = cached_hub_file(&cache, repo, file) {
                    return Ok(p);
                }
                let download_err = |message: String| ModelSourceError::Download {
                    repo: repo.clone(),
                    file: file.clone(),
                    message,
                };
                // from_env honours HF_HOME and HF_ENDPOINT (a mirror, or a test's server). The
                // file arrives as `blobs/ETAG.part`, renamed only once complete; a dropped
                // connection is resumed from where it stopped (a Range request), up to
                // DOWNLOAD_RETRIES times in this run, and from the `.part` file in a later run.
                let api = hf_hub::api::sync::ApiBuilder::from_env()
                    .with_progress(std::io::stderr().is_terminal())
                    .with_retries(DOWNLOAD_RETRIES)
                    .build()
                    .map_err(|e| download_err(e.to_string()))?;
                let path = api
                    .model(repo.clone())
                    .download(file)
                    .map_err(|e| download_err(e.to_string()))?;
                verify_download(&path).map_err(|(got, expected)| ModelSourceError::Corrupt {
                    repo: repo.clone(),
                    file: file.clone(),
                    got,
                    expected,
                })?;
                Ok(path)
            }
        }
    }
}

/// Times a dropped download is resumed within one run.
const DOWNLOAD_RETRIES: usize = 3;

/// Checks a file just downloaded into the Hub cache against its name: a large (LFS) file's
/// blob is named by its sha256, which must be the sha256 of its bytes. hf-hub checks neither
/// size nor hash: a server that closed the body early without saying how long it was, or
/// sent other bytes, would otherwise leave a file in the cache that every later run takes
/// for the model. On a mismatch the blob and its snapshot link
/// are removed and `(got, expected)` returned. Files whose blob name is not a sha256 (small
/// git files, never models) are not checked.
fn verify_download(pointer: &Path) -> Result<(), (String, String)> {
    let Ok(blob) = std::fs::canonicalize(pointer) else {
        return Ok(());
    };
    let expected = blob
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .to_ascii_lowercase();
    if expected.len() != 64 || !expected.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(());
    }
    let got = match sha256_of(&blob) {
        Ok(h) => h,
        Err(e) => format!("unreadable: {e}"),
    };
    if got == expected {
        return Ok(());
    }
    let _ = std::fs::remove_file(pointer);
    let _ = std::fs::remove_file(&blob);
    Err((got, expected))
}

/// The sha256 of a file's bytes, in lowercase hex.
fn sha256_of(path: &Path) -> std::io::Result<String> {
    let mut hasher = Sha256::new();
    std::io::copy(&mut std::fs::File::open(path)?, &mut hasher)?;
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// The Hub file in the local cache (`$HF_HOME/hub`), if it was downloaded before.
pub fn cached_hub_file(cache: &hf_hub::Cache, repo: &str, file: &str) -> Option<PathBuf> {
    cache.model(repo.to_string()).get(file)
}

/// `$DOCANALYZE_HOME/models/…`, else `$XDG_CACHE_HOME/docanalyze/models/…`, else
/// `~/.cache/docanalyze/models/…`.
pub fn default_model_path() -> PathBuf {
    models_dir().join(DEFAULT_MODEL_FILE)
}

pub fn models_dir() -> PathBuf {
    if let Some(home) = std::env::var_os("DOCANALYZE_HOME").filter(|v| !v.is_empty()) {
        return Path::new(&home).join("models");
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from(".cache"));
    cache.join("docanalyze").join("models")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_paths_hub_refs_and_default() {
        assert_eq!(ModelRef::parse(None).unwrap(), ModelRef::Default);
        assert_eq!(
            ModelRef::parse(Some("m.gguf")).unwrap(),
            ModelRef::Path("m.gguf".into())
        );
        assert_eq!(
            ModelRef::parse(Some("hf:bartowski/SmolLM2-GGUF/q/model.gguf")).unwrap(),
            ModelRef::Hub {
                repo: "bartowski/SmolLM2-GGUF".into(),
                file: "q/model.gguf".into()
            }
        );
        for bad in ["hf:", "hf:owner", "hf:owner/repo", "hf:owner//f.gguf"] {
            assert!(matches!(
                ModelRef::parse(Some(bad)),
                Err(ModelSourceError::BadHubRef(_))
            ));
        }
    }

    #[test]
    fn hub_ref_is_served_from_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        let cache = hf_hub::Cache::new(dir.path().to_path_buf());
        let repo = cache.model("owner/repo".into());
        repo.create_ref("abc123").unwrap();
        let snapshot = dir.path().join("models--owner--repo/snapshots/abc123");
        std::fs::create_dir_all(&snapshot).unwrap();
        std::fs::write(snapshot.join("m.gguf"), b"GGUF").unwrap();
        assert_eq!(
            cached_hub_file(&cache, "owner/repo", "m.gguf"),
            Some(snapshot.join("m.gguf"))
        );
        assert_eq!(cached_hub_file(&cache, "owner/repo", "other.gguf"), None);
    }
}
