//! Document sources: directories, single files, JSONL files and stdin. A document that cannot
//! be read still becomes a [`Document`], carrying the error, so it yields its own record.

mod jsonl;
mod text;
mod walk;

use std::path::{Path, PathBuf};

pub use jsonl::JsonlReader;
pub use text::{read_text_file, TextKind};
pub use walk::walk_dir;

/// One input document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    /// Stable id: relative path, JSONL id field, or `file:line`.
    pub id: String,
    /// Where it came from (path, or `path:line` for JSONL).
    pub source: String,
    /// The text, or why it could not be read.
    pub text: Result<String, String>,
}

/// How JSONL lines name their text and id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonlFields {
    pub text: String,
    pub id: String,
}

impl Default for JsonlFields {
    fn default() -> Self {
        Self {
            text: "text".into(),
            id: "id".into(),
        }
    }
}

/// What the inputs held besides documents.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InputStats {
    /// Files skipped for their extension.
    pub skipped_files: usize,
}

/// One `INPUT` argument, classified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InputSpec {
    Stdin,
    Jsonl(PathBuf),
    File(PathBuf),
    Dir(PathBuf),
}

#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("input {0} does not exist")]
    Missing(PathBuf),
    #[error("cannot read input {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl InputSpec {
    pub fn classify(arg: &str) -> Result<Self, InputError> {
        if arg == "-" {
            return Ok(Self::Stdin);
        }
        let path = PathBuf::from(arg);
        let meta = std::fs::metadata(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => InputError::Missing(path.clone()),
            _ => InputError::Io {
                path: path.clone(),
                source: e,
            },
        })?;
        Ok(if meta.is_dir() {
            Self::Dir(path)
        } else if is_jsonl(&path) {
            Self::Jsonl(path)
        } else {
            Self::File(path)
        })
    }
}

pub fn is_jsonl(path: &Path) -> bool {
    matches!(
        path.extension()
            .and_then(|e| e.to_str())
            .map(|e| e.to_ascii_lowercase())
            .as_deref(),
        Some("jsonl" | "ndjson")
    )
}

/// Every document of `specs`, in order, read lazily. Files with unknown extensions inside
/// directories are skipped and counted in `skipped`.
pub fn documents(
    specs: Vec<InputSpec>,
    fields: JsonlFields,
    skipped: std::rc::Rc<std::cell::Cell<usize>>,
) -> impl Iterator<Item = Document> {
    specs
        .into_iter()
        .flat_map(move |spec| -> Box<dyn Iterator<Item = Document>> {
            match spec {
                InputSpec::Stdin => Box::new(JsonlReader::new(
                    std::io::stdin().lock(),
                    "stdin",
                    fields.clone(),
                )),
                InputSpec::Jsonl(path) => Box::new(open_jsonl(path, fields.clone())),
                InputSpec::File(path) => {
                    let id = path.display().to_string();
                    Box::new(file_document(&path, id, &skipped).into_iter())
                }
                InputSpec::Dir(root) => {
                    let skipped = skipped.clone();
                    let fields = fields.clone();
                    Box::new(walk_dir(&root).flat_map(
                        move |entry| -> Box<dyn Iterator<Item = Document>> {
                            match entry {
                                Ok(path) if is_jsonl(&path) => {
                                    Box::new(open_jsonl(path, fields.clone()))
                                }
                                Ok(path) => {
                                    let id = path
                                        .strip_prefix(&root)
                                        .unwrap_or(&path)
                                        .display()
                                        .to_string();
                                    Box::new(file_document(&path, id, &skipped).into_iter())
                                }
                                Err((path, message)) => Box::new(std::iter::once(Document {
                                    id: path.display().to_string(),
                                    source: path.display().to_string(),
                                    text: Err(message),
                                })),
                            }
                        },
                    ))
                }
            }
        })
}

fn file_document(
    path: &Path,
    id: String,
    skipped: &std::rc::Rc<std::cell::Cell<usize>>,
) -> Option<Document> {
    let Some(kind) = TextKind::of(path) else {
        tracing::warn!("skipping {}: not a supported document type", path.display());
        skipped.set(skipped.get() + 1);
        return None;
    };
    Some(Document {
        id,
        source: path.display().to_string(),
        text: read_text_file(path, kind),
    })
}

fn open_jsonl(path: PathBuf, fields: JsonlFields) -> Box<dyn Iterator<Item = Document>> {
    let name = path.display().to_string();
    match std::fs::File::open(&path) {
        Ok(f) => Box::new(JsonlReader::new(std::io::BufReader::new(f), name, fields)),
        Err(e) => Box::new(std::iter::once(Document {
            id: name.clone(),
            source: name.clone(),
            text: Err(format!("cannot read {name}: {e}")),
        })),
    }
}
