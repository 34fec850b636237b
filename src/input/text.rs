//! Reading one file as text, by extension.

use std::path::Path;

/// How a file's text is obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextKind {
    Plain,
}

impl TextKind {
    /// The kind for a path, or `None` when its extension is not a document format.
    pub fn of(path: &Path) -> Option<Self> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "txt" | "md" | "markdown" | "rst" | "csv" | "text" => Some(Self::Plain),
            _ => None,
        }
    }
}

/// The text of a file; errors are messages naming the file.
pub fn read_text_file(path: &Path, kind: TextKind) -> Result<String, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    match kind {
        TextKind::Plain => plain_text(path, bytes),
    }
}

fn plain_text(path: &Path, bytes: Vec<u8>) -> Result<String, String> {
    if bytes.contains(&0) {
        return Err(format!("{} looks binary (NUL bytes)", path.display()));
    }
    String::from_utf8(bytes).map_err(|e| {
        format!(
            "{} is not valid UTF-8 (byte {})",
            path.display(),
            e.utf8_error().valid_up_to()
        )
    })
}
