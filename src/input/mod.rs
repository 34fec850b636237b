//! Document sources: directories, single files, JSONL files and stdin. A document that cannot
//! be read still becomes a [`Document`], carrying the error, so it yields its own record.

mod extract;
mod html;
mod jsonl;
mod pdf;
mod text;
mod walk;

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::rc::Rc;

pub use extract::{worker_main as extract_worker_main, ExtractLimits, Extractor};
pub use html::html_to_text;
pub use jsonl::{count_jsonl_documents, JsonlReader, MAX_LINE_BYTES};
pub use text::TextKind;
pub use walk::{walk_dir, WalkEntry};

/// One input document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    /// Stable id: relative path, JSONL id field, or `file:line`.
    pub id: String,
    /// Where it came from (path, or `path:line` for JSONL).
    pub source: String,
    /// The text, or why it could not be read.
    pub text: Result<String, String>,
    /// The true label (`--gold-field` of a JSONL line), for accuracy.
    pub gold: Option<String>,
}

/// How JSONL lines name their text and id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonlFields {
    pub text: String,
    pub id: String,
    /// The field holding the true label (`--gold-field`).
    pub gold: Option<String>,
}

impl Default for JsonlFields {
    fn default() -> Self {
        Self {
            text: "text".into(),
            id: "id".into(),
            gold: None,
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

/// Every document of `specs`, in order, read lazily.
///
/// Inside a directory (see [`walk_dir`]): supported files are documents, `.jsonl`/`.ndjson`
/// files are streams of documents, and other files are skipped with a warning and counted in
/// `skipped` — as is a file given by name with an unsupported extension. A symlink back to an
/// ancestor folder is skipped with a warning (not counted: it is no file). An entry that cannot
/// be visited becomes an error document, unless its extension already says it would have been
/// skipped (a broken `foo.exe` link).
pub fn documents(
    specs: Vec<InputSpec>,
    fields: JsonlFields,
    extractor: Extractor,
    skipped: Rc<Cell<usize>>,
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
                    Box::new(planned_documents(
                        plan_file(path),
                        id,
                        &fields,
                        &extractor,
                        &skipped,
                    ))
                }
                InputSpec::Dir(root) => {
                    let skipped = skipped.clone();
                    let fields = fields.clone();
                    let extractor = extractor.clone();
                    Box::new(plan_dir(&root).flat_map(move |planned| {
                        let id = planned
                            .path()
                            .strip_prefix(&root)
                            .unwrap_or(planned.path())
                            .display()
                            .to_string();
                        planned_documents(planned, id, &fields, &extractor, &skipped)
                    }))
                }
            }
        })
}

/// How many documents [`documents`] will yield for `specs`, when that is cheap to know: files
/// are classified again and JSONL files have their non-blank lines counted, without parsing.
/// `None` when stdin is among the inputs. A file that cannot be read counts as the one error
/// document it becomes; files that change between the count and the run make it approximate.
pub fn count_documents(specs: &[InputSpec]) -> Option<usize> {
    let mut total = 0;
    for spec in specs {
        total += match spec {
            InputSpec::Stdin => return None,
            InputSpec::Jsonl(path) => count_jsonl_file(path),
            InputSpec::File(path) => count_planned(&plan_file(path.clone())),
            InputSpec::Dir(root) => plan_dir(root).map(|p| count_planned(&p)).sum(),
        };
    }
    Some(total)
}

/// What one path of the inputs becomes.
enum Planned {
    Text(PathBuf, TextKind),
    Jsonl(PathBuf),
    /// Not a supported document type: skipped, counted, warned about.
    Unsupported(PathBuf),
    /// A symlink to an ancestor folder: warned about, nothing else.
    Loop(PathBuf),
    Failed {
        path: PathBuf,
        message: String,
    },
}

impl Planned {
    fn path(&self) -> &Path {
        match self {
            Self::Text(p, _) | Self::Jsonl(p) | Self::Unsupported(p) | Self::Loop(p) => p,
            Self::Failed { path, .. } => path,
        }
    }
}

fn plan_file(path: PathBuf) -> Planned {
    if is_jsonl(&path) {
        return Planned::Jsonl(path);
    }
    match TextKind::of(&path) {
        Some(kind) => Planned::Text(path, kind),
        None => Planned::Unsupported(path),
    }
}

fn plan_dir(root: &Path) -> impl Iterator<Item = Planned> {
    walk_dir(root).map(|entry| match entry {
        WalkEntry::File(path) => plan_file(path),
        WalkEntry::Loop(path) => Planned::Loop(path),
        WalkEntry::Failed { path, message } => {
            let has_unsupported_extension =
                path.extension().is_some() && TextKind::of(&path).is_none() && !is_jsonl(&path);
            if has_unsupported_extension {
                Planned::Unsupported(path)
            } else {
                Planned::Failed { path, message }
            }
        }
    })
}

fn planned_documents(
    planned: Planned,
    id: String,
    fields: &JsonlFields,
    extractor: &Extractor,
    skipped: &Rc<Cell<usize>>,
) -> Box<dyn Iterator<Item = Document>> {
    match planned {
        Planned::Text(path, kind) => Box::new(std::iter::once(Document {
            id,
            source: path.display().to_string(),
            text: extractor.read(&path, kind),
            gold: None,
        })),
        Planned::Jsonl(path) => Box::new(open_jsonl(path, fields.clone())),
        Planned::Unsupported(path) => {
            tracing::warn!("skipping {}: not a supported document type", path.display());
            skipped.set(skipped.get() + 1);
            Box::new(std::iter::empty())
        }
        Planned::Loop(path) => {
            tracing::warn!(
                "skipping {}: a symlink back to a folder already being walked",
                path.display()
            );
            Box::new(std::iter::empty())
        }
        Planned::Failed { path, message } => Box::new(std::iter::once(Document {
            id,
            source: path.display().to_string(),
            text: Err(message),
            gold: None,
        })),
    }
}

fn count_planned(planned: &Planned) -> usize {
    match planned {
        Planned::Text(..) | Planned::Failed { .. } => 1,
        Planned::Jsonl(path) => count_jsonl_file(path),
        Planned::Unsupported(_) | Planned::Loop(_) => 0,
    }
}

/// A JSONL file's documents; one (the error document) when it cannot be read.
fn count_jsonl_file(path: &Path) -> usize {
    std::fs::File::open(path)
        .and_then(count_jsonl_documents)
        .unwrap_or(1)
}

fn open_jsonl(path: PathBuf, fields: JsonlFields) -> Box<dyn Iterator<Item = Document>> {
    let name = path.display().to_string();
    match std::fs::File::open(&path) {
        Ok(f) => Box::new(JsonlReader::new(std::io::BufReader::new(f), name, fields)),
        Err(e) => Box::new(std::iter::once(Document {
            id: name.clone(),
            source: name.clone(),
            text: Err(format!("cannot read {name}: {e}")),
            gold: None,
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn unreadable_entries_are_errors_unless_their_type_is_skipped_anyway() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        std::os::unix::fs::symlink("gone.txt", root.join("link.txt")).expect("symlink");
        std::os::unix::fs::symlink("gone.exe", root.join("link.exe")).expect("symlink");
        let skipped = Rc::new(Cell::new(0));
        let specs = vec![InputSpec::Dir(root.to_path_buf())];
        let counted = count_documents(&specs);
        let extractor = Extractor::in_process(ExtractLimits::default());
        let docs: Vec<_> =
            documents(specs, JsonlFields::default(), extractor, skipped.clone()).collect();
        assert_eq!(skipped.get(), 1);
        assert_eq!(counted, Some(1));
        assert_eq!(docs.len(), 1);
        assert_eq!(docs[0].id, "link.txt");
        let error = docs[0].text.as_ref().unwrap_err();
        assert!(error.starts_with("cannot read "), "{error}");
    }
}
